//! The API's HTTP server: an accept loop with a connection cap and per-connection timeouts, so
//! that no client (or many) can take the descriptors sources, outputs and receivers need.
//!
//! Invariants:
//! - At most `max_connections` accepted connections exist at once: the loop takes a permit
//!   before it calls `accept`, so a client beyond the cap waits in the kernel's accept queue and
//!   costs the gateway no descriptor.
//! - A connection must send a complete request head within `header_read_timeout`, counted from
//!   its opening and again after every response (hyper's header-read timer), so a client that
//!   sends nothing, sends a partial head or idles between keep-alive requests is closed.
//! - A connection on which nothing was read or written for `idle_timeout` is closed (a trickling
//!   request body, a client that stopped reading its response or event stream).
//! - `accept` failures (`EMFILE` when the process is out of descriptors) are logged at most once
//!   per 10 s and retried after 100 ms, never in a busy loop.
//! - At shutdown the listener closes at once; open connections finish their current response
//!   within 1 s (event streams are cut).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

pub use crate::config::STREAM_KEEP_ALIVE;

/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The server's limits (`[api]`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to send a complete request head (also the keep-alive idle time between requests).
    pub header_read_timeout: Duration,
    /// No byte read or written for this long closes the connection.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The limits configured in `[api]`.
    pub fn from_config(api: &crate::config::Api) -> Self {
        Self {
            max_connections: api.max_connections.max(1),
            header_read_timeout: api.header_read_timeout,
            idle_timeout: api.idle_timeout,
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let graceful = CancellationToken::new();
    let hard = CancellationToken::new();
    let mut last_warn: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            () = stop.cancelled() => break,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        warn!(error = %e, "API cannot accept a connection; retrying");
                        last_warn = Some(Instant::now());
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        () = stop.cancelled() => break,
                    }
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let (graceful, hard) = (graceful.clone(), hard.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let activity = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let io = TokioIo::new(Tracked {
                inner: tcp,
                start,
                activity: activity.clone(),
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true)
                .serve_connection(io, svc);
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                let last = start + Duration::from_millis(activity.load(Ordering::Relaxed));
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            debug!(error = %e, "API connection closed");
                        }
                        return;
                    }
                    () = graceful.cancelled(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    () = hard.cancelled() => return,
                    () = tokio::time::sleep_until(last + limits.idle_timeout) => {
                        let now = start + Duration::from_millis(activity.load(Ordering::Relaxed));
                        if now + limits.idle_timeout <= Instant::now() {
                            debug!("API connection idle too long; closed");
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    graceful.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        debug!(open = tracker.len(), "API connections cut at shutdown");
        hard.cancel();
        tracker.wait().await;
    }
}

/// A TCP stream that records when a byte was last read or written (milliseconds after `start`).
struct Tracked {
    inner: TcpStream,
    start: Instant,
    activity: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
