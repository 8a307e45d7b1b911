//! The durable outbox and delivery ledger.
//!
//! Every notification is appended to `dir/outbox.jsonl` and fsync'd before anyone tries to
//! deliver it; attempts, outcomes and answers (acknowledgement, reset) are appended as they
//! happen. One record per line as `{crc32:08x} {json}`, in the CRC-line log shared with the
//! alarm journal ([`crate::storage::crc_log`]: a failed append is cut off again, the file is
//! `0600` and a directory the outbox creates `0700`: it holds names and phone numbers).
//!
//! Invariants:
//! - **Written before the first attempt, synced alongside it**: [`Outbox::enqueue`] writes the
//!   `put` records, wakes the receivers' workers, then syncs (`sync_data`) and returns only
//!   after that. A worker may attempt a notification while its fsync is in progress, so an
//!   alarm never waits for the disk (on flash storage a fsync can take tens of milliseconds).
//!   A crash in that window loses nothing that was not already at risk: the alarm journal has
//!   the event and the dispatcher routes it again after a restart, and a notification already
//!   delivered is delivered again with the same idempotency key. Outcome records are written
//!   without a sync: losing one at a crash means a notification is delivered again, with the
//!   same idempotency key (at-least-once), never that one is lost.
//! - **Replay**: on open the file is read; a line whose CRC or JSON does not check (a torn write)
//!   is skipped and counted. Every notification without an outcome is pending again and due at
//!   once.
//! - **Bounded**: the file is rewritten (compacted: pending notifications plus the newest
//!   `ledger_entries` finished ones, to a temporary file, fsync'd, renamed, directory fsync'd)
//!   when it grows past half of `max_bytes`. If the live set still exceeds `max_bytes`, finished
//!   records go first (oldest first); pending notifications are evicted only when they alone
//!   exceed it, lowest priority first, then oldest. Per receiver at most `queue_capacity`
//!   notifications are pending, with the same eviction order. Every eviction is counted
//!   (`hazgate_alarm_deliveries{result="evicted"}`) and logged at ERROR. The outbox has its own
//!   budget: time series never take its space and it never takes theirs.
//! - **Expiry**: a pending notification older than its `expires` time is finished as `expired`,
//!   counted and logged at ERROR (an alarm that did not reach someone is data loss).
//! - A disk failure never stops delivery: the notification is kept in memory, the failure is
//!   counted (`hazgate_outbox_errors_total`) and logged at ERROR.
//! - Blocking: every changing method may write and fsync; async callers use
//!   [`Outbox::blocking`]. Disk I/O runs outside the state lock (a separate `io` lock keeps
//!   writes in order), so readers ([`Outbox::ledger`], [`Outbox::backlog`], `GET
//!   /api/v1/notifications`) never wait for a fsync or a compaction. A notification is listed
//!   in the ledger as soon as it is accepted, but no worker is woken, nor can `next` hand it
//!   out, before its write returned (the fsync that follows runs outside the `io` lock).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::config::OutboxConfig;
use crate::model::{AlarmEvent, Priority, Transition};
use crate::storage::crc_log::{self, CrcLog, encode};
use crate::telemetry::{Metrics, labels};

/// Why a notification was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// An alarm transition matched a route.
    Event,
    /// Several low-priority events gathered in a group window.
    Group,
    /// A still active, unacknowledged alarm notified again.
    Reminder,
    /// Nobody answered: the next tier.
    Escalation,
    /// A periodic report of real-time values (regulator feeds).
    Report,
    /// One summary of a chattering alarm's transitions (or of a latched alarm's repeats) over a
    /// route's `renotify` period, instead of one notification each.
    Summary,
}

/// One notification to one receiver, as stored and delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Idempotency key: the same for every attempt, across restarts.
    pub key: String,
    /// Receiver id.
    pub receiver: String,
    /// Route id.
    pub route: String,
    /// Why.
    pub reason: Reason,
    /// Escalation tier (1 = the route's own receivers).
    pub tier: u32,
    /// Whom to call (from the route or tier).
    #[serde(default)]
    pub call: Vec<String>,
    /// The events (one, or several for a group).
    #[serde(default)]
    pub events: Vec<AlarmEvent>,
    /// Real-time values for a report: `(channel, value, unit, time)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ReportValue>,
    /// Highest priority of the events (eviction order).
    pub priority: Priority,
    /// When it was made.
    #[serde(with = "humantime_serde")]
    pub created: SystemTime,
    /// When it expires if still not delivered.
    #[serde(with = "humantime_serde")]
    pub expires: SystemTime,
}

/// One real-time value in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportValue {
    /// Channel id.
    pub channel: String,
    /// Value; `None` when the channel has no good reading.
    pub value: Option<f64>,
    /// Unit.
    pub unit: String,
    /// Quality (`good`, `bad`, `unknown`).
    pub quality: String,
    /// Time of the reading.
    #[serde(with = "humantime_serde")]
    pub ts: Option<SystemTime>,
}

/// Delivery status in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not yet delivered.
    Pending,
    /// Accepted by the receiver.
    Delivered,
    /// Not delivered before it expired.
    Expired,
    /// Evicted to keep the outbox within its bounds.
    Evicted,
}

/// One row of the delivery ledger (`/api/v1/notifications`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    /// Outbox id (increasing).
    pub id: u64,
    /// Idempotency key.
    pub key: String,
    /// Receiver.
    pub receiver: String,
    /// Route.
    pub route: String,
    /// Why.
    pub reason: Reason,
    /// Escalation tier.
    pub tier: u32,
    /// Alarms concerned.
    pub alarms: Vec<String>,
    /// Transition of the first event.
    pub transition: Option<Transition>,
    /// Priority.
    pub priority: Priority,
    /// Whom it asked to answer.
    pub call: Vec<String>,
    /// When it was made.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, format = DateTime)]
    pub created: SystemTime,
    /// Status.
    pub status: Status,
    /// Attempts so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was delivered, expired or evicted.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished: Option<SystemTime>,
    /// Who acknowledged the alarm.
    pub answered_by: Option<String>,
    /// When.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub answered_at: Option<SystemTime>,
    /// Handling result: the reset's person and comment.
    pub handling: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "records are built one at a time and encoded at once; boxing buys nothing"
)]
enum Rec {
    Put {
        id: u64,
        n: Notification,
    },
    Try {
        id: u64,
        error: String,
    },
    Done {
        id: u64,
        status: Status,
        #[serde(with = "humantime_serde")]
        at: SystemTime,
    },
    Answer {
        alarm: String,
        transition: Transition,
        by: String,
        comment: Option<String>,
        #[serde(with = "humantime_serde")]
        at: SystemTime,
    },
    Keep {
        entry: LedgerEntry,
        n: Option<Notification>,
    },
    /// Every alarm event up to this sequence number has its notifications stored.
    Mark {
        seq: u64,
    },
}

#[derive(Debug)]
struct Item {
    entry: LedgerEntry,
    n: Option<Notification>,
    due: Option<Instant>,
}

#[derive(Debug)]
struct Store {
    log: CrcLog,
}

/// Disk work of one operation, prepared under the state lock and done after it is released.
#[derive(Debug, Default)]
struct Work {
    /// Lines appended before a compaction in the same operation (written only if it fails).
    before: Vec<u8>,
    /// The compacted file, when the operation compacted.
    rewrite: Option<Vec<u8>>,
    /// Lines to append.
    buf: Vec<u8>,
    /// Whether the append must be fsync'd.
    sync: bool,
}

#[derive(Debug)]
struct Inner {
    /// Bytes of the file (as of the last write).
    bytes: u64,
    /// Bytes right after the last compaction.
    live: u64,
    work: Work,
    next_id: u64,
    items: BTreeMap<u64, Item>,
    routed: u64,
    /// Pending ids per receiver (index over `items`).
    pending: HashMap<String, BTreeSet<u64>>,
    /// Keys of every row in `items` (index).
    keys: HashSet<String>,
}

impl Inner {
    fn insert(&mut self, id: u64, it: Item) {
        self.keys.insert(it.entry.key.clone());
        if it.n.is_some() {
            self.pending
                .entry(it.entry.receiver.clone())
                .or_default()
                .insert(id);
        }
        self.items.insert(id, it);
    }

    fn unpend(&mut self, id: u64) {
        if let Some(it) = self.items.get(&id) {
            if let Some(p) = self.pending.get_mut(&it.entry.receiver) {
                p.remove(&id);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        self.unpend(id);
        if let Some(it) = self.items.remove(&id) {
            self.keys.remove(&it.entry.key);
        }
    }
}

/// What a receiver's worker should do next.
#[derive(Debug)]
pub enum Next {
    /// Deliver this (id, notification, attempts so far).
    Due(u64, Box<Notification>, u32),
    /// Nothing due before this instant (`None`: nothing pending).
    Wait(Option<Instant>),
}

/// What opening the outbox found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Opened {
    /// Pending notifications replayed.
    pub pending: usize,
    /// Finished ones replayed into the ledger.
    pub finished: usize,
    /// Damaged lines skipped.
    pub corrupt: usize,
}

/// The outbox; shared by the dispatcher, the receivers' workers and the API.
#[derive(Debug)]
pub struct Outbox {
    /// The file. Every operation that changes the outbox holds this lock for its whole length
    /// (so writes keep their order) and the state lock only while it changes memory; disk I/O
    /// runs after the state lock is released. Readers (ledger, backlog) take the state lock
    /// only, so a fsync or a compaction never stalls them. Order: `io`, then `inner`.
    io: Mutex<Option<Store>>,
    inner: Mutex<Inner>,
    /// Called in the write path before any disk I/O (tests hold a write there).
    #[cfg(test)]
    write_hook: Mutex<WriteHook>,
    /// Called by [`Outbox::enqueue`] before its fsync, outside the `io` lock (tests).
    #[cfg(test)]
    sync_hook: Mutex<WriteHook>,
    cfg: OutboxConfig,
    caps: HashMap<String, usize>,
    wake: HashMap<String, Arc<Notify>>,
    metrics: Arc<Metrics>,
    /// Where disk failures are reported for `/readyz` (component `alert outbox`).
    state: std::sync::OnceLock<Arc<crate::state::SharedState>>,
}

const FILE: &str = "outbox.jsonl";

/// A function the write path calls before its disk I/O (tests).
#[cfg(test)]
#[derive(Default)]
struct WriteHook(Option<Box<dyn Fn() + Send + Sync>>);

/// Calls the hook, if one is set (tests).
#[cfg(test)]
fn run_hook(hook: &Mutex<WriteHook>) {
    if let Some(h) = hook.lock().unwrap_or_else(|e| e.into_inner()).0.as_ref() {
        h();
    }
}

#[cfg(test)]
impl std::fmt::Debug for WriteHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteHook")
    }
}

impl Outbox {
    /// Opens (replays and compacts) the outbox. `caps` holds each receiver's `queue_capacity`.
    pub fn open(
        cfg: &OutboxConfig,
        caps: HashMap<String, usize>,
        metrics: Arc<Metrics>,
    ) -> io::Result<(Self, Opened)> {
        let mut items = BTreeMap::new();
        let mut routed = 0;
        let mut opened = Opened::default();
        let mut store = None;
        if let Some(dir) = &cfg.dir {
            crc_log::create_private_dir(dir)?;
            let path = dir.join(FILE);
            if path.exists() {
                opened.corrupt = replay(&path, &mut items, &mut routed)?;
            }
            store = Some(Store {
                log: CrcLog::open(&path)?,
            });
        }
        let next_id = items.keys().next_back().map_or(1, |k| k + 1);
        for it in items.values_mut() {
            if it.entry.status == Status::Pending {
                opened.pending += 1;
            } else {
                opened.finished += 1;
            }
        }
        let wake = caps
            .keys()
            .map(|k| (k.clone(), Arc::new(Notify::new())))
            .collect();
        let bytes = store.as_ref().map_or(0, |s| s.log.len());
        let mut inner = Inner {
            bytes,
            live: 0,
            work: Work::default(),
            next_id,
            items: BTreeMap::new(),
            routed,
            pending: HashMap::new(),
            keys: HashSet::new(),
        };
        for (id, it) in items {
            inner.insert(id, it);
        }
        let ob = Self {
            io: Mutex::new(store),
            inner: Mutex::new(inner),
            #[cfg(test)]
            write_hook: Mutex::new(WriteHook::default()),
            #[cfg(test)]
            sync_hook: Mutex::new(WriteHook::default()),
            cfg: cfg.clone(),
            caps,
            wake,
            metrics,
            state: std::sync::OnceLock::new(),
        };
        ob.op(|g| {
            ob.compact(g);
            ob.gauges(g);
        });
        if opened.corrupt > 0 {
            ob.metrics.outbox_errors.inc_by(opened.corrupt as u64);
            warn!(
                corrupt = opened.corrupt,
                "outbox: damaged records skipped on replay"
            );
        }
        Ok((ob, opened))
    }

    /// Runs `f` on the outbox off the async runtime (`spawn_blocking`). A panic in it is logged
    /// at ERROR and counted (`hazgate_blocking_panics_total{task}`), never dropped silently;
    /// the answer is then `None`.
    pub async fn blocking<T, F>(self: &Arc<Self>, task: &'static str, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&Outbox) -> T + Send + 'static,
    {
        let ob = self.clone();
        match tokio::task::spawn_blocking(move || f(&ob)).await {
            Ok(v) => Some(v),
            Err(e) => {
                self.metrics
                    .blocking_panics
                    .get_or_create(&labels([("task", task)]))
                    .inc();
                error!(task, error = %e, "an outbox operation panicked; what it was doing may be lost");
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one changing operation: `f` changes memory under the state lock and prepares the
    /// disk work, which is done after the state lock is released (the `io` lock is held all
    /// along); a sync it asks for follows once the `io` lock is released too.
    fn op<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let (out, sync) = self.op_sync_after(f);
        self.sync(sync);
        out
    }

    /// [`Self::op`] whose fsync is left to the caller: the work is written under the `io` lock
    /// as usual, and when it asks for a sync a second handle on the file is returned (with the
    /// path, for errors), to be synced once the lock is released. When no handle can be had
    /// (no file descriptor left) the sync is done under the lock, as [`Self::op`] does.
    fn op_sync_after<T>(
        &self,
        f: impl FnOnce(&mut Inner) -> T,
    ) -> (T, Option<(std::path::PathBuf, std::fs::File)>) {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let mut g = self.lock();
        let out = f(&mut g);
        let mut work = std::mem::take(&mut g.work);
        drop(g);
        let sync = std::mem::take(&mut work.sync);
        self.flush(&mut io, work);
        let Some(st) = io.as_mut().filter(|_| sync) else {
            return (out, None);
        };
        match st.log.sync_handle() {
            Ok(file) => (out, Some((st.log.path().to_owned(), file))),
            Err(_) => {
                match st.log.append(&[], true) {
                    Ok(()) => self.write_ok(),
                    Err(e) => {
                        let path = st.log.path().to_owned();
                        self.write_failed(&path, &e);
                    }
                }
                (out, None)
            }
        }
    }

    /// Does the fsync [`Self::op_sync_after`] left to its caller (outside the `io` lock).
    fn sync(&self, sync: Option<(std::path::PathBuf, std::fs::File)>) {
        let Some((path, file)) = sync else { return };
        #[cfg(test)]
        run_hook(&self.sync_hook);
        match file.sync_data() {
            Ok(()) => self.write_ok(),
            Err(e) => self.write_failed(&path, &e),
        }
    }

    /// A write of the outbox succeeded: a failure reported before is over.
    fn write_ok(&self) {
        if self.metrics.outbox_failing.set(0) != 0 {
            if let Some(s) = self.state.get() {
                s.health.ok(&crate::telemetry::Component::Outbox);
            }
        }
    }

    /// A write (or sync) of the outbox failed: counted, in `/readyz`, logged.
    fn write_failed(&self, path: &std::path::Path, e: &io::Error) {
        self.metrics.outbox_errors.inc();
        self.metrics.outbox_failing.set(1);
        if let Some(s) = self.state.get() {
            s.health.fail(
                &crate::telemetry::Component::Outbox,
                format!("cannot write to disk ({e}): notifications are kept in memory only"),
            );
        }
        error!(path = %path.display(), error = %e, "outbox write failed: notifications kept in memory only");
    }

    /// Does an operation's disk work (the state lock is not held).
    fn flush(&self, io: &mut Option<Store>, w: Work) {
        let Some(st) = io.as_mut() else { return };
        if w.rewrite.is_none() && w.buf.is_empty() && w.before.is_empty() {
            return;
        }
        #[cfg(test)]
        run_hook(&self.write_hook);
        let mut tail = w.before;
        let mut live = None;
        if let Some(contents) = w.rewrite {
            match st.log.replace(&contents) {
                Ok(()) => {
                    tail.clear();
                    live = Some(st.log.len());
                    info!(bytes = st.log.len(), "outbox compacted");
                }
                Err(e) => {
                    self.metrics.outbox_errors.inc();
                    error!(path = %st.log.path().display(), error = %e, "outbox compaction failed; appending to the old file");
                }
            }
        }
        tail.extend_from_slice(&w.buf);
        if !tail.is_empty() {
            // Unsynced: the sync a work asks for is done by `op_sync_after`'s caller.
            match st.log.append(&tail, false) {
                Ok(()) => self.write_ok(),
                Err(e) => {
                    let path = st.log.path().to_owned();
                    self.write_failed(&path, &e);
                }
            }
        }
        let bytes = st.log.len();
        {
            let mut g = self.lock();
            g.bytes = bytes;
            if let Some(l) = live {
                g.live = l;
            }
        }
        self.metrics
            .outbox_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Reports disk-write failures (and recovery) as the health component `alert outbox`, which
    /// `/readyz` shows and the rule engine turns into the fault alarm `gateway:alert outbox`.
    pub fn report_health(&self, state: Arc<crate::state::SharedState>) {
        let _ = self.state.set(state);
    }

    /// The wake-up of a receiver's worker.
    pub fn waker(&self, receiver: &str) -> Arc<Notify> {
        self.wake
            .get(receiver)
            .cloned()
            .unwrap_or_else(|| Arc::new(Notify::new()))
    }

    /// Stores notifications (fsync'd) and wakes their receivers; returns their ids. One whose
    /// key is already in the outbox is skipped (a replayed event). `mark`: every alarm event up
    /// to this sequence number now has its notifications stored (written in the same fsync'd
    /// append).
    pub fn enqueue(&self, ns: Vec<Notification>, mark: Option<u64>) -> Vec<u64> {
        let ((ids, receivers), sync) =
            self.op_sync_after(|g| self.store_notifications(g, ns, mark));
        // Woken only now: the notifications are written (their fsync follows).
        for r in receivers {
            if let Some(w) = self.wake.get(&r) {
                w.notify_one();
            }
        }
        self.sync(sync);
        ids
    }

    fn store_notifications(
        &self,
        g: &mut Inner,
        ns: Vec<Notification>,
        mark: Option<u64>,
    ) -> (Vec<u64>, Vec<String>) {
        let mark = mark.filter(|m| *m > g.routed);
        if ns.is_empty() {
            if let Some(seq) = mark {
                g.routed = seq;
                self.append(g, &[Rec::Mark { seq }], false);
            }
            return (Vec::new(), Vec::new());
        }
        let mut recs = Vec::new();
        let mut ids = Vec::new();
        let now = Instant::now();
        for n in ns {
            if g.keys.contains(&n.key) {
                info!(key = %n.key, "notification already in the outbox; not stored again");
                continue;
            }
            let id = g.next_id;
            g.next_id += 1;
            self.metrics
                .notifications
                .get_or_create(&labels([
                    ("receiver", &n.receiver),
                    ("reason", reason_str(n.reason)),
                ]))
                .inc();
            let entry = entry_of(id, &n);
            recs.push(Rec::Put { id, n: n.clone() });
            g.insert(
                id,
                Item {
                    entry,
                    n: Some(n),
                    due: Some(now),
                },
            );
            ids.push(id);
        }
        if let Some(seq) = mark {
            g.routed = seq;
            recs.push(Rec::Mark { seq });
        }
        self.append(g, &recs, true);
        let receivers: Vec<String> = recs
            .iter()
            .filter_map(|r| match r {
                Rec::Put { n, .. } => Some(n.receiver.clone()),
                _ => None,
            })
            .collect();
        for r in &receivers {
            self.enforce_cap(g, r);
        }
        self.maybe_compact(g);
        self.gauges(g);
        (ids, receivers)
    }

    /// The next due notification of `receiver`; expired ones are finished on the way.
    pub fn next(&self, receiver: &str, now: Instant, wall: SystemTime) -> Next {
        self.op(|g| {
            let (mut found, earliest) = self.due_in(g, receiver, now, wall, 1);
            match found.pop() {
                Some((id, n, a)) => Next::Due(id, n, a),
                None => Next::Wait(earliest),
            }
        })
    }

    /// Up to `max` due notifications of `receiver`, in delivery order (for a digest message);
    /// expired ones are finished on the way.
    pub fn due(
        &self,
        receiver: &str,
        now: Instant,
        wall: SystemTime,
        max: usize,
    ) -> Vec<(u64, Box<Notification>, u32)> {
        self.op(|g| self.due_in(g, receiver, now, wall, max).0)
    }

    #[expect(
        clippy::type_complexity,
        reason = "one private helper returning what `next` and `due` unpack"
    )]
    fn due_in(
        &self,
        g: &mut Inner,
        receiver: &str,
        now: Instant,
        wall: SystemTime,
        max: usize,
    ) -> (Vec<(u64, Box<Notification>, u32)>, Option<Instant>) {
        let mut expired = Vec::new();
        let mut earliest: Option<Instant> = None;
        let mut found = Vec::new();
        let ids = g.pending.get(receiver).into_iter().flatten();
        for (id, it) in ids.filter_map(|id| g.items.get(id).map(|it| (id, it))) {
            let Some(n) = &it.n else { continue };
            if n.expires <= wall {
                expired.push(*id);
                continue;
            }
            let due = it.due.unwrap_or(now);
            if due <= now {
                if found.len() < max {
                    found.push((*id, Box::new(n.clone()), it.entry.attempts));
                }
                if found.len() >= max {
                    break;
                }
                continue;
            }
            earliest = Some(earliest.map_or(due, |e| e.min(due)));
        }
        for id in expired {
            if let Some(e) = self.finish(g, id, Status::Expired, wall) {
                error!(receiver, key = %e.key, alarms = ?e.alarms, attempts = e.attempts, last_error = ?e.last_error, "notification expired undelivered");
            }
        }
        if !g.items.is_empty() {
            self.maybe_compact(g);
            self.gauges(g);
        }
        (found, earliest)
    }

    /// Records a delivery.
    pub fn delivered(&self, id: u64, wall: SystemTime) {
        self.op(|g| {
            if let Some(it) = g.items.get_mut(&id) {
                it.entry.attempts += 1;
            }
            self.finish(g, id, Status::Delivered, wall);
            self.maybe_compact(g);
            self.gauges(g);
        });
    }

    /// Records a failed attempt; the notification is due again at `retry_at`.
    pub fn failed(&self, id: u64, error: &str, retry_at: Instant) {
        self.op(|g| self.failed_in(g, id, error, retry_at));
    }

    fn failed_in(&self, g: &mut Inner, id: u64, error: &str, retry_at: Instant) {
        let Some(it) = g.items.get_mut(&id) else {
            return;
        };
        it.entry.attempts += 1;
        it.entry.last_error = Some(error.to_owned());
        it.due = Some(retry_at);
        let receiver = it.entry.receiver.clone();
        self.metrics
            .deliveries
            .get_or_create(&labels([("receiver", &receiver), ("result", "failed")]))
            .inc();
        let rec = Rec::Try {
            id,
            error: error.to_owned(),
        };
        self.append(g, &[rec], false);
    }

    /// Makes every pending notification of `receiver` due now (it answers again: what waited
    /// out its backoff goes at once).
    pub fn due_now(&self, receiver: &str) {
        let mut g = self.lock();
        let now = Instant::now();
        let ids: Vec<u64> = g
            .pending
            .get(receiver)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for id in ids {
            if let Some(it) = g.items.get_mut(&id) {
                it.due = Some(now);
            }
        }
    }

    /// Records who answered an alarm (acknowledge) and the handling result (reset), on every
    /// ledger row of that alarm.
    pub fn answer(&self, ev: &AlarmEvent) {
        let Some(by) = ev.by.clone() else { return };
        self.op(|g| self.answer_in(g, ev, by));
    }

    fn answer_in(&self, g: &mut Inner, ev: &AlarmEvent, by: String) {
        apply_answer(
            &mut g.items,
            &ev.alarm,
            ev.transition,
            &by,
            ev.comment.as_deref(),
            ev.ts,
        );
        let rec = Rec::Answer {
            alarm: ev.alarm.clone(),
            transition: ev.transition,
            by,
            comment: ev.comment.clone(),
            at: ev.ts,
        };
        self.append(g, &[rec], false);
    }

    /// Ledger rows, newest first, filtered.
    pub fn ledger(&self, f: &LedgerFilter) -> Vec<LedgerEntry> {
        let g = self.lock();
        g.items
            .values()
            .rev()
            .map(|it| &it.entry)
            .filter(|e| f.receiver.as_ref().is_none_or(|r| &e.receiver == r))
            .filter(|e| f.alarm.as_ref().is_none_or(|a| e.alarms.contains(a)))
            .filter(|e| f.status.is_none_or(|s| e.status == s))
            .take(f.limit)
            .cloned()
            .collect()
    }

    /// Pending notifications per receiver (every configured receiver is listed).
    pub fn backlog(&self) -> BTreeMap<String, usize> {
        backlog(&self.lock(), &self.caps)
    }

    /// Every alarm event up to this sequence number had its notifications stored.
    pub fn routed(&self) -> u64 {
        self.lock().routed
    }

    /// Whether pending notifications survive a restart.
    pub fn durable(&self) -> bool {
        self.cfg.dir.is_some()
    }

    fn finish(
        &self,
        g: &mut Inner,
        id: u64,
        status: Status,
        wall: SystemTime,
    ) -> Option<LedgerEntry> {
        g.items.get(&id)?.n.as_ref()?;
        g.unpend(id);
        let it = g.items.get_mut(&id)?;
        it.n = None;
        it.due = None;
        it.entry.status = status;
        it.entry.finished = Some(wall);
        let e = it.entry.clone();
        self.metrics
            .deliveries
            .get_or_create(&labels([
                ("receiver", &e.receiver),
                ("result", status_str(status)),
            ]))
            .inc();
        self.append(
            g,
            &[Rec::Done {
                id,
                status,
                at: wall,
            }],
            false,
        );
        Some(e)
    }

    fn enforce_cap(&self, g: &mut Inner, receiver: &str) {
        let cap = self.caps.get(receiver).copied().unwrap_or(usize::MAX);
        loop {
            let ids = g.pending.get(receiver);
            if ids.is_none_or(|p| p.len() <= cap) {
                return;
            }
            let pending: Vec<(Priority, u64)> = ids
                .into_iter()
                .flatten()
                .filter_map(|id| g.items.get(id).map(|it| (it.entry.priority, *id)))
                .collect();
            let Some(&(_, victim)) = pending.iter().min() else {
                return;
            };
            if let Some(e) = self.finish(g, victim, Status::Evicted, SystemTime::now()) {
                error!(receiver, key = %e.key, alarms = ?e.alarms, cap, "receiver's outbox queue full: lowest-priority oldest notification evicted");
            }
        }
    }

    /// Queues records for the operation's disk work.
    fn append(&self, g: &mut Inner, recs: &[Rec], sync: bool) {
        if !self.durable() {
            return;
        }
        for r in recs {
            encode(r, &mut g.work.buf);
        }
        g.work.sync |= sync;
    }

    fn maybe_compact(&self, g: &mut Inner) {
        // In memory: only the ledger is trimmed, once it holds twice its size.
        if !self.durable() {
            let pending: usize = g.pending.values().map(BTreeSet::len).sum();
            if g.items.len() - pending > 2 * self.cfg.ledger_entries {
                self.compact(g);
            }
            return;
        }
        // Past half the budget, and at least twice what the last compaction left (so a large
        // live set does not cause a rewrite on every append), or past the budget.
        let bytes = g.bytes + g.work.buf.len() as u64;
        if bytes > self.cfg.max_bytes || (bytes > self.cfg.max_bytes / 2 && bytes >= 2 * g.live) {
            self.compact(g);
        }
    }

    /// Drops finished rows beyond the ledger size, then rewrites the file within `max_bytes`.
    fn compact(&self, g: &mut Inner) {
        let finished: Vec<u64> = g
            .items
            .iter()
            .filter(|(_, it)| it.n.is_none())
            .map(|(id, _)| *id)
            .collect();
        let extra = finished.len().saturating_sub(self.cfg.ledger_entries);
        for id in &finished[..extra] {
            g.remove(*id);
        }
        if !self.durable() {
            return;
        }
        let mut lines: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut mark = Vec::new();
        encode(&Rec::Mark { seq: g.routed }, &mut mark);
        let mut total = mark.len() as u64;
        for (id, it) in &g.items {
            let mut buf = Vec::new();
            encode(
                &Rec::Keep {
                    entry: it.entry.clone(),
                    n: it.n.clone(),
                },
                &mut buf,
            );
            total += buf.len() as u64;
            lines.insert(*id, buf);
        }
        // Over budget: finished rows first (oldest first), then pending ones (lowest priority,
        // then oldest).
        let mut order: Vec<(bool, Priority, u64)> = g
            .items
            .iter()
            .map(|(id, it)| (it.n.is_some(), it.entry.priority, *id))
            .collect();
        order.sort();
        let mut victims = Vec::new();
        for (pending, _, id) in order {
            if total <= self.cfg.max_bytes {
                break;
            }
            total -= lines.remove(&id).map_or(0, |l| l.len() as u64);
            victims.push((pending, id));
        }
        for (pending, id) in victims {
            if pending {
                g.unpend(id);
                if let Some(it) = g.items.get_mut(&id) {
                    it.n = None;
                    it.entry.status = Status::Evicted;
                    it.entry.finished = Some(SystemTime::now());
                    let e = it.entry.clone();
                    self.metrics
                        .deliveries
                        .get_or_create(&labels([("receiver", &e.receiver), ("result", "evicted")]))
                        .inc();
                    error!(receiver = %e.receiver, key = %e.key, alarms = ?e.alarms, "outbox over its disk budget: notification evicted");
                }
            }
            g.remove(id);
        }
        let mut contents = mark;
        for l in lines.values() {
            contents.extend_from_slice(l);
        }
        // Written after the state lock is released; what was queued before it is in it.
        let queued = std::mem::take(&mut g.work.buf);
        g.work.before.extend_from_slice(&queued);
        g.work.rewrite = Some(contents);
    }

    fn gauges(&self, g: &Inner) {
        for (r, n) in backlog(g, &self.caps) {
            self.metrics
                .outbox_pending
                .get_or_create(&labels([("receiver", &r)]))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let bytes = g.bytes;
        self.metrics
            .outbox_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

fn entry_of(id: u64, n: &Notification) -> LedgerEntry {
    let mut e = LedgerEntry {
        id,
        key: n.key.clone(),
        receiver: n.receiver.clone(),
        route: n.route.clone(),
        reason: n.reason,
        tier: n.tier,
        alarms: n.events.iter().map(|e| e.alarm.clone()).collect(),
        transition: n.events.first().map(|e| e.transition),
        priority: n.priority,
        call: n.call.clone(),
        created: n.created,
        status: Status::Pending,
        attempts: 0,
        last_error: None,
        finished: None,
        answered_by: None,
        answered_at: None,
        handling: None,
    };
    // A notification of the answer itself carries it.
    for ev in &n.events {
        if let Some(by) = &ev.by {
            answer_entry(&mut e, ev.transition, by, ev.comment.as_deref(), ev.ts);
        }
    }
    e
}

fn backlog(g: &Inner, caps: &HashMap<String, usize>) -> BTreeMap<String, usize> {
    let mut m: BTreeMap<String, usize> = caps.keys().map(|k| (k.clone(), 0)).collect();
    for (r, ids) in &g.pending {
        m.insert(r.clone(), ids.len());
    }
    m
}

fn apply_answer(
    items: &mut BTreeMap<u64, Item>,
    alarm: &str,
    t: Transition,
    by: &str,
    comment: Option<&str>,
    at: SystemTime,
) {
    for it in items.values_mut() {
        if it.entry.alarms.iter().any(|a| a == alarm) {
            answer_entry(&mut it.entry, t, by, comment, at);
        }
    }
}

/// Records an acknowledgement (who, when) or a reset (the handling result) on a ledger row.
fn answer_entry(
    e: &mut LedgerEntry,
    t: Transition,
    by: &str,
    comment: Option<&str>,
    at: SystemTime,
) {
    match t {
        Transition::Acknowledged if e.answered_by.is_none() => {
            e.answered_by = Some(by.to_owned());
            e.answered_at = Some(at);
        }
        Transition::Reset if e.handling.is_none() => {
            e.handling = Some(match comment {
                Some(c) => format!("reset by {by}: {c}"),
                None => format!("reset by {by}"),
            });
        }
        _ => {}
    }
}

/// Reads every record; returns the number of damaged lines.
fn replay(
    path: &std::path::Path,
    items: &mut BTreeMap<u64, Item>,
    routed: &mut u64,
) -> io::Result<usize> {
    let mut corrupt = 0;
    crc_log::replay::<Rec>(path, |rec| {
        let Some(rec) = rec else {
            corrupt += 1;
            return;
        };
        match rec {
            Rec::Put { id, n } => {
                let entry = entry_of(id, &n);
                items.insert(
                    id,
                    Item {
                        entry,
                        n: Some(n),
                        due: None,
                    },
                );
            }
            Rec::Keep { entry, n } => {
                items.insert(
                    entry.id,
                    Item {
                        entry,
                        n,
                        due: None,
                    },
                );
            }
            Rec::Try { id, error } => {
                if let Some(it) = items.get_mut(&id) {
                    it.entry.attempts += 1;
                    it.entry.last_error = Some(error);
                }
            }
            Rec::Done { id, status, at } => {
                if let Some(it) = items.get_mut(&id) {
                    if status == Status::Delivered {
                        it.entry.attempts += 1;
                    }
                    it.n = None;
                    it.entry.status = status;
                    it.entry.finished = Some(at);
                }
            }
            Rec::Answer {
                alarm,
                transition,
                by,
                comment,
                at,
            } => apply_answer(items, &alarm, transition, &by, comment.as_deref(), at),
            Rec::Mark { seq } => *routed = (*routed).max(seq),
        }
    })?;
    Ok(corrupt)
}

/// Filter of [`Outbox::ledger`].
#[derive(Debug, Clone)]
pub struct LedgerFilter {
    /// Only this receiver.
    pub receiver: Option<String>,
    /// Only rows concerning this alarm.
    pub alarm: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// At most this many rows.
    pub limit: usize,
}

fn reason_str(r: Reason) -> &'static str {
    match r {
        Reason::Event => "event",
        Reason::Group => "group",
        Reason::Reminder => "reminder",
        Reason::Escalation => "escalation",
        Reason::Report => "report",
        Reason::Summary => "summary",
    }
}

fn status_str(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Delivered => "delivered",
        Status::Expired => "expired",
        Status::Evicted => "evicted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    fn ev(seq: u64, p: Priority) -> AlarmEvent {
        AlarmEvent {
            seq,
            alarm: format!("a.t{seq}.level:HH"),
            channel: crate::model::ChannelId::new(format!("a.t{seq}.level")),
            condition: "HH".into(),
            priority: p,
            transition: Transition::Raised,
            value: Some(9.0),
            limit: Some(8.0),
            message: "m".into(),
            ts: SystemTime::now(),
            class: Default::default(),
            kind: "tank".into(),
            state: Default::default(),
            by: None,
            comment: None,
            raised_at: None,
            notice: Default::default(),
        }
    }

    fn note(seq: u64, p: Priority, receiver: &str) -> Notification {
        let now = SystemTime::now();
        Notification {
            key: format!("s-{seq}-r-{receiver}"),
            receiver: receiver.into(),
            route: "r".into(),
            reason: Reason::Event,
            tier: 1,
            call: vec![],
            events: vec![ev(seq, p)],
            values: vec![],
            priority: p,
            created: now,
            expires: now + Duration::from_secs(3600),
        }
    }

    fn open(dir: &std::path::Path, cap: usize, max_bytes: u64) -> (Outbox, Opened) {
        let cfg = OutboxConfig {
            dir: Some(dir.to_owned()),
            max_bytes,
            ledger_entries: 100,
        };
        let caps = [("hook".to_owned(), cap)].into_iter().collect();
        Outbox::open(&cfg, caps, Arc::new(Metrics::new())).expect("open")
    }

    #[test]
    fn pending_notifications_survive_a_reopen_and_delivered_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ob, _) = open(dir.path(), 10, 1 << 20);
        let ids = ob.enqueue(
            vec![
                note(1, Priority::High, "hook"),
                note(2, Priority::High, "hook"),
            ],
            None,
        );
        let Next::Due(id, n, 0) = ob.next("hook", Instant::now(), SystemTime::now()) else {
            panic!("first notification due");
        };
        assert_eq!((id, n.key.as_str()), (ids[0], "s-1-r-hook"));
        ob.delivered(id, SystemTime::now());
        drop(ob);
        let (ob, opened) = open(dir.path(), 10, 1 << 20);
        assert_eq!((opened.pending, opened.finished, opened.corrupt), (1, 1, 0));
        let Next::Due(id2, n, _) = ob.next("hook", Instant::now(), SystemTime::now()) else {
            panic!("second notification due after the reopen");
        };
        assert_eq!((id2, n.key.as_str()), (ids[1], "s-2-r-hook"));
        let rows = ob.ledger(&LedgerFilter {
            receiver: None,
            alarm: None,
            status: None,
            limit: 10,
        });
        assert_eq!(rows[1].status, Status::Delivered);
        assert_eq!(rows[1].attempts, 1);
        assert_eq!(rows[0].status, Status::Pending);
        // New ids continue after the replayed ones.
        assert_eq!(
            ob.enqueue(vec![note(3, Priority::Low, "hook")], None),
            vec![ids[1] + 1]
        );
    }

    #[test]
    fn the_routed_mark_survives_and_a_known_key_is_not_stored_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ob, _) = open(dir.path(), 10, 1 << 20);
        assert_eq!(ob.routed(), 0);
        ob.enqueue(vec![note(1, Priority::High, "hook")], Some(1));
        ob.enqueue(vec![], Some(3));
        assert!(
            ob.enqueue(vec![note(1, Priority::High, "hook")], Some(2))
                .is_empty()
        );
        assert_eq!(ob.routed(), 3, "the mark never goes back");
        drop(ob);
        let (ob, opened) = open(dir.path(), 10, 1 << 20);
        assert_eq!((ob.routed(), opened.pending), (3, 1));
        // Compaction (on open) keeps the mark.
        drop(ob);
        let (ob, _) = open(dir.path(), 10, 1 << 20);
        assert_eq!(ob.routed(), 3);
    }

    #[test]
    fn the_outbox_file_is_private_whatever_the_umask() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("outbox");
        let (ob, _) = open(&dir, 10, 1 << 20);
        ob.enqueue(vec![note(1, Priority::High, "hook")], None);
        let mode =
            |p: &std::path::Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "it holds names and phone numbers");
        assert_eq!(mode(&dir.join(FILE)), 0o600);
    }

    /// A hook that says it was entered, then waits until released (or the sender is dropped).
    fn gate() -> (
        Box<dyn Fn() + Send + Sync>,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let (release_rx, entered_tx) = (Mutex::new(release_rx), Mutex::new(entered_tx));
        let hook = Box::new(move || {
            let _ = entered_tx.lock().expect("lock").send(());
            let _ = release_rx.lock().expect("lock").recv();
        });
        (hook, entered, release)
    }

    #[test]
    fn readers_are_not_blocked_by_a_write_in_progress() {
        use std::sync::mpsc;
        let tmp = tempfile::tempdir().expect("tempdir");
        let (ob, _) = open(tmp.path(), 10, 1 << 20);
        let ob = Arc::new(ob);
        // The next write stops before its disk I/O until released.
        let (hook, entered, release) = gate();
        ob.write_hook.lock().expect("lock").0 = Some(hook);
        let writer = {
            let ob = ob.clone();
            std::thread::spawn(move || ob.enqueue(vec![note(1, Priority::High, "hook")], None))
        };
        entered
            .recv_timeout(Duration::from_secs(60))
            .expect("the write reached its disk I/O");
        // While the write (and its fsync) is in progress, the API's reads answer.
        let (answer_tx, answer) = mpsc::channel();
        let reader = {
            let ob = ob.clone();
            std::thread::spawn(move || {
                let rows = ob.ledger(&LedgerFilter {
                    receiver: None,
                    alarm: None,
                    status: None,
                    limit: 10,
                });
                let _ = answer_tx.send((rows.len(), ob.backlog()["hook"], ob.routed()));
            })
        };
        let got = answer.recv_timeout(Duration::from_secs(60));
        // (The write path holds the hook while it waits: release it, then remove it.)
        let _ = release.send(());
        drop(release);
        let got = got.expect("the ledger was blocked by a write in progress");
        assert_eq!(got, (1, 1, 0), "the new notification is already listed");
        reader.join().expect("reader");
        assert_eq!(writer.join().expect("writer").len(), 1);
        ob.write_hook.lock().expect("lock").0 = None;
        // And it is on disk afterwards.
        drop(ob);
        let (_, opened) = open(tmp.path(), 10, 1 << 20);
        assert_eq!(opened.pending, 1);
    }

    #[test]
    fn a_notification_is_attempted_while_its_fsync_is_in_progress() {
        use std::sync::mpsc;
        let tmp = tempfile::tempdir().expect("tempdir");
        let (ob, _) = open(tmp.path(), 10, 1 << 20);
        let ob = Arc::new(ob);
        // The next fsync waits until released.
        let (hook, entered, release) = gate();
        ob.sync_hook.lock().expect("lock").0 = Some(hook);
        let (done_tx, done) = mpsc::channel();
        let writer = {
            let ob = ob.clone();
            std::thread::spawn(move || {
                let ids = ob.enqueue(vec![note(1, Priority::High, "hook")], Some(1));
                let _ = done_tx.send(());
                ids
            })
        };
        entered
            .recv_timeout(Duration::from_secs(60))
            .expect("the enqueue reached its fsync");
        // While the fsync is in progress the worker takes the notification and records the
        // outcome; the dispatcher's enqueue has not returned.
        let (answer_tx, answer) = mpsc::channel();
        let worker = {
            let ob = ob.clone();
            std::thread::spawn(move || {
                let got = ob.next("hook", Instant::now(), SystemTime::now());
                if let Next::Due(id, ..) = &got {
                    ob.delivered(*id, SystemTime::now());
                }
                let _ = answer_tx.send(matches!(got, Next::Due(..)));
            })
        };
        let got = answer.recv_timeout(Duration::from_secs(60));
        let returned_early = done.try_recv().is_ok();
        let _ = release.send(());
        drop(release);
        assert!(
            got.expect("the worker was blocked by the fsync"),
            "the notification was not handed out during its fsync"
        );
        assert!(!returned_early, "enqueue returned before its fsync");
        worker.join().expect("worker");
        assert_eq!(writer.join().expect("writer").len(), 1);
        ob.sync_hook.lock().expect("lock").0 = None;
        // On disk afterwards, in order: the notification, then its outcome.
        drop(ob);
        let (ob, opened) = open(tmp.path(), 10, 1 << 20);
        assert_eq!((opened.pending, opened.finished), (0, 1));
        assert_eq!(ob.routed(), 1);
    }

    #[tokio::test]
    async fn a_panicking_blocking_job_is_logged_and_counted_not_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (ob, _) = open(tmp.path(), 10, 1 << 20);
        let ob = Arc::new(ob);
        let r: Option<()> = tokio::time::timeout(
            Duration::from_secs(30),
            ob.blocking("receiver", |_| panic!("injected")),
        )
        .await
        .expect("test timed out");
        assert!(r.is_none());
        assert!(
            ob.metrics
                .encode()
                .contains("hazgate_blocking_panics_total{task=\"receiver\"} 1"),
            "{}",
            ob.metrics.encode()
        );
        assert_eq!(ob.blocking("receiver", |o| o.durable()).await, Some(true));
    }

    #[test]
    fn in_memory_the_ledger_is_trimmed() {
        let cfg = OutboxConfig {
            dir: None,
            max_bytes: 1 << 20,
            ledger_entries: 10,
        };
        let caps = [("hook".to_owned(), 100)].into_iter().collect();
        let (ob, _) = Outbox::open(&cfg, caps, Arc::new(Metrics::new())).expect("open");
        for i in 0..100 {
            let ids = ob.enqueue(vec![note(i, Priority::High, "hook")], None);
            ob.delivered(ids[0], SystemTime::now());
        }
        let all = LedgerFilter {
            receiver: None,
            alarm: None,
            status: None,
            limit: 1000,
        };
        assert!(ob.ledger(&all).len() <= 21, "{}", ob.ledger(&all).len());
        assert!(!ob.durable());
    }

    #[test]
    fn a_torn_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ob, _) = open(dir.path(), 10, 1 << 20);
        ob.enqueue(vec![note(1, Priority::High, "hook")], None);
        drop(ob);
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"deadbeef {\"r\":\"put\",\"id\":9")
            .expect("write");
        drop(f);
        let (ob, opened) = open(dir.path(), 10, 1 << 20);
        assert_eq!((opened.pending, opened.corrupt), (1, 1));
        assert_eq!(ob.backlog()["hook"], 1);
    }

    #[test]
    fn a_full_receiver_queue_evicts_the_lowest_priority_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ob, _) = open(dir.path(), 2, 1 << 20);
        ob.enqueue(vec![note(1, Priority::Critical, "hook")], None);
        ob.enqueue(vec![note(2, Priority::Low, "hook")], None);
        ob.enqueue(vec![note(3, Priority::Low, "hook")], None);
        ob.enqueue(vec![note(4, Priority::High, "hook")], None);
        let f = LedgerFilter {
            receiver: None,
            alarm: None,
            status: Some(Status::Pending),
            limit: 10,
        };
        let keys: Vec<String> = ob.ledger(&f).into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["s-4-r-hook", "s-1-r-hook"]);
        let f = LedgerFilter {
            status: Some(Status::Evicted),
            ..f
        };
        assert_eq!(ob.ledger(&f).len(), 2);
    }

    #[test]
    fn an_expired_notification_is_finished_and_not_delivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ob, _) = open(dir.path(), 10, 1 << 20);
        let mut n = note(1, Priority::High, "hook");
        n.expires = n.created;
        ob.enqueue(vec![n], None);
        assert!(matches!(
            ob.next("hook", Instant::now(), SystemTime::now()),
            Next::Wait(None)
        ));
        let rows = ob.ledger(&LedgerFilter {
            receiver: None,
            alarm: None,
            status: None,
            limit: 10,
        });
        assert_eq!(rows[0].status, Status::Expired);
    }

    #[test]
    fn failures_are_retried_later_and_answers_are_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ob, _) = open(dir.path(), 10, 1 << 20);
        let ids = ob.enqueue(vec![note(1, Priority::High, "hook")], None);
        let now = Instant::now();
        ob.failed(ids[0], "HTTP 500", now + Duration::from_secs(5));
        match ob.next("hook", now, SystemTime::now()) {
            Next::Wait(Some(t)) => assert_eq!(t, now + Duration::from_secs(5)),
            other => panic!("expected a wait, got {other:?}"),
        }
        let mut ack = ev(1, Priority::High);
        ack.transition = Transition::Acknowledged;
        ack.by = Some("wang".into());
        ob.answer(&ack);
        drop(ob);
        let (ob, _) = open(dir.path(), 10, 1 << 20);
        let row = &ob.ledger(&LedgerFilter {
            receiver: None,
            alarm: None,
            status: None,
            limit: 1,
        })[0];
        assert_eq!(row.attempts, 1);
        assert_eq!(row.last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(row.answered_by.as_deref(), Some("wang"));
    }

    #[test]
    fn the_file_stays_within_its_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max = 64 * 1024;
        let (ob, _) = open(dir.path(), 100_000, max);
        for i in 0..400 {
            let ids = ob.enqueue(vec![note(i, Priority::Low, "hook")], None);
            if i % 10 != 0 {
                ob.delivered(ids[0], SystemTime::now());
            }
            let len = fs::metadata(dir.path().join(FILE)).expect("meta").len();
            assert!(len <= max, "outbox file {len} bytes over its {max} budget");
        }
        // Pending ones are kept ahead of finished ones while they fit.
        assert!(ob.backlog()["hook"] > 0);
    }
}
