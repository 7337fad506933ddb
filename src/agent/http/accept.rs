//! The agent's HTTP server loop: accepts connections on its listener and serves the router on
//! each, so that slow or idle clients cannot starve it.
//!
//! - Request headers must arrive within [`ServeLimits::header_timeout`] (hyper's read timer);
//!   webhook bodies within the receiver's own body timeout (see [`super::webhooks`]).
//! - At most [`ServeLimits::max_connections`] connections are held. When one more arrives, the
//!   connection that has gone longest without finishing a request (a slow sender, or an idle
//!   keep-alive) is closed to make room. So an attacker holding every slot cannot keep
//!   `/healthz`, `/readyz` or `/metrics` out: each new connection is taken at once, and the
//!   attacker's oldest goes. Descriptors stay bounded, so ticks, E2B requests and state saves
//!   always have some.
//! - Nothing here reads a request or knows a route: it must never hold a lock across I/O, and
//!   never wait on a client for anything but bounded time.
//!
//! [`raise_fd_limit`] lifts the soft limit of open files to the hard one at start.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tower::Service as _;

/// How much the server holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeLimits {
    /// Connections held at most.
    pub(crate) max_connections: usize,
    /// Time a client has to send a request's headers.
    pub(crate) header_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The largest request head and read buffer per connection, so that held connections cost a
/// bounded amount of memory (hyper's default is about 400 KiB each).
const MAX_BUF: usize = 64 * 1024;

/// How long a request in flight may take to finish once the server stops; a slow client does
/// not hold up a shutdown.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Milliseconds since the server started at which the connection last finished a request
    /// (or was accepted): the oldest is the first closed when room is needed.
    progress_ms: AtomicU64,
    /// Closes the connection.
    evict: Notify,
}

/// The open connections, by id.
#[derive(Default)]
struct Conns {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        crate::sync::lock(&self.open)
    }

    /// Closes the connection that has gone longest without finishing a request.
    fn evict_oldest(&self) {
        let open = self.lock();
        if let Some(c) = open
            .values()
            .min_by_key(|c| c.progress_ms.load(Ordering::Relaxed))
        {
            c.evict.notify_one();
        }
    }
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let start = Instant::now();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let conns = Arc::new(Conns::default());
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    let mut next_id = 0u64;
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or memory: make room, and do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    conns.evict_oldest();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                conns.evict_oldest();
                match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                }
            }
        };
        next_id = next_id.wrapping_add(1);
        let conn = Arc::new(Conn {
            progress_ms: AtomicU64::new(millis_since(start)),
            evict: Notify::new(),
        });
        conns.lock().insert(next_id, conn.clone());
        let (app, conns, stop_rx, id) = (app.clone(), conns.clone(), stop_rx.clone(), next_id);
        tokio::spawn(async move {
            serve_connection(stream, app, limits, conn, start, stop_rx).await;
            conns.lock().remove(&id);
            drop(permit);
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    // Every connection task holds a receiver: when all are gone, every connection is closed.
    stop_tx.closed().await;
}

/// Serves one connection until it closes, is evicted, or the server stops.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: ServeLimits,
    conn: Arc<Conn>,
    start: Instant,
    mut stop: watch::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let progress = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut app = app.clone();
        let progress = progress.clone();
        async move {
            let res = app.call(req.map(axum::body::Body::new)).await;
            progress
                .progress_ms
                .store(millis_since(start), Ordering::Relaxed);
            res
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        _ = conn.evict.notified() => {
            tracing::debug!("connection closed to make room for a new one");
        }
        _ = stop.changed() => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(STOP_GRACE, served).await;
        }
    }
}

/// Raises the soft limit of open files to the hard limit, so that `max_connections`, the E2B
/// client and the state files fit; returns the soft limit now in force (None when unknown).
pub(crate) fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (now.current, now.maximum) else {
        return None; // unlimited
    };
    // Linux caps the soft limit at fs.nr_open whatever the hard limit says.
    let want = hard.unwrap_or(1 << 20).min(1 << 20);
    if want <= soft {
        return Some(soft);
    }
    let raised = rustix::process::Rlimit {
        current: Some(want),
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => Some(want),
        Err(e) => {
            tracing::warn!(soft, error = %e, "cannot raise the open files limit");
            Some(soft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: ServeLimits) -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = Router::new().route("/healthz", get(|| async { "ok" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, limits, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    /// True when the server has closed `s` (within a bounded wait).
    async fn closed(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    async fn healthz(addr: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .expect("answered in time")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn headers_sent_too_slowly_close_the_connection() {
        let (addr, _stop) = start(ServeLimits {
            max_connections: 8,
            header_timeout: Duration::from_millis(200),
        })
        .await;
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost:")
            .await
            .unwrap();
        assert!(closed(&mut s, Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn a_full_server_makes_room_for_a_new_client_by_closing_the_oldest() {
        // Timeouts that never fire here: only the connection limit is at work.
        let (addr, stop) = start(ServeLimits {
            max_connections: 4,
            header_timeout: Duration::from_secs(3600),
        })
        .await;
        let mut slow = Vec::new();
        for _ in 0..12 {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost:")
                .await
                .unwrap();
            slow.push(s);
        }
        for _ in 0..3 {
            assert!(healthz(&addr).await.starts_with("HTTP/1.1 200"));
        }
        let mut closed_count = 0;
        for s in &mut slow {
            if closed(s, Duration::from_millis(500)).await {
                closed_count += 1;
            }
        }
        // 4 slots: the first check took one from a slow client; a later check reuses the slot
        // the one before freed, or (if it comes before that slot is released) takes another.
        // So 9 to 11 slow clients were closed, and never more than 4 held.
        assert!(
            (9..=11).contains(&closed_count),
            "slow clients closed: {closed_count}"
        );
        stop.send(()).unwrap();
    }
}
