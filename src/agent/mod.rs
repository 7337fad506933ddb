//! The agent behind `poolpilot run`:
//! - [`config`]: the configuration file and secrets (from files or the environment);
//! - [`control`]: the control loop, one [`control::Agent::tick`] at a time: observe, take
//!   events, decide; and [`control::Agent::react`] to webhooks between ticks;
//! - [`act`]: carrying decisions out (E2B calls, notices), each ending in a typed `Outcome`
//!   with its [`act::ActionResult`]; the only place a decision becomes a call to E2B;
//! - [`claims`]: claims on pool members (exclusive hand-out with a lease), their journal,
//!   and the shared pick; the HTTP side is in [`http`];
//! - [`budget`]: the team's concurrent-sandbox cap that every create and resume shares, and
//!   each pool's circuit breaker on failing creates;
//! - [`creates`]: the ledger of creates sent and not yet observed, which a pool's size counts;
//! - [`status`]: what the agent shows about itself, and the one publisher that writes it after
//!   every tick, reaction and reload;
//! - `recorder`: what the loop tells the history store ([`crate::store`]): events, decisions,
//!   alerts, pool sizes and members' samples (claims tell it theirs);
//! - `standby`: what a standby shows of the pools now, read from the shared store;
//! - [`run`]: the long-running process around it: wiring, timers, reload, shutdown;
//! - [`histogram`]: the duration histograms of `/metrics` (loop turns, API requests);
//! - [`leader`]: leadership among replicas sharing a PostgreSQL store: the lease's renewal,
//!   this replica's role, and the fence every action asks first;
//! - [`health`]: whether the agent can see E2B, the rule behind readiness and `poolpilot_up`;
//! - [`http`]: the accept loop and its limits, the read API, `/metrics`, and the signed E2B
//!   webhook receiver;
//! - [`systemd`]: `Type=notify` readiness, reload and watchdog notifications;
//! - [`register`]: idempotent self-registration of the webhook with E2B;
//! - [`dedup`]: the bounded window of ids already processed, shared by webhook deliveries and
//!   event polling so that an event is handled once whichever way it arrives;
//! - [`state`]: what survives a restart (`state.json`, the journal of ids acted on), written
//!   durably, and set aside rather than trusted when it cannot be read.

pub mod act;
pub mod budget;
pub mod claims;
pub mod config;
pub mod control;
pub(crate) mod creates;
pub mod dedup;
pub(crate) mod health;
pub(crate) mod histogram;
pub mod http;
pub mod leader;
pub(crate) mod recorder;
pub mod register;
pub mod run;
pub(crate) mod standby;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod systemd;
