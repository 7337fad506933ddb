//! poolpilot: an autoscaler and alerting agent for pools of E2B sandboxes, with a local
//! E2B-compatible emulator.
//!
//! # Layout
//!
//! - [`e2b`]: the E2B API. Wire types, typed errors, webhook signatures, retry and create
//!   pacing, the [`e2b::E2bApi`] trait and its HTTP implementation. The only module that
//!   knows E2B's URLs and JSON shapes (besides the emulator, which plays E2B).
//! - [`emulator`]: a local control plane that speaks E2B's HTTP API. Its [`emulator::core`]
//!   is pure state in virtual time (sandboxes, metrics from a load model, lifecycle events,
//!   webhooks, rate limits); [`emulator::http`] serves it with axum; [`emulator::delivery`]
//!   posts signed webhooks; [`emulator::InProcess`] implements [`e2b::E2bApi`] over the core
//!   with no HTTP at all.
//! - [`files`]: reading the files a user names: regular files only, bounded in size.
//! - [`expr`]: rule expressions; the only module that imports evalexpr.
//! - [`rules`]: the YAML rule language loaded into a checked [`rules::RuleSet`]; schedules
//!   (the only user of croner), message templates, and rule unit tests.
//! - [`observe`]: one observation of E2B (sandboxes and their latest samples), for the agent
//!   and `simulate` alike.
//! - [`engine`]: the pure decision engine, `step(now, observations) -> decisions`.
//! - [`simulate`]: rules against the emulator core in virtual time, with an SVG chart.
//! - [`notify`]: notifiers (Slack, webhook, Alertmanager, log) with bounded queues and retries.
//! - [`agent`]: `poolpilot run`: config, the control loop, HTTP endpoints, webhook receiver.
//! - `fuzz` (hidden, not a public promise): the bodies of the fuzz targets in `fuzz/` and of
//!   `tests/fuzz_slice.rs`; see docs/fuzzing.md.
//! - [`cli`]: the command line, one file per command (`run`, `config`, `demo`, `health`,
//!   `emulator`, `check`, `test`, `simulate`). `main.rs` only calls it.
//!
//! Data flows one way: sources -> observations -> engine -> decisions -> actions.

pub mod agent;
pub mod cli;
pub mod duration;
pub mod e2b;
pub mod emulator;
pub mod engine;
pub mod expr;
pub mod files;
#[doc(hidden)]
pub mod fuzz;
pub mod notify;
pub mod observe;
pub mod rules;
pub(crate) mod ruletest;
pub mod simulate;
mod sync;
pub mod telemetry;
