//! The agent behind `poolpilot run`:
//! - [`config`]: the configuration file and secrets (from files or the environment);
//! - [`control`]: the control loop, one [`control::Agent::tick`] at a time: observe, take
//!   events, decide, act, notify, log, persist;
//! - [`creates`]: the ledger of creates sent and not yet observed, which a pool's size counts;
//! - [`run`]: the long-running process around it: timers, reload, shutdown;
//! - [`health`]: whether the agent can see E2B, the rule behind readiness and `poolpilot_up`;
//! - [`serve`]: the HTTP server loop: header timeouts, a connection limit that makes room for
//!   new clients, the open files limit;
//! - [`server`]: health, readiness, metrics and the decision/pool/alert API;
//! - [`systemd`]: `Type=notify` readiness, reload and watchdog notifications;
//! - [`webhooks`]: the signed E2B webhook receiver;
//! - [`register`]: idempotent self-registration of the webhook with E2B;
//! - [`dedup`]: the bounded window of ids already processed, shared by webhook deliveries and
//!   event polling so that an event is handled once whichever way it arrives;
//! - [`state`]: what survives a restart (`state.json`, the journal of ids acted on), written
//!   durably, and set aside rather than trusted when it cannot be read.

pub mod act;
pub mod config;
pub mod control;
pub mod creates;
pub mod dedup;
pub mod health;
pub mod register;
pub mod run;
pub mod serve;
pub mod server;
pub mod state;
pub(crate) mod status;
pub mod systemd;
pub mod webhooks;
