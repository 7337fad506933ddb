//! High availability on a real PostgreSQL (issue 14): `poolpilot run` replicas (the real
//! binary, as separate processes) sharing one store against the emulator. One leads at a
//! time; kill -9 of the leader in the middle of a scale-up leaves the standby to finish it
//! with no double creates (counted from E2B's created events and their Idempotency-Keys); a
//! leader paused past its lease (SIGSTOP) does not act once it wakes (SIGCONT). Waits are
//! bounded polls of what the replicas and the emulator answer.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use poolpilot::e2b::{E2bApi, EventQuery, LifecycleEvent};
use serde_json::Value;

/// The webhook signature secret every replica has.
const SECRET: &str = "ha-webhook-secret";

/// One replica: its folder, port and process.
struct Replica {
    port: u16,
    child: Child,
}

impl Replica {
    /// Starts `poolpilot run` with a config naming the shared store, `rules`, and its own
    /// state dir and port.
    fn start(name: &str, emu: &str, store: &str, rules: &str) -> Replica {
        let dir = common::fresh_dir(&format!("ha-{name}"));
        std::fs::write(dir.join("rules.yaml"), rules).expect("write the rules");
        std::fs::write(dir.join("key"), common::KEY).expect("write the key");
        std::fs::write(dir.join("secret"), SECRET).expect("write the webhook secret");
        let port = common::free_port();
        std::fs::write(
            dir.join("poolpilot.yaml"),
            format!(
                "api: {{ url: \"{emu}\", key_file: key, create_rate: 2 }}\n\
                 rules: [rules.yaml]\nstate_dir: state\nlisten: 127.0.0.1:{port}\n\
                 poll: {{ metrics: 200ms, events: 1s }}\nstore: \"{store}\"\nlease: 2s\n\
                 webhook: {{ secret_file: secret }}\n"
            ),
        )
        .expect("write the config");
        let child = Command::new(env!("CARGO_BIN_EXE_poolpilot"))
            .args(["run", "--config"])
            .arg(dir.join("poolpilot.yaml"))
            .env("POOLPILOT_LOG", "poolpilot=info")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("the log file"))
            .spawn()
            .expect("start poolpilot run");
        Replica { port, child }
    }

    /// Its role from `/readyz`: `leader`, `standby`, `unavailable`, or "" while it does not
    /// answer.
    async fn role(&self) -> String {
        let (_, body) = common::get(&format!("http://127.0.0.1:{}/readyz", self.port)).await;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["replica"]["role"].as_str().unwrap_or("").to_string()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig}");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `created` event of pool `pool`, from the emulator's events API.
async fn created(emu: &str, pool: &str) -> Vec<LifecycleEvent> {
    let api = common::client(emu);
    let mut q = EventQuery {
        limit: 100,
        ..EventQuery::default()
    };
    let mut all = Vec::new();
    loop {
        let page = api.events_page(None, &q).await.expect("events");
        if page.is_empty() {
            break;
        }
        q.offset += page.len() as u64;
        all.extend(page);
    }
    all.into_iter()
        .filter(|e| e.event_type.as_str() == "sandbox.lifecycle.created")
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.get("poolpilot_pool"))
                .map(String::as_str)
                == Some(pool)
        })
        .collect()
}

/// The metadata value `key` of each event, counted.
fn by_meta(events: &[LifecycleEvent], key: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        let v = e
            .metadata()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default();
        *out.entry(v).or_default() += 1;
    }
    out
}

/// Waits until exactly one of `replicas` leads; its index.
async fn one_leader(replicas: &[&Replica]) -> usize {
    let mut leader = 0;
    common::until(
        "one replica leading, the others standing by",
        30,
        async || {
            let mut roles = Vec::new();
            for r in replicas {
                roles.push(r.role().await);
            }
            let leaders: Vec<usize> = (0..roles.len()).filter(|&i| roles[i] == "leader").collect();
            if leaders.len() == 1
                && roles.iter().filter(|r| *r == "standby").count() == roles.len() - 1
            {
                leader = leaders[0];
                true
            } else {
                false
            }
        },
    )
    .await;
    leader
}

const TEN: &str = "pools:\n  - { name: w, min: 10, max: 10 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_finishes_the_scale_up_of_a_killed_leader_without_double_creates() {
    let pg = common::pg::Postgres::start("ha-kill");
    let store = pg.database("ha").await;
    let emu = common::emulator(common::options()).await;
    let url = emu.url();
    let a = Replica::start("kill-a", &url, &store, TEN);
    let b = Replica::start("kill-b", &url, &store, TEN);
    let c = Replica::start("kill-c", &url, &store, TEN);
    let mut replicas = vec![a, b, c];
    let first = one_leader(&[&replicas[0], &replicas[1], &replicas[2]]).await;

    // Creates are paced at 2 a second: kill -9 the leader once 3 of the 10 are made.
    common::until("the leader part way through its scale-up", 30, async || {
        created(&url, "w").await.len() >= 3
    })
    .await;
    let mut dead = replicas.remove(first);
    dead.child.kill().expect("kill -9 the leader");
    let _ = dead.child.wait();
    let killed_at = Instant::now();
    let next = one_leader(&[&replicas[0], &replicas[1]]).await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(15), "failover took {took:?}");

    common::until("the pool at 10, made by the new leader", 60, async || {
        let (_, body) = common::get(&format!(
            "http://127.0.0.1:{}/api/v1/pools/w",
            replicas[next].port
        ))
        .await;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["actual"] == 10 && v["pending_creates"] == 0
    })
    .await;
    let made = created(&url, "w").await;
    let keys = by_meta(&made, "poolpilot_create");
    assert_eq!(
        made.len(),
        10,
        "exactly 10 sandboxes were ever made: {keys:?}"
    );
    assert!(
        keys.values().all(|&n| n == 1),
        "each Idempotency-Key once: {keys:?}"
    );
    let generations = by_meta(&made, "poolpilot_generation");
    assert_eq!(
        generations.len(),
        2,
        "made by two generations: {generations:?}"
    );
    eprintln!(
        "failover (kill -9 to the standby leading): {took:?}; creates by generation: {generations:?}"
    );
}

const THREE: &str = "pools:\n  - { name: w, min: 3, max: 3 }\n";
const TWO: &str = "pools:\n  - { name: w, min: 2, max: 2 }\n";

/// The pool as replica `r` sees it: (actual, pending creates).
async fn pool_at(r: &Replica) -> (Value, Value) {
    let (_, body) = common::get(&format!("http://127.0.0.1:{}/api/v1/pools/w", r.port)).await;
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    (v["actual"].clone(), v["pending_creates"].clone())
}

/// The old leader is given rules that want 3 members and the standby rules that want 2 (a
/// test device: replicas should share rules), so the old leader, once woken, would create a
/// member if it acted at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_does_not_act_when_it_wakes() {
    let pg = common::pg::Postgres::start("ha-stop");
    let store = pg.database("ha").await;
    let emu = common::emulator(common::options()).await;
    let url = emu.url();
    let old = Replica::start("stop-a", &url, &store, THREE);
    common::until("the first replica leading", 30, async || {
        old.role().await == "leader"
    })
    .await;
    common::until("its pool at 3", 30, async || {
        created(&url, "w").await.len() == 3
    })
    .await;
    let new = Replica::start("stop-b", &url, &store, TWO);
    one_leader(&[&old, &new]).await;

    old.signal("-STOP");
    common::until(
        "the standby taking over from the paused leader",
        30,
        async || new.role().await == "leader",
    )
    .await;
    common::until("the new leader's pool at 2", 30, async || {
        pool_at(&new).await == (2.into(), 0.into())
    })
    .await;

    old.signal("-CONT");
    common::until("the woken replica standing by", 30, async || {
        old.role().await == "standby"
    })
    .await;
    // Let the new leader turn after the wake: its pool is still 2, and nothing was made.
    common::until("the new leader's pool still at 2", 30, async || {
        pool_at(&new).await == (2.into(), 0.into())
    })
    .await;
    let made = created(&url, "w").await;
    assert_eq!(
        made.len(),
        3,
        "the woken leader made nothing: {:?}",
        by_meta(&made, "poolpilot_generation")
    );
    let (_, metrics) = common::get(&format!("http://127.0.0.1:{}/metrics", old.port)).await;
    assert!(metrics.contains("poolpilot_leader 0"), "{metrics}");
}

/// POSTs one signed delivery of `event` to replica `r`; the status.
async fn deliver(r: &Replica, event: &Value) -> u16 {
    let body = event.to_string();
    common::raw()
        .post(format!("http://127.0.0.1:{}/webhooks/e2b", r.port))
        .header("content-type", "application/json")
        .header("e2b-signature-version", "v1")
        .header(
            "e2b-signature",
            poolpilot::e2b::signature::sign(SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("the replica answers")
        .status()
        .as_u16()
}

/// A delivery that reaches a standby is left for the leader, which handles it once, even
/// when the same event reaches the leader too. The event is made up (no such sandbox in the
/// emulator), so no events poll can bring it: only the webhook path can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivered_to_a_standby_is_handled_once_by_the_leader() {
    let pg = common::pg::Postgres::start("ha-hook");
    let store = pg.database("ha").await;
    let emu = common::emulator(common::options()).await;
    let url = emu.url();
    let replicas = [
        Replica::start("hook-a", &url, &store, TWO),
        Replica::start("hook-b", &url, &store, TWO),
    ];
    let leader = one_leader(&[&replicas[0], &replicas[1]]).await;
    let standby = &replicas[1 - leader];
    let event = serde_json::json!({
        "id": "evt-ha-standby-1",
        "type": "sandbox.lifecycle.killed",
        "timestamp": chrono::Utc::now(),
        "sandboxId": "sb-not-in-e2b",
        "eventData": { "kill_reason": "oom", "sandbox_metadata": { "poolpilot_pool": "w" } },
    });
    assert!(
        (200..300).contains(&deliver(standby, &event).await),
        "the standby takes it"
    );
    assert!(
        (200..300).contains(&deliver(standby, &event).await),
        "and again (a retry)"
    );
    let base = format!("http://127.0.0.1:{}", replicas[leader].port);
    common::until(
        "the leader handling the standby's delivery",
        30,
        async || {
            let (_, body) =
                common::get(&format!("{base}/api/v1/events?sandbox=sb-not-in-e2b")).await;
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            v["events"].as_array().is_some_and(|e| !e.is_empty())
        },
    )
    .await;
    let code = deliver(&replicas[leader], &event).await;
    assert!((200..300).contains(&code), "the leader gets it too: {code}");
    // The leader's next turns: the pool is steady, and the event is still there once.
    common::until(
        "the leader turning after the second delivery",
        30,
        async || pool_at(&replicas[leader]).await == (2.into(), 0.into()),
    )
    .await;
    let (_, body) = common::get(&format!("{base}/api/v1/events?sandbox=sb-not-in-e2b")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{v:#}");
    assert_eq!(events[0]["source"], "webhook");
}

/// PostgreSQL stopped under a running pair: no replica acts (a member killed meanwhile is not
/// replaced) and each says why; started again, a leader is elected with no manual step and
/// replaces the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_down_no_replica_acts_and_they_resume_when_it_is_back() {
    let pg = common::pg::Postgres::start("ha-down");
    let store = pg.database("ha").await;
    let emu = common::emulator(common::options()).await;
    let url = emu.url();
    let replicas = [
        Replica::start("down-a", &url, &store, TWO),
        Replica::start("down-b", &url, &store, TWO),
    ];
    one_leader(&[&replicas[0], &replicas[1]]).await;
    common::until("the pool at 2", 30, async || {
        created(&url, "w").await.len() == 2
    })
    .await;

    pg.stop();
    common::until("both replicas saying the store is gone", 30, async || {
        replicas[0].role().await == "unavailable" && replicas[1].role().await == "unavailable"
    })
    .await;
    let (code, body) = common::get(&format!("http://127.0.0.1:{}/readyz", replicas[0].port)).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("the store cannot be reached"), "{body}");
    let victim = created(&url, "w").await[0].sandbox_id.clone();
    common::client(&url)
        .kill_sandbox(&victim)
        .await
        .expect("kill a member");
    // Neither replaces it: with the fence closed, neither turns at all.
    for r in &replicas {
        assert_eq!(r.role().await, "unavailable");
    }
    assert_eq!(
        created(&url, "w").await.len(),
        2,
        "nothing made without the store"
    );

    pg.start_again();
    one_leader(&[&replicas[0], &replicas[1]]).await;
    common::until(
        "the member replaced once the store is back",
        60,
        async || created(&url, "w").await.len() == 3,
    )
    .await;
}

const TWENTY: &str = "pools:\n  - { name: w, min: 20, max: 20 }\n";

/// The answer to a claims request: (status, body as JSON, `Idempotent-Replayed`).
async fn call(
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, bool) {
    let mut req = common::raw().request(method, url);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("the replica answers");
    let status = r.status().as_u16();
    let replayed = r.headers().contains_key("idempotent-replayed");
    let v = r.json().await.unwrap_or_default();
    (status, v, replayed)
}

/// Claims a member of pool `w` on replica `r`, waiting at most `wait`.
async fn claim(r: &Replica, key: Option<&str>, wait: &str) -> (u16, Value, bool) {
    let url = format!(
        "http://127.0.0.1:{}/api/v1/pools/w/claims?wait={wait}",
        r.port
    );
    let body = serde_json::json!({ "holder": "ha-test", "lease": "10m" });
    call(reqwest::Method::POST, url, key, Some(body)).await
}

/// Waits until `r` (leading) has observed pool `w` with `n` running members, none pending.
async fn pool_of(r: &Replica, n: u32) {
    common::until(&format!("the pool at {n}"), 60, async || {
        pool_at(r).await == (n.into(), 0.into())
    })
    .await;
}

/// 40 concurrent claims, half to the leader and half to the standby (which forwards them),
/// on a pool of 20: each member goes to one holder only, and every member is handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_on_two_replicas_at_once_never_hand_one_sandbox_to_two_holders() {
    let pg = common::pg::Postgres::start("ha-claims");
    let store = pg.database("ha").await;
    let emu = common::emulator(common::options()).await;
    let url = emu.url();
    let replicas = [
        Replica::start("claims-a", &url, &store, TWENTY),
        Replica::start("claims-b", &url, &store, TWENTY),
    ];
    let leader = one_leader(&[&replicas[0], &replicas[1]]).await;
    pool_of(&replicas[leader], 20).await;

    let mut asks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let port = replicas[i % 2].port;
        asks.spawn(async move {
            let url = format!("http://127.0.0.1:{port}/api/v1/pools/w/claims?wait=2s");
            let body = serde_json::json!({ "holder": "ha-test" });
            let answer = call(reqwest::Method::POST, url, None, Some(body)).await;
            (i, answer)
        });
    }
    let answers: Vec<(usize, (u16, Value, bool))> = asks.join_all().await;
    let mut granted: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_replica = [0, 0];
    for (i, (status, v, _)) in &answers {
        match status {
            201 => {
                *granted
                    .entry(v["sandbox_id"].as_str().unwrap_or("").to_string())
                    .or_default() += 1;
                by_replica[i % 2] += 1;
            }
            503 => {}
            other => panic!("a claim answered {other}: {v}"),
        }
    }
    assert!(
        granted.values().all(|&n| n == 1),
        "a sandbox handed out twice: {granted:?}"
    );
    assert_eq!(granted.len(), 20, "every member handed out: {granted:?}");
    assert!(
        by_replica.iter().all(|&n| n > 0),
        "both replicas granted claims: {by_replica:?}"
    );
    for r in &replicas {
        let (_, body) = common::get(&format!(
            "http://127.0.0.1:{}/api/v1/pools/w/claims",
            r.port
        ))
        .await;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v.as_array().map(Vec::len), Some(20), "{body}");
    }
}

/// A claim granted through the standby outlives the leader's kill -9: the new leader has it,
/// does not hand its member out again, replays its Idempotency-Key, renews and releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_survives_the_kill_of_the_leader() {
    let pg = common::pg::Postgres::start("ha-claim-kill");
    let store = pg.database("ha").await;
    let emu = common::emulator(common::options()).await;
    let url = emu.url();
    let mut replicas = vec![
        Replica::start("claim-kill-a", &url, &store, THREE),
        Replica::start("claim-kill-b", &url, &store, THREE),
    ];
    let leader = one_leader(&[&replicas[0], &replicas[1]]).await;
    pool_of(&replicas[leader], 3).await;
    let (status, first, _) = claim(&replicas[1 - leader], Some("job-1"), "5s").await;
    assert_eq!(status, 201, "{first}");
    let (id, sandbox) = (first["claim_id"].clone(), first["sandbox_id"].clone());

    let mut dead = replicas.remove(leader);
    dead.child.kill().expect("kill -9 the leader");
    let _ = dead.child.wait();
    let next = &replicas[0];
    let show = format!(
        "http://127.0.0.1:{}/api/v1/claims/{}",
        next.port,
        id.as_str().unwrap()
    );
    common::until("the new leader holding the claim", 60, async || {
        let (status, body) = common::get(&show).await;
        status == 200 && serde_json::from_str::<Value>(&body).unwrap_or_default() == first
    })
    .await;

    let (status, again, replayed) = claim(next, Some("job-1"), "5s").await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again, first, "the same claim for the same key");
    for _ in 0..2 {
        let (status, other, _) = claim(next, None, "10s").await;
        assert_eq!(status, 201, "{other}");
        assert_ne!(other["sandbox_id"], sandbox, "the claimed member again");
    }
    let (status, _, _) = claim(next, None, "0s").await;
    assert_eq!(status, 503, "all three members are claimed");

    let renew = format!("{show}/renew");
    let body = serde_json::json!({ "lease": "20m" });
    let (status, renewed, _) = call(reqwest::Method::POST, renew, None, Some(body)).await;
    assert_eq!(status, 200, "{renewed}");
    assert_ne!(renewed["expires_at"], first["expires_at"]);
    let (status, released, _) = call(reqwest::Method::DELETE, show.clone(), None, None).await;
    assert_eq!((status, &released["claim_id"]), (200, &id), "{released}");
    assert_eq!(common::get(&show).await.0, 404, "released");
}

/// The store's claims on a real PostgreSQL: a second claim of a sandbox is refused, and a
/// replica that does not lead changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_in_postgresql_are_one_per_sandbox_and_fenced() {
    use poolpilot::store::claims::{ClaimOp, ClaimStore, LiveClaim};
    use poolpilot::store::lease::{LEADER, Lease};
    let pg = common::pg::Postgres::start("ha-claim-store");
    let url = pg.database("ha").await;
    let h = poolpilot::store::History::open(
        &url,
        poolpilot::store::Retention::default(),
        std::sync::Arc::new(chrono::Utc::now),
    )
    .await
    .expect("open the store");
    let lease = Lease::new(&h, LEADER, "a", Duration::from_secs(30))
        .await
        .unwrap()
        .with_address("http://127.0.0.1:1");
    let g = lease.hold().await.unwrap().expect("the free lease");
    assert_eq!(
        lease.current().await.unwrap().unwrap().address.as_deref(),
        Some("http://127.0.0.1:1")
    );
    let live = |id: &str, sb: &str| LiveClaim {
        claim_id: id.into(),
        sandbox_id: sb.into(),
        pool: "w".into(),
        expires_ms: 1,
        body: format!("{{\"claim_id\":\"{id}\"}}"),
    };
    let a = ClaimStore::new(&h, "a");
    let done = a
        .apply(
            g,
            &[
                ClaimOp::Granted(live("c1", "sb1")),
                ClaimOp::Granted(live("c2", "sb1")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(done, [true, false]);
    let b = ClaimStore::new(&h, "b");
    assert!(
        b.apply(
            g,
            &[ClaimOp::Ended {
                claim_id: "c1".into()
            }]
        )
        .await
        .is_err()
    );
    assert_eq!(b.load().await.unwrap().claims, [live("c1", "sb1").body]);
}
