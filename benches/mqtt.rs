//! MQTT ingest benchmark (prints figures, asserts nothing). Loopback only, bounded in count and
//! time. `cargo bench --bench mqtt`.
//!
//! 1. mosquitto's own delivery rate to a bare rumqttc subscriber (QoS 1), with the same
//!    publisher (a child process, so its CPU is not counted as the gateway's).
//! 2. The full gateway (`app::start`: MQTT source → rule engine) at increasing offered rates:
//!    messages published, samples produced, loss, gateway CPU and RSS, and mosquitto's CPU.
//! 3. The cost of the end-to-end acknowledgement: the gateway with a spooled InfluxDB v1 output
//!    (a real influxd), `ack = "durable"` (PUBACK once spooled) against `ack = "received"`, with
//!    mosquitto's default in-flight window (20) and with `max_inflight_messages 200`; counted
//!    are points written to InfluxDB.

#[path = "../tests/support/mod.rs"]
#[expect(
    dead_code,
    reason = "shared test support; the bench uses only its MQTT parts"
)]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const MAX_MESSAGES: u64 = 150_000;
const STEP_SECONDS: u64 = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("publish") {
        let port: u16 = args[2].parse().expect("port");
        let prefix = args[3].clone();
        let count: u64 = args[4].parse().expect("count");
        let rate: u64 = args[5].parse().expect("rate");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(publish(port, &prefix, count, rate));
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

/// Publishes `count` QoS 1 messages over 10 topics, paced at `rate`/s (0 = as fast as possible).
async fn publish(port: u16, prefix: &str, count: u64, rate: u64) {
    let mut o = MqttOptions::new(
        format!("bench-pub-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    o.set_keep_alive(Duration::from_secs(10)).set_inflight(500);
    let (client, mut el) = AsyncClient::new(o, 1000);
    let pump = tokio::spawn(async move {
        let mut acked = 0;
        while acked < count {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    });
    let start = Instant::now();
    for i in 0..count {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let topic = format!("{prefix}/d{}", i % 10);
        client
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                format!("{}", i as f64 / 10.0),
            )
            .await
            .expect("publish");
    }
    tokio::time::timeout(Duration::from_secs(60), pump)
        .await
        .expect("all acknowledged within 60 s")
        .expect("publisher task");
}

fn spawn_publisher(port: u16, prefix: &str, count: u64, rate: u64) -> std::process::Child {
    Command::new(std::env::current_exe().expect("exe"))
        .args([
            "publish",
            &port.to_string(),
            prefix,
            &count.to_string(),
            &rate.to_string(),
        ])
        .spawn()
        .expect("spawn publisher")
}

/// VmRSS of this process, MiB.
fn rss_mib() -> f64 {
    support::proc_status_kib("self", "VmRSS:").unwrap_or(0) as f64 / 1024.0
}

/// A bare rumqttc subscriber (QoS 1) counting what it receives.
async fn bare_subscriber(port: u16) -> Arc<AtomicU64> {
    let mut o = MqttOptions::new("bench-bare", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut el) = AsyncClient::new(o, 100);
    client
        .subscribe("bench/bare/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
            break;
        }
    }
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    tokio::spawn(async move {
        let _client = client;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    n2.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    n
}

struct Step {
    sent: u64,
    got: u64,
    rate: f64,
    cpu: f64,
    mq_cpu: f64,
}

/// Publishes `count` messages at `rate` and waits until `count` arrived or nothing arrived for 3 s.
async fn step(
    port: u16,
    prefix: &str,
    rate: u64,
    count: u64,
    mq_pid: &str,
    received: &dyn Fn() -> u64,
) -> Step {
    let before = received();
    let (cpu0, mq0) = (
        support::proc_cpu_seconds("self"),
        support::proc_cpu_seconds(mq_pid),
    );
    let start = Instant::now();
    let mut child = spawn_publisher(port, prefix, count, rate);
    let (mut got, mut last_change) = (0, Instant::now());
    let mut last_at = start;
    while last_change.elapsed() < Duration::from_secs(3)
        && start.elapsed() < Duration::from_secs(90)
    {
        let now = received() - before;
        if now != got {
            got = now;
            last_change = Instant::now();
            last_at = last_change;
        }
        if got >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = last_at.duration_since(start).as_secs_f64().max(1e-3);
    let _ = child.wait();
    Step {
        sent: count,
        got,
        rate: got as f64 / secs,
        cpu: 100.0 * (support::proc_cpu_seconds("self") - cpu0) / secs,
        mq_cpu: 100.0 * (support::proc_cpu_seconds(mq_pid) - mq0) / secs,
    }
}

const RATES: [u64; 6] = [2_000, 5_000, 10_000, 20_000, 40_000, 0];

fn count_for(rate: u64) -> u64 {
    if rate == 0 {
        MAX_MESSAGES
    } else {
        (rate * STEP_SECONDS).min(MAX_MESSAGES)
    }
}

async fn bench() {
    let broker = support::mosquitto();
    let mq_pid = broker.pid().expect("mosquitto pid").to_string();
    println!(
        "MQTT ingest benchmark: mosquitto (default settings) on 127.0.0.1:{}, QoS 1, 10 topics, publisher in a child process",
        broker.port
    );

    println!("\n1. mosquitto -> bare rumqttc subscriber (the broker's own delivery rate)");
    println!(
        "{:>10} {:>9} {:>9} {:>6} {:>11} {:>13}",
        "offered/s", "sent", "received", "lost", "delivered/s", "mosquitto CPU"
    );
    let bare = bare_subscriber(broker.port).await;
    let mut bare_best = 0.0f64;
    for rate in RATES {
        let b = bare.clone();
        let s = step(
            broker.port,
            "bench/bare",
            rate,
            count_for(rate),
            &mq_pid,
            &move || b.load(Ordering::Relaxed),
        )
        .await;
        if s.got == s.sent {
            bare_best = bare_best.max(s.rate);
        }
        println!(
            "{:>10} {:>9} {:>9} {:>6} {:>11.0} {:>12.0}%",
            if rate == 0 {
                "max".to_owned()
            } else {
                rate.to_string()
            },
            s.sent,
            s.got,
            s.sent - s.got.min(s.sent),
            s.rate,
            s.mq_cpu
        );
    }

    let mut text = format!(
        "[site]\nid = \"bench\"\n[api]\nlisten = \"127.0.0.1:0\"\n[gateway]\nsample_queue = 1024\n\
         [[sources]]\nkind = \"mqtt\"\nid = \"m\"\naddress = \"127.0.0.1:{}\"\nmax_age = \"1h\"\n\
         [[sources.topics]]\nfilter = \"bench/gw/{{device}}\"\nchannel = \"a.{{device}}.v\"\nformat = \"number\"\n",
        broker.port
    );
    for d in 0..10 {
        text.push_str(&format!("[[sources.channels]]\nid = \"a.d{d}.v\"\n"));
    }
    let cfg = hazgate::config::parse(&text, Path::new("bench.toml")).expect("config");
    let (cfg, _) = hazgate::config::validate(&cfg, Path::new(".")).expect("valid");
    let running = hazgate::app::start(cfg).await.expect("gateway");
    let st = running.state.clone();
    let t0 = Instant::now();
    while !st.health.not_ready().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "gateway not subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = running.metrics.clone();
    let counter = move || -> u64 {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with(r#"hazgate_samples_total{source="m",quality="good"}"#))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    println!("\n2. mosquitto -> hazgate (MQTT source -> rule engine), same rates");
    println!(
        "{:>10} {:>9} {:>9} {:>6} {:>10} {:>12} {:>9} {:>13}",
        "offered/s",
        "sent",
        "samples",
        "lost",
        "samples/s",
        "gateway CPU",
        "RSS MiB",
        "mosquitto CPU"
    );
    let mut best_no_loss = 0.0f64;
    for rate in RATES {
        let s = step(
            broker.port,
            "bench/gw",
            rate,
            count_for(rate),
            &mq_pid,
            &counter,
        )
        .await;
        if s.got == s.sent {
            best_no_loss = best_no_loss.max(s.rate);
        }
        println!(
            "{:>10} {:>9} {:>9} {:>6} {:>10.0} {:>11.0}% {:>9.1} {:>12.0}%",
            if rate == 0 {
                "max".to_owned()
            } else {
                rate.to_string()
            },
            s.sent,
            s.got,
            s.sent - s.got.min(s.sent),
            s.rate,
            s.cpu,
            rss_mib(),
            s.mq_cpu
        );
    }
    println!(
        "\nhighest rate turned into samples with no loss: {best_no_loss:.0} msg/s; \
         highest loss-free delivery to a bare subscriber: {bare_best:.0} msg/s"
    );
    println!(
        "(gateway CPU includes this benchmark's own metric polling every 5 ms; 100% = one core)"
    );
    running.stop().await.expect("stop");

    println!(
        "\n3. mosquitto -> hazgate -> spool -> influxd (points written), end-to-end ack or not"
    );
    let influx = support::influxd();
    support::influxql(&influx, "", "CREATE DATABASE bench").await;
    let wide = support::mosquitto_with(|_| {
        "allow_anonymous true\nmax_inflight_messages 200\nmax_queued_messages 200000\n".into()
    });
    let wide_pid = wide.pid().expect("mosquitto pid").to_string();
    let mut summary = Vec::new();
    for (ack, b, pid, window) in [
        ("durable", &broker, &mq_pid, "20 (default)"),
        ("received", &broker, &mq_pid, "20 (default)"),
        ("durable", &wide, &wide_pid, "200"),
    ] {
        let best = ack_run(b.port, pid, &influx, ack, window).await;
        summary.push(format!(
            "ack = {ack:<8} window {window:<12}: {best:.0} points/s loss-free"
        ));
    }
    println!("\nhighest loss-free rate to InfluxDB:");
    for l in summary {
        println!("  {l}");
    }
}

/// One gateway with a spooled InfluxDB output and the given `ack` policy, at increasing rates;
/// returns the highest rate written with no loss.
async fn ack_run(
    port: u16,
    mq_pid: &str,
    influx: &support::Server,
    ack: &str,
    window: &str,
) -> f64 {
    let spool = tempfile::tempdir().expect("spool dir");
    let prefix = format!("bench/ack{}", ack.len() + window.len());
    let text = format!(
        "[site]\nid = \"bench\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
         [[sources]]\nkind = \"mqtt\"\nid = \"m\"\naddress = \"127.0.0.1:{port}\"\nmax_age = \"1h\"\n\
         ack = \"{ack}\"\nclient_id = \"bench-ack-{ack}-{}\"\n\
         [[sources.topics]]\nfilter = \"{prefix}/{{device}}\"\nchannel = \"a.{{device}}.v\"\nformat = \"number\"\n\
         [[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"{}\"\ndatabase = \"bench\"\n\
         spool = {{ dir = \"{}\" }}\n",
        window.len(),
        influx.url(),
        spool.path().display()
    );
    let mut text = text;
    for d in 0..10 {
        text.push_str(&format!("[[sources.channels]]\nid = \"a.d{d}.v\"\n"));
    }
    let cfg = hazgate::config::parse(&text, Path::new("bench.toml")).expect("config");
    let (cfg, _) = hazgate::config::validate(&cfg, Path::new(".")).expect("valid");
    let running = hazgate::app::start(cfg).await.expect("gateway");
    let st = running.state.clone();
    let t0 = Instant::now();
    while st
        .health
        .not_ready()
        .iter()
        .any(|r| r.starts_with("source m"))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "gateway not subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = running.metrics.clone();
    let written = move || -> u64 {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with(r#"hazgate_points_written_total{output="o"}"#))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    println!("\n   ack = \"{ack}\", mosquitto max_inflight_messages {window}");
    println!(
        "{:>10} {:>9} {:>9} {:>6} {:>10} {:>12} {:>13}",
        "offered/s", "sent", "written", "lost", "written/s", "gateway CPU", "mosquitto CPU"
    );
    let mut best = 0.0f64;
    for rate in [1_000, 2_000, 5_000, 10_000, 0] {
        let s = step(port, &prefix, rate, count_for(rate), mq_pid, &written).await;
        if s.got == s.sent {
            best = best.max(s.rate);
        }
        println!(
            "{:>10} {:>9} {:>9} {:>6} {:>10.0} {:>11.0}% {:>12.0}%",
            if rate == 0 {
                "max".to_owned()
            } else {
                rate.to_string()
            },
            s.sent,
            s.got,
            s.sent - s.got.min(s.sent),
            s.rate,
            s.cpu,
            s.mq_cpu
        );
        if s.got < s.sent / 2 {
            break;
        }
    }
    running.stop().await.expect("stop");
    best
}
