//! MQTT publishers: simulated data units (4G DTUs) publishing their devices' values to a broker
//! (the site's, or hazgate's embedded one), in the payload styles hazgate accepts.
//!
//! Styles (`{prefix}` is the publisher's `topic_prefix`):
//! - `number`: `{prefix}/{device}/{point}` ← `12.5` (booleans `1`/`0`);
//! - `json`: `{prefix}/{device}/{point}` ← `{"value": 12.5, "ts": 1767225600000, "status": "ok"}`
//!   (`ts` in milliseconds since the epoch, wall clock; `status` is `"fault"` when the raw value
//!   is outside the register's `valid` range, such as a broken 4–20 mA loop);
//! - `object`: `{prefix}/{device}` ← `{"level": 1.2, "flow": 30.5, "running": 1}` (several
//!   channels in one message; a point whose raw value is invalid is left out, so the gateway sees
//!   it go stale).
//!
//! Invariants:
//! - values are read at the simulated time of publication, like a Modbus read, so overrides and
//!   ramps show on MQTT exactly as on Modbus;
//! - a silent device is left out; a silent publisher publishes nothing (its connection stays up,
//!   as a DTU whose serial side died);
//! - publications are QoS 0 and queued with `try_publish` into the client's bounded request
//!   queue (capacity 64): when the broker is unreachable new messages are dropped and counted,
//!   never buffered without bound; the event loop reconnects with a jittered backoff capped at
//!   5 s (rumqttc has none of its own).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::control::{Device, SimState};
use crate::site::PublisherSpec;
pub use crate::site::Style;

/// Counters of one publisher.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Messages handed to the client.
    pub queued: AtomicU64,
    /// Messages dropped because the client's queue was full.
    pub dropped: AtomicU64,
    /// Messages written to the broker.
    pub sent: AtomicU64,
}

/// Splits `mqtt://host:port`, `tcp://host:port` or `host:port` (default port 1883).
pub fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => port
            .parse()
            .map(|p| (host.to_owned(), p))
            .map_err(|_| format!("invalid port in MQTT URL {url:?}")),
        _ if !rest.is_empty() => Ok((rest.to_owned(), 1883)),
        _ => Err(format!("invalid MQTT URL {url:?}")),
    }
}

/// The messages of one publication round at simulated time `t`: `(topic, payload)`.
pub(crate) fn messages(
    spec: &PublisherSpec,
    devices: &[Arc<Device>],
    t: Duration,
    wall: SystemTime,
) -> Vec<(String, String)> {
    let ms = wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut out = Vec::new();
    for d in devices.iter().filter(|d| !d.is_silent()) {
        let values = d.publish_values(t);
        match spec.style {
            Style::Number => {
                for (name, v, valid) in values {
                    let topic = format!("{}/{}/{name}", spec.topic_prefix, d.id);
                    // A number cannot carry a status: a broken loop sends its raw reading,
                    // which the gateway's range check catches (or not: that is the point).
                    let _ = valid;
                    out.push((topic, fmt(v)));
                }
            }
            Style::Json => {
                for (name, v, valid) in values {
                    let topic = format!("{}/{}/{name}", spec.topic_prefix, d.id);
                    let status = if valid { "ok" } else { "fault" };
                    let payload =
                        serde_json::json!({ "value": round(v), "ts": ms, "status": status });
                    out.push((topic, payload.to_string()));
                }
            }
            Style::Object => {
                let obj: serde_json::Map<String, serde_json::Value> = values
                    .into_iter()
                    .filter(|(_, _, valid)| *valid)
                    .map(|(n, v, _)| (n, serde_json::json!(round(v))))
                    .collect();
                let topic = format!("{}/{}", spec.topic_prefix, d.id);
                out.push((topic, serde_json::Value::Object(obj).to_string()));
            }
        }
    }
    out
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn fmt(v: f64) -> String {
    let r = round(v);
    if r.fract() == 0.0 && r.abs() < 1e15 {
        format!("{}", r as i64)
    } else {
        format!("{r}")
    }
}

/// Runs one publisher until `cancel`: connects to `host:port`, publishes every `interval` of
/// simulated time (at least every 20 ms of real time), keeps polling the event loop.
pub(crate) async fn run_publisher(
    spec: PublisherSpec,
    devices: Vec<Arc<Device>>,
    state: Arc<SimState>,
    host: String,
    port: u16,
    stats: Arc<PublisherStats>,
    cancel: CancellationToken,
) {
    let mut opts = MqttOptions::new(format!("hazgate-sim-{}", spec.id), host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_clean_session(true);
    let (client, mut el) = AsyncClient::new(opts, 64);
    let period = spec
        .interval
        .div_f64(state.speed())
        .max(Duration::from_millis(20));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {
                if state.publisher_silent(&spec.id) {
                    continue;
                }
                for (topic, payload) in messages(&spec, &devices, state.now(), SystemTime::now()) {
                    match client.try_publish(topic, QoS::AtMostOnce, false, payload) {
                        Ok(()) => stats.queued.fetch_add(1, Ordering::Relaxed),
                        Err(_) => stats.dropped.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
            ev = el.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    tracing::info!(publisher = %spec.id, "mqtt publisher connected");
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let base = Duration::from_millis(100) * 2u32.saturating_pow(failures.min(6));
                    let wait = base.min(Duration::from_secs(5))
                        .mul_f64(rand::rng().random_range(0.5..1.0));
                    tracing::debug!(publisher = %spec.id, error = %e, ?wait, "mqtt publisher not connected; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
    let _ = client.try_disconnect();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::DeviceMap;
    use std::collections::BTreeMap;

    #[test]
    fn urls() {
        assert_eq!(parse_url("mqtt://h:1884").unwrap(), ("h".into(), 1884));
        assert_eq!(parse_url("127.0.0.1:5").unwrap(), ("127.0.0.1".into(), 5));
        assert_eq!(parse_url("broker").unwrap(), ("broker".into(), 1883));
        assert!(parse_url("h:x").is_err());
    }

    #[test]
    fn payload_styles() {
        let map = DeviceMap::from_toml_str(
            "id='m'\n[[registers]]\nname='lel'\ntable='input'\naddress=0\n\
             span={raw=[4000,20000],eng=[0,100]}\nvalid=[3600,21000]\n\
             [[registers]]\nname='run'\ntable='coil'\naddress=0\n",
        )
        .unwrap();
        let mut signals = BTreeMap::new();
        signals.insert("lel".to_owned(), crate::Signal::constant(12.5));
        signals.insert("run".to_owned(), crate::Signal::constant(1.0));
        let d = Arc::new(Device::new(
            1,
            "gd1",
            0,
            &map,
            &signals,
            &BTreeMap::new(),
            Duration::ZERO,
        ));
        let wall = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let mut spec = PublisherSpec {
            id: "p".into(),
            style: Style::Number,
            topic_prefix: "x/y".into(),
            interval: Duration::from_secs(1),
            devices: vec![],
        };
        let devs = [d.clone()];
        assert_eq!(
            messages(&spec, &devs, Duration::ZERO, wall),
            [
                ("x/y/gd1/lel".to_owned(), "12.5".to_owned()),
                ("x/y/gd1/run".to_owned(), "1".to_owned())
            ]
        );
        spec.style = Style::Json;
        let m = messages(&spec, &devs, Duration::ZERO, wall);
        assert_eq!(m[0].1, r#"{"status":"ok","ts":1767225600000,"value":12.5}"#);
        spec.style = Style::Object;
        assert_eq!(
            messages(&spec, &devs, Duration::ZERO, wall),
            [("x/y/gd1".to_owned(), r#"{"lel":12.5,"run":1.0}"#.to_owned())]
        );
    }
}
