//! Claims kept in a store shared by replicas (issue 14): the active claims (`live_claims`)
//! and the released members still to be killed (`dirty_members`), so that the leader after a
//! failover holds every claim the last one granted and hands none of their members out again.
//!
//! Writes are fenced like [`super::shared`]'s: a batch of changes runs in one transaction
//! that first checks that this replica still holds the lease with its generation, so a
//! deposed leader changes nothing. The table itself keeps the promise too: one claim per
//! sandbox (`UNIQUE`), so a grant of a member the store says is claimed is refused.
//!
//! This module keeps what it is given (ids and the claim's JSON); it never decides who gets a
//! member and knows nothing of the agent's types.

use sqlx::{AnyPool, Row as _};

use super::shared::{Shared, SharedError};

/// One active claim as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveClaim {
    pub claim_id: String,
    pub sandbox_id: String,
    pub pool: String,
    /// When its lease ends, ms since the epoch.
    pub expires_ms: i64,
    /// The claim as the API shows it (JSON).
    pub body: String,
}

/// One change of the claims, in the order the leader made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOp {
    /// A claim granted: refused (not applied) when its sandbox or id already has one.
    Granted(LiveClaim),
    /// A claim's lease moved: its end and JSON replaced.
    Renewed(LiveClaim),
    Ended {
        claim_id: String,
    },
    /// A released member to be killed.
    Dirty {
        pool: String,
        sandbox_id: String,
    },
    /// A dirty member seen gone.
    Killed {
        sandbox_id: String,
    },
    /// The claims and dirty members become exactly these (after a failed write, to bring
    /// the store back in step with the leader).
    Replace {
        claims: Vec<LiveClaim>,
        /// (pool, sandbox id).
        dirty: Vec<(String, String)>,
    },
}

/// What the store holds, read back by a new leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// The claims' JSON, oldest lease end first.
    pub claims: Vec<String>,
    /// (pool, sandbox id) of dirty members.
    pub dirty: Vec<(String, String)>,
}

/// A replica's handle on the shared claims.
#[derive(Clone)]
pub struct ClaimStore {
    pool: AnyPool,
    fence: Shared,
}

impl ClaimStore {
    /// `holder` is this replica's name in the lease.
    pub fn new(history: &super::History, holder: &str) -> ClaimStore {
        ClaimStore {
            pool: history.pool().clone(),
            fence: Shared::new(history, holder),
        }
    }

    /// The active claims and dirty members.
    pub async fn load(&self) -> Result<Saved, sqlx::Error> {
        let claims = sqlx::query("SELECT body FROM live_claims ORDER BY expires_ms, claim_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("body"))
            .collect::<Result<_, _>>()?;
        let dirty = sqlx::query("SELECT pool, sandbox_id FROM dirty_members ORDER BY sandbox_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("pool")?, r.try_get("sandbox_id")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Saved { claims, dirty })
    }

    /// Applies `ops` in order, in one transaction, if this replica still leads with
    /// `generation`: per op, whether it took effect (a grant of a claimed sandbox does not).
    pub async fn apply(&self, generation: u64, ops: &[ClaimOp]) -> Result<Vec<bool>, SharedError> {
        let mut tx = self.fence.fenced(generation).await?;
        let mut done = Vec::with_capacity(ops.len());
        for op in ops {
            done.push(apply_one(&mut tx, op).await?);
        }
        tx.commit().await?;
        Ok(done)
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// One change in `tx`; whether it took effect.
async fn apply_one(tx: &mut Tx, op: &ClaimOp) -> Result<bool, sqlx::Error> {
    match op {
        ClaimOp::Granted(c) => insert(tx, c).await,
        ClaimOp::Renewed(c) => {
            sqlx::query("UPDATE live_claims SET expires_ms = $2, body = $3 WHERE claim_id = $1")
                .bind(c.claim_id.clone())
                .bind(c.expires_ms)
                .bind(c.body.clone())
                .execute(&mut **tx)
                .await?;
            Ok(true)
        }
        ClaimOp::Ended { claim_id } => {
            run(
                tx,
                "DELETE FROM live_claims WHERE claim_id = $1",
                &[claim_id],
            )
            .await
        }
        ClaimOp::Dirty { pool, sandbox_id } => {
            let sql = "INSERT INTO dirty_members (sandbox_id, pool) VALUES ($1, $2) \
                       ON CONFLICT (sandbox_id) DO NOTHING";
            run(tx, sql, &[sandbox_id, pool]).await
        }
        ClaimOp::Killed { sandbox_id } => {
            let sql = "DELETE FROM dirty_members WHERE sandbox_id = $1";
            run(tx, sql, &[sandbox_id]).await
        }
        ClaimOp::Replace { claims, dirty } => {
            run(tx, "DELETE FROM live_claims", &[]).await?;
            run(tx, "DELETE FROM dirty_members", &[]).await?;
            for c in claims {
                insert(tx, c).await?;
            }
            for (pool, sandbox_id) in dirty {
                let sql = "INSERT INTO dirty_members (sandbox_id, pool) VALUES ($1, $2) \
                           ON CONFLICT (sandbox_id) DO NOTHING";
                run(tx, sql, &[sandbox_id, pool]).await?;
            }
            Ok(true)
        }
    }
}

/// Inserts a claim unless its id or sandbox already has one; whether it did.
async fn insert(tx: &mut Tx, c: &LiveClaim) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO live_claims (claim_id, sandbox_id, pool, expires_ms, body) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(c.claim_id.clone())
    .bind(c.sandbox_id.clone())
    .bind(c.pool.clone())
    .bind(c.expires_ms)
    .bind(c.body.clone())
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Runs `sql` with text arguments in `tx`.
async fn run(tx: &mut Tx, sql: &str, args: &[&String]) -> Result<bool, sqlx::Error> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind((*a).clone());
    }
    q.execute(&mut **tx).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::History;
    use crate::store::lease::{LEADER, Lease};

    fn live(id: &str, sandbox: &str, expires_ms: i64) -> LiveClaim {
        LiveClaim {
            claim_id: id.into(),
            sandbox_id: sandbox.into(),
            pool: "w".into(),
            expires_ms,
            body: format!("{{\"claim_id\":\"{id}\",\"until\":{expires_ms}}}"),
        }
    }

    /// A store in memory, led by "a" with the generation returned.
    async fn led() -> (History, ClaimStore, u64) {
        let h = History::in_memory(Arc::new(chrono::Utc::now))
            .await
            .unwrap();
        let lease = Lease::new(&h, LEADER, "a", Duration::from_secs(30))
            .await
            .unwrap();
        let g = lease.hold().await.unwrap().expect("the free lease");
        let store = ClaimStore::new(&h, "a");
        (h, store, g)
    }

    #[tokio::test]
    async fn changes_are_read_back_in_order_and_a_claimed_sandbox_is_refused_a_second_claim() {
        let (_h, s, g) = led().await;
        let done = s
            .apply(
                g,
                &[
                    ClaimOp::Granted(live("c1", "sb1", 10)),
                    ClaimOp::Granted(live("c2", "sb2", 20)),
                    ClaimOp::Granted(live("c3", "sb1", 30)),
                    ClaimOp::Renewed(live("c2", "sb2", 5)),
                    ClaimOp::Ended {
                        claim_id: "c1".into(),
                    },
                    ClaimOp::Dirty {
                        pool: "w".into(),
                        sandbox_id: "sb1".into(),
                    },
                    ClaimOp::Dirty {
                        pool: "w".into(),
                        sandbox_id: "sb9".into(),
                    },
                    ClaimOp::Killed {
                        sandbox_id: "sb9".into(),
                    },
                ],
            )
            .await
            .unwrap();
        assert_eq!(done, [true, true, false, true, true, true, true, true]);
        let saved = s.load().await.unwrap();
        assert_eq!(saved.claims, [live("c2", "sb2", 5).body]);
        assert_eq!(saved.dirty, [("w".to_string(), "sb1".to_string())]);

        // Once sb1's claim ended, it may be claimed again.
        let done = s
            .apply(g, &[ClaimOp::Granted(live("c4", "sb1", 40))])
            .await
            .unwrap();
        assert_eq!(done, [true]);
    }

    #[tokio::test]
    async fn a_replace_leaves_exactly_what_it_names() {
        let (_h, s, g) = led().await;
        s.apply(g, &[ClaimOp::Granted(live("c1", "sb1", 10))])
            .await
            .unwrap();
        s.apply(
            g,
            &[ClaimOp::Replace {
                claims: vec![live("c2", "sb1", 20), live("c3", "sb3", 15)],
                dirty: vec![("w".into(), "sb4".into())],
            }],
        )
        .await
        .unwrap();
        let saved = s.load().await.unwrap();
        assert_eq!(
            saved.claims,
            [live("c3", "sb3", 15).body, live("c2", "sb1", 20).body]
        );
        assert_eq!(saved.dirty, [("w".to_string(), "sb4".to_string())]);
    }

    #[tokio::test]
    async fn a_replica_that_does_not_lead_with_the_generation_changes_nothing() {
        let (h, s, g) = led().await;
        let other = ClaimStore::new(&h, "b");
        let grant = [ClaimOp::Granted(live("c1", "sb1", 10))];
        assert!(matches!(
            other.apply(g, &grant).await,
            Err(SharedError::Fenced(_))
        ));
        assert!(matches!(
            s.apply(g + 1, &grant).await,
            Err(SharedError::Fenced(_))
        ));
        assert_eq!(s.load().await.unwrap(), Saved::default());
    }
}
