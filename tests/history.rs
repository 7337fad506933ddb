//! The history store end to end: a real agent (`poolpilot run`'s body) against the emulator on
//! loopback keeps what it sees and does in `state/history.db`, and the read API answers from
//! it: events by sandbox, type and page (`/api/v1/events`), one sandbox's timeline (Pattern 1:
//! the decision that created it, its events, its samples), alert episodes firing then resolved
//! (`/api/v1/alerts?state=`), a pool's sizes over time, and clear 400s and 404s. Then
//! `poolpilot events report --config` reads the same store after the agent stopped (Pattern 3).
//! Waits are bounded polls of what the agent answers.

mod common;

use std::collections::BTreeSet;

use poolpilot::e2b::{E2bApi, ListQuery, Metadata};
use serde_json::Value;

/// A pool at 2, and an alert that fires while it has 2 or more.
const RULES: &str = "\
pools:
  - { name: w, min: 2, max: 4 }
alerts:
  - name: w-full
    scope: pool
    pool: w
    when: size >= 2
    severity: warning
    message: \"{pool} has {size}\"
";

/// The same pool shrunk to 1: the alert resolves once the pool is down to 1.
const SHRUNK: &str = "\
pools:
  - { name: w, min: 1, max: 1 }
alerts:
  - name: w-full
    scope: pool
    pool: w
    when: size >= 2
    severity: warning
    message: \"{pool} has {size}\"
";

async fn json(url: &str) -> (u16, Value) {
    let (code, body) = common::get(url).await;
    (code, serde_json::from_str(&body).unwrap_or_default())
}

/// The ids of `w`'s running members, from the emulator.
async fn members(emu_url: &str) -> Vec<String> {
    let api = common::client(emu_url);
    let query = ListQuery {
        metadata: Metadata::from([("poolpilot_pool".into(), "w".into())]),
        ..Default::default()
    };
    let mut ids: Vec<String> = api
        .list_sandboxes(&query)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.sandbox_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_history_and_the_api_and_report_read_it() {
    let emu = common::emulator(common::options()).await;
    let dir = common::AgentDir::new(
        "history",
        &emu.url(),
        RULES,
        common::KeyIn::File,
        "poll: { metrics: 200ms, events: 1s }\n",
    );
    let agent = dir.spawn();
    let base = dir.base();
    common::until("the alert firing in the history", 30, async || {
        let (_, a) = json(&format!("{base}/api/v1/alerts?state=firing")).await;
        a.as_array()
            .is_some_and(|a| a.iter().any(|e| e["alert"] == "w-full"))
    })
    .await;

    let victim = members(&emu.url()).await[0].clone();
    common::client(&emu.url())
        .kill_sandbox(&victim)
        .await
        .expect("kill");
    common::until("the killed event in the history", 30, async || {
        let (_, p) = json(&format!(
            "{base}/api/v1/events?sandbox={victim}&type=killed"
        ))
        .await;
        p["events"].as_array().is_some_and(|e| e.len() == 1)
    })
    .await;
    timeline(&base, &victim).await;
    paging(&base).await;
    errors(&base).await;

    std::fs::write(dir.dir.join("rules/pool.yaml"), SHRUNK).expect("rewrite the rules");
    agent.reload.send(()).await.expect("reload");
    common::until("the alert resolved in the history", 30, async || {
        let (_, a) = json(&format!("{base}/api/v1/alerts?state=resolved&since=1h")).await;
        a.as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["alert"] == "w-full" && e["state"] == "resolved")
        })
    })
    .await;
    let (_, metrics) = common::get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("poolpilot_history_records_total{result=\"dropped\"} 0"),
        "{metrics}"
    );
    let (_, firing) = json(&format!("{base}/api/v1/alerts?state=firing")).await;
    assert_eq!(firing, serde_json::json!([]), "nothing fires any more");
    pool_history(&base).await;

    let _ = agent.stop.send(());
    agent
        .task
        .await
        .expect("the agent's task")
        .expect("the agent stops cleanly");
    report(&dir).await;
}

/// Pattern 1: the decision that created the sandbox, its created and killed events, in time
/// order, and its pool.
async fn timeline(base: &str, id: &str) {
    let (code, t) = json(&format!("{base}/api/v1/sandboxes/{id}/timeline")).await;
    assert_eq!(code, 200, "{t:#}");
    assert_eq!(t["pool"], "w", "{t:#}");
    let entries = t["entries"].as_array().expect("entries");
    let kinds: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["what"].as_str().unwrap()))
        .collect();
    let decision = kinds
        .iter()
        .position(|(k, w)| *k == "decision" && w.contains(&format!("created {id}")))
        .unwrap_or_else(|| panic!("no create decision naming {id}: {kinds:?}"));
    let killed = kinds
        .iter()
        .position(|(k, w)| *k == "event" && w.starts_with("sandbox.lifecycle.killed"))
        .unwrap_or_else(|| panic!("no killed event: {kinds:?}"));
    assert!(decision < killed, "{kinds:?}");
    let times: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");
}

/// Pages of one event each, by cursor, give the same events as one page of all.
async fn paging(base: &str) {
    let (_, all) = json(&format!("{base}/api/v1/events?pool=w&limit=1000")).await;
    let all: Vec<String> = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(all.len() >= 3, "two creates and a kill at least: {all:?}");
    let mut paged = Vec::new();
    let mut url = format!("{base}/api/v1/events?pool=w&limit=1");
    loop {
        let (code, page) = json(&url).await;
        assert_eq!(code, 200, "{page:#}");
        for e in page["events"].as_array().expect("events") {
            paged.push(e["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) if paged.len() < all.len() => {
                url = format!("{base}/api/v1/events?pool=w&limit=1&cursor={c}")
            }
            _ => break,
        }
    }
    assert_eq!(paged[..all.len()], all[..], "pages follow the one list");
    let unique: BTreeSet<&String> = paged.iter().collect();
    assert_eq!(unique.len(), paged.len(), "no event twice");
}

/// Bad parameters are 400s that name what is valid; an unknown sandbox is a 404.
async fn errors(base: &str) {
    for (query, says) in [
        ("since=yesterday", "RFC 3339"),
        ("limit=0", "from 1 to 1000"),
        ("limit=abc", "from 1 to 1000"),
        ("colour=red", "unknown parameter"),
        ("cursor=nope", "next_cursor"),
    ] {
        let (code, body) = json(&format!("{base}/api/v1/events?{query}")).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert_eq!(body["code"], 400);
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
    let (code, body) = json(&format!("{base}/api/v1/alerts?state=open")).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("firing, resolved, all")
    );
    let (code, body) = json(&format!("{base}/api/v1/sandboxes/nope/timeline")).await;
    assert_eq!(code, 404, "{body}");
}

/// The pool's sizes over the last hour: the 2 it held, then the 1 it shrank to.
async fn pool_history(base: &str) {
    common::until("the pool's history shows it at 1", 30, async || {
        let (_, p) = json(&format!("{base}/api/v1/pools/w")).await;
        p["history"]
            .as_array()
            .and_then(|h| h.last())
            .is_some_and(|s| s["actual"] == 1)
    })
    .await;
    let (_, p) = json(&format!("{base}/api/v1/pools/w?since=1h")).await;
    let h = p["history"].as_array().expect("history");
    assert!(
        h.iter().any(|s| s["actual"] == 2 && s["desired"] == 2),
        "{h:#?}"
    );
    assert!(h.iter().all(|s| s["min"].is_number() && s["pool"] == "w"));
    let (code, body) = json(&format!("{base}/api/v1/pools/w?since=soon")).await;
    assert_eq!(code, 400, "{body}");
}

/// Pattern 3 from the store, with no agent running: the two creates and the kill.
async fn report(dir: &common::AgentDir) {
    let config = dir.config_path();
    let o = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
            .args(["events", "report", "--since", "1h", "--json", "--config"])
            .arg(config)
            .env_remove("POOLPILOT_STATE_DIR")
            .output()
            .expect("run poolpilot")
    })
    .await
    .expect("the command's thread");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let r: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let w = r["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["pool"] == "w")
        .unwrap_or_else(|| panic!("no group of pool w: {r:#}"));
    assert!(w["created"].as_u64().unwrap() >= 2, "{r:#}");
    assert!(w["killed"].as_u64().unwrap() >= 1, "{r:#}");
}
