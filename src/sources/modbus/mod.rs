//! Modbus acquisition: request planning ([`plan`]), decoding ([`decode`]) and the poller task.
//!
//! One poller task per source (connection). Requests on one connection are serialized with the
//! configured pause; separate sources poll concurrently, so a dead device costs only its own
//! connection's time.
//!
//! Failure handling, per request:
//! - device exception → Bad(exception code) for the points of that request; the link is kept;
//! - timeout → Bad(comm) and the connection is dropped and re-established, so a late reply is
//!   never matched to a later request;
//! - link error → Bad(comm), reconnect with jittered exponential backoff.
//!
//! A device that fails three polls in a row is backed off (exponentially, capped at the source's
//! `backoff_max`); while backed off its channels get Bad(comm) samples without a request, so a dead
//! unit on a shared converter costs at most one timeout per backoff period.

pub mod decode;
pub mod plan;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_modbus::client::{Context, Reader, tcp};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{ResolvedDevice, ResolvedSource, Table};
use crate::model::{BadReason, Reading, Sample};
use crate::state::{DeviceHealth, SharedState};
use crate::telemetry::{Metrics, labels};

use self::decode::{decode_words, to_reading};
use self::plan::Read;

/// Consecutive failed polls before a device is backed off.
const FAILS_BEFORE_BACKOFF: u32 = 3;

struct DeviceState {
    dev: ResolvedDevice,
    reads: Vec<Read>,
    next_due: Instant,
    fails: u32,
    skip_until: Option<Instant>,
}

enum ReadOutcome {
    Data(Vec<u16>),
    Exception(ExceptionCode),
    Timeout,
    LinkError(String),
}

/// Runs the poller for one Modbus TCP source until `cancel` fires.
pub async fn run_source(
    src: ResolvedSource,
    tx: mpsc::Sender<Vec<Sample>>,
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
            reads: plan::plan(&d.points, src.tcp.max_gap),
            dev: d.clone(),
            next_due: now,
            fails: 0,
            skip_until: None,
        })
        .collect();
    let mut ctx: Option<Context> = None;
    let mut connect_attempt: u32 = 0;
    let mut reconnect_at = now;
    let src_label = src.id.to_string();

    loop {
        let Some(next) = devices.iter().map(|d| d.next_due).min() else {
            cancel.cancelled().await;
            return;
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next.into()) => {}
        }
        let now = Instant::now();
        for d in devices.iter_mut().filter(|d| d.next_due <= now) {
            if cancel.is_cancelled() {
                return;
            }
            // Next due time: keep the cadence, but never try to catch up on missed polls.
            d.next_due += d.dev.poll_interval;
            if d.next_due <= now {
                d.next_due = now + d.dev.poll_interval;
            }
            let samples = if d.skip_until.is_some_and(|t| now < t) {
                bad_all(&d.dev, &format!("backing off after {} failed polls", d.fails))
            } else if ctx.is_none() && now < reconnect_at {
                bad_all(&d.dev, "not connected (waiting to reconnect)")
            } else {
                if ctx.is_none() {
                    match connect(&src).await {
                        Ok(c) => {
                            info!(source = %src.id, address = %src.tcp.address, "connected");
                            state.health.ok(&component);
                            connect_attempt = 0;
                            ctx = Some(c);
                        }
                        Err(e) => {
                            let wait = crate::sources::backoff(
                                connect_attempt,
                                Duration::from_millis(500),
                                src.tcp.backoff_max,
                            );
                            connect_attempt = connect_attempt.saturating_add(1);
                            reconnect_at = Instant::now() + wait;
                            warn!(source = %src.id, address = %src.tcp.address, error = %e, retry_in = ?wait, "cannot connect");
                            state.health.fail(&component, format!("cannot connect to {}: {e}", src.tcp.address));
                        }
                    }
                }
                match ctx.as_mut() {
                    None => bad_all(&d.dev, "not connected"),
                    Some(c) => {
                        let started = Instant::now();
                        let (samples, link_ok, any_ok) =
                            poll_device(c, d, &src, &metrics, &src_label).await;
                        if !link_ok {
                            // Drop the connection: a late reply must never answer a later request.
                            ctx = None;
                            reconnect_at = Instant::now();
                        }
                        update_health(&state, d, any_ok, started.elapsed(), &samples, now, &src);
                        samples
                    }
                }
            };
            for s in &samples {
                let q = if s.reading.value().is_some() { "good" } else { "bad" };
                metrics.samples.get_or_create(&labels([("source", &src_label), ("quality", q)])).inc();
            }
            if tx.capacity() == 0 {
                metrics.sample_queue_full.inc();
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = tx.send(samples) => if r.is_err() { return; }
            }
        }
    }
}

fn update_health(
    state: &SharedState,
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
            let wait = crate::sources::backoff(
                d.fails - FAILS_BEFORE_BACKOFF,
                d.dev.poll_interval.max(Duration::from_secs(1)),
                src.tcp.backoff_max,
            );
            d.skip_until = Some(now + wait);
            debug!(device = %d.dev.id, fails = d.fails, ?wait, "device backed off");
        }
    }
    let exceptions = samples
        .iter()
        .filter(|s| matches!(s.reading, Reading::Bad(BadReason::Exception { .. })))
        .count();
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

async fn connect(src: &ResolvedSource) -> Result<Context, String> {
    let stream = tokio::time::timeout(
        src.tcp.connect_timeout,
        TcpStream::connect(src.tcp.address.as_str()),
    )
    .await
    .map_err(|_| format!("connect timed out after {:?}", src.tcp.connect_timeout))?
    .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    Ok(tcp::attach_slave(stream, Slave(1)))
}

/// Polls one device; returns its samples, whether the link is still usable, and whether any
/// request succeeded.
async fn poll_device(
    ctx: &mut Context,
    d: &DeviceState,
    src: &ResolvedSource,
    metrics: &Metrics,
    src_label: &str,
) -> (Vec<Sample>, bool, bool) {
    ctx.set_slave(Slave(d.dev.unit_id));
    let mut out = Vec::with_capacity(d.dev.points.len());
    let mut link_ok = true;
    let mut any_ok = false;
    for (i, read) in d.reads.iter().enumerate() {
        if i > 0 && !src.tcp.pause.is_zero() {
            tokio::time::sleep(src.tcp.pause).await;
        }
        let outcome = if link_ok {
            read_once(ctx, read, src.tcp.timeout).await
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
                    let p = &d.dev.points[pi];
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
                    out.push(Sample { channel: p.channel.clone(), ts, reading });
                }
            }
            ReadOutcome::Exception(code) => {
                any_ok = true; // the device answered: the link is fine
                let code = u8::from(code);
                for &pi in &read.points {
                    out.push(Sample {
                        channel: d.dev.points[pi].channel.clone(),
                        ts,
                        reading: Reading::Bad(BadReason::Exception { code }),
                    });
                }
            }
            ReadOutcome::Timeout | ReadOutcome::LinkError(_) => {
                let detail = match outcome {
                    ReadOutcome::LinkError(e) => e,
                    _ => format!(
                        "no answer from unit {} within {:?} ({} {}..+{})",
                        d.dev.unit_id,
                        src.tcp.timeout,
                        read.table.as_str(),
                        read.start,
                        read.count
                    ),
                };
                link_ok = false;
                for &pi in &read.points {
                    out.push(Sample {
                        channel: d.dev.points[pi].channel.clone(),
                        ts,
                        reading: Reading::Bad(BadReason::Comm { detail: detail.clone() }),
                    });
                }
            }
        }
    }
    (out, link_ok, any_ok)
}

async fn read_once(ctx: &mut Context, read: &Read, timeout: Duration) -> ReadOutcome {
    let fut = async {
        match read.table {
            Table::Coil => ctx
                .read_coils(read.start, read.count)
                .await
                .map(|r| r.map(bits_to_words)),
            Table::Discrete => ctx
                .read_discrete_inputs(read.start, read.count)
                .await
                .map(|r| r.map(bits_to_words)),
            Table::Holding => ctx.read_holding_registers(read.start, read.count).await,
            Table::Input => ctx.read_input_registers(read.start, read.count).await,
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => ReadOutcome::Timeout,
        Ok(Err(e)) => ReadOutcome::LinkError(e.to_string()),
        Ok(Ok(Err(code))) => ReadOutcome::Exception(code),
        Ok(Ok(Ok(words))) => ReadOutcome::Data(words),
    }
}

/// Bits are carried as one word each (0 or 1) so that decoding is uniform.
fn bits_to_words(bits: Vec<bool>) -> Vec<u16> {
    bits.into_iter().map(u16::from).collect()
}

fn bad_all(dev: &ResolvedDevice, detail: &str) -> Vec<Sample> {
    let ts = SystemTime::now();
    dev.points
        .iter()
        .map(|p| Sample {
            channel: p.channel.clone(),
            ts,
            reading: Reading::Bad(BadReason::Comm { detail: detail.to_owned() }),
        })
        .collect()
}
