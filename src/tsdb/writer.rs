//! One writer per output: a bounded in-memory queue of encoded lines, batched by size and time,
//! written with a timeout and retried with backoff.
//!
//! Queue policy: when the queue holds `queue_capacity` lines, pushing drops the oldest line and
//! counts it (`hazgate_points_dropped{reason="queue_full"}`). The rule engine never waits on an
//! output. Response handling: 2xx = delivered; 429, 5xx, timeouts and connection errors are
//! retried (honouring `Retry-After`); 401/403 mark the output unhealthy and are retried (data is
//! kept); other 4xx responses reject the batch, which is logged with the server's message and
//! counted (`reason="rejected"`). On shutdown the writer keeps flushing until the queue is empty
//! or the drain deadline fires; what is left then is logged and counted (`reason="shutdown"`).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Output, Secret};
use crate::queue::DropOldest;
use crate::state::SharedState;
use crate::telemetry::{Metrics, labels};

/// The queue between the rule engine and one output's writer.
#[derive(Debug)]
pub struct OutputQueue {
    id: String,
    q: DropOldest<String>,
    metrics: Arc<Metrics>,
}

impl OutputQueue {
    /// Creates a queue for output `id`.
    pub fn new(id: &str, capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self { id: id.to_owned(), q: DropOldest::new(capacity), metrics }
    }

    /// Appends encoded lines (each ending in `\n`); never blocks, drops the oldest when full.
    pub fn push(&self, lines: impl IntoIterator<Item = String>) {
        let (dropped, len) = self.q.push(lines);
        if dropped > 0 {
            self.metrics
                .points_dropped
                .get_or_create(&labels([("output", &self.id), ("reason", "queue_full")]))
                .inc_by(dropped);
            warn!(output = %self.id, dropped, "output queue full: oldest points dropped");
        }
        self.set_gauge(len);
    }

    /// No more lines will come; the writer drains and ends.
    pub fn close(&self) {
        self.q.close();
    }

    fn take(&self, n: usize) -> (Vec<String>, bool) {
        let r = self.q.take(n);
        self.set_gauge(self.q.len().0);
        r
    }

    fn len(&self) -> (usize, bool) {
        self.q.len()
    }

    fn set_gauge(&self, len: usize) {
        self.metrics
            .output_queue
            .get_or_create(&labels([("output", &self.id)]))
            .set(i64::try_from(len).unwrap_or(i64::MAX));
    }
}

/// What a write attempt came to.
#[derive(Debug)]
enum Attempt {
    Delivered,
    Retry { reason: String, after: Option<Duration>, auth: bool },
    Rejected(String),
}

/// A writer for one output.
#[derive(Debug)]
pub struct Writer {
    output: Output,
    secret: Option<Secret>,
    client: reqwest::Client,
    queue: Arc<OutputQueue>,
    state: Arc<SharedState>,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// Builds the writer; `secret` is the resolved password or token.
    pub fn new(
        output: Output,
        secret: Option<Secret>,
        queue: Arc<OutputQueue>,
        state: Arc<SharedState>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(output.batching().timeout)
            .connect_timeout(output.batching().timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Self { output, secret, client, queue, state, metrics })
    }

    /// Runs until the queue is closed and drained, or `deadline` fires.
    pub async fn run(self, deadline: CancellationToken) {
        let id = self.output.id().to_owned();
        let component = format!("output {id}");
        let b = self.output.batching().clone();
        let mut inflight: Vec<String> = Vec::new();
        let mut attempt: u32 = 0;
        let mut written: u64 = 0;
        loop {
            if inflight.is_empty() {
                // Wait for a full batch, the flush interval, or close.
                let flush_at = tokio::time::Instant::now() + b.flush_interval;
                loop {
                    let (len, closed) = self.queue.len();
                    if len >= b.batch_size || closed {
                        break;
                    }
                    tokio::select! {
                        () = self.queue.q.notified() => {}
                        () = tokio::time::sleep_until(flush_at) => break,
                        () = deadline.cancelled() => break,
                    }
                }
                let (batch, closed) = self.queue.take(b.batch_size);
                if batch.is_empty() {
                    if closed || deadline.is_cancelled() {
                        info!(output = %id, written, "output drained");
                        return;
                    }
                    continue;
                }
                inflight = batch;
            }
            if deadline.is_cancelled() {
                let (left, _) = self.queue.len();
                let lost = left + inflight.len();
                self.metrics
                    .points_dropped
                    .get_or_create(&labels([("output", &id), ("reason", "shutdown")]))
                    .inc_by(lost as u64);
                error!(output = %id, lost, "shutdown grace period over: points not delivered");
                return;
            }
            let outcome = tokio::select! {
                r = self.write(&inflight) => r,
                () = deadline.cancelled() => continue,
            };
            match outcome {
                Attempt::Delivered => {
                    written += inflight.len() as u64;
                    self.metrics
                        .points_written
                        .get_or_create(&labels([("output", &id)]))
                        .inc_by(inflight.len() as u64);
                    inflight.clear();
                    if attempt > 0 {
                        info!(output = %id, "output recovered");
                    }
                    attempt = 0;
                    self.state.health.ok(&component);
                }
                Attempt::Rejected(msg) => {
                    self.metrics
                        .points_dropped
                        .get_or_create(&labels([("output", &id), ("reason", "rejected")]))
                        .inc_by(inflight.len() as u64);
                    error!(output = %id, points = inflight.len(), server = %msg, "batch rejected by the server: points dropped");
                    inflight.clear();
                }
                Attempt::Retry { reason, after, auth } => {
                    let wait = after.unwrap_or_else(|| {
                        crate::sources::backoff(attempt, Duration::from_millis(500), Duration::from_secs(30))
                    });
                    attempt = attempt.saturating_add(1);
                    if auth {
                        error!(output = %id, %reason, "output refuses our credentials; points are kept and retried");
                    } else if attempt == 1 || attempt % 10 == 0 {
                        warn!(output = %id, %reason, attempt, retry_in = ?wait, "write failed; will retry");
                    }
                    self.state.health.fail(&component, reason);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = deadline.cancelled() => {}
                    }
                }
            }
        }
    }

    async fn write(&self, lines: &[String]) -> Attempt {
        let id = self.output.id();
        let mut body: Vec<u8> = Vec::with_capacity(lines.iter().map(String::len).sum());
        for l in lines {
            body.extend_from_slice(l.as_bytes());
        }
        let gzip = self.output.batching().gzip;
        if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            if enc.write_all(&body).is_ok() {
                if let Ok(z) = enc.finish() {
                    body = z;
                }
            }
        }
        let req = match &self.output {
            Output::InfluxdbV1(o) => {
                let mut q = vec![("db", o.database.as_str()), ("precision", "ns")];
                if let Some(rp) = &o.retention_policy {
                    q.push(("rp", rp));
                }
                let mut r = self
                    .client
                    .post(format!("{}/write", o.url.trim_end_matches('/')))
                    .query(&q);
                if let Some(u) = &o.username {
                    r = r.basic_auth(u, self.secret.as_ref().map(Secret::expose));
                }
                r
            }
            Output::InfluxdbV2(o) => {
                let q = [("org", o.org.as_str()), ("bucket", o.bucket.as_str()), ("precision", "ns")];
                let mut r = self
                    .client
                    .post(format!("{}/api/v2/write", o.url.trim_end_matches('/')))
                    .query(&q);
                if let Some(t) = &self.secret {
                    r = r.header("Authorization", format!("Token {}", t.expose()));
                }
                r
            }
        };
        let mut req = req.header("Content-Type", "text/plain; charset=utf-8").body(body);
        if gzip {
            req = req.header("Content-Encoding", "gzip");
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let status = if e.is_timeout() { "timeout" } else { "connect" };
                self.metrics
                    .write_errors
                    .get_or_create(&labels([("output", id), ("status", status)]))
                    .inc();
                return Attempt::Retry {
                    reason: format!("{status}: {e}"),
                    after: None,
                    auth: false,
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        self.metrics
            .write_errors
            .get_or_create(&labels([("output", id), ("status", status.as_str())]))
            .inc();
        let retry_after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(300)));
        let text = resp.text().await.unwrap_or_default();
        let msg: String = format!("HTTP {status}: {}", text.trim()).chars().take(500).collect();
        match status {
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry { reason: msg, after: retry_after, auth: false },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Attempt::Retry { reason: msg, after: None, auth: true },
            s if s.is_server_error() => Attempt::Retry { reason: msg, after: retry_after, auth: false },
            // InfluxDB 1.x answers 404 "database not found": keep the data until it is created.
            StatusCode::NOT_FOUND => Attempt::Retry { reason: msg, after: None, auth: false },
            _ => Attempt::Rejected(msg),
        }
    }
}
