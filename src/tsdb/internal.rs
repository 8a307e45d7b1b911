//! Gateway self-monitoring into the time series (as Telegraf's `internal` input does): every
//! `gateway.self_monitoring` the gateway's own figures are written to every output as
//! measurement `hazgate_internal`, so a site with only InfluxDB and Grafana sees its gateway's
//! health (samples, polls by result, spool backlog, write errors, queue drops, MQTT reconnects,
//! outbox pending, alarm flood) next to its data.
//!
//! The figures are exactly the `/metrics` samples: one point per sample, tags `site` plus the
//! sample's labels, one field named after the metric without its `hazgate_` prefix (`samples_total`,
//! `spool_points`, …). Histogram buckets are left out (their `_sum` and `_count` are kept).
//! Lines go through the output queues like readings (drop-oldest when full).

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::line::escape_key;
use super::writer::OutputQueue;
use crate::model::epoch_nanos;
use crate::telemetry::Metrics;

/// The measurement name.
pub const MEASUREMENT: &str = "hazgate_internal";

/// Turns Prometheus text (as `/metrics` serves it) into `hazgate_internal` lines stamped `ts`.
pub fn lines(site: &str, prometheus_text: &str, ts: SystemTime) -> Vec<String> {
    let ns = epoch_nanos(ts);
    let mut out = Vec::new();
    for l in prometheus_text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = parse_sample(l) else {
            continue;
        };
        if name.ends_with("_bucket") || name.ends_with("_created") || !value.is_finite() {
            continue;
        }
        let field = name.strip_prefix("hazgate_").unwrap_or(name);
        let mut s = String::with_capacity(96);
        s.push_str(MEASUREMENT);
        s.push_str(",site=");
        escape_key(site, &mut s);
        let mut labels = labels;
        labels.sort();
        for (k, v) in labels {
            if v.is_empty() || k == "site" {
                continue;
            }
            s.push(',');
            escape_key(k, &mut s);
            s.push('=');
            escape_key(&v, &mut s);
        }
        s.push(' ');
        escape_key(field, &mut s);
        let _ = writeln!(s, "={value} {ns}");
        out.push(s);
    }
    out
}

/// A sample's labels: `(name, unescaped value)`.
type SampleLabels<'a> = Vec<(&'a str, String)>;

/// `name{a="x",b="y"} value` → (name, labels, value); `None` for anything else.
fn parse_sample(l: &str) -> Option<(&str, SampleLabels<'_>, f64)> {
    let (head, value) = l.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head, Vec::new(), value));
    };
    let mut body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    while !body.is_empty() {
        let (key, after) = body.split_once("=\"")?;
        let mut val = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()? {
                    (_, 'n') => val.push('\n'),
                    (_, c) => val.push(c),
                },
                (i, '"') => break i,
                (_, c) => val.push(c),
            }
        };
        labels.push((key, val));
        body = after[end + 1..].trim_start_matches(',');
    }
    Some((name, labels, value))
}

/// Writes the gateway's figures to every queue every `every` until `stop` is cancelled.
pub async fn run(
    site: String,
    metrics: Arc<Metrics>,
    queues: Vec<Arc<OutputQueue>>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let batch = lines(&site, &metrics.encode(), SystemTime::now());
        for q in &queues {
            q.push(batch.iter().cloned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_becomes_one_point_per_sample() {
        let text = "# HELP hazgate_samples Samples\n# TYPE hazgate_samples counter\n\
            hazgate_samples_total{source=\"sim\",quality=\"good\"} 12\n\
            hazgate_alarm_flood 0\n\
            hazgate_output_write_duration_seconds_bucket{output=\"a\",le=\"0.1\"} 3\n\
            hazgate_output_write_duration_seconds_count{output=\"a b,c\"} 3\n\
            hazgate_outbox_pending{receiver=\"x\\\"y\"} 2\n# EOF\n";
        let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(2);
        let got = lines("demo", text, ts);
        assert_eq!(
            got,
            vec![
                "hazgate_internal,site=demo,quality=good,source=sim samples_total=12 2000000000\n",
                "hazgate_internal,site=demo alarm_flood=0 2000000000\n",
                "hazgate_internal,site=demo,output=a\\ b\\,c output_write_duration_seconds_count=3 2000000000\n",
                "hazgate_internal,site=demo,receiver=x\"y outbox_pending=2 2000000000\n",
            ]
        );
    }

    #[test]
    fn every_sample_of_a_live_registry_is_converted() {
        let m = Metrics::new();
        m.alarm_flood.set(1);
        m.outbox_pending
            .get_or_create(&crate::telemetry::labels([("receiver", "r")]))
            .set(4);
        let text = m.encode();
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_bucket") && !l.is_empty())
            .count();
        let got = lines("s", &text, SystemTime::now());
        assert_eq!(got.len(), samples, "{text}");
        assert!(got.iter().any(|l| l.contains(" alarm_flood=1 ")));
        assert!(
            got.iter()
                .any(|l| l.contains(",receiver=r outbox_pending=4 "))
        );
    }
}
