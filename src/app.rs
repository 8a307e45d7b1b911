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
//! Supervision: a source task that panics is logged, counted and restarted with backoff. The
//! engine, router, writers and receivers are not restartable without losing their queue, so a
//! panic there stops the gateway cleanly with [`RunError::TaskDied`] (exit status 4) — never a
//! silently missing task.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::alerts;
use crate::api::{self, ApiState};
use crate::config::{Output, Resolved};
use crate::rules::{self, Sinks};
use crate::sources;
use crate::state::SharedState;
use crate::telemetry::{Metrics, labels};
use crate::tsdb::writer::{OutputQueue, Writer};

/// Why the gateway could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A secret named in the config could not be read.
    #[error("{path}: {message}")]
    Secret {
        /// Config path of the secret.
        path: String,
        /// What went wrong.
        message: String,
    },
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
    /// The alarm engine could not start (journal directory, API tokens).
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
    /// The embedded MQTT broker, when enabled (it runs until the process exits).
    pub mqtt_broker: Option<sources::mqtt::broker::BrokerHandle>,
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

    /// Runs until `shutdown` completes (then drains) or a critical task dies.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        tokio::select! {
            () = shutdown => info!("shutdown requested"),
            () = self.fatal.cancelled() => {}
        }
        self.stop().await
    }
}

/// Starts every task of the pipeline.
pub async fn start(cfg: Resolved) -> Result<Running, RunError> {
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(SharedState::new(&cfg));

    // Resolve secrets first, so a missing one fails start-up with its path.
    let mut writers = Vec::new();
    let mut queues = Vec::new();
    for (i, o) in cfg.outputs.iter().enumerate() {
        let (secret, path) = match o {
            Output::InfluxdbV1(v) => (v.password.as_ref(), format!("outputs[{i}].password")),
            Output::InfluxdbV2(v) => (v.token.as_ref(), format!("outputs[{i}].token")),
        };
        let secret = secret
            .map(|s| s.resolve())
            .transpose()
            .map_err(|message| RunError::Secret { path, message })?;
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
    // Alert delivery: receivers' secrets, the outbox replay.
    let alerts_prepared = alerts::prepare(&cfg, metrics.clone())?;
    alerts_prepared.outbox.report_health(state.clone());
    let _ = state.outbox.set(alerts_prepared.outbox.clone());

    // The alarm engine: API tokens, journal replay (before anything is spawned).
    let (engine, alarms) = rules::open(&cfg, tokio::time::Instant::now().into_std()).await?;
    let _ = state.alarms.set(alarms);
    let mut mqtt_prepared = Vec::new();
    for m in &cfg.mqtt_sources {
        let p = sources::mqtt::prepare(m, &cfg.site.id)
            .map_err(|(path, message)| RunError::Secret { path, message })?;
        mqtt_prepared.push(p);
    }

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
        Some(b) => Some(sources::mqtt::broker::start_broker(b).await?),
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
        drain_deadline.clone(),
    );
    for (_, h) in alert_tasks.workers {
        drains.push(("receiver".into(), critical(h, "receiver", &fatal)));
    }
    let router = critical(alert_tasks.dispatcher, "alert dispatcher", &fatal);

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

    // Sources, supervised.
    let mut source_tasks = Vec::new();
    for src in cfg.sources.clone() {
        let name = format!("source {}", src.id);
        state.health.fail(&name, "not connected yet");
        let (tx, st, m, c) = (
            sample_tx.clone(),
            state.clone(),
            metrics.clone(),
            sources_cancel.clone(),
        );
        source_tasks.push(supervise(
            name,
            metrics.clone(),
            sources_cancel.clone(),
            move || {
                sources::modbus::run_source(
                    src.clone(),
                    tx.clone(),
                    st.clone(),
                    m.clone(),
                    c.clone(),
                )
            },
        ));
    }
    for (p, m) in mqtt_prepared.into_iter().zip(&cfg.mqtt_sources) {
        let name = format!("source {}", m.id);
        state.health.fail(&name, "not connected yet");
        let (tx, st, m, c) = (
            sample_tx.clone(),
            state.clone(),
            metrics.clone(),
            sources_cancel.clone(),
        );
        source_tasks.push(supervise(
            name,
            metrics.clone(),
            sources_cancel.clone(),
            move || {
                sources::mqtt::run_source(p.clone(), tx.clone(), st.clone(), m.clone(), c.clone())
            },
        ));
    }
    drop(sample_tx);

    // The API.
    let app = api::app(
        ApiState {
            state: state.clone(),
            metrics: metrics.clone(),
        },
        cfg.api.request_timeout,
    );
    let api_stop2 = api_stop.clone();
    let api = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { api_stop2.cancelled().await })
            .await
        {
            error!(error = %e, "API server failed");
        }
    });
    info!(api = %api_addr, site = %cfg.site.id, channels = cfg.channels.len(), sources = cfg.sources.len() + cfg.mqtt_sources.len(), outputs = cfg.outputs.len(), "gateway started");

    let grace = cfg.gateway.shutdown_grace;
    let (stop2, fatal2) = (stop.clone(), fatal.clone());
    let done = tokio::spawn(async move {
        tokio::select! {
            () = stop2.cancelled() => {}
            () = fatal2.cancelled() => {}
        }
        info!(grace = ?grace, "draining: stopping sources");
        let deadline = drain_deadline.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(grace.saturating_sub(Duration::from_millis(300))).await;
            deadline.cancel();
        });
        sources_cancel.cancel();
        for t in source_tasks {
            let _ = t.await;
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
        mqtt_broker,
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

/// Runs a restartable task; restarts it with backoff after a panic, until `cancel` fires.
fn supervise<F, Fut>(
    name: String,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    make: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut restarts = 0u32;
        loop {
            match tokio::spawn(make()).await {
                Ok(()) => return,
                Err(e) => {
                    metrics
                        .task_restarts
                        .get_or_create(&labels([("task", &name)]))
                        .inc();
                    let wait =
                        sources::backoff(restarts, Duration::from_secs(1), Duration::from_secs(60));
                    restarts = restarts.saturating_add(1);
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

    #[tokio::test(start_paused = true)]
    async fn a_panicking_source_is_restarted_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let h = supervise(
            "source t".into(),
            metrics.clone(),
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
    async fn a_dying_critical_task_stops_the_gateway() {
        let fatal = CancellationToken::new();
        let h = critical(tokio::spawn(async { panic!("injected") }), "engine", &fatal);
        h.await.expect("watcher");
        assert!(fatal.is_cancelled());
    }
}
