//! MQTT configuration: `[[sources]] kind = "mqtt"` (a subscription to a site broker, its topic
//! mappings and the channels it feeds) and `[mqtt_broker]` (the optional embedded broker).
//!
//! Invariants:
//! - Every channel an MQTT source may feed is declared here (`sources[].channels`), with a maximum
//!   age, so the rule engine knows it from the start and marks it stale when it stays silent.
//! - A topic mapping can only feed channels declared on its own source.
//! - Topic templates and channel templates are compiled once by the validation pass (so mistakes
//!   are reported with their path) and again by the source task from the same code.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::check::Problems;
use crate::model::check_id;
use crate::secret::SecretRef;
use crate::sources::mqtt::topic::{Template, TopicPattern};

/// An MQTT source after validation.
#[derive(Clone, Debug)]
pub struct ResolvedMqttSource {
    /// Source id.
    pub id: crate::model::SourceId,
    /// Index in `sources[]`, for messages with a config path.
    pub index: usize,
    /// Settings, topic mappings and channels.
    pub cfg: MqttSource,
}

/// An MQTT subscription to a broker (the site's, or the embedded one).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSource {
    /// Source id.
    pub id: String,
    /// Broker `host:port`.
    pub address: String,
    /// `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Client id; `hazgate-{site}-{source id}` by default. Keep it stable: the broker keeps the
    /// persistent session (subscriptions and queued QoS 1 messages) under this id.
    pub client_id: Option<String>,
    /// `false` (default): persistent session, the broker queues QoS 1 messages while the gateway
    /// is away. `true` only for brokers that cannot keep sessions.
    #[serde(default)]
    pub clean_session: bool,
    /// MQTT 5 only: how long the broker keeps the session after a disconnect.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_session_expiry")]
    pub session_expiry: Duration,
    /// User name.
    pub username: Option<String>,
    /// Password (never inline).
    pub password: Option<SecretRef>,
    /// TLS; plain TCP when absent.
    pub tls: Option<MqttTls>,
    /// Keep-alive: a broker that stops answering pings is detected within about twice this.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_keep_alive")]
    pub keep_alive: Duration,
    /// Timeout of the TCP/TLS connect and the CONNACK, and of every write to the socket.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// A SUBACK must arrive this long after SUBSCRIBE, or the connection is re-established.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub subscribe_timeout: Duration,
    /// Cap of the jittered exponential reconnect backoff.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_backoff_max")]
    pub backoff_max: Duration,
    /// Default QoS of the subscriptions (0 or 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Retained messages (a broker's last stored value, possibly hours old): `ignore` (default,
    /// counted) or `accept`.
    #[serde(default)]
    pub retained: Retained,
    /// When a QoS 1 message is acknowledged to the broker: `durable` (default: once every
    /// output made its readings durable) or `received`.
    #[serde(default)]
    pub ack: AckPolicy,
    /// Maximum age of the channels that do not give their own.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_max_age")]
    pub max_age: Duration,
    /// Limits for device timestamps.
    #[serde(default)]
    pub timestamps: TimestampLimits,
    /// Topic → channel mappings; the first matching mapping (in this order) handles a message.
    #[serde(default)]
    pub topics: Vec<MqttTopic>,
    /// The channels this source feeds. In a resolved source, the explicit ones followed by
    /// every `channel_sets` member.
    #[serde(default)]
    pub channels: Vec<MqttChannel>,
    /// Channels declared by template for a list of expected devices
    /// (`[[sources.channel_sets]]`, see [`super::channel_sets`]); expanded into `channels` by
    /// validation (a resolved source has none left).
    #[serde(default)]
    pub channel_sets: Vec<ChannelSet>,
    /// Display names of the devices its channels name (`[[sources.devices]]`).
    #[serde(default)]
    pub devices: Vec<MqttDevice>,
}

fn default_session_expiry() -> Duration {
    Duration::from_secs(86_400)
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
fn default_qos() -> u8 {
    1
}
fn default_max_age() -> Duration {
    Duration::from_secs(60)
}

/// MQTT protocol version.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub enum MqttProtocol {
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

/// What to do with retained messages.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Retained {
    /// Drop them (counted): their age is unknown, so they must not look like a live reading.
    #[default]
    Ignore,
    /// Treat them like any other message.
    Accept,
}

/// When a QoS 1 message is acknowledged to the broker (PUBACK).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AckPolicy {
    /// Once its readings are in every output's spool (or, for an output without one, accepted by
    /// the server): a crash of the gateway loses no acknowledged reading, the broker sends the
    /// others again.
    #[default]
    Durable,
    /// As soon as it is received: a crash loses the readings that were still in memory (up to a
    /// flush interval). Slightly cheaper; for sites that do not need every reading.
    Received,
}

/// TLS to the broker (rustls).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca: PathBuf,
    /// PEM client certificate (with `client_key`) for brokers that require one.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key: Option<PathBuf>,
}

/// Limits for timestamps sent by devices.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimestampLimits {
    /// A device time further ahead of the gateway's clock is out of range.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_max_future")]
    pub max_future: Duration,
    /// A device time further behind the gateway's clock is out of range.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_max_past")]
    pub max_past: Duration,
    /// `receive_time` (default): the sample is kept, stamped with the time the gateway received
    /// it; `reject`: the sample is dropped. Both are counted.
    #[serde(default)]
    pub out_of_range: OutOfRange,
}

impl Default for TimestampLimits {
    fn default() -> Self {
        Self {
            max_future: default_max_future(),
            max_past: default_max_past(),
            out_of_range: OutOfRange::default(),
        }
    }
}

fn default_max_future() -> Duration {
    Duration::from_secs(300)
}
fn default_max_past() -> Duration {
    Duration::from_secs(86_400)
}

/// Policy for out-of-range device timestamps.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutOfRange {
    /// Clamp to the gateway's receive time.
    #[default]
    ReceiveTime,
    /// Drop the sample.
    Reject,
}

/// How a payload is read.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// JSON (default): see `value`, `timestamp`, `status`, `object`, `records`.
    #[default]
    Json,
    /// A plain number as text (`12.5`, `"12.5"`, `true`).
    Number,
}

/// How a device timestamp is written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimestampUnit {
    /// Numbers by magnitude (s, ms, µs or ns since the epoch), strings as RFC 3339 or numbers.
    #[default]
    Auto,
    /// Seconds since the Unix epoch (fractions allowed).
    S,
    /// Milliseconds since the Unix epoch.
    Ms,
    /// Microseconds since the Unix epoch.
    Us,
    /// Nanoseconds since the Unix epoch.
    Ns,
    /// RFC 3339 text (`2026-01-02T03:04:05.678Z`, `…+08:00`).
    Rfc3339,
}

/// One topic mapping.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttTopic {
    /// Topic filter. `+` and `#` are MQTT wildcards; `{name}` matches one level like `+` and
    /// captures it for the channel template (`site/{site}/gas/{device}`).
    pub filter: String,
    /// Channel id template: `{name}` inserts a captured topic level (lowercased), `{key}` the
    /// member name (`object`) or record key (`records`). No placeholder: an explicit channel.
    pub channel: String,
    /// QoS of this subscription; the source's `qos` by default.
    pub qos: Option<u8>,
    /// Payload format.
    #[serde(default)]
    pub format: PayloadFormat,
    /// JSON path of the value (dotted, array indexes as numbers: `data.0.v`); `value` by default.
    pub value: Option<String>,
    /// JSON path of the device timestamp; the receive time is used when absent.
    pub timestamp: Option<String>,
    /// How the timestamp is written.
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    /// JSON path of a status or quality field.
    pub status: Option<String>,
    /// Status values meaning "good" (compared case-insensitively; numbers as written, booleans as
    /// `true`/`false`). Any other status gives a Bad sample. Default: `0`, `ok`, `good`, `normal`.
    pub good_status: Option<Vec<String>>,
    /// Several channels in one JSON object: path of the object (`""` for the whole payload). Each
    /// member is a channel (`{key}` = member name): a number, or an object read with `value`,
    /// `timestamp` and `status`.
    pub object: Option<String>,
    /// Several channels as an array of records: path of the array (`""` for the whole payload).
    /// Each record is read with `key`, `value`, `timestamp` and `status`.
    pub records: Option<String>,
    /// With `records`: path, inside a record, of the name that fills `{key}`; `id` by default.
    pub key: Option<String>,
}

/// A channel fed by an MQTT source.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttChannel {
    /// Channel id (dotted).
    pub id: String,
    /// Area; the id's first segment by default (ids of three or more segments).
    pub area: Option<String>,
    /// Device; the id's second segment by default (ids of three or more segments).
    pub device: Option<String>,
    /// Kind (`combustible_gas`, …); `generic` by default.
    pub kind: Option<String>,
    /// Engineering unit.
    pub unit: Option<String>,
    /// Display label.
    pub label: Option<String>,
    /// Engineering range.
    pub range: Option<[f64; 2]>,
    /// No good sample within this age makes the channel stale; the source's `max_age` by default.
    #[schemars(with = "Option<crate::schema::HumanDuration>")]
    #[serde(with = "humantime_serde", default)]
    pub max_age: Option<Duration>,
    /// Words for the channel's values (`{ 0 = "停止", 1 = "运行" }`, integer keys).
    #[serde(default)]
    pub states: std::collections::BTreeMap<String, String>,
}

/// Channels of a list of expected devices, declared once by template
/// (`[[sources.channel_sets]]`, expanded by [`super::channel_sets::expand`]).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelSet {
    /// Channel id template; `{area}`, `{device}` and `{name}` (the channel's `name`) are
    /// filled in. `{area}.{device}.{name}` by default. Must use `{device}`.
    #[serde(default = "default_template")]
    pub id: String,
    /// Area of the devices whose group gives none.
    pub area: Option<String>,
    /// The expected devices: a list of ids, a numeric range
    /// (`{ prefix = "gt-", from = 1, to = 500, width = 3 }`, ids `gt-001` … `gt-500`), or an
    /// array mixing ids and groups (`{ area = "tanks", ids = ["ox-a"] }` or a range), each
    /// group with its own `area`.
    pub devices: ExpectedDevices,
    /// Maximum age of this set's channels that give none; the source's `max_age` by default.
    #[schemars(with = "Option<crate::schema::HumanDuration>")]
    #[serde(with = "humantime_serde", default)]
    pub max_age: Option<Duration>,
    /// The channels of every device.
    pub channels: Vec<SetChannel>,
}

fn default_template() -> String {
    "{area}.{device}.{name}".into()
}

/// One channel of every device of a [`ChannelSet`].
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetChannel {
    /// Fills `{name}` in the set's id template (`lel`).
    pub name: String,
    /// Kind (`combustible_gas`, …); `generic` by default.
    pub kind: Option<String>,
    /// Engineering unit.
    pub unit: Option<String>,
    /// Display label; `{area}`, `{device}` and `{name}` are filled in.
    pub label: Option<String>,
    /// Engineering range.
    pub range: Option<[f64; 2]>,
    /// Maximum age; the set's, else the source's by default.
    #[schemars(with = "Option<crate::schema::HumanDuration>")]
    #[serde(with = "humantime_serde", default)]
    pub max_age: Option<Duration>,
    /// Words for the channel's values (`{ 0 = "停止", 1 = "运行" }`).
    #[serde(default)]
    pub states: std::collections::BTreeMap<String, String>,
}

/// The expected devices of a set: one group (a table or a single id) or an array of ids and
/// groups, in the order written.
#[derive(Clone, Debug)]
pub struct ExpectedDevices {
    /// The groups.
    pub groups: Vec<DeviceGroup>,
    /// Written as one table (paths `devices.to`) rather than an array (`devices[2].to`).
    pub single: bool,
}

/// Devices of one area: explicit ids and/or a numeric range.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceGroup {
    /// Area of these devices; the set's `area` by default.
    pub area: Option<String>,
    /// Explicit device ids.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Range: text before the number (`gt-`).
    #[serde(default)]
    pub prefix: String,
    /// Range: first number.
    pub from: Option<u64>,
    /// Range: last number (inclusive).
    pub to: Option<u64>,
    /// Range: the number padded with zeros to this many digits (`3`: `gt-007`).
    #[serde(default)]
    pub width: usize,
    /// Written as a bare id string in the array (its path is the element's).
    #[serde(skip)]
    pub bare: bool,
}

/// What the parser below accepts: one id, one group, or an array of ids and groups.
impl schemars::JsonSchema for ExpectedDevices {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ExpectedDevices".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let group = generator.subschema_for::<DeviceGroup>();
        let one = schemars::json_schema!({
            "anyOf": [
                { "type": "string", "description": "A device id." },
                group
            ]
        });
        schemars::json_schema!({
            "description": "The expected devices: an id, a group ({ prefix = \"gt-\", from = 1, to = 500, width = 3 } or { area = \"tanks\", ids = [...] }), or an array of ids and groups.",
            "anyOf": [
                one,
                { "type": "array", "items": one }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for ExpectedDevices {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        fn group<E: Error>(v: toml::Value, at: &str) -> Result<DeviceGroup, E> {
            match v {
                toml::Value::String(id) => Ok(DeviceGroup {
                    ids: vec![id],
                    bare: true,
                    ..DeviceGroup::default()
                }),
                toml::Value::Table(_) => DeviceGroup::deserialize(v)
                    .map_err(|e| E::custom(format!("{at}{}", e.message()))),
                other => Err(E::custom(format!(
                    "{at}a device is an id (`\"gt-a\"`) or a group (`{{ prefix = \"gt-\", from = 1, \
                     to = 50, width = 3 }}` or `{{ ids = [...] }}`), found {}",
                    other.type_str()
                ))),
            }
        }
        match toml::Value::deserialize(d)? {
            toml::Value::Array(items) => Ok(ExpectedDevices {
                groups: items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| group(v, &format!("devices[{i}]: ")))
                    .collect::<Result<_, _>>()?,
                single: false,
            }),
            v => Ok(ExpectedDevices {
                groups: vec![group(v, "")?],
                single: true,
            }),
        }
    }
}

/// Where a channel of an expanded source was declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `sources[i].channels[j]`.
    Explicit(usize),
    /// `sources[i].channel_sets[k]`.
    Set(usize),
}

/// A source with its sets expanded: `source.channels` holds the explicit channels then every
/// set's, `origins[j]` where channel `j` comes from.
#[derive(Clone, Debug)]
pub struct Expanded {
    /// The source, `channel_sets` emptied and `channels` complete.
    pub source: MqttSource,
    /// Origin of each channel.
    pub origins: Vec<Origin>,
}

impl Expanded {
    /// The config path of channel `j` (`sources[0].channels[3]`, or
    /// `sources[0].channel_sets[1]` for a generated channel).
    pub fn path(&self, source_path: &str, j: usize) -> String {
        match self.origins[j] {
            Origin::Explicit(e) => format!("{source_path}.channels[{e}]"),
            Origin::Set(k) => format!("{source_path}.channel_sets[{k}]"),
        }
    }
}

/// The display name of a device behind an MQTT source; the id stays ASCII for tags.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttDevice {
    /// The device id as the source's channels name it (`device`, else the id's second segment).
    pub id: String,
    /// What people read (`"车间硫化氢探测器 GT-201"`).
    pub name: String,
}

impl MqttChannel {
    /// The device: `device`, else the id's second segment.
    pub fn device_id(&self) -> &str {
        self.device
            .as_deref()
            .unwrap_or_else(|| self.id.split('.').nth(1).unwrap_or(""))
    }
}

impl MqttSource {
    /// The display name of a device of this source, empty when none is configured.
    pub fn device_name(&self, device: &str) -> &str {
        self.devices
            .iter()
            .find(|d| d.id == device)
            .map_or("", |d| d.name.trim())
    }
}

/// The optional embedded MQTT broker (rumqttd), for sites without one.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBroker {
    /// Start it (`false` keeps the section without running a broker).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// MQTT 3.1.1 listener; `127.0.0.1:1883` by default. Port 0 picks a free port.
    #[serde(default = "default_broker_listen")]
    pub listen: SocketAddr,
    /// Optional MQTT 5 listener.
    pub listen_v5: Option<SocketAddr>,
    /// User name clients must give (with `password`); anonymous when absent.
    pub username: Option<String>,
    /// Password (never inline).
    pub password: Option<SecretRef>,
    /// Most simultaneous client connections.
    #[serde(default = "default_broker_connections")]
    pub max_connections: usize,
    /// Largest accepted payload, in bytes.
    #[serde(default = "default_broker_payload")]
    pub max_payload_size: usize,
    /// A client must send CONNECT within this long after opening the socket.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_broker_connect_timeout")]
    pub connection_timeout: Duration,
    /// Most distinct topic names published over the broker's life; a publish to a new topic
    /// beyond this closes the publisher's connection.
    #[serde(default = "default_broker_topics")]
    pub max_topics: usize,
    /// Longest topic name (and client id), in bytes.
    #[serde(default = "default_broker_topic_length")]
    pub max_topic_length: usize,
    /// Most distinct subscription filters (each keeps a commit log of up to
    /// `segment_size × segment_count` bytes).
    #[serde(default = "default_broker_filters")]
    pub max_filters: usize,
    /// Most distinct client ids (sessions) over the broker's life; new ones beyond this are
    /// refused at CONNECT.
    #[serde(default = "default_broker_sessions")]
    pub max_sessions: usize,
    /// QoS 1/2 messages in flight to one client.
    #[serde(default = "default_broker_inflight")]
    pub max_inflight: usize,
    /// Packets the broker queues for one client at a time.
    #[serde(default = "default_broker_queued")]
    pub max_queued: u64,
    /// Bytes per commit-log segment of one subscription filter (at least `max_payload_size`).
    #[serde(default = "default_broker_segment_size")]
    pub segment_size: usize,
    /// Segments kept per subscription filter; older messages are dropped for slow readers.
    #[serde(default = "default_broker_segment_count")]
    pub segment_count: usize,
}

impl EmbeddedBroker {
    /// The most memory the broker's stores can hold with these limits, in bytes: commit logs
    /// (`max_filters × segment_size × segment_count`), two packet buffers per connection,
    /// topic and session records (each at most `max_topic_length` bytes, kept twice, plus
    /// about 512 bytes of bookkeeping).
    pub fn memory_bound(&self) -> u64 {
        let logs = self.max_filters as u64 * self.segment_size as u64 * self.segment_count as u64;
        let connections = self.max_connections as u64 * 2 * self.max_payload_size as u64;
        let records =
            (self.max_topics + self.max_sessions) as u64 * (2 * self.max_topic_length as u64 + 512);
        logs + connections + records
    }
}

fn default_true() -> bool {
    true
}
fn default_broker_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_broker_connections() -> usize {
    200
}
fn default_broker_topics() -> usize {
    10_000
}
fn default_broker_topic_length() -> usize {
    256
}
fn default_broker_filters() -> usize {
    16
}
fn default_broker_sessions() -> usize {
    10_000
}
fn default_broker_inflight() -> usize {
    100
}
fn default_broker_queued() -> u64 {
    200
}
fn default_broker_segment_size() -> usize {
    1 << 20
}
fn default_broker_segment_count() -> usize {
    4
}
fn default_broker_payload() -> usize {
    256 * 1024
}
fn default_broker_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Checks one MQTT source, its channel sets already expanded (their own mistakes were
/// reported by the expansion), into `p`. Clashes with other sources' channels are checked by
/// the caller.
pub(crate) fn check_source(ex: &Expanded, path: &str, p: &mut Problems) {
    let s = &ex.source;
    match s.address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|x| x > 0) => {}
        _ => p.err(
            format!("{path}.address"),
            format!("`{}` is not `host:port`", s.address),
        ),
    }
    if let Some(c) = &s.client_id {
        if c.is_empty() {
            p.err(format!("{path}.client_id"), "must not be empty");
        }
    }
    for (name, d) in [
        ("keep_alive", s.keep_alive),
        ("connect_timeout", s.connect_timeout),
        ("subscribe_timeout", s.subscribe_timeout),
        ("backoff_max", s.backoff_max),
        ("max_age", s.max_age),
    ] {
        if d.is_zero() {
            p.err(format!("{path}.{name}"), "must be longer than 0s");
        }
    }
    if s.keep_alive < Duration::from_secs(1) && !s.keep_alive.is_zero() {
        p.err(format!("{path}.keep_alive"), "must be at least 1s");
    }
    if s.qos > 1 {
        p.err(format!("{path}.qos"), "must be 0 or 1");
    }
    if s.username.is_none() && s.password.is_some() {
        p.err(format!("{path}.username"), "a password needs a username");
    }
    if let Some(pw) = &s.password {
        if pw.env.is_some() == pw.file.is_some() {
            p.err(
                format!("{path}.password"),
                "give exactly one of `env` or `file` (secrets are never inline)",
            );
        }
    }
    if let Some(t) = &s.tls {
        if t.client_cert.is_some() != t.client_key.is_some() {
            p.err(
                format!("{path}.tls"),
                "give both `client_cert` and `client_key`, or neither",
            );
        }
    }
    let mut ids = HashSet::new();
    for (j, c) in s.channels.iter().enumerate() {
        if ex.origins[j] != Origin::Explicit(j) {
            continue; // generated: checked, and kept unique, by the expansion
        }
        let cp = ex.path(path, j);
        if let Err(e) = check_id(&c.id, true) {
            p.err(format!("{cp}.id"), e);
            continue;
        }
        if !ids.insert(c.id.as_str()) {
            p.err(format!("{cp}.id"), format!("duplicate channel `{}`", c.id));
        }
        let segs = c.id.split('.').count();
        if segs < 3 && (c.area.is_none() || c.device.is_none()) {
            p.err(
                format!("{cp}.id"),
                format!(
                    "`{}` has fewer than three segments: give `area` and `device`",
                    c.id
                ),
            );
        }
        for (f, v) in [("area", &c.area), ("device", &c.device)] {
            if let Some(v) = v {
                if let Err(e) = check_id(v, false) {
                    p.err(format!("{cp}.{f}"), e);
                }
            }
        }
        if let Some(r) = c.range {
            if r[0].partial_cmp(&r[1]) != Some(std::cmp::Ordering::Less) {
                p.err(
                    format!("{cp}.range"),
                    "first bound must be below the second",
                );
            }
        }
        if c.max_age.is_some_and(|a| a.is_zero()) {
            p.err(format!("{cp}.max_age"), "must be longer than 0s");
        }
    }
    let on_source: HashSet<&str> = s.channels.iter().map(MqttChannel::device_id).collect();
    let mut named = HashSet::new();
    for (k, d) in s.devices.iter().enumerate() {
        let dp = format!("{path}.devices[{k}]");
        if let Err(e) = check_id(&d.id, false) {
            p.err(format!("{dp}.id"), e);
        } else if !named.insert(d.id.as_str()) {
            p.err(
                format!("{dp}.id"),
                format!("device `{}` is named twice", d.id),
            );
        } else if !on_source.contains(d.id.as_str()) {
            p.err(
                format!("{dp}.id"),
                format!("no channel of this source is on device `{}`", d.id),
            );
        }
        if d.name.trim().is_empty() {
            p.err(format!("{dp}.name"), "must not be empty");
        }
    }
    if s.topics.is_empty() {
        p.err(format!("{path}.topics"), "give at least one topic mapping");
    }
    for (j, t) in s.topics.iter().enumerate() {
        let tp = format!("{path}.topics[{j}]");
        if let Err(e) = compile_topic(t) {
            for (field, msg) in e {
                p.err(format!("{tp}.{field}"), msg);
            }
        }
        if t.qos.is_some_and(|q| q > 1) {
            p.err(format!("{tp}.qos"), "must be 0 or 1");
        }
    }
}

/// A topic mapping's compiled pattern and channel template, or `(field, message)` problems.
pub(crate) fn compile_topic(
    t: &MqttTopic,
) -> Result<(TopicPattern, Template), Vec<(String, String)>> {
    let mut errs = Vec::new();
    let pattern = TopicPattern::parse(&t.filter).map_err(|e| errs.push(("filter".to_owned(), e)));
    let multi = t.object.is_some() || t.records.is_some();
    if t.object.is_some() && t.records.is_some() {
        errs.push((
            "records".into(),
            "give either `object` or `records`, not both".into(),
        ));
    }
    if t.format == PayloadFormat::Number
        && (multi || t.value.is_some() || t.timestamp.is_some() || t.status.is_some())
    {
        errs.push((
            "format".into(),
            "`number` payloads have no `value`, `timestamp`, `status`, `object` or `records` paths"
                .into(),
        ));
    }
    if t.key.is_some() && t.records.is_none() {
        errs.push(("key".into(), "only with `records`".into()));
    }
    let template = match &pattern {
        Ok(p) => {
            let mut names: Vec<&str> = p.captures().collect();
            if multi {
                names.push("key");
            }
            match Template::parse(&t.channel, &names) {
                Ok(tpl) => {
                    if multi && !tpl.uses("key") {
                        errs.push((
                            "channel".into(),
                            "with `object` or `records`, the template must use `{key}`".into(),
                        ));
                    }
                    Some(tpl)
                }
                Err(e) => {
                    errs.push(("channel".into(), e));
                    None
                }
            }
        }
        Err(()) => None,
    };
    match (pattern, template) {
        (Ok(p), Some(t)) if errs.is_empty() => Ok((p, t)),
        _ => Err(errs),
    }
}

/// Checks the embedded broker section.
pub(crate) fn check_broker(b: &EmbeddedBroker, p: &mut Problems) {
    if b.username.is_some() != b.password.is_some() {
        p.err(
            "mqtt_broker.password",
            "give both `username` and `password`, or neither",
        );
    }
    if let Some(pw) = &b.password {
        if pw.env.is_some() == pw.file.is_some() {
            p.err(
                "mqtt_broker.password",
                "give exactly one of `env` or `file` (secrets are never inline)",
            );
        }
    }
    if b.max_connections == 0 {
        p.err("mqtt_broker.max_connections", "must be at least 1");
    }
    if b.max_payload_size == 0 {
        p.err("mqtt_broker.max_payload_size", "must be at least 1");
    }
    for (name, v) in [
        ("max_topics", b.max_topics),
        ("max_topic_length", b.max_topic_length),
        ("max_filters", b.max_filters),
        ("max_sessions", b.max_sessions),
        ("max_inflight", b.max_inflight),
        ("segment_count", b.segment_count),
    ] {
        if v == 0 {
            p.err(format!("mqtt_broker.{name}"), "must be at least 1");
        }
    }
    if b.max_topic_length > usize::from(u16::MAX) {
        p.err(
            "mqtt_broker.max_topic_length",
            "must be at most 65535 (MQTT's limit)",
        );
    }
    if b.max_inflight > usize::from(u16::MAX) {
        p.err(
            "mqtt_broker.max_inflight",
            "must be at most 65535 (MQTT packet ids)",
        );
    }
    if b.max_queued == 0 {
        p.err("mqtt_broker.max_queued", "must be at least 1");
    }
    if b.segment_size < b.max_payload_size {
        p.err(
            "mqtt_broker.segment_size",
            format!(
                "must be at least max_payload_size ({} bytes)",
                b.max_payload_size
            ),
        );
    }
    if b.connection_timeout.is_zero() || b.connection_timeout > Duration::from_millis(65_535) {
        p.err(
            "mqtt_broker.connection_timeout",
            "must be between 1ms and 65s",
        );
    }
}

/// Warnings about the embedded broker: anonymous access from beyond this host.
pub(crate) fn broker_warnings(b: &EmbeddedBroker, p: &mut Problems) {
    if b.username.is_some() {
        return;
    }
    for (name, addr) in [("listen", Some(b.listen)), ("listen_v5", b.listen_v5)] {
        if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
            p.warn(
                format!("mqtt_broker.{name}"),
                format!(
                    "the embedded broker listens on {addr} without `username`/`password`: \
                     anyone who can reach it can publish readings"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn default_broker_memory_bound_is_the_documented_185_mib() {
        let b: super::EmbeddedBroker = toml::from_str("").expect("defaults");
        let mib = b.memory_bound() as f64 / (1024.0 * 1024.0);
        // docs/ARCHITECTURE.md (invariant 10a), README and config/example.toml say "about 185".
        assert!((180.0..=190.0).contains(&mib), "{mib} MiB");
    }

    #[test]
    fn every_mqtt_mistake_is_reported_with_its_path() {
        let text = r#"
[site]
id = "s"
[[sources]]
kind = "modbus_tcp"
id = "bus"
address = "127.0.0.1:502"
[[devices]]
id = "gd1"
area = "a"
source = "bus"
[[devices.registers]]
name = "lel"
table = "input"
address = 0
[[devices]]
id = "gd2"
area = "a"
source = "m"
[[devices.registers]]
name = "lel"
table = "input"
address = 0
[[sources]]
kind = "mqtt"
id = "m"
address = "broker"
qos = 2
password = { env = "X" }
[sources.tls]
ca = "ca.pem"
client_cert = "c.pem"
[[sources.topics]]
filter = "a/{dev}/#/x"
channel = "a.{dev}.v"
[[sources.topics]]
filter = "b/{dev}"
channel = "a.{nope}.v"
[[sources.topics]]
filter = "c/{dev}"
channel = "a.{dev}.v"
object = ""
[[sources.topics]]
filter = "d"
channel = "a.b.c"
format = "number"
value = "x"
[[sources.channels]]
id = "a.gd1.lel"
[[sources.channels]]
id = "ab"
[[sources.channels]]
id = "x.y.z"
[[sources.channels]]
id = "x.y.z"
range = [5, 1]
[mqtt_broker]
username = "u"
"#;
        let cfg = crate::config::parse(text, Path::new("t.toml")).expect("parses");
        let problems = crate::config::validate(&cfg, Path::new(".")).expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "devices[1].source",
            "sources[1].address",
            "sources[1].qos",
            "sources[1].username",
            "sources[1].tls",
            "sources[1].topics[0].filter",
            "sources[1].topics[1].channel",
            "sources[1].topics[2].channel",
            "sources[1].topics[3].format",
            "sources[1].channels[0].id",
            "sources[1].channels[1].id",
            "sources[1].channels[3].id",
            "sources[1].channels[3].range",
            "mqtt_broker.password",
        ] {
            assert!(
                paths.contains(&want),
                "{want} not reported; got {problems:#?}"
            );
        }
    }
}
