//! MQTT acquisition: one subscriber task per `[[sources]] kind = "mqtt"`, topic → channel
//! mapping and payload extraction ([`mapping`]), and the optional embedded broker ([`broker`]).
//!
//! The task owns a rumqttc client (MQTT 3.1.1 or 5) and polls its event loop. Invariants:
//! - **Never connected-but-silent**: every CONNACK (first connect and every reconnect) is followed
//!   by a SUBSCRIBE of every mapping, even when the broker says it kept the session (it may have
//!   lost it). If no SUBACK arrives within `subscribe_timeout` the connection is dropped and made
//!   again; a refused subscription is an ERROR and makes the source not ready. Keep-alive pings
//!   detect a broker that stopped answering.
//! - **No spin on failure**: after a failed poll the task sleeps a jittered exponential backoff
//!   capped at `backoff_max` before the event loop reconnects.
//! - **Every network operation has a timeout**: connect + CONNACK and socket writes
//!   (`connect_timeout`), SUBACK (`subscribe_timeout`), pings (`keep_alive`), DISCONNECT at
//!   shutdown (1 s).
//! - **No loss across outages** with QoS 1 and the default persistent session (stable client id,
//!   `clean_session = false`; MQTT 5: session expiry): the broker queues messages while the
//!   gateway is away and delivers them after the reconnect.
//! - **Bad input never stalls the subscriber**: a payload that cannot be read is counted
//!   (`hazgate_mqtt_events_total{event="decode_error"}`) and logged at most once per 10 s per kind,
//!   with topic and a short excerpt; unmapped topics, unknown channels, out-of-range device
//!   timestamps and ignored retained messages are counted the same way.
//! - Samples go to the engine over the bounded sample queue; when it is full the task waits (the
//!   broker then holds further messages: TCP and QoS 1 flow control), nothing is dropped.
//! - **End-to-end acknowledgement** (`ack = "durable"`, the default): a QoS 1 message is
//!   acknowledged (PUBACK) only when its readings are durable in every output (see
//!   `crate::receipt`): each message gets a receipt that travels with its samples through the
//!   engine to the output queues; the source acknowledges in the order received, up to the first
//!   message whose receipt is not complete. Messages without usable samples (bad payloads,
//!   unmapped topics, ignored retained messages) are acknowledged once counted, in their turn.
//!   At most [`MAX_UNACKED`] messages are un-acknowledged: beyond that the source stops reading
//!   until some complete (the broker's own window, e.g. mosquitto's `max_inflight_messages`,
//!   default 20, is usually smaller; MQTT 5 announces [`MAX_UNACKED`] as receive maximum). After a
//!   reconnect, messages not acknowledged on the old connection are not acknowledged on the new
//!   one: the broker sends them again (at-least-once; InfluxDB stores a duplicate once).

pub mod broker;
mod broker_guard;
pub mod json;
pub mod mapping;
pub mod topic;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::Secret;
use crate::config::mqtt::{AckPolicy, MqttProtocol, Retained};
use crate::model::Sample;
use crate::model::SourceId;
use crate::receipt::{Board, Receipt, SampleBatch};
use crate::state::SharedState;
use crate::telemetry::{Metrics, labels};

use self::mapping::{Issue, Mapper, excerpt};

/// Largest MQTT packet accepted or sent (data-unit messages with many records can exceed the
/// client library's 10 KiB default).
const MAX_PACKET: usize = 1 << 20;
/// Most messages received and not yet acknowledged (`ack = "durable"`).
pub const MAX_UNACKED: usize = 1000;
/// Requests queued for the event loop: SUBSCRIBE, DISCONNECT and at most one PUBACK per
/// un-acknowledged message, so queueing a PUBACK never fails.
const REQUEST_CAPACITY: usize = 64 + MAX_UNACKED;
/// Minimum interval between two log lines of one kind of message problem.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub use crate::config::mqtt::ResolvedMqttSource;

/// A source with its secret and TLS files read, ready to run.
#[derive(Clone)]
pub struct Prepared {
    /// Shared: the supervisor clones a `Prepared` for every (re)start, and a source's settings
    /// carry its whole channel table.
    src: Arc<ResolvedMqttSource>,
    client_id: String,
    password: Option<Secret>,
    tls: Option<TlsConfiguration>,
    mapper: Arc<Mapper>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("src", &self.src.id)
            .field("client_id", &self.client_id)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// The MQTT client id used for the session.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The source's id.
    pub fn id(&self) -> &SourceId {
        &self.src.id
    }
}

/// Reads the password and TLS files of a source. Fails with `(config path, message)`, so a
/// missing secret or certificate stops start-up instead of failing every reconnect.
pub fn prepare(src: &ResolvedMqttSource, site: &str) -> Result<Prepared, (String, String)> {
    let path = format!("sources[{}]", src.index);
    let c = &src.cfg;
    let password = c
        .password
        .as_ref()
        .map(|s| s.resolve())
        .transpose()
        .map_err(|m| (format!("{path}.password"), m))?;
    let read = |p: &std::path::Path, field: &str| {
        std::fs::read(p).map_err(|e| {
            (
                format!("{path}.tls.{field}"),
                format!("cannot read `{}`: {e}", p.display()),
            )
        })
    };
    let tls = match &c.tls {
        None => None,
        Some(t) => {
            let ca = read(&t.ca, "ca")?;
            let client_auth = match (&t.client_cert, &t.client_key) {
                (Some(cert), Some(key)) => {
                    Some((read(cert, "client_cert")?, read(key, "client_key")?))
                }
                _ => None,
            };
            Some(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth,
            })
        }
    };
    let mapper = Mapper::new(c).map_err(|m| (format!("{path}.topics"), m))?;
    Ok(Prepared {
        src: Arc::new(src.clone()),
        client_id: c
            .client_id
            .clone()
            .unwrap_or_else(|| format!("hazgate-{site}-{}", src.id)),
        password,
        tls,
        mapper: Arc::new(mapper),
    })
}

/// What identifies a received QoS 1 (or 2) message for its acknowledgement.
#[derive(Clone, Copy, Debug)]
struct AckId {
    pkid: u16,
    exactly_once: bool,
}

/// The messages received and not yet acknowledged, in the order received.
struct Acks {
    board: Arc<Board>,
    next: u64,
    pending: std::collections::VecDeque<(u64, AckId)>,
}

impl Acks {
    fn new() -> Self {
        Self {
            board: Board::new(),
            next: 0,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// Issues the receipt of a message that must be acknowledged.
    fn track(&mut self, id: AckId) -> Receipt {
        let seq = self.next;
        self.next += 1;
        self.pending.push_back((seq, id));
        self.board.issue(seq)
    }

    /// The messages that can be acknowledged now: the complete ones at the front.
    fn ready(&mut self) -> Vec<AckId> {
        let mut out = Vec::new();
        while let Some(&(seq, id)) = self.pending.front() {
            if !self.board.take(seq) {
                break;
            }
            self.pending.pop_front();
            out.push(id);
        }
        self.board
            .forget_below(self.pending.front().map_or(self.next, |p| p.0));
        out
    }

    /// The connection is gone: what was not acknowledged will be sent again by the broker.
    fn reset(&mut self) {
        self.pending.clear();
        self.board.forget_below(self.next);
    }

    fn full(&self) -> bool {
        self.pending.len() >= MAX_UNACKED
    }
}

/// A protocol-independent view of what the event loop reported.
enum Ev {
    ConnAck {
        session_present: bool,
    },
    Publish {
        topic: String,
        payload: Bytes,
        retain: bool,
        /// `None` for QoS 0.
        ack: Option<AckId>,
    },
    SubAck {
        refused: Vec<usize>,
    },
    Other,
}

#[expect(
    clippy::large_enum_variant,
    reason = "one per source, alive as long as its connection"
)]
enum Link {
    V4(rumqttc::AsyncClient, rumqttc::EventLoop),
    V5(rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop),
}

fn split_address(a: &str) -> (String, u16) {
    match a.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            p.parse().unwrap_or(1883),
        ),
        None => (a.to_owned(), 1883),
    }
}

impl Link {
    fn new(p: &Prepared) -> Self {
        let c = &p.src.cfg;
        let manual_acks = c.ack == AckPolicy::Durable;
        let (host, port) = split_address(&c.address);
        let connect_secs = c.connect_timeout.as_secs_f64().ceil().max(1.0) as u64;
        let transport = match &p.tls {
            Some(t) => Transport::tls_with_config(t.clone()),
            None => Transport::tcp(),
        };
        match c.protocol {
            MqttProtocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(&p.client_id, host, port);
                o.set_keep_alive(c.keep_alive)
                    .set_clean_session(c.clean_session)
                    .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                    .set_manual_acks(manual_acks)
                    .set_transport(transport);
                if let Some(u) = &c.username {
                    o.set_credentials(
                        u,
                        p.password.as_ref().map(Secret::expose).unwrap_or_default(),
                    );
                }
                let (client, mut el) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
                el.set_network_options(network_options(connect_secs));
                Link::V4(client, el)
            }
            MqttProtocol::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(&p.client_id, host, port);
                o.set_keep_alive(c.keep_alive)
                    .set_clean_start(c.clean_session)
                    .set_max_packet_size(Some(MAX_PACKET as u32))
                    .set_connection_timeout(connect_secs)
                    .set_network_options(network_options(connect_secs))
                    .set_manual_acks(manual_acks)
                    .set_transport(transport);
                if manual_acks {
                    o.set_receive_maximum(u16::try_from(MAX_UNACKED).ok());
                }
                if !c.clean_session {
                    let secs = u32::try_from(c.session_expiry.as_secs()).unwrap_or(u32::MAX);
                    o.set_session_expiry_interval(Some(secs));
                }
                if let Some(u) = &c.username {
                    o.set_credentials(
                        u,
                        p.password.as_ref().map(Secret::expose).unwrap_or_default(),
                    );
                }
                let (client, el) = rumqttc::v5::AsyncClient::new(o, REQUEST_CAPACITY);
                Link::V5(client, el)
            }
        }
    }

    /// Whether the event loop holds events already read (the next poll returns at once).
    fn buffered(&self) -> bool {
        match self {
            Link::V4(_, el) => !el.state.events.is_empty(),
            Link::V5(_, el) => !el.state.events.is_empty(),
        }
    }

    async fn poll(&mut self) -> Result<Ev, String> {
        match self {
            Link::V4(_, el) => {
                use rumqttc::{Event, Packet, SubscribeReasonCode};
                match el.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Ok(Ev::ConnAck {
                        session_present: a.session_present,
                    }),
                    Event::Incoming(Packet::Publish(p)) => Ok(Ev::Publish {
                        ack: (p.qos != rumqttc::QoS::AtMostOnce).then_some(AckId {
                            pkid: p.pkid,
                            exactly_once: p.qos == rumqttc::QoS::ExactlyOnce,
                        }),
                        topic: p.topic,
                        payload: p.payload,
                        retain: p.retain,
                    }),
                    Event::Incoming(Packet::SubAck(s)) => Ok(Ev::SubAck {
                        refused: s
                            .return_codes
                            .iter()
                            .enumerate()
                            .filter(|(_, c)| matches!(c, SubscribeReasonCode::Failure))
                            .map(|(i, _)| i)
                            .collect(),
                    }),
                    Event::Incoming(Packet::Disconnect) => Err("the broker sent DISCONNECT".into()),
                    _ => Ok(Ev::Other),
                }
            }
            Link::V5(_, el) => {
                use rumqttc::v5::Event;
                use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
                match el.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Ok(Ev::ConnAck {
                        session_present: a.session_present,
                    }),
                    Event::Incoming(Packet::Publish(p)) => Ok(Ev::Publish {
                        ack: (p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce).then_some(AckId {
                            pkid: p.pkid,
                            exactly_once: p.qos == rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                        }),
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                        retain: p.retain,
                    }),
                    Event::Incoming(Packet::SubAck(s)) => Ok(Ev::SubAck {
                        refused: s
                            .return_codes
                            .iter()
                            .enumerate()
                            .filter(|(_, c)| !matches!(c, SubscribeReasonCode::Success(_)))
                            .map(|(i, _)| i)
                            .collect(),
                    }),
                    Event::Incoming(Packet::Disconnect(d)) => {
                        Err(format!("the broker sent DISCONNECT ({:?})", d.reason_code))
                    }
                    _ => Ok(Ev::Other),
                }
            }
        }
    }

    fn subscribe(&self, subs: &[(String, u8)]) -> Result<(), String> {
        let qos = |q: u8| {
            if q == 0 {
                rumqttc::QoS::AtMostOnce
            } else {
                rumqttc::QoS::AtLeastOnce
            }
        };
        match self {
            Link::V4(c, _) => c
                .try_subscribe_many(
                    subs.iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos(*q))),
                )
                .map_err(|e| e.to_string()),
            Link::V5(c, _) => c
                .try_subscribe_many(
                    subs.iter()
                        .map(|(f, q)| rumqttc::v5::mqttbytes::v5::Filter::new(f.clone(), qos5(*q)))
                        .collect::<Vec<_>>(),
                )
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues the acknowledgement of a received message (sent by the next polls).
    /// Acknowledges `ids` in order. On an MQTT 3.1.1 link that is connected, the
    /// acknowledgements are written to the connection together and flushed once (one write
    /// for a whole release of receipts instead of one per message, which is most of the cost
    /// of a QoS 1 message otherwise); the same state bookkeeping as the client's own `ack` is
    /// done through the event loop's state. Elsewhere each goes through the client's request
    /// queue. Gives up after `limit` (the connection is then treated as failed).
    async fn ack_all(&mut self, ids: &[AckId], limit: Duration) -> Result<(), String> {
        if let Link::V4(_, el) = self {
            if el.network.is_some() {
                let write = async {
                    for id in ids {
                        let req = if id.exactly_once {
                            rumqttc::Request::PubRec(rumqttc::PubRec::new(id.pkid))
                        } else {
                            rumqttc::Request::PubAck(rumqttc::PubAck::new(id.pkid))
                        };
                        let packet = el
                            .state
                            .handle_outgoing_packet(req)
                            .map_err(|e| e.to_string())?;
                        // The state queued an `Outgoing` notice for the event loop's caller;
                        // nothing reads it here.
                        if matches!(
                            el.state.events.back(),
                            Some(rumqttc::Event::Outgoing(
                                rumqttc::Outgoing::PubAck(_) | rumqttc::Outgoing::PubRec(_)
                            ))
                        ) {
                            el.state.events.pop_back();
                        }
                        if let (Some(packet), Some(net)) = (packet, el.network.as_mut()) {
                            net.write(packet).await.map_err(|e| e.to_string())?;
                        }
                    }
                    match el.network.as_mut() {
                        Some(net) => net.flush().await.map_err(|e| e.to_string()),
                        None => Ok(()),
                    }
                };
                return match tokio::time::timeout(limit, write).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("acknowledgements not written within {limit:?}")),
                };
            }
        }
        for &id in ids {
            self.ack(id)?;
        }
        Ok(())
    }

    fn ack(&self, id: AckId) -> Result<(), String> {
        match self {
            Link::V4(c, _) => {
                let qos = if id.exactly_once {
                    rumqttc::QoS::ExactlyOnce
                } else {
                    rumqttc::QoS::AtLeastOnce
                };
                let mut p = rumqttc::Publish::new("", qos, Vec::new());
                p.pkid = id.pkid;
                c.try_ack(&p).map_err(|e| e.to_string())
            }
            Link::V5(c, _) => {
                use rumqttc::v5::mqttbytes::QoS;
                let qos = if id.exactly_once {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                };
                let mut p = rumqttc::v5::mqttbytes::v5::Publish::new("", qos, Vec::new(), None);
                p.pkid = id.pkid;
                c.try_ack(&p).map_err(|e| e.to_string())
            }
        }
    }

    /// Sends DISCONNECT (so the broker keeps the session cleanly) and waits at most `limit`.
    async fn disconnect(&mut self, limit: Duration) {
        let sent = match self {
            Link::V4(c, _) => c.try_disconnect().is_ok(),
            Link::V5(c, _) => c.try_disconnect().is_ok(),
        };
        if !sent {
            return;
        }
        let _ = tokio::time::timeout(limit, async {
            loop {
                let done = match self {
                    Link::V4(_, el) => match el.poll().await {
                        Err(_) => true,
                        Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => true,
                        Ok(_) => false,
                    },
                    Link::V5(_, el) => match el.poll().await {
                        Err(_) => true,
                        Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => true,
                        Ok(_) => false,
                    },
                };
                if done {
                    return;
                }
            }
        })
        .await;
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    if q == 0 {
        rumqttc::v5::mqttbytes::QoS::AtMostOnce
    } else {
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce
    }
}

/// Logs each kind of message problem at most once per [`LOG_EVERY`], with how many were
/// suppressed in between.
struct LogLimiter {
    last: HashMap<&'static str, (Instant, u64)>,
}

impl LogLimiter {
    fn new() -> Self {
        Self {
            last: HashMap::new(),
        }
    }

    fn log(&mut self, source: &SourceId, topic: &str, issue: &Issue) {
        let kind = issue.kind();
        let now = Instant::now();
        let entry = self
            .last
            .entry(kind)
            .or_insert((now - LOG_EVERY - Duration::from_millis(1), 0));
        if now.duration_since(entry.0) < LOG_EVERY {
            entry.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut entry.1);
        entry.0 = now;
        let detail = match issue {
            Issue::Decode(d) | Issue::TimestampClamped(d) | Issue::TimestampRejected(d) => {
                d.clone()
            }
            Issue::UnknownChannel(c) => format!("channel `{c}` is not declared on this source"),
            Issue::Unmapped => "no topic mapping matches".into(),
            Issue::RetainedIgnored => "retained message ignored (`retained = \"ignore\"`)".into(),
        };
        match issue {
            Issue::RetainedIgnored => {
                debug!(source = %source, topic, detail, "retained MQTT message ignored")
            }
            _ => {
                warn!(source = %source, topic, event = kind, detail, suppressed_since_last = suppressed, "MQTT message not fully usable")
            }
        }
    }
}

/// Runs one MQTT source until `cancel` fires.
///
/// `B` is what the engine's queue carries: [`SampleBatch`] keeps the receipts (end-to-end
/// acknowledgement); a plain `Vec<Sample>` completes them on hand-over.
pub async fn run_source<B: From<SampleBatch> + Send + 'static>(
    p: Prepared,
    tx: mpsc::Sender<B>,
    state: Arc<SharedState>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let id = p.src.id.clone();
    let label = id.to_string();
    let component = crate::telemetry::Component::Source(id.to_string());
    let cfg = &p.src.cfg;
    let subs = p.mapper.subscriptions(cfg);
    let messages = metrics
        .mqtt_messages
        .get_or_create(&labels([("source", &label)]))
        .clone();
    let good = metrics
        .samples
        .get_or_create(&labels([("source", &label), ("quality", "good")]))
        .clone();
    let bad = metrics
        .samples
        .get_or_create(&labels([("source", &label), ("quality", "bad")]))
        .clone();
    let conn = |result: &str| {
        metrics
            .mqtt_connections
            .get_or_create(&labels([("source", &label), ("result", result)]))
            .inc()
    };
    let mut limiter = LogLimiter::new();
    let mut attempt: u32 = 0;
    let mut acks = (cfg.ack == AckPolicy::Durable).then(Acks::new);
    let board = acks.as_ref().map(|a| a.board.clone());
    let acked = metrics
        .mqtt_acks
        .get_or_create(&labels([("source", &label)]))
        .clone();
    let unacked = metrics
        .mqtt_unacked
        .get_or_create(&labels([("source", &label)]))
        .clone();
    unacked.set(0);

    // Samples of messages already read and not yet handed to the engine: the messages the
    // event loop has buffered (it reads up to ten packets at a time) go to the engine as one
    // batch, handed over as soon as nothing more is buffered (no waiting for more).
    let mut pend: Vec<Sample> = Vec::new();
    let mut pend_r: Vec<Receipt> = Vec::new();
    'link: loop {
        if !hand(&tx, &cancel, &mut pend, &mut pend_r, &metrics).await {
            return;
        }
        let mut link = Link::new(&p);
        let mut suback_due: Option<tokio::time::Instant> = None;
        if let Some(a) = acks.as_mut() {
            a.reset();
            unacked.set(0);
        }
        loop {
            let due = suback_due;
            let full = acks.as_ref().is_some_and(Acks::full);
            if !pend.is_empty() && (full || !link.buffered() || pend.len() >= SOURCE_BATCH) {
                if !hand(&tx, &cancel, &mut pend, &mut pend_r, &metrics).await {
                    link.disconnect(Duration::from_secs(1)).await;
                    return;
                }
                continue;
            }
            let ev = tokio::select! {
                () = cancel.cancelled() => {
                    link.disconnect(Duration::from_secs(1)).await;
                    return;
                }
                () = async { match due { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    conn("subscribe_timeout");
                    warn!(source = %id, timeout = ?cfg.subscribe_timeout, "no SUBACK from the broker in time; reconnecting");
                    state.health.fail(&component, format!("no SUBACK within {:?}", cfg.subscribe_timeout));
                    if !pause(&cancel, &mut attempt, cfg.backoff_max).await {
                        return;
                    }
                    continue 'link;
                }
                () = async { match &board { Some(b) => b.notified().await, None => std::future::pending().await } } => {
                    if let Some(a) = acks.as_mut() {
                        let ready = a.ready();
                        unacked.set(i64::try_from(a.pending.len()).unwrap_or(i64::MAX));
                        if let Err(e) = link.ack_all(&ready, cfg.connect_timeout).await {
                            // The broker sends the unacknowledged messages again after a
                            // reconnect (at least once).
                            conn("error");
                            warn!(source = %id, address = %cfg.address, error = %e, "cannot send acknowledgements; reconnecting");
                            state.health.fail(&component, format!("MQTT {}: {e}", cfg.address));
                            if !pause(&cancel, &mut attempt, cfg.backoff_max).await {
                                return;
                            }
                            continue 'link;
                        }
                        acked.inc_by(ready.len() as u64);
                    }
                    continue;
                }
                ev = link.poll(), if !full => ev,
            };
            match ev {
                Ok(Ev::ConnAck { session_present }) => {
                    if let Some(a) = acks.as_mut() {
                        a.reset();
                        unacked.set(0);
                    }
                    conn("connected");
                    info!(source = %id, address = %cfg.address, session_present, filters = subs.len(), "connected; subscribing");
                    match link.subscribe(&subs) {
                        Ok(()) => {
                            suback_due = Some(tokio::time::Instant::now() + cfg.subscribe_timeout)
                        }
                        Err(e) => {
                            // Cannot happen with a fresh request queue; reconnect to be sure.
                            warn!(source = %id, error = %e, "cannot queue SUBSCRIBE; reconnecting");
                            continue 'link;
                        }
                    }
                }
                Ok(Ev::SubAck { refused }) => {
                    suback_due = None;
                    if refused.is_empty() {
                        attempt = 0;
                        state.health.ok(&component);
                        debug!(source = %id, "subscribed");
                    } else {
                        conn("subscribe_failed");
                        let names: Vec<&str> = refused
                            .iter()
                            .filter_map(|&i| subs.get(i).map(|s| s.0.as_str()))
                            .collect();
                        error!(source = %id, filters = ?names, "the broker refused subscriptions: their channels will go stale; check the broker's ACL");
                        state.health.fail(
                            &component,
                            format!("subscriptions refused by the broker: {}", names.join(", ")),
                        );
                    }
                }
                Ok(Ev::Publish {
                    topic,
                    payload,
                    retain,
                    ack,
                }) => {
                    messages.inc();
                    // Dropped unused on every path that yields no samples: such a message is
                    // acknowledged in its turn, once counted.
                    let receipt = match (acks.as_mut(), ack) {
                        (Some(a), Some(id)) => {
                            let r = a.track(id);
                            unacked.set(i64::try_from(a.pending.len()).unwrap_or(i64::MAX));
                            Some(r)
                        }
                        _ => None,
                    };
                    if retain && cfg.retained == Retained::Ignore {
                        let issue = Issue::RetainedIgnored;
                        metrics
                            .mqtt_events
                            .get_or_create(&labels([("source", &label), ("event", issue.kind())]))
                            .inc();
                        limiter.log(&id, &topic, &issue);
                        continue;
                    }
                    let out = p.mapper.map(&topic, &payload, SystemTime::now());
                    for issue in &out.issues {
                        metrics
                            .mqtt_events
                            .get_or_create(&labels([("source", &label), ("event", issue.kind())]))
                            .inc();
                        limiter.log(&id, &topic, issue);
                    }
                    if out.samples.is_empty() {
                        if out.issues.is_empty() {
                            debug!(source = %id, topic, payload = %excerpt(&payload), "message without samples");
                        }
                        continue;
                    }
                    for s in &out.samples {
                        if s.reading.value().is_some() {
                            good.inc()
                        } else {
                            bad.inc()
                        };
                    }
                    pend.extend(out.samples);
                    pend_r.extend(receipt);
                }
                Ok(Ev::Other) => {}
                Err(e) => {
                    conn("error");
                    suback_due = None;
                    if let Some(a) = acks.as_mut() {
                        a.reset();
                        unacked.set(0);
                    }
                    warn!(source = %id, address = %cfg.address, error = %e, attempt, "MQTT connection failed; reconnecting after a backoff");
                    state
                        .health
                        .fail(&component, format!("MQTT {}: {e}", cfg.address));
                    if !pause(&cancel, &mut attempt, cfg.backoff_max).await {
                        return;
                    }
                }
            }
        }
    }
}

/// The TCP options of a source's broker connection: the connect timeout, and no Nagle delay.
/// With Nagle's algorithm on, a small write (a batch of PUBACKs) waits for the broker's
/// acknowledgement of the previous one, which the broker may delay by up to 40 ms: the broker's
/// window of messages in flight then stalls and every reading, alarms included, waits.
fn network_options(connect_secs: u64) -> rumqttc::NetworkOptions {
    let mut no = rumqttc::NetworkOptions::new();
    no.set_connection_timeout(connect_secs);
    no.set_tcp_nodelay(true);
    no
}

/// At most this many samples wait in a source for the messages buffered behind them.
const SOURCE_BATCH: usize = 1024;

/// Hands the pending samples (with their receipts, held as one) to the engine; waits while the
/// sample queue is full. `false` when cancelled or the engine is gone.
async fn hand<B: From<SampleBatch>>(
    tx: &mpsc::Sender<B>,
    cancel: &CancellationToken,
    samples: &mut Vec<Sample>,
    receipts: &mut Vec<Receipt>,
    metrics: &Metrics,
) -> bool {
    if samples.is_empty() {
        receipts.clear();
        return true;
    }
    if tx.capacity() == 0 {
        metrics.sample_queue_full.inc();
    }
    let batch = SampleBatch {
        samples: std::mem::take(samples),
        receipt: Receipt::all(std::mem::take(receipts)),
    };
    tokio::select! {
        () = cancel.cancelled() => false,
        r = tx.send(B::from(batch)) => r.is_ok(),
    }
}

/// Sleeps the jittered backoff for `attempt` (then counts it); `false` when cancelled.
async fn pause(cancel: &CancellationToken, attempt: &mut u32, cap: Duration) -> bool {
    let wait = crate::backoff::backoff(*attempt, Duration::from_millis(200), cap);
    *attempt = attempt.saturating_add(1);
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(pkid: u16) -> AckId {
        AckId {
            pkid,
            exactly_once: false,
        }
    }

    #[test]
    fn acknowledgements_go_out_in_received_order_up_to_the_first_incomplete() {
        let mut a = Acks::new();
        let r1 = a.track(id(11));
        let r2 = a.track(id(12));
        let r3 = a.track(id(13));
        drop(r2);
        drop(r3);
        assert!(a.ready().is_empty(), "message 11 is not durable yet");
        drop(r1);
        let out: Vec<u16> = a.ready().iter().map(|i| i.pkid).collect();
        assert_eq!(out, vec![11, 12, 13]);
        assert!(a.pending.is_empty());
    }

    #[test]
    fn after_a_reset_old_receipts_acknowledge_nothing() {
        let mut a = Acks::new();
        let old = a.track(id(5));
        a.reset();
        let new = a.track(id(5));
        drop(old);
        assert!(
            a.ready().is_empty(),
            "the old connection's message is not acknowledged on the new one"
        );
        drop(new);
        assert_eq!(a.ready().len(), 1);
    }

    #[test]
    fn the_window_is_bounded() {
        let mut a = Acks::new();
        let held: Vec<Receipt> = (0..MAX_UNACKED).map(|i| a.track(id(i as u16))).collect();
        assert!(a.full());
        drop(held);
        assert_eq!(a.ready().len(), MAX_UNACKED);
        assert!(!a.full());
    }
}
