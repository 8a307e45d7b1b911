//! The one place that wires the pipeline and supervises its tasks.
//!
//! ```text
//! sources ──(bounded mpsc, sources wait when full)──▶ rule engine ──▶ output queues (drop oldest) ──▶ writers ──▶ InfluxDB
//!                                                          │
//!                                                          └──(bounded mpsc, engine waits)──▶ alert router ──▶ receiver queues ──▶ receivers
//! API ◀── snapshots (SharedState, Metrics)
//! ```
//!
//! Shutdown order (SIGINT/SIGTERM or [`Running::stop`]): sources stop first; the engine ends when
//! its input closes and closes the output queues; the router ends when the engine's sender is
//! gone; writers and receivers drain until empty or until the grace period ends (what is left is
//! logged and counted); the API closes last.
//!
//! Supervision: a source task that panics is logged, counted and restarted with backoff; from the
//! panic until it has run [`HEALTHY_AFTER`] without another one it is a gateway fault (component
//! `task {name}`: `/readyz` names it and the alarm `gateway:task {name}` is raised), and only then
//! does its restart backoff start again from 1 s. The engine, router, writers and receivers are not restartable without losing their queue, so a
//! panic there stops the gateway cleanly with [`RunError::TaskDied`] (exit status 4) — never a
//! silently missing task.

mod reload;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::alerts;
use crate::api::{self, ApiState};
use crate::check::{Problem, Problems};
use crate::config::{Output, Resolved};
use crate::control::{RELOAD_QUEUE, ReloadAsk, ReloadReport};
use crate::rules::{self, Sinks};
use crate::sources;
use crate::state::SharedState;
use crate::telemetry::{Component, Metrics, labels};
use crate::tsdb::writer::{OutputQueue, Writer};

/// Why the gateway could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Secrets or files named in the config could not be read: every one, with its path.
    #[error("{}", .0.iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>().join("; "))]
    Secrets(Vec<Problem>),
    /// The API address could not be bound.
    #[error("api.listen: cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// An HTTP client could not be built.
    #[error("cannot build HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The alarm engine could not start (journal directory).
    #[error("{0}")]
    Alarms(#[from] rules::OpenError),
    /// The embedded MQTT broker did not start.
    #[error(transparent)]
    Broker(#[from] crate::sources::mqtt::broker::BrokerError),
    /// Alert delivery could not start (secret, receiver, outbox).
    #[error(transparent)]
    Alerts(#[from] alerts::StartError),
    /// A task that cannot be restarted died.
    #[error("task `{0}` died; the gateway stopped")]
    TaskDied(String),
}

/// A started gateway.
#[derive(Debug)]
pub struct Running {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Snapshots, for tests and embedding.
    pub state: Arc<SharedState>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The alarm engine's board and command channel.
    pub alarms: rules::AlarmsHandle,
    /// The embedded MQTT broker, when enabled (it runs until the process exits).
    pub mqtt_broker: Option<sources::mqtt::broker::BrokerHandle>,
    reload: mpsc::Sender<ReloadAsk>,
    stop: CancellationToken,
    fatal: CancellationToken,
    done: JoinHandle<Result<(), RunError>>,
}

impl Running {
    /// Asks the gateway to drain and stop, and waits for it.
    pub async fn stop(self) -> Result<(), RunError> {
        self.stop.cancel();
        self.done
            .await
            .unwrap_or_else(|_| Err(RunError::TaskDied("coordinator".into())))
    }

    /// Reloads the configuration file (see [`crate::control`]) and waits for the answer; `by` is
    /// recorded in the journal as who asked.
    pub async fn reload(&self, by: &str) -> ReloadReport {
        crate::control::ask(&self.reload, by).await
    }

    /// Where reload asks go (for a signal handler).
    pub fn reloader(&self) -> mpsc::Sender<ReloadAsk> {
        self.reload.clone()
    }

    /// Runs until `shutdown` completes (then drains) or a critical task dies.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        tokio::select! {
            () = shutdown => info!("shutdown requested"),
            () = self.fatal.cancelled() => {}
        }
        self.stop().await
    }
}

/// Starts every task of the pipeline from an in-memory configuration (a reload is refused:
/// there is no file to read again).
pub async fn start(cfg: Resolved) -> Result<Running, RunError> {
    start_with(cfg, None).await
}

/// Starts every task of the pipeline; `path` is the configuration file that `cfg` was loaded
/// from, read again on every reload.
pub async fn start_with(cfg: Resolved, path: Option<PathBuf>) -> Result<Running, RunError> {
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(SharedState::new(&cfg));

    // Every secret and file of the configuration is read first, before anything is opened or
    // spawned, and every one that cannot be read is reported together with its path.
    let mut unreadable = Problems::default();
    let mut output_secrets = Vec::new();
    for (i, o) in cfg.outputs.iter().enumerate() {
        let (secret, path) = match o {
            Output::InfluxdbV1(v) => (v.password.as_ref(), format!("outputs[{i}].password")),
            Output::InfluxdbV2(v) => (v.token.as_ref(), format!("outputs[{i}].token")),
        };
        output_secrets.push(secret.and_then(|s| s.resolve_at(&path, &mut unreadable)));
    }
    let ready_sources = sources::prepare(&cfg, &mut unreadable);
    let ready_receivers = alerts::receivers::resolve(&cfg.receivers, &mut unreadable);
    let api_tokens = rules::resolve_tokens(&cfg.alarms, &mut unreadable);
    let broker_login = cfg
        .mqtt_broker
        .as_ref()
        .and_then(|b| sources::mqtt::broker::resolve_login(b, &mut unreadable));
    if unreadable.has_errors() {
        return Err(RunError::Secrets(unreadable.0));
    }

    let mut writers = Vec::new();
    let mut queues = Vec::new();
    for (o, secret) in cfg.outputs.iter().zip(output_secrets) {
        let q = Arc::new(OutputQueue::new(
            o.id(),
            o.batching().queue_capacity,
            metrics.clone(),
        ));
        writers.push(Writer::new(
            o.clone(),
            secret,
            q.clone(),
            state.clone(),
            metrics.clone(),
        )?);
        queues.push(q);
    }
    // Alert delivery: receivers built from their resolved secrets, the outbox replay.
    let alerts_prepared =
        alerts::prepare_resolved(&(&cfg).into(), ready_receivers, metrics.clone())?;
    alerts_prepared.outbox.report_health(state.clone());
    let outbox = alerts_prepared.outbox.clone();
    let site_tables = alerts_prepared.tables();

    // The alarm engine: journal replay (before anything is spawned).
    let (mut engine, alarms) =
        rules::open(&cfg, api_tokens, tokio::time::Instant::now().into_std()).await?;
    let engine_reloads = engine.reloader();

    let listener = TcpListener::bind(cfg.api.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: cfg.api.listen,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(|source| RunError::Bind {
        addr: cfg.api.listen,
        source,
    })?;

    // The embedded broker starts before anything is spawned (a failure leaves nothing behind)
    // and before the MQTT sources, which may subscribe to it.
    let mqtt_broker = match &cfg.mqtt_broker {
        Some(b) => Some(sources::mqtt::broker::start_broker(b, broker_login, &metrics).await?),
        None => None,
    };

    let stop = CancellationToken::new();
    let fatal = CancellationToken::new();
    let drain_deadline = CancellationToken::new();
    let sources_cancel = CancellationToken::new();
    let api_stop = CancellationToken::new();

    let (sample_tx, sample_rx) =
        mpsc::channel::<crate::receipt::SampleBatch>(cfg.gateway.sample_queue);
    let (alert_tx, alert_rx) = mpsc::channel(1024);

    // Outputs and receivers.
    let mut drains: Vec<(String, JoinHandle<()>)> = Vec::new();
    for w in writers {
        let name = "writer".to_owned();
        drains.push((
            name,
            critical(
                tokio::spawn(w.run(drain_deadline.clone())),
                "writer",
                &fatal,
            ),
        ));
    }
    let alert_tasks = alerts::spawn(
        alerts_prepared,
        alert_rx,
        state.clone(),
        alarms.board.history(&rules::HistoryFilter {
            limit: usize::MAX,
            ..Default::default()
        }),
        drain_deadline.clone(),
    );
    for (_, h) in alert_tasks.workers {
        drains.push(("receiver".into(), critical(h, "receiver", &fatal)));
    }
    let router = critical(alert_tasks.dispatcher, "alert dispatcher", &fatal);

    // Self-monitoring into the outputs; stops with the sources, before the queues close.
    if let Some(every) = cfg.gateway.self_monitoring {
        tokio::spawn(crate::tsdb::internal::run(
            cfg.site.id.clone(),
            metrics.clone(),
            queues.clone(),
            every,
            sources_cancel.clone(),
        ));
    }

    // The rule engine.
    let engine = critical(
        tokio::spawn(rules::run(
            engine,
            sample_rx,
            Sinks {
                outputs: crate::tsdb::Fanout::new(&cfg, queues),
                alerts: alert_tx,
            },
            state.clone(),
            metrics.clone(),
        )),
        "rule engine",
        &fatal,
    );

    // Sources, supervised: one loop for every kind, each with its own stop token (a reload
    // stops and starts sources one by one).
    let spawner = reload::Spawner {
        tx: sample_tx,
        state: state.clone(),
        metrics: metrics.clone(),
        parent: sources_cancel.clone(),
    };
    let mut source_tasks = BTreeMap::new();
    for src in ready_sources {
        let id = src.id().clone();
        source_tasks.insert(id, spawner.spawn(src));
    }
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadAsk>(RELOAD_QUEUE);
    // The reloader keeps the configuration itself (not a copy).
    let cfg = Arc::new(cfg);
    let mut reloader = reload::Reloader {
        path,
        current: cfg.clone(),
        engine: engine_reloads,
        tables: site_tables,
        spawner,
        sources: source_tasks,
    };

    // The API.
    let app = api::app(
        ApiState {
            state: state.clone(),
            metrics: metrics.clone(),
            alarms: Some(alarms.clone()),
            outbox: Some(outbox),
            reload: Some(reload_tx.clone()),
        },
        cfg.api.request_timeout,
    );
    let api_stop2 = api_stop.clone();
    let limits = api::serve::Limits::from_config(&cfg.api);
    let api = tokio::spawn(api::serve::serve(listener, app, limits, api_stop2));
    info!(api = %api_addr, site = %cfg.site.id, channels = cfg.channels.len(), sources = cfg.sources.len(), outputs = cfg.outputs.len(), "gateway started");

    let grace = cfg.gateway.shutdown_grace;
    let (stop2, fatal2) = (stop.clone(), fatal.clone());
    let done = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop2.cancelled() => break,
                () = fatal2.cancelled() => break,
                Some(ask) = reload_rx.recv() => {
                    let report = reloader.reload(&ask.by).await;
                    let _ = ask.reply.send(report);
                }
            }
        }
        // Asks still queued are answered "stopping" when their reply is dropped here.
        drop(reload_rx);
        info!(grace = ?grace, "draining: stopping sources");
        let deadline = drain_deadline.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(grace.saturating_sub(Duration::from_millis(300))).await;
            deadline.cancel();
        });
        sources_cancel.cancel();
        for t in reloader.into_sources() {
            t.join().await;
        }
        info!("sources stopped; draining the rule engine");
        let _ = engine.await;
        let _ = router.await;
        for (_, d) in drains {
            let _ = d.await;
        }
        timer.abort();
        info!("outputs and receivers drained; closing the API");
        api_stop.cancel();
        let _ = api.await;
        if fatal2.is_cancelled() {
            return Err(RunError::TaskDied("see the log above".into()));
        }
        info!("gateway stopped");
        Ok(())
    });

    Ok(Running {
        api_addr,
        state,
        metrics,
        alarms,
        mqtt_broker,
        reload: reload_tx,
        stop,
        fatal,
        done,
    })
}

/// Watches a task that cannot be restarted: if it panics, the gateway is stopped.
fn critical(h: JoinHandle<()>, name: &'static str, fatal: &CancellationToken) -> JoinHandle<()> {
    let fatal = fatal.clone();
    tokio::spawn(async move {
        if let Err(e) = h.await {
            error!(task = name, error = %e, "task died: stopping the gateway");
            fatal.cancel();
        }
    })
}

/// How long a restarted task must run without a panic before it is healthy again: its gateway
/// fault clears and its restart backoff starts again from the beginning.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Runs a restartable task; restarts it with backoff after a panic, until `cancel` fires. From a
/// panic until the task has run [`HEALTHY_AFTER`] without another, the component `task {name}`
/// is failing (a gateway fault).
fn supervise<F, Fut>(
    name: String,
    metrics: Arc<Metrics>,
    state: Arc<SharedState>,
    cancel: CancellationToken,
    make: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let component = Component::Task(name.clone());
        let mut restarts = 0u32;
        loop {
            let mut task = tokio::spawn(make());
            let res = if restarts == 0 {
                task.await
            } else {
                tokio::select! {
                    r = &mut task => r,
                    () = tokio::time::sleep(HEALTHY_AFTER) => {
                        restarts = 0;
                        state.health.ok(&component);
                        info!(task = %name, after = ?HEALTHY_AFTER, "restarted task is healthy again");
                        task.await
                    }
                }
            };
            match res {
                Ok(()) => {
                    state.health.ok(&component);
                    return;
                }
                Err(e) => {
                    metrics
                        .task_restarts
                        .get_or_create(&labels([("task", &name)]))
                        .inc();
                    let wait = crate::backoff::backoff(
                        restarts,
                        Duration::from_secs(1),
                        Duration::from_secs(60),
                    );
                    restarts = restarts.saturating_add(1);
                    state.health.fail(
                        &component,
                        format!("died ({e}); restart {restarts} in {wait:.1?}"),
                    );
                    error!(task = %name, error = %e, restart_in = ?wait, "task died; restarting");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn state() -> Arc<SharedState> {
        let cfg = crate::config::parse("[site]\nid = \"s\"\n", std::path::Path::new("t.toml"))
            .expect("parse");
        let (cfg, _) = crate::config::validate(&cfg, std::path::Path::new("."))
            .unwrap_or_else(|p| panic!("invalid: {p:?}"));
        Arc::new(SharedState::new(&cfg))
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_source_is_restarted_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let h = supervise(
            "source t".into(),
            metrics.clone(),
            state(),
            CancellationToken::new(),
            move || {
                let r = r.clone();
                async move {
                    if r.fetch_add(1, Ordering::SeqCst) < 2 {
                        panic!("injected failure");
                    }
                }
            },
        );
        tokio::time::timeout(Duration::from_secs(600), h)
            .await
            .expect("supervisor ends when the task returns normally")
            .expect("supervisor itself does not panic");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(
            metrics
                .encode()
                .contains("hazgate_task_restarts_total{task=\"source t\"} 2"),
            "{}",
            metrics.encode()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_died_task_is_a_gateway_fault_until_healthy_and_its_backoff_then_resets() {
        tokio::time::timeout(Duration::from_secs(3600), async {
            let st = state();
            let cancel = CancellationToken::new();
            let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
            let crash = Arc::new(tokio::sync::Notify::new());
            let (s2, c2) = (starts.clone(), crash.clone());
            let h = supervise(
                "source t".into(),
                Arc::new(Metrics::new()),
                st.clone(),
                cancel.clone(),
                move || {
                    let (s, c) = (s2.clone(), c2.clone());
                    async move {
                        s.lock().expect("lock").push(tokio::time::Instant::now());
                        c.notified().await;
                        panic!("injected failure");
                    }
                },
            );
            let runs = |n: usize| {
                let s = starts.clone();
                async move {
                    while s.lock().expect("lock").len() < n {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            };
            let faults = || st.health.faults();
            runs(1).await;
            assert!(faults().is_empty(), "healthy before any panic");
            // Three panics in a row: each restart waits longer (1, 2, 4 s ceilings).
            let mut panicked_at = Vec::new();
            for n in 1..=3 {
                panicked_at.push(tokio::time::Instant::now());
                crash.notify_one();
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                let f = faults();
                assert_eq!(f.len(), 1, "{f:?}");
                assert_eq!(f[0].0, Component::Task("source t".into()));
                assert!(f[0].1.contains("injected failure"), "{}", f[0].1);
                assert!(
                    st.health
                        .not_ready()
                        .iter()
                        .any(|r| r.starts_with("task source t: died")),
                    "/readyz names it"
                );
                runs(n + 1).await;
            }
            let s = starts.lock().expect("lock").clone();
            assert!(
                s[3] - panicked_at[2] >= Duration::from_secs(2),
                "third restart backed off"
            );
            // Still a fault while running: not yet healthy for a minute.
            assert_eq!(faults().len(), 1);
            tokio::time::sleep(HEALTHY_AFTER + Duration::from_secs(1)).await;
            assert!(
                faults().is_empty(),
                "healthy after a minute: {:?}",
                faults()
            );
            // A new panic restarts after the first step of the backoff again (at most 1 s).
            let t = tokio::time::Instant::now();
            crash.notify_one();
            runs(5).await;
            let s = starts.lock().expect("lock").clone();
            assert!(
                s[4] - t <= Duration::from_millis(1100),
                "backoff reset: restarted after {:?}",
                s[4] - t
            );
            cancel.cancel();
            crash.notify_one();
            h.await.expect("supervisor");
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dying_critical_task_stops_the_gateway() {
        let fatal = CancellationToken::new();
        let h = critical(tokio::spawn(async { panic!("injected") }), "engine", &fatal);
        h.await.expect("watcher");
        assert!(fatal.is_cancelled());
    }
}
