//! Alert delivery: routing, escalation (call and respond), receivers and the durable outbox.
//!
//! ```text
//! rule engine ──(bounded mpsc, engine waits)──▶ dispatcher ──▶ outbox (disk, fsync) ──▶ one worker per receiver
//!                                                  │ routes, groups,          ▲
//!                                                  │ reminders, tiers          └── regulator report timers
//!                                                  └── acks/resets ──▶ ledger
//! ```
//!
//! - [`dispatch`]: routes events, groups low-priority ones, re-notifies and escalates
//!   unanswered alarms; acknowledgements stop it.
//! - [`outbox`]: every notification on disk before its first attempt; the delivery ledger.
//! - [`deliver`]: webhook, WeCom, DingTalk, Feishu, MQTT; [`regulator`]: regulator feeds.
//! - [`config`]: the `[notifications]` section and the receiver kinds.
//!
//! Delivery is at-least-once: every notification has an idempotency key (header
//! `Idempotency-Key` and `idempotency_key` in the body) that stays the same across retries and
//! restarts.

pub mod config;
mod context;
pub mod deliver;
pub mod dispatch;
pub mod outbox;
pub mod receivers;
pub mod regulator;
mod site;
mod transport;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::model::AlarmEvent;
use crate::state::SharedState;
use crate::telemetry::Metrics;
use receivers::Ready;

pub use deliver::Worker;
pub use dispatch::Dispatcher;
pub use outbox::Outbox;
pub use site::Site;

/// Why alert delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Secrets could not be read: every unreadable one with the path of its field (never
    /// the secret).
    #[error("{}", join_problems(.0))]
    Secrets(Vec<crate::check::Problem>),
    /// A receiver could not be built.
    #[error("{path}: {message}")]
    Receiver {
        /// Config path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The outbox could not be opened.
    #[error("notifications.outbox.dir: cannot open the outbox: {0}")]
    Outbox(#[from] std::io::Error),
}

/// Everything prepared before tasks are spawned (secrets read, outbox replayed).
#[derive(Debug)]
pub struct Prepared {
    /// The outbox (also read by the API).
    pub outbox: Arc<Outbox>,
    dispatcher: Dispatcher,
    workers: Vec<Worker>,
    reports: Vec<(config::RegulatorReceiver, std::time::Duration)>,
    site: String,
    tables: SiteTables,
}

impl Prepared {
    /// The tables a configuration reload replaces.
    pub fn tables(&self) -> SiteTables {
        self.tables.clone()
    }
}

/// The site tables alert delivery reads for every event (channel areas for routes by area;
/// labels, area names, units, messages and responses for texts). A configuration reload
/// replaces them before the new alarm plan runs, so an alarm added by the reload is routed by
/// its area and described like every other. Routes and receivers themselves need a restart.
#[derive(Clone, Debug)]
pub struct SiteTables {
    areas: context::Swap<std::collections::HashMap<crate::model::ChannelId, Arc<str>>>,
    channels:
        context::Swap<std::collections::HashMap<crate::model::ChannelId, context::ChannelInfo>>,
    alarms: context::Swap<context::AlarmTable>,
}

impl SiteTables {
    /// The tables of `new`, ready to replace these ([`StagedTables::apply`]). Entries only
    /// `old` has are kept for this generation, so the last events of a removed alarm (its
    /// `removed` event, notifications still queued) are routed and described as before.
    pub fn stage(&self, old: &Site<'_>, new: &Site<'_>) -> StagedTables {
        fn merge<K: std::hash::Hash + Eq, V>(
            mut old: std::collections::HashMap<K, V>,
            new: std::collections::HashMap<K, V>,
        ) -> std::collections::HashMap<K, V> {
            old.extend(new);
            old
        }
        StagedTables {
            to: self.clone(),
            areas: merge(dispatch::area_table(old), dispatch::area_table(new)),
            channels: merge(context::channel_table(old), context::channel_table(new)),
            alarms: context::AlarmTable::merged(
                context::alarm_table(old),
                context::alarm_table(new),
            ),
        }
    }
}

/// New site tables, built off the engine task, swapped in by [`StagedTables::apply`].
#[derive(Debug)]
pub struct StagedTables {
    to: SiteTables,
    areas: std::collections::HashMap<crate::model::ChannelId, Arc<str>>,
    channels: std::collections::HashMap<crate::model::ChannelId, context::ChannelInfo>,
    alarms: context::AlarmTable,
}

impl StagedTables {
    /// Replaces the tables for every task of alert delivery.
    pub fn apply(self) {
        self.to.areas.store(self.areas);
        self.to.channels.store(self.channels);
        self.to.alarms.store(self.alarms);
    }
}

fn join_problems(p: &[crate::check::Problem]) -> String {
    p.iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads every receiver's secrets in one pass (see [`receivers::resolve`]): all unreadable
/// ones are reported together, each with its path.
pub fn resolve_secrets(receivers: &[receivers::Receiver]) -> Result<Vec<Ready>, StartError> {
    let mut p = crate::check::Problems::default();
    let ready = receivers::resolve(receivers, &mut p);
    if p.has_errors() {
        return Err(StartError::Secrets(p.0));
    }
    Ok(ready)
}

/// Reads secrets, builds receivers, opens the outbox ([`resolve_secrets`] then
/// [`prepare_resolved`]).
pub fn prepare<'a>(
    site: impl Into<Site<'a>>,
    metrics: Arc<Metrics>,
) -> Result<Prepared, StartError> {
    let site = site.into();
    let ready = resolve_secrets(site.receivers)?;
    prepare_resolved(&site, ready, metrics)
}

/// Builds receivers from their resolved form (`ready`, in the order of `site.receivers`) and
/// opens the outbox.
pub fn prepare_resolved(
    site: &Site<'_>,
    ready: Vec<Ready>,
    metrics: Arc<Metrics>,
) -> Result<Prepared, StartError> {
    let ctx = deliver::Context::new(site);
    let mut workers = Vec::new();
    let mut reports = Vec::new();
    for (i, r) in ready.into_iter().enumerate() {
        if let Ready::Regulator(g, _) = &r {
            if let Some(every) = g.report_interval {
                reports.push(((**g).clone(), every));
            }
        }
        let w = Worker::new(r, ctx.clone()).map_err(|message| StartError::Receiver {
            path: format!("receivers[{i}]"),
            message,
        })?;
        workers.push(w);
    }
    let caps = site
        .receivers
        .iter()
        .map(|r| (r.id().to_owned(), r.delivery().queue_capacity))
        .collect();
    let (outbox, opened) = Outbox::open(&site.notifications.outbox, caps, metrics.clone())?;
    if opened.pending + opened.finished > 0 {
        info!(
            pending = opened.pending,
            finished = opened.finished,
            corrupt = opened.corrupt,
            "outbox replayed"
        );
    }
    let dispatcher = Dispatcher::new(site, metrics);
    let tables = SiteTables {
        areas: dispatcher.areas(),
        channels: ctx.channels.clone(),
        alarms: ctx.alarms.clone(),
    };
    Ok(Prepared {
        outbox: Arc::new(outbox),
        dispatcher,
        workers,
        reports,
        site: site.identity.id.clone(),
        tables,
    })
}

/// The spawned tasks: the dispatcher and the receivers' workers (and report timers).
#[derive(Debug)]
pub struct Tasks {
    /// Ends when the engine's channel closes.
    pub dispatcher: JoinHandle<()>,
    /// One per receiver (`(receiver id, handle)`); they end once the dispatcher has ended and
    /// nothing is due, or at the drain deadline.
    pub workers: Vec<(String, JoinHandle<()>)>,
}

/// Spawns the dispatcher, the workers and the regulator report timers. `history` is the alarm
/// journal's replayed history (oldest first), for recovery after a restart.
pub fn spawn(
    p: Prepared,
    rx: mpsc::Receiver<AlarmEvent>,
    state: Arc<SharedState>,
    history: Vec<AlarmEvent>,
    deadline: CancellationToken,
) -> Tasks {
    let closed = CancellationToken::new();
    for (g, every) in p.reports {
        tokio::spawn(regulator::report_loop(
            g,
            every,
            p.site.clone(),
            state.clone(),
            p.outbox.clone(),
            closed.clone(),
        ));
    }
    let workers = p
        .workers
        .into_iter()
        .map(|w| {
            let id = w.id().to_owned();
            let h = tokio::spawn(w.run(
                p.outbox.clone(),
                state.clone(),
                closed.clone(),
                deadline.clone(),
            ));
            (id, h)
        })
        .collect();
    let ob = p.outbox.clone();
    let d = p.dispatcher;
    let dispatcher = tokio::spawn(async move {
        dispatch::run(d, rx, ob, history).await;
        closed.cancel();
    });
    Tasks {
        dispatcher,
        workers,
    }
}
