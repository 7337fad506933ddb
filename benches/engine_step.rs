//! Benchmark: one engine step over 10,000 sandboxes in 10 pools with 20 rules (10 pools with a
//! busy predicate, two step rules and a target, and 10 sandbox-scope alerts), next to the floor:
//! the same compiled expressions over the same data in a bare loop. Goal: step within 1.5x of
//! the floor.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use poolpilot::e2b::{Metadata, SandboxMetric, SandboxState};
use poolpilot::engine::{Engine, Observations, ObservedSandbox};
use poolpilot::expr::{Bindings, Meta, Text};
use poolpilot::rules::scopes::{POOL, SANDBOX, pool as ps, sandbox as ss};
use poolpilot::rules::{POOL_KEY, load_str};

const POOLS: usize = 10;
const PER_POOL: usize = 1000;

fn rules_yaml() -> String {
    let mut y = String::from("notifiers: [{ name: log, kind: log }]\npools:\n");
    for p in 0..POOLS {
        y.push_str(&format!(
            "  - name: p{p}\n    min: 900\n    max: 1100\n    busy: cpu_used_pct > 80 && mem_used_pct < 95\n    scale:\n      target: {{ metric: avg_cpu_used_pct, value: 50 }}\n      steps:\n        - {{ when: busy_ratio > 0.9, add: 1 }}\n        - {{ when: busy_ratio < 0.01, remove: 1 }}\n"
        ));
    }
    y.push_str("alerts:\n");
    for p in 0..POOLS {
        y.push_str(&format!(
            "  - {{ name: hot{p}, scope: sandbox, pool: p{p}, when: cpu_used_pct > 97 && age_s > 60, for: 1m, notify: [log] }}\n"
        ));
    }
    y
}

fn observations(now: DateTime<Utc>) -> Vec<ObservedSandbox> {
    let mut rng = fastrand::Rng::with_seed(3);
    (0..POOLS * PER_POOL)
        .map(|i| {
            let mut metadata = Metadata::new();
            metadata.insert(POOL_KEY.into(), format!("p{}", i % POOLS));
            ObservedSandbox {
                id: format!("sbx{i:06}"),
                template: "base".into(),
                started_at: now - TimeDelta::minutes(30),
                end_at: now + TimeDelta::hours(1),
                state: SandboxState::Running,
                metadata,
                metric: Some(SandboxMetric {
                    timestamp: now,
                    timestamp_unix: now.timestamp(),
                    cpu_count: 2,
                    cpu_used_pct: rng.f64() * 100.0,
                    mem_used: 200 << 20,
                    mem_total: 496 << 20,
                    mem_cache: 50 << 20,
                    disk_used: 1 << 30,
                    disk_total: 2 << 30,
                }),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rules = Arc::new(load_str(&[("bench.yaml", &rules_yaml())]).expect("rules"));
    let start: DateTime<Utc> = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let sandboxes = observations(start);
    let pending = BTreeMap::new();
    let mut group = c.benchmark_group("engine");
    group.sample_size(30);

    let mut engine = Engine::new(rules.clone());
    let mut k = 0i64;
    group.bench_function("step: 10k sandboxes, 10 pools, 20 rules", |b| {
        b.iter(|| {
            // Every pool is due at every step.
            k += 15;
            let now = start + TimeDelta::seconds(k);
            let obs = Observations {
                sandboxes: &sandboxes,
                events: &[],
                pending_creates: &pending,
                claims: &poolpilot::engine::NO_CLAIMS,
            };
            engine.step(now, &obs).len()
        })
    });

    // The floor: the same compiled expressions, the same data, a bare loop.
    let texts: Vec<(Text, Text, Text, Meta)> = sandboxes
        .iter()
        .map(|s| {
            (
                Text::new(&s.template),
                Text::new(&s.id),
                Text::new(s.pool().unwrap_or("")),
                Meta::new(&s.metadata),
            )
        })
        .collect();
    let pool_texts: Vec<(Text, Text)> = rules
        .pools
        .iter()
        .map(|p| (Text::new(&p.name), Text::new(&p.template)))
        .collect();
    group.bench_function("floor: same expressions in a bare loop", |b| {
        b.iter(|| {
            let mut hits = 0usize;
            let mut sb = Bindings::new(&SANDBOX);
            for (pi, pool) in rules.pools.iter().enumerate() {
                let alert = &rules.alerts[pi];
                let mut busy = 0usize;
                let mut sum = 0.0;
                for (s, t) in sandboxes.iter().zip(&texts).skip(pi).step_by(POOLS) {
                    let m = s.metric.as_ref().expect("metric");
                    sb.set_num(ss::CPU_USED_PCT, m.cpu_used_pct);
                    sb.set_num(
                        ss::MEM_USED_PCT,
                        m.mem_used as f64 / m.mem_total as f64 * 100.0,
                    );
                    sb.set_num(ss::AGE_S, 1800.0);
                    sb.set_text(ss::TEMPLATE, &t.0);
                    sb.set_text(ss::SANDBOX_ID, &t.1);
                    sb.set_text(ss::POOL, &t.2);
                    sb.set_meta(&t.3);
                    busy += usize::from(pool.busy.eval_bool(&sb).unwrap_or(false));
                    hits += usize::from(alert.when.eval_bool(&sb).unwrap_or(false));
                    sum += m.cpu_used_pct;
                }
                let mut pb = Bindings::new(&POOL);
                for slot in 0..POOL.vars.len() - 2 {
                    pb.set_num(slot, 0.0);
                }
                pb.set_num(ps::BUSY_RATIO, busy as f64 / PER_POOL as f64);
                pb.set_num(ps::AVG, sum / PER_POOL as f64);
                pb.set_text(ps::POOL, &pool_texts[pi].0);
                pb.set_text(ps::TEMPLATE, &pool_texts[pi].1);
                for step in &pool.steps {
                    hits += usize::from(step.when.eval_bool(&pb).unwrap_or(false));
                }
                if let Some(t) = &pool.target {
                    hits += t.metric.eval_f64(&pb).map_or(0, |v| v as usize);
                }
            }
            hits
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
