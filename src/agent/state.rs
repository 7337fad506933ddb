//! The agent's state on disk, in `state_dir`, so that a restart loses nothing and handles
//! nothing twice:
//! - `state.json`: the engine state (cooldowns, stabilization windows, alert phases) and the
//!   events cursor. Small; rewritten after a turn only when it changed.
//! - `seen.journal`: the ids of the events acted on, one line each (`<event ms> <id>`), plus
//!   `h <ms>` lines giving the dedup horizon. Appended to, and compacted now and then.
//!
//! # Exactly once across a crash
//! An event is acted on only after its id is in the journal and the journal is synced (the
//! agent calls [`StateStore::record`] before it decides). So after a crash, every event whose
//! action may have happened is known again, and the poll's replay of it is a duplicate. An
//! event taken by the receiver but not yet acted on is not journaled: after a crash it is
//! unknown, and the poll (which restarts from the saved cursor, less its look-back) handles it
//! once. Compaction drops only ids older than the dedup horizon, and writes that horizon first:
//! after a restart, events older than it are refused as stale (see [`super::dedup`]), so a
//! dropped id can never be handled again, whatever cursor `state.json` had. The one event lost
//! to a crash is one the receiver queued more than the poll's look-back late and that the
//! horizon passed before it was acted on: the same kind of event the poll gives up on.
//!
//! Writes are durable: a temporary file, fsync, rename over the old one, fsync of the folder;
//! journal appends are fsynced before the events are acted on. The blocking I/O runs off the
//! async workers where the runtime allows it, so the webhook receiver keeps answering.
//!
//! # Untrusted state is set aside, never fatal
//! A `state.json` that is too large, not UTF-8 or not valid is renamed to
//! `state.json.unreadable` (or `state.json.unreadable-<time>` when that exists, so an older one
//! is kept) and the agent starts fresh. Journal lines that cannot be read are skipped, and the
//! file is kept aside the same way. Saved capacities are clamped to the configured bounds, and a
//! cursor in the future is clamped to now. Each of these is logged.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::creates::InFlight;
use super::dedup::{Dedup, Limits, valid_id};
use crate::engine::EngineState;

/// The engine state and events cursor.
pub(crate) const STATE_FILE: &str = "state.json";
/// The ids of events acted on.
pub(crate) const JOURNAL_FILE: &str = "seen.journal";
/// A larger `state.json` is not read (the engine state is a few kilobytes).
const MAX_STATE_BYTES: u64 = 64 << 20;
/// A journal line is at most this long: 20 digits, a space, an id, a newline.
const MAX_JOURNAL_LINE: usize = 24 + super::dedup::MAX_ID_LEN;
/// The journal is compacted once this many of its lines (and more than the live ones) are
/// behind the horizon: only garbage triggers it, and each compaction is paid for by as many
/// dropped lines as it keeps, so it costs O(1) per recorded id and never runs for nothing.
const COMPACT_MIN_LINES: u64 = 10_000;

/// A state file that could not be read, written, or set aside.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set {path} aside: {source}")]
    SetAside {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PersistedState {
    pub(crate) engine: EngineState,
    /// Newest event time taken from the events API.
    pub(crate) event_cursor: Option<DateTime<Utc>>,
    /// Creates sent and not yet seen, counted again after a restart until they are.
    #[serde(default)]
    pub(crate) creates: Vec<InFlight>,
    /// The seen ids as versions before the journal saved them: read, never written.
    #[serde(default, skip_serializing)]
    dedup: Option<LegacyDedup>,
}

impl PersistedState {
    /// The state to save: engine state, events cursor, creates in flight.
    pub(crate) fn new(
        engine: EngineState,
        event_cursor: Option<DateTime<Utc>>,
        creates: Vec<InFlight>,
    ) -> PersistedState {
        PersistedState {
            engine,
            event_cursor,
            creates,
            dedup: None,
        }
    }
}

/// `{"capacity": N, "order": [ids, oldest first]}`, as saved before the journal.
#[derive(Debug, Clone, Deserialize)]
struct LegacyDedup {
    /// Any number: a huge one is clamped, not an unreadable file.
    #[serde(default)]
    capacity: Option<f64>,
    #[serde(default)]
    order: Vec<String>,
}

/// What was found on disk.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) engine: Option<EngineState>,
    pub(crate) cursor: Option<DateTime<Utc>>,
    /// Creates sent before the restart and not yet seen.
    pub(crate) creates: Vec<InFlight>,
    /// The window of ids acted on, with its horizon, under the configured limits.
    pub(crate) dedup: Dedup,
}

/// The open state folder.
#[derive(Debug)]
pub(crate) struct StateStore {
    dir: PathBuf,
    /// The bytes of the last `state.json` written, to skip writing an unchanged one.
    last_saved: Option<Vec<u8>>,
    journal: Journal,
}

#[derive(Debug)]
struct Journal {
    path: PathBuf,
    /// Open for appending; None after a failed compaction (then reopened on the next record).
    file: Option<File>,
    lines: u64,
    /// Lines by event second, not yet counted dead.
    by_second: BTreeMap<i64, u64>,
    /// Lines known to be behind the horizon.
    dead: u64,
}

/// Runs blocking file I/O without stalling the async workers: on a multi-threaded runtime the
/// worker hands its other tasks over first; elsewhere it just runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl StateStore {
    /// Opens `dir` (creating it), reading what a previous run saved. Anything that cannot be
    /// trusted is set aside and logged; only a folder that cannot be used at all is an error.
    pub(crate) fn open(
        dir: &Path,
        now: DateTime<Utc>,
        limits: Limits,
    ) -> Result<(StateStore, Restored), StateError> {
        blocking(|| {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
            let mut dedup = Dedup::with_limits(limits);
            let saved = read_state(&dir.join(STATE_FILE))?;
            let (engine, cursor, creates) = match saved {
                Some(s) => {
                    restore_legacy_ids(s.dedup, now, &mut dedup);
                    (Some(s.engine), clamp_cursor(s.event_cursor, now), s.creates)
                }
                None => (None, None, Vec::new()),
            };
            let journal = Journal::open(&dir.join(JOURNAL_FILE), limits, &mut dedup)?;
            let store = StateStore {
                dir: dir.to_path_buf(),
                last_saved: None,
                journal,
            };
            Ok((
                store,
                Restored {
                    engine,
                    cursor,
                    creates,
                    dedup,
                },
            ))
        })
    }

    /// Journals the ids of events about to be acted on, synced before it returns. The write and
    /// the sync run on a blocking thread, so the receiver keeps answering meanwhile, and
    /// deliveries that arrive during a sync are taken together at the next record (group
    /// commit). A failure is logged: the events are still acted on, and only a crash before
    /// the next successful record could then handle them again.
    pub(crate) async fn record<'a>(
        &mut self,
        events: impl IntoIterator<Item = (&'a str, DateTime<Utc>)>,
    ) {
        let mut buf = String::new();
        let mut seconds = Vec::new();
        for (id, at) in events {
            if valid_id(id) {
                let ms = at.timestamp_millis();
                buf.push_str(&format!("{ms} {id}\n"));
                seconds.push(ms.div_euclid(1000));
            }
        }
        if seconds.is_empty() {
            return;
        }
        let (path, file) = (self.journal.path.clone(), self.journal.file.take());
        // On the agent's multi-threaded runtime the sync runs on a blocking thread; on a
        // single thread (tests, the simulation harness) it runs inline, so that no thread's
        // timing decides which task runs next and a seeded run replays exactly.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let appended = if multi_thread {
            tokio::task::spawn_blocking(move || append_synced(&path, file, buf.as_bytes())).await
        } else {
            Ok(append_synced(&path, file, buf.as_bytes()))
        };
        let error = match appended {
            Ok((file, res)) => {
                self.journal.file = file;
                match res {
                    Ok(()) => {
                        self.journal.count(seconds);
                        return;
                    }
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        tracing::error!(path = %self.journal.path.display(), error = %error, "cannot journal the events acted on; a crash now could handle them again");
    }

    /// Writes `state.json` when it changed, and compacts the journal when it is due, dropping
    /// the ids older than `horizon`. Failures are logged; the next turn tries again.
    pub(crate) fn save(
        &mut self,
        engine: &EngineState,
        cursor: Option<DateTime<Utc>>,
        creates: Vec<InFlight>,
        horizon: Option<DateTime<Utc>>,
    ) {
        let state = PersistedState {
            engine: engine.clone(),
            event_cursor: cursor,
            creates,
            dedup: None,
        };
        let bytes = match serde_json::to_vec(&state) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize state");
                return;
            }
        };
        let path = self.dir.join(STATE_FILE);
        blocking(|| {
            if self.last_saved.as_ref() != Some(&bytes) {
                match write_durably(&path, &bytes) {
                    Ok(()) => self.last_saved = Some(bytes),
                    Err(e) => tracing::error!(error = %e, "cannot save state"),
                }
            }
            if self.journal.compaction_due(horizon)
                && let Err(e) = self.journal.compact(horizon)
            {
                tracing::error!(error = %e, "cannot compact the journal; it keeps growing until it can");
            }
        });
    }
}

/// Reads `state.json`; None when there is none, or when it was set aside.
fn read_state(path: &Path) -> Result<Option<PersistedState>, StateError> {
    let read = |source| StateError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return set_aside(path, "not a regular file").map(|_| None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    if len > MAX_STATE_BYTES {
        let why = format!("{len} bytes, more than the {MAX_STATE_BYTES} a state file can be");
        return set_aside(path, &why).map(|_| None);
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_STATE_BYTES).read_to_end(&mut bytes))
        .map_err(read)?;
    match serde_json::from_slice::<PersistedState>(&bytes) {
        Ok(s) => Ok(Some(s)),
        Err(e) => set_aside(path, &e.to_string()).map(|_| None),
    }
}

/// A cursor after `now` would make the poll ask only for events from the future: clamped.
fn clamp_cursor(cursor: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match cursor {
        Some(c) if c > now => {
            tracing::warn!(saved = %c, now = %now, "saved events cursor is in the future; clamped to now");
            Some(now)
        }
        c => c,
    }
}

/// Takes the ids an older version saved in `state.json`, the newest first up to the limits,
/// stamped `now`: kept until the horizon passes the restart, by when the poll can no longer
/// return their events.
fn restore_legacy_ids(legacy: Option<LegacyDedup>, now: DateTime<Utc>, dedup: &mut Dedup) {
    let Some(legacy) = legacy else { return };
    let bound = dedup.limits().ids;
    if let Some(c) = legacy.capacity.filter(|c| c.is_nan() || *c > bound as f64) {
        tracing::warn!(
            saved = c,
            bound,
            "saved dedup capacity is out of bounds; using the configured bound"
        );
    }
    let (mut bad, mut over) = (0usize, 0usize);
    for id in legacy.order.iter().rev() {
        if !valid_id(id) {
            bad += 1;
        } else if dedup.len() >= bound || dedup.bytes() >= dedup.limits().bytes {
            over += 1;
        } else {
            dedup.remember(id, now);
        }
    }
    if bad > 0 || over > 0 {
        tracing::warn!(
            invalid = bad,
            beyond_bounds = over,
            kept = dedup.len(),
            "saved ids skipped"
        );
    }
}

/// Renames an untrusted file out of the way, keeping any earlier one, and logs it.
fn set_aside(path: &Path, why: &str) -> Result<PathBuf, StateError> {
    let base = format!("{}.unreadable", path.display());
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let aside = [base.clone(), format!("{base}-{stamp}")]
        .into_iter()
        .chain((1..100).map(|i| format!("{base}-{stamp}-{i}")))
        .map(PathBuf::from)
        .find(|p| !p.exists())
        .unwrap_or_else(|| PathBuf::from(format!("{base}-{stamp}-last")));
    std::fs::rename(path, &aside).map_err(|source| StateError::SetAside {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::error!(path = %path.display(), kept_as = %aside.display(), reason = %why, "saved state cannot be trusted; set aside, starting from what remains");
    Ok(aside)
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new one, both whole
/// and on disk: a synced temporary file renamed over it, then the folder synced.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::create(&tmp).map_err(err)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    sync_dir(path).map_err(err)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => File::open(d)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// One journal line, read.
enum Line<'a> {
    Horizon(DateTime<Utc>),
    Id(DateTime<Utc>, &'a str),
}

fn parse_line(line: &[u8]) -> Option<Line<'_>> {
    let text = std::str::from_utf8(line).ok()?;
    let (first, rest) = text.split_once(' ')?;
    let at = |ms: &str| {
        ms.parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
    };
    if first == "h" {
        return at(rest).map(Line::Horizon);
    }
    let t = at(first)?;
    valid_id(rest).then_some(Line::Id(t, rest))
}

impl Journal {
    /// Reads the journal into `dedup` and rewrites it compacted. Unreadable lines are skipped
    /// and the file is kept aside; a torn last line (a crash mid-append) is dropped quietly.
    fn open(path: &Path, limits: Limits, dedup: &mut Dedup) -> Result<Journal, StateError> {
        let mut journal = Journal {
            path: path.to_path_buf(),
            file: None,
            lines: 0,
            by_second: BTreeMap::new(),
            dead: 0,
        };
        // Anything but a regular file (a FIFO would block the open forever) is set aside.
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            set_aside(path, "not a regular file")?;
        }
        let bad = match File::open(path) {
            Ok(f) => read_journal(f, limits, dedup).map_err(|source| StateError::Read {
                path: path.to_path_buf(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if bad > 0 {
            set_aside(path, &format!("{bad} unreadable lines"))?;
        }
        journal.rewrite(dedup.horizon(), dedup.entries())?;
        Ok(journal)
    }

    fn count(&mut self, seconds: impl IntoIterator<Item = i64>) {
        for s in seconds {
            *self.by_second.entry(s).or_default() += 1;
            self.lines = self.lines.saturating_add(1);
        }
    }

    /// True when at least [`COMPACT_MIN_LINES`] lines, and more than the live ones, are behind
    /// `horizon`.
    fn compaction_due(&mut self, horizon: Option<DateTime<Utc>>) -> bool {
        if let Some(h) = horizon {
            let live = self
                .by_second
                .split_off(&h.timestamp_millis().div_euclid(1000));
            let gone = std::mem::replace(&mut self.by_second, live);
            self.dead = self.dead.saturating_add(gone.values().sum::<u64>());
        }
        let live = self.lines.saturating_sub(self.dead);
        self.dead >= COMPACT_MIN_LINES && self.dead > live
    }

    /// Rewrites the journal without the ids older than `horizon`, reading the file itself: the
    /// dedup window in memory also holds ids queued but not acted on, which must not be saved.
    fn compact(&mut self, horizon: Option<DateTime<Utc>>) -> Result<(), StateError> {
        let read = |source| StateError::Read {
            path: self.path.clone(),
            source,
        };
        let mut kept = Dedup::with_limits(Limits {
            ids: usize::MAX,
            bytes: usize::MAX,
        });
        if let Some(h) = horizon {
            kept.advance_horizon(h);
        }
        let f = File::open(&self.path).map_err(read)?;
        read_journal(f, kept.limits(), &mut kept).map_err(read)?;
        self.file = None;
        self.rewrite(kept.horizon(), kept.entries())
    }

    /// Replaces the file with `horizon` and `entries`, durably, and reopens it for appending.
    fn rewrite<'a>(
        &mut self,
        horizon: Option<DateTime<Utc>>,
        entries: impl Iterator<Item = (i64, &'a str)>,
    ) -> Result<(), StateError> {
        let mut text = String::new();
        if let Some(h) = horizon {
            text.push_str(&format!("h {}\n", h.timestamp_millis()));
        }
        let mut seconds = Vec::new();
        for (t, id) in entries {
            text.push_str(&format!("{t} {id}\n"));
            seconds.push(t.div_euclid(1000));
        }
        write_durably(&self.path, text.as_bytes())?;
        self.file = Some(self.open_append()?);
        (self.lines, self.dead, self.by_second) = (0, 0, BTreeMap::new());
        self.count(seconds);
        Ok(())
    }

    fn open_append(&self) -> Result<File, StateError> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|source| StateError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

/// Appends `bytes` to the journal at `path` (opening it when `file` is None) and syncs them;
/// gives the open file back for the next append.
fn append_synced(
    path: &Path,
    file: Option<File>,
    bytes: &[u8],
) -> (Option<File>, Result<(), StateError>) {
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = match file {
        Some(f) => f,
        None => match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => f,
            Err(e) => return (None, Err(err(e))),
        },
    };
    let res = f.write_all(bytes).and_then(|()| f.sync_data()).map_err(err);
    (Some(f), res)
}

/// Reads journal lines into `dedup`; returns how many could not be read (a torn last line not
/// counted). Lines are read with a bounded buffer, so a garbage file cannot exhaust memory, and
/// ids beyond four times the window's bound are dropped (a journal never legitimately holds
/// that many).
fn read_journal(f: File, limits: Limits, dedup: &mut Dedup) -> std::io::Result<usize> {
    let mut r = BufReader::new(f);
    let mut line = Vec::with_capacity(MAX_JOURNAL_LINE + 1);
    let mut entries: Vec<(DateTime<Utc>, String)> = Vec::new();
    let cap = limits.ids.saturating_mul(4);
    let (mut bad, mut horizon) = (0usize, None);
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_JOURNAL_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            if line.len() <= MAX_JOURNAL_LINE {
                break; // the torn end of an append cut short by a crash
            }
            r.skip_until(b'\n')?;
            bad += 1;
            continue;
        }
        match parse_line(&line[..line.len() - 1]) {
            Some(Line::Horizon(h)) => horizon = horizon.max(Some(h)),
            Some(Line::Id(t, id)) if entries.len() < cap => entries.push((t, id.to_string())),
            Some(Line::Id(..)) => bad += 1,
            None => bad += 1,
        }
    }
    if let Some(h) = horizon {
        dedup.advance_horizon(h);
    }
    for (t, id) in entries {
        if dedup.horizon().is_none_or(|h| t >= h) {
            dedup.remember(&id, t);
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap()
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "poolpilot-state-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn open(d: &Path, now: DateTime<Utc>) -> (StateStore, Restored) {
        StateStore::open(d, now, Limits::ids(1000)).unwrap()
    }

    #[test]
    fn non_utf8_state_is_set_aside_and_an_older_one_is_kept() {
        let d = dir("utf8");
        std::fs::write(d.join(STATE_FILE), b"{\"engine\": \xff\xfe}").unwrap();
        let (_, r) = open(&d, t(0));
        assert!(r.engine.is_none() && r.cursor.is_none());
        assert!(d.join("state.json.unreadable").exists());
        assert!(!d.join(STATE_FILE).exists());
        // A second bad file does not overwrite the first one kept aside.
        std::fs::write(d.join(STATE_FILE), b"{ not json").unwrap();
        open(&d, t(0));
        let kept: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("state.json.unreadable"))
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_huge_saved_capacity_is_clamped_not_allocated() {
        let d = dir("capacity");
        let ids: Vec<String> = (0..1500).map(|i| format!("id-{i}")).collect();
        let state = serde_json::json!({
            "engine": EngineState::default(),
            "event_cursor": null,
            "dedup": {"capacity": 10_000_000_000_000u64, "order": ids},
        });
        std::fs::write(d.join(STATE_FILE), state.to_string()).unwrap();
        let (_, r) = open(&d, t(0));
        assert!(r.engine.is_some(), "the rest of the state is kept");
        assert_eq!(r.dedup.limits().ids, 1000);
        assert_eq!(r.dedup.len(), 1000, "clamped to the configured bound");
        assert!(r.dedup.contains("id-1499") && !r.dedup.contains("id-0"));
        // Still readable with a capacity no integer type holds.
        std::fs::write(
            d.join(STATE_FILE),
            r#"{"engine":{"pools":{},"alerts":{}},"event_cursor":null,"dedup":{"capacity":1e300,"order":["x"]}}"#,
        )
        .unwrap();
        let (_, r) = open(&d, t(0));
        assert!(r.engine.is_some() && r.dedup.contains("x"));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_future_cursor_is_clamped_to_now() {
        let d = dir("cursor");
        let state = serde_json::json!({
            "engine": EngineState::default(),
            "event_cursor": "2999-01-01T00:00:00Z",
            "dedup": {"capacity": 3, "order": ["x", "y"]},
        });
        std::fs::write(d.join(STATE_FILE), state.to_string()).unwrap();
        let (_, r) = open(&d, t(0));
        assert_eq!(r.cursor, Some(t(0)));
        assert!(
            r.dedup.contains("x") && r.dedup.contains("y"),
            "old files load"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[tokio::test]
    async fn journaled_ids_survive_a_restart_and_compaction_keeps_the_horizon() {
        let d = dir("journal");
        let (mut s, _) = open(&d, t(0));
        s.record([("a", t(10)), ("b", t(20)), ("bad id", t(20))])
            .await;
        // A crash right after acting: no save, yet the ids acted on are on disk.
        drop(s);
        let (mut s, r) = open(&d, t(40));
        assert!(r.dedup.contains("a") && r.dedup.contains("b") && r.dedup.len() == 2);
        s.save(&EngineState::default(), Some(t(30)), Vec::new(), None);
        let saved = std::fs::read_to_string(d.join(STATE_FILE)).unwrap();
        assert!(!saved.contains("dedup"), "ids are not rewritten each turn");
        drop(s);
        let (mut s, r) = open(&d, t(40));
        assert!(r.dedup.contains("a") && r.dedup.contains("b") && r.dedup.len() == 2);
        assert_eq!(r.cursor, Some(t(30)));
        // Compaction waits for garbage: nothing behind the horizon, nothing to do.
        s.journal.lines = 10 * COMPACT_MIN_LINES;
        assert!(!s.journal.compaction_due(Some(t(0))));
        // Then drops ids behind the horizon, and records the horizon itself.
        s.journal
            .by_second
            .insert(t(11).timestamp(), 10 * COMPACT_MIN_LINES - 2);
        s.save(
            &EngineState::default(),
            Some(t(30)),
            Vec::new(),
            Some(t(15)),
        );
        assert_eq!(s.journal.lines, 1, "compacted");
        drop(s);
        let (_, r) = open(&d, t(40));
        assert!(!r.dedup.contains("a") && r.dedup.contains("b"));
        assert_eq!(r.dedup.horizon(), Some(t(15)));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_torn_or_damaged_journal_keeps_every_readable_id() {
        let d = dir("torn");
        let j = d.join(JOURNAL_FILE);
        let long = "9".repeat(5000);
        std::fs::write(
            &j,
            format!(
                "h {}\n{} a\n\u{ff}garbage\n{long} b\n{} c\n{} tor",
                t(0).timestamp_millis(),
                t(1).timestamp_millis(),
                t(2).timestamp_millis(),
                t(3).timestamp_millis()
            ),
        )
        .unwrap();
        let (_, r) = open(&d, t(10));
        assert!(r.dedup.contains("a") && r.dedup.contains("c"));
        assert!(!r.dedup.contains("tor"));
        assert_eq!(r.dedup.horizon(), Some(t(0)));
        assert!(d.join("seen.journal.unreadable").exists());
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn an_unchanged_state_is_not_rewritten() {
        let d = dir("unchanged");
        let (mut s, _) = open(&d, t(0));
        s.save(&EngineState::default(), Some(t(1)), Vec::new(), None);
        std::fs::remove_file(d.join(STATE_FILE)).unwrap();
        s.save(&EngineState::default(), Some(t(1)), Vec::new(), None);
        assert!(!d.join(STATE_FILE).exists());
        s.save(&EngineState::default(), Some(t(2)), Vec::new(), None);
        assert!(d.join(STATE_FILE).exists());
        std::fs::remove_dir_all(&d).ok();
    }
}
