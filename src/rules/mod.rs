//! The rule engine: the only writer of alarm state and of the channel snapshot.
//!
//! # Layout
//! - [`limits`]: detectors (LL/L/H/HH with deadband, rate of change, discrete) and the
//!   on/off-delay filter.
//! - [`expr`]: the expression language of composite and schedule rules.
//! - [`schedule`]: the site calendar (windows, weekends, holidays in the site's time zone).
//! - [`lifecycle`]: the ISA-18.2 lifecycle (acknowledge, latch and reset, shelve, suppress, out of
//!   service) as a pure state machine.
//! - [`engine`]: [`Engine`], pure (time is passed in): samples, ticks and commands in, ordered
//!   events out.
//! - [`groups`]: which channels share a device or source (consequential communication faults).
//! - [`journal`]: the durable, fsync'd journal of every transition, replayed on start.
//! - [`board`]: the snapshot and command handle the API uses.
//!
//! Invariants:
//! - a Bad or stale reading never clears a process alarm and never counts as normal; it raises
//!   the channel's `fault` alarm, a class of its own;
//! - a fault on one channel never delays another channel (evaluation is per sample, no I/O);
//! - every transition gets a sequence number, is written and fsync'd to the journal (off the
//!   async runtime) and only then published: to the snapshot, the outputs and the alert router;
//! - alarms never wait on InfluxDB: outputs take lines without blocking; alarm events go to the
//!   alert router through a bounded channel on which the engine waits (alarms are never
//!   dropped). Transitions of a shelved, suppressed or out-of-service alarm are journaled and
//!   written to the time series but not sent to the alert router (that is what those states
//!   are for); actions and site events always are.
//! - if the journal cannot be written, alarms are still published (never withheld), the error
//!   is logged at ERROR, counted (`hazgate_alarm_journal_errors_total`) and `/readyz` reports it.
//!
//! [`run`] is the task around the engine; [`open`] builds the engine with its journal, command
//! channel and API handle.

pub mod board;
pub mod engine;
pub mod expr;
pub mod groups;
pub mod journal;
pub mod lifecycle;
pub mod limits;
pub mod plan;
pub mod schedule;

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

pub use board::{AlarmsHandle, Board, CommandMsg, HistoryFilter, Token};
pub use engine::{Action, AlarmView, Command, CommandError, Engine, order};

use crate::config::Resolved;
use crate::config::alarms::sha256_hex;
use crate::model::{AlarmEvent, AlarmState, Sample, Transition};
use crate::receipt::{Receipt, SampleBatch};
use crate::state::SharedState;
use crate::telemetry::{Component, Metrics, labels};
use journal::{Journal, Record};

/// An engine restored from its journal, with its I/O side (commands, journal, board): what
/// [`open`] returns and [`run`] drives.
#[derive(Debug)]
pub struct Opened {
    engine: Engine,
    io: Io,
}

/// The engine's I/O side, attached by [`open`].
#[derive(Debug)]
struct Io {
    commands: mpsc::Receiver<CommandMsg>,
    reloads: Option<mpsc::Receiver<Reconfigure>>,
    journal: Option<Journal>,
    board: Arc<Board>,
}

impl Opened {
    /// The channel through which a configuration reload reaches the running engine (see
    /// [`Reconfigure`]); one per engine, at most one reload waits in it.
    pub fn reloader(&mut self) -> mpsc::Sender<Reconfigure> {
        let (tx, rx) = mpsc::channel(1);
        self.io.reloads = Some(rx);
        tx
    }
}

/// What the outputs and snapshots need to follow a reload, run by the engine task between two
/// steps (so no sample is evaluated against one table and recorded in the other).
pub type Retable = Box<dyn FnOnce(&mut Sinks) + Send>;

/// A configuration reload handed to the running engine: the engine built from the new plan
/// takes over the running one's state ([`Engine::take_over`]) between two steps; the `removed`
/// and `config_changed` events are journaled and published like any other, and then sent back
/// on `reply`.
pub struct Reconfigure {
    /// The engine built from the new configuration ([`Engine::new`]).
    pub engine: Engine,
    /// Who asked (an API token's name, or `SIGHUP`).
    pub by: String,
    /// What changed, for the `config_changed` event.
    pub summary: String,
    /// Applied first: the outputs' and the snapshot's channel tables.
    pub retable: Retable,
    /// The change's events, once journaled.
    pub reply: tokio::sync::oneshot::Sender<Vec<AlarmEvent>>,
}

impl std::fmt::Debug for Reconfigure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconfigure")
            .field("by", &self.by)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// Why the alarm engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The journal directory could not be read or written.
    #[error("alarms.journal_dir: {dir}: {source}")]
    Journal {
        /// Directory.
        dir: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The API tokens of `[[alarms.tokens]]` as digests: each token secret is read here, once,
/// with the configuration's other secrets; an unreadable one is reported at its path.
pub fn resolve_tokens(a: &crate::config::Alarms, p: &mut crate::check::Problems) -> Vec<Token> {
    let mut tokens = Vec::new();
    for (i, t) in a.tokens.iter().enumerate() {
        let digest = match (&t.sha256, &t.token) {
            (Some(h), _) => match sha256_hex(h) {
                Some(d) => d,
                None => {
                    p.err(
                        format!("alarms.tokens[{i}].sha256"),
                        "must be 64 hex digits",
                    );
                    continue;
                }
            },
            (None, Some(s)) => match s.resolve_at(&format!("alarms.tokens[{i}].token"), p) {
                Some(secret) => Sha256::digest(secret.expose().as_bytes()).into(),
                None => continue,
            },
            (None, None) => {
                p.err(format!("alarms.tokens[{i}]"), "no token");
                continue;
            }
        };
        tokens.push(Token {
            name: t.name.clone(),
            role: t.role,
            digest,
        });
    }
    tokens
}

/// Builds the engine with the API `tokens` (see [`resolve_tokens`]): replays the journal (when
/// `alarms.journal_dir` is set) and starts a new journal segment with a checkpoint; returns the
/// engine (with its I/O attached, for [`run`]) and the handle the API uses.
pub async fn open(
    cfg: &Resolved,
    tokens: Vec<Token>,
    now: Instant,
) -> Result<(Opened, AlarmsHandle), OpenError> {
    let a = &cfg.alarms;
    let mut engine = Engine::new(cfg, now);
    let mut history = VecDeque::new();
    let journal = match &a.journal_dir {
        Some(dir) => {
            // The engine built here is restored off the runtime (no copy of the
            // configuration, no second engine).
            let (dir2, keep, retention) = (dir.clone(), a.history_in_memory, a.retention);
            let (e, j, replayed) = tokio::task::spawn_blocking(move || {
                restore(engine, &dir2, keep, retention, SystemTime::now())
            })
            .await
            .map_err(|e| OpenError::Journal {
                dir: dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| OpenError::Journal {
                dir: dir.clone(),
                source,
            })?;
            engine = e;
            if replayed.damaged > 0 {
                error!(damaged = replayed.damaged, dir = %dir.display(), "alarm journal lines failed their checksum and were skipped");
            }
            let not_normal = engine.not_normal();
            info!(dir = %dir.display(), segments = replayed.segments, seq = replayed.seq, not_normal, mode = replayed.mode.mode.as_str(), "alarm journal replayed");
            history = replayed.history;
            Some(j)
        }
        None => {
            warn!(
                "alarms.journal_dir is not set: alarm state (latched, acknowledged, shelved) will not survive a restart"
            );
            None
        }
    };
    let board = Arc::new(Board::new(
        engine.views(),
        history,
        a.history_in_memory,
        engine.mode().clone(),
    ));
    let (tx, rx) = mpsc::channel(64);
    let io = Io {
        commands: rx,
        reloads: None,
        journal,
        board: board.clone(),
    };
    Ok((
        Opened { engine, io },
        AlarmsHandle {
            board,
            commands: tx,
            tokens: Arc::new(tokens),
            reads: cfg.api.reads,
        },
    ))
}

/// Builds the engine and restores it from the journal in `dir`, then starts a new journal
/// segment with a checkpoint. Blocking: call it off the async runtime.
pub fn recover(
    cfg: &Resolved,
    now: Instant,
    dir: &std::path::Path,
    wall: SystemTime,
) -> std::io::Result<(Engine, Journal, journal::Replayed)> {
    let a = &cfg.alarms;
    restore(
        Engine::new(cfg, now),
        dir,
        a.history_in_memory,
        a.retention,
        wall,
    )
}

/// [`recover`] for an engine already built: restores it from the journal in `dir` (keeping
/// `history_in_memory` events of history), then starts a new journal segment with a
/// checkpoint. Blocking.
fn restore(
    mut engine: Engine,
    dir: &std::path::Path,
    history_in_memory: usize,
    retention: Duration,
    wall: SystemTime,
) -> std::io::Result<(Engine, Journal, journal::Replayed)> {
    let replayed = Journal::replay(dir, history_in_memory)?;
    let gone = engine.restore(&replayed);
    if !gone.is_empty() {
        warn!(alarms = ?gone, "journaled alarms are no longer configured; their state is dropped");
    }
    let j = Journal::create(dir, &engine.checkpoint(), retention, wall)?;
    Ok((engine, j, replayed))
}

/// The journal records of a batch of events: each with its alarm's lifecycle after the batch
/// (and the site mode for site-mode events).
pub fn records(engine: &Engine, events: &[AlarmEvent]) -> Vec<Record> {
    events
        .iter()
        .map(|e| Record::Event {
            event: e.clone(),
            life: engine.life(&e.alarm).cloned(),
            mode: (e.transition == Transition::SiteMode).then(|| engine.mode().clone()),
        })
        .collect()
}

/// Where the engine sends its results.
#[derive(Debug)]
pub struct Sinks {
    /// Time-series outputs (never block; reduction and downsampling per output).
    pub outputs: crate::tsdb::Fanout,
    /// Alert router (the engine waits when it is full: alarms are never dropped).
    pub alerts: mpsc::Sender<AlarmEvent>,
}

async fn next_command(io: &mut Option<Io>) -> Option<CommandMsg> {
    match io {
        Some(io) => io.commands.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_reload(rx: &mut Option<mpsc::Receiver<Reconfigure>>) -> Option<Reconfigure> {
    match rx.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes a batch to the journal (off the runtime) before it is published. Never withholds the
/// batch: a failure is logged, counted and reported in `/readyz`.
async fn persist(
    io: &mut Io,
    engine: &Engine,
    events: &[AlarmEvent],
    state: &SharedState,
    metrics: &Metrics,
) {
    let Some(mut j) = io.journal.take() else {
        return;
    };
    let wall = SystemTime::now();
    let checkpoint = j.should_rotate(wall).then(|| engine.checkpoint());
    let records = records(engine, events);
    let res = tokio::task::spawn_blocking(move || {
        let r = if records.is_empty() {
            Ok(())
        } else {
            j.append(&records)
        };
        let rot = checkpoint.map(|cp| j.rotate(&cp, wall));
        (j, r, rot)
    })
    .await;
    match res {
        Ok((j, r, rot)) => {
            io.journal = Some(j);
            if let Err(e) = r {
                metrics.journal_errors.inc();
                state
                    .health
                    .fail(&Component::Journal, format!("cannot write: {e}"));
                error!(error = %e, events = events.len(), "alarm journal write failed; the events are published anyway");
            } else {
                state.health.ok(&Component::Journal);
            }
            if let Some(Err(e)) = rot {
                metrics.journal_errors.inc();
                error!(error = %e, "alarm journal rotation failed; still appending to the current segment");
            }
        }
        Err(e) => {
            metrics.journal_errors.inc();
            state.health.fail(
                &Component::Journal,
                "the journal writer panicked; alarm state is no longer persisted",
            );
            error!(error = %e, "alarm journal writer panicked; alarm state is no longer persisted");
        }
    }
}

/// Whether an event is announced to people (alert receivers): transitions of hidden alarms
/// (shelved, suppressed, out of service) are journaled and written, not announced.
///
/// An alarm removed by a configuration reload is announced only when it was not normal (people
/// must learn that an alarm they see is gone); the removal of a quiet alarm is journaled and
/// written, and the reload itself (`site:config`) is announced with what changed.
pub fn annunciated(e: &AlarmEvent) -> bool {
    let hidden = matches!(
        e.state,
        AlarmState::Shelved | AlarmState::Suppressed | AlarmState::OutOfService
    );
    if e.transition == Transition::Removed {
        return !hidden && e.state != AlarmState::Normal;
    }
    !(hidden
        && matches!(
            e.transition,
            Transition::Raised
                | Transition::Cleared
                | Transition::Fault
                | Transition::FaultCleared
                | Transition::Chattering
        ))
}

/// Runs the engine until the sample channel closes, then closes the outputs.
///
/// A batch's receipt (see `crate::receipt`) is handed to the outputs with its samples and
/// dropped by the engine at the end of the step: the engine never waits for it.
pub async fn run<B: Into<SampleBatch> + Send + 'static>(
    opened: Opened,
    mut rx: mpsc::Receiver<B>,
    mut sinks: Sinks,
    state: Arc<SharedState>,
    metrics: Arc<Metrics>,
) {
    let Opened { mut engine, mut io } = opened;
    let mut reloads = io.reloads.take();
    let mut io = Some(io);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut reply = None;
        let mut reloaded = None;
        let mut receipt = None;
        let (samples, mut events) = tokio::select! {
            batch = rx.recv() => match batch {
                Some(b) => {
                    let (mut b, r) = gather(b.into(), &mut rx);
                    receipt = r;
                    engine.screen(&mut b);
                    let now = tokio::time::Instant::now().into_std();
                    let ev = engine.on_batch(&b, now);
                    (b, ev)
                }
                None => break,
            },
            _ = tick.tick() => {
                let wall = SystemTime::now();
                // The heartbeat comes from the engine's own tick: a stalled engine stops it and
                // the status page shows communication lost.
                state.beat(wall);
                engine.set_sources_down(state.health.sources_down());
                let (samples, mut ev) = engine.tick(tokio::time::Instant::now().into_std(), wall);
                ev.extend(engine.gateway_health(&gateway_faults(&state), wall));
                (samples, ev)
            }
            Some(r) = next_reload(&mut reloads) => {
                let Reconfigure { engine: new, by, summary, retable, reply } = r;
                retable(&mut sinks);
                let old = std::mem::replace(&mut engine, new);
                let ev = engine.take_over(old, &by, &summary, SystemTime::now());
                if let Some(io) = io.as_ref() {
                    io.board.replace_views(engine.views());
                }
                // Every channel's active conditions, under the new plan (a channel whose
                // alarm was removed loses it from its tile).
                for c in state.channels() {
                    state.record_alarms(&c.id, engine.active(&c.id));
                }
                info!(by = %by, removed = ev.len().saturating_sub(1), "configuration reloaded: {summary}");
                reloaded = Some((reply, ev.clone()));
                (Vec::new(), ev)
            }
            Some(msg) = next_command(&mut io) => {
                match engine.command(&msg.cmd, tokio::time::Instant::now().into_std(), SystemTime::now()) {
                    Ok(ev) => {
                        reply = Some((msg.reply, ev.clone()));
                        (Vec::new(), ev)
                    }
                    Err(e) => {
                        let _ = msg.reply.send(Err(e));
                        continue;
                    }
                }
            }
        };
        order(&mut events);
        if let Some(io) = io.as_mut() {
            if !events.is_empty() {
                persist(io, &engine, &events, &state, &metrics).await;
            }
        }
        state.record_all(&samples, |c| engine.active(c));
        let mut touched = BTreeSet::new();
        for e in &events {
            touched.insert(e.alarm.clone());
            state.record_alarms(&e.channel, engine.active(&e.channel));
            metrics
                .alarm_events
                .get_or_create(&labels([("transition", e.transition.as_str())]))
                .inc();
            match e.transition {
                Transition::Flood => {
                    metrics.alarm_flood.set(1);
                    warn!(alarm = %e.alarm, seq = e.seq, "{}", e.message);
                }
                Transition::FloodEnded => {
                    metrics.alarm_flood.set(0);
                    info!(alarm = %e.alarm, seq = e.seq, "{}", e.message);
                }
                Transition::Chattering => {
                    metrics.alarm_chattering.inc();
                    warn!(alarm = %e.alarm, seq = e.seq, "{}", e.message);
                }
                Transition::Raised | Transition::Fault => {
                    warn!(alarm = %e.alarm, seq = e.seq, state = e.state.as_str(), "{}", e.message)
                }
                _ => {
                    info!(alarm = %e.alarm, seq = e.seq, state = e.state.as_str(), "{}", e.message)
                }
            }
        }
        if let Some(io) = io.as_ref() {
            if !events.is_empty() {
                let views = touched.iter().filter_map(|id| engine.view(id)).collect();
                io.board
                    .update(views, &events, engine.mode(), engine.flood());
                count_states(&io.board, &metrics);
            }
        }
        // Channel faults change only with an event (a fault raised or cleared): counting them
        // (every channel) is not done for the steps that change nothing.
        if !events.is_empty() {
            metrics
                .channels_bad
                .set(i64::try_from(engine.faults()).unwrap_or(i64::MAX));
        }
        sinks
            .outputs
            .publish_held(&samples, &events, receipt.as_ref());
        // The outputs hold their clones; the engine's own is done with this step.
        drop(receipt);
        if let Some((tx, ev)) = reply {
            // The command's events are journaled: answer the person now.
            let _ = tx.send(Ok(ev));
        }
        if let Some((tx, ev)) = reloaded {
            let _ = tx.send(ev);
        }
        for e in events {
            if !annunciated(&e) {
                continue;
            }
            if sinks.alerts.send(e).await.is_err() {
                error!("alert router is gone: alarm events cannot be delivered");
            }
        }
    }
    sinks.outputs.close();
    info!("rule engine stopped: all sources drained");
}

/// At most this many samples are taken into one engine step (see [`gather`]).
const STEP_SAMPLES: usize = 4096;

/// One engine step's samples: `first` and the batches already waiting behind it, in arrival
/// order, up to [`STEP_SAMPLES`] (a batch is never split); their receipts held as one.
///
/// Under load the sources' batches queue up while a step runs (one MQTT message is one batch);
/// taking them together makes the per-step costs (communication settle, journal, snapshot
/// board, output hand-over) count once per step rather than once per message, so the engine
/// keeps up and an alarm never waits behind a queue of single-message steps. Samples are
/// applied in order exactly as they would be one batch at a time; only the settling of
/// communication groups runs once after them.
fn gather<B: Into<SampleBatch>>(
    first: SampleBatch,
    rx: &mut mpsc::Receiver<B>,
) -> (Vec<Sample>, Option<Receipt>) {
    let SampleBatch {
        mut samples,
        receipt,
    } = first;
    let mut receipts: Vec<Receipt> = receipt.into_iter().collect();
    while samples.len() < STEP_SAMPLES {
        let Ok(b) = rx.try_recv() else {
            break;
        };
        let b: SampleBatch = b.into();
        samples.extend(b.samples);
        receipts.extend(b.receipt);
    }
    (samples, Receipt::all(receipts))
}

/// Failing gateway components that are fault alarms of their own, as `(component, reason)`:
/// the component's type says which ones are ([`crate::telemetry::Component::raises_fault`]).
fn gateway_faults(state: &SharedState) -> Vec<(String, String)> {
    state
        .health
        .faults()
        .into_iter()
        .map(|(c, reason)| (c.to_string(), reason))
        .collect()
}

/// Sets `hazgate_alarms{state,class}` from the snapshot (alarms that are not normal); a
/// combination that emptied is set to 0 rather than left at its last count.
fn count_states(board: &Board, metrics: &Metrics) {
    use std::collections::BTreeMap;
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    board.each_not_normal(|a| {
        *counts
            .entry((a.state.as_str().to_owned(), a.class.as_str().to_owned()))
            .or_default() += 1;
    });
    for state in crate::model::AlarmState::ALL {
        for class in ["process", "fault", "system"] {
            let n = counts
                .get(&(state.as_str().to_owned(), class.to_owned()))
                .copied()
                .unwrap_or(0);
            let l = labels([("state", state.as_str()), ("class", class)]);
            if n > 0 || metrics.alarms_by_state.get(&l).is_some() {
                metrics.alarms_by_state.get_or_create(&l).set(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Api, Gateway, Site};
    use crate::config::{LimitRule, ResolvedChannel};
    use crate::model::{AlarmClass, DeviceId, Priority};
    use crate::model::{BadReason, ChannelId, Reading, Sample};

    fn cfg(rule: LimitRule) -> Resolved {
        let channels = vec![ResolvedChannel {
            id: ChannelId::new("a.gd1.lel"),
            device: DeviceId::new("gd1"),
            area: "a".into(),
            kind: "combustible_gas".into(),
            unit: "%LEL".into(),
            label: String::new(),
            range: Some([0.0, 100.0]),
            max_age: Duration::from_secs(10),
            states: Default::default(),
            device_name: String::new(),
        }];
        let alarms = crate::config::Alarms::default();
        let mut p = crate::check::Problems::default();
        let plan = crate::config::plan::compile(
            &[rule],
            &Default::default(),
            &alarms,
            Default::default(),
            &channels,
            &mut p,
        );
        assert!(!p.has_errors(), "{:?}", p.0);
        Resolved {
            site: Site {
                id: "s".into(),
                name: String::new(),
                timezone: None,
                language: crate::i18n::Language::default(),
            },
            gateway: Gateway::default(),
            api: Api::default(),
            channels,
            sources: vec![],
            plan,
            receivers: vec![],
            outputs: vec![],
            alarms,
            mqtt_broker: None,
            notifications: Default::default(),
            areas: Default::default(),
        }
    }

    fn rule() -> LimitRule {
        LimitRule {
            channel: "a.gd1.lel".into(),
            opt_out: None,
            ll: None,
            l: None,
            h: Some(25.0),
            hh: Some(50.0),
            deadband: Some(2.0),
            on_delay: None,
            deadband_pct: None,
            off_delay: None,
            priority: crate::config::LimitPriorities::default(),
            latch: Some(false),
            suppress_in: None,
            message: None,
            response: None,
        }
    }

    fn good(v: f64) -> Sample {
        Sample {
            channel: ChannelId::new("a.gd1.lel"),
            ts: SystemTime::UNIX_EPOCH,
            reading: Reading::Good(v),
        }
    }

    fn bad() -> Sample {
        Sample {
            channel: ChannelId::new("a.gd1.lel"),
            ts: SystemTime::UNIX_EPOCH,
            reading: Reading::Bad(BadReason::OutOfRange { raw: 1000.0 }),
        }
    }

    fn summary(ev: &[AlarmEvent]) -> Vec<(String, Transition)> {
        ev.iter()
            .map(|e| (e.condition.clone(), e.transition))
            .collect()
    }

    #[tokio::test]
    async fn a_step_takes_the_waiting_batches_whole_in_order_with_their_receipts() {
        let (tx, mut rx) = mpsc::channel::<SampleBatch>(16);
        let board = crate::receipt::Board::new();
        let batch = |n: usize, v: f64, seq: u64| SampleBatch {
            samples: vec![good(v); n],
            receipt: Some(board.issue(seq)),
        };
        tx.send(batch(1, 2.0, 2)).await.expect("send");
        tx.send(batch(STEP_SAMPLES, 3.0, 3)).await.expect("send");
        tx.send(batch(1, 4.0, 4)).await.expect("send");
        let (samples, receipt) = gather(batch(1, 1.0, 1), &mut rx);
        // The first batch and the next two: the second fills the step, never split.
        assert_eq!(samples.len(), 2 + STEP_SAMPLES);
        let values: Vec<f64> = samples.iter().filter_map(|s| s.reading.value()).collect();
        assert_eq!(values[..3], [1.0, 2.0, 3.0]);
        let receipt = receipt.expect("three receipts held as one");
        for seq in 1..=3 {
            assert!(!board.take(seq), "receipt {seq} is held by the step");
        }
        drop(receipt);
        for seq in 1..=3 {
            assert!(board.take(seq), "receipt {seq} completes with the step");
        }
        let (samples, receipt) = gather(SampleBatch::default(), &mut rx);
        assert_eq!(
            samples.len(),
            1,
            "the fourth batch waited for the next step"
        );
        assert_eq!(receipt.and_then(|r| r.seq()), Some(4));
    }

    #[test]
    fn limits_deadband_and_faults_never_clear() {
        let t0 = Instant::now();
        let mut e = Engine::new(&cfg(rule()), t0);
        // (sample, expected transitions)
        let table: Vec<(Sample, Vec<(&str, Transition)>)> = vec![
            (good(10.0), vec![]),
            (good(25.0), vec![("H", Transition::Raised)]),
            (good(60.0), vec![("HH", Transition::Raised)]),
            // A broken loop: fault raised, limit alarms stay active.
            (bad(), vec![("fault", Transition::Fault)]),
            (bad(), vec![]),
            (good(49.0), vec![("fault", Transition::FaultCleared)]),
            (good(47.9), vec![("HH", Transition::Cleared)]),
            (good(23.5), vec![]), // inside the deadband
            (good(22.9), vec![("H", Transition::Cleared)]),
        ];
        for (i, (s, want)) in table.into_iter().enumerate() {
            let got = summary(&e.on_sample(&s, t0));
            let want: Vec<(String, Transition)> =
                want.into_iter().map(|(c, t)| (c.to_owned(), t)).collect();
            assert_eq!(got, want, "step {i}");
        }
    }

    #[test]
    fn gateway_components_raise_and_clear_system_faults_once() {
        let t0 = Instant::now();
        let mut e = Engine::new(&cfg(rule()), t0);
        let wall = SystemTime::now();
        let full = vec![(
            "output site-db spool".to_owned(),
            "spool full (2 GiB): oldest points dropped".to_owned(),
        )];
        let ev = e.gateway_health(&full, wall);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].alarm, "gateway:output site-db spool");
        assert_eq!(
            (ev[0].transition, ev[0].class, ev[0].priority),
            (Transition::Fault, AlarmClass::Fault, Priority::High)
        );
        assert!(ev[0].message.contains("oldest points dropped"));
        assert!(annunciated(&ev[0]), "reaches the alert router");
        // Still failing: nothing new. Recovered: cleared once.
        assert!(e.gateway_health(&full, wall).is_empty());
        let ev = e.gateway_health(&[], wall);
        assert_eq!(
            summary(&ev),
            vec![("output site-db spool".to_owned(), Transition::FaultCleared)]
        );
        assert!(e.gateway_health(&[], wall).is_empty());
        // Which failing components count: spools and the journal, not an output that is down.
        let state = SharedState::new(&cfg(rule()));
        let h = &state.health;
        h.fail(&Component::Spool("o".into()), "spool full (1 MiB)");
        h.fail(&Component::Output("o".into()), "connect: refused");
        h.fail(&Component::Journal, "cannot write: disk full");
        h.fail(&Component::Outbox, "cannot write to disk");
        h.fail(&Component::Receiver("sms".into()), "failing for 60 s");
        h.fail(&Component::Task("source bus".into()), "panicked");
        h.fail(&Component::Source("bus".into()), "not connected yet");
        let mut f = gateway_faults(&state);
        f.sort();
        let names: Vec<&str> = f.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "alarm journal",
                "alert outbox",
                "output o spool",
                "receiver sms",
                "task source bus"
            ]
        );
        // Sequence numbers continue with the process alarms'.
        let next = e.on_sample(&good(30.0), t0);
        assert!(next[0].seq > ev[0].seq);
    }

    #[test]
    fn fault_keeps_active_alarm() {
        let t0 = Instant::now();
        let mut e = Engine::new(&cfg(rule()), t0);
        e.on_sample(&good(30.0), t0);
        e.on_sample(&bad(), t0);
        assert_eq!(
            e.active(&ChannelId::new("a.gd1.lel")),
            vec!["H".to_owned(), "fault".to_owned()]
        );
    }

    #[test]
    fn on_delay_and_staleness() {
        let t0 = Instant::now();
        let mut r = rule();
        r.on_delay = Some(Duration::from_secs(5));
        let mut e = Engine::new(&cfg(r), t0);
        assert!(e.on_sample(&good(30.0), t0).is_empty());
        let (_, ev) = e.tick(t0 + Duration::from_secs(4), SystemTime::UNIX_EPOCH);
        assert!(ev.is_empty());
        let (_, ev) = e.tick(t0 + Duration::from_secs(5), SystemTime::UNIX_EPOCH);
        assert_eq!(summary(&ev), vec![("H".to_owned(), Transition::Raised)]);
        // Nothing for longer than max_age (10 s): stale fault, alarm kept.
        let (samples, ev) = e.tick(t0 + Duration::from_secs(16), SystemTime::UNIX_EPOCH);
        assert_eq!(samples.len(), 1);
        assert_eq!(summary(&ev), vec![("fault".to_owned(), Transition::Fault)]);
        assert!(
            e.active(&ChannelId::new("a.gd1.lel"))
                .contains(&"H".to_owned())
        );
    }

    /// Three data units on one connection, one channel each (so only the source group).
    fn link_cfg() -> Resolved {
        let mut t = String::from(
            "[site]\nid = \"s\"\n[[sources]]\nkind = \"modbus_tcp\"\nid = \"bus\"\naddress = \"127.0.0.1:1502\"\n",
        );
        for (u, d) in ["d1", "d2", "d3"].iter().enumerate() {
            t.push_str(&format!(
                "[[devices]]\nid = \"{d}\"\narea = \"a\"\nsource = \"bus\"\nunit_id = {}\n[[devices.registers]]\nname = \"v\"\naddress = 0\ntable = \"input\"\n[[channels]]\nid = \"a.{d}.v\"\nmax_age = \"10s\"\n",
                u + 1
            ));
        }
        let cfg = crate::config::parse(&t, std::path::Path::new("link.toml")).expect("parse");
        crate::config::validate(&cfg, std::path::Path::new("."))
            .expect("valid")
            .0
    }

    fn reading(ch: &str, v: f64) -> Sample {
        Sample {
            channel: ChannelId::new(ch),
            ts: SystemTime::UNIX_EPOCH,
            reading: Reading::Good(v),
        }
    }

    fn told(ev: &[AlarmEvent]) -> Vec<String> {
        ev.iter()
            .filter(|e| annunciated(e) && e.notice.consequence_of.is_none())
            .map(|e| format!("{} {}", e.alarm, e.transition.as_str()))
            .collect()
    }

    #[test]
    fn a_lost_connection_is_one_source_alarm_from_the_first_silent_channel_on() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut e = Engine::new(&link_cfg(), t0);
        // Readings at 0, 3 and 6 s; then the connection is lost.
        e.on_sample(&reading("a.d1.v", 1.0), s(0));
        e.on_sample(&reading("a.d2.v", 1.0), s(3));
        e.on_sample(&reading("a.d3.v", 1.0), s(6));
        e.set_sources_down(["bus".to_owned()]);
        // d1 goes stale first: the connection's alarm, not d1's own fault, is what people get.
        let (_, ev) = e.tick(s(11), SystemTime::UNIX_EPOCH);
        assert_eq!(told(&ev), ["source.bus:comm fault"], "{ev:#?}");
        // d2 and d3 follow as consequences: nothing more to tell.
        let (_, ev) = e.tick(s(14), SystemTime::UNIX_EPOCH);
        assert_eq!(told(&ev), Vec::<String>::new(), "{ev:#?}");
        let (_, ev) = e.tick(s(17), SystemTime::UNIX_EPOCH);
        assert_eq!(told(&ev), Vec::<String>::new(), "{ev:#?}");
        // Reconnected: the first message reveals nobody else's fault while the others catch up.
        e.set_sources_down([]);
        e.on_sample(&reading("a.d1.v", 2.0), s(20));
        let (_, ev) = e.tick(s(20), SystemTime::UNIX_EPOCH);
        assert_eq!(told(&ev), Vec::<String>::new(), "{ev:#?}");
        e.on_sample(&reading("a.d2.v", 2.0), s(21));
        let ev = e.on_sample(&reading("a.d3.v", 2.0), s(21));
        assert_eq!(told(&ev), ["source.bus:comm fault_cleared"], "{ev:#?}");
    }

    #[test]
    fn a_data_unit_still_silent_after_the_reconnect_is_its_own_fault() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut e = Engine::new(&link_cfg(), t0);
        for d in ["a.d1.v", "a.d2.v", "a.d3.v"] {
            e.on_sample(&reading(d, 1.0), s(0));
        }
        e.set_sources_down(["bus".to_owned()]);
        let (_, ev) = e.tick(s(11), SystemTime::UNIX_EPOCH);
        assert_eq!(told(&ev), ["source.bus:comm fault"], "{ev:#?}");
        e.set_sources_down([]);
        e.tick(s(12), SystemTime::UNIX_EPOCH);
        e.on_sample(&reading("a.d1.v", 2.0), s(12));
        e.on_sample(&reading("a.d2.v", 2.0), s(12));
        // d3 never reports again: after its max_age of grace it is its own fault.
        let (_, ev) = e.tick(s(22), SystemTime::UNIX_EPOCH);
        let t = told(&ev);
        assert!(
            t.contains(&"source.bus:comm fault_cleared".to_owned()),
            "{t:?}"
        );
        // Revealed (`unsuppressed`, naming its former cause), which is notified.
        let d3 = ev
            .iter()
            .find(|e| e.alarm == "a.d3.v:fault")
            .expect("d3's fault revealed");
        assert_eq!(
            (d3.transition, d3.state, annunciated(d3)),
            (
                Transition::Unsuppressed,
                AlarmState::ActiveUnacknowledged,
                true
            )
        );
    }

    /// The texts built without an engine are the engine's views' texts, alarm for alarm, for
    /// every shipped configuration (fault, limit, composite and communication alarms; areas
    /// with display names; rules with messages and responses).
    #[test]
    fn alarm_texts_are_the_engine_views_texts() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = ["config", "config/sites"]
            .iter()
            .flat_map(|d| std::fs::read_dir(root.join(d)).expect("config dir"))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        assert!(files.len() >= 4, "{files:?}");
        let (mut comm, mut message, mut response, mut named) = (0, 0, 0, 0);
        for f in &files {
            let (cfg, _) = crate::config::load(f).unwrap_or_else(|e| panic!("{f:?}: {e:?}"));
            let views: Vec<engine::AlarmTexts> = Engine::new(&cfg, Instant::now())
                .views()
                .into_iter()
                .map(|v| engine::AlarmTexts {
                    id: v.id,
                    info: crate::model::AlarmInfo {
                        label: v.label,
                        area: v.area,
                        area_name: v.area_name,
                        unit: v.unit,
                        message: v.message,
                        response: v.response,
                    },
                })
                .collect();
            let texts = engine::alarm_texts(&cfg);
            assert_eq!(texts, views, "{f:?}");
            comm += texts.iter().filter(|t| t.id.ends_with(":comm")).count();
            message += texts.iter().filter(|t| t.info.message.is_some()).count();
            response += texts.iter().filter(|t| t.info.response.is_some()).count();
            named += texts
                .iter()
                .filter(|t| t.info.area_name != t.info.area)
                .count();
        }
        assert!(
            comm > 0 && message > 0 && response > 0 && named > 0,
            "{comm} {message} {response} {named}"
        );
    }
}
