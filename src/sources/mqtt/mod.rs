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

pub mod broker;
mod broker_guard;
pub mod mapping;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::Secret;
use crate::config::mqtt::{MqttProtocol, MqttSource, Retained};
use crate::model::{Sample, SourceId};
use crate::state::SharedState;
use crate::telemetry::{Metrics, labels};

use self::mapping::{Issue, Mapper, excerpt};

/// Largest MQTT packet accepted or sent (data-unit messages with many records can exceed the
/// client library's 10 KiB default).
const MAX_PACKET: usize = 1 << 20;
/// Requests queued for the event loop (only SUBSCRIBE and DISCONNECT go through it).
const REQUEST_CAPACITY: usize = 64;
/// Minimum interval between two log lines of one kind of message problem.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// An MQTT source after validation.
#[derive(Clone, Debug)]
pub struct ResolvedMqttSource {
    /// Source id.
    pub id: SourceId,
    /// Index in `sources[]`, for messages with a config path.
    pub index: usize,
    /// Settings, topic mappings and channels.
    pub cfg: MqttSource,
}

/// A source with its secret and TLS files read, ready to run.
#[derive(Clone)]
pub struct Prepared {
    src: ResolvedMqttSource,
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
        src: src.clone(),
        client_id: c
            .client_id
            .clone()
            .unwrap_or_else(|| format!("hazgate-{site}-{}", src.id)),
        password,
        tls,
        mapper: Arc::new(mapper),
    })
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
                    .set_transport(transport);
                if let Some(u) = &c.username {
                    o.set_credentials(
                        u,
                        p.password.as_ref().map(Secret::expose).unwrap_or_default(),
                    );
                }
                let (client, mut el) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
                let mut no = rumqttc::NetworkOptions::new();
                no.set_connection_timeout(connect_secs);
                el.set_network_options(no);
                Link::V4(client, el)
            }
            MqttProtocol::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(&p.client_id, host, port);
                o.set_keep_alive(c.keep_alive)
                    .set_clean_start(c.clean_session)
                    .set_max_packet_size(Some(MAX_PACKET as u32))
                    .set_connection_timeout(connect_secs)
                    .set_transport(transport);
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

    async fn poll(&mut self) -> Result<Ev, String> {
        match self {
            Link::V4(_, el) => {
                use rumqttc::{Event, Packet, SubscribeReasonCode};
                match el.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Ok(Ev::ConnAck {
                        session_present: a.session_present,
                    }),
                    Event::Incoming(Packet::Publish(p)) => Ok(Ev::Publish {
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
pub async fn run_source(
    p: Prepared,
    tx: mpsc::Sender<Vec<Sample>>,
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

    'link: loop {
        let mut link = Link::new(&p);
        let mut suback_due: Option<tokio::time::Instant> = None;
        loop {
            let due = suback_due;
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
                ev = link.poll() => ev,
            };
            match ev {
                Ok(Ev::ConnAck { session_present }) => {
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
                }) => {
                    messages.inc();
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
                    if tx.capacity() == 0 {
                        metrics.sample_queue_full.inc();
                    }
                    tokio::select! {
                        () = cancel.cancelled() => {
                            link.disconnect(Duration::from_secs(1)).await;
                            return;
                        }
                        r = tx.send(out.samples) => if r.is_err() { return; }
                    }
                }
                Ok(Ev::Other) => {}
                Err(e) => {
                    conn("error");
                    suback_due = None;
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

/// Sleeps the jittered backoff for `attempt` (then counts it); `false` when cancelled.
async fn pause(cancel: &CancellationToken, attempt: &mut u32, cap: Duration) -> bool {
    let wait = crate::sources::backoff(*attempt, Duration::from_millis(200), cap);
    *attempt = attempt.saturating_add(1);
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}
