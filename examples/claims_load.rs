//! An open-loop load generator for the claims API: claim + release at a fixed rate against a
//! running agent, reporting client-side claim latency (p50, p90, p99, max), the claims/s
//! sustained, and whether any sandbox was held by two claims at once. Used by
//! scripts/bench-claims.sh; it only sends requests and never touches E2B.
//!
//! `claims_load BASE[,BASE...] POOL [RATE=500] [SECONDS=20] [HOLD_MS=0]`, token from
//! `POOLPILOT_API_TOKEN`. With several BASEs (replicas sharing a store) requests go to each in
//! turn. Each claim asks `?wait=0s`, so what is timed is the hand-out of a
//! ready member, not a wait for a create; a 503 is counted, not retried.
//!
//! The double hand-out check is sound with client-side times: a claim counts as held from the
//! moment its 201 arrives until just before its DELETE is sent, an interval inside the one
//! the agent holds it for. Two such intervals of one sandbox that overlap mean the agent held
//! it twice at once. Exits 1 if that happened or if a request failed other than by 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

/// What the run saw.
#[derive(Default)]
struct Tally {
    claim_us: Vec<u64>,
    release_us: Vec<u64>,
    granted: u64,
    unavailable: u64,
    errors: Vec<String>,
    /// Sandbox -> the claim holding it now, client-side.
    held: HashMap<String, String>,
    doubles: Vec<String>,
}

struct Run {
    http: reqwest::Client,
    bases: Vec<String>,
    /// Which base the next request goes to.
    turn: std::sync::atomic::AtomicUsize,
    pool: String,
    token: Option<String>,
    hold: Duration,
    tally: Mutex<Tally>,
}

impl Run {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let i = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = &self.bases[i % self.bases.len()];
        let r = self.http.request(method, format!("{base}{path}"));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// One claim, held for `hold`, then released.
    async fn cycle(&self) {
        let path = format!("/api/v1/pools/{}/claims?wait=0s", self.pool);
        let t0 = Instant::now();
        let answer = self.request(reqwest::Method::POST, &path).send().await;
        let took = t0.elapsed().as_micros() as u64;
        let (claim_id, sandbox) = match answer {
            Ok(r) if r.status() == StatusCode::CREATED => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                let (Some(c), Some(s)) = (v["claim_id"].as_str(), v["sandbox_id"].as_str()) else {
                    lock(&self.tally)
                        .errors
                        .push(format!("201 without ids: {v}"));
                    return;
                };
                (c.to_string(), s.to_string())
            }
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                lock(&self.tally).unavailable += 1;
                return;
            }
            Ok(r) => {
                let s = r.status();
                let body = r.text().await.unwrap_or_default();
                lock(&self.tally).errors.push(format!("claim: {s} {body}"));
                return;
            }
            Err(e) => {
                lock(&self.tally).errors.push(format!("claim: {e}"));
                return;
            }
        };
        self.granted(&claim_id, &sandbox, took);
        if !self.hold.is_zero() {
            tokio::time::sleep(self.hold).await;
        }
        self.release(&claim_id, &sandbox).await;
    }

    fn granted(&self, claim_id: &str, sandbox: &str, took_us: u64) {
        let mut t = lock(&self.tally);
        t.granted += 1;
        t.claim_us.push(took_us);
        if let Some(other) = t.held.insert(sandbox.to_string(), claim_id.to_string()) {
            t.doubles
                .push(format!("{sandbox} held by {other} and {claim_id} at once"));
        }
    }

    async fn release(&self, claim_id: &str, sandbox: &str) {
        {
            let mut t = lock(&self.tally);
            if t.held.get(sandbox).map(String::as_str) == Some(claim_id) {
                t.held.remove(sandbox);
            }
        }
        let t0 = Instant::now();
        let answer = self
            .request(
                reqwest::Method::DELETE,
                &format!("/api/v1/claims/{claim_id}"),
            )
            .send()
            .await;
        let took = t0.elapsed().as_micros() as u64;
        let mut t = lock(&self.tally);
        match answer {
            Ok(r) if r.status() == StatusCode::OK => t.release_us.push(took),
            Ok(r) => t.errors.push(format!("release: {}", r.status())),
            Err(e) => t.errors.push(format!("release: {e}")),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `q` quantile of sorted microseconds, in milliseconds.
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(base), Some(pool)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: claims_load BASE[,BASE...] POOL [RATE=500] [SECONDS=20] [HOLD_MS=0]");
    };
    let rate: f64 = arg(&args, 3, 500.0);
    let seconds: f64 = arg(&args, 4, 20.0);
    let hold = Duration::from_millis(arg(&args, 5, 0));
    anyhow::ensure!(
        rate > 0.0 && rate <= 100_000.0,
        "RATE must be above 0 and at most 100000"
    );
    anyhow::ensure!(
        seconds > 0.0 && seconds <= 3600.0,
        "SECONDS must be above 0 and at most 3600"
    );
    let run = Arc::new(Run {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        bases: base
            .split(',')
            .map(|b| b.trim_end_matches('/').to_string())
            .collect(),
        turn: Default::default(),
        pool: pool.clone(),
        token: std::env::var("POOLPILOT_API_TOKEN").ok(),
        hold,
        tally: Mutex::new(Tally::default()),
    });
    let total = (rate * seconds).round() as u64;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    // Open loop: the i-th claim starts at i / rate, however long earlier ones take.
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let run = run.clone();
        tasks.push(tokio::spawn(async move { run.cycle().await }));
    }
    let sent_for = start.elapsed();
    for t in tasks {
        t.await?;
    }
    report(&run, total, rate, sent_for)
}

fn report(run: &Run, total: u64, rate: f64, sent_for: Duration) -> anyhow::Result<()> {
    let mut t = lock(&run.tally);
    t.claim_us.sort_unstable();
    t.release_us.sort_unstable();
    let secs = sent_for.as_secs_f64();
    println!(
        "claims sent: {total} at {rate}/s over {secs:.1}s; granted {} ({:.1}/s sustained), 503 {}, errors {}",
        t.granted,
        t.granted as f64 / secs,
        t.unavailable,
        t.errors.len()
    );
    for (what, v) in [("claim", &t.claim_us), ("release", &t.release_us)] {
        println!(
            "{what} latency (client, loopback): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            quantile_ms(v, 0.50),
            quantile_ms(v, 0.90),
            quantile_ms(v, 0.99),
            quantile_ms(v, 1.0)
        );
    }
    println!("sandboxes held by two claims at once: {}", t.doubles.len());
    for d in t.doubles.iter().take(5) {
        println!("  {d}");
    }
    for e in t.errors.iter().take(5) {
        println!("  error: {e}");
    }
    anyhow::ensure!(t.doubles.is_empty(), "a sandbox was handed out twice");
    anyhow::ensure!(t.errors.is_empty(), "{} requests failed", t.errors.len());
    Ok(())
}
