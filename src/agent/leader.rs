//! Leadership among replicas sharing a PostgreSQL store (issue 14): one task per replica
//! renews or contends for the lease ([`crate::store::lease`]) every third of its length, and
//! publishes this replica's [`Role`].
//!
//! The [`Fence`] is what the rest of the agent asks before acting. It says yes only until a
//! bound taken from this process's monotonic clock: two thirds of the lease after the moment
//! the last successful renewal was *sent*. So a leader that cannot renew (the database gone,
//! a partition) stops acting a third of a lease before its lease can end and a standby can
//! take it, and a leader that was paused (GC, a stalled VM, SIGSTOP) wakes to find its time
//! up, whatever it was doing. The generation it carries is the fencing token of the store's
//! writes and of every create's Idempotency-Key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::store::lease::Lease;
use crate::sync::lock;

/// What this replica is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// It evaluates and acts, with this generation.
    Leader { generation: u64 },
    /// Another replica leads (when known): it serves reads and stands by.
    Standby { leader: Option<String> },
    /// The store cannot be reached: no replica acts until it can.
    Unavailable { why: String },
}

/// Whether this replica may act now, and with which generation.
#[derive(Clone)]
pub struct Fence {
    state: Arc<Mutex<Option<(u64, Instant)>>>,
}

impl Fence {
    /// A fence that always allows, generation 0: a single agent on SQLite.
    pub fn single() -> Fence {
        Fence {
            state: Arc::new(Mutex::new(Some((0, far_future())))),
        }
    }

    fn closed() -> Fence {
        Fence {
            state: Arc::new(Mutex::new(None)),
        }
    }

    /// The generation this replica may act with now; None when it may not act.
    pub fn acting(&self) -> Option<u64> {
        match *lock(&self.state) {
            Some((generation, until)) if Instant::now() < until => Some(generation),
            _ => None,
        }
    }

    fn allow(&self, generation: u64, until: Instant) {
        *lock(&self.state) = Some((generation, until));
    }

    fn close(&self) {
        *lock(&self.state) = None;
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86_400)
}

/// The running leadership task's handles.
pub struct Leadership {
    pub fence: Fence,
    pub roles: watch::Receiver<Role>,
    task: tokio::task::JoinHandle<()>,
    lease: Lease,
}

impl Leadership {
    /// Starts contending for `lease`.
    pub fn start(lease: Lease) -> Leadership {
        let fence = Fence::closed();
        let (tx, roles) = watch::channel(Role::Standby { leader: None });
        let task = tokio::spawn(contend(lease.clone(), fence.clone(), tx));
        Leadership {
            fence,
            roles,
            task,
            lease,
        }
    }

    /// Stops contending and gives the lease up, so a standby takes over at once.
    pub async fn stop(self) {
        self.task.abort();
        self.fence.close();
        if let Err(e) = self.lease.release().await {
            tracing::warn!(error = %e, "cannot give the lease up; a standby takes over when it runs out");
        }
    }
}

/// Renews or contends every third of the lease, forever.
async fn contend(lease: Lease, fence: Fence, roles: watch::Sender<Role>) {
    let ttl = lease.ttl();
    let every = ttl / 3;
    loop {
        let sent = Instant::now();
        let role = match tokio::time::timeout(every, lease.hold()).await {
            Ok(Ok(Some(generation))) => {
                fence.allow(generation, sent + ttl * 2 / 3);
                Role::Leader { generation }
            }
            Ok(Ok(None)) => {
                fence.close();
                let leader = lease.current().await.ok().flatten().map(|h| h.holder);
                Role::Standby { leader }
            }
            Ok(Err(e)) => unavailable(&fence, e.to_string()),
            Err(_) => unavailable(&fence, format!("no answer within {every:?}")),
        };
        announce(&roles, role);
        tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
    }
}

/// The store did not answer: a leader keeps acting until its fence's bound (it may still hold
/// the lease), then nobody acts.
fn unavailable(fence: &Fence, why: String) -> Role {
    match fence.acting() {
        Some(generation) => {
            tracing::warn!(error = %why, "cannot renew the lease; acting until it could run out");
            Role::Leader { generation }
        }
        None => {
            fence.close();
            Role::Unavailable {
                why: format!("the store cannot be reached: {why}"),
            }
        }
    }
}

/// Publishes a role, logging each change once.
fn announce(roles: &watch::Sender<Role>, role: Role) {
    if *roles.borrow() != role {
        match &role {
            Role::Leader { generation } => tracing::info!(generation, "leading"),
            Role::Standby { leader } => {
                tracing::info!(leader = leader.as_deref().unwrap_or("none"), "standing by")
            }
            Role::Unavailable { why } => tracing::error!("{why}; not acting"),
        }
        let _ = roles.send(role);
    }
}
