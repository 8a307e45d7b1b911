//! The embedded broker's guard: a small MQTT-aware TCP relay in front of rumqttd that keeps
//! the broker's memory bounded.
//!
//! rumqttd 0.20 keeps every retained message, a per-topic entry for every distinct topic that
//! matched a subscription, a commit log per distinct subscription filter and a record per
//! distinct client id, all until the process exits, and has no hook to refuse any of them. The
//! guard listens on the configured address, relays each client to rumqttd on an internal
//! loopback port, and reads just enough of each packet from the client to enforce:
//!
//! - **No retained storage**: the retain flag of every PUBLISH and of the CONNECT will is
//!   cleared, so the broker stores none; a retained publish reaches current subscribers as an
//!   ordinary message (the gateway needs live readings only).
//! - **Topics**: at most `max_topics` distinct topic names (each at most `max_topic_length`
//!   bytes) over the broker's life; a publish to a new topic beyond that closes the client's
//!   connection.
//! - **Filters**: at most `max_filters` distinct subscription filters (each a commit log of at
//!   most `segment_size × segment_count` bytes); a SUBSCRIBE with a new filter beyond that
//!   closes the connection.
//! - **Sessions**: at most `max_sessions` distinct client ids; a new one beyond that gets a
//!   CONNACK refusal (3.1.1: server unavailable, 5: quota exceeded). An empty client id is
//!   refused (rumqttd would invent a new id, and keep a record of it, for every connection),
//!   and so is one longer than `max_topic_length`.
//! - **Credentials** are checked here, before anything is counted, so clients without them
//!   cannot use up the limits.
//! - **Packets** larger than `max_payload_size` close the connection before they are read;
//!   publishes are streamed through, never buffered whole. Only CONNECT and SUBSCRIBE packets
//!   are held in memory (bounded by the same size).
//! - **Connections**: at most `max_connections` at a time; further ones are closed at once.
//!   The CONNECT must arrive within `connection_timeout`.
//!
//! Refusals are counted (`hazgate_mqtt_broker_refused_total{reason}`) and logged at WARN, at
//! most once per 10 s per kind with a count of those not logged. The internal port listens on 127.0.0.1 only: processes on the gateway host itself
//! are trusted not to bypass the guard.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::telemetry::Labels;

/// How often each kind of refusal is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits the guard enforces (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_packet: usize,
    pub max_topic_length: usize,
    pub max_topics: usize,
    pub max_filters: usize,
    pub max_sessions: usize,
    pub max_connections: usize,
    pub connect_timeout: Duration,
    /// `(username, password)` clients must give, when the broker is not anonymous.
    pub credentials: Option<(String, String)>,
}

/// Why a client was cut off.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("packet of {0} bytes is larger than max_payload_size")]
    TooLarge(usize),
    #[error("topic of {0} bytes is longer than max_topic_length")]
    TopicTooLong(usize),
    #[error("new topic beyond max_topics")]
    Topics,
    #[error("new subscription filter beyond max_filters")]
    Filters,
    #[error("new client id beyond max_sessions")]
    Sessions,
    #[error("empty client id")]
    EmptyClientId,
    #[error("client id of {0} bytes is longer than max_topic_length")]
    ClientIdTooLong(usize),
    #[error("wrong or missing credentials")]
    Credentials,
    #[error("malformed packet")]
    Malformed,
    #[error("first packet is not CONNECT")]
    NotConnect,
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

impl Refusal {
    fn kind(&self) -> &'static str {
        match self {
            Refusal::TooLarge(_) => "packet_too_large",
            Refusal::TopicTooLong(_) => "topic_too_long",
            Refusal::Topics => "max_topics",
            Refusal::Filters => "max_filters",
            Refusal::Sessions => "max_sessions",
            Refusal::EmptyClientId => "empty_client_id",
            Refusal::ClientIdTooLong(_) => "client_id_too_long",
            Refusal::Credentials => "credentials",
            Refusal::Malformed | Refusal::NotConnect => "malformed",
            Refusal::Io(_) => "io",
        }
    }
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    upstream: SocketAddr,
    topics: Mutex<HashSet<Box<[u8]>>>,
    filters: Mutex<HashSet<Box<[u8]>>>,
    sessions: Mutex<HashSet<Box<[u8]>>>,
    connections: Arc<Semaphore>,
    log: Mutex<Vec<(&'static str, Instant, u64)>>,
    refused: Family<Labels, Counter>,
}

/// Adds `key` to `set` unless it is new and the set already holds `max` keys.
fn admit(set: &Mutex<HashSet<Box<[u8]>>>, key: &[u8], max: usize) -> bool {
    let mut s = set.lock().unwrap_or_else(|p| p.into_inner());
    if s.contains(key) {
        return true;
    }
    if s.len() >= max {
        return false;
    }
    s.insert(key.into());
    true
}

impl Shared {
    fn refused(&self, peer: SocketAddr, r: &Refusal) {
        if matches!(r, Refusal::Io(_)) {
            debug!(%peer, error = %r, "embedded MQTT broker: client connection ended");
            return;
        }
        let kind = r.kind();
        self.refused
            .get_or_create(&vec![("reason", kind.to_owned())])
            .inc();
        let now = Instant::now();
        let suppressed = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            match log.iter_mut().find(|e| e.0 == kind) {
                Some(e) if now.duration_since(e.1) < LOG_EVERY => {
                    e.2 += 1;
                    return;
                }
                Some(e) => {
                    e.1 = now;
                    std::mem::take(&mut e.2)
                }
                None => {
                    log.push((kind, now, 0));
                    0
                }
            }
        };
        warn!(%peer, reason = kind, suppressed_since_last = suppressed, "embedded MQTT broker refused a client: {r}");
    }
}

/// Starts the guard on `listener`, relaying to rumqttd at `upstream`. Runs until the process
/// exits (like rumqttd itself).
pub(crate) fn spawn(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    limits: Limits,
    refused: Family<Labels, Counter>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let shared = Arc::new(Shared {
        connections: Arc::new(Semaphore::new(limits.max_connections)),
        limits,
        upstream,
        topics: Mutex::default(),
        filters: Mutex::default(),
        sessions: Mutex::default(),
        log: Mutex::default(),
        refused,
    });
    tokio::spawn(async move {
        loop {
            let (client, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "embedded MQTT broker cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                shared
                    .refused
                    .get_or_create(&vec![("reason", "max_connections".to_owned())])
                    .inc();
                debug!(%peer, "embedded MQTT broker: max_connections reached, connection closed");
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(r) = serve(client, &shared).await {
                    shared.refused(peer, &r);
                }
                drop(permit);
            });
        }
    });
    Ok(())
}

/// Reads a fixed header: the first byte and the remaining length. `None` at a clean end.
async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(u8, usize)>, Refusal> {
    let first = match r.read_u8().await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut len = 0usize;
    for i in 0..4 {
        let b = r.read_u8().await?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((first, len)));
        }
    }
    Err(Refusal::Malformed)
}

fn encode_header(first: u8, mut len: usize, out: &mut Vec<u8>) {
    out.push(first);
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

/// A cursor over a buffered packet body.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        if self.0.len() < n {
            return Err(Refusal::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Refusal> {
        Ok(self.take(1)?[0])
    }
    fn string(&mut self) -> Result<&'a [u8], Refusal> {
        let n = self.take(2)?;
        self.take(usize::from(u16::from_be_bytes([n[0], n[1]])))
    }
    fn varint(&mut self) -> Result<usize, Refusal> {
        let mut v = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            v |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Refusal::Malformed)
    }
    /// MQTT 5 properties: skipped.
    fn properties(&mut self) -> Result<(), Refusal> {
        let n = self.varint()?;
        self.take(n).map(|_| ())
    }
    fn offset_in(&self, whole: &[u8]) -> usize {
        whole.len() - self.0.len()
    }
}

/// What the guard needs from a CONNECT.
#[derive(Debug, PartialEq)]
struct Connect<'a> {
    v5: bool,
    /// Offset of the connect-flags byte in the body.
    flags_at: usize,
    client_id: &'a [u8],
    username: Option<&'a [u8]>,
    password: Option<&'a [u8]>,
}

fn parse_connect(body: &[u8]) -> Result<Connect<'_>, Refusal> {
    let mut c = Cursor(body);
    c.string()?;
    let level = c.u8()?;
    let v5 = level == 5;
    let flags_at = c.offset_in(body);
    let flags = c.u8()?;
    c.take(2)?;
    if v5 {
        c.properties()?;
    }
    let client_id = c.string()?;
    if flags & 0x04 != 0 {
        if v5 {
            c.properties()?;
        }
        c.string()?;
        c.string()?;
    }
    let username = if flags & 0x80 != 0 {
        Some(c.string()?)
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(c.string()?)
    } else {
        None
    };
    Ok(Connect {
        v5,
        flags_at,
        client_id,
        username,
        password,
    })
}

/// The filters of a SUBSCRIBE body.
fn parse_subscribe(body: &[u8], v5: bool) -> Result<Vec<&[u8]>, Refusal> {
    let mut c = Cursor(body);
    c.take(2)?;
    if v5 {
        c.properties()?;
    }
    let mut filters = Vec::new();
    while !c.0.is_empty() {
        filters.push(c.string()?);
        c.u8()?;
    }
    if filters.is_empty() {
        return Err(Refusal::Malformed);
    }
    Ok(filters)
}

async fn serve(client: TcpStream, shared: &Shared) -> Result<(), Refusal> {
    let limits = &shared.limits;
    let _ = client.set_nodelay(true);
    let (cr, mut cw) = client.into_split();
    let mut cr = BufReader::with_capacity(8 * 1024, cr);
    let connect = tokio::time::timeout(limits.connect_timeout, async {
        // Closed before a first byte (a port check, a health probe): nothing to refuse.
        let Some((first, len)) = read_header(&mut cr).await? else {
            return Ok(None);
        };
        if first >> 4 != 1 {
            return Err(Refusal::NotConnect);
        }
        if len > limits.max_packet {
            return Err(Refusal::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        cr.read_exact(&mut body).await?;
        Ok(Some((first, body)))
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
    let Some((first, mut body)) = connect? else {
        return Ok(());
    };
    let c = parse_connect(&body)?;
    let v5 = c.v5;
    // CONNACK refusals: 3.1.1 return code or MQTT 5 reason code.
    let refuse = |v4: u8, v5code: u8| {
        if v5 {
            vec![0x20, 3, 0, v5code, 0]
        } else {
            vec![0x20, 2, 0, v4]
        }
    };
    let verdict = if let Some((user, pass)) = &limits.credentials {
        (c.username != Some(user.as_bytes()) || c.password != Some(pass.as_bytes()))
            .then(|| (Refusal::Credentials, refuse(5, 0x87)))
    } else {
        None
    }
    .or_else(|| {
        c.client_id
            .is_empty()
            .then(|| (Refusal::EmptyClientId, refuse(2, 0x85)))
    })
    .or_else(|| {
        (c.client_id.len() > limits.max_topic_length)
            .then(|| (Refusal::ClientIdTooLong(c.client_id.len()), refuse(2, 0x85)))
    })
    .or_else(|| {
        (!admit(&shared.sessions, c.client_id, limits.max_sessions))
            .then(|| (Refusal::Sessions, refuse(3, 0x97)))
    });
    if let Some((why, connack)) = verdict {
        let _ = tokio::time::timeout(limits.connect_timeout, cw.write_all(&connack)).await;
        return Err(why);
    }
    // The will is never retained.
    let flags_at = c.flags_at;
    body[flags_at] &= !0x20;

    let upstream =
        tokio::time::timeout(limits.connect_timeout, TcpStream::connect(shared.upstream))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = upstream.set_nodelay(true);
    let (mut ur, uw) = upstream.into_split();
    let mut uw = BufWriter::with_capacity(8 * 1024, uw);
    let mut head = Vec::with_capacity(8);
    encode_header(first, body.len(), &mut head);
    uw.write_all(&head).await?;
    uw.write_all(&body).await?;
    drop(body);
    let down = async {
        tokio::io::copy(&mut ur, &mut cw).await?;
        Ok::<(), Refusal>(())
    };
    tokio::select! {
        r = down => r,
        r = relay(&mut cr, &mut uw, shared, v5) => r,
    }
}

/// Relays the client's packets after CONNECT, enforcing the limits.
async fn relay<R, W>(
    cr: &mut BufReader<R>,
    uw: &mut W,
    shared: &Shared,
    v5: bool,
) -> Result<(), Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = &shared.limits;
    let mut head = Vec::with_capacity(8);
    loop {
        // Flush before waiting for the client, not after every small packet.
        if cr.buffer().is_empty() {
            uw.flush().await?;
        }
        let Some((first, len)) = read_header(cr).await? else {
            uw.flush().await?;
            return Ok(());
        };
        if len > limits.max_packet {
            return Err(Refusal::TooLarge(len));
        }
        head.clear();
        let rest = match first >> 4 {
            3 => {
                if len < 2 {
                    return Err(Refusal::Malformed);
                }
                let tlen = usize::from(cr.read_u16().await?);
                if tlen > limits.max_topic_length {
                    return Err(Refusal::TopicTooLong(tlen));
                }
                if tlen + 2 > len {
                    return Err(Refusal::Malformed);
                }
                let mut topic = vec![0u8; tlen];
                cr.read_exact(&mut topic).await?;
                if !admit(&shared.topics, &topic, limits.max_topics) {
                    return Err(Refusal::Topics);
                }
                // Never retained.
                encode_header(first & !0x01, len, &mut head);
                head.extend_from_slice(&(tlen as u16).to_be_bytes());
                head.extend_from_slice(&topic);
                uw.write_all(&head).await?;
                len - 2 - tlen
            }
            8 => {
                let mut body = vec![0u8; len];
                cr.read_exact(&mut body).await?;
                for f in parse_subscribe(&body, v5)? {
                    if !admit(&shared.filters, f, limits.max_filters) {
                        return Err(Refusal::Filters);
                    }
                }
                encode_header(first, len, &mut head);
                uw.write_all(&head).await?;
                uw.write_all(&body).await?;
                0
            }
            _ => {
                encode_header(first, len, &mut head);
                uw.write_all(&head).await?;
                len
            }
        };
        if rest > 0 {
            let copied = tokio::io::copy(&mut (&mut *cr).take(rest as u64), uw).await?;
            if copied != rest as u64 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_connect(flags: u8, id: &str, extra: &[&str]) -> Vec<u8> {
        let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60];
        for s in std::iter::once(id).chain(extra.iter().copied()) {
            b.extend_from_slice(&(s.len() as u16).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        b
    }

    #[test]
    fn connect_fields_are_found_with_and_without_will_and_credentials() {
        let b = v4_connect(0x02, "dtu-1", &[]);
        let c = parse_connect(&b).expect("parse");
        assert_eq!(
            (c.v5, c.flags_at, c.client_id, c.username, c.password),
            (false, 7, &b"dtu-1"[..], None, None)
        );
        // Will (retained) + user + password.
        let b = v4_connect(0x04 | 0x20 | 0x80 | 0x40, "d", &["will/t", "bye", "u", "p"]);
        let c = parse_connect(&b).expect("parse");
        assert_eq!((c.username, c.password), (Some(&b"u"[..]), Some(&b"p"[..])));
        // MQTT 5: properties after keep-alive and before the will.
        let mut b = vec![
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            5,
            0x04 | 0x80,
            0,
            60,
            5,
            0x11,
            0,
            0,
            0,
            10,
        ];
        b.extend_from_slice(&[0, 1, b'x', 0, 0, 1, b't', 0, 1, b'w', 0, 2, b'u', b'5']);
        let c = parse_connect(&b).expect("parse v5");
        assert_eq!(
            (c.v5, c.client_id, c.username),
            (true, &b"x"[..], Some(&b"u5"[..]))
        );
    }

    #[test]
    fn truncated_packets_are_malformed_not_a_panic() {
        let b = v4_connect(0x04 | 0x80, "dtu", &["t"]);
        for n in 0..b.len() {
            assert!(parse_connect(&b[..n]).is_err(), "{n}");
        }
        let sub = [0, 1, 0, 3, b'a', b'/', b'b', 1];
        assert_eq!(parse_subscribe(&sub, false).expect("ok"), vec![&b"a/b"[..]]);
        for n in 0..sub.len() {
            assert!(parse_subscribe(&sub[..n], false).is_err(), "{n}");
        }
    }

    /// Bounded fuzzing without a dependency: random and mutated packets never panic the
    /// parsers (each input is parsed as CONNECT and as a 3.1.1 and a 5 SUBSCRIBE).
    #[test]
    fn random_and_mutated_packets_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = [
            v4_connect(0x04 | 0x20 | 0x80 | 0x40, "d", &["will/t", "bye", "u", "p"]),
            vec![0, 1, 0, 3, b'a', b'/', b'b', 1, 0, 1, b'#', 0],
            vec![
                0,
                4,
                b'M',
                b'Q',
                b'T',
                b'T',
                5,
                0x04 | 0xC0,
                0,
                60,
                0,
                0,
                1,
                b'x',
                0,
                0,
                1,
                b't',
            ],
        ];
        for i in 0..20_000 {
            let mut b = if i % 2 == 0 {
                let n = (next() % 80) as usize;
                (0..n).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                seeds[i % seeds.len()].clone()
            };
            if !b.is_empty() {
                for _ in 0..(next() % 4) {
                    let at = (next() as usize) % b.len();
                    b[at] = next() as u8;
                }
                let keep = (next() as usize) % (b.len() + 1);
                b.truncate(keep.max(b.len() / 2));
            }
            let _ = parse_connect(&b);
            let _ = parse_subscribe(&b, false);
            let _ = parse_subscribe(&b, true);
        }
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_byte_is_not_a_refusal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let refused: Family<Labels, Counter> = Family::default();
        let limits = Limits {
            max_packet: 1024,
            max_topic_length: 64,
            max_topics: 10,
            max_filters: 4,
            max_sessions: 10,
            max_connections: 4,
            connect_timeout: Duration::from_secs(5),
            credentials: None,
        };
        // Upstream is never reached: the client closes before sending anything.
        spawn(
            listener,
            "127.0.0.1:9".parse().expect("addr"),
            limits,
            refused.clone(),
        )
        .expect("spawn");
        drop(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        // Then a client whose first packet is too large: once it is counted, the silent one
        // has long been served too.
        let mut big = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut big, &[0x10, 0x80, 0x10])
            .await
            .expect("write");
        let too_large = vec![("reason", "packet_too_large".to_owned())];
        tokio::time::timeout(Duration::from_secs(10), async {
            while refused.get(&too_large).is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the oversized client is refused");
        // Absence can only be checked after a while: give the silent one a further moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let malformed = vec![("reason", "malformed".to_owned())];
        assert!(
            refused.get(&malformed).is_none(),
            "a connection closed before any byte was counted as malformed"
        );
    }

    #[tokio::test]
    async fn headers_with_overlong_lengths_are_malformed() {
        let mut r: &[u8] = &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(read_header(&mut r).await, Err(Refusal::Malformed)));
        let mut r: &[u8] = &[0x30, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(
            read_header(&mut r).await.ok().flatten(),
            Some((0x30, 268_435_455))
        );
        let mut r: &[u8] = &[];
        assert!(matches!(read_header(&mut r).await, Ok(None)));
        let mut out = Vec::new();
        encode_header(0x30, 268_435_455, &mut out);
        assert_eq!(out, [0x30, 0xff, 0xff, 0xff, 0x7f]);
    }

    #[test]
    fn admit_counts_distinct_keys_up_to_the_limit() {
        let set = Mutex::default();
        assert!(admit(&set, b"a", 2));
        assert!(admit(&set, b"b", 2));
        assert!(admit(&set, b"a", 2));
        assert!(!admit(&set, b"c", 2));
    }
}
