//! One pool now, over loopback: `GET /api/v1/pools/{pool}` of a running agent against the
//! emulator (its sizes, min and max, claims counts and recent decisions; a JSON 404 naming the
//! known pools), and `poolpilot status` reading the same agent: one line per pool, the firing
//! alert and the readiness, no colour into a pipe, `--json` that parses, and a clear error
//! when no agent answers. Waits are bounded polls of what the agent reports.

mod common;

use std::process::Output;

use common::get;
use serde_json::Value;

/// Two pools, and an alert that fires as soon as `w` is at its min.
const RULES: &str = "\
pools:
  - { name: w, min: 2, max: 4 }
  - { name: v, min: 1, max: 3 }
alerts:
  - name: w-full
    scope: pool
    pool: w
    when: size >= 2
    severity: warning
    message: \"{pool} has {size}\"
";

/// `poolpilot status` with `args`, run off the async workers (the agent runs on them).
async fn status(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
            .arg("status")
            .args(&args)
            .env_remove("POOLPILOT_URL")
            .env_remove("POOLPILOT_LISTEN")
            .env_remove("NO_COLOR")
            .output()
            .expect("run poolpilot status")
    })
    .await
    .expect("the command's thread")
}

async fn json(url: &str) -> (u16, Value) {
    let (code, body) = get(url).await;
    (code, serde_json::from_str(&body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pool_now_and_status_read_a_running_agent() {
    let emu = common::emulator(common::options()).await;
    let dir = common::AgentDir::new(
        "status",
        &emu.url(),
        RULES,
        common::KeyIn::File,
        "poll: { metrics: 200ms, events: 1s }\n",
    );
    let agent = dir.spawn();
    let base = dir.base();
    common::until(
        "both pools at their min, the alert firing",
        30,
        async || {
            let (_, w) = json(&format!("{base}/api/v1/pools/w")).await;
            let (_, v) = json(&format!("{base}/api/v1/pools/v")).await;
            let (_, alerts) = json(&format!("{base}/api/v1/alerts")).await;
            w["actual"] == 2
                && w["desired"] == 2
                && w["claims"]["idle"] == 2
                && v["actual"] == 1
                && alerts["w-full"]["w"]["phase"] == "firing"
        },
    )
    .await;

    one_pool(&base).await;
    status_lines(&base).await;
    status_json(&base).await;

    agent.stop.send(()).unwrap();
    agent.task.await.unwrap().unwrap();
    std::fs::remove_dir_all(&dir.dir).ok();
}

/// `GET /api/v1/pools/w`: the list's fields, min and max, claims, and w's decisions only.
async fn one_pool(base: &str) {
    let (code, w) = json(&format!("{base}/api/v1/pools/w")).await;
    assert_eq!(code, 200, "{w}");
    assert_eq!(w["name"], "w");
    assert_eq!((w["min"].as_u64(), w["max"].as_u64()), (Some(2), Some(4)));
    assert_eq!(w["pending_creates"], 0);
    assert!(w["summary"].is_string(), "{w}");
    assert!(w.get("cooldown_up_until").is_some(), "{w}");
    assert_eq!(w["claims"]["claimed"], 0, "{w}");
    assert_eq!(w["claims"]["idle_paused"], 0, "{w}");
    let recent = w["recent"].as_array().expect("recent decisions");
    assert!(!recent.is_empty() && recent.len() <= 20, "{w}");
    assert!(recent.iter().all(|d| d["rule"] == "w"), "{w}");
    assert!(
        recent.iter().any(|d| d["cause"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("raised to min 2"))
            && d["outcome"].is_string()),
        "{w}"
    );

    let (code, body) = get(&format!("{base}/api/v1/pools/nope")).await;
    assert_eq!(code, 404, "{body}");
    let err: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(err["code"], 404);
    assert_eq!(err["message"], "no pool named nope; known: v, w");
}

/// `poolpilot status` into a pipe: each pool's line with its sizes, the alert, the readiness.
async fn status_lines(base: &str) {
    let o = status(&["--url", base]).await;
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!text.contains('\x1b'), "no colour into a pipe: {text:?}");
    let line = |pool: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(pool))
            .unwrap_or_else(|| panic!("a line for {pool}: {text}"))
            .to_string()
    };
    let w: Vec<String> = line("w").split_whitespace().map(String::from).collect();
    assert_eq!(w[1..5], ["2/2", "0", "2..4", "0/2"], "{text}");
    let v: Vec<String> = line("v").split_whitespace().map(String::from).collect();
    assert_eq!(v[1..5], ["1/1", "0", "1..3", "0/1"], "{text}");
    assert!(
        text.contains("alerts: 1 firing\n  w-full  w  since "),
        "{text}"
    );
    assert!(text.contains("\nready: "), "{text}");
}

/// `poolpilot status --json`: what the agent answered, as one document.
async fn status_json(base: &str) {
    let o = status(&["--url", base, "--json"]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(v["agent"], base);
    assert_eq!(v["ready"]["ready"], true, "{v}");
    let names: Vec<&str> = v["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["v", "w"]);
    assert!(
        v["pools"][1]["recent"].is_array(),
        "each pool's own page: {v}"
    );
    assert_eq!(v["alerts"]["w-full"]["w"]["phase"], "firing");
}

#[tokio::test]
async fn status_says_when_no_agent_answers() {
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let o = status(&["--url", &url]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("no agent answers at {url}: "))
            && err.contains("is `poolpilot run` running? give --url"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}
