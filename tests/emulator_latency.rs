//! Pause and resume take E2B's time in the HTTP emulator when the scenario says so: a pause
//! 4 s per GiB of memory, a resume 1 s, in virtual time. On the manual clock a call answers
//! only once `POST /_emulator/advance` has moved time that far, so nothing here depends on
//! wall-clock timing: a call cannot finish before the time it waits for has been given.

mod common;

use std::time::Duration;

use poolpilot::e2b::{E2bApi, NewSandbox, SandboxState};
use poolpilot::emulator::{Clock, RunningEmulator, Scenario};

async fn emulator(scenario: &str) -> RunningEmulator {
    let mut opts = common::options();
    opts.clock = Clock::Manual;
    opts.scenario = Scenario::parse("s.yaml", scenario).unwrap();
    common::emulator(opts).await
}

async fn advance(emu: &RunningEmulator, by: &str) {
    common::advance(&emu.url(), by).await;
}

/// Lets a spawned call run as far as it can on its own.
async fn let_run() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_answer_after_their_latency_in_virtual_time() {
    // 2 GiB of memory: a pause takes 8 s.
    let emu = emulator(
        "templates:\n  big: { memory_mb: 2048 }\nlatency: { pause_per_gib: 4s, resume: 1s }\n",
    )
    .await;
    let c = common::client(&emu.url());
    let id = c
        .create_sandbox(
            &NewSandbox {
                template_id: "big".into(),
                timeout: Some(3600),
                ..Default::default()
            },
            "k1",
        )
        .await
        .unwrap()
        .sandbox_id;
    let pause = tokio::spawn({
        let (c, id) = (common::client(&emu.url()), id.clone());
        async move { c.pause_sandbox(&id).await }
    });
    let_run().await;
    assert_eq!(
        c.get_sandbox(&id).await.unwrap().state,
        SandboxState::Paused
    );
    advance(&emu, "7s").await;
    let_run().await;
    assert!(!pause.is_finished(), "8 s of virtual time not yet given");
    advance(&emu, "1s").await;
    tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .expect("answers once 8 s went by")
        .unwrap()
        .unwrap();

    let resume = tokio::spawn({
        let (c, id) = (common::client(&emu.url()), id.clone());
        async move { c.connect_sandbox(&id, 60).await }
    });
    let_run().await;
    assert!(!resume.is_finished(), "a resume takes 1 s");
    advance(&emu, "1s").await;
    let connected = tokio::time::timeout(Duration::from_secs(10), resume)
        .await
        .expect("answers once 1 s went by")
        .unwrap()
        .unwrap();
    assert!(connected.resumed);
    // Connecting to a running sandbox resumes nothing and takes no time.
    let again = c.connect_sandbox(&id, 60).await.unwrap();
    assert!(!again.resumed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_latency_in_the_scenario_pause_and_resume_answer_at_once() {
    let emu = emulator("").await;
    let c = common::client(&emu.url());
    let id = c
        .create_sandbox(
            &NewSandbox {
                template_id: "base".into(),
                ..Default::default()
            },
            "k1",
        )
        .await
        .unwrap()
        .sandbox_id;
    // The manual clock never moves here: a waiting call would never answer.
    tokio::time::timeout(Duration::from_secs(10), c.pause_sandbox(&id))
        .await
        .expect("no latency")
        .unwrap();
    let resumed = tokio::time::timeout(Duration::from_secs(10), c.connect_sandbox(&id, 60))
        .await
        .expect("no latency")
        .unwrap();
    assert!(resumed.resumed);
}
