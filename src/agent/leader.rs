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
//!
//! The bound is read on tokio's clock, which is the monotonic clock in production and follows
//! a paused clock in tests, so the seeded simulation (tests/simulation_ha.rs) can step
//! [`Leadership::turn`] itself on virtual time; production runs the same turn on a timer
//! ([`Leadership::start`]). This module never acts on E2B: it only says who may.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use serde::Serialize;
use tokio::sync::watch;

use super::control::Agent;
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

/// This replica's part in the election: the fence the agent asks, the role it publishes,
/// and the renewals (on a timer of their own, or stepped by a simulation).
pub struct Leadership {
    pub fence: Fence,
    pub roles: watch::Receiver<Role>,
    renewer: Renewer,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What one renewal needs: cheap to clone into the timer's task.
#[derive(Clone)]
struct Renewer {
    lease: Lease,
    fence: Fence,
    roles: Arc<watch::Sender<Role>>,
}

impl Leadership {
    /// Starts contending for `lease`, renewing every third of its length on a timer.
    pub fn start(lease: Lease) -> Leadership {
        let mut l = Leadership::stepped(lease);
        l.task = Some(tokio::spawn(contend(l.renewer.clone())));
        l
    }

    /// Contends for `lease` only when [`Leadership::turn`] is called: a simulation steps each
    /// replica's renewals itself (and pauses a replica by not calling it).
    pub fn stepped(lease: Lease) -> Leadership {
        let fence = Fence::closed();
        let (tx, roles) = watch::channel(Role::Standby { leader: None });
        let renewer = Renewer {
            lease,
            fence: fence.clone(),
            roles: Arc::new(tx),
        };
        Leadership {
            fence,
            roles,
            renewer,
            task: None,
        }
    }

    /// One renewal or attempt to take the lease, under a third of the lease; the role after it.
    pub async fn turn(&self) -> Role {
        self.renewer.turn().await
    }

    /// Brings `agent` in step with this replica's role: takes over (resuming the shared
    /// state) when it became the leader, stands by when it stopped being one. True when the
    /// agent may turn.
    pub async fn follow(&self, agent: &mut Agent, now: DateTime<Utc>) -> bool {
        let Some(g) = self.fence.acting() else {
            agent.stand_by().await;
            return false;
        };
        if agent.leading() == Some(g) {
            return true;
        }
        // The deliveries its receiver queued before it led passed a dedup window that `lead`
        // replaces with the store's: they go to the store's inbox first and come back through
        // the new window, so none is handled twice (seed 6 of tests/simulation_ha.rs took one
        // from the queue and again from its events poll).
        agent.stand_by().await;
        match agent.lead(g, now).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot resume the shared state; not acting");
                agent.stand_by().await;
                false
            }
        }
    }

    /// Stops contending and gives the lease up, so a standby takes over at once.
    pub async fn stop(self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        self.fence.close();
        if let Err(e) = self.renewer.lease.release().await {
            tracing::warn!(error = %e, "cannot give the lease up; a standby takes over when it runs out");
        }
    }
}

/// Renews or contends every third of the lease, forever.
async fn contend(renewer: Renewer) {
    let every = renewer.lease.ttl() / 3;
    loop {
        let sent = Instant::now();
        renewer.turn().await;
        tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
    }
}

impl Renewer {
    /// One renewal: the fence opens until two thirds of the lease after the moment it was
    /// sent, or closes; the role is published.
    async fn turn(&self) -> Role {
        let (lease, fence) = (&self.lease, &self.fence);
        let ttl = lease.ttl();
        let every = ttl / 3;
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
            Ok(Err(e)) => unavailable(fence, e.to_string()),
            Err(_) => unavailable(fence, format!("no answer within {every:?}")),
        };
        announce(&self.roles, role.clone());
        role
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
