//! The configuration file's own structs (the serde layer): every table of the TOML file, with
//! its defaults. Component-specific tables live with their component's configuration module
//! (Modbus and MQTT sources, alarm rules, receivers, output options) and are assembled here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::alarms::{Alarms, LimitRule};
use super::devmap::{DeviceMap, RegisterDef};
use super::modbus::{ModbusRtuSource, ModbusTcpSource};
use super::mqtt;
use crate::alerts::config::Notifications;
use crate::alerts::receivers::Receiver;
use crate::i18n::Language;
use crate::secret::SecretRef;
use crate::tsdb::options::{DownsampleConfig, Precision, ReductionConfig, SpoolConfig};

/// The whole gateway configuration file.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Further files (paths or globs such as `conf.d/*.toml`, relative to this file's
    /// directory) whose arrays of tables add to this file's; only the main file may include.
    #[serde(default)]
    pub include: Vec<String>,
    /// The one site this gateway serves.
    pub site: Site,
    /// Process-wide settings.
    #[serde(default)]
    pub gateway: Gateway,
    /// The HTTP API and status page.
    #[serde(default)]
    pub api: Api,
    /// Connections the gateway owns (one per TCP endpoint or serial bus).
    #[serde(default)]
    pub sources: Vec<Source>,
    /// Reusable register maps, inline or `{ file = "maps/x.toml" }`.
    #[serde(default)]
    pub device_maps: Vec<DeviceMapEntry>,
    /// Field devices on those sources.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Modbus devices declared as a set: one map on a list or range of unit ids, with id
    /// and area patterns (`unit_ids = "1-40"`, `id = "gd-{unit}"`); each member is exactly
    /// the `[[devices]]` entry written out, placed after the `[[devices]]` entries.
    #[serde(default)]
    pub device_sets: Vec<DeviceSet>,
    /// Per-channel metadata overrides (label, unit, range, maximum age).
    #[serde(default)]
    pub channels: Vec<ChannelOverride>,
    /// Limit rules.
    #[serde(default)]
    pub rules: Vec<LimitRule>,
    /// Limit alarms by channel kind (`[rule_defaults.combustible_gas]`): every channel of the
    /// kind gets them unless a `[[rules]]` entry overrides fields or opts out.
    #[serde(default)]
    pub rule_defaults: std::collections::BTreeMap<String, super::alarms::RuleDefaults>,
    /// Where alarm events are sent.
    #[serde(default)]
    pub receivers: Vec<Receiver>,
    /// Where time series are written.
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// Display names of areas (`[[areas]] id = "tankfarm" name = "储罐区"`); ids stay ASCII.
    #[serde(default)]
    pub areas: Vec<AreaName>,
    /// Alarm engine: journal, API tokens, schedule, rate/discrete/composite rules.
    #[serde(default)]
    pub alarms: Alarms,
    /// The optional embedded MQTT broker.
    pub mqtt_broker: Option<mqtt::EmbeddedBroker>,
    /// Alert delivery: outbox, routes, escalation.
    #[serde(default)]
    pub notifications: Notifications,
}

/// The display name of an area.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AreaName {
    /// Area id as used by devices (`tankfarm`).
    pub id: String,
    /// Name shown to people (`储罐区`).
    pub name: String,
}

/// Identity of the site.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Short id, used as the `site` tag in every point.
    pub id: String,
    /// Display name, shown in the status page header and in alert texts (e.g. `某化工厂`).
    #[serde(default)]
    pub name: String,
    /// IANA time zone for every time shown to people; default `alarms.schedule.timezone`,
    /// else the system zone.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Language of texts a person reads (alert texts, generated Grafana dashboards): `zh-CN`
    /// (default) or `en`.
    #[serde(default)]
    pub language: Language,
}

/// Process-wide settings.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// How long SIGTERM/SIGINT may take to drain queues before the process exits anyway.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_grace")]
    pub shutdown_grace: Duration,
    /// Capacity (in batches) of the source → rule-engine channel; when full, sources wait.
    #[serde(default = "default_sample_queue")]
    pub sample_queue: usize,
    /// Write the gateway's own figures (every `/metrics` sample) to every output as measurement
    /// `hazgate_internal` this often; off when absent.
    #[schemars(with = "Option<crate::schema::HumanDuration>")]
    #[serde(with = "humantime_serde", default)]
    pub self_monitoring: Option<Duration>,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            shutdown_grace: default_grace(),
            sample_queue: default_sample_queue(),
            self_monitoring: None,
        }
    }
}

fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_sample_queue() -> usize {
    1024
}

/// Interval of the API event stream's keep-alive comments; `api.idle_timeout` must be longer.
pub const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// HTTP API settings.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Listen address; `127.0.0.1:8080` by default.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Per-request timeout.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_api_timeout")]
    pub request_timeout: Duration,
    /// Who may read `/api/v1` (channels, devices, alarms, the event stream): `open` (anyone who
    /// reaches the port; the default, for a control-room LAN) or `viewer` (a viewer or operator
    /// token). Actions always need an operator token; `/healthz`, `/readyz`, `/metrics`, the
    /// OpenAPI document and the status page's own files stay open.
    #[serde(default)]
    pub reads: ReadAccess,
    /// Most API connections open at once; further clients wait in the kernel's accept queue
    /// (they hold no descriptor of the gateway) until one closes. The API never holds more than
    /// this many descriptors (plus its listener), so sources, outputs and receivers keep theirs.
    #[serde(default = "default_api_connections")]
    pub max_connections: usize,
    /// A connection must send a complete request head within this long, counted from its
    /// opening or from the end of the previous response (so it also bounds keep-alive idleness
    /// between requests); otherwise it is closed.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// A connection on which no byte was read or written for this long is closed (a request
    /// body that trickles, a client that stopped reading its response or event stream). Must
    /// be longer than `request_timeout` and than the event stream's 15 s keep-alive.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_idle_timeout")]
    pub idle_timeout: Duration,
}

/// Read access to the API, see [`Api::reads`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReadAccess {
    /// No token needed to read.
    #[default]
    Open,
    /// A viewer or operator token needed to read.
    Viewer,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            request_timeout: default_api_timeout(),
            reads: ReadAccess::default(),
            max_connections: default_api_connections(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

fn default_api_connections() -> usize {
    128
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_api_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A connection owned by the gateway.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// Modbus TCP: a device or a serial-to-TCP converter carrying several unit ids.
    ModbusTcp(ModbusTcpSource),
    /// Modbus RTU on a local serial port (an RS-485 bus).
    ModbusRtu(ModbusRtuSource),
    /// Modbus RTU frames through a transparent serial-to-TCP converter.
    ModbusRtuOverTcp(ModbusTcpSource),
    /// MQTT subscription to a broker; its channels are declared in the source.
    Mqtt(Box<mqtt::MqttSource>),
}

impl Source {
    /// The source's id.
    pub fn id(&self) -> &str {
        match self {
            Source::ModbusTcp(s) | Source::ModbusRtuOverTcp(s) => &s.id,
            Source::ModbusRtu(s) => &s.id,
            Source::Mqtt(s) => &s.id,
        }
    }
}

/// A device map, inline or loaded from a file relative to the config file.
#[derive(Clone, Debug)]
pub enum DeviceMapEntry {
    /// `{ file = "maps/gas.toml" }`.
    File {
        /// Path, relative to the configuration file.
        file: PathBuf,
    },
    /// The map itself.
    Inline(DeviceMap),
}

/// What the parser below accepts: `{ file = "…" }` alone, or an inline [`DeviceMap`].
impl schemars::JsonSchema for DeviceMapEntry {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceMapEntry".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let inline = generator.subschema_for::<DeviceMap>();
        schemars::json_schema!({
            "description": "A register map: { file = \"maps/x.toml\" } (relative to this file) or the map inline.",
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "file": { "type": "string", "description": "Map file, relative to the configuration file." }
                    },
                    "required": ["file"],
                    "additionalProperties": false
                },
                inline
            ]
        })
    }
}

/// Not untagged: a mistake names the entry's field and what is allowed instead of "did not
/// match any variant".
impl<'de> Deserialize<'de> for DeviceMapEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = toml::Value::deserialize(d)?;
        let toml::Value::Table(t) = v else {
            return Err(D::Error::custom(format!(
                "a device map is `{{ file = \"maps/x.toml\" }}` or an inline map (`id`, \
                 `description`, `[[device_maps.registers]]`), found {}",
                v.type_str()
            )));
        };
        if let Some(file) = t.get("file") {
            let others: Vec<&str> = t
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "file")
                .collect();
            if !others.is_empty() {
                return Err(D::Error::custom(format!(
                    "`file` loads the map from its own file and takes no other field here; \
                     found `{}` (write the map either in the file or inline)",
                    others.join("`, `")
                )));
            }
            let Some(file) = file.as_str() else {
                return Err(D::Error::custom(format!(
                    "file: must be a path string (`file = \"maps/x.toml\"`), found {}",
                    file.type_str()
                )));
            };
            return Ok(DeviceMapEntry::File { file: file.into() });
        }
        let id = t.get("id").and_then(toml::Value::as_str).map(str::to_owned);
        super::devmap::map_from_value(toml::Value::Table(t))
            .map(DeviceMapEntry::Inline)
            .map_err(|e| match id {
                Some(id) => D::Error::custom(format!("inline map `{id}`: {e}")),
                None => D::Error::custom(format!("inline map: {e}")),
            })
    }
}

/// A field device.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Device id, unique in the site.
    pub id: String,
    /// Area (plant section), the first segment of the default channel prefix.
    pub area: String,
    /// The connection it hangs on.
    pub source: String,
    /// Modbus unit id (slave address).
    #[serde(default = "default_unit")]
    pub unit_id: u8,
    /// A map from `device_maps`, or use `registers` inline.
    pub map: Option<String>,
    /// Inline register list (instead of `map`).
    #[serde(default)]
    pub registers: Vec<RegisterDef>,
    /// Added to every address of the map (a model instantiated at another base address).
    #[serde(default)]
    pub address_offset: u16,
    /// 0 if the manual's addresses are the protocol addresses, 1 if they start at 1.
    #[serde(default)]
    pub address_base: u8,
    /// How often to poll; a channel may override it (`channels[].poll_interval`).
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_poll")]
    pub poll_interval: Duration,
    /// Channel id prefix; `{area}.{id}` by default.
    pub channel_prefix: Option<String>,
    /// Display name shown to people (`"1号罐区可燃气体探测器"`); the id stays ASCII for tags.
    #[serde(default)]
    pub name: String,
}

/// A set of Modbus devices of one model on one source, see [`Config::device_sets`]. In `id`,
/// `area`, `name` and `channel_prefix`, `{unit}` is the member's unit id and `{unit:03}` the
/// same padded with zeros to 3 digits.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSet {
    /// Device id pattern, e.g. `gd-{unit}`; must contain `{unit}`.
    pub id: String,
    /// Area (pattern) of every member.
    pub area: String,
    /// The connection every member hangs on.
    pub source: String,
    /// Unit ids: `"1-40"`, `"1-10, 12, 20-24"` or `[1, 2, 5]`.
    pub unit_ids: UnitIds,
    /// The map from `device_maps` every member instantiates.
    pub map: String,
    /// As on `[[devices]]`.
    #[serde(default)]
    pub address_offset: u16,
    /// As on `[[devices]]`.
    #[serde(default)]
    pub address_base: u8,
    /// As on `[[devices]]`.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_poll")]
    pub poll_interval: Duration,
    /// Channel id prefix (pattern); `{area}.{id}` by default.
    pub channel_prefix: Option<String>,
    /// Display name (pattern), e.g. `"1号罐区 {unit} 号探测器"`.
    #[serde(default)]
    pub name: String,
}

/// The unit ids of a [`DeviceSet`], in the order written, without repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitIds(pub Vec<u8>);

impl UnitIds {
    fn parse_list(text: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let num = |t: &str| {
                t.parse::<u8>().map_err(|_| {
                    format!("`{t}` in `{text}` is not a unit id (0-255); write e.g. \"1-40, 45\"")
                })
            };
            let (lo, hi) = (num(lo)?, num(hi)?);
            if lo > hi {
                return Err(format!("range `{part}` runs backwards"));
            }
            out.extend(lo..=hi);
        }
        Ok(out)
    }
}

/// What [`UnitIds::parse_list`] and the array form accept (a unit id repeated is refused by
/// the parser, an array's repeat by `uniqueItems` too).
impl schemars::JsonSchema for UnitIds {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UnitIds".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Modbus unit ids: a range list (\"1-40\", \"1-10, 12, 20-24\") or an array ([1, 2, 5]); each 0-255, none twice.",
            "anyOf": [
                {
                    "type": "string",
                    "pattern": "^\\s*[0-9]{1,3}(\\s*-\\s*[0-9]{1,3})?(\\s*,\\s*[0-9]{1,3}(\\s*-\\s*[0-9]{1,3})?)*\\s*$"
                },
                {
                    "type": "array",
                    "items": { "type": "integer", "minimum": 0, "maximum": 255 },
                    "minItems": 1,
                    "uniqueItems": true
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for UnitIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let ids = match toml::Value::deserialize(d)? {
            toml::Value::String(s) => UnitIds::parse_list(&s).map_err(D::Error::custom)?,
            toml::Value::Array(items) => {
                let mut out = Vec::new();
                for v in &items {
                    match v.as_integer().and_then(|n| u8::try_from(n).ok()) {
                        Some(n) => out.push(n),
                        None => {
                            return Err(D::Error::custom(format!(
                                "`{v}` is not a unit id (an integer 0-255)"
                            )));
                        }
                    }
                }
                out
            }
            other => {
                return Err(D::Error::custom(format!(
                    "a range string (\"1-40, 45\") or a list of unit ids ([1, 2, 5]), found {}",
                    other.type_str()
                )));
            }
        };
        if ids.is_empty() {
            return Err(D::Error::custom("names no unit id"));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = ids.iter().find(|u| !seen.insert(**u)) {
            return Err(D::Error::custom(format!("unit id {dup} is listed twice")));
        }
        Ok(UnitIds(ids))
    }
}

impl DeviceSet {
    /// The members, each as the `[[devices]]` entry it stands for.
    pub fn expand(&self) -> Vec<Device> {
        self.unit_ids
            .0
            .iter()
            .map(|&unit| Device {
                id: fill(&self.id, unit),
                area: fill(&self.area, unit),
                source: self.source.clone(),
                unit_id: unit,
                map: Some(self.map.clone()),
                registers: Vec::new(),
                address_offset: self.address_offset,
                address_base: self.address_base,
                poll_interval: self.poll_interval,
                channel_prefix: self.channel_prefix.as_deref().map(|p| fill(p, unit)),
                name: fill(&self.name, unit),
            })
            .collect()
    }
}

/// Replaces `{unit}` and `{unit:0N}` with the unit id.
pub fn fill(pattern: &str, unit: u8) -> String {
    let mut out = String::with_capacity(pattern.len() + 2);
    let mut rest = pattern;
    while let Some(at) = rest.find("{unit") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 5..];
        if let Some(after) = tail.strip_prefix('}') {
            out.push_str(&unit.to_string());
            rest = after;
        } else if let Some((width, after)) = tail
            .strip_prefix(":0")
            .and_then(|t| t.split_once('}'))
            .and_then(|(w, a)| w.parse::<usize>().ok().map(|w| (w, a)))
        {
            out.push_str(&format!("{unit:0width$}"));
            rest = after;
        } else {
            out.push_str("{unit");
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

fn default_unit() -> u8 {
    1
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}

/// Metadata for one channel; overrides what the device map says.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelOverride {
    /// Channel id; must be produced by some device.
    pub id: String,
    /// Display label (tag number, location).
    pub label: Option<String>,
    /// Kind override.
    pub kind: Option<String>,
    /// Unit override.
    pub unit: Option<String>,
    /// Engineering range override.
    pub range: Option<[f64; 2]>,
    /// No good sample within this age makes the channel stale (a fault).
    #[schemars(with = "Option<crate::schema::HumanDuration>")]
    #[serde(with = "humantime_serde", default)]
    pub max_age: Option<Duration>,
    /// Poll this (Modbus) channel at its own interval instead of its device's.
    #[schemars(with = "Option<crate::schema::HumanDuration>")]
    #[serde(with = "humantime_serde", default)]
    pub poll_interval: Option<Duration>,
    /// Words for the channel's values (`{ 0 = "停止", 1 = "运行" }`); replace the register's.
    #[serde(default)]
    pub states: std::collections::BTreeMap<String, String>,
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A time-series output.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Output {
    /// InfluxDB 1.x `/write` (also accepted by 3.x).
    InfluxdbV1(InfluxV1Output),
    /// InfluxDB 2.x `/api/v2/write`.
    InfluxdbV2(InfluxV2Output),
}

impl Output {
    /// The output's id.
    pub fn id(&self) -> &str {
        match self {
            Output::InfluxdbV1(o) => &o.id,
            Output::InfluxdbV2(o) => &o.id,
        }
    }
    /// Shared batching settings.
    pub fn batching(&self) -> &Batching {
        match self {
            Output::InfluxdbV1(o) => &o.batching,
            Output::InfluxdbV2(o) => &o.batching,
        }
    }
    /// Base URL.
    pub fn url(&self) -> &str {
        match self {
            Output::InfluxdbV1(o) => &o.url,
            Output::InfluxdbV2(o) => &o.url,
        }
    }
}

/// InfluxDB v1 API.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfluxV1Output {
    /// Output id.
    pub id: String,
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// Database.
    pub database: String,
    /// Retention policy; the database default when absent.
    pub retention_policy: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<SecretRef>,
    /// Batching and retry.
    #[serde(flatten)]
    pub batching: Batching,
}

/// InfluxDB v2 API.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfluxV2Output {
    /// Output id.
    pub id: String,
    /// Base URL.
    pub url: String,
    /// Organisation.
    pub org: String,
    /// Bucket.
    pub bucket: String,
    /// API token.
    pub token: Option<SecretRef>,
    /// Batching and retry.
    #[serde(flatten)]
    pub batching: Batching,
}

/// Batching shared by time-series outputs.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
pub struct Batching {
    /// Points per write request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A partial batch is sent after this long.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_flush")]
    pub flush_interval: Duration,
    /// Per-request timeout.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_http_timeout")]
    pub timeout: Duration,
    /// Points held in memory while the output is down; when full the oldest are dropped and counted.
    #[serde(default = "default_output_queue")]
    pub queue_capacity: usize,
    /// gzip request bodies.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Timestamp precision sent to this output (`ns`, `us`, `ms`, `s`).
    #[serde(default)]
    pub precision: Precision,
    /// Disk spool (store-and-forward); memory only when absent.
    #[serde(default)]
    pub spool: Option<SpoolConfig>,
    /// Write requests in flight at once (at least 1).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Report by exception (deadband + heartbeat); every reading when absent.
    #[serde(default)]
    pub reduction: Option<ReductionConfig>,
    /// Write per-window aggregates instead of raw readings.
    #[serde(default)]
    pub downsample: Option<DownsampleConfig>,
}

fn default_max_in_flight() -> usize {
    2
}

fn default_batch_size() -> usize {
    1000
}
fn default_flush() -> Duration {
    Duration::from_secs(1)
}
fn default_output_queue() -> usize {
    1_000_000
}
fn default_true() -> bool {
    true
}
