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

/// A folder laid out as an operator lays one out for `poolpilot run`: `rules/pool.yaml`, the
/// API key in `key` (or as the systemd credential `creds/e2b-api-key`), and `poolpilot.yaml`
/// with the emulator's URL, `state_dir: state` and a free loopback port.
pub struct AgentDir {
    pub dir: std::path::PathBuf,
    pub port: u16,
}

/// Where the agent of an [`AgentDir`] finds the API key.
pub enum KeyIn {
    /// `key_file: key` in the config.
    File,
    /// `creds/e2b-api-key`, for a test that sets `CREDENTIALS_DIRECTORY` as systemd does.
    Credentials,
}

impl AgentDir {
    /// Writes the folder; `extra` is appended to poolpilot.yaml (poll, webhook, limits...).
    pub fn new(tag: &str, emu_url: &str, rules: &str, key: KeyIn, extra: &str) -> AgentDir {
        let dir = fresh_dir(tag);
        std::fs::create_dir_all(dir.join("rules")).expect("create rules/");
        std::fs::write(dir.join("rules/pool.yaml"), rules).expect("write the rules");
        let key_line = match key {
            KeyIn::File => {
                std::fs::write(dir.join("key"), format!("{KEY}\n")).expect("write the key");
                ", key_file: key"
            }
            KeyIn::Credentials => {
                std::fs::create_dir_all(dir.join("creds")).expect("create creds/");
                std::fs::write(dir.join("creds/e2b-api-key"), KEY).expect("write the credential");
                ""
            }
        };
        let port = free_port();
        std::fs::write(
            dir.join("poolpilot.yaml"),
            format!(
                "api: {{ url: \"{emu_url}\"{key_line} }}\nrules: [rules/]\nstate_dir: state\nlisten: 127.0.0.1:{port}\n{extra}"
            ),
        )
        .expect("write poolpilot.yaml");
        AgentDir { dir, port }
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.join("poolpilot.yaml")
    }

    /// The agent's base URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts `poolpilot run`'s body in this process on the folder's config.
    pub fn spawn(&self) -> InProcessAgent {
        let cfg = poolpilot::agent::config::Config::load(&self.config_path())
            .expect("the test's config loads");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (reload, reload_rx) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(poolpilot::agent::run::run(
            cfg,
            async {
                let _ = stop_rx.await;
            },
            reload_rx,
        ));
        InProcessAgent { task, stop, reload }
    }
}

/// `poolpilot run` in this process: stop it as SIGTERM would, and await its result.
pub struct InProcessAgent {
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub stop: tokio::sync::oneshot::Sender<()>,
    /// Kept so that the loop's reload channel stays open, as it does under a real SIGHUP handler.
    pub reload: tokio::sync::mpsc::Sender<()>,
}

/// Polls `f` every 50 ms until it holds; fails the test after `secs` seconds, naming `what`.
pub async fn until(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs `url`: (status, body), or (0, "") when nothing answers.
pub async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Moves a manual-clock emulator at `url` on by `by` (`"5s"`); returns its virtual now.
pub async fn advance(url: &str, by: &str) -> chrono::DateTime<chrono::Utc> {
    let v: serde_json::Value = raw()
        .post(format!("{url}/_emulator/advance"))
        .json(&serde_json::json!({ "by": by }))
        .send()
        .await
        .expect("the emulator answers")
        .json()
        .await
        .expect("a JSON answer");
    v["now"].as_str().unwrap().parse().unwrap()
}
pub mod pg;
