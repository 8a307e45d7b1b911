//! The optional embedded MQTT broker (rumqttd), for sites without one: data units publish
//! straight to the gateway, and an MQTT source subscribes to it like to any broker.
//!
//! Invariants and limits:
//! - Started before the sources, so a source pointed at it connects on its first try.
//! - Its listen address is checked by binding it first: a port already in use fails start-up
//!   with the address, instead of a log line from a broker thread. Port 0 picks a free port
//!   (reported by [`BrokerHandle::local_addr`]).
//! - Memory is bounded: per-filter commit logs of at most `SEGMENT_SIZE × SEGMENT_COUNT` bytes,
//!   payloads of at most `max_payload_size`, at most `max_connections` clients.
//! - rumqttd 0.20 has no shutdown: the broker runs on its own threads until the process exits.
//!   Its sessions live in memory only (a gateway restart loses what it queued).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info};

use crate::config::mqtt::EmbeddedBroker;

/// Bytes per commit-log segment of one topic filter.
const SEGMENT_SIZE: usize = 1 << 20;
/// Segments kept per topic filter.
const SEGMENT_COUNT: usize = 10;

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The password could not be read.
    #[error("mqtt_broker.password: {0}")]
    Secret(String),
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

/// Picks the concrete address: binds `addr` (port 0 = any free port) and releases it.
fn claim(field: &'static str, addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .map_err(|source| BrokerError::Bind {
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
            max_inflight_count: 100,
            auth: auth.clone(),
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// Starts the embedded broker and waits (at most 5 s) until it accepts connections.
pub async fn start_broker(cfg: &EmbeddedBroker) -> Result<BrokerHandle, BrokerError> {
    let auth = match (&cfg.username, &cfg.password) {
        (Some(u), Some(p)) => {
            let secret = p.resolve().map_err(BrokerError::Secret)?;
            Some(HashMap::from([(u.clone(), secret.expose().to_owned())]))
        }
        _ => None,
    };
    let local_addr = claim("listen", cfg.listen)?;
    let local_addr_v5 = cfg.listen_v5.map(|a| claim("listen_v5", a)).transpose()?;
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: cfg.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT_SIZE.max(cfg.max_payload_size * 2),
            max_segment_count: SEGMENT_COUNT,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([(
            "1".to_owned(),
            server("hazgate-v4", local_addr, cfg, &auth),
        )])),
        v5: local_addr_v5
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
    for addr in std::iter::once(local_addr).chain(local_addr_v5) {
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
    info!(listen = %local_addr, listen_v5 = ?local_addr_v5, authenticated = auth.is_some(), "embedded MQTT broker started");
    Ok(BrokerHandle {
        local_addr,
        local_addr_v5,
        thread,
    })
}
