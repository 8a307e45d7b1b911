//! Transports shared by receivers: an MQTT publisher that waits for its own PUBACK, and HTTP
//! error texts.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::receivers::mqtt::{MqttTarget, split_host_port};
use crate::secret::Secret;

/// A request error without its URL: robot tokens travel in the URL and must never reach a log
/// or the ledger.
pub fn http_error(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// What the event loop saw of a QoS 1 publish.
#[derive(Debug, Clone, Copy)]
enum PubEvent {
    /// A PUBLISH went out with this packet id.
    Sent(u16),
    /// The broker acknowledged this packet id.
    Acked(u16),
}

/// An MQTT publisher with QoS 1. A connection (client and event-loop task) carries one attempt
/// at a time; the event loop forwards the packet ids of outgoing PUBLISHes and of PUBACKs, and a
/// delivery waits for the PUBACK of its own packet id. After a failed attempt (no PUBACK in
/// time, an error) the connection is dropped and the next attempt opens a new one: a PUBLISH of
/// the failed attempt still queued in the old client, or its late PUBACK, dies with that
/// connection and is never taken for a later attempt's delivery. On a connection that only saw
/// successful attempts nothing else is in flight, so the first PUBLISH after a request is ours.
#[derive(Debug)]
pub struct MqttPub {
    options: MqttOptions,
    name: String,
    conn: Mutex<Option<MqttConn>>,
    /// Topic template.
    pub topic: String,
}

#[derive(Debug)]
struct MqttConn {
    client: AsyncClient,
    acks: mpsc::Receiver<PubEvent>,
    stop: CancellationToken,
}

impl Drop for MqttConn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl MqttConn {
    /// Creates the client and spawns its event loop (it connects at once).
    fn open(options: &MqttOptions, name: &str) -> Self {
        let (client, mut el) = AsyncClient::new(options.clone(), 16);
        // An alert is one small PUBLISH: sent at once, not held by Nagle's algorithm for the
        // acknowledgement of an earlier packet (a keep-alive PINGREQ, say).
        let mut no = rumqttc::NetworkOptions::new();
        no.set_tcp_nodelay(true);
        el.set_network_options(no);
        let (tx, rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let st = stop.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let ev = tokio::select! {
                    () = st.cancelled() => return,
                    ev = el.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        // When full, old events are dropped: a delivery then times out and is
                        // retried (same idempotency key).
                        let _ = tx.try_send(PubEvent::Acked(a.pkid));
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        let _ = tx.try_send(PubEvent::Sent(pkid));
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        failures = 0;
                        info!(receiver = %name, "MQTT receiver connected");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let wait = crate::backoff::backoff(
                            failures,
                            Duration::from_millis(500),
                            Duration::from_secs(30),
                        );
                        failures = failures.saturating_add(1);
                        warn!(receiver = %name, error = %e, retry_in = ?wait, "MQTT receiver connection failed");
                        tokio::select! {
                            () = st.cancelled() => return,
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        });
        Self {
            client,
            acks: rx,
            stop,
        }
    }
}

impl MqttPub {
    /// Creates the client and spawns its event loop.
    pub fn new(
        t: &MqttTarget,
        receiver: &str,
        site: &str,
        password: Option<&Secret>,
    ) -> Result<Self, String> {
        let (host, port) = split_host_port(&t.address).ok_or("expected host:port")?;
        let id = t
            .client_id
            .clone()
            .unwrap_or_else(|| format!("hazgate-{site}-{receiver}"));
        let mut o = MqttOptions::new(id, host, port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_session(true);
        if let Some(u) = &t.username {
            o.set_credentials(
                u,
                password.map(|p| p.expose().to_owned()).unwrap_or_default(),
            );
        }
        let conn = MqttConn::open(&o, receiver);
        Ok(Self {
            options: o,
            name: receiver.to_owned(),
            conn: Mutex::new(Some(conn)),
            topic: t.topic.clone(),
        })
    }

    /// Publishes with QoS 1 and waits for the PUBACK of this attempt's own PUBLISH.
    pub async fn publish(
        &self,
        topic: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut guard = self.conn.lock().await;
        let conn = guard.get_or_insert_with(|| MqttConn::open(&self.options, &self.name));
        while conn.acks.try_recv().is_ok() {}
        let res = tokio::time::timeout(timeout, async {
            conn.client
                .publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .map_err(|e| e.to_string())?;
            // Ours is the first PUBLISH sent after the request (nothing else is in flight on this
            // connection); a retransmission after a reconnect carries the same packet id.
            let mut ours = None;
            loop {
                match conn.acks.recv().await {
                    None => return Err("MQTT event loop ended".to_owned()),
                    Some(PubEvent::Sent(p)) => {
                        ours.get_or_insert(p);
                    }
                    Some(PubEvent::Acked(p)) if ours == Some(p) => return Ok(()),
                    Some(PubEvent::Acked(_)) => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err("no PUBACK within the timeout".into()));
        if res.is_err() {
            // This attempt's PUBLISH may still go out or be acknowledged late: never on the
            // connection of the next attempt.
            *guard = None;
        }
        res
    }
}
