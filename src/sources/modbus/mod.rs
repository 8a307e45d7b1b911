//! Modbus acquisition: request planning ([`plan`]), decoding ([`decode`]), links ([`link`]:
//! TCP, RTU over TCP, RTU on a serial port), the commissioning probe ([`probe`]) and the poller
//! task.
//!
//! One poller task per source (connection or serial bus). Requests on one source are serialized
//! with the configured pause; separate sources poll concurrently, so a dead device costs only its
//! own connection's time.
//!
//! Each device is polled per interval group (its default interval, and each distinct channel
//! `poll_interval`); a group keeps its cadence and never catches up on missed polls.
//!
//! Failure handling, per request:
//! - device exception → Bad(exception code) for the points of that request; the link is kept;
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
//! device id (consecutive failures, latency, exceptions, last success).

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

use crate::config::{ResolvedDevice, ResolvedSource};
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
    fails: u32,
    skip_until: Option<Instant>,
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
    let component = format!("source {}", src.id);
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
            skip_until: None,
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
                let samples = if d.skip_until.is_some_and(|t| now < t) {
                    metrics
                        .modbus_device_polls
                        .get_or_create(&labels([("device", &d.label), ("result", "skipped")]))
                        .inc();
                    bad_reads(
                        &d.dev,
                        &d.groups[gi].reads,
                        &format!("backing off after {} failed polls", d.fails),
                    )
                } else if ctx.is_none() && Instant::now() < reconnect_at {
                    bad_reads(
                        &d.dev,
                        &d.groups[gi].reads,
                        "not connected (waiting to reconnect)",
                    )
                } else {
                    if ctx.is_none() {
                        match connector.open(drain_next).await {
                            Ok(c) => {
                                info!(source = %src.id, link = %link_desc, "connected");
                                state.health.ok(&component);
                                connect_attempt = 0;
                                drain_next = false;
                                ctx = Some(c);
                            }
                            Err(e) => {
                                let wait = crate::sources::backoff(
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
                            }
                        }
                    }
                    match ctx.as_mut() {
                        None => bad_reads(&d.dev, &d.groups[gi].reads, "not connected"),
                        Some(c) => {
                            let started = Instant::now();
                            let polled = poll_reads(
                                c,
                                &d.dev,
                                &d.groups[gi].reads,
                                &src,
                                &metrics,
                                &src_label,
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
                            update_health(
                                &state,
                                &metrics,
                                d,
                                polled.any_ok,
                                started.elapsed(),
                                &polled.samples,
                                now,
                                &src,
                            );
                            polled.samples
                        }
                    }
                };
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

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn update_health(
    state: &SharedState,
    metrics: &Metrics,
    d: &mut DeviceState,
    any_ok: bool,
    latency: Duration,
    samples: &[Sample],
    now: Instant,
    src: &ResolvedSource,
) {
    if any_ok {
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
            let wait = crate::sources::backoff(
                d.fails - FAILS_BEFORE_BACKOFF,
                base,
                src.timing.backoff_max,
            );
            d.skip_until = Some(now + wait);
            debug!(device = %d.dev.id, fails = d.fails, ?wait, "device backed off");
        }
    }
    let exceptions = samples
        .iter()
        .filter(|s| matches!(s.reading, Reading::Bad(BadReason::Exception { .. })))
        .count();
    let dl = [("device", d.label.as_str())];
    metrics
        .modbus_device_polls
        .get_or_create(&labels([
            ("device", &d.label),
            ("result", if any_ok { "ok" } else { "failed" }),
        ]))
        .inc();
    metrics
        .modbus_device_failures
        .get_or_create(&labels(dl))
        .set(i64::from(d.fails));
    if exceptions > 0 {
        metrics
            .modbus_device_exceptions
            .get_or_create(&labels(dl))
            .inc_by(exceptions as u64);
    }
    if any_ok {
        metrics
            .modbus_device_latency
            .get_or_create(&labels(dl))
            .set(latency.as_secs_f64());
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
        h.consecutive_failures = d.fails;
        if any_ok {
            h.last_success = Some(SystemTime::now());
            h.latency_ms = Some(latency.as_secs_f64() * 1000.0);
        }
        h.exceptions += exceptions as u64;
        h.last_error = samples.iter().find_map(|s| match &s.reading {
            Reading::Bad(r) => Some(r.to_string()),
            Reading::Good(_) => None,
        });
    });
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
}

/// Polls one interval group of a device.
async fn poll_reads(
    ctx: &mut Context,
    dev: &ResolvedDevice,
    reads: &[Read],
    src: &ResolvedSource,
    metrics: &Metrics,
    src_label: &str,
) -> Polled {
    ctx.set_slave(Slave(dev.unit_id));
    let timeout = src.timing.timeout;
    let mut out = Vec::with_capacity(reads.iter().map(|r| r.points.len()).sum());
    let mut link_failure = None;
    let mut any_ok = false;
    for (i, read) in reads.iter().enumerate() {
        let link_ok = link_failure.is_none();
        if i > 0 && !src.timing.pause.is_zero() {
            tokio::time::sleep(src.timing.pause).await;
        }
        let outcome = if link_ok {
            read_once(ctx, read, timeout).await
        } else {
            ReadOutcome::LinkError("connection dropped earlier in this poll".into())
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
                let code = u8::from(code);
                for &pi in &read.points {
                    out.push(Sample {
                        channel: dev.points[pi].channel.clone(),
                        ts,
                        reading: Reading::Bad(BadReason::Exception { code }),
                    });
                }
            }
            ReadOutcome::Timeout | ReadOutcome::LinkError(_) => {
                if link_ok {
                    link_failure = Some(if matches!(outcome, ReadOutcome::Timeout) {
                        LinkFailure::Timeout
                    } else {
                        LinkFailure::Error
                    });
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
