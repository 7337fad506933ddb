//! Fuzz target bodies: one function per parser or verifier that reads bytes a user, a file or
//! a server controls, each taking arbitrary bytes and asserting that nothing panics and that
//! the promises about its answer hold.
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` and the bounded CI slice
//! (`tests/fuzz_slice.rs`) both call these, so a campaign and CI test exactly the same code.
//! How to run a campaign is in docs/fuzzing.md.
//!
//! Every body goes through the most stable public entry point of what it fuzzes (the one
//! `poolpilot` itself calls), not an internal function, so that moving code inside a module
//! does not silently stop fuzzing it. Bodies never read the clock or a random source: the same
//! bytes always take the same path.
//!
//! This module is not a public promise: it is `#[doc(hidden)]` and may change with any release.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, TimeDelta, Utc};

use crate::e2b::{EventType, LifecycleEvent, SandboxMetric, SandboxState};
use crate::engine::{Engine, Observations, ObservedSandbox};
use crate::expr::{self, Bindings, Kind, Meta, Text, VarType};
use crate::rules::{self, POOL_KEY, RuleSet};

/// The byte that separates the fields of a structured input (see [`fields`]).
pub const SEPARATOR: u8 = 0xFF;

/// Splits `data` at [`SEPARATOR`] into exactly `n` fields (missing ones are empty; the last
/// keeps any further separators).
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n.max(1), |b| *b == SEPARATOR).collect();
    out.resize(n.max(1), &[]);
    out
}

/// Numbers worth trying: the edges of f64 and of the integer types rules compare against.
const NUMBERS: [f64; 16] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    80.0,
    100.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    9_007_199_254_740_993.0,
    u32::MAX as f64,
    i64::MAX as f64,
];

/// A fixed instant, so that bodies never read the clock.
fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_787_200, 0).unwrap_or_default()
}

/// A private directory for bodies that must go through a file, one per process and thread.
fn scratch_dir() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let tag: String = thread.chars().filter(char::is_ascii_digit).collect();
    let dir = std::env::temp_dir().join(format!("poolpilot-fuzz-{}-{tag}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

// ---------------------------------------------------------------------------------------------
// Expressions

/// Expression compiler and evaluator. Byte 0 picks the scope and the kind; the next bytes pick
/// each variable's value from [`NUMBERS`] (NaN and infinities included; 0xFF leaves it unset);
/// the rest is the expression text. Whatever compiles must evaluate to `Ok` or `Err`, never
/// panic, whatever the values.
pub fn expression(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let scopes = [
        &rules::scopes::SANDBOX,
        &rules::scopes::POOL,
        &rules::scopes::TEAM,
        &rules::scopes::EVENT,
    ];
    let scope = scopes[usize::from(pick) % scopes.len()];
    let kind = if pick & 0x80 == 0 {
        Kind::Bool
    } else {
        Kind::Number
    };
    let n = scope.vars.len().min(rest.len());
    let (values, text) = rest.split_at(n);
    let text = String::from_utf8_lossy(text);
    let Ok(compiled) = expr::compile(&text, scope, kind) else {
        return;
    };
    let texts = [Text::new(""), Text::new("base"), Text::new("w")];
    let meta_pairs = [("tier".to_string(), "gold".to_string())];
    let meta = Meta::new(meta_pairs.iter().map(|(k, v)| (k, v)));
    let mut b = Bindings::new(scope);
    b.set_meta(&meta);
    for (slot, (&v, (_, ty))) in values.iter().zip(scope.vars.iter()).enumerate() {
        match (v, ty) {
            (0xFF, _) => b.unset(slot),
            (v, VarType::Number) => b.set_num(slot, NUMBERS[usize::from(v) % NUMBERS.len()]),
            (v, VarType::Text) => b.set_text(slot, &texts[usize::from(v) % texts.len()]),
        }
    }
    match kind {
        Kind::Bool => drop(compiled.eval_bool(&b)),
        Kind::Number => drop(compiled.eval_f64(&b)),
    }
    for name in compiled.variables() {
        let _ = b.render(name);
    }
}

// ---------------------------------------------------------------------------------------------
// Rules

/// Rule loader, then the engine over what loaded. A `RuleSet` that loads is valid, so the
/// engine must step it without panicking: over members whose metrics are ordinary, NaN,
/// infinite or missing, lifecycle events of every type, and times from now to years ahead.
/// Every diagnostic of a file that does not load names the file.
pub fn rules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match rules::load_str(&[("fuzz.yaml", &text)]) {
        Ok(set) => step_engine(Arc::new(set), Default::default()),
        Err(diags) => {
            for d in diags {
                assert_eq!(d.file, "fuzz.yaml", "a diagnostic must name its file: {d}");
                let _ = d.to_string();
            }
        }
    }
}

/// A sandbox of `pool` whose CPU reads `cpu` (None: no metric).
fn member(pool: &str, i: usize, cpu: Option<f64>) -> ObservedSandbox {
    let now = epoch();
    ObservedSandbox {
        id: format!("{pool}-{i}"),
        template: "base".into(),
        started_at: now - TimeDelta::minutes(10),
        end_at: now + TimeDelta::minutes(10),
        state: SandboxState::Running,
        metadata: BTreeMap::from([(POOL_KEY.to_string(), pool.to_string())]),
        metric: cpu.map(|cpu_used_pct| SandboxMetric {
            timestamp: now,
            timestamp_unix: now.timestamp(),
            cpu_count: 2,
            cpu_used_pct,
            mem_used: 1 << 20,
            mem_total: 1 << 30,
            mem_cache: 0,
            disk_used: 1 << 20,
            disk_total: 1 << 30,
        }),
    }
}

/// One event of each known type for `sandbox`, plus one of a type E2B may add later.
fn events_for(sandbox: &str) -> Vec<LifecycleEvent> {
    let mut types = EventType::KNOWN.to_vec();
    types.push(EventType::Other("sandbox.lifecycle.future".into()));
    types
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let json = serde_json::json!({
                "id": format!("ev-{sandbox}-{i}"),
                "type": t,
                "timestamp": epoch(),
                "sandboxId": sandbox,
                "eventData": { "sandbox_metadata": { POOL_KEY: sandbox.split('-').next() } },
            });
            serde_json::from_value(json).ok()
        })
        .collect()
}

/// Steps an engine holding `state` over a fixed world: each pool with members at every
/// interesting CPU value, and every kind of event.
fn step_engine(set: Arc<RuleSet>, state: crate::engine::EngineState) {
    let mut sandboxes = Vec::new();
    let mut events = Vec::new();
    for pool in &set.pools {
        let cpus = NUMBERS.iter().copied().map(Some).chain([None]);
        sandboxes.extend(cpus.enumerate().map(|(i, c)| member(&pool.name, i, c)));
        events.extend(events_for(&format!("{}-0", pool.name)));
    }
    sandboxes.push(member("stranger", 0, Some(50.0)));
    let pending = BTreeMap::from([(String::from("w"), 1u32)]);
    let mut engine = Engine::with_state(set, state);
    let offsets = [0, 1, 5, 60, 3600, 86_400, 400 * 86_400];
    for (i, s) in offsets.into_iter().enumerate() {
        let obs = Observations {
            sandboxes: &sandboxes,
            events: if i == 0 { &events } else { &[] },
            pending_creates: &pending,
            claims: &crate::engine::NO_CLAIMS,
        };
        let _ = engine.step(epoch() + TimeDelta::seconds(s), &obs);
    }
}

/// The shipped example rules, which rule test files under `rules/tests/` refer to.
const SHIPPED_RULES: [(&str, &str); 5] = [
    (
        "batch-target.yaml",
        include_str!("../rules/batch-target.yaml"),
    ),
    ("guide-pool.yaml", include_str!("../rules/guide-pool.yaml")),
    (
        "high-cpu-alert.yaml",
        include_str!("../rules/high-cpu-alert.yaml"),
    ),
    ("lifecycle.yaml", include_str!("../rules/lifecycle.yaml")),
    ("notifiers.yaml", include_str!("../rules/notifiers.yaml")),
];

/// A directory holding the shipped rules and an empty `tests/`, written once per thread.
fn rules_dir() -> PathBuf {
    thread_local! {
        static DIR: OnceLock<PathBuf> = const { OnceLock::new() };
    }
    DIR.with(|d| {
        d.get_or_init(|| {
            let dir = scratch_dir().join("rules");
            let _ = std::fs::create_dir_all(dir.join("tests"));
            for (name, text) in SHIPPED_RULES {
                let _ = std::fs::write(dir.join(name), text);
            }
            dir
        })
        .clone()
    })
}

/// Rule test file loader (`poolpilot test`), next to the shipped rules as in `rules/tests/`.
/// Loading must give a checked file or diagnostics naming it; it never panics.
pub fn rule_test(data: &[u8]) {
    if !names_only_shipped_rules(data) {
        return;
    }
    let path = rules_dir().join("tests").join("fuzz.test.yaml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Err(diags) = crate::ruletest::load_test_file(&path) {
        for d in diags {
            let _ = d.to_string();
        }
    }
}

/// False when the file's `rule_files` could name something outside the scratch rules folder
/// (`/`, `/dev/zero`, `../../..`): following those would fuzz the machine, not poolpilot.
fn names_only_shipped_rules(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let Ok(tree) = serde_saphyr::from_str::<serde_json::Value>(&text) else {
        return true;
    };
    let Some(files) = tree.get("rule_files") else {
        return true;
    };
    let plain = |f: &serde_json::Value| {
        f.as_str().is_some_and(|f| {
            let name = f.strip_prefix("../").unwrap_or(f);
            !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.')
        })
    };
    files.as_array().is_none_or(|a| a.iter().all(plain))
}

// ---------------------------------------------------------------------------------------------
// Emulator scenarios

/// Scenario parser, then an emulator core built from what parsed and run for a virtual hour:
/// a scenario that parses must run without panicking.
pub fn scenario(data: &[u8]) {
    use crate::emulator::{Core, CoreConfig, Scenario};
    let text = String::from_utf8_lossy(data);
    let Ok(s) = Scenario::parse("fuzz.yaml", &text) else {
        return;
    };
    let mut core = Core::new(CoreConfig::default(), &s, epoch());
    for _ in 0..12 {
        core.advance(std::time::Duration::from_secs(300));
    }
}

// ---------------------------------------------------------------------------------------------
// Webhooks

/// The webhook receiver, whole: body limit, signature, strict parse, dedup, queue. Input
/// fields (see [`fields`]): flags, secret, signature header, delivery id, body. Flag bit 0
/// signs the body correctly instead of using the given header, so that the fuzzer reaches the
/// parser. Every answer is one of the documented statuses with a JSON body, a correctly
/// signed, well-formed event is accepted, and the secret never appears in an answer.
pub fn webhook(data: &[u8]) {
    use crate::e2b::signature;
    let f = fields(data, 5);
    let flags = f[0].first().copied().unwrap_or(0);
    let secret = String::from_utf8_lossy(f[1]).into_owned();
    let body = f[4].to_vec();
    let given = String::from_utf8_lossy(f[2]);
    let _ = signature::verify(&secret, &body, &given);
    assert!(signature::verify(
        &secret,
        &body,
        &signature::sign(&secret, &body)
    ));
    assert!(signature::verify(
        &secret,
        &body,
        &signature::sign_url_safe(&secret, &body)
    ));
    let header = if flags & 1 == 1 {
        signature::sign(&secret, &body).into_bytes()
    } else {
        f[2].to_vec()
    };
    let request = [header.as_slice(), f[3], &body].join(&SEPARATOR);
    let (status, answer) = deliver(&secret, header, f[3], body.clone());
    check_answer(status, &answer, &secret, &request, &body, flags & 1 == 1);
}

/// Posts one delivery to a fresh receiver and returns its status and body.
fn deliver(secret: &str, signature: Vec<u8>, delivery: &[u8], body: Vec<u8>) -> (u16, Vec<u8>) {
    use crate::agent::dedup::Dedup;
    use crate::agent::http::webhooks::{WebhookConfig, router};
    use axum::http::{HeaderValue, Request};
    use tower::ServiceExt;
    thread_local! {
        static RT: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().enable_time().build().ok();
    }
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    let dedup = Arc::new(Mutex::new(Dedup::new(16)));
    let app = router(WebhookConfig::new(secret), tx, dedup, Default::default());
    let mut req = Request::post("/webhooks/e2b").body(axum::body::Body::from(body));
    if let Ok(r) = &mut req {
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_bytes(&signature) {
            h.insert("e2b-signature", v);
        }
        if let Ok(v) = HeaderValue::from_bytes(delivery) {
            h.insert("e2b-delivery-id", v);
        }
    }
    let Ok(req) = req else {
        return (0, Vec::new());
    };
    RT.with(|rt| {
        let Some(rt) = rt else { return (0, Vec::new()) };
        rt.block_on(async move {
            let Ok(res) = app.oneshot(req).await;
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            (status, bytes)
        })
    })
}

/// The promises about one answer of the receiver.
/// `request` is everything the sender sent besides the secret (header, delivery id, body).
fn check_answer(
    status: u16,
    answer: &[u8],
    secret: &str,
    request: &[u8],
    body: &[u8],
    signed: bool,
) {
    if status == 0 {
        return;
    }
    assert!(
        [200, 202, 400, 401, 408, 413, 503].contains(&status),
        "unexpected status {status}"
    );
    let json: Result<serde_json::Value, _> = serde_json::from_slice(answer);
    assert!(json.is_ok(), "answer {status} is not JSON");
    // Error messages may quote the sender's own body (serde names a wrong value), so only a
    // secret the request does not carry counts as shown.
    let sent = String::from_utf8_lossy(request);
    if secret.len() >= 8 && !sent.contains(secret) {
        let text = String::from_utf8_lossy(answer);
        assert!(!text.contains(secret), "the answer shows the secret");
    }
    // Only a strict event is ever taken (the receiver refuses more: ids too long, trailing
    // bytes, events from the future or behind the window's horizon).
    if signed && status == 202 {
        let strict = serde_json::from_slice::<LifecycleEvent>(body).is_ok();
        assert!(strict, "a signed body that is not one event was taken");
    }
}

// ---------------------------------------------------------------------------------------------
// Agent state and config

/// The shipped rules, loaded once: the rule set a saved state is resumed under.
fn shipped_rules() -> Arc<RuleSet> {
    static SET: OnceLock<Arc<RuleSet>> = OnceLock::new();
    SET.get_or_init(|| {
        let sources: Vec<(&str, &str)> = SHIPPED_RULES.to_vec();
        Arc::new(rules::load_str(&sources).unwrap_or_default())
    })
    .clone()
}

/// The agent's saved state, through the agent's own start-up: `data` is written as
/// `state.json` in a state directory and an agent is built over it with the shipped rules
/// (the agent resumes it or sets it aside), then ticks once against an in-process emulator.
/// Whatever the file holds, the agent starts and ticks; it never panics or aborts.
pub fn state(data: &[u8]) {
    use crate::agent::control::{Agent, AgentOptions};
    use crate::agent::dedup::Dedup;
    use crate::emulator::{Core, CoreConfig, InProcess, Scenario};
    thread_local! {
        static RT: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().enable_time().build().ok();
    }
    let dir = scratch_dir().join("state");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err()
        || std::fs::write(dir.join("state.json"), data).is_err()
    {
        return;
    }
    let core = Core::new(CoreConfig::default(), &Scenario::default(), epoch());
    let api = Arc::new(InProcess::new(Arc::new(Mutex::new(core))));
    let opts = AgentOptions {
        dispatcher: None,
        webhooks: None,
        dedup: Arc::new(Mutex::new(Dedup::new(100))),
        events_every: std::time::Duration::from_secs(5),
        dry_run: false,
        state_dir: Some(dir),
        clock: None,
    };
    // Unreadable state is set aside, never a reason not to start (docs/operations.md).
    let mut agent = match Agent::new(api, shipped_rules(), opts) {
        Ok(a) => a,
        Err(e) => panic!("the agent does not start over this state.json: {e}"),
    };
    RT.with(|rt| {
        if let Some(rt) = rt {
            rt.block_on(async {
                agent.tick(epoch()).await;
                agent.tick(epoch() + TimeDelta::seconds(5)).await;
                agent.settle().await;
            });
        }
    });
}

/// The agent's config file, through the same resolution `poolpilot run` and `config print`
/// use, with a fixed environment: an answer or a clear error, never a panic.
pub fn config(data: &[u8]) {
    use crate::agent::config::{Overrides, resolve};
    let path = scratch_dir().join("poolpilot.yaml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let env = |k: &str| (k == "E2B_API_KEY").then(|| "e2b_fuzz_key_0123456789".to_string());
    match resolve(Some(&path), &Overrides::default(), &env) {
        Ok(e) => {
            let yaml = e.to_yaml();
            assert!(
                !yaml.contains("e2b_fuzz_key_0123456789"),
                "config shows the key"
            );
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !msg.contains("e2b_fuzz_key_0123456789"),
                "error shows the key"
            );
        }
    }
}

/// A fuzz target's body.
pub type Body = fn(&[u8]);

/// Every target by name, for the CI slice and for tools.
pub const TARGETS: [(&str, Body); 7] = [
    ("expression", expression),
    ("rules", rules),
    ("rule_test", rule_test),
    ("scenario", scenario),
    ("webhook", webhook),
    ("state", state),
    ("config", config),
];

/// The path of a shipped file, relative to the crate root, for seeding corpora.
pub fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
