//! Helpers shared by the integration tests: an emulator on a free loopback port.
#![allow(dead_code)]

use std::time::Duration;

use poolpilot::e2b::{ClientConfig, HttpClient, retry::RetryPolicy};
use poolpilot::emulator::delivery::DeliveryPolicy;
use poolpilot::emulator::{CoreConfig, EmulatorOptions, RunningEmulator, Scenario};

/// A key in the format E2B's SDKs check client-side: `e2b_` and 40 hex digits.
pub const KEY: &str = "e2b_0123456789abcdef0123456789abcdef01234567";

pub fn options() -> EmulatorOptions {
    EmulatorOptions {
        core: CoreConfig {
            metrics_interval: Duration::from_millis(500),
            create_rate: 0.0,
            ..CoreConfig::default()
        },
        scenario: Scenario::default(),
        api_key: Some(KEY.to_string()),
        delivery: DeliveryPolicy {
            max_attempts: 3,
            backoff: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
        },
        ..EmulatorOptions::default()
    }
}

pub async fn emulator(opts: EmulatorOptions) -> RunningEmulator {
    RunningEmulator::bind(opts, "127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

/// A client with fast retries, so retry tests take milliseconds where Retry-After allows.
pub fn client(url: &str) -> HttpClient {
    let mut cfg = ClientConfig::new(url, KEY);
    cfg.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(5),
    };
    cfg.create_rate = None;
    cfg.request_timeout = Duration::from_secs(10);
    HttpClient::new(cfg).expect("client")
}

/// A raw reqwest client for requests the typed client would never send.
pub fn raw() -> reqwest::Client {
    reqwest::Client::new()
}

/// A loopback port that was free a moment ago, for a server the test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

/// An empty folder of this test process under the temporary directory, named by `tag`.
pub fn fresh_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("poolpilot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    dir
}
