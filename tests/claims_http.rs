//! The claims API end to end: the real `poolpilot run` binary, over loopback, against the
//! emulator. A token guards it (401 without it, 403 on a public address without one); 1,000
//! concurrent claims on a pool of 50 get exactly 50 distinct members and 950 answers of 503
//! with `Retry-After`; an Idempotency-Key gives one member however often and however
//! concurrently it is sent; a release kills the member, a renewal moves the lease, the shared
//! pick names a running member; and a claim outlives a SIGTERM and restart of the agent.
//!
//! The agent runs as a child process (so SIGTERM and a restart on the same state dir are
//! real); the emulator runs in the test process, as in the other end-to-end tests, and is
//! asked over its HTTP API what it still runs. Waits are bounded polls of what the agent
//! reports (`/readyz`, the `poolpilot_pool_idle_sandboxes` gauge); nothing asserts on timing.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use poolpilot::e2b::E2bApi as _;
use serde_json::Value;

/// The rules of every test here: one pool, `w`, of `n` members.
fn pool_of(n: usize) -> String {
    format!("pools:\n  - {{ name: w, min: {n}, max: {n} }}\n")
}

/// Fast polls, and room for a thousand connections at once.
const EXTRA: &str = "poll: { metrics: 200ms, events: 1s }\nlimits: { max_connections: 4096 }\n";

/// `poolpilot run` as a child process, its stderr kept in `agent.log` of its folder.
struct Agent {
    child: tokio::process::Child,
    base: String,
    log: std::path::PathBuf,
}

impl Agent {
    /// Starts the binary on `dir`'s config with these extra environment variables.
    fn start(dir: &Path, port: u16, env: &[(&str, &str)]) -> Agent {
        let log = dir.join("agent.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the agent's log");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"));
        cmd.args(["run", "--config"])
            .arg(dir.join("poolpilot.yaml"))
            .env_remove("E2B_API_KEY")
            .env_remove("POOLPILOT_API_TOKEN")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("POOLPILOT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().expect("start poolpilot run"),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// What the agent logged so far, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent is ready and hands out `idle` members of pool `w`.
    async fn until_idle(&self, idle: usize) {
        let base = &self.base;
        common::until(&format!("{idle} idle members of w"), 30, async || {
            common::get(&format!("{base}/readyz")).await.0 == 200
                && gauge(
                    &common::get(&format!("{base}/metrics")).await.1,
                    "poolpilot_pool_idle_sandboxes",
                ) == Some(idle)
        })
        .await;
    }

    /// SIGTERM, as systemd stops it; it must exit cleanly.
    async fn stop(&mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the agent exits after SIGTERM")
            .expect("wait for the agent");
        assert!(status.success(), "exit {status:?}:\n{}", self.log());
    }
}

/// The value of `name{pool="w"}` in a `/metrics` text.
fn gauge(metrics: &str, name: &str) -> Option<usize> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{{pool=\"w\"}} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// An HTTP answer: status, headers, JSON body (Null when it is not JSON).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = req.send().await.expect("the agent answers");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// `POST /api/v1/pools/w/claims?wait=0s`, with a bearer token when given.
async fn claim(http: &reqwest::Client, base: &str, token: Option<&str>) -> Answer {
    let mut req = http.post(format!("{base}/api/v1/pools/w/claims?wait=0s"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    send(req).await
}

/// An error answer is JSON `{"code", "message"}` with the status as its code.
fn assert_json_error(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["code"], status, "{}", a.body);
    assert!(
        a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        a.body
    );
}

/// A 503 that says when to come back.
fn assert_retry_later(a: &Answer) {
    assert_json_error(a, 503);
    let after: u64 = a
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("503 carries Retry-After in seconds");
    assert!(after >= 1, "Retry-After {after}");
}

/// Rewrites the `listen:` line of the folder's config.
fn listen_on(dir: &Path, addr: &str) {
    let path = dir.join("poolpilot.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("listen:") {
                format!("listen: {addr}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// The emulator and the real agent on a pool `w` of `n` members, every one idle.
struct Setup {
    emu: poolpilot::emulator::RunningEmulator,
    dir: common::AgentDir,
    agent: Agent,
}

impl Setup {
    async fn start(tag: &str, n: usize, env: &[(&str, &str)]) -> Setup {
        let emu = common::emulator(common::options()).await;
        let dir = common::AgentDir::new(tag, &emu.url(), &pool_of(n), common::KeyIn::File, EXTRA);
        let agent = Agent::start(&dir.dir, dir.port, env);
        agent.until_idle(n).await;
        Setup { emu, dir, agent }
    }

    /// Stops the agent (cleanly, as SIGTERM does) and the emulator.
    async fn finish(mut self) {
        self.agent.stop().await;
        std::fs::remove_dir_all(&self.dir.dir).ok();
        self.emu.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_claims_and_a_public_address_needs_one() {
    let emu = common::emulator(common::options()).await;
    let http = common::raw();

    // A token from POOLPILOT_API_TOKEN.
    let d = common::AgentDir::new(
        "claims-env",
        &emu.url(),
        &pool_of(2),
        common::KeyIn::File,
        EXTRA,
    );
    let mut agent = Agent::start(&d.dir, d.port, &[("POOLPILOT_API_TOKEN", "env-token")]);
    agent.until_idle(2).await;
    let none = claim(&http, &agent.base, None).await;
    assert_json_error(&none, 401);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    assert_json_error(&claim(&http, &agent.base, Some("env-tokem")).await, 401);
    assert_json_error(&claim(&http, &agent.base, Some("env-token2")).await, 401);
    let list = send(http.get(format!("{}/api/v1/pools/w/claims", agent.base))).await;
    assert_json_error(&list, 401);
    let ok = claim(&http, &agent.base, Some("env-token")).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert!(ok.body["sandbox_id"].is_string(), "{}", ok.body);
    // Read-only endpoints stay open on loopback.
    assert_eq!(
        common::get(&format!("{}/api/v1/pools", agent.base)).await.0,
        200
    );
    agent.stop().await;

    // A public address without a token: claims refused, health open.
    let d2 = common::AgentDir::new(
        "claims-public",
        &emu.url(),
        &pool_of(1),
        common::KeyIn::File,
        EXTRA,
    );
    listen_on(&d2.dir, &format!("0.0.0.0:{}", d2.port));
    let mut public = Agent::start(&d2.dir, d2.port, &[]);
    let base = public.base.clone();
    common::until("healthz on 0.0.0.0", 30, async || {
        common::get(&format!("{base}/healthz")).await.0 == 200
    })
    .await;
    assert_json_error(&claim(&http, &base, None).await, 403);
    let pick = send(http.get(format!("{base}/api/v1/pools/w/pick"))).await;
    assert_json_error(&pick, 403);
    assert_eq!(common::get(&format!("{base}/healthz")).await.0, 200);
    public.stop().await;

    // The same public address with a token file: claims served to its holder.
    std::fs::write(d2.dir.join("token"), "file-token\n").unwrap();
    let cfg = d2.config_path();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}token_file: token\n")).unwrap();
    let mut public = Agent::start(&d2.dir, d2.port, &[]);
    public.until_idle(1).await;
    assert_json_error(&claim(&http, &public.base, None).await, 401);
    let ok = claim(&http, &public.base, Some("file-token")).await;
    assert_eq!(ok.status, 201, "{}\n{}", ok.body, public.log());
    public.stop().await;

    for d in [d.dir, d2.dir] {
        std::fs::remove_dir_all(d).ok();
    }
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_claims_get_fifty_distinct_members() {
    let s = Setup::start("claims-1000", 50, &[]).await;
    let (emu, agent) = (&s.emu, &s.agent);

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (http, base) = (http.clone(), agent.base.clone());
            tokio::spawn(async move { claim(&http, &base, None).await })
        })
        .collect();
    let mut granted = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            201 => granted.push(a.body),
            _ => assert_retry_later(&a),
        }
    }
    assert_eq!(
        granted.len(),
        50,
        "exactly the pool's 50 members are handed out"
    );
    let sandboxes: BTreeSet<&str> = granted
        .iter()
        .map(|c| c["sandbox_id"].as_str().unwrap())
        .collect();
    assert_eq!(sandboxes.len(), 50, "no member handed out twice");
    let claims: BTreeSet<&str> = granted
        .iter()
        .map(|c| c["claim_id"].as_str().unwrap())
        .collect();
    assert_eq!(claims.len(), 50);

    // The agent's own view agrees, and every member handed out is one the emulator runs.
    let listed = send(http.get(format!("{}/api/v1/pools/w/claims", agent.base))).await;
    let listed: BTreeSet<&str> = listed
        .body
        .as_array()
        .expect("a list of claims")
        .iter()
        .map(|c| c["sandbox_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, sandboxes);
    let api = common::client(&emu.url());
    for id in &sandboxes {
        api.get_sandbox(id).await.expect("a claimed member runs");
    }
    let metrics = common::get(&format!("{}/metrics", agent.base)).await.1;
    assert_eq!(
        gauge(&metrics, "poolpilot_pool_claimed_sandboxes"),
        Some(50),
        "{metrics}"
    );
    assert_eq!(
        gauge(&metrics, "poolpilot_pool_idle_sandboxes"),
        Some(0),
        "{metrics}"
    );
    assert!(
        metrics.contains("poolpilot_claims_total{pool=\"w\",result=\"ok\"} 50"),
        "{metrics}"
    );
    assert!(
        metrics.contains("poolpilot_claims_total{pool=\"w\",result=\"timed_out\"} 950"),
        "{metrics}"
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_gives_one_member_however_it_is_sent() {
    let s = Setup::start("claims-idem", 5, &[]).await;
    let agent = &s.agent;
    let http = common::raw();
    let base = agent.base.clone();
    let keyed = |key: &str| {
        http.post(format!("{base}/api/v1/pools/w/claims?wait=0s"))
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({ "holder": "job-1" }))
    };

    // Twice in a row: the same claim, the second marked as a replay.
    let first = send(keyed("job-1")).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = send(keyed("job-1")).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["claim_id"], first.body["claim_id"]);
    assert_eq!(again.body["sandbox_id"], first.body["sandbox_id"]);
    assert_eq!(again.body["holder"], "job-1");

    // Twenty at once with a new key: each is the one claim, or a conflict; never two members.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let req = keyed("job-2");
            tokio::spawn(async move { send(req).await })
        })
        .collect();
    let mut claims = BTreeSet::new();
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            201 => {
                claims.insert((
                    a.body["claim_id"].as_str().unwrap().to_string(),
                    a.body["sandbox_id"].as_str().unwrap().to_string(),
                ));
            }
            _ => assert_json_error(&a, 409),
        }
    }
    assert_eq!(claims.len(), 1, "one claim for one key: {claims:?}");
    let listed = send(http.get(format!("{base}/api/v1/pools/w/claims"))).await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(2),
        "two keys, two claims: {}",
        listed.body
    );
    let metrics = common::get(&format!("{base}/metrics")).await.1;
    assert_eq!(
        gauge(&metrics, "poolpilot_pool_claimed_sandboxes"),
        Some(2),
        "{metrics}"
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_kills_the_member_renew_moves_the_lease_and_pick_names_a_member() {
    let s = Setup::start("claims-release", 3, &[]).await;
    let (emu, agent) = (&s.emu, &s.agent);
    let http = common::raw();
    let base = agent.base.clone();
    let api = common::client(&emu.url());

    // The shared pick names a running member, and takes nothing.
    let pick = send(http.get(format!("{base}/api/v1/pools/w/pick"))).await;
    assert_eq!(pick.status, 200, "{}", pick.body);
    assert_eq!(pick.body["pool"], "w");
    let picked = pick.body["sandbox_id"].as_str().expect("a sandbox id");
    api.get_sandbox(picked)
        .await
        .expect("the picked member runs");

    let c =
        send(http.post(format!("{base}/api/v1/pools/w/claims")).json(
            &serde_json::json!({ "holder": "job-7", "lease": "5m", "metadata": { "job": 7 } }),
        ))
        .await;
    assert_eq!(c.status, 201, "{}", c.body);
    assert_eq!(c.body["pool"], "w");
    assert_eq!(c.body["holder"], "job-7");
    let id = c.body["claim_id"].as_str().unwrap().to_string();
    let sandbox = c.body["sandbox_id"].as_str().unwrap().to_string();
    let shown = send(http.get(format!("{base}/api/v1/claims/{id}"))).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["sandbox_id"], sandbox.as_str());

    // Renewing moves the lease's end later.
    let expires = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().expect("expires_at"))
            .expect("RFC 3339")
    };
    let renewed = send(
        http.post(format!("{base}/api/v1/claims/{id}/renew"))
            .json(&serde_json::json!({ "lease": "30m" })),
    )
    .await;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert!(
        expires(&renewed.body) - expires(&c.body) >= chrono::TimeDelta::minutes(24),
        "5m -> 30m: {} then {}",
        c.body,
        renewed.body
    );
    assert_json_error(
        &send(
            http.post(format!("{base}/api/v1/claims/{id}/renew"))
                .json(&serde_json::json!({ "lease": "48h" })),
        )
        .await,
        400,
    );

    // Release: the answer is the claim; the member is killed (on_release: kill by default).
    let released = send(http.delete(format!("{base}/api/v1/claims/{id}"))).await;
    assert_eq!(released.status, 200, "{}", released.body);
    assert_eq!(released.body["claim_id"], id.as_str());
    common::until("the released member killed", 20, async || {
        api.get_sandbox(&sandbox).await.is_err()
    })
    .await;
    let listed = api
        .list_sandboxes(&Default::default())
        .await
        .expect("list the emulator's sandboxes");
    assert!(
        listed.iter().all(|s| s.sandbox_id != sandbox),
        "still listed"
    );
    let gone = send(http.get(format!("{base}/api/v1/claims/{id}"))).await;
    assert_json_error(&gone, 404);
    assert_json_error(
        &send(http.delete(format!("{base}/api/v1/claims/{id}"))).await,
        404,
    );
    assert_json_error(
        &send(http.post(format!("{base}/api/v1/claims/{id}/renew"))).await,
        404,
    );
    // The pool replaces what the release killed.
    agent.until_idle(3).await;

    // Unknown pools and bad bodies.
    assert_json_error(
        &send(http.post(format!("{base}/api/v1/pools/nope/claims?wait=0s"))).await,
        404,
    );
    assert_json_error(
        &send(
            http.post(format!("{base}/api/v1/pools/w/claims"))
                .body("{\"holdr\": 1}"),
        )
        .await,
        400,
    );
    assert_json_error(
        &send(http.post(format!("{base}/api/v1/pools/w/claims?wait=soon"))).await,
        400,
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_outlives_a_restart_and_its_member_is_not_handed_out_again() {
    let mut s = Setup::start("claims-restart", 3, &[]).await;
    let http = common::raw();
    let held = claim(&http, &s.agent.base, None).await;
    assert_eq!(held.status, 201, "{}", held.body);
    let id = held.body["claim_id"].as_str().unwrap().to_string();
    let sandbox = held.body["sandbox_id"].as_str().unwrap().to_string();
    s.agent.stop().await;
    s.agent = Agent::start(&s.dir.dir, s.dir.port, &[]);
    let agent = &s.agent;
    agent.until_idle(2).await;
    let base = &agent.base;
    let shown = send(http.get(format!("{base}/api/v1/claims/{id}"))).await;
    assert_eq!(shown.status, 200, "{}\n{}", shown.body, agent.log());
    assert_eq!(shown.body, held.body, "the same claim after the restart");

    // The two other members are handed out; the held one is not; then nothing is left.
    for _ in 0..2 {
        let c = claim(&http, base, None).await;
        assert_eq!(c.status, 201, "{}", c.body);
        assert_ne!(
            c.body["sandbox_id"],
            sandbox.as_str(),
            "the held member again"
        );
    }
    assert_retry_later(&claim(&http, base, None).await);
    s.finish().await;
}

/// The SDK round trip: tests/sdk/python_claim_roundtrip.py claims over HTTP with the helpers
/// of docs/pools.md, connects with E2B's official Python SDK (in `target/sdk-venv`, which
/// scripts/test.sh installs; missing, this fails rather than skips), and releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_connects_to_a_claimed_sandbox() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/sdk-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs E2B's SDKs",
        python.display()
    );
    let s = Setup::start("claims-sdk", 2, &[("POOLPILOT_API_TOKEN", "sdk-token")]).await;
    let (emu, agent) = (&s.emu, &s.agent);
    let out = tokio::process::Command::new(&python)
        .arg(root.join("tests/sdk/python_claim_roundtrip.py"))
        .current_dir(root.join("tests/sdk"))
        .env("POOLPILOT_URL", &agent.base)
        .env("POOLPILOT_API_TOKEN", "sdk-token")
        .env("E2B_API_URL", emu.url())
        .env("E2B_API_KEY", common::KEY)
        .env_remove("E2B_DEBUG")
        .env_remove("E2B_DOMAIN")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run the round trip script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("round trip passed"),
        "round trip failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        agent.log()
    );
    let counts = emu.emulator.request_counts();
    assert!(
        counts
            .get("POST /v2/sandboxes/{id}/connect")
            .copied()
            .unwrap_or(0)
            > 0,
        "the SDK connected through the emulator's API: {counts:?}"
    );
    s.finish().await;
}
