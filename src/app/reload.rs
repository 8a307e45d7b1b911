//! Configuration reload (`SIGHUP`, `systemctl reload hazgate`, `POST /api/v1/config/reload`).
//!
//! The coordinator reads and checks the configuration file again; a configuration with any
//! error, an unreadable secret, or a change to a setting that needs a restart is refused with
//! every problem listed, and the running one goes on untouched. A valid one is applied in
//! this order:
//! 1. the alarm engine built from the new plan is handed to the running engine task, which
//!    between two steps replaces the alert delivery's site tables, the outputs' and the
//!    snapshot's channel tables, and takes over the running engine's state
//!    ([`crate::rules::Engine::take_over`]); the `removed` and `config_changed` events are
//!    journaled and published like any other;
//! 2. sources that are gone or whose settings changed are stopped, then new and changed ones
//!    are started. A source whose settings are the same keeps running untouched: the same TCP
//!    connection, the same MQTT session.
//!
//! Hot: channels, sources, devices and device sets, rules and rule defaults, rate, discrete,
//! composite and stuck rules, the schedule, flood, chattering and shelving settings, area
//! names. Needs a restart: `[site]`, `[gateway]`, `[api]`, outputs, receivers, notifications
//! and routes, the embedded broker, the alarm journal's directory, retention and in-memory
//! history, and API tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::alerts::{self, SiteTables};
use crate::check::{Problems, Severity};
use crate::config::{self, LoadError, Resolved, ResolvedSource};
use crate::control::{Changes, ReloadProblem, ReloadReport};
use crate::model::SourceId;
use crate::receipt::SampleBatch;
use crate::rules::{Engine, Reconfigure, Retable, Sinks};
use crate::sources::{self, Ready};
use crate::state::SharedState;
use crate::telemetry::{Component, Metrics};

/// How long the engine may take to accept and to apply a new configuration.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopped source may take to end (it only has to close its connection).
const SOURCE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running source and the token that stops it alone.
#[derive(Debug)]
pub(super) struct SourceTask {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

impl SourceTask {
    /// Waits for the task to end (after its token or the parent's fired).
    pub(super) async fn join(self) {
        let _ = self.handle.await;
    }
}

/// Starts supervised source tasks, all children of one cancellation token.
#[derive(Debug)]
pub(super) struct Spawner {
    pub(super) tx: mpsc::Sender<SampleBatch>,
    pub(super) state: Arc<SharedState>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) parent: CancellationToken,
}

impl Spawner {
    /// Starts `src` ("not connected yet" until it connects).
    pub(super) fn spawn(&self, src: Ready) -> SourceTask {
        let name = format!("source {}", src.id());
        self.state.health.fail(
            &Component::Source(src.id().to_string()),
            "not connected yet",
        );
        let cancel = self.parent.child_token();
        let (tx, st, m, c) = (
            self.tx.clone(),
            self.state.clone(),
            self.metrics.clone(),
            cancel.clone(),
        );
        let handle = super::supervise(
            name,
            self.metrics.clone(),
            self.state.clone(),
            cancel.clone(),
            move || {
                src.clone()
                    .run(tx.clone(), st.clone(), m.clone(), c.clone())
            },
        );
        SourceTask { cancel, handle }
    }
}

/// What the coordinator keeps to apply reloads.
#[derive(Debug)]
pub(super) struct Reloader {
    /// The configuration file (`None`: started from an in-memory configuration).
    pub(super) path: Option<PathBuf>,
    /// The configuration running now.
    pub(super) current: Arc<Resolved>,
    pub(super) engine: mpsc::Sender<Reconfigure>,
    pub(super) tables: SiteTables,
    pub(super) spawner: Spawner,
    pub(super) sources: BTreeMap<SourceId, SourceTask>,
}

fn refused(mut r: ReloadReport, problems: Vec<ReloadProblem>) -> ReloadReport {
    r.applied = false;
    r.summary = format!(
        "configuration refused ({} problem(s)); the running configuration is unchanged / 配置未通过检查（{} 个问题），继续使用当前配置",
        problems.len(),
        problems.len()
    );
    r.problems = problems;
    warn!(by = %r.by, problems = ?r.problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>(), "configuration reload refused");
    r
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ReloadProblem {
    ReloadProblem {
        path: path.into(),
        message: message.into(),
    }
}

fn dbg<T: Debug>(v: &T) -> String {
    format!("{v:?}")
}

/// A source's settings, for telling a changed source from an unchanged one (its position in
/// `sources[]` does not count: moving a block in the file restarts nothing).
fn source_key(s: &ResolvedSource) -> String {
    match s {
        ResolvedSource::Modbus(m) => dbg(m),
        ResolvedSource::Mqtt(m) => {
            let mut m = (**m).clone();
            m.index = 0;
            dbg(&m)
        }
    }
}

/// The settings that only a restart applies, with what changed.
fn restart_needed(old: &Resolved, new: &Resolved) -> Vec<ReloadProblem> {
    let pairs: [(&str, String, String); 11] = [
        ("site", dbg(&old.site), dbg(&new.site)),
        ("gateway", dbg(&old.gateway), dbg(&new.gateway)),
        ("api", dbg(&old.api), dbg(&new.api)),
        ("outputs", dbg(&old.outputs), dbg(&new.outputs)),
        ("receivers", dbg(&old.receivers), dbg(&new.receivers)),
        (
            "notifications",
            dbg(&old.notifications),
            dbg(&new.notifications),
        ),
        ("mqtt_broker", dbg(&old.mqtt_broker), dbg(&new.mqtt_broker)),
        (
            "alarms.journal_dir",
            dbg(&old.alarms.journal_dir),
            dbg(&new.alarms.journal_dir),
        ),
        (
            "alarms.retention",
            dbg(&old.alarms.retention),
            dbg(&new.alarms.retention),
        ),
        (
            "alarms.history_in_memory",
            dbg(&old.alarms.history_in_memory),
            dbg(&new.alarms.history_in_memory),
        ),
        (
            "alarms.tokens",
            dbg(&old.alarms.tokens),
            dbg(&new.alarms.tokens),
        ),
    ];
    pairs
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(path, _, _)| {
            problem(
                path,
                "changed, and this setting only takes effect after a restart (systemctl restart hazgate); reload the other changes without it / 此项修改需重启网关才能生效",
            )
        })
        .collect()
}

/// Ids added, removed and changed between two keyed lists.
fn diff(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    let (mut added, mut removed, mut changed, mut same) = (vec![], vec![], vec![], vec![]);
    for (id, v) in new {
        match old.get(id) {
            None => added.push(id.clone()),
            Some(o) if o != v => changed.push(id.clone()),
            Some(_) => same.push(id.clone()),
        }
    }
    for id in old.keys() {
        if !new.contains_key(id) {
            removed.push(id.clone());
        }
    }
    (added, removed, changed, same)
}

/// What changed between two configurations, by id.
pub(crate) fn changes(old: &Resolved, new: &Resolved) -> Changes {
    let keyed_sources = |c: &Resolved| -> BTreeMap<String, String> {
        c.sources
            .iter()
            .map(|s| (s.id().to_string(), source_key(s)))
            .collect()
    };
    let (sources_added, sources_removed, sources_restarted, sources_kept) =
        diff(&keyed_sources(old), &keyed_sources(new));
    let keyed_channels = |c: &Resolved| -> BTreeMap<String, String> {
        c.channels
            .iter()
            .map(|ch| (ch.id.to_string(), dbg(ch)))
            .collect()
    };
    let (channels_added, channels_removed, channels_changed, _) =
        diff(&keyed_channels(old), &keyed_channels(new));
    // Every alarm the engine has (configured ones, and the communication alarms of devices and
    // sources), with the configured ones' settings.
    let keyed_alarms = |c: &Resolved| -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = crate::rules::engine::alarm_texts(c)
            .into_iter()
            .map(|v| (v.id.to_string(), String::new()))
            .collect();
        for a in &c.plan.alarms {
            m.insert(a.id.clone(), dbg(a));
        }
        m
    };
    let (alarms_added, alarms_removed, alarms_changed, _) =
        diff(&keyed_alarms(old), &keyed_alarms(new));
    Changes {
        sources_added,
        sources_removed,
        sources_restarted,
        sources_kept,
        channels_added,
        channels_removed,
        channels_changed,
        alarms_added,
        alarms_removed,
        alarms_changed,
    }
}

fn load_problems(e: LoadError) -> Vec<ReloadProblem> {
    match e {
        LoadError::Io { path, source } => vec![problem(
            path.display().to_string(),
            format!("cannot read: {source}"),
        )],
        LoadError::Parse { path, message } => {
            vec![problem(path.display().to_string(), message)]
        }
        LoadError::Invalid { problems, .. } => problems
            .into_iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| problem(p.path, p.message))
            .collect(),
    }
}

impl Reloader {
    /// Checks the configuration file and applies it, or refuses it (see the module docs).
    pub(super) async fn reload(&mut self, by: &str) -> ReloadReport {
        let mut report = ReloadReport {
            by: by.to_owned(),
            file: self
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            ..ReloadReport::default()
        };
        let Some(path) = self.path.clone() else {
            return refused(
                report,
                vec![problem(
                    "",
                    "the gateway was started without a configuration file, so there is nothing to reload",
                )],
            );
        };
        let loaded = tokio::task::spawn_blocking(move || config::load(&path)).await;
        let (new, warnings) = match loaded {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return refused(report, load_problems(e)),
            Err(e) => {
                return refused(
                    report,
                    vec![problem(
                        "",
                        format!("reading the configuration failed: {e}"),
                    )],
                );
            }
        };
        report.warnings = warnings
            .into_iter()
            .map(|p| problem(p.path, p.message))
            .collect();
        let needs = restart_needed(&self.current, &new);
        if !needs.is_empty() {
            return refused(report, needs);
        }
        // Secrets and files of the sources, read before anything changes.
        let mut unreadable = Problems::default();
        let ready = sources::prepare(&new, &mut unreadable);
        if unreadable.has_errors() {
            return refused(
                report,
                unreadable
                    .0
                    .into_iter()
                    .map(|p| problem(p.path, p.message))
                    .collect(),
            );
        }
        let ch = changes(&self.current, &new);
        let (en, zh) = ch.parts();
        let summary =
            format!("configuration reloaded by {by}: {en} / 配置已由 {by} 重新加载：{zh}");
        report.changes = ch.clone();

        // 1. The engine (and, inside its task, every table that follows the channels).
        let old = self.current.clone();
        let new = Arc::new(new);
        let staged = {
            let (o, n) = (alerts::Site::from(&*old), alerts::Site::from(&*new));
            self.tables.stage(&o, &n)
        };
        let (state, cfg) = (self.spawner.state.clone(), new.clone());
        let retable: Retable = Box::new(move |sinks: &mut Sinks| {
            staged.apply();
            sinks.outputs.reconfigure(&cfg);
            state.retable(&cfg);
        });
        let (reply, answer) = oneshot::channel();
        let handed = tokio::time::timeout(
            ENGINE_TIMEOUT,
            self.engine.send(Reconfigure {
                engine: Engine::new(&new, std::time::Instant::now()),
                by: by.to_owned(),
                summary: summary.clone(),
                retable,
                reply,
            }),
        )
        .await;
        if !matches!(handed, Ok(Ok(()))) {
            return refused(
                report,
                vec![problem(
                    "",
                    format!(
                        "the alarm engine did not take the new configuration within {ENGINE_TIMEOUT:?} (stalled or stopping); nothing was changed"
                    ),
                )],
            );
        }
        // From here on the engine applies it: the sources follow, whatever happens.
        self.current = new.clone();
        let events = match tokio::time::timeout(ENGINE_TIMEOUT, answer).await {
            Ok(Ok(ev)) => ev.len(),
            _ => {
                warn!("the alarm engine has not confirmed the reload yet; the sources follow");
                0
            }
        };

        // 2. Sources.
        for id in ch.sources_removed.iter().chain(&ch.sources_restarted) {
            if let Some(t) = self.sources.remove(&SourceId::new(id)) {
                t.cancel.cancel();
                if tokio::time::timeout(SOURCE_STOP_TIMEOUT, t.handle)
                    .await
                    .is_err()
                {
                    warn!(source = %id, "a stopped source did not end in time; it is left to end on its own");
                }
            }
        }
        let health = &self.spawner.state.health;
        for id in &ch.sources_removed {
            health.forget(&Component::Source(id.clone()));
            health.forget(&Component::Task(format!("source {id}")));
        }
        let start: BTreeSet<&String> = ch
            .sources_added
            .iter()
            .chain(&ch.sources_restarted)
            .collect();
        for src in ready {
            if start.contains(&src.id().to_string()) {
                let id = src.id().clone();
                let task = self.spawner.spawn(src);
                self.sources.insert(id, task);
            }
        }
        report.applied = true;
        report.summary = if ch.is_empty() {
            "configuration reloaded: no change / 配置已重新加载：无变化".into()
        } else {
            format!("configuration reloaded: {}", ch.summary())
        };
        info!(by = %by, events, kept = ch.sources_kept.len(), "{}", report.summary);
        report
    }

    /// At shutdown: every source task (their parent token has fired), and the sample sender
    /// dropped so the engine's input closes once they end.
    pub(super) fn into_sources(self) -> Vec<SourceTask> {
        drop(self.spawner);
        self.sources.into_values().collect()
    }
}
