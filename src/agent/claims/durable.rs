//! Claims that survive a failover (issue 14): with a store shared by replicas, every change of
//! the ledger is also written there, in the ledger's order, by one writer task, fenced by the
//! generation the leader holds ([`crate::store::claims`]).
//!
//! Changes are queued under the ledger's lock (so the queue's order is the ledger's) and
//! written in batches, one transaction each: a burst of claims costs one round of fencing. A
//! change a holder waits for carries a oneshot that is answered once its batch is committed,
//! or refused (fenced, the store down, a sandbox the store says is claimed). After any
//! refusal the next change is preceded by the whole ledger ([`ClaimOp::Replace`]), so the
//! store comes back in step with what the leader holds.
//!
//! It never decides anything: it writes what the ledger did.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::ledger::Claim;
use crate::store::claims::{ClaimOp, ClaimStore, LiveClaim};

/// How long a holder's answer waits for its change to be written.
pub(crate) const SAVE_WAIT: Duration = Duration::from_secs(10);
/// The most changes written in one transaction.
const BATCH: usize = 512;

/// Changes to write, with the generation they were made under.
struct Write {
    generation: u64,
    ops: Vec<ClaimOp>,
    done: Option<oneshot::Sender<bool>>,
}

/// The writer's queue: cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Write>,
    /// Set when a write was refused: the store may differ from the ledger.
    resync: Arc<AtomicBool>,
    store: ClaimStore,
}

/// Answered true once a change is written; false (or dropped) when it was not.
pub(crate) type Saved = oneshot::Receiver<bool>;

impl Writer {
    /// Starts the writer task over `store`.
    pub(crate) fn start(store: ClaimStore) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let resync = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_all(store.clone(), rx, resync.clone()));
        Writer { tx, resync, store }
    }

    pub(crate) fn store(&self) -> &ClaimStore {
        &self.store
    }

    /// Whether the store must be brought back in step before the next change (read once).
    pub(crate) fn take_resync(&self) -> bool {
        self.resync.swap(false, Ordering::AcqRel)
    }

    /// Queues `ops` made under `generation`; with `wait`, the answer to wait for.
    pub(crate) fn push(&self, generation: u64, ops: Vec<ClaimOp>, wait: bool) -> Option<Saved> {
        let (done, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let sent = self.tx.send(Write {
            generation,
            ops,
            done,
        });
        if sent.is_err() {
            self.resync.store(true, Ordering::Release);
        }
        rx
    }
}

/// Waits (at most [`SAVE_WAIT`]) for a change to be written: whether it was.
pub(crate) async fn written(saved: Saved) -> bool {
    matches!(tokio::time::timeout(SAVE_WAIT, saved).await, Ok(Ok(true)))
}

/// A claim as the store keeps it.
pub(crate) fn live(c: &Claim) -> LiveClaim {
    LiveClaim {
        claim_id: c.claim_id.clone(),
        sandbox_id: c.sandbox_id.clone(),
        pool: c.pool.clone(),
        expires_ms: c.expires_at.timestamp_millis(),
        body: serde_json::to_string(c).unwrap_or_default(),
    }
}

/// The writer task: takes what is queued, writes it in batches, answers who waits.
async fn write_all(
    store: ClaimStore,
    mut rx: mpsc::UnboundedReceiver<Write>,
    resync: Arc<AtomicBool>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        // A batch holds one generation's changes; a new generation starts a new batch.
        let mut rest = batch.as_mut_slice();
        while !rest.is_empty() {
            let generation = rest[0].generation;
            let n = rest
                .iter()
                .take_while(|w| w.generation == generation)
                .count();
            let (now, later) = rest.split_at_mut(n);
            if !write_batch(&store, generation, now).await {
                resync.store(true, Ordering::Release);
            }
            rest = later;
        }
    }
}

/// Writes one generation's changes in one transaction and answers each waiter; false when
/// anything was refused.
async fn write_batch(store: &ClaimStore, generation: u64, batch: &mut [Write]) -> bool {
    let ops: Vec<ClaimOp> = batch.iter().flat_map(|w| w.ops.iter().cloned()).collect();
    let done = match store.apply(generation, &ops).await {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, changes = ops.len(), "claims not written to the shared store; their holders are told to retry");
            vec![false; ops.len()]
        }
    };
    let mut at = 0;
    let mut all = true;
    for w in batch.iter_mut() {
        let ok = done[at..at + w.ops.len()].iter().all(|d| *d);
        at += w.ops.len();
        all &= ok;
        if let Some(tx) = w.done.take() {
            let _ = tx.send(ok);
        }
    }
    all
}
