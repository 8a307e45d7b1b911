//! The optional embedded MQTT broker (rumqttd), for sites without one: data units publish
//! straight to the gateway, and an MQTT source subscribes to it like to any broker.
//!
//! Invariants and limits:
//! - Started before the sources, so a source pointed at it connects on its first try.
//! - Its listen address is checked by binding it first: a port already in use fails start-up
//!   with the address, instead of a log line from a broker thread. Port 0 picks a free port
//!   (reported by [`BrokerHandle::local_addr`]).
//! - Memory is bounded ([`EmbeddedBroker::memory_bound`]): clients reach rumqttd only through
//!   the guard (`broker_guard`), which strips retain flags and caps distinct topics, filters
//!   and client ids, packet size and connections; rumqttd itself keeps per-filter commit logs
//!   of at most `segment_size × segment_count` bytes, `max_inflight` and `max_queued` packets
//!   per client. rumqttd listens on an internal 127.0.0.1 port.
//! - rumqttd 0.20 has no shutdown: the broker runs on its own threads until the process exits.
//!   Its sessions live in memory only (a gateway restart loses what it queued).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info};

use super::broker_guard::{self, Limits};
use crate::check::Problems;
use crate::config::mqtt::EmbeddedBroker;
use crate::secret::Secret;
use crate::telemetry::Metrics;

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is not usable.
    #[error("mqtt_broker.{field}: cannot listen on {addr}: {source}")]
    Bind {
        /// `listen` or `listen_v5`.
        field: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The broker thread did not come up.
    #[error("embedded MQTT broker did not accept connections on {0} within 5 s")]
    NotReady(SocketAddr),
    /// The broker thread could not be spawned.
    #[error("cannot start the embedded MQTT broker thread: {0}")]
    Thread(std::io::Error),
}

/// A running embedded broker.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    local_addr_v5: Option<SocketAddr>,
    thread: JoinHandle<()>,
}

impl BrokerHandle {
    /// The MQTT 3.1.1 listener's address (with the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The MQTT 5 listener's address, when configured.
    pub fn local_addr_v5(&self) -> Option<SocketAddr> {
        self.local_addr_v5
    }

    /// Whether the broker's thread is still running.
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }
}

/// Binds `addr` (port 0 = any free port) for the guard.
fn bind(field: &'static str, addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr).map_err(|source| BrokerError::Bind {
        field,
        addr,
        source,
    })
}

/// A free internal loopback port for rumqttd (bound and released).
fn internal() -> Result<SocketAddr, BrokerError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    bind("listen", addr)?
        .local_addr()
        .map_err(|source| BrokerError::Bind {
            field: "listen",
            addr,
            source,
        })
}

fn local(
    field: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, BrokerError> {
    l.local_addr().map_err(|source| BrokerError::Bind {
        field,
        addr,
        source,
    })
}

fn server(
    name: &str,
    listen: SocketAddr,
    cfg: &EmbeddedBroker,
    auth: &Option<HashMap<String, String>>,
) -> ServerSettings {
    ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: u16::try_from(cfg.connection_timeout.as_millis())
                .unwrap_or(u16::MAX),
            max_payload_size: cfg.max_payload_size,
            max_inflight_count: cfg.max_inflight,
            auth: auth.clone(),
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// The embedded broker's client login (user name and password), when it has one: the password
/// is read here, once, with the configuration's other secrets; unreadable, it is reported at
/// `mqtt_broker.password`.
pub fn resolve_login(cfg: &EmbeddedBroker, p: &mut Problems) -> Option<(String, Secret)> {
    match (&cfg.username, &cfg.password) {
        (Some(u), Some(s)) => s
            .resolve_at("mqtt_broker.password", p)
            .map(|s| (u.clone(), s)),
        _ => None,
    }
}

/// Starts the embedded broker with its client `login` (see [`resolve_login`]) and waits (at
/// most 5 s) until it accepts connections. Refusals are counted in
/// `metrics.mqtt_broker_refused`.
pub async fn start_broker(
    cfg: &EmbeddedBroker,
    login: Option<(String, Secret)>,
    metrics: &Metrics,
) -> Result<BrokerHandle, BrokerError> {
    let auth = login.map(|(u, s)| HashMap::from([(u, s.expose().to_owned())]));
    // The guard owns the configured addresses; rumqttd listens on internal loopback ports.
    let listener = bind("listen", cfg.listen)?;
    let local_addr = local("listen", &listener, cfg.listen)?;
    let listener_v5 = cfg.listen_v5.map(|a| bind("listen_v5", a)).transpose()?;
    let local_addr_v5 = match (&listener_v5, cfg.listen_v5) {
        (Some(l), Some(a)) => Some(local("listen_v5", l, a)?),
        _ => None,
    };
    let inner = internal()?;
    let inner_v5 = listener_v5.as_ref().map(|_| internal()).transpose()?;
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: cfg.max_connections,
            max_outgoing_packet_count: cfg.max_queued,
            max_segment_size: cfg.segment_size.max(cfg.max_payload_size),
            max_segment_count: cfg.segment_count,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([(
            "1".to_owned(),
            server("hazgate-v4", inner, cfg, &auth),
        )])),
        v5: inner_v5
            .map(|a| HashMap::from([("1".to_owned(), server("hazgate-v5", a, cfg, &auth))])),
        ..Config::default()
    };
    let thread = std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                error!(error = %e, "embedded MQTT broker stopped: data units cannot publish to the gateway");
            }
        })
        .map_err(BrokerError::Thread)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for addr in std::iter::once(inner).chain(inner_v5) {
        loop {
            let probe = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            if matches!(probe, Ok(Ok(_))) {
                break;
            }
            if tokio::time::Instant::now() > deadline || thread.is_finished() {
                return Err(BrokerError::NotReady(addr));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let limits = Limits {
        max_packet: cfg.max_payload_size,
        max_topic_length: cfg.max_topic_length,
        max_topics: cfg.max_topics,
        max_filters: cfg.max_filters,
        max_sessions: cfg.max_sessions,
        max_connections: cfg.max_connections,
        connect_timeout: cfg.connection_timeout,
        credentials: auth
            .as_ref()
            .and_then(|a| a.iter().next())
            .map(|(u, p)| (u.clone(), p.clone())),
    };
    for (l, up, field, addr) in std::iter::once((listener, inner, "listen", local_addr)).chain(
        listener_v5
            .zip(inner_v5)
            .map(|(l, up)| (l, up, "listen_v5", local_addr_v5.unwrap_or(local_addr))),
    ) {
        broker_guard::spawn(l, up, limits.clone(), metrics.mqtt_broker_refused.clone()).map_err(
            |source| BrokerError::Bind {
                field,
                addr,
                source,
            },
        )?;
    }
    info!(listen = %local_addr, listen_v5 = ?local_addr_v5, authenticated = auth.is_some(), "embedded MQTT broker started");
    Ok(BrokerHandle {
        local_addr,
        local_addr_v5,
        thread,
    })
}
