//! Benchmark: a signed `killed` webhook POSTed to the agent's receiver, until the replacement's
//! create request has been sent to the emulator and answered (an upper bound of "webhook
//! arrival to create request leaving"). Everything over loopback HTTP. Goal: under 10 ms.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use poolpilot::agent::control::{Agent, AgentOptions};
use poolpilot::agent::dedup::Dedup;
use poolpilot::agent::http::webhooks::{self, WebhookConfig, WebhookStats};
use poolpilot::e2b::{ClientConfig, E2bApi, HttpClient, signature};
use poolpilot::emulator::{Clock, CoreConfig, EmulatorOptions, RunningEmulator};
use poolpilot::rules::load_str;

const RULES: &str = "
pools:
  - { name: w, min: 0, max: 100000, scale: { interval: 1h } }
triggers:
  - { name: replace, on: killed, pool: w, action: replace }
";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut agent, hook, emu) = rt.block_on(async {
        let emu = RunningEmulator::bind(
            EmulatorOptions {
                core: CoreConfig {
                    max_concurrent: 10_000_000,
                    create_rate: 0.0,
                    ..CoreConfig::default()
                },
                clock: Clock::Manual,
                ..EmulatorOptions::default()
            },
            "127.0.0.1:0",
        )
        .await
        .expect("emulator");
        let mut cfg = ClientConfig::new(emu.url(), "e2b_bench");
        cfg.create_rate = None;
        let api: Arc<dyn E2bApi> = Arc::new(HttpClient::new(cfg).expect("client"));
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let dedup = Arc::new(Mutex::new(Dedup::new(1_000_000)));
        let app = webhooks::router(
            WebhookConfig::new("s"),
            tx,
            dedup.clone(),
            Arc::new(WebhookStats::default()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hook = format!(
            "http://{}/webhooks/e2b",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        let rules = Arc::new(load_str(&[("r.yaml", RULES)]).expect("rules"));
        let mut agent = Agent::new(
            api,
            rules,
            AgentOptions {
                dispatcher: None,
                webhooks: Some(rx),
                dedup,
                events_every: Duration::from_secs(3600),
                dry_run: false,
                state_dir: None,
                clock: None,
            },
        )
        .expect("agent");
        let now = emu.emulator.with_core(|c| c.now());
        agent.tick(now).await;
        (agent, hook, emu)
    });
    let http = reqwest::Client::new();
    let now = emu.emulator.with_core(|c| c.now());
    // Stamped at the emulator's time: an event older than the agent's dedup horizon (the
    // first poll's look-back) would be acknowledged as stale and never acted on.
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut n = 0u64;
    let mut group = c.benchmark_group("webhook_to_action");
    group.sample_size(50);
    group.bench_function("killed webhook -> replacement created", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    n += 1;
                    let body = format!(
                        r#"{{"id":"ev{n}","type":"sandbox.lifecycle.killed","timestamp":"{stamp}","sandboxId":"gone{n}","eventData":{{"kill_reason":"unknown","sandbox_metadata":{{"poolpilot_pool":"w"}}}}}}"#
                    );
                    let sig = signature::sign("s", body.as_bytes());
                    let r = http.post(&hook).header("e2b-signature", sig).header("e2b-delivery-id", format!("d{n}")).body(body).send().await.expect("post");
                    assert_eq!(r.status(), 202);
                    let report = agent.react(now).await;
                    assert_eq!(report.decisions, 1);
                    agent.settle().await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
