//! End-to-end acknowledgement of MQTT readings: a real mosquitto (persistent session, QoS 1), a
//! real influxd (v1) and the real `hazgate run` binary as a child process. Readings with unique
//! timestamps are published at about 1,000 msg/s; the gateway is killed with SIGKILL in the
//! middle of the stream and started again; every reading must end up in InfluxDB. Before the
//! end-to-end acknowledgement, the gateway acknowledged each message on receipt and the kill lost
//! the readings of the last flush interval (hundreds).

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Readings published (20 s at 1,000 msg/s).
const N: u64 = 20_000;
const RATE: u64 = 1_000;

fn start_gateway(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("log file"),
        )
        .spawn()
        .expect("start hazgate")
}

/// A counter or gauge from `/metrics` (first line starting with `prefix`).
fn metric(api_port: u16, prefix: &str) -> Option<f64> {
    let (code, body) = support::http_get(api_port, "/metrics").ok()?;
    if code != 200 {
        return None;
    }
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn wait_subscribed(api_port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((_, body)) = support::http_get(api_port, "/readyz") {
            if body.contains("\"reasons\"") && !body.contains("source m") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not subscribe within 30 s; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `N` QoS 1 readings `{"v": i, "ts": base + i}` paced at `RATE`/s; returns when the
/// broker acknowledged every one.
async fn publish(port: u16, base_ms: u64) {
    let mut o = MqttOptions::new("ack-test-publisher", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10)).set_inflight(200);
    let (client, mut el) = AsyncClient::new(o, 1000);
    let pump = tokio::spawn(async move {
        let mut acked = 0;
        while acked < N {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher connection: {e}"),
            }
        }
    });
    let start = Instant::now();
    for i in 0..N {
        let due = start + Duration::from_secs_f64(i as f64 / RATE as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let payload = format!("{{\"v\":{i},\"ts\":{}}}", base_ms + i);
        client
            .publish("ack/d1", QoS::AtLeastOnce, false, payload)
            .await
            .expect("queue publish");
    }
    pump.await.expect("publisher acknowledged by the broker");
}

async fn count(influx: &support::Server) -> u64 {
    let v = support::influxql(
        influx,
        "ack",
        "SELECT count(value) FROM reading WHERE channel = 'a.d1.v'",
    )
    .await;
    v["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_reading() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE ack").await;
        // The broker keeps what the gateway did not acknowledge, up to 100,000 messages
        // (mosquitto's default is 1,000); other settings are mosquitto's defaults
        // (max_inflight_messages 20).
        let broker = support::mosquitto_with(|_| {
            "allow_anonymous true\nmax_queued_messages 100000\n".into()
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let api_port = support::free_port();
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[site]
id = "ack"
[gateway]
shutdown_grace = "2s"
[api]
listen = "127.0.0.1:{api_port}"
[[sources]]
kind = "mqtt"
id = "m"
address = "127.0.0.1:{port}"
client_id = "hazgate-ack-test"
backoff_max = "500ms"
keep_alive = "5s"
[[sources.topics]]
filter = "ack/d1"
channel = "a.d1.v"
format = "json"
value = "v"
timestamp = "ts"
timestamp_unit = "ms"
[[sources.channels]]
id = "a.d1.v"
max_age = "1h"
[[outputs]]
kind = "influxdb_v1"
id = "site"
url = "{influx}"
database = "ack"
flush_interval = "1s"
timeout = "5s"
spool = {{ dir = "{spool}" }}
"#,
                port = broker.port,
                influx = influx.url(),
                spool = dir.path().join("spool").display(),
            ),
        )
        .expect("write config");
        let log = dir.path().join("gateway.log");
        let mut gw = start_gateway(&config, &log);
        wait_subscribed(api_port, &log).await;

        let base_ms = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("ms fit");
        let publisher = tokio::spawn(publish(broker.port, base_ms));

        // Mid-stream: once the gateway has received a third of the readings.
        support::eventually(Duration::from_secs(40), "a third of the readings received", || async {
            metric(api_port, "hazgate_mqtt_messages_total{source=\"m\"}").filter(|&n| n >= (N / 3) as f64)
        })
        .await;
        let acked_before = metric(api_port, "hazgate_mqtt_acks_total{source=\"m\"}").unwrap_or(0.0);
        gw.kill().expect("SIGKILL the gateway");
        let _ = gw.wait();
        let at_kill = count(&influx).await;
        let mut gw = start_gateway(&config, &log);
        publisher.await.expect("publisher");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = 0;
        while Instant::now() < deadline {
            last = count(&influx).await;
            if last >= N {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let _ = gw.kill();
        let _ = gw.wait();
        assert_eq!(
            last,
            N,
            "readings in InfluxDB after kill -9 and restart: {last} of {N} ({} lost; {acked_before} acknowledged and {at_kill} written at the kill); gateway log:\n{}",
            N - last.min(N),
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        // Every reading is there once, with its own value.
        let v = support::influxql(
            &influx,
            "ack",
            "SELECT sum(value) FROM reading WHERE channel = 'a.d1.v'",
        )
        .await;
        let sum = v["results"][0]["series"][0]["values"][0][1].as_f64().unwrap_or(0.0);
        assert_eq!(sum, (N * (N - 1) / 2) as f64, "sum of the values 0..N");
    })
    .await
    .expect("test timed out");
}
