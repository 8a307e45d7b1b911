//! Helpers for the Modbus tests: resolve a gateway config, run the real pollers
//! ([`hazgate::sources::modbus::run_source`]) into a channel, and count samples per channel over
//! a window.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hazgate::config::{self, Resolved};
use hazgate::model::{Reading, Sample};
use hazgate::state::SharedState;
use hazgate::telemetry::{Metrics, labels};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Parses and validates gateway TOML; maps resolve against `config/`.
pub fn resolve(text: &str) -> Resolved {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let cfg = config::parse(text, &base.join("test.toml")).expect("config parses");
    match config::validate(&cfg, &base) {
        Ok((r, _)) => r,
        Err(problems) => panic!("config invalid: {problems:#?}"),
    }
}

/// Running pollers of every source in a config.
pub struct Pollers {
    pub rx: mpsc::Receiver<Vec<Sample>>,
    pub state: Arc<SharedState>,
    pub metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pollers {
    /// Starts one poller task per source.
    pub fn start(cfg: &Resolved) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let state = Arc::new(SharedState::new(cfg));
        let metrics = Arc::new(Metrics::new());
        let cancel = CancellationToken::new();
        let tasks = cfg
            .modbus()
            .map(|s| {
                tokio::spawn(hazgate::sources::modbus::run_source(
                    s.clone(),
                    tx.clone(),
                    state.clone(),
                    metrics.clone(),
                    cancel.clone(),
                ))
            })
            .collect();
        Pollers {
            rx,
            state,
            metrics,
            cancel,
            tasks,
        }
    }

    /// Samples received during `window`, by channel id.
    pub async fn collect(&mut self, window: Duration) -> HashMap<String, Vec<Sample>> {
        let mut out: HashMap<String, Vec<Sample>> = HashMap::new();
        let deadline = tokio::time::Instant::now() + window;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return out,
                batch = self.rx.recv() => match batch {
                    Some(b) => for s in b {
                        out.entry(s.channel.as_str().to_owned()).or_default().push(s);
                    },
                    None => return out,
                },
            }
        }
    }

    /// Discards what arrived so far, for `window`.
    pub async fn skip(&mut self, window: Duration) {
        let _ = self.collect(window).await;
    }

    /// Receives until a sample of `channel` satisfies `f`, or panics after `timeout`.
    pub async fn until(&mut self, timeout: Duration, channel: &str, f: impl Fn(&Reading) -> bool) {
        let r = tokio::time::timeout(timeout, async {
            while let Some(b) = self.rx.recv().await {
                if b.iter()
                    .any(|s| s.channel.as_str() == channel && f(&s.reading))
                {
                    return;
                }
            }
            panic!("pollers stopped");
        })
        .await;
        assert!(
            r.is_ok(),
            "no matching sample of {channel} within {timeout:?}"
        );
    }

    /// A per-device poll counter (`ok`, `failed`, `skipped`).
    pub fn polls(&self, device: &str, result: &str) -> u64 {
        self.metrics
            .modbus_device_polls
            .get_or_create(&labels([("device", device), ("result", result)]))
            .get()
    }

    /// Stops the pollers and waits for them, keeping state and metrics readable.
    pub async fn stop_polling(&mut self) {
        self.cancel.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Stops the pollers and waits for them.
    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Good values of a channel in a collected window.
pub fn good(samples: &HashMap<String, Vec<Sample>>, channel: &str) -> Vec<f64> {
    samples
        .get(channel)
        .map(|v| v.iter().filter_map(|s| s.reading.value()).collect())
        .unwrap_or_default()
}

/// All readings of a channel in a collected window.
pub fn readings(samples: &HashMap<String, Vec<Sample>>, channel: &str) -> Vec<Reading> {
    samples
        .get(channel)
        .map(|v| v.iter().map(|s| s.reading.clone()).collect())
        .unwrap_or_default()
}

/// Asserts a channel kept at least `min_fraction` of its nominal rate with good samples.
pub fn assert_rate(
    samples: &HashMap<String, Vec<Sample>>,
    channel: &str,
    window: Duration,
    interval: Duration,
    min_fraction: f64,
) {
    let expected = window.as_secs_f64() / interval.as_secs_f64();
    let n = good(samples, channel).len() as f64;
    assert!(
        n >= expected * min_fraction,
        "{channel}: {n} good samples in {window:?}, expected about {expected} (at least {:.0})",
        expected * min_fraction
    );
    // And no more than the schedule allows: pollers never catch up on missed polls.
    assert!(
        n <= expected + 2.0,
        "{channel}: {n} samples in {window:?}, more than the {expected} scheduled"
    );
}
