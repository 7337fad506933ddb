//! Claims end to end against the emulator over loopback, on a manual clock: the agent ticks at
//! virtual times the test chooses, and claims read the same clock, so leases expire when the
//! test says and nothing depends on a guessed sleep.
//!
//! What is held here: no member handed to two holders under concurrency; the same
//! Idempotency-Key gives the same claim; leases expire and are released as the pool says
//! (kill or return); claims survive a restart; a claimed member is never a scale-in victim;
//! a paused member is resumed for a claim; a claim whose member is gone ends as lost.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use poolpilot::agent::claims::{ClaimError, ClaimRequest, ClaimResult};
use poolpilot::agent::control::{Agent, AgentOptions};
use poolpilot::agent::dedup::Dedup;
use poolpilot::e2b::{E2bApi, ListQuery, SandboxState};
use poolpilot::emulator::{Clock, RunningEmulator, Scenario};
use poolpilot::rules::{OnRelease, RuleSet, load_str};

/// The virtual now the emulator last reported, which the agent's claims read.
#[derive(Clone)]
struct Now(Arc<Mutex<DateTime<Utc>>>);

impl Now {
    fn get(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

async fn emulator() -> RunningEmulator {
    let mut opts = common::options();
    opts.clock = Clock::Manual;
    opts.core.metrics_interval = Duration::from_secs(5);
    opts.scenario = Scenario::parse("s.yaml", "templates:\n  base: { boot: 0s }\n").unwrap();
    common::emulator(opts).await
}

/// Advances the emulator's clock, and the claims' with it.
async fn advance(emu: &RunningEmulator, now: &Now, by: &str) -> DateTime<Utc> {
    let t = common::advance(&emu.url(), by).await;
    *now.0.lock().unwrap() = t;
    t
}

fn rules(yaml: &str) -> Arc<RuleSet> {
    Arc::new(load_str(&[("r.yaml", yaml)]).unwrap_or_else(|e| panic!("{e:?}")))
}

fn agent(
    emu: &RunningEmulator,
    rules: Arc<RuleSet>,
    now: &Now,
    state_dir: Option<std::path::PathBuf>,
) -> Agent {
    let api: Arc<dyn E2bApi> = Arc::new(common::client(&emu.url()));
    let clock = now.clone();
    Agent::new(
        api,
        rules,
        AgentOptions {
            dispatcher: None,
            webhooks: None,
            dedup: Arc::new(Mutex::new(Dedup::new(1000))),
            events_every: Duration::from_secs(3600),
            dry_run: false,
            state_dir,
            clock: Some(Arc::new(move || clock.get())),
        },
    )
    .unwrap()
}

/// The pool's sandboxes in the emulator, by state.
async fn listed(emu: &RunningEmulator, pool: &str) -> Vec<(String, SandboxState)> {
    let mut q = ListQuery::default();
    q.metadata.insert("poolpilot_pool".into(), pool.into());
    common::client(&emu.url())
        .list_sandboxes(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.sandbox_id, s.state))
        .collect()
}

fn ask(holder: &str) -> ClaimRequest {
    ClaimRequest {
        holder: Some(holder.into()),
        wait: Duration::ZERO,
        ..Default::default()
    }
}

/// A started agent whose pool `w` has `n` members, all observed.
async fn pool_of(
    emu: &RunningEmulator,
    now: &Now,
    n: u32,
    dir: Option<std::path::PathBuf>,
) -> Agent {
    let set = rules(&format!(
        "pools:\n  - {{ name: w, min: {n}, max: {n}, scale: {{ interval: 5s }} }}\n"
    ));
    let mut a = agent(emu, set, now, dir);
    let t = advance(emu, now, "1s").await;
    a.tick(t).await;
    a.settle().await;
    let t = advance(emu, now, "5s").await;
    a.tick(t).await;
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_claims_hand_each_member_to_one_holder() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let a = pool_of(&emu, &now, 50, None).await;
    let claims = a.claims();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let c = claims.clone();
            tokio::spawn(async move { c.claim("w", ask(&format!("job-{i}"))).await })
        })
        .collect();
    let (mut granted, mut exhausted) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(g) => granted.push(g.claim.sandbox_id),
            Err(ClaimError::Exhausted { .. }) => exhausted += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let distinct: HashSet<&String> = granted.iter().collect();
    assert_eq!(granted.len(), 50, "every member handed out");
    assert_eq!(distinct.len(), 50, "none twice");
    assert_eq!(exhausted, 950);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_gives_the_same_claim_and_an_ended_one_is_not_reissued() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let a = pool_of(&emu, &now, 3, None).await;
    let c = a.claims();
    let keyed = ClaimRequest {
        idempotency_key: Some("job-7".into()),
        ..ask("job-7")
    };
    let first = c.claim("w", keyed.clone()).await.unwrap();
    let again = c.claim("w", keyed.clone()).await.unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(first.claim, again.claim);
    assert_eq!(c.of_pool("w").unwrap().len(), 1, "one claim, one member");
    c.release(&first.claim.claim_id).unwrap();
    assert!(matches!(
        c.claim("w", keyed).await,
        Err(ClaimError::KeyEnded(id)) if id == first.claim.claim_id
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_released_and_its_member_killed() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let mut a = pool_of(&emu, &now, 2, None).await;
    let c = a.claims();
    let g = c
        .claim(
            "w",
            ClaimRequest {
                lease: Some(Duration::from_secs(60)),
                ..ask("short")
            },
        )
        .await
        .unwrap();
    let t = advance(&emu, &now, "30s").await;
    a.tick(t).await;
    assert!(c.get(&g.claim.claim_id).is_ok(), "not yet expired");
    let t = advance(&emu, &now, "31s").await;
    a.tick(t).await;
    a.settle().await;
    assert!(matches!(
        c.get(&g.claim.claim_id),
        Err(ClaimError::NotFound(_))
    ));
    assert!(
        !listed(&emu, "w")
            .await
            .iter()
            .any(|(id, _)| *id == g.claim.sandbox_id),
        "the expired member was killed (on_release: kill)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_member_is_handed_out_again_and_a_killed_one_never() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let mut set =
        (*rules("pools:\n  - { name: w, min: 1, max: 1, scale: { interval: 5s } }\n")).clone();
    set.pools[0].claims.on_release = OnRelease::Return;
    let mut a = agent(&emu, Arc::new(set), &now, None);
    let t = advance(&emu, &now, "1s").await;
    a.tick(t).await;
    a.settle().await;
    let t = advance(&emu, &now, "5s").await;
    a.tick(t).await;
    let c = a.claims();
    let one = c.claim("w", ask("a")).await.unwrap();
    assert!(matches!(
        c.claim("w", ask("b")).await,
        Err(ClaimError::Exhausted { .. })
    ));
    c.release(&one.claim.claim_id).unwrap();
    let two = c.claim("w", ask("b")).await.unwrap();
    assert_eq!(
        two.claim.sandbox_id, one.claim.sandbox_id,
        "returned to the idle set"
    );
    assert_ne!(two.claim.claim_id, one.claim.claim_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_member_is_killed_by_default_and_never_handed_out_again() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let mut a = pool_of(&emu, &now, 1, None).await;
    let c = a.claims();
    let g = c.claim("w", ask("x")).await.unwrap();
    c.release(&g.claim.claim_id).unwrap();
    assert!(
        matches!(
            c.claim("w", ask("y")).await,
            Err(ClaimError::Exhausted { .. })
        ),
        "the released member is leaving at once"
    );
    a.settle().await;
    assert!(
        !listed(&emu, "w")
            .await
            .iter()
            .any(|(id, _)| *id == g.claim.sandbox_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_survive_a_restart_and_their_members_stay_taken() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let dir = common::fresh_dir("claims-restart");
    let a = pool_of(&emu, &now, 2, Some(dir.clone())).await;
    let g = a.claims().claim("w", ask("survivor")).await.unwrap();
    drop(a);

    let mut b = agent(
        &emu,
        rules("pools:\n  - { name: w, min: 2, max: 2, scale: { interval: 5s } }\n"),
        &now,
        Some(dir),
    );
    let c = b.claims();
    assert_eq!(
        c.get(&g.claim.claim_id).unwrap(),
        g.claim,
        "read back from the journal"
    );
    let t = advance(&emu, &now, "5s").await;
    b.tick(t).await;
    let other = c.claim("w", ask("newcomer")).await.unwrap();
    assert_ne!(other.claim.sandbox_id, g.claim.sandbox_id);
    assert!(matches!(
        c.claim("w", ask("third")).await,
        Err(ClaimError::Exhausted { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_member_is_never_killed_when_the_pool_shrinks() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let mut a = pool_of(&emu, &now, 3, None).await;
    let c = a.claims();
    let mut held = HashSet::new();
    for i in 0..3 {
        held.insert(
            c.claim("w", ask(&format!("j{i}")))
                .await
                .unwrap()
                .claim
                .sandbox_id,
        );
    }
    a.set_rules(rules(
        "pools:\n  - { name: w, min: 0, max: 1, scale: { interval: 5s } }\n",
    ));
    run_ticks(&mut a, &emu, &now, "5s", 4, |_| {}).await;
    let alive: HashSet<String> = listed(&emu, "w")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        held.is_subset(&alive),
        "claimed members alive: {held:?} in {alive:?}"
    );
    assert_eq!(c.of_pool("w").unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_member_is_resumed_for_a_claim_when_none_runs() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let mut a = pool_of(&emu, &now, 1, None).await;
    let (id, _) = listed(&emu, "w").await.remove(0);
    common::client(&emu.url()).pause_sandbox(&id).await.unwrap();
    // min 0 now: the pool does not replace it, and the paused member stays (it is not counted).
    a.set_rules(rules(
        "pools:\n  - { name: w, min: 0, max: 1, scale: { interval: 1h } }\n",
    ));
    let t = advance(&emu, &now, "5s").await;
    a.tick(t).await;
    let g = a.claims().claim("w", ask("warm")).await.unwrap();
    assert_eq!(
        (g.result, g.claim.sandbox_id.as_str()),
        (ClaimResult::Resumed, id.as_str())
    );
    assert_eq!(listed(&emu, "w").await, vec![(id, SandboxState::Running)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_member_dies_ends_as_lost() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let mut a = pool_of(&emu, &now, 1, None).await;
    let c = a.claims();
    let g = c.claim("w", ask("doomed")).await.unwrap();
    common::client(&emu.url())
        .kill_sandbox(&g.claim.sandbox_id)
        .await
        .unwrap();
    let t = advance(&emu, &now, "5s").await;
    a.tick(t).await;
    assert!(matches!(
        c.get(&g.claim.claim_id),
        Err(ClaimError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_claim_gets_the_member_a_create_brings() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let mut a = pool_of(&emu, &now, 1, None).await;
    let c = a.claims();
    c.claim("w", ask("first")).await.unwrap();
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move {
            c.claim(
                "w",
                ClaimRequest {
                    wait: Duration::from_secs(30),
                    ..ask("second")
                },
            )
            .await
        })
    };
    // The pool grows to 2; the create's return frees a member for the waiting claim.
    a.set_rules(rules(
        "pools:\n  - { name: w, min: 2, max: 2, scale: { interval: 5s } }\n",
    ));
    let t = advance(&emu, &now, "5s").await;
    a.tick(t).await;
    a.settle().await;
    let g = waiting.await.unwrap().unwrap();
    assert_eq!(g.result, ClaimResult::Waited);
}

/// Members of `pool` the emulator lists, with their state and start.
async fn members_now(emu: &RunningEmulator, pool: &str) -> Vec<poolpilot::e2b::SandboxInfo> {
    let mut q = ListQuery::default();
    q.metadata.insert("poolpilot_pool".into(), pool.into());
    common::client(&emu.url()).list_sandboxes(&q).await.unwrap()
}

/// Runs the agent `n` ticks of `every`, checking `each` after every tick.
async fn run_ticks(
    a: &mut Agent,
    emu: &RunningEmulator,
    now: &Now,
    every: &str,
    n: usize,
    mut each: impl FnMut(&[poolpilot::e2b::SandboxInfo]),
) {
    for _ in 0..n {
        let t = advance(emu, now, every).await;
        a.tick(t).await;
        a.settle().await;
        each(&members_now(emu, "w").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_keeps_members_past_many_default_timeouts() {
    // No sandbox.timeout: E2B's 5 minutes. Forty minutes is eight lifetimes.
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let mut a = pool_of(&emu, &now, 3, None).await;
    let first: HashSet<String> = members_now(&emu, "w")
        .await
        .into_iter()
        .map(|s| s.sandbox_id)
        .collect();
    assert_eq!(first.len(), 3);
    run_ticks(&mut a, &emu, &now, "5s", 480, |m| {
        let ids: HashSet<String> = m.iter().map(|s| s.sandbox_id.clone()).collect();
        assert_eq!(
            ids, first,
            "the same three members, none expired and replaced"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_past_max_age_are_rolled_without_a_capacity_dip() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let set =
        rules("pools:\n  - { name: w, min: 3, max: 5, max_age: 10m, scale: { interval: 5s } }\n");
    let mut a = agent(&emu, set, &now, None);
    run_ticks(&mut a, &emu, &now, "5s", 3, |_| {}).await;
    let first: HashSet<String> = members_now(&emu, "w")
        .await
        .into_iter()
        .map(|s| s.sandbox_id)
        .collect();
    assert_eq!(first.len(), 3);
    let mut sizes = Vec::new();
    run_ticks(&mut a, &emu, &now, "5s", 360, |m| {
        let running = m
            .iter()
            .filter(|s| s.state == SandboxState::Running)
            .count();
        sizes.push(running);
    })
    .await;
    assert!(
        sizes.iter().all(|n| (3..=5).contains(n)),
        "never below 3 nor above 5: {sizes:?}"
    );
    let last: Vec<poolpilot::e2b::SandboxInfo> = members_now(&emu, "w").await;
    assert!(
        last.iter().all(|s| !first.contains(&s.sandbox_id)),
        "all rolled in 30 minutes"
    );
    let t = now.get();
    assert!(
        last.iter()
            .all(|s| t - s.started_at <= chrono::TimeDelta::minutes(11)),
        "none older than max_age and an evaluation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_members_are_parked_paused_and_a_claim_resumes_one() {
    let emu = emulator().await;
    let now = Now(Arc::new(Mutex::new(Utc::now())));
    let ready = "pools:\n  - { name: w, min: 0, max: 5, idle: { min: 2, max: 3 }, scale: { interval: 5s } }\n";
    let mut a = agent(&emu, rules(ready), &now, None);
    run_ticks(&mut a, &emu, &now, "5s", 3, |_| {}).await;
    assert_eq!(members_now(&emu, "w").await.len(), 2);
    // Fewer wanted ready: the two beyond idle.min 0 are parked after 30 s, not killed.
    a.set_rules(rules(
        "pools:\n  - { name: w, min: 0, max: 5, idle: { min: 0, max: 3 }, warm: { paused: 2, after: 30s }, scale: { interval: 5s, stabilization: { down: 0s } } }\n",
    ));
    run_ticks(&mut a, &emu, &now, "5s", 12, |_| {}).await;
    let parked = members_now(&emu, "w").await;
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert!(
        parked.iter().all(|s| s.state == SandboxState::Paused),
        "{parked:?}"
    );
    let g = a.claims().claim("w", ask("warm start")).await.unwrap();
    assert_eq!(g.result, ClaimResult::Resumed);
    let after = members_now(&emu, "w").await;
    assert!(
        after
            .iter()
            .any(|s| s.sandbox_id == g.claim.sandbox_id && s.state == SandboxState::Running)
    );
}
