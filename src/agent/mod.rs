//! The agent's parts that take input from the outside (the long-running `poolpilot run` loop
//! is being built on them):
//! - [`webhooks`]: the signed E2B webhook receiver;
//! - [`dedup`]: the bounded window of ids already processed, shared by webhook deliveries and
//!   event polling so that an event is handled once whichever way it arrives.

pub mod config;
pub mod control;
pub mod dedup;
pub mod run;
pub mod server;
pub mod webhooks;
