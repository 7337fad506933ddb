//! `poolpilot health`: exit 0 when an agent's /healthz answers 200, for container health
//! checks. It only asks; it never starts, changes or reads the configuration of an agent.

use std::time::Duration;

use clap::Args;

/// Where the agent listens: how `health` and `status` reach it.
#[derive(Debug, Args)]
pub(crate) struct Listen {
    /// The agent's address, as in `run --listen`; an unspecified host (0.0.0.0, [::]) is
    /// asked on loopback.
    #[arg(
        long,
        env = "POOLPILOT_LISTEN",
        default_value = "127.0.0.1:9477",
        value_name = "HOST:PORT"
    )]
    pub(crate) listen: String,
}

impl Listen {
    /// The base URL of the agent listening there: an unspecified host is asked on loopback.
    pub(super) fn base(&self) -> String {
        let listen = match self.listen.rsplit_once(':') {
            Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
            Some(("[::]", port)) => format!("[::1]:{port}"),
            _ => self.listen.clone(),
        };
        format!("http://{listen}")
    }
}

/// Flags of `poolpilot health`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    #[command(flatten)]
    pub(crate) at: Listen,
    /// The full health URL, instead of http://<listen>/healthz.
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
}

impl HealthArgs {
    /// The URL `poolpilot health` asks.
    fn target(&self) -> String {
        if let Some(u) = &self.url {
            return u.clone();
        }
        format!("{}/healthz", self.at.base())
    }
}

/// `poolpilot health`: true when the agent's health URL answers 200 within 3 s.
pub(crate) async fn run(args: &HealthArgs) -> bool {
    let url = args.target();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap_or_default();
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            eprintln!("unhealthy: {url} answered {}", r.status());
            false
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_asks_the_agents_listen_address_on_loopback() {
        let h = |listen: &str, url: Option<&str>| {
            HealthArgs {
                at: Listen {
                    listen: listen.into(),
                },
                url: url.map(Into::into),
            }
            .target()
        };
        assert_eq!(h("127.0.0.1:9477", None), "http://127.0.0.1:9477/healthz");
        assert_eq!(h("0.0.0.0:8080", None), "http://127.0.0.1:8080/healthz");
        assert_eq!(h("[::]:8080", None), "http://[::1]:8080/healthz");
        assert_eq!(h("10.0.0.5:9477", None), "http://10.0.0.5:9477/healthz");
        assert_eq!(h("0.0.0.0:1", Some("http://x/healthz")), "http://x/healthz");
    }
}
