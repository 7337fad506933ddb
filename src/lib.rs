//! poolpilot: an autoscaler and alerting agent for pools of E2B sandboxes, with a local
//! E2B-compatible emulator.
//!
//! # Layout
//!
//! By floor: a module uses the floors below it, never those above (docs/architecture.md draws
//! the picture and the tree).
//!
//! 0. `duration`, [`files`] (regular files only, bounded), `sync` (poison-proof locks),
//!    [`telemetry`] (logging setup).
//! 1. [`e2b`]: the E2B API. Wire types, typed errors, webhook signatures, retry and create
//!    pacing, the [`e2b::E2bApi`] trait and its HTTP implementation; the only module that
//!    knows E2B's URLs and JSON shapes (besides the emulator, which plays E2B).
//!    [`expr`]: rule expressions; the only module that imports evalexpr.
//! 2. [`rules`]: the rule file format, loaded into a checked [`rules::RuleSet`] (one file per
//!    section under `rules/load/`, a pool's service fields -- idle, claims, keepalive,
//!    max_age, warm -- in `lifetime`); schedules (the only user of croner), message templates.
//!    [`emulator`]: a local E2B. Its [`emulator::core`] is pure state in virtual time, one file
//!    per concern (load, sandboxes, queries, webhooks, quota, faults, stats); `emulator::http`
//!    serves it, one file per endpoint family; [`emulator::InProcess`] is
//!    [`e2b::E2bApi`] over the core with no HTTP. A scenario (`emulator::scenario`) gives load,
//!    faults, pause and resume latency, and the jobs `simulate` plays.
//! 3. [`engine`]: the pure decision engine, `step(now, observations) -> decisions`:
//!    `prepare`, then pools (a chain of named steps in `engine/pools/`, with `lifetime`,
//!    `warm` and `keepalive` for pools that serve claims), alerts, triggers. It learns of
//!    claims only from [`engine::Observations`]' `claims`.
//! 4. `ruletest`: rule unit tests (promtool's place: format, series, run), above the engine.
//!    [`observe`]: one observation of E2B (sandboxes and their latest samples).
//!    `report`: the events report (the guide's Pattern 3), a pure function over lifecycle
//!    events: creates, lifetimes, kill reasons, crash rate per template and pool.
//!    [`notify`]: notifiers (Slack, webhook, Alertmanager, log), one worker and queue each.
//!    [`store`]: the history store and what replicas share (the leader's lease, its saved
//!    state, the ids of events acted on, the webhook inbox), one schema on SQLite or
//!    PostgreSQL through sqlx's Any driver; writes never block the control loop.
//! 5. [`agent`]: `poolpilot run`: config (every setting declared once), the control loop
//!    (`control`), carrying out decisions (`act`), the ledger of creates in flight, the
//!    team's budget and circuit breaker (`budget`), claims ([`agent::claims`]: the ledger of
//!    who holds what, its journal `claims.jsonl`, and the service), status, state, HTTP
//!    (`agent/http/`: accept loop, API, claims API, metrics, webhook receiver). `act` is the
//!    only caller of E2B for decisions; the claims service is the one other, for a holder's
//!    request (resume on claim, timeout to the lease, kill on release).
//! 6. [`simulate`]: the real agent against the emulator in virtual time, with E2B's costs
//!    modeled, a scenario's jobs claiming through the agent's claims service (`jobs`), the
//!    floor of a scenario and an SVG chart.
//! 7. [`tune`]: a search of rule parameters over scenarios with `simulate`: the Pareto front
//!    of cost against unmet demand.
//! 8. [`cli`]: the command line, one file per command (`run`, `config`, `demo`, `health`,
//!    `events`, `emulator`, `check`, `test`, `simulate`, `tune`). `main.rs` only calls it.
//!
//! `fuzz` (hidden, not a public promise): the bodies of the fuzz targets in `fuzz/` and of
//! `tests/fuzz_slice.rs`; see docs/fuzzing.md.
//!
//! Data flows one way: sources -> observations -> engine -> decisions -> actions ->
//! notifications and history.

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
pub(crate) mod report;
pub mod rules;
pub(crate) mod ruletest;
pub mod simulate;
pub mod store;
mod sync;
pub mod telemetry;
pub mod tune;
