//! Topic → channel mapping and payload extraction. Pure: no I/O, time is passed in.
//!
//! Invariants:
//! - A message never produces a sample for a channel that is not declared on its source.
//! - A value that cannot be read for a known channel gives a `Bad(decode)` sample (a garbled
//!   reading must not leave the last good value looking current); a payload whose channel cannot
//!   even be determined gives no sample. Both are reported as [`Issue`]s for counting and logging.
//! - A device status outside the configured good values gives a Bad sample with the status.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use super::json::Json;
pub use super::topic::{Template, TopicPattern};
use crate::config::mqtt::{
    MqttSource, MqttTopic, OutOfRange, PayloadFormat, TimestampLimits, TimestampUnit,
};
use crate::model::{BadReason, ChannelId, Reading, Sample};

/// A dotted JSON path (`data.0.v`); empty = the whole value.
#[derive(Clone, Debug)]
pub struct JsonPath(Vec<String>);

impl JsonPath {
    /// Parses a dotted path.
    pub fn parse(p: &str) -> Self {
        Self(
            p.split('.')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Looks the path up.
    pub fn get<'v, 'a>(&self, mut v: &'v Json<'a>) -> Option<&'v Json<'a>> {
        for seg in &self.0 {
            v = match v {
                Json::Object(_) => v.get(seg)?,
                Json::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// The single member name, for a one-level path.
    fn single(&self) -> Option<&str> {
        match self.0.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Something worth counting (and logging, rate-limited) about a message.
#[derive(Clone, Debug, PartialEq)]
pub enum Issue {
    /// No mapping matched the topic.
    Unmapped,
    /// A mapping produced a channel id that this source does not declare.
    UnknownChannel(String),
    /// The payload or a value in it could not be read.
    Decode(String),
    /// A device timestamp was out of range and replaced by the receive time.
    TimestampClamped(String),
    /// A device timestamp was out of range and the sample dropped.
    TimestampRejected(String),
    /// A retained message was ignored.
    RetainedIgnored,
}

impl Issue {
    /// Low-cardinality name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Issue::Unmapped => "unmapped_topic",
            Issue::UnknownChannel(_) => "unknown_channel",
            Issue::Decode(_) => "decode_error",
            Issue::TimestampClamped(_) => "timestamp_clamped",
            Issue::TimestampRejected(_) => "timestamp_rejected",
            Issue::RetainedIgnored => "retained_ignored",
        }
    }
}

#[derive(Debug)]
enum Shape {
    Single,
    Object(JsonPath),
    Records { array: JsonPath, key: JsonPath },
}

#[derive(Debug)]
struct Compiled {
    pattern: TopicPattern,
    template: Template,
    format: PayloadFormat,
    value: JsonPath,
    timestamp: Option<JsonPath>,
    ts_unit: TimestampUnit,
    status: Option<JsonPath>,
    good: Vec<String>,
    shape: Shape,
}

/// What one message gave.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Samples, in payload order.
    pub samples: Vec<Sample>,
    /// Everything worth counting.
    pub issues: Vec<Issue>,
}

/// The compiled mappings of one source.
#[derive(Debug)]
pub struct Mapper {
    topics: Vec<Compiled>,
    channels: HashSet<ChannelId>,
    limits: TimestampLimits,
}

impl Mapper {
    /// Compiles a source's mappings (already validated).
    pub fn new(src: &MqttSource) -> Result<Self, String> {
        let mut topics = Vec::new();
        for (i, t) in src.topics.iter().enumerate() {
            let (pattern, template) = crate::config::mqtt::compile_topic(t).map_err(|e| {
                e.into_iter()
                    .map(|(f, m)| format!("topics[{i}].{f}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            topics.push(compile(t, pattern, template));
        }
        Ok(Self {
            topics,
            channels: src.channels.iter().map(|c| ChannelId::new(&c.id)).collect(),
            limits: src.timestamps.clone(),
        })
    }

    /// Subscriptions: `(mqtt filter, qos)` per mapping, duplicates removed.
    pub fn subscriptions(&self, src: &MqttSource) -> Vec<(String, u8)> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (c, t) in self.topics.iter().zip(&src.topics) {
            let f = c.pattern.mqtt_filter();
            if seen.insert(f.clone()) {
                out.push((f, t.qos.unwrap_or(src.qos)));
            }
        }
        out
    }

    /// Maps one message received at `now`.
    pub fn map(&self, topic: &str, payload: &[u8], now: SystemTime) -> Outcome {
        let mut out = Outcome::default();
        let Some((t, caps)) = self
            .topics
            .iter()
            .find_map(|t| t.pattern.matches(topic).map(|c| (t, c)))
        else {
            out.issues.push(Issue::Unmapped);
            return out;
        };
        match (&t.format, &t.shape) {
            (PayloadFormat::Number, _) => {
                let Some(ch) = self.channel(t, &caps, None, &mut out) else {
                    return out;
                };
                let reading = match std::str::from_utf8(payload)
                    .ok()
                    .and_then(|s| number_text(s.trim()))
                {
                    Some(v) => Reading::Good(v),
                    None => {
                        let d = format!("not a number: {}", excerpt(payload));
                        out.issues.push(Issue::Decode(d.clone()));
                        Reading::Bad(BadReason::Decode { detail: d })
                    }
                };
                out.samples.push(Sample {
                    channel: ch,
                    ts: now,
                    reading,
                });
            }
            (PayloadFormat::Json, shape) => {
                let root = match Json::parse(payload) {
                    Ok(v) => v,
                    Err(e) => {
                        let d = format!("not JSON ({e}): {}", excerpt(payload));
                        out.issues.push(Issue::Decode(d.clone()));
                        // A single-channel mapping knows its channel: report it Bad.
                        if matches!(shape, Shape::Single) {
                            if let Some(ch) = self.channel(t, &caps, None, &mut out) {
                                out.samples.push(Sample {
                                    channel: ch,
                                    ts: now,
                                    reading: Reading::Bad(BadReason::Decode { detail: d }),
                                });
                            }
                        }
                        return out;
                    }
                };
                let root_ts = t.timestamp.as_ref().and_then(|p| p.get(&root));
                match shape {
                    Shape::Single => {
                        if let Some(ch) = self.channel(t, &caps, None, &mut out) {
                            self.record(t, ch, &root, None, now, &mut out);
                        }
                    }
                    Shape::Object(path) => match path.get(&root).and_then(Json::members) {
                        Some(members) => {
                            let skip: Vec<&str> = if path.0.is_empty() {
                                [&t.timestamp, &t.status]
                                    .into_iter()
                                    .filter_map(|p| p.as_ref().and_then(JsonPath::single))
                                    .collect()
                            } else {
                                Vec::new()
                            };
                            for (k, v) in members {
                                if skip.contains(&k) {
                                    continue;
                                }
                                if let Some(ch) = self.channel(t, &caps, Some(k), &mut out) {
                                    self.record(t, ch, v, root_ts, now, &mut out);
                                }
                            }
                        }
                        _ => out.issues.push(Issue::Decode(format!(
                            "no object at `{}`: {}",
                            path.0.join("."),
                            excerpt(payload)
                        ))),
                    },
                    Shape::Records { array, key } => match array.get(&root) {
                        Some(Json::Array(recs)) => {
                            for r in recs {
                                let k = match key.get(r) {
                                    Some(Json::String(s)) => s.to_string(),
                                    Some(Json::Number(n)) => n.to_string(),
                                    _ => {
                                        out.issues.push(Issue::Decode(format!(
                                            "record without a key at `{}`: {}",
                                            key.0.join("."),
                                            excerpt(r.to_string().as_bytes())
                                        )));
                                        continue;
                                    }
                                };
                                if let Some(ch) = self.channel(t, &caps, Some(&k), &mut out) {
                                    self.record(t, ch, r, root_ts, now, &mut out);
                                }
                            }
                        }
                        _ => out.issues.push(Issue::Decode(format!(
                            "no array at `{}`: {}",
                            array.0.join("."),
                            excerpt(payload)
                        ))),
                    },
                }
            }
        }
        out
    }

    fn channel(
        &self,
        t: &Compiled,
        caps: &[&str],
        key: Option<&str>,
        out: &mut Outcome,
    ) -> Option<ChannelId> {
        let id = t.template.render(caps, key);
        // The configured id is shared (no new id per message).
        if let Some(known) = self.channels.get(id.as_str()) {
            Some(known.clone())
        } else {
            out.issues.push(Issue::UnknownChannel(id));
            None
        }
    }

    /// Reads one channel's value, status and timestamp from `v` (a number or an object).
    fn record(
        &self,
        t: &Compiled,
        channel: ChannelId,
        v: &Json<'_>,
        outer_ts: Option<&Json<'_>>,
        now: SystemTime,
        out: &mut Outcome,
    ) {
        let (value, status, ts) = if v.is_object() {
            (
                t.value.get(v),
                t.status.as_ref().and_then(|p| p.get(v)),
                t.timestamp.as_ref().and_then(|p| p.get(v)).or(outer_ts),
            )
        } else {
            // A bare member value (object mode): the number itself.
            (Some(v), None, outer_ts)
        };
        let mut ts_out = now;
        if let Some(tv) = ts {
            match parse_ts(tv, t.ts_unit) {
                Ok(dev) => {
                    let future = dev.duration_since(now).unwrap_or_default();
                    let past = now.duration_since(dev).unwrap_or_default();
                    // Whatever the limits, a time before 1970 or after 9999 is out of range:
                    // the rest of the gateway (line protocol, messages) never sees one.
                    let representable = dev >= UNIX_EPOCH && dev < UNIX_EPOCH + MAX_TIME;
                    if future > self.limits.max_future
                        || past > self.limits.max_past
                        || !representable
                    {
                        let d = format!(
                            "{channel}: device time {} is {} the gateway's clock",
                            fmt_time(dev),
                            if future > Duration::ZERO {
                                format!("{} ahead of", humantime::format_duration(trunc(future)))
                            } else {
                                format!("{} behind", humantime::format_duration(trunc(past)))
                            }
                        );
                        match self.limits.out_of_range {
                            OutOfRange::ReceiveTime => out.issues.push(Issue::TimestampClamped(d)),
                            OutOfRange::Reject => {
                                out.issues.push(Issue::TimestampRejected(d));
                                return;
                            }
                        }
                    } else {
                        ts_out = dev;
                    }
                }
                Err(e) => {
                    let d = format!("{channel}: bad timestamp: {e}");
                    out.issues.push(Issue::Decode(d.clone()));
                    out.samples.push(Sample {
                        channel,
                        ts: now,
                        reading: Reading::Bad(BadReason::Decode { detail: d }),
                    });
                    return;
                }
            }
        }
        if let Some(s) = status {
            if let Some(reason) = bad_status(s, &t.good) {
                out.samples.push(Sample {
                    channel,
                    ts: ts_out,
                    reading: Reading::Bad(reason),
                });
                return;
            }
        }
        let reading = match value.and_then(json_number) {
            Some(x) => Reading::Good(x),
            None => {
                let d = match value {
                    None => format!("{channel}: no value at `{}`", t.value.0.join(".")),
                    Some(v) => format!(
                        "{channel}: value is not a number: {}",
                        excerpt(v.to_string().as_bytes())
                    ),
                };
                out.issues.push(Issue::Decode(d.clone()));
                Reading::Bad(BadReason::Decode { detail: d })
            }
        };
        out.samples.push(Sample {
            channel,
            ts: ts_out,
            reading,
        });
    }
}

/// 10000-01-01T00:00:00Z after the epoch.
const MAX_TIME: Duration = Duration::from_secs(253_402_300_800);

fn trunc(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

fn compile(t: &MqttTopic, pattern: TopicPattern, template: Template) -> Compiled {
    let shape = match (&t.object, &t.records) {
        (Some(o), _) => Shape::Object(JsonPath::parse(o)),
        (None, Some(r)) => Shape::Records {
            array: JsonPath::parse(r),
            key: JsonPath::parse(t.key.as_deref().unwrap_or("id")),
        },
        (None, None) => Shape::Single,
    };
    Compiled {
        pattern,
        template,
        format: t.format,
        value: JsonPath::parse(t.value.as_deref().unwrap_or("value")),
        timestamp: t.timestamp.as_deref().map(JsonPath::parse),
        ts_unit: t.timestamp_unit,
        status: t.status.as_deref().map(JsonPath::parse),
        good: t
            .good_status
            .clone()
            .unwrap_or_else(|| vec!["0".into(), "ok".into(), "good".into(), "normal".into()])
            .into_iter()
            .map(|s| s.to_lowercase())
            .collect(),
        shape,
    }
}

/// `12.5`, `"12.5"`, `true` → a number; NaN and infinities are not readings.
fn number_text(s: &str) -> Option<f64> {
    let s = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s)
        .trim();
    let v = match s {
        "true" => 1.0,
        "false" => 0.0,
        _ => s.parse::<f64>().ok()?,
    };
    v.is_finite().then_some(v)
}

fn json_number(v: &Json<'_>) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64().filter(|x| x.is_finite()),
        Json::String(s) => number_text(s.trim()),
        Json::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn bad_status(s: &Json<'_>, good: &[String]) -> Option<BadReason> {
    let text = match s {
        Json::String(x) => x.to_lowercase(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        Json::Null => "null".into(),
        other => other.to_string(),
    };
    if good.contains(&text) {
        return None;
    }
    Some(match s.as_i64() {
        Some(code) => BadReason::DeviceFault { code },
        None => BadReason::DeviceStatus {
            status: excerpt(text.as_bytes()),
        },
    })
}

/// Parses a device timestamp.
pub fn parse_ts(v: &Json<'_>, unit: TimestampUnit) -> Result<SystemTime, String> {
    let num = match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) if unit != TimestampUnit::Rfc3339 => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match (num, v) {
        (Some(x), _) if unit != TimestampUnit::Rfc3339 => {
            if !(x.is_finite() && x >= 0.0) {
                return Err(format!("{x} is not a time"));
            }
            let unit = if unit == TimestampUnit::Auto {
                match x {
                    x if x < 1e11 => TimestampUnit::S,
                    x if x < 1e14 => TimestampUnit::Ms,
                    x if x < 1e17 => TimestampUnit::Us,
                    _ => TimestampUnit::Ns,
                }
            } else {
                unit
            };
            let secs = match unit {
                TimestampUnit::S => x,
                TimestampUnit::Ms => x / 1e3,
                TimestampUnit::Us => x / 1e6,
                _ => x / 1e9,
            };
            // Integers keep full precision (ns since the epoch do not fit an f64 exactly).
            let d = match (v.as_u64(), unit) {
                (Some(i), TimestampUnit::Ns) => Duration::from_nanos(i),
                (Some(i), TimestampUnit::Us) => Duration::from_micros(i),
                (Some(i), TimestampUnit::Ms) => Duration::from_millis(i),
                (Some(i), TimestampUnit::S) => Duration::from_secs(i),
                _ => Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())?,
            };
            UNIX_EPOCH
                .checked_add(d)
                .ok_or_else(|| format!("{x} is out of range"))
        }
        (_, Json::String(s)) if matches!(unit, TimestampUnit::Auto | TimestampUnit::Rfc3339) => {
            parse_rfc3339(s.trim())
        }
        _ => Err(format!(
            "`{}` is not a {unit:?} timestamp",
            excerpt(v.to_string().as_bytes())
        )),
    }
}

/// RFC 3339 with `Z` or a numeric offset (`+08:00`); a time without a zone is refused.
/// Parsed by chrono: any text, however malformed, gives an error, never a panic.
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(SystemTime::from)
        .map_err(|_| {
            format!(
                "`{}` is not an RFC 3339 time with a zone",
                excerpt(s.as_bytes())
            )
        })
}

/// RFC 3339 UTC with milliseconds for messages. Any time a device can send formats without a
/// panic: before 1970, after 9999 and beyond chrono's range (shown as seconds since 1970).
fn fmt_time(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (i128::from(d.as_secs()), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (-i128::from(d.as_secs()), 0),
                n => (-i128::from(d.as_secs()) - 1, 1_000_000_000 - n),
            }
        }
    };
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, nanos))
        .map(|dt| dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{secs} s since 1970"))
}

/// At most 64 bytes of a payload, lossily decoded and escaped, for logs.
pub fn excerpt(b: &[u8]) -> String {
    let cut = &b[..b.len().min(64)];
    let s = String::from_utf8_lossy(cut);
    let mut e: String = s.escape_debug().collect();
    if b.len() > 64 {
        e.push('…');
    }
    e
}

/// Shared so the task and tests see the same compiled mappings.
pub type SharedMapper = Arc<Mapper>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mqtt::MqttChannel;

    fn src(topics: &str, channels: &[&str]) -> MqttSource {
        let text = format!("id = \"m\"\naddress = \"127.0.0.1:1883\"\n{topics}");
        let mut s: MqttSource = toml::from_str(&text).expect("parses");
        s.channels = channels
            .iter()
            .map(|c| MqttChannel {
                id: (*c).into(),
                area: None,
                device: None,
                kind: None,
                unit: None,
                label: None,
                range: None,
                max_age: None,
                states: Default::default(),
            })
            .collect();
        s
    }

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn values(o: &Outcome) -> Vec<(String, Option<f64>)> {
        o.samples
            .iter()
            .map(|s| (s.channel.to_string(), s.reading.value()))
            .collect()
    }

    #[test]
    fn patterns_match_and_capture() {
        let p = TopicPattern::parse("site/{site}/gas/{device}").expect("ok");
        assert_eq!(p.mqtt_filter(), "site/+/gas/+");
        assert_eq!(p.matches("site/a1/gas/GD7"), Some(vec!["a1", "GD7"]));
        assert_eq!(p.matches("site/a1/gas"), None);
        assert_eq!(p.matches("site/a1/gas/x/y"), None);
        let h = TopicPattern::parse("dtu/#").expect("ok");
        assert!(h.matches("dtu").is_some());
        assert!(h.matches("dtu/1/2").is_some());
        let all = TopicPattern::parse("#").expect("ok");
        assert!(all.matches("$SYS/broker/uptime").is_none());
        for bad in ["", "a/#/b", "a/x+/b", "a/{}/b", "a/{k}/{k}", "a/{key}"] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates() {
        let t = Template::parse("{site}.{device}.lel", &["site", "device"]).expect("ok");
        assert_eq!(t.render(&["a1", "GD7"], None), "a1.gd7.lel");
        assert!(Template::parse("{nope}.x.y", &["site"]).is_err());
        assert!(Template::parse("{site}.X.y", &["site"]).is_err());
        assert!(Template::parse("{site.x", &["site"]).is_err());
    }

    #[test]
    fn plain_numbers_and_strings() {
        let m = Mapper::new(&src(
            "[[topics]]\nfilter = \"p/{d}\"\nchannel = \"a.{d}.v\"\nformat = \"number\"\n",
            &["a.gd1.v"],
        ))
        .expect("compiles");
        for (payload, want) in [
            ("12.5", Some(12.5)),
            (" \"7\" ", Some(7.0)),
            ("true", Some(1.0)),
            ("abc", None),
            ("NaN", None),
        ] {
            let o = m.map("p/GD1", payload.as_bytes(), t0());
            assert_eq!(values(&o), vec![("a.gd1.v".to_owned(), want)], "{payload}");
            assert_eq!(
                o.issues.is_empty(),
                want.is_some(),
                "{payload}: {:?}",
                o.issues
            );
        }
        let o = m.map("p/gd2", b"1", t0());
        assert!(o.samples.is_empty());
        assert_eq!(o.issues, vec![Issue::UnknownChannel("a.gd2.v".into())]);
        assert_eq!(m.map("q/gd1", b"1", t0()).issues, vec![Issue::Unmapped]);
    }

    #[test]
    fn json_value_timestamp_status() {
        let m = Mapper::new(&src(
            "[[topics]]\nfilter = \"j/{d}\"\nchannel = \"a.{d}.lel\"\nvalue = \"data.v\"\ntimestamp = \"data.t\"\nstatus = \"st\"\n",
            &["a.gd1.lel"],
        ))
        .expect("compiles");
        let now = t0();
        let cases: Vec<(String, SystemTime)> = vec![
            ("1700000000".into(), now),
            ("1699999999500".into(), now - Duration::from_millis(500)),
            ("1699999999000000000".into(), now - Duration::from_secs(1)),
            (
                "\"2023-11-14T22:13:19Z\"".into(),
                now - Duration::from_secs(1),
            ),
            (
                "\"2023-11-15T06:13:18.5+08:00\"".into(),
                now - Duration::from_millis(1500),
            ),
        ];
        for (ts, want) in cases {
            let payload = format!("{{\"data\":{{\"v\":3.5,\"t\":{ts}}},\"st\":\"OK\"}}");
            let o = m.map("j/gd1", payload.as_bytes(), now);
            assert!(o.issues.is_empty(), "{ts}: {:?}", o.issues);
            assert_eq!(o.samples[0].reading, Reading::Good(3.5));
            assert_eq!(o.samples[0].ts, want, "{ts}");
        }
        let o = m.map(
            "j/gd1",
            br#"{"data":{"v":3.5,"t":1700000000},"st":"fault"}"#,
            now,
        );
        assert_eq!(
            o.samples[0].reading,
            Reading::Bad(BadReason::DeviceStatus {
                status: "fault".into()
            })
        );
        let o = m.map("j/gd1", br#"{"data":{"v":3.5},"st":17}"#, now);
        assert_eq!(
            o.samples[0].reading,
            Reading::Bad(BadReason::DeviceFault { code: 17 })
        );
        // Garbage for a known channel: Bad(decode), counted.
        let o = m.map("j/gd1", b"{not json", now);
        assert!(matches!(
            o.samples[0].reading,
            Reading::Bad(BadReason::Decode { .. })
        ));
        assert_eq!(o.issues[0].kind(), "decode_error");
        let o = m.map("j/gd1", br#"{"data":{"v":"high"},"st":0}"#, now);
        assert!(matches!(
            o.samples[0].reading,
            Reading::Bad(BadReason::Decode { .. })
        ));
        // A time without a zone is refused.
        let o = m.map(
            "j/gd1",
            br#"{"data":{"v":1,"t":"2023-11-14T22:13:19"},"st":0}"#,
            now,
        );
        assert!(matches!(
            o.samples[0].reading,
            Reading::Bad(BadReason::Decode { .. })
        ));
    }

    #[test]
    fn timestamps_out_of_range() {
        let base = "[[topics]]\nfilter = \"t\"\nchannel = \"a.b.c\"\ntimestamp = \"t\"\n";
        let m = Mapper::new(&src(base, &["a.b.c"])).expect("compiles");
        let now = t0();
        let o = m.map("t", br#"{"value":1,"t":1700003600}"#, now);
        assert_eq!(o.samples[0].ts, now, "clamped to the receive time");
        assert_eq!(o.issues[0].kind(), "timestamp_clamped");
        let o = m.map("t", br#"{"value":1,"t":1000}"#, now);
        assert_eq!(o.issues[0].kind(), "timestamp_clamped");
        let m = Mapper::new(&src(
            &format!("[timestamps]\nout_of_range = \"reject\"\nmax_future = \"10s\"\n{base}"),
            &["a.b.c"],
        ))
        .expect("compiles");
        let o = m.map("t", br#"{"value":1,"t":1700000011}"#, now);
        assert!(o.samples.is_empty());
        assert_eq!(o.issues[0].kind(), "timestamp_rejected");
        let o = m.map("t", br#"{"value":1,"t":1700000009}"#, now);
        assert_eq!(o.samples.len(), 1);
    }

    #[test]
    fn objects_and_records() {
        let m = Mapper::new(&src(
            "[[topics]]\nfilter = \"o/{d}\"\nchannel = \"a.{d}.{key}\"\nobject = \"\"\ntimestamp = \"ts\"\n\
             [[topics]]\nfilter = \"r/{d}\"\nchannel = \"a.{d}.{key}\"\nrecords = \"data\"\nkey = \"id\"\nvalue = \"v\"\nstatus = \"q\"\ntimestamp = \"ts\"\n",
            &["a.gd1.lel", "a.gd1.o2"],
        ))
        .expect("compiles");
        let now = t0();
        let o = m.map(
            "o/gd1",
            br#"{"ts":1699999999,"lel":12,"o2":"20.9","sn":"X1"}"#,
            now,
        );
        let mut v = values(&o);
        v.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            v,
            vec![
                ("a.gd1.lel".into(), Some(12.0)),
                ("a.gd1.o2".into(), Some(20.9))
            ]
        );
        assert!(
            o.samples
                .iter()
                .all(|s| s.ts == now - Duration::from_secs(1))
        );
        assert_eq!(o.issues, vec![Issue::UnknownChannel("a.gd1.sn".into())]);
        let o = m.map(
            "r/gd1",
            br#"{"ts":1699999998,"data":[{"id":"LEL","v":5,"q":0},{"id":"o2","v":19,"q":3,"ts":1699999999},{"v":1}]}"#,
            now,
        );
        assert_eq!(o.samples.len(), 2);
        assert_eq!(o.samples[0].reading, Reading::Good(5.0));
        assert_eq!(o.samples[0].ts, now - Duration::from_secs(2));
        assert_eq!(
            o.samples[1].reading,
            Reading::Bad(BadReason::DeviceFault { code: 3 })
        );
        assert_eq!(o.samples[1].ts, now - Duration::from_secs(1));
        assert_eq!(o.issues.len(), 1, "{:?}", o.issues);
        assert_eq!(
            m.map("r/gd1", b"[1,2]", now).issues[0].kind(),
            "decode_error"
        );
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        let long = vec![b'a'; 200];
        assert_eq!(excerpt(&long).chars().count(), 65);
        assert_eq!(excerpt(b"a\nb\xff"), "a\\nb\u{fffd}");
    }
}
