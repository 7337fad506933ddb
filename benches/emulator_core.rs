//! Benchmark: 30 simulated minutes of 1,000 sandboxes stepped by the emulator core in-process.
//! The goal is "well under a second".

use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use poolpilot::emulator::{Core, CoreConfig, Scenario};

const SCENARIO: &str = "
seed: 1
initial:
  - { template: base, count: 1000 }
load:
  - { template: base, points: [[0s, 500], [15m, 2500], [30m, 500]], noise: 0.05 }
";

fn thirty_minutes(c: &mut Criterion) {
    let scenario = Scenario::parse("bench.yaml", SCENARIO).expect("scenario");
    let start: DateTime<Utc> = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let cfg = CoreConfig {
        max_concurrent: 10_000,
        ..CoreConfig::default()
    };
    let mut group = c.benchmark_group("emulator_core");
    group.sample_size(10);
    group.bench_function("1000 sandboxes, 30 simulated minutes, 5s samples", |b| {
        b.iter(|| {
            let mut core = Core::new(cfg.clone(), &scenario, start);
            core.advance(Duration::from_secs(1800));
            core.stats().unmet_core_seconds
        })
    });
    group.finish();
}

criterion_group!(benches, thirty_minutes);
criterion_main!(benches);
