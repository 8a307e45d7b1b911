//! Modbus acquisition: request planning ([`plan`]), decoding ([`decode`]), links ([`link`]:
//! TCP, RTU over TCP, RTU on a serial port), the commissioning probe ([`probe`]) and the poller
//! task.
//!
//! One poller task per source (connection or serial bus). Requests on one source are serialized,
//! each after `pause` of silence (never less than 3.5 character times on RTU framing) counted
//! from the end of the previous request on the source, whatever unit either went to; separate
//! sources poll concurrently, so a dead device costs only its own connection's time.
//!
//! Each device is polled per interval group (its default interval, and each distinct channel
//! `poll_interval`); a group keeps its cadence and never catches up on missed polls.
//!
//! Failure handling, per request:
//! - device exception → Bad(exception code) for the points of that request; the link is kept
//!   and the device is not backed off, but the poll is a failed one for its health;
//! - timeout → Bad(comm) and the connection is dropped and re-established (RTU: the reopened
//!   stream is drained first), so a late reply is never matched to a later request;
//! - link error (closed, wrong transaction id, CRC, mismatched header) → Bad(comm), reconnect
//!   with jittered exponential backoff.
//!
//! A device that fails three polls in a row is backed off (exponentially, capped at the source's
//! `backoff_max`); while backed off its channels get Bad(comm) samples without a request, so a dead
//! unit on a shared bus costs at most one timeout (plus, on RTU, one drain) per backoff period.
//!
//! Health: per device in [`SharedState`] (`GET /api/v1/devices`) and in metrics labelled by
//! device id (consecutive failures, latency, exceptions, last success). Every due poll updates
//! it: a poll is `ok` only when every request returned data; exceptions, timeouts, link errors
//! and failed connects are `failed`; polls skipped while backed off or waiting to reconnect are
//! `skipped` and count as failures too, with the cause in words.

pub mod decode;
pub mod link;
pub mod plan;
pub mod probe;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_modbus::Slave;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::SlaveContext;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{ResolvedDevice, ResolvedModbus as ResolvedSource};
use crate::model::{BadReason, Reading, Sample};
use crate::state::{DeviceHealth, SharedState};
use crate::telemetry::{Metrics, labels};

use self::decode::{decode_words, to_reading};
use self::link::{ReadOutcome, read_once};
use self::plan::Read;

/// Consecutive failed polls before a device is backed off.
const FAILS_BEFORE_BACKOFF: u32 = 3;

struct Group {
    interval: Duration,
    reads: Vec<Read>,
    next_due: Instant,
}

struct DeviceState {
    dev: ResolvedDevice,
    label: String,
    groups: Vec<Group>,
    /// Polls in a row in which the device answered nothing (drives the backoff; an exception
    /// is an answer, so a device that answers with exceptions keeps its full rate).
    fails: u32,
    /// Polls in a row that did not read every register (exceptions, timeouts, link errors, and
    /// polls skipped while backed off or not connected): the health counter.
    bad_polls: u32,
    skip_until: Option<Instant>,
    /// The failure of the last attempted poll, repeated while backed off.
    last_cause: Option<String>,
    /// The last answered poll had an exception (to log only the first of a run).
    excepting: bool,
}

/// What became of one due poll of a device, for its health.
enum PollHealth {
    /// Requests were sent.
    Polled {
        /// At least one request was answered (data or exception).
        answered: bool,
        /// Every request was answered with data.
        all_data: bool,
        latency: Duration,
        /// Requests answered with an exception, and the first code.
        exceptions: u32,
        first_exception: Option<u8>,
    },
    /// No request was sent (backed off, or the connection is down); the reason in words.
    NotPolled {
        /// `skipped` (backed off, waiting to reconnect) or `failed` (a connect attempt failed).
        result: &'static str,
        reason: String,
    },
}

/// Runs the poller for one Modbus source (any transport) until `cancel` fires. `B` is what the
/// engine's queue carries (a plain `Vec<Sample>` or a receipt-less `SampleBatch`).
pub async fn run_source<B: From<Vec<Sample>> + Send + 'static>(
    src: ResolvedSource,
    tx: mpsc::Sender<B>,
    state: Arc<SharedState>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let component = crate::telemetry::Component::Source(src.id.to_string());
    let now = Instant::now();
    let mut devices: Vec<DeviceState> = src
        .devices
        .iter()
        .map(|d| DeviceState {
            groups: plan::groups(&d.points, src.timing.max_gap)
                .into_iter()
                .map(|g| Group {
                    interval: g.interval,
                    reads: g.reads,
                    next_due: now,
                })
                .collect(),
            label: d.id.to_string(),
            dev: d.clone(),
            fails: 0,
            bad_polls: 0,
            skip_until: None,
            last_cause: None,
            excepting: false,
        })
        .collect();
    let mut ctx: Option<Context> = None;
    let mut connector = link::Connector::new(src.link.clone(), src.timing.clone());
    let mut connect_attempt: u32 = 0;
    let mut reconnect_at = now;
    // RTU framing: the next open must drain stale bytes (set after a timeout or link error).
    let mut drain_next = false;
    let src_label = src.id.to_string();
    let link_desc = src.link.describe();
    let mut pacer = Pacer {
        gap: src.timing.pause.max(src.link.min_silence()),
        last: None,
    };
    // Why the link is down, in words (for health and samples while waiting to reconnect).
    let mut link_down: Option<String> = None;

    loop {
        let Some(next) = devices
            .iter()
            .flat_map(|d| d.groups.iter().map(|g| g.next_due))
            .min()
        else {
            cancel.cancelled().await;
            return;
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next.into()) => {}
        }
        let now = Instant::now();
        for d in &mut devices {
            for gi in 0..d.groups.len() {
                if d.groups[gi].next_due > now {
                    continue;
                }
                if cancel.is_cancelled() {
                    return;
                }
                let g = &mut d.groups[gi];
                // Next due time: keep the cadence, but never try to catch up on missed polls.
                g.next_due += g.interval;
                if g.next_due <= now {
                    g.next_due = now + g.interval;
                }
                let (samples, health) = if d.skip_until.is_some_and(|t| now < t) {
                    let reason = format!(
                        "backing off after {} polls without an answer{}",
                        d.fails,
                        d.last_cause
                            .as_deref()
                            .map(|c| format!(": {c}"))
                            .unwrap_or_default()
                    );
                    (
                        bad_reads(&d.dev, &d.groups[gi].reads, &reason),
                        PollHealth::NotPolled {
                            result: "skipped",
                            reason,
                        },
                    )
                } else if ctx.is_none() && Instant::now() < reconnect_at {
                    let reason = format!(
                        "not connected (waiting to reconnect){}",
                        link_down
                            .as_deref()
                            .map(|c| format!(": {c}"))
                            .unwrap_or_default()
                    );
                    (
                        bad_reads(&d.dev, &d.groups[gi].reads, &reason),
                        PollHealth::NotPolled {
                            result: "skipped",
                            reason,
                        },
                    )
                } else {
                    if ctx.is_none() {
                        match connector.open(drain_next).await {
                            Ok(c) => {
                                info!(source = %src.id, link = %link_desc, "connected");
                                state.health.ok(&component);
                                connect_attempt = 0;
                                drain_next = false;
                                link_down = None;
                                ctx = Some(c);
                            }
                            Err(e) => {
                                let wait = crate::backoff::backoff(
                                    connect_attempt,
                                    Duration::from_millis(500),
                                    src.timing.backoff_max,
                                );
                                connect_attempt = connect_attempt.saturating_add(1);
                                reconnect_at = Instant::now() + wait;
                                warn!(source = %src.id, link = %link_desc, error = %e, retry_in = ?wait, "cannot connect");
                                state
                                    .health
                                    .fail(&component, format!("cannot connect: {e}"));
                                link_down = Some(format!("cannot connect: {e}"));
                            }
                        }
                    }
                    match ctx.as_mut() {
                        None => {
                            let reason = link_down
                                .clone()
                                .unwrap_or_else(|| "not connected".to_owned());
                            (
                                bad_reads(&d.dev, &d.groups[gi].reads, &reason),
                                PollHealth::NotPolled {
                                    result: "failed",
                                    reason,
                                },
                            )
                        }
                        Some(c) => {
                            let started = Instant::now();
                            let polled = poll_reads(
                                c,
                                &d.dev,
                                &d.groups[gi].reads,
                                &src,
                                &metrics,
                                &src_label,
                                &mut pacer,
                            )
                            .await;
                            if let Some(fail) = polled.link_failure {
                                // Drop the connection: a late reply must never answer a later
                                // request.
                                ctx = None;
                                reconnect_at = Instant::now();
                                drain_next = src.link.is_rtu();
                                if fail == LinkFailure::Error {
                                    connector.reset();
                                }
                            }
                            (
                                polled.samples,
                                PollHealth::Polled {
                                    answered: polled.any_ok,
                                    all_data: polled.all_data,
                                    latency: started.elapsed(),
                                    exceptions: polled.exceptions,
                                    first_exception: polled.first_exception,
                                },
                            )
                        }
                    }
                };
                update_health(&state, &metrics, d, health, &samples, now, &src);
                for s in &samples {
                    let q = if s.reading.value().is_some() {
                        "good"
                    } else {
                        "bad"
                    };
                    metrics
                        .samples
                        .get_or_create(&labels([("source", &src_label), ("quality", q)]))
                        .inc();
                }
                if tx.capacity() == 0 {
                    metrics.sample_queue_full.inc();
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    r = tx.send(B::from(samples)) => if r.is_err() { return; }
                }
            }
        }
    }
}

fn update_health(
    state: &SharedState,
    metrics: &Metrics,
    d: &mut DeviceState,
    health: PollHealth,
    samples: &[Sample],
    now: Instant,
    src: &ResolvedSource,
) {
    let dl = [("device", d.label.as_str())];
    let (result, ok, latency) = match &health {
        PollHealth::Polled {
            answered,
            all_data,
            latency,
            ..
        } => {
            if *answered {
                d.fails = 0;
                d.skip_until = None;
            } else {
                d.fails = d.fails.saturating_add(1);
                if d.fails >= FAILS_BEFORE_BACKOFF {
                    let base = d
                        .groups
                        .iter()
                        .map(|g| g.interval)
                        .min()
                        .unwrap_or(d.dev.poll_interval)
                        .max(Duration::from_secs(1));
                    let wait = crate::backoff::backoff(
                        d.fails - FAILS_BEFORE_BACKOFF,
                        base,
                        src.timing.backoff_max,
                    );
                    d.skip_until = Some(now + wait);
                    debug!(device = %d.dev.id, fails = d.fails, ?wait, "device backed off");
                }
            }
            let latency = answered.then_some(*latency);
            if *all_data {
                ("ok", true, latency)
            } else {
                ("failed", false, latency)
            }
        }
        PollHealth::NotPolled { result, .. } => (*result, false, None),
    };
    if ok {
        d.bad_polls = 0;
    } else {
        d.bad_polls = d.bad_polls.saturating_add(1);
    }
    let last_error = match &health {
        PollHealth::NotPolled { reason, .. } => Some(reason.clone()),
        PollHealth::Polled { .. } => samples.iter().find_map(|s| match &s.reading {
            Reading::Bad(r) => Some(r.to_string()),
            Reading::Good(_) => None,
        }),
    };
    if let PollHealth::Polled { .. } = health {
        // What a later backed-off poll repeats as its cause.
        d.last_cause = samples.iter().find_map(|s| match &s.reading {
            Reading::Bad(BadReason::Comm { detail }) => Some(detail.clone()),
            Reading::Bad(r) => Some(r.to_string()),
            Reading::Good(_) => None,
        });
    }
    metrics
        .modbus_device_polls
        .get_or_create(&labels([("device", &d.label), ("result", result)]))
        .inc();
    metrics
        .modbus_device_failures
        .get_or_create(&labels(dl))
        .set(i64::from(d.bad_polls));
    // Exceptions count requests (as `hazgate_modbus_requests_total{result="exception"}`), not
    // the points a request serves. The first exception after a poll without one is logged.
    let (exceptions, first_exception) = match &health {
        PollHealth::Polled {
            exceptions,
            first_exception,
            ..
        } => (*exceptions, *first_exception),
        PollHealth::NotPolled { .. } => (0, None),
    };
    if let Some(code) = first_exception.filter(|_| !d.excepting) {
        warn!(device = %d.dev.id, unit = d.dev.unit_id, code, "device answered with {}", crate::model::exception_text(code));
    }
    if let PollHealth::Polled { answered: true, .. } = health {
        d.excepting = exceptions > 0;
    }
    if exceptions > 0 {
        metrics
            .modbus_device_exceptions
            .get_or_create(&labels(dl))
            .inc_by(u64::from(exceptions));
    }
    if let Some(latency) = latency {
        metrics
            .modbus_device_latency
            .get_or_create(&labels(dl))
            .set(latency.as_secs_f64());
    }
    if ok {
        metrics
            .modbus_device_last_success
            .get_or_create(&labels(dl))
            .set(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|t| t.as_secs_f64())
                    .unwrap_or(0.0),
            );
    }
    state.update_device(&d.dev.id, |h: &mut DeviceHealth| {
        h.source = src.id.to_string();
        h.unit_id = d.dev.unit_id;
        h.consecutive_failures = d.bad_polls;
        if ok {
            h.last_success = Some(SystemTime::now());
        }
        if let Some(latency) = latency {
            h.latency_ms = Some(latency.as_secs_f64() * 1000.0);
        }
        h.exceptions += u64::from(exceptions);
        h.last_error = last_error;
    });
}

/// Keeps the line quiet before every request on a source, whichever unit it goes to: `pause`,
/// and never less than the link's 3.5 character times. Measured from the end of the previous
/// request (its answer, timeout or error), so a bus shared by several units gets the same
/// turnaround before the first request of each unit as between one unit's requests.
struct Pacer {
    gap: Duration,
    last: Option<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        if let Some(due) = self.last.map(|t| t + self.gap) {
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
    }

    fn done(&mut self) {
        self.last = Some(Instant::now());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkFailure {
    /// No answer in time: drain (RTU) or reconnect (TCP).
    Timeout,
    /// Transport or protocol error: reopen.
    Error,
}

struct Polled {
    samples: Vec<Sample>,
    /// Why the link must be re-established, if it must.
    link_failure: Option<LinkFailure>,
    /// At least one request was answered (data or exception).
    any_ok: bool,
    /// Every request was answered with data.
    all_data: bool,
    /// Requests answered with an exception, and the code of the first one.
    exceptions: u32,
    first_exception: Option<u8>,
}

/// Polls one interval group of a device.
async fn poll_reads(
    ctx: &mut Context,
    dev: &ResolvedDevice,
    reads: &[Read],
    src: &ResolvedSource,
    metrics: &Metrics,
    src_label: &str,
    pacer: &mut Pacer,
) -> Polled {
    ctx.set_slave(Slave(dev.unit_id));
    let timeout = src.timing.timeout;
    let mut out = Vec::with_capacity(reads.iter().map(|r| r.points.len()).sum());
    let mut link_failure = None;
    let mut any_ok = false;
    let mut all_data = true;
    let mut exceptions = 0u32;
    let mut first_exception = None;
    // The link error that ended this poll's requests, named for the points not asked.
    let mut first_failure: Option<String> = None;
    for read in reads {
        let link_ok = link_failure.is_none();
        let outcome = if link_ok {
            pacer.wait().await;
            let o = read_once(ctx, read, timeout).await;
            pacer.done();
            o
        } else {
            // Not asked: say what happened to the earlier request of this poll. A serial bus
            // has no connection to drop; a unit that did not answer is named.
            ReadOutcome::LinkError(match (&first_failure, link_failure) {
                (_, Some(LinkFailure::Timeout)) => format!(
                    "no answer from unit {} (not asked again after a timeout earlier in this poll)",
                    dev.unit_id
                ),
                (Some(e), _) if matches!(src.link, crate::config::ModbusLink::Rtu(_)) => {
                    format!("not asked after a link error earlier in this poll: {e}")
                }
                (Some(e), _) => format!("connection dropped earlier in this poll: {e}"),
                (None, _) => "connection dropped earlier in this poll".to_owned(),
            })
        };
        let ts = SystemTime::now();
        let result = match &outcome {
            ReadOutcome::Data(_) => "ok",
            ReadOutcome::Exception(_) => "exception",
            ReadOutcome::Timeout => "timeout",
            ReadOutcome::LinkError(_) => "error",
        };
        if link_ok {
            metrics
                .modbus_requests
                .get_or_create(&labels([("source", src_label), ("result", result)]))
                .inc();
        }
        match outcome {
            ReadOutcome::Data(words) => {
                any_ok = true;
                for &pi in &read.points {
                    let p = &dev.points[pi];
                    let off = usize::from(p.address - read.start);
                    let n = usize::from(p.def.width());
                    let reading = match words.get(off..off + n) {
                        Some(w) => to_reading(
                            decode_words(w, p.def.data_type(), p.def.order, p.def.bit),
                            &p.def,
                        ),
                        None => Reading::Bad(BadReason::Decode {
                            detail: format!("short response: {} words", words.len()),
                        }),
                    };
                    out.push(Sample {
                        channel: p.channel.clone(),
                        ts,
                        reading,
                    });
                }
            }
            ReadOutcome::Exception(code) => {
                any_ok = true; // the device answered: the link is fine
                all_data = false; // but the poll failed
                let code = u8::from(code);
                exceptions += 1;
                first_exception.get_or_insert(code);
                for &pi in &read.points {
                    out.push(Sample {
                        channel: dev.points[pi].channel.clone(),
                        ts,
                        reading: Reading::Bad(BadReason::Exception { code }),
                    });
                }
            }
            ReadOutcome::Timeout | ReadOutcome::LinkError(_) => {
                all_data = false;
                if link_ok {
                    link_failure = Some(if matches!(outcome, ReadOutcome::Timeout) {
                        LinkFailure::Timeout
                    } else {
                        LinkFailure::Error
                    });
                }
                if link_ok {
                    if let ReadOutcome::LinkError(e) = &outcome {
                        first_failure = Some(e.clone());
                    }
                }
                let detail = match outcome {
                    ReadOutcome::LinkError(e) => e,
                    _ => format!(
                        "no answer from unit {} within {:?} ({} {}..+{})",
                        dev.unit_id,
                        timeout,
                        read.table.as_str(),
                        read.start,
                        read.count
                    ),
                };
                for &pi in &read.points {
                    out.push(Sample {
                        channel: dev.points[pi].channel.clone(),
                        ts,
                        reading: Reading::Bad(BadReason::Comm {
                            detail: detail.clone(),
                        }),
                    });
                }
            }
        }
    }
    Polled {
        samples: out,
        link_failure,
        any_ok,
        all_data: all_data && !reads.is_empty(),
        exceptions,
        first_exception,
    }
}

fn bad_reads(dev: &ResolvedDevice, reads: &[Read], detail: &str) -> Vec<Sample> {
    let ts = SystemTime::now();
    reads
        .iter()
        .flat_map(|r| r.points.iter())
        .map(|&pi| Sample {
            channel: dev.points[pi].channel.clone(),
            ts,
            reading: Reading::Bad(BadReason::Comm {
                detail: detail.to_owned(),
            }),
        })
        .collect()
}
