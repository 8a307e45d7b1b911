//! InfluxDB line protocol encoding of the documented schema (see docs/ARCHITECTURE.md).
//!
//! - `reading`: tags `site, area, device, channel, kind, unit`; fields `value` (float, good readings
//!   only), `quality` (`"good"`/`"bad"`), and for bad readings `reason` and `detail`.
//! - `alarm_event`: tags `site, area, channel, condition, priority, transition`; fields `alarm`,
//!   `message`, `seq` (integer), `state` (the alarm's state after the transition), `active` and
//!   `unacked` (integers 0/1, see [`open_flags`]), and when known `value`, `limit`, `by`,
//!   `raised_at` (integer, ms since the epoch: when the current activation was raised) and
//!   `duration` (float seconds the activation lasted, on the event that ends it).
//!
//! - downsampled measurement (`reading_1m`, …): the `reading` tags; fields `min`, `max`, `mean`
//!   (floats, only when the window had a good reading), `count`, `bad_count` (integers),
//!   `quality` (`"good"`, `"mixed"`, `"bad"`) and `reason` (last bad reason, when any); timestamp
//!   = window start.
//!
//! Timestamps are encoded once in nanoseconds since the epoch; each output converts them to its
//! configured precision with [`push_with_precision`] when it builds a request body. Empty tag
//! values are omitted (InfluxDB rejects them).

use std::fmt::Write;

use super::options::Precision;
use crate::config::ResolvedChannel;
use crate::model::{AlarmEvent, Reading, Sample, epoch_nanos};

/// Escapes a measurement name (commas and spaces).
pub fn escape_measurement(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            ',' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
}

/// Escapes a tag key, tag value or field key (commas, equals signs, spaces).
pub fn escape_key(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            ',' | '=' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    // A trailing backslash would escape the separator that follows.
    if out.ends_with('\\') && !out.ends_with("\\\\") {
        out.push('\\');
    }
}

/// Escapes a string field value (quotes and backslashes), with its surrounding quotes.
pub fn escape_string_field(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out.push('"');
}

fn tag(out: &mut String, k: &str, v: &str) {
    if v.is_empty() {
        return;
    }
    out.push(',');
    escape_key(k, out);
    out.push('=');
    escape_key(v, out);
}

fn float(out: &mut String, v: f64) {
    // Display for f64 never uses an exponent and round-trips exactly.
    let _ = write!(out, "{v}");
}

/// Appends one `reading` line for `s` (with a trailing newline).
pub fn encode_sample(site: &str, ch: &ResolvedChannel, s: &Sample, out: &mut String) {
    out.push_str(&sample_key(site, ch));
    encode_sample_fields(s, out);
}

/// The start of every `reading` line of a channel: measurement and tags, escaped, and the
/// separating space. Computed once per channel (see [`encode_sample_fields`]).
pub fn sample_key(site: &str, ch: &ResolvedChannel) -> String {
    let mut out = String::from("reading");
    tag(&mut out, "site", site);
    tag(&mut out, "area", &ch.area);
    tag(&mut out, "device", ch.device.as_str());
    tag(&mut out, "channel", ch.id.as_str());
    tag(&mut out, "kind", &ch.kind);
    tag(&mut out, "unit", &ch.unit);
    out.push(' ');
    out
}

/// Appends the fields and timestamp of a `reading` line for `s` (with a trailing newline),
/// after the channel's [`sample_key`].
pub fn encode_sample_fields(s: &Sample, out: &mut String) {
    match &s.reading {
        Reading::Good(v) if v.is_finite() => {
            out.push_str("value=");
            float(out, *v);
            out.push_str(",quality=\"good\"");
        }
        Reading::Good(v) => {
            out.push_str("quality=\"bad\",reason=\"decode\",detail=");
            escape_string_field(&format!("non-finite value {v}"), out);
        }
        Reading::Bad(r) => {
            out.push_str("quality=\"bad\",reason=");
            escape_string_field(r.kind(), out);
            out.push_str(",detail=");
            escape_string_field(&r.to_string(), out);
        }
    }
    let _ = writeln!(out, " {}", epoch_nanos(s.ts));
}

/// Appends one downsampled line (with a trailing newline) to measurement `measurement`.
pub fn encode_aggregate(
    site: &str,
    measurement: &str,
    ch: &ResolvedChannel,
    a: &super::reduce::Aggregate,
    out: &mut String,
) {
    escape_measurement(measurement, out);
    tag(out, "site", site);
    tag(out, "area", &ch.area);
    tag(out, "device", ch.device.as_str());
    tag(out, "channel", ch.id.as_str());
    tag(out, "kind", &ch.kind);
    tag(out, "unit", &ch.unit);
    out.push(' ');
    if let Some(mean) = a.mean() {
        out.push_str("min=");
        float(out, a.min);
        out.push_str(",max=");
        float(out, a.max);
        out.push_str(",mean=");
        float(out, mean);
        out.push(',');
    }
    let _ = write!(out, "count={}i,bad_count={}i,quality=", a.count, a.bad);
    escape_string_field(a.quality(), out);
    if let Some(r) = a.last_reason {
        out.push_str(",reason=");
        escape_string_field(r, out);
    }
    let _ = writeln!(out, " {}", a.start_ns);
}

/// Appends one `alarm_event` line (with a trailing newline), without activation times.
pub fn encode_event(site: &str, area: &str, e: &AlarmEvent, out: &mut String) {
    encode_event_with(site, area, e, None, out);
}

/// Whether an alarm is open after event `e` (`active`: it needs to be shown as an alarm now:
/// active, returned but unacknowledged, or latched; site-level faults and floods until they
/// end) and whether it waits for a person (`unacked`: active or returned unacknowledged, or
/// latched until reset). Shelved, suppressed and out-of-service alarms are not active.
pub fn open_flags(e: &AlarmEvent) -> (bool, bool) {
    use crate::model::{AlarmClass, AlarmState, Transition};
    // Removed by a configuration reload: whatever state it had, it is no longer open (its
    // `state` field still says which state it was removed in).
    if e.transition == Transition::Removed {
        return (false, false);
    }
    if e.class == AlarmClass::System {
        let active = matches!(
            e.transition,
            Transition::Raised | Transition::Fault | Transition::Flood
        );
        return (active, false);
    }
    let active = matches!(
        e.state,
        AlarmState::ActiveUnacknowledged
            | AlarmState::ActiveAcknowledged
            | AlarmState::ReturnedUnacknowledged
            | AlarmState::Latched
    );
    let unacked = matches!(
        e.state,
        AlarmState::ActiveUnacknowledged | AlarmState::ReturnedUnacknowledged | AlarmState::Latched
    );
    (active, unacked)
}

/// Appends one `alarm_event` line (with a trailing newline); `raised` is when the alarm's
/// current (or, on the event that ends it, last) activation was raised, when the caller knows.
pub fn encode_event_with(
    site: &str,
    area: &str,
    e: &AlarmEvent,
    raised: Option<std::time::SystemTime>,
    out: &mut String,
) {
    out.push_str("alarm_event");
    tag(out, "site", site);
    tag(out, "area", area);
    tag(out, "channel", e.channel.as_str());
    tag(out, "condition", &e.condition);
    let prio = format!("{:?}", e.priority).to_lowercase();
    tag(out, "priority", &prio);
    tag(out, "transition", e.transition.as_str());
    out.push_str(" alarm=");
    escape_string_field(&e.alarm, out);
    out.push_str(",message=");
    escape_string_field(&e.message, out);
    let _ = write!(out, ",seq={}i", e.seq);
    if let Some(v) = e.value.filter(|v| v.is_finite()) {
        out.push_str(",value=");
        float(out, v);
    }
    if let Some(v) = e.limit.filter(|v| v.is_finite()) {
        out.push_str(",limit=");
        float(out, v);
    }
    out.push_str(",state=");
    escape_string_field(e.state.as_str(), out);
    let (active, unacked) = open_flags(e);
    let _ = write!(
        out,
        ",active={}i,unacked={}i",
        u8::from(active),
        u8::from(unacked)
    );
    if let Some(by) = &e.by {
        out.push_str(",by=");
        escape_string_field(by, out);
    }
    if let Some(r) = raised {
        let ms = epoch_nanos(r) / 1_000_000;
        let _ = write!(out, ",raised_at={ms}i");
        if !active {
            let secs = e.ts.duration_since(r).unwrap_or_default().as_secs_f64();
            out.push_str(",duration=");
            float(out, secs);
        }
    }
    let _ = writeln!(out, " {}", epoch_nanos(e.ts));
}

/// Appends `line` (ending in `\n`, trailing nanosecond timestamp) to `out` with its timestamp
/// converted to `p` (floored, so a point never moves into the next tick).
pub fn push_with_precision(line: &str, p: Precision, out: &mut Vec<u8>) {
    if p == Precision::Ns {
        out.extend_from_slice(line.as_bytes());
        return;
    }
    let body = line.strip_suffix('\n').unwrap_or(line);
    match body
        .rsplit_once(' ')
        .and_then(|(head, ts)| Some((head, ts.parse::<i64>().ok()?)))
    {
        Some((head, ns)) => {
            out.extend_from_slice(head.as_bytes());
            out.push(b' ');
            let _ =
                std::io::Write::write_fmt(out, format_args!("{}\n", ns.div_euclid(p.divisor())));
        }
        // Not one of ours (no timestamp): sent as it is, the server stamps it.
        None => out.extend_from_slice(line.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadReason, ChannelId, DeviceId};
    use std::time::{Duration, SystemTime};

    fn ch(id: &str, unit: &str) -> ResolvedChannel {
        ResolvedChannel {
            id: ChannelId::new(id),
            device: DeviceId::new("d 1"),
            area: "tank farm,east".into(),
            kind: "tank_level".into(),
            unit: unit.into(),
            label: String::new(),
            range: None,
            max_age: Duration::from_secs(5),
            states: Default::default(),
            device_name: String::new(),
        }
    }

    #[test]
    fn an_alarm_removed_by_a_reload_is_written_as_no_longer_open() {
        use crate::model::{AlarmClass, AlarmEvent, AlarmState, Priority, Transition};
        let e = AlarmEvent {
            seq: 7,
            alarm: "t.gd2.lel:H".into(),
            channel: ChannelId::new("t.gd2.lel"),
            condition: "H".into(),
            priority: Priority::High,
            transition: Transition::Removed,
            value: Some(30.0),
            limit: Some(25.0),
            message: "removed".into(),
            ts: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            class: AlarmClass::Process,
            kind: "combustible_gas".into(),
            state: AlarmState::ActiveUnacknowledged,
            by: Some("SIGHUP".into()),
            comment: None,
            raised_at: None,
            notice: Default::default(),
        };
        assert_eq!(open_flags(&e), (false, false));
        let mut out = String::new();
        encode_event("s", "t", &e, &mut out);
        assert!(out.contains("transition=removed"), "{out}");
        assert!(out.contains(",active=0i,unacked=0i"), "{out}");
        assert!(out.contains("state=\"active_unacknowledged\""), "{out}");
    }

    #[test]
    fn precision_conversion() {
        let line = "m,t=a\\ b f=\"x y\" 1700000000123456789\n";
        let cases = [
            (Precision::Ns, "m,t=a\\ b f=\"x y\" 1700000000123456789\n"),
            (Precision::Us, "m,t=a\\ b f=\"x y\" 1700000000123456\n"),
            (Precision::Ms, "m,t=a\\ b f=\"x y\" 1700000000123\n"),
            (Precision::S, "m,t=a\\ b f=\"x y\" 1700000000\n"),
        ];
        for (p, want) in cases {
            let mut out = Vec::new();
            push_with_precision(line, p, &mut out);
            assert_eq!(String::from_utf8(out).ok().as_deref(), Some(want), "{p:?}");
        }
        let mut out = Vec::new();
        push_with_precision("m v=1 -1500000000\n", Precision::S, &mut out);
        assert_eq!(out, b"m v=1 -2\n", "floored before 1970 too");
    }

    #[test]
    fn escaping_awkward_names() {
        let mut s = String::new();
        escape_key("a b,c=d", &mut s);
        assert_eq!(s, "a\\ b\\,c\\=d");
        let mut s = String::new();
        escape_string_field("say \"hi\" \\ 好", &mut s);
        assert_eq!(s, "\"say \\\"hi\\\" \\\\ 好\"");
        let mut s = String::new();
        escape_measurement("m x,y=z", &mut s);
        assert_eq!(s, "m\\ x\\,y=z");
    }

    #[test]
    fn sample_lines() {
        let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = Sample {
            channel: ChannelId::new("t.t101.level"),
            ts,
            reading: Reading::Good(7.25),
        };
        let mut out = String::new();
        encode_sample("site-a", &ch("t.t101.level", "m"), &s, &mut out);
        assert_eq!(
            out,
            "reading,site=site-a,area=tank\\ farm\\,east,device=d\\ 1,channel=t.t101.level,kind=tank_level,unit=m value=7.25,quality=\"good\" 1700000000000000000\n"
        );
        let bad = Sample {
            reading: Reading::Bad(BadReason::Exception { code: 2 }),
            ..s
        };
        let mut out = String::new();
        encode_sample("site-a", &ch("t.t101.level", ""), &bad, &mut out);
        assert!(out.contains(",kind=tank_level quality=\"bad\",reason=\"exception\",detail=\"exception 0x02 illegal data address\" 1700000000000000000"), "{out}");
        assert!(!out.contains("unit="));
    }
}
