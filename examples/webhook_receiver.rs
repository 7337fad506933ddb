//! A standalone webhook receiver for load tests: `POST /webhooks/e2b` verified with the secret
//! in `POOLPILOT_WEBHOOK_SECRET`, on the address given as the first argument (127.0.0.1:8787 by
//! default). Accepted events are drained and counted; the count is printed on Ctrl-C.
//! Used by scripts/bench-webhooks.sh.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use poolpilot::agent::dedup::Dedup;
use poolpilot::agent::http::webhooks::{self, WebhookConfig, WebhookStats};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8787".into());
    let secret =
        std::env::var("POOLPILOT_WEBHOOK_SECRET").unwrap_or_else(|_| "bench-secret".into());
    let (tx, mut rx) = tokio::sync::mpsc::channel(65_536);
    let stats = Arc::new(WebhookStats::default());
    let app = webhooks::router(
        WebhookConfig::new(secret),
        tx,
        Arc::new(Mutex::new(Dedup::new(
            std::env::var("DEDUP")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100_000),
        ))),
        stats.clone(),
    );
    let drained = Arc::new(AtomicU64::new(0));
    let d = drained.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            d.fetch_add(1, Ordering::Relaxed);
        }
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}/webhooks/e2b");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!(
        "{:?}; drained {}",
        stats.report(),
        drained.load(Ordering::Relaxed)
    );
    Ok(())
}
