//! What makes claims survive a restart: `claims.jsonl` in the state dir, one line per change
//! (a claim granted, renewed, ended), appended before the holder hears of it.
//!
//! Each line is one `write` of a whole line, so a crash of the agent loses nothing it
//! answered; the file is synced to disk at most every [`SYNC_EVERY`] (a power loss may lose
//! the last moment). At start the file is read back, a torn last line ignored, and rewritten
//! with only the claims still active (a temporary file, synced, renamed over it), and again
//! whenever it has grown to [`COMPACT_FACTOR`] times the active claims plus
//! [`COMPACT_SLACK`] lines. A file that cannot be read is set aside, never trusted halfway.
//!
//! Besides claims it keeps the members released to be killed whose kill has not been seen to
//! succeed: after a restart they are still dirty, never handed out, and killed again.
//!
//! It never decides anything: it writes what the ledger did and reads it back.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ledger::Claim;

/// How often the journal is synced to disk at most.
pub(crate) const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The journal is compacted when it holds this many lines per active claim...
const COMPACT_FACTOR: usize = 4;
/// ...plus this many.
const COMPACT_SLACK: usize = 10_000;
/// A journal larger than this is not read back (it cannot come from a sane number of claims).
const MAX_BYTES: u64 = 512 << 20;

/// One line of the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Claim(Claim),
    Renew {
        claim_id: String,
        expires_at: DateTime<Utc>,
    },
    End {
        claim_id: String,
    },
    /// A released member to be killed: dirty until a `killed` line.
    Dirty {
        pool: String,
        sandbox_id: String,
    },
    Killed {
        sandbox_id: String,
    },
}

/// What a journal holds when it is read back.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Saved {
    pub(crate) claims: Vec<Claim>,
    /// (pool, sandbox id) of released members whose kill was not seen to succeed.
    pub(crate) dirty: Vec<(String, String)>,
}

/// The open journal.
pub(crate) struct Journal {
    path: PathBuf,
    file: std::fs::File,
    lines: usize,
    last_sync: Instant,
    dirty: bool,
}

impl Journal {
    /// Opens `dir/claims.jsonl`, returning the claims still active in it and the dirty
    /// members, and compacts it.
    pub(crate) fn open(dir: &Path) -> std::io::Result<(Journal, Saved)> {
        let path = dir.join("claims.jsonl");
        let saved = read_back(&path);
        let file = rewrite(&path, &saved)?;
        let lines = saved.claims.len() + saved.dirty.len();
        Ok((
            Journal {
                path,
                file,
                lines,
                last_sync: Instant::now(),
                dirty: false,
            },
            saved,
        ))
    }

    pub(crate) fn granted(&mut self, c: &Claim) {
        self.append(&Line::Claim(c.clone()));
    }

    pub(crate) fn renewed(&mut self, claim_id: &str, expires_at: DateTime<Utc>) {
        self.append(&Line::Renew {
            claim_id: claim_id.to_string(),
            expires_at,
        });
    }

    pub(crate) fn ended(&mut self, claim_id: &str) {
        self.append(&Line::End {
            claim_id: claim_id.to_string(),
        });
    }

    pub(crate) fn dirty(&mut self, pool: &str, sandbox_id: &str) {
        self.append(&Line::Dirty {
            pool: pool.to_string(),
            sandbox_id: sandbox_id.to_string(),
        });
    }

    pub(crate) fn killed(&mut self, sandbox_id: &str) {
        self.append(&Line::Killed {
            sandbox_id: sandbox_id.to_string(),
        });
    }

    /// Compacts when the file has grown past its bound; `now` is what it holds now.
    pub(crate) fn maybe_compact(&mut self, now: impl FnOnce() -> Saved) {
        if self.lines < COMPACT_SLACK {
            return;
        }
        let now = now();
        if self.lines < COMPACT_FACTOR * (now.claims.len() + now.dirty.len()) + COMPACT_SLACK {
            return;
        }
        match rewrite(&self.path, &now) {
            Ok(f) => {
                self.file = f;
                self.lines = now.claims.len() + now.dirty.len();
                self.dirty = false;
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot compact the claims journal")
            }
        }
    }

    /// Syncs to disk when something was written and [`SYNC_EVERY`] has passed.
    pub(crate) fn sync_if_due(&mut self) {
        if self.dirty && self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync();
        }
    }

    /// Syncs to disk now.
    pub(crate) fn sync(&mut self) {
        if let Err(e) = self.file.sync_data() {
            tracing::error!(path = %self.path.display(), error = %e, "cannot sync the claims journal");
        }
        self.last_sync = Instant::now();
        self.dirty = false;
    }

    fn append(&mut self, line: &Line) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot append to the claims journal");
        }
        self.lines += 1;
        self.dirty = true;
    }
}

/// The claims a journal leaves active, and its dirty members; a missing file is none, an
/// unreadable one is set aside.
fn read_back(path: &Path) -> Saved {
    let text = match std::fs::metadata(path) {
        Err(_) => return Saved::default(),
        Ok(m) if m.len() > MAX_BYTES => {
            set_aside(path, "too large");
            return Saved::default();
        }
        Ok(_) => match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                set_aside(path, &e.to_string());
                return Saved::default();
            }
        },
    };
    let mut active: BTreeMap<String, Claim> = BTreeMap::new();
    let mut dirty: BTreeMap<String, String> = BTreeMap::new();
    let text = String::from_utf8_lossy(&text);
    for (n, raw) in text.lines().enumerate() {
        match serde_json::from_str::<Line>(raw) {
            Ok(Line::Claim(c)) => {
                active.insert(c.claim_id.clone(), c);
            }
            Ok(Line::Renew {
                claim_id,
                expires_at,
            }) => {
                if let Some(c) = active.get_mut(&claim_id) {
                    c.expires_at = expires_at;
                }
            }
            Ok(Line::End { claim_id }) => {
                active.remove(&claim_id);
            }
            Ok(Line::Dirty { pool, sandbox_id }) => {
                dirty.insert(sandbox_id, pool);
            }
            Ok(Line::Killed { sandbox_id }) => {
                dirty.remove(&sandbox_id);
            }
            // A torn last line is what a crash mid-write leaves; anything else is noted.
            Err(e) if !raw.trim().is_empty() => {
                tracing::warn!(path = %path.display(), line = n + 1, error = %e, "skipping an unreadable claims journal line");
            }
            Err(_) => {}
        }
    }
    Saved {
        claims: active.into_values().collect(),
        dirty: dirty.into_iter().map(|(id, pool)| (pool, id)).collect(),
    }
}

fn set_aside(path: &Path, why: &str) {
    let aside = path.with_extension(format!("jsonl.bad-{}", Utc::now().timestamp()));
    tracing::error!(path = %path.display(), aside = %aside.display(), why, "the claims journal cannot be read; set aside, starting with no claims");
    let _ = std::fs::rename(path, aside);
}

/// Writes `saved` as the whole journal, durably, and opens it for appending.
fn rewrite(path: &Path, saved: &Saved) -> std::io::Result<std::fs::File> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        let lines =
            saved
                .claims
                .iter()
                .map(|c| Line::Claim(c.clone()))
                .chain(saved.dirty.iter().map(|(pool, id)| Line::Dirty {
                    pool: pool.clone(),
                    sandbox_id: id.clone(),
                }));
        for l in lines {
            let line = serde_json::to_string(&l).map_err(std::io::Error::other)?;
            writeln!(f, "{line}")?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    std::fs::OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str) -> Claim {
        Claim {
            claim_id: id.into(),
            pool: "p".into(),
            sandbox_id: format!("sbx-{id}"),
            holder: "h".into(),
            claimed_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            expires_at: DateTime::from_timestamp(1_800_000_600, 0).unwrap_or_default(),
            metadata: Default::default(),
            idempotency_key: None,
        }
    }

    #[test]
    fn claims_come_back_after_a_restart_with_renewals_and_without_ended_ones() {
        let dir = std::env::temp_dir().join(format!("poolpilot-claims-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let (mut j, none) = Journal::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(none, Saved::default());
        j.granted(&claim("a"));
        j.granted(&claim("b"));
        let later = DateTime::from_timestamp(1_800_001_000, 0).unwrap_or_default();
        j.renewed("a", later);
        j.ended("b");
        j.dirty("p", "sbx-b");
        j.dirty("p", "sbx-c");
        j.killed("sbx-c");
        drop(j);
        // A crash mid-write leaves a torn line: ignored.
        let path = dir.join("claims.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"{\"op\":\"claim\",\"claim_")
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, back) = Journal::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.claims.len(), 1);
        let a = &back.claims[0];
        assert_eq!((a.claim_id.as_str(), a.expires_at), ("a", later));
        assert_eq!(back.dirty, vec![("p".to_string(), "sbx-b".to_string())]);
        // Compacted at open: one line per active claim and dirty member.
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text.lines().count(), 2);
        let (_, again) = Journal::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, back);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
