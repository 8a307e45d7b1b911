//! Alert routing: every alarm event goes to every receiver's queue; one task per receiver
//! delivers with a timeout and retries with backoff.
//!
//! Queue policy: each receiver holds at most `queue_capacity` events in memory; when full the
//! oldest is dropped, counted (`hazgate_alarm_deliveries{result="dropped"}`) and logged at ERROR.
//! A durable outbox, routing and escalation replace this in the alert-delivery work.
//!
//! Webhook body (schema `hazgate.alarm.v1`):
//! `{"schema":"hazgate.alarm.v1","site":"…","event":{"seq":…,"alarm":"…","channel":"…",
//! "condition":"H","priority":"high","transition":"raised","value":…,"limit":…,"message":"…",
//! "ts":"RFC 3339"}}`

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Receiver, Secret, WebhookReceiver};
use crate::model::AlarmEvent;
use crate::queue::DropOldest;
use crate::telemetry::{Metrics, labels};

/// Body sent to webhooks.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    /// Always `hazgate.alarm.v1`.
    pub schema: &'static str,
    /// Site id.
    pub site: &'a str,
    /// The event.
    pub event: &'a AlarmEvent,
}

/// A receiver's queue and delivery task.
#[derive(Debug)]
pub struct ReceiverTask {
    id: String,
    cfg: WebhookReceiver,
    token: Option<Secret>,
    queue: Arc<DropOldest<AlarmEvent>>,
    client: reqwest::Client,
    site: String,
    metrics: Arc<Metrics>,
}

impl ReceiverTask {
    /// Builds the task for a configured receiver.
    pub fn new(r: &Receiver, token: Option<Secret>, site: &str, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let Receiver::Webhook(w) = r;
        Ok(Self {
            id: w.id.clone(),
            queue: Arc::new(DropOldest::new(w.queue_capacity)),
            client: reqwest::Client::builder().timeout(w.timeout).build()?,
            cfg: w.clone(),
            token,
            site: site.to_owned(),
            metrics,
        })
    }

    /// The queue the router pushes into.
    pub fn queue(&self) -> Arc<DropOldest<AlarmEvent>> {
        self.queue.clone()
    }

    /// Delivers until the queue is closed and empty, or `deadline` fires.
    pub async fn run(self, deadline: CancellationToken) {
        let mut attempt = 0u32;
        loop {
            let (mut batch, closed) = self.queue.take(1);
            let Some(ev) = batch.pop() else {
                if closed {
                    info!(receiver = %self.id, "receiver drained");
                    return;
                }
                tokio::select! {
                    () = self.queue.notified() => {}
                    () = deadline.cancelled() => {}
                }
                if deadline.is_cancelled() && self.queue.len().0 == 0 {
                    return;
                }
                continue;
            };
            if deadline.is_cancelled() {
                let lost = 1 + self.queue.len().0;
                error!(receiver = %self.id, lost, "shutdown grace period over: alarm events not delivered");
                return;
            }
            match self.deliver(&ev).await {
                Ok(()) => {
                    attempt = 0;
                    self.metrics.deliveries.get_or_create(&labels([("receiver", &self.id), ("result", "delivered")])).inc();
                }
                Err(e) => {
                    self.metrics.deliveries.get_or_create(&labels([("receiver", &self.id), ("result", "failed")])).inc();
                    let wait = crate::sources::backoff(attempt, Duration::from_millis(500), Duration::from_secs(60));
                    attempt = attempt.saturating_add(1);
                    warn!(receiver = %self.id, alarm = %ev.alarm, seq = ev.seq, error = %e, retry_in = ?wait, "alarm delivery failed; will retry");
                    self.queue.requeue_front(vec![ev]);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = deadline.cancelled() => {}
                    }
                }
            }
        }
    }

    async fn deliver(&self, ev: &AlarmEvent) -> Result<(), String> {
        let body = WebhookBody { schema: "hazgate.alarm.v1", site: &self.site, event: ev };
        let mut req = self
            .client
            .post(&self.cfg.url)
            .header("Idempotency-Key", format!("{}-{}", self.site, ev.seq))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&body).map_err(|e| e.to_string())?);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", resp.status()))
        }
    }
}

/// Routes every event to every receiver queue until the engine closes the channel.
pub async fn route(
    mut rx: mpsc::Receiver<AlarmEvent>,
    queues: Vec<(String, Arc<DropOldest<AlarmEvent>>)>,
    metrics: Arc<Metrics>,
) {
    while let Some(ev) = rx.recv().await {
        for (id, q) in &queues {
            let (dropped, _) = q.push([ev.clone()]);
            if dropped > 0 {
                metrics.deliveries.get_or_create(&labels([("receiver", id), ("result", "dropped")])).inc_by(dropped);
                error!(receiver = %id, dropped, "receiver queue full: oldest alarm events dropped");
            }
        }
    }
    for (_, q) in &queues {
        q.close();
    }
}
