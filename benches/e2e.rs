//! End-to-end benchmark (prints figures, asserts nothing): mosquitto → the `hazgate` binary →
//! InfluxDB v1 (real influxd, gzip) + a webhook receiver, with a limit rule on every channel.
//! Loopback only, bounded in time (each step `HAZGATE_E2E_SECONDS`, 8 s by default, plus a
//! drain of at most 30 s). `cargo bench --bench e2e`.
//!
//! Workload: `HAZGATE_E2E_CHANNELS` (2,000) tank-level channels over two site prefixes
//! (`site/a/…`, `site/b/…`), ~100-byte JSON payloads published round-robin by a child process
//! (its CPU is not the gateway's) at each rate of `HAZGATE_E2E_RATES` (5000,20000,40000) for
//! each QoS of `HAZGATE_E2E_QOS` (1,0). Every 0.2 s one message is an excursion above the
//! channel's limit (H = 90 %); the next reading of the channel clears it. The gateway runs
//! with its defaults but for: a spooled InfluxDB output (`ack = "durable"` then means "in the
//! spool"), mosquitto with 200 messages in flight per client (`HAZGATE_E2E_WINDOW`) and a deep
//! queue; the gateway speaks MQTT 3.1.1 (`HAZGATE_E2E_PROTOCOL=5` for MQTT 5). The publisher's
//! connection has Nagle's algorithm off; the broker's has mosquitto's default (on) unless
//! `HAZGATE_E2E_BROKER_NODELAY=1` (`set_tcp_nodelay true`): with it on, a QoS 0 reading can
//! wait in the broker up to the gateway's delayed TCP acknowledgement (README, broker settings).
//!
//! Per step it prints: readings sent and landed in InfluxDB (counted with InfluxQL), gateway
//! CPU per message (user + system time of the gateway process over the step and its drain),
//! RSS now and peak (VmHWM), and the alert latency from the excursion's publish to its
//! webhook arrival: p50, p99, max, and how many alerts did not arrive. Before the steps of a
//! QoS it prints the gateway's RSS and peak once it is ready (start-up alone).
//!
//! The gateway runs with `MALLOC_ARENA_MAX=2`, as the systemd unit and the container image
//! start it (a value already in the bench's environment is passed on instead).
//!
//! `HAZGATE_E2E_BIN` runs another gateway binary than this build's (side-by-side comparisons of
//! two builds under the same conditions). `HAZGATE_E2E_WRAP` runs the gateway under a command
//! (e.g. `heaptrack -o /tmp/hz`): the figures are still the gateway's own process (found among
//! the wrapper's descendants).

#[path = "../tests/support/mod.rs"]
#[expect(
    dead_code,
    reason = "shared test support; the bench uses only its server parts"
)]
mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// Excursions: one every this long.
const EXCURSION_EVERY: Duration = Duration::from_millis(200);
/// An excursion's value: 95 + seq / 1000 (unique per step, above H = 90).
const EXCURSION_BASE: f64 = 95.0;

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("publish") {
        let n = |i: usize| -> u64 { args[i].parse().expect("number") };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(publish(n(2) as u16, n(3) as u8, n(4), n(5), n(6)));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("e2e: benchmark");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench());
}

fn topic(ch: u64, channels: u64) -> String {
    let site = if ch < channels / 2 { "a" } else { "b" };
    format!("site/{site}/tank/t{ch}")
}

/// The publisher (a child process): `rate` messages/s for `secs`, round-robin over `channels`,
/// one excursion every [`EXCURSION_EVERY`]. Prints `sent N` and one `x SEQ NANOS` line per
/// excursion (its publish time).
async fn publish(port: u16, qos: u8, rate: u64, secs: u64, channels: u64) {
    let q = if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let mut o = MqttOptions::new(format!("e2e-pub-{}", std::process::id()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000)
        .set_max_packet_size(1 << 16, 1 << 16);
    let (client, mut el) = AsyncClient::new(o, 10_000);
    // The publisher stands for many sensors, each sending at once: no Nagle delay, which
    // would hold a message (an excursion, say) up to 40 ms for the broker's TCP
    // acknowledgement of the previous one (at QoS 0 the broker sends nothing back to ride on).
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    let count = rate * secs;
    let pump = tokio::spawn(async move {
        let (mut acked, mut sent0) = (0u64, 0u64);
        // When the client library wrote each message to the connection (messages go out in
        // the order they were published): the gap to the publish call is the publisher's own
        // queue, which must not be counted as the gateway's latency.
        let mut wired = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        loop {
            if (qos == 0 && sent0 >= count) || (qos != 0 && acked >= count) {
                return wired;
            }
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                    sent0 += 1;
                    wired.push(now_ns());
                }
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    });
    let start = Instant::now();
    let mut excursions = Vec::new();
    let mut next_excursion = start + EXCURSION_EVERY;
    let filler = "x".repeat(24);
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if due > Instant::now() + Duration::from_millis(1) {
            tokio::time::sleep_until(due.into()).await;
        }
        let mut ch = i % channels;
        let mut value = 20.0 + (i % 100) as f64 / 10.0;
        if Instant::now() >= next_excursion {
            let seq = excursions.len() as u64;
            ch = (seq * 7919 + 13) % channels;
            value = EXCURSION_BASE + seq as f64 / 1000.0;
            excursions.push((seq, i, now_ns()));
            next_excursion += EXCURSION_EVERY;
        }
        let payload = format!(
            r#"{{"level":{value:.3},"unit":"%","status":"ok","sn":"TL{ch:06}","fw":"2.1.7","pad":"{filler}"}}"#
        );
        client
            .publish(topic(ch, channels), q, false, payload)
            .await
            .expect("publish");
    }
    let wired = tokio::time::timeout(Duration::from_secs(120), pump)
        .await
        .expect("publisher drained within 120 s")
        .expect("publisher task");
    println!("sent {count}");
    for (seq, i, t) in excursions {
        let lag = usize::try_from(i)
            .ok()
            .and_then(|i| wired.get(i))
            .map_or(0, |w| w.saturating_sub(t));
        println!("x {seq} {t} {lag}");
    }
}

/// VmRSS and VmHWM of a process, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let mib = |f| support::proc_status_kib(pid, f).unwrap_or(0) as f64 / 1024.0;
    (mib("VmRSS:"), mib("VmHWM:"))
}

/// Webhook arrivals: excursion value (×1000, rounded) → arrival time (ns since the epoch).
type Arrivals = Arc<Mutex<HashMap<u64, u128>>>;

async fn webhook() -> (u16, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let a = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let a = a.clone();
            async move {
                let t = now_ns();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    for e in v["events"].as_array().into_iter().flatten() {
                        let (Some(x), "raised") =
                            (e["value"].as_f64(), e["transition"].as_str().unwrap_or(""))
                        else {
                            continue;
                        };
                        if x >= EXCURSION_BASE {
                            let seq = ((x - EXCURSION_BASE) * 1000.0).round() as u64;
                            a.lock().expect("lock").entry(seq).or_insert(t);
                        }
                    }
                }
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("webhook listens");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(l, app).await });
    (port, arrivals)
}

async fn landed(influx: &support::Server) -> u64 {
    let v = support::influxql(influx, "bench", "SELECT count(\"value\") FROM \"reading\"").await;
    v["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Gateway {
    child: std::process::Child,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let _ = self.child.wait();
    }
}

async fn start_gateway(
    mqtt: u16,
    influx: &support::Server,
    hook: u16,
    qos: u64,
    channels: u64,
    protocol: &str,
) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = support::free_port();
    let mut text = format!(
        "[site]\nid = \"bench\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n\
         [[sources]]\nkind = \"mqtt\"\nid = \"m\"\naddress = \"127.0.0.1:{mqtt}\"\nqos = {qos}\n\
         client_id = \"e2e-gw-{qos}\"\nprotocol = \"{protocol}\"\n\
         [[sources.topics]]\nfilter = \"site/{{site}}/tank/{{device}}\"\nchannel = \"{{site}}.{{device}}.level\"\nvalue = \"level\"\n"
    );
    for ch in 0..channels {
        let site = if ch < channels / 2 { "a" } else { "b" };
        text.push_str(&format!(
            "[[sources.channels]]\nid = \"{site}.t{ch}.level\"\nkind = \"tank_level\"\nunit = \"%\"\nmax_age = \"1h\"\n"
        ));
    }
    text.push_str(&format!(
        "[rule_defaults.tank_level]\nh = 90\n\
         [[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"{}\"\ndatabase = \"bench\"\n\
         spool = {{ dir = \"{}\" }}\n\
         [[receivers]]\nkind = \"webhook\"\nid = \"w\"\nurl = \"http://127.0.0.1:{hook}/hook\"\ntimeout = \"5s\"\n\
         [notifications.outbox]\ndir = \"{}\"\n",
        influx.url(),
        dir.path().join("spool").display(),
        dir.path().join("outbox").display(),
    ));
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, text).expect("config");
    let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log");
    let own = env!("CARGO_BIN_EXE_hazgate");
    let other = std::env::var("HAZGATE_E2E_BIN").unwrap_or_default();
    let bin = if other.is_empty() {
        own
    } else {
        other.as_str()
    };
    let wrap = std::env::var("HAZGATE_E2E_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(w) => {
            let mut c = Command::new(w);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        cmd.env("MALLOC_ARENA_MAX", "2");
    }
    let child = cmd
        .args(["--log-level", "warn", "run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("hazgate binary");
    let pid = child.id();
    let t0 = Instant::now();
    loop {
        if let Ok((200, _)) = support::http_get(api, "/readyz") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "gateway not ready: {}",
            std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = if wrap.is_empty() {
        pid
    } else {
        gateway_under(pid, bin).expect("the gateway among the wrapper's descendants")
    };
    Gateway {
        child,
        pid,
        _dir: dir,
    }
}

/// The descendant of `pid` running `bin`.
fn gateway_under(pid: u32, bin: &str) -> Option<u32> {
    let want = std::fs::canonicalize(bin).ok()?;
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if std::fs::read_link(format!("/proc/{p}/exe")).ok().as_ref() == Some(&want) {
            return Some(p);
        }
        let kids =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        todo.extend(
            kids.split_whitespace()
                .filter_map(|k| k.parse::<u32>().ok()),
        );
    }
    None
}

async fn bench() {
    let rates = env_list("HAZGATE_E2E_RATES", "5000,20000,40000");
    let qoss = env_list("HAZGATE_E2E_QOS", "1,0");
    let secs = env_list("HAZGATE_E2E_SECONDS", "8")[0];
    let channels = env_list("HAZGATE_E2E_CHANNELS", "2000")[0];
    // mosquitto's default keeps Nagle's algorithm on its connections (`set_tcp_nodelay
    // false`); `HAZGATE_E2E_BROKER_NODELAY=1` measures a broker with it off (README).
    let broker_nodelay = env_list("HAZGATE_E2E_BROKER_NODELAY", "0")[0] != 0;
    // mosquitto's QoS 1 in-flight window towards the gateway (its default is 20).
    let window = env_list("HAZGATE_E2E_WINDOW", "200")[0];
    // The gateway's MQTT version; with 5 it announces a receive maximum (the 1,000
    // un-acknowledged messages it keeps at most).
    let protocol = std::env::var("HAZGATE_E2E_PROTOCOL").unwrap_or_else(|_| "3.1.1".to_owned());
    let broker = support::mosquitto_with(|_| {
        format!(
            "allow_anonymous true\nmax_inflight_messages {window}\nmax_queued_messages 1000000\n\
             set_tcp_nodelay {broker_nodelay}\n"
        )
    });
    let influx = support::influxd();
    support::influxql(&influx, "", "CREATE DATABASE bench").await;
    let (hook, arrivals) = webhook().await;
    println!(
        "end-to-end: mosquitto (set_tcp_nodelay {broker_nodelay}, max_inflight_messages {window}) -> hazgate (MQTT {protocol}, release binary, MALLOC_ARENA_MAX={}) -> influxd v1 (gzip, spooled) + webhook; \
         {channels} channels, a limit rule on each, ~100-byte JSON, {secs} s per step, an excursion every {EXCURSION_EVERY:?}",
        std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".to_owned())
    );
    println!(
        "{:>3} {:>8} {:>9} {:>9} {:>6} {:>8} {:>7} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "qos",
        "rate/s",
        "sent",
        "landed",
        "lost",
        "us/msg",
        "CPU%",
        "RSS MiB",
        "peak MiB",
        "alerts",
        "p50 ms",
        "p99 ms",
        "max ms",
        "pub lag",
        "wire p99"
    );
    for &qos in &qoss {
        let gw = start_gateway(broker.port, &influx, hook, qos, channels, &protocol).await;
        let (rss, peak) = rss_mib(gw.pid);
        println!("qos {qos}: gateway ready, RSS {rss:.1} MiB, peak {peak:.1} MiB");
        for &rate in &rates {
            arrivals.lock().expect("lock").clear();
            let landed0 = landed(&influx).await;
            let cpu0 = support::proc_cpu_seconds(gw.pid);
            let t0 = Instant::now();
            let out = tokio::task::spawn_blocking({
                let port = broker.port;
                move || {
                    Command::new(std::env::current_exe().expect("exe"))
                        .args([
                            "publish",
                            &port.to_string(),
                            &qos.to_string(),
                            &rate.to_string(),
                            &secs.to_string(),
                            &channels.to_string(),
                        ])
                        .output()
                        .expect("publisher")
                }
            })
            .await
            .expect("join");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let sent: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("sent "))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| {
                    panic!("publisher failed: {}", String::from_utf8_lossy(&out.stderr))
                });
            let excursions: Vec<(u64, u128, u128)> = text
                .lines()
                .filter_map(|l| {
                    let mut f = l.strip_prefix("x ")?.split(' ');
                    Some((
                        f.next()?.parse().ok()?,
                        f.next()?.parse().ok()?,
                        f.next()?.parse().ok()?,
                    ))
                })
                .collect();
            // Drain: until every reading landed, or nothing changed for 3 s (at most 30 s).
            let (mut got, mut last_change) = (0, Instant::now());
            let drain0 = Instant::now();
            while drain0.elapsed() < Duration::from_secs(30) {
                let now = landed(&influx).await - landed0;
                if now != got {
                    got = now;
                    last_change = Instant::now();
                }
                if got >= sent || last_change.elapsed() > Duration::from_secs(3) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let cpu = support::proc_cpu_seconds(gw.pid) - cpu0;
            let wall = t0.elapsed().as_secs_f64();
            let (rss, peak) = rss_mib(gw.pid);
            let arr = arrivals.lock().expect("lock").clone();
            let mut lat: Vec<f64> = excursions
                .iter()
                .filter_map(|(seq, t, _)| arr.get(seq).map(|a| a.saturating_sub(*t) as f64 / 1e6))
                .collect();
            lat.sort_by(f64::total_cmp);
            // From the moment the publisher's client wrote the excursion to the broker.
            let mut wire: Vec<f64> = excursions
                .iter()
                .filter_map(|(seq, t, lag)| {
                    arr.get(seq)
                        .map(|a| a.saturating_sub(*t + *lag) as f64 / 1e6)
                })
                .collect();
            wire.sort_by(f64::total_cmp);
            let lag = excursions
                .iter()
                .map(|(_, _, lag)| *lag as f64 / 1e6)
                .fold(0.0, f64::max);
            println!(
                "{:>3} {:>8} {:>9} {:>9} {:>6} {:>8.2} {:>6.0}% {:>8.1} {:>8.1} {:>3}/{:<3} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                qos,
                rate,
                sent,
                got,
                sent.saturating_sub(got),
                cpu * 1e6 / sent.max(1) as f64,
                100.0 * cpu / wall,
                rss,
                peak,
                lat.len(),
                excursions.len(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat.last().copied().unwrap_or(f64::NAN),
                lag,
                percentile(&wire, 0.99),
            );
        }
        drop(gw);
    }
    println!(
        "(us/msg: the gateway's user+system CPU over the step and its drain, divided by readings sent; \
         CPU% of one core over the same time; alerts: excursions whose raise reached the webhook; \
         pub lag: the longest an excursion waited in the publisher's own client queue, ms, part of its latency but not the gateway's; \
         wire p99: the alert latency from the moment the publisher wrote the excursion to the broker)"
    );
}
