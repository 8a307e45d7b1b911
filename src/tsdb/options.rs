//! Output settings owned by the time-series writer: timestamp precision, the disk spool
//! (`spool = { dir, max_size, fsync, … }`), reduction (`reduction = { deadband, heartbeat, … }`),
//! downsampling (`downsample = { window = "1m" }`) and a byte-size type parsed from strings such
//! as `"2GiB"`. They are embedded in `config::Batching` (flattened into every `[[outputs]]` table).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Timestamp precision sent to an output (`precision=` query parameter). Lines are encoded in
/// nanoseconds once; each output truncates them to its precision when it builds a request body.
/// A coarser precision merges points of one series that fall into the same tick (InfluxDB keeps
/// the last one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Nanoseconds (default).
    #[default]
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    /// The value of the `precision` query parameter of the v2 API (`ns`, `us`, `ms`, `s`).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }

    /// The value of the `precision` query parameter of the v1 `/write` API, which spells
    /// microseconds `u` (InfluxDB 1.x takes an unknown value for nanoseconds without a word,
    /// storing timestamps 1000 times too small).
    pub fn as_v1_str(self) -> &'static str {
        match self {
            Precision::Us => "u",
            p => p.as_str(),
        }
    }

    /// Nanoseconds per unit.
    pub fn divisor(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        }
    }
}

/// A size in bytes, written as an integer or a string with a unit: `B`, `KB`/`MB`/`GB`/`TB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), e.g. `"2GiB"`, `"512 MiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (u, n) in UNITS {
            if self.0 >= n && self.0 % n == 0 {
                return write!(f, "{}{u}", self.0 / n);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Why a size string was not understood.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a size (write for example \"2GiB\", \"500MB\" or a number of bytes)")]
pub struct ByteSizeError(String);

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| ByteSizeError(s.to_owned()))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => return Err(ByteSizeError(s.to_owned())),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| ByteSizeError(s.to_owned()))
    }
}

/// What [`ByteSize::from_str`] and the integer form accept.
impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: an integer, or a string with a unit (B, KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024), e.g. \"2GiB\", \"512 MiB\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*(B|KB|kB|MB|GB|TB|KiB|MiB|GiB|TiB)?\\s*$" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// When spooled data is forced to stable storage (`fsync`). A process crash (kill -9) loses
/// nothing that was written to the spool whatever the policy: the kernel still holds it. The
/// policy matters for power loss and kernel crashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every spooled batch (safest, most flash wear).
    Batch,
    /// At most every `fsync_interval` (default).
    #[default]
    Interval,
    /// Never; the kernel writes back when it likes.
    Never,
}

/// The disk spool of one output (store-and-forward); see `tsdb::spool` for its invariants.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory owned by this output's spool (one directory per output; created if missing).
    pub dir: PathBuf,
    /// Capacity; when full the oldest segments are dropped and counted
    /// (`hazgate_points_dropped_total{reason="spool_full"}`).
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// Size at which a segment file is closed and a new one started.
    #[serde(default = "default_segment_size")]
    pub segment_size: ByteSize,
    /// When spooled data is fsynced.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Period of `fsync = "interval"`.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_fsync_interval")]
    pub fsync_interval: Duration,
    /// Size of `quarantine.lp` (points the server refused) before it is rotated to
    /// `quarantine.lp.1`.
    #[serde(default = "default_quarantine_size")]
    pub quarantine_size: ByteSize,
}

fn default_max_size() -> ByteSize {
    ByteSize(2 << 30)
}
fn default_segment_size() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_fsync_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_quarantine_size() -> ByteSize {
    ByteSize(64 << 20)
}

/// Report by exception for one output (`reduction = { … }`): a good reading is written only when
/// it moved more than the deadband away from the last value written for its channel, or when the
/// heartbeat is due. Bad readings, and the first good reading after a bad one, are always
/// written; alarm events are never reduced. See `tsdb::reduce`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReductionConfig {
    /// Absolute deadband in the channel's engineering unit (0: any change is written).
    #[serde(default)]
    pub deadband: f64,
    /// Deadband in percent of the channel's configured range (`range = [lo, hi]`); ignored for
    /// channels without a range. When both are set, the larger deadband applies.
    #[serde(default)]
    pub deadband_percent: f64,
    /// A reading is written at least this often even when unchanged (measured on sample
    /// timestamps), so a flat line in Grafana is distinguishable from a silent gateway.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_heartbeat")]
    pub heartbeat: Duration,
    /// Per-channel overrides; each field given replaces the output's value for that channel.
    #[serde(default)]
    pub channels: Vec<ChannelReduction>,
}

/// Reduction settings of one channel on one output.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelReduction {
    /// Channel id.
    pub id: String,
    /// Absolute deadband for this channel.
    pub deadband: Option<f64>,
    /// Deadband in percent of this channel's range.
    pub deadband_percent: Option<f64>,
    /// Heartbeat for this channel.
    #[schemars(with = "Option<crate::schema::HumanDuration>")]
    #[serde(with = "humantime_serde", default)]
    pub heartbeat: Option<Duration>,
    /// Write every reading of this channel (no reduction).
    #[serde(default)]
    pub off: bool,
}

/// Downsampling for one output (`downsample = { window = "1m" }`): instead of raw readings the
/// output receives one aggregate point (min, max, mean, counts) per channel and window. See
/// `tsdb::reduce` and the schema in docs/ARCHITECTURE.md.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownsampleConfig {
    /// Window length; windows are aligned on the Unix epoch (like InfluxQL `GROUP BY time()`).
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Measurement name; `reading_{window}` by default (e.g. `reading_1m`).
    pub measurement: Option<String>,
    /// A window is written when the channel's first sample of a later window arrives, or this
    /// long after the window's end, whichever comes first.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_downsample_delay")]
    pub delay: Duration,
}

impl DownsampleConfig {
    /// The measurement aggregates are written to.
    pub fn measurement(&self) -> String {
        self.measurement.clone().unwrap_or_else(|| {
            format!("reading_{}", humantime::format_duration(self.window)).replace(' ', "")
        })
    }
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(60)
}
fn default_downsample_delay() -> Duration {
    Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        let ok = [
            ("2GiB", 2u64 << 30),
            ("512 MiB", 512 << 20),
            ("1GB", 1_000_000_000),
            ("100", 100),
            ("7B", 7),
            ("64KiB", 65536),
        ];
        for (s, n) in ok {
            assert_eq!(s.parse::<ByteSize>().map(|b| b.0).ok(), Some(n), "{s}");
        }
        for bad in ["", "GiB", "2 gigs", "-1", "1.5GiB", "99999999999TiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn downsample_measurement_names() {
        let d = |s: u64| DownsampleConfig {
            window: Duration::from_secs(s),
            measurement: None,
            delay: Duration::from_secs(5),
        };
        assert_eq!(d(60).measurement(), "reading_1m");
        assert_eq!(d(900).measurement(), "reading_15m");
        assert_eq!(d(30).measurement(), "reading_30s");
        assert_eq!(d(3600).measurement(), "reading_1h");
        assert_eq!(d(90).measurement(), "reading_1m30s");
    }
}
