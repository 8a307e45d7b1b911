//! One writer per output: a bounded in-memory queue of encoded lines, batched by size and time,
//! optionally made durable in a disk spool (store-and-forward), written with a timeout and
//! retried with backoff.
//!
//! # Shape
//! ```text
//! engine ──Fanout──▶ OutputQueue (drop-oldest) ──▶ intake ──▶ live slot (1 batch) ──▶ sender ──▶ HTTP
//!                                                    │                                  ▲   (max_in_flight
//!                                                    └──▶ spool (disk, every batch) ──────┘    requests)
//!                                                                                backlog
//! ```
//! - The **intake** forms a batch every `flush_interval` or `batch_size` points, whatever the
//!   sender is doing. With a spool, every batch is appended to the spool first (write-ahead) and
//!   then handed to the sender through a one-batch live slot if the slot is free; otherwise it
//!   stays in the spool as backlog. So at any time, unspooled data is only what is in the memory
//!   queue: at most one flush interval (plus, for power loss, the fsync policy's lag).
//! - The **sender** alternates between the live slot and the oldest backlog record, so live data
//!   keeps flowing while an outage is replayed, and the backlog is taken in order. It runs
//!   `max_in_flight` workers (default 2): up to that many requests are in flight, each batch
//!   retried on its own; batches are taken in order but may be acknowledged out of order. A
//!   record is acknowledged in the spool only after the server accepted it, and a segment is
//!   deleted only when every record in it is acknowledged, so a restart still replays
//!   everything not yet acknowledged. InfluxDB keys points by series and timestamp, so the order
//!   of arrival does not change what is stored.
//! - Without a spool, the intake waits for the sender (the memory queue absorbs outages).
//! - Spool file I/O runs in `spawn_blocking`, never on the async runtime. Spool bookkeeping that
//!   needs no I/O (no fsync due, no backlog, an acknowledgement that deletes no file) runs in
//!   place when the spool's lock is free, which saves a thread hand-over per batch.
//! - **Receipts** (`crate::receipt`, MQTT end-to-end acknowledgement): a line pushed with
//!   [`OutputQueue::push_held`] makes the intake form a batch at once (no flush-interval wait),
//!   at most one such batch every [`HELD_EVERY`] (group commit: under load one append, fsync
//!   and request carry several engine steps).
//!   With a spool the receipts are released right after the append (and an fsync, with
//!   `fsync = "interval"`), and the records of such batches go to the sender together, once
//!   they hold `batch_size` points or the first is `flush_interval` old; without one (or when the append failed) they ride with the batch and
//!   are released when the server accepted it, or at its first failed attempt, so an output
//!   that is down never holds a source's acknowledgements (counted in
//!   `hazgate_output_acks_released_total`).
//!
//! # Policies
//! - Memory queue: when it holds `queue_capacity` lines, pushing drops the oldest line
//!   (`hazgate_points_dropped{reason="queue_full"}`). The rule engine never waits on an output.
//! - Spool full: the oldest segments are dropped (`reason="spool_full"`), logged at ERROR, the
//!   gauge `hazgate_output_spool_full{output}` is 1 and the component `output ID spool` is not
//!   ready until the spool is below half its size again. A spool
//!   write error also marks it not ready and the batch falls back to the memory path.
//! - Responses: 2xx = delivered; 429, 5xx, 404 (database missing), timeouts and connection
//!   errors are retried with backoff (honouring `Retry-After`); 401/403 mark the output unhealthy
//!   and are retried (data is kept). 400/422 and 413 split the batch in halves until the
//!   offending points are alone; a single point still refused is quarantined: counted
//!   (`reason="invalid"`), logged at ERROR with the server's message, and appended to the
//!   spool's `quarantine.lp`. Other 4xx answers quarantine the whole batch (`reason="rejected"`).
//!   One bad point never blocks the rest.
//! - Shutdown: after `close()` the intake moves every queued line into a batch; the writer keeps
//!   sending until everything is delivered or the drain deadline fires. With a spool, what is
//!   left stays spooled for the next start (logged at WARN); without one it is counted
//!   (`reason="shutdown"`) and logged at ERROR.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::line::push_with_precision;
use super::options::{ByteSize, FsyncPolicy};
use super::spool::{Backlog, QUARANTINE_FILE, Spool};
use crate::config::{Output, Secret};
use crate::queue::DropOldest;
use crate::receipt::Receipt;
use crate::state::SharedState;
use crate::telemetry::{Metrics, labels};

/// Group commit for acknowledging sources: a batch is formed at once when a source waits for
/// lines, unless the previous such batch was formed less than this long ago; then at that
/// time. Under load this makes one spool append, fsync and write request carry the messages
/// of several engine steps (at 20,000 msg/s about 100 instead of 25), at the price of at most
/// this much more time before the broker gets its acknowledgements; a quiet site's messages
/// are acknowledged as before.
pub const HELD_EVERY: Duration = Duration::from_millis(5);

/// The queue between the rule engine and one output's writer.
#[derive(Debug)]
pub struct OutputQueue {
    id: String,
    q: DropOldest<Entry>,
    /// Set when a line carrying a receipt was pushed: the intake flushes at once instead of
    /// waiting for the flush interval (a source is waiting to acknowledge).
    held: AtomicBool,
    metrics: Arc<Metrics>,
}

/// One encoded line; the last line of an engine step that came from an acknowledging source
/// carries that message's receipt (see `crate::receipt`).
#[derive(Debug)]
struct Entry {
    line: String,
    hold: Option<Receipt>,
}

impl OutputQueue {
    /// Creates a queue for output `id`.
    pub fn new(id: &str, capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            id: id.to_owned(),
            q: DropOldest::new(capacity),
            held: AtomicBool::new(false),
            metrics,
        }
    }

    /// The output's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Counts readings the output's reduction did not write.
    pub fn count_suppressed(&self, n: u64) {
        self.metrics
            .points_suppressed
            .get_or_create(&labels([("output", &self.id)]))
            .inc_by(n);
    }

    /// Appends encoded lines (each ending in `\n`); never blocks, drops the oldest when full.
    pub fn push(&self, lines: impl IntoIterator<Item = String>) {
        self.push_entries(lines.into_iter().map(|line| Entry { line, hold: None }));
    }

    /// Like [`OutputQueue::push`], with `receipt` held by the last line until the writer made
    /// the lines durable. A receipt whose line is dropped because the queue is full completes
    /// (that loss is counted as `queue_full`).
    pub fn push_held(&self, lines: Vec<String>, receipt: Receipt) {
        let n = lines.len();
        let mut receipt = Some(receipt);
        // Set before the push wakes the intake.
        self.held.store(true, Ordering::Release);
        self.push_entries(lines.into_iter().enumerate().map(|(i, line)| Entry {
            line,
            hold: if i + 1 == n { receipt.take() } else { None },
        }));
    }

    fn push_entries(&self, entries: impl IntoIterator<Item = Entry>) {
        let (dropped, len) = self.q.push(entries);
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

    /// Takes up to `n` lines with the receipts they carry.
    fn take(&self, n: usize) -> (Vec<String>, Vec<Receipt>, bool) {
        self.held.store(false, Ordering::Release);
        let (entries, closed) = self.q.take(n);
        self.set_gauge(self.q.len().0);
        let mut holds = Vec::new();
        let lines = entries
            .into_iter()
            .map(|e| {
                holds.extend(e.hold);
                e.line
            })
            .collect();
        (lines, holds, closed)
    }

    fn len(&self) -> (usize, bool) {
        self.q.len()
    }

    /// Whether a source waits for lines in the queue.
    fn holds(&self) -> bool {
        self.held.load(Ordering::Acquire)
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
    Retry {
        reason: String,
        after: Option<Duration>,
        auth: bool,
    },
    /// 400/422: some point is invalid.
    Invalid(String),
    /// 413: the batch is too large.
    TooLarge(String),
    /// Any other 4xx.
    Rejected(String),
}

/// A batch on its way to the sender; `seqs` are its spool records (empty when not spooled).
#[derive(Debug)]
struct Batch {
    seqs: Range<u64>,
    lines: Vec<String>,
    /// Receipts released when the batch is delivered (only when it is not in the spool).
    holds: Vec<Receipt>,
}

/// Spooled records kept in memory to go to the sender as one request (see `Writer::intake`).
#[derive(Debug)]
struct Pending {
    seqs: Range<u64>,
    lines: Vec<String>,
    /// When its first record was spooled.
    since: tokio::time::Instant,
}

/// How delivering a batch ended.
#[derive(Debug)]
enum Delivery {
    /// Every point was accepted or quarantined.
    Done,
    /// The drain deadline fired; this many points were not delivered.
    Deadline(usize),
}

type SharedSpool = Arc<Mutex<Spool>>;

/// Runs `f` on the spool in a blocking thread.
async fn on_spool<R: Send + 'static>(
    spool: &SharedSpool,
    f: impl FnOnce(&mut Spool) -> io::Result<R> + Send + 'static,
) -> io::Result<R> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = spool.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(format!("spool task failed: {e}"))))
}

/// Runs `quick` on the spool right here when its lock is free and `quick` needs no file I/O
/// (it returns `None` when it would), else `slow` in a blocking thread: the common cases
/// (nothing to sync, no backlog, an acknowledgement that deletes no file) then cost no thread
/// hand-over.
async fn on_spool_quick<R: Send + 'static>(
    spool: &SharedSpool,
    quick: impl FnOnce(&mut Spool) -> Option<io::Result<R>>,
    slow: impl FnOnce(&mut Spool) -> io::Result<R> + Send + 'static,
) -> io::Result<R> {
    if let Ok(mut s) = spool.try_lock() {
        if let Some(r) = quick(&mut s) {
            return r;
        }
    }
    on_spool(spool, slow).await
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
        Ok(Self {
            output,
            secret,
            client,
            queue,
            state,
            metrics,
        })
    }

    fn id(&self) -> &str {
        self.output.id()
    }

    fn drop_points(&self, reason: &str, n: u64) {
        if n > 0 {
            self.metrics
                .points_dropped
                .get_or_create(&labels([("output", self.id()), ("reason", reason)]))
                .inc_by(n);
        }
    }

    /// `hazgate_output_spool_full{output}`: 1 from the first drop until the spool is below half
    /// its size again (the same span as the health reason `output ID spool`).
    fn spool_full(&self, full: bool) {
        self.metrics
            .spool_full
            .get_or_create(&labels([("output", self.id())]))
            .set(i64::from(full));
    }

    /// After an acknowledgement: a spool that was full is fine again below half its size.
    fn spool_drained(&self, bytes: u64) {
        let max = self
            .output
            .batching()
            .spool
            .as_ref()
            .map_or(u64::MAX, |c| c.max_size.bytes());
        let l = labels([("output", self.id())]);
        if bytes < max / 2 && self.metrics.spool_full.get_or_create(&l).get() != 0 {
            self.spool_full(false);
            self.state
                .health
                .ok(&crate::telemetry::Component::Spool(self.id().to_owned()));
            info!(output = %self.id(), "spool below half its size again");
        }
    }

    fn spool_gauges(&self, points: u64, bytes: u64) {
        let l = labels([("output", self.id())]);
        self.metrics
            .spool_points
            .get_or_create(&l)
            .set(i64::try_from(points).unwrap_or(i64::MAX));
        self.metrics
            .spool_bytes
            .get_or_create(&l)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Runs until the queue is closed and everything is delivered, or `deadline` fires.
    pub async fn run(self, deadline: CancellationToken) {
        let id = self.id().to_owned();
        let spool = match self.output.batching().spool.clone() {
            None => None,
            Some(cfg) => {
                let dir = cfg.dir.clone();
                match tokio::task::spawn_blocking(move || Spool::open(cfg)).await {
                    Ok(Ok((s, report))) => {
                        if report.records > 0 {
                            info!(output = %id, points = report.points, batches = report.records, dir = %dir.display(), "replaying points spooled before the last stop");
                        }
                        if report.truncated_bytes > 0 {
                            warn!(output = %id, bytes = report.truncated_bytes, "spool had a torn or corrupt tail: cut off");
                        }
                        self.spool_gauges(s.points(), s.bytes());
                        self.spool_full(false);
                        Some(Arc::new(Mutex::new(s)))
                    }
                    Ok(Err(e)) => {
                        self.spool_unusable(&format!("cannot open spool {}: {e}", dir.display()));
                        None
                    }
                    Err(e) => {
                        self.spool_unusable(&format!("cannot open spool {}: {e}", dir.display()));
                        None
                    }
                }
            }
        };
        let (live_tx, live_rx) = mpsc::channel::<Batch>(1);
        let backlog = Notify::new();
        let ((), ()) = tokio::join!(
            self.intake(spool.as_ref(), live_tx, &backlog, &deadline),
            self.sender(spool.as_ref(), live_rx, &backlog, &deadline),
        );
        if let Some(spool) = spool {
            match on_spool(&spool, |s| s.close().map(|()| (s.points(), s.bytes()))).await {
                Ok((points, bytes)) => {
                    self.spool_gauges(points, bytes);
                    if points > 0 {
                        warn!(output = %id, points, "output not drained before shutdown: points kept in the spool for the next start");
                    }
                }
                Err(e) => {
                    error!(output = %id, error = %e, "cannot close the spool cleanly; acknowledged points may be sent again")
                }
            }
        }
    }

    fn spool_unusable(&self, reason: &str) {
        error!(output = %self.id(), %reason, "spool unusable: points are kept in memory only");
        self.state.health.fail(
            &crate::telemetry::Component::Spool(self.id().to_owned()),
            reason.to_owned(),
        );
    }

    /// Forms batches from the memory queue and spools or hands them over.
    async fn intake(
        &self,
        spool: Option<&SharedSpool>,
        live: mpsc::Sender<Batch>,
        backlog: &Notify,
        deadline: &CancellationToken,
    ) {
        let b = self.output.batching().clone();
        // When the last batch formed for a waiting source was (group commit, see `HELD_EVERY`).
        let mut held_at: Option<tokio::time::Instant> = None;
        // Spooled group-commit records not handed to the sender yet (see `hand_off`).
        let mut pending: Option<Pending> = None;
        loop {
            // Wait for a full batch, the flush interval, close or the deadline.
            let flush_at = pending.as_ref().map_or_else(
                || tokio::time::Instant::now() + b.flush_interval,
                |p| p.since + b.flush_interval,
            );
            loop {
                let (len, closed) = self.queue.len();
                // A source waiting to acknowledge: no flush-interval delay, only the group
                // commit's spacing after the previous such batch.
                let waited_for = len > 0 && self.queue.holds();
                let now = tokio::time::Instant::now();
                let held_due = held_at.map_or(now, |t| t + HELD_EVERY);
                if len >= b.batch_size
                    || closed
                    || deadline.is_cancelled()
                    || now >= flush_at
                    || (waited_for && now >= held_due)
                {
                    break;
                }
                let wake = if waited_for {
                    held_due.min(flush_at)
                } else {
                    flush_at
                };
                tokio::select! {
                    () = self.queue.q.notified() => {}
                    () = tokio::time::sleep_until(wake) => {}
                    () = deadline.cancelled() => break,
                }
            }
            if self.queue.holds() {
                held_at = Some(tokio::time::Instant::now());
            }
            // Take everything that is there, batch by batch.
            let closed = loop {
                let (batch, holds, closed) = self.queue.take(b.batch_size);
                if batch.is_empty() {
                    break closed;
                }
                let full = batch.len() == b.batch_size;
                if !self
                    .hand_off(spool, &live, backlog, &mut pending, batch, holds, deadline)
                    .await
                {
                    // Deadline without a spool: what is still queued is lost.
                    let (left, _) = self.queue.len();
                    let _ = self.queue.take(left);
                    self.drop_points("shutdown", left as u64);
                    if left > 0 {
                        error!(output = %self.id(), lost = left, "shutdown grace period over: queued points not delivered");
                    }
                    return;
                }
                if !full && !deadline.is_cancelled() {
                    break false;
                }
            };
            if let Some(spool) = spool {
                let due = pending
                    .as_ref()
                    .is_some_and(|p| tokio::time::Instant::now() >= p.since + b.flush_interval);
                if due || closed || deadline.is_cancelled() {
                    self.flush_pending(spool, &live, backlog, &mut pending)
                        .await;
                }
                let idle = |s: &mut Spool| (!s.sync_due()).then_some(Ok(()));
                if let Err(e) = on_spool_quick(spool, idle, Spool::maybe_sync).await {
                    warn!(output = %self.id(), error = %e, "spool fsync failed");
                }
            }
            if closed || deadline.is_cancelled() {
                return;
            }
        }
    }

    /// Spools `lines` and/or hands them to the sender. Returns false when the deadline fired
    /// and the batch could not be kept (no spool): its points are counted as lost.
    ///
    /// A spooled batch joins `pending`, the spooled records not yet handed to the sender.
    /// `pending` goes to the sender (or, when the sender is busy, back to the spool's backlog)
    /// at once, except after a group-commit batch (one that carries receipts): the spool append
    /// and its fsync already released the receipts, so the request waits until `pending` holds
    /// `batch_size` points or its first record is `flush_interval` old. Group commits come every
    /// `HELD_EVERY` under load; sending each as its own request cost a request (and a gzip
    /// stream) per 100 readings at 20,000 msg/s.
    #[expect(
        clippy::too_many_arguments,
        reason = "the intake's state, passed down; a struct would only rename it"
    )]
    async fn hand_off(
        &self,
        spool: Option<&SharedSpool>,
        live: &mpsc::Sender<Batch>,
        backlog: &Notify,
        pending: &mut Option<Pending>,
        lines: Vec<String>,
        holds: Vec<Receipt>,
        deadline: &CancellationToken,
    ) -> bool {
        if let Some(spool) = spool {
            let batch_size = self.output.batching().batch_size;
            if pending
                .as_ref()
                .is_some_and(|p| p.lines.len() + lines.len() > batch_size)
            {
                self.flush_pending(spool, live, backlog, pending).await;
            }
            let defer = !holds.is_empty();
            let mut payload = Vec::with_capacity(lines.iter().map(String::len).sum());
            for l in &lines {
                payload.extend_from_slice(l.as_bytes());
            }
            let points = u32::try_from(lines.len()).unwrap_or(u32::MAX);
            let max = self
                .output
                .batching()
                .spool
                .as_ref()
                .map_or(u64::MAX, |c| c.max_size.bytes());
            // A source waits for these lines: with `fsync = "interval"` they are synced now,
            // not at the next interval (`batch` syncs every record, `never` never does).
            let sync_now = !holds.is_empty()
                && self
                    .output
                    .batching()
                    .spool
                    .as_ref()
                    .is_some_and(|c| c.fsync == FsyncPolicy::Interval);
            let r = on_spool(spool, move |s| {
                let (seq, dropped) = s.append(&payload, points, true)?;
                let synced = if sync_now { s.sync() } else { Ok(()) };
                Ok((seq, dropped, s.points(), s.bytes(), synced))
            })
            .await;
            let component = crate::telemetry::Component::Spool(self.id().to_owned());
            match r {
                Ok((seq, dropped, points, bytes, synced)) => {
                    if let Err(e) = synced {
                        warn!(output = %self.id(), error = %e, "spool fsync failed");
                    }
                    // The gauges first, so whoever holds a released receipt sees them counted.
                    self.spool_gauges(points, bytes);
                    // Spooled: the lines survive a crash of the gateway; release the receipts.
                    drop(holds);
                    if dropped > 0 {
                        self.spool_full(true);
                        self.drop_points("spool_full", dropped);
                        error!(output = %self.id(), dropped, "spool full: oldest points dropped");
                        self.state.health.fail(
                            &component,
                            format!("spool full ({}): oldest points dropped", ByteSize(max)),
                        );
                    } else if bytes < max / 2 {
                        self.spool_full(false);
                        self.state.health.ok(&component);
                    }
                    if pending.as_ref().is_some_and(|p| p.seqs.end != seq) {
                        self.flush_pending(spool, live, backlog, pending).await;
                    }
                    match pending {
                        Some(p) => {
                            p.seqs.end = seq + 1;
                            p.lines.extend(lines);
                        }
                        None => {
                            *pending = Some(Pending {
                                seqs: seq..seq + 1,
                                lines,
                                since: tokio::time::Instant::now(),
                            });
                        }
                    }
                    let full = pending
                        .as_ref()
                        .is_some_and(|p| p.lines.len() >= batch_size);
                    if !defer || full {
                        self.flush_pending(spool, live, backlog, pending).await;
                    }
                    return true;
                }
                Err(e) => {
                    error!(output = %self.id(), error = %e, "spool write failed: batch kept in memory only");
                    self.state
                        .health
                        .fail(&component, format!("spool write failed: {e}"));
                    if let Ok(p) = live.try_reserve() {
                        p.send(Batch {
                            seqs: 0..0,
                            lines,
                            holds,
                        });
                        return true;
                    }
                    return self.hand_to_sender(live, lines, holds, deadline).await;
                }
            }
        }
        self.hand_to_sender(live, lines, holds, deadline).await
    }

    /// Hands `pending` to the sender if the live slot is free; otherwise its records become
    /// backlog (the sender reads them back from the spool, in order).
    async fn flush_pending(
        &self,
        spool: &SharedSpool,
        live: &mpsc::Sender<Batch>,
        backlog: &Notify,
        pending: &mut Option<Pending>,
    ) {
        let Some(p) = pending.take() else { return };
        match live.try_reserve() {
            Ok(permit) => permit.send(Batch {
                seqs: p.seqs,
                lines: p.lines,
                holds: Vec::new(),
            }),
            Err(_) => {
                let seqs = p.seqs;
                let again = seqs.clone();
                let quick = move |s: &mut Spool| Some(Ok(s.release(again)));
                let slow = move |s: &mut Spool| Ok(s.release(seqs));
                // Records the spool dropped to make room while they waited here are gone now.
                if let Ok(lost) = on_spool_quick(spool, quick, slow).await {
                    if lost > 0 {
                        self.drop_points("spool_full", lost);
                        error!(output = %self.id(), dropped = lost, "spool full: oldest points dropped");
                    }
                }
                backlog.notify_one();
            }
        }
    }

    /// The memory path: waits for the sender to take the batch (receipts go with it).
    async fn hand_to_sender(
        &self,
        live: &mpsc::Sender<Batch>,
        lines: Vec<String>,
        holds: Vec<Receipt>,
        deadline: &CancellationToken,
    ) -> bool {
        let n = lines.len();
        tokio::select! {
            r = live.send(Batch { seqs: 0..0, lines, holds }) => {
                if r.is_err() {
                    // The sender is gone (deadline): nothing will send these.
                    self.drop_points("shutdown", n as u64);
                    error!(output = %self.id(), lost = n, "shutdown grace period over: points not delivered");
                    return false;
                }
                true
            }
            () = deadline.cancelled() => {
                self.drop_points("shutdown", n as u64);
                error!(output = %self.id(), lost = n, "shutdown grace period over: points not delivered");
                false
            }
        }
    }

    /// Picks the next batch: live and backlog alternate. `None` when everything is sent
    /// (intake finished and spool empty) or the deadline fired.
    async fn next_batch(
        &self,
        spool: Option<&SharedSpool>,
        live: &mut mpsc::Receiver<Batch>,
        backlog: &Notify,
        prefer_live: &mut bool,
        deadline: &CancellationToken,
    ) -> Option<Batch> {
        let mut live_closed = false;
        loop {
            if deadline.is_cancelled() {
                return None;
            }
            for from_live in [*prefer_live, !*prefer_live] {
                if from_live {
                    match live.try_recv() {
                        Ok(b) => {
                            *prefer_live = false;
                            return Some(b);
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => live_closed = true,
                        Err(mpsc::error::TryRecvError::Empty) => {}
                    }
                } else if let Some(spool) = spool {
                    let empty = |s: &mut Spool| (s.backlog() == 0).then(|| Ok(Backlog::default()));
                    match on_spool_quick(spool, empty, Spool::next_backlog).await {
                        Ok(b) => {
                            self.drop_points("spool_corrupt", b.corrupt_points);
                            if let Some(r) = b.record {
                                *prefer_live = true;
                                return Some(Batch {
                                    seqs: r.seq..r.seq + 1,
                                    lines: r.lines,
                                    holds: Vec::new(),
                                });
                            }
                        }
                        Err(e) => {
                            error!(output = %self.id(), error = %e, "cannot read the spool");
                            self.state.health.fail(
                                &crate::telemetry::Component::Spool(self.id().to_owned()),
                                format!("spool read failed: {e}"),
                            );
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                                () = deadline.cancelled() => return None,
                            }
                        }
                    }
                }
            }
            if live_closed {
                // Intake is done; the backlog was just found empty.
                return None;
            }
            tokio::select! {
                b = live.recv() => match b {
                    Some(b) => return Some(b),
                    None => live_closed = true,
                },
                () = backlog.notified() => {}
                () = deadline.cancelled() => return None,
            }
        }
    }

    /// Sends batches until the intake is done and the spool is empty, or the deadline fires.
    ///
    /// `max_in_flight` workers run concurrently; they take turns at the batch source (the live
    /// slot and the backlog, under an async mutex), so batches are taken in order and at most
    /// `max_in_flight` requests are in flight. Taking a batch is never cancelled (a backlog
    /// record is claimed when read); acknowledgements may come out of order, which the spool
    /// handles per record (a segment is deleted only when every record in it is acknowledged).
    async fn sender(
        &self,
        spool: Option<&SharedSpool>,
        live: mpsc::Receiver<Batch>,
        backlog: &Notify,
        deadline: &CancellationToken,
    ) {
        let workers = self.output.batching().max_in_flight.max(1);
        let source = tokio::sync::Mutex::new((live, true));
        let written = AtomicU64::new(0);
        futures_util::future::join_all(
            (0..workers).map(|_| self.send_worker(spool, &source, backlog, &written, deadline)),
        )
        .await;
        let (mut live, _) = source.into_inner();
        // Anything still in the live slot: spooled already, or lost.
        live.close();
        while let Ok(b) = live.try_recv() {
            if spool.is_none() || b.seqs.is_empty() {
                self.drop_points("shutdown", b.lines.len() as u64);
                error!(output = %self.id(), lost = b.lines.len(), "shutdown grace period over: points not delivered");
            }
        }
        let written = written.load(Ordering::Relaxed);
        info!(output = %self.id(), written, "output writer stopped");
    }

    /// One of the sender's workers: takes a batch, delivers it, acknowledges it, again.
    async fn send_worker(
        &self,
        spool: Option<&SharedSpool>,
        source: &tokio::sync::Mutex<(mpsc::Receiver<Batch>, bool)>,
        backlog: &Notify,
        written: &AtomicU64,
        deadline: &CancellationToken,
    ) {
        loop {
            let batch = {
                let mut src = source.lock().await;
                let (live, prefer_live) = &mut *src;
                self.next_batch(spool, live, backlog, prefer_live, deadline)
                    .await
            };
            let Some(mut batch) = batch else { return };
            let outcome = self
                .deliver(&batch.lines, &mut batch.holds, spool, deadline)
                .await;
            // Delivered (or given up at the deadline): the receipts are complete.
            batch.holds.clear();
            match outcome {
                Delivery::Done => {
                    written.fetch_add(batch.lines.len() as u64, Ordering::Relaxed);
                    if let (Some(spool), false) = (spool, batch.seqs.is_empty()) {
                        fn ack(s: &mut Spool, seqs: Range<u64>) -> io::Result<(u64, u64)> {
                            s.ack_range(seqs).map(|()| (s.points(), s.bytes()))
                        }
                        let seqs = batch.seqs.clone();
                        let in_memory = move |s: &mut Spool| {
                            (!s.ack_would_delete(seqs.clone())).then(|| ack(s, seqs))
                        };
                        let seqs = batch.seqs.clone();
                        match on_spool_quick(spool, in_memory, move |s| ack(s, seqs)).await {
                            Ok((p, b)) => {
                                self.spool_gauges(p, b);
                                self.spool_drained(b);
                            }
                            Err(e) => {
                                warn!(output = %self.id(), error = %e, "cannot delete a delivered spool segment")
                            }
                        }
                    }
                }
                Delivery::Deadline(unsent) => {
                    if spool.is_none() || batch.seqs.is_empty() {
                        self.drop_points("shutdown", unsent as u64);
                        error!(output = %self.id(), lost = unsent, "shutdown grace period over: points not delivered");
                    }
                    return;
                }
            }
        }
    }

    /// Delivers one batch: retries what may succeed later, splits what the server refuses as
    /// invalid or too large, quarantines single points it still refuses.
    ///
    /// `holds` (receipts of a batch that is not in the spool) are released at the first failed
    /// attempt: an output that is down and has no spool must not hold a source's
    /// acknowledgements, or the broker would stop sending and alarms would wait on InfluxDB.
    async fn deliver(
        &self,
        lines: &[String],
        holds: &mut Vec<Receipt>,
        spool: Option<&SharedSpool>,
        deadline: &CancellationToken,
    ) -> Delivery {
        let id = self.id().to_owned();
        let component = crate::telemetry::Component::Output(id.clone());
        let mut todo: Vec<Range<usize>> = Vec::with_capacity(32);
        todo.push(0..lines.len());
        let mut attempt: u32 = 0;
        let mut split_logged = false;
        while let Some(r) = todo.last().cloned() {
            if r.is_empty() {
                todo.pop();
                continue;
            }
            let outcome = tokio::select! {
                a = self.write(&lines[r.clone()]) => a,
                () = deadline.cancelled() => return Delivery::Deadline(todo.iter().map(ExactSizeIterator::len).sum()),
            };
            match outcome {
                Attempt::Delivered => {
                    todo.pop();
                    self.metrics
                        .points_written
                        .get_or_create(&labels([("output", &id)]))
                        .inc_by(r.len() as u64);
                    if attempt > 0 {
                        info!(output = %id, "output recovered");
                    }
                    attempt = 0;
                    self.state.health.ok(&component);
                }
                Attempt::Invalid(msg) | Attempt::TooLarge(msg) if r.len() > 1 => {
                    todo.pop();
                    let mid = r.start + r.len() / 2;
                    todo.push(mid..r.end);
                    todo.push(r.start..mid);
                    if !split_logged {
                        warn!(output = %id, points = lines.len(), server = %msg, "batch refused: splitting it to isolate the offending points");
                        split_logged = true;
                    }
                }
                Attempt::Invalid(msg) | Attempt::TooLarge(msg) => {
                    todo.pop();
                    self.quarantine(&lines[r], "invalid", &msg, spool).await;
                }
                Attempt::Rejected(msg) => {
                    todo.pop();
                    self.quarantine(&lines[r], "rejected", &msg, spool).await;
                }
                Attempt::Retry {
                    reason,
                    after,
                    auth,
                } => {
                    let wait = after.unwrap_or_else(|| {
                        crate::backoff::backoff(
                            attempt,
                            Duration::from_millis(500),
                            Duration::from_secs(30),
                        )
                    });
                    attempt = attempt.saturating_add(1);
                    if !holds.is_empty() {
                        self.metrics
                            .acks_released
                            .get_or_create(&labels([("output", &id)]))
                            .inc_by(holds.len() as u64);
                        holds.clear();
                    }
                    if auth {
                        error!(output = %id, %reason, "output refuses our credentials; points are kept and retried");
                    } else if attempt == 1 || attempt % 10 == 0 {
                        warn!(output = %id, %reason, attempt, retry_in = ?wait, "write failed; will retry");
                    }
                    self.state.health.fail(&component, reason);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = deadline.cancelled() => return Delivery::Deadline(todo.iter().map(ExactSizeIterator::len).sum()),
                    }
                }
            }
        }
        Delivery::Done
    }

    /// Counts, logs and keeps points the server refused.
    async fn quarantine(
        &self,
        lines: &[String],
        reason: &'static str,
        msg: &str,
        spool: Option<&SharedSpool>,
    ) {
        self.drop_points(reason, lines.len() as u64);
        let first: String = lines
            .first()
            .map(|l| l.trim_end().chars().take(300).collect())
            .unwrap_or_default();
        match spool {
            Some(spool) => {
                let owned = lines.to_vec();
                let m = msg.to_owned();
                let file = self
                    .output
                    .batching()
                    .spool
                    .as_ref()
                    .map(|c| c.dir.join(QUARANTINE_FILE))
                    .unwrap_or_default();
                if let Err(e) = on_spool(spool, move |s| s.quarantine(&owned, &m)).await {
                    error!(output = %self.id(), error = %e, "cannot write the quarantine file");
                }
                error!(output = %self.id(), points = lines.len(), server = %msg, line = %first, file = %file.display(), "points refused by the server: quarantined");
            }
            None => {
                error!(output = %self.id(), points = lines.len(), server = %msg, line = %first, "points refused by the server: dropped (no spool to quarantine them in)");
            }
        }
    }

    async fn write(&self, lines: &[String]) -> Attempt {
        let id = self.output.id();
        let precision = self.output.batching().precision;
        let mut body: Vec<u8> = Vec::with_capacity(lines.iter().map(String::len).sum());
        for l in lines {
            push_with_precision(l, precision, &mut body);
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
                let mut q = vec![
                    ("db", o.database.as_str()),
                    ("precision", precision.as_v1_str()),
                ];
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
                let q = [
                    ("org", o.org.as_str()),
                    ("bucket", o.bucket.as_str()),
                    ("precision", precision.as_str()),
                ];
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
        let mut req = req
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body);
        if gzip {
            req = req.header("Content-Encoding", "gzip");
        }
        let started = std::time::Instant::now();
        let sent = req.send().await;
        self.metrics
            .write_duration
            .get_or_create(&labels([("output", id)]))
            .observe(started.elapsed().as_secs_f64());
        let resp = match sent {
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
        let msg: String = format!("HTTP {status}: {}", text.trim())
            .chars()
            .take(500)
            .collect();
        match status {
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                reason: msg,
                after: retry_after,
                auth: false,
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Attempt::Retry {
                reason: msg,
                after: None,
                auth: true,
            },
            s if s.is_server_error() => Attempt::Retry {
                reason: msg,
                after: retry_after,
                auth: false,
            },
            // InfluxDB 1.x answers 404 "database not found": keep the data until it is created.
            StatusCode::NOT_FOUND => Attempt::Retry {
                reason: msg,
                after: None,
                auth: false,
            },
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Attempt::Invalid(msg),
            StatusCode::PAYLOAD_TOO_LARGE => Attempt::TooLarge(msg),
            _ => Attempt::Rejected(msg),
        }
    }
}
