//! The flags that say how a simulated E2B behaves, shared by every command that simulates
//! (`simulate`, `tune`): the agent's poll interval, the plan's create rate and concurrency cap,
//! and the metric sampling interval. Declared once, so the two commands cannot drift apart.

use std::time::Duration;

use clap::Args;

use super::values::{emulated_create_rate, max_concurrent, tick_interval};
use crate::duration::HumanDuration;
use crate::emulator::CoreConfig;
use crate::simulate::SimOptions;

/// How the simulated agent polls and what the simulated E2B allows.
#[derive(Debug, Args)]
pub(crate) struct SimFlags {
    /// Time between two engine steps (the agent's poll interval).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = tick_interval)]
    pub(crate) tick: HumanDuration,
    /// Sandbox creates per second the emulated team may make (E2B: 1 Hobby, 5 Pro); 0 is
    /// unlimited.
    #[arg(long, default_value_t = 5.0, value_name = "PER_SECOND", value_parser = emulated_create_rate)]
    pub(crate) create_rate: f64,
    /// Running sandboxes the emulated team may have (E2B: 20 Hobby, 100 Pro, up to 1,100).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = max_concurrent)]
    pub(crate) max_concurrent: usize,
    /// Metric sampling interval of the emulator (E2B: 5s).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = tick_interval)]
    pub(crate) metrics_interval: HumanDuration,
}

impl SimFlags {
    /// The simulation these flags describe.
    pub(crate) fn options(&self) -> SimOptions {
        SimOptions {
            tick: self.tick.0,
            core: CoreConfig {
                create_rate: self.create_rate,
                max_concurrent: self.max_concurrent,
                metrics_interval: self.metrics_interval.0.max(Duration::from_millis(100)),
                ..CoreConfig::default()
            },
            ..Default::default()
        }
    }
}
