//! The embedded broker's limits. Its memory stays bounded under hostile publishers: the real `hazgate`
//! binary runs with `[mqtt_broker]` and an MQTT source subscribed to it, and a raw MQTT 3.1.1
//! client publishes (a) 300 retained 200 KiB messages and (b) 200,000 distinct topics that match
//! the source's subscription. The process's resident memory (`VmRSS`) must stay below a stated
//! bound; before the limits, (a) kept every retained message (about 60 MiB of payload) and (b) a
//! per-topic entry for every topic, forever.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whole-test deadline.
const LIMIT: Duration = Duration::from_secs(240);

/// Growth of the gateway's resident memory allowed over both loads, in KiB. What the broker may
/// hold in this configuration (docs/ARCHITECTURE.md, invariant 10a): 1 filter × 4 × 1 MiB of
/// commit log, at most 2,000 topics and sessions, 2 connections' packet buffers; plus the MQTT
/// source decoding 200 KiB payloads and allocator slack (freed memory that the allocator's
/// per-thread arenas keep). Measured: +21 to +37 MiB; rumqttd alone grew by 103 MiB after the
/// retained load and 204 MiB after both.
const BOUND_KIB: u64 = 64 * 1024;

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10];
    remaining_length(body.len(), &mut p);
    p.extend(body);
    p
}

/// PUBLISH; `pid` makes it QoS 1.
fn publish_packet(topic: &str, payload: &[u8], retain: bool, pid: Option<u16>) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    if let Some(id) = pid {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let mut p = vec![0x30 | u8::from(retain) | if pid.is_some() { 0x02 } else { 0 }];
    remaining_length(body.len(), &mut p);
    p.extend(body);
    p
}

/// A raw MQTT 3.1.1 publisher that reconnects when the broker closes its connection.
struct Publisher {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    connections: u32,
    next_pid: u16,
}

impl Publisher {
    fn new(port: u16) -> Publisher {
        Publisher {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stream: None,
            connections: 0,
            next_pid: 1,
        }
    }

    fn stream(&mut self) -> &mut TcpStream {
        if self.stream.is_none() {
            let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .expect("connect to the embedded broker");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("socket");
            s.set_write_timeout(Some(Duration::from_secs(30)))
                .expect("socket");
            self.connections += 1;
            s.write_all(&connect_packet(&format!("hostile-{}", self.connections)))
                .expect("send CONNECT");
            let mut connack = [0u8; 4];
            s.read_exact(&mut connack).expect("CONNACK");
            assert_eq!(connack, [0x20, 2, 0, 0], "connection accepted");
            self.stream = Some(s);
        }
        self.stream.as_mut().expect("connected")
    }

    /// Sends one packet; a closed connection (the broker refusing the load) is reopened and
    /// the packet dropped.
    fn send(&mut self, packet: &[u8]) {
        if self.stream().write_all(packet).is_err() {
            self.stream = None;
        }
    }

    /// A QoS 1 publish answered by PUBACK: everything sent before it on this connection has
    /// been read by the broker.
    fn sync(&mut self, topic: &str) {
        for _ in 0..5 {
            let pid = self.next_pid;
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            let packet = publish_packet(topic, b"1", false, Some(pid));
            if self.stream().write_all(&packet).is_err() {
                self.stream = None;
                continue;
            }
            let s = self.stream.as_mut().expect("connected");
            let mut header = [0u8; 2];
            loop {
                if s.read_exact(&mut header).is_err() {
                    self.stream = None;
                    break;
                }
                let mut rest = vec![0u8; usize::from(header[1])];
                if s.read_exact(&mut rest).is_err() {
                    self.stream = None;
                    break;
                }
                if header[0] == 0x40 && rest == pid.to_be_bytes() {
                    return;
                }
            }
        }
        panic!("no PUBACK for the synchronising publish after 5 connections");
    }
}

fn wait_ready(api: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = support::http_get(api, "/readyz") {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("hazgate exited before it was ready: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "hazgate not ready (MQTT source subscribed) within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn embedded_broker_memory_is_bounded_under_retained_and_topic_floods() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = support::free_port();
    let api = support::free_port();
    let config = dir.path().join("hazgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[site]
id = "s"
[api]
listen = "127.0.0.1:{api}"
[mqtt_broker]
listen = "127.0.0.1:{broker}"
max_topics = 2000
max_sessions = 2000
segment_size = 1048576
segment_count = 4
[[sources]]
kind = "mqtt"
id = "m"
address = "127.0.0.1:{broker}"
backoff_max = "500ms"
[[sources.topics]]
filter = "site/{{area}}/gas/{{device}}"
channel = "{{area}}.{{device}}.lel"
[[sources.channels]]
id = "north.gd9.lel"
kind = "combustible_gas"
unit = "%LEL"
max_age = "1h"
"#
        ),
    )
    .expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["--log-level", "warn", "run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hazgate");
    let mut gw = Gateway(child);
    // Keep reading its log so it never blocks on a full pipe.
    let stderr = gw.0.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.len() < 200 {
                lines.push(line);
            }
        }
        lines
    });
    wait_ready(api, &mut gw.0);
    let pid = gw.0.id();
    let mut p = Publisher::new(broker);
    p.sync("site/north/gas/gd9");
    let before = rss_kib(pid);

    // (a) 300 retained 200 KiB messages, each to its own topic.
    let payload = vec![b'7'; 200 * 1024];
    for i in 0..300 {
        p.send(&publish_packet(
            &format!("site/retained{i}/gas/gd"),
            &payload,
            true,
            None,
        ));
    }
    p.sync("site/north/gas/gd9");
    let after_retained = rss_kib(pid);

    // (b) 200,000 distinct topics matching the source's subscription.
    let flood = Instant::now();
    for i in 0..200_000 {
        p.send(&publish_packet(
            &format!("site/area{i}/gas/detector{i}"),
            b"1",
            false,
            None,
        ));
        assert!(started.elapsed() < LIMIT, "topic flood took too long");
    }
    p.sync("site/north/gas/gd9");
    let after_topics = rss_kib(pid);
    println!(
        "embedded broker RSS: before {before} KiB, after 300 retained x 200 KiB {after_retained} \
         KiB, after 200k topics {after_topics} KiB (flood {:.1} s, {} connections)",
        flood.elapsed().as_secs_f64(),
        p.connections
    );
    // The gateway survived both loads.
    assert!(gw.0.try_wait().expect("wait").is_none(), "hazgate died");
    drop(p);
    drop(gw);
    let log = log.join().expect("log reader");
    for (what, rss) in [("retained", after_retained), ("topics", after_topics)] {
        assert!(
            rss.saturating_sub(before) < BOUND_KIB,
            "RSS grew by {} KiB after the {what} load (bound {BOUND_KIB} KiB): before \
             {before}, after retained {after_retained}, after topics {after_topics}\n{}",
            rss.saturating_sub(before),
            log.join("\n")
        );
    }
}

/// Reads one packet (fixed header with a one-byte length and its body).
fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let mut body = vec![0u8; usize::from(h[1])];
    s.read_exact(&mut body)?;
    Ok((h[0], body))
}

fn open(port: u16, client_id: &str) -> (TcpStream, [u8; 4]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("socket");
    s.write_all(&connect_packet(client_id)).expect("CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    (s, connack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_stores_no_retained_message_and_caps_sessions_and_topics() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let cfg: hazgate::config::mqtt::EmbeddedBroker = toml::from_str(
            r#"
listen = "127.0.0.1:0"
max_sessions = 3
max_topics = 2
max_payload_size = 4096
"#,
        )
        .expect("broker config");
        let metrics = hazgate::telemetry::Metrics::new();
        let broker = hazgate::sources::mqtt::broker::start_broker(&cfg, None, &metrics)
            .await
            .expect("broker starts");
        let port = broker.local_addr().port();
        tokio::task::spawn_blocking(move || {
            // A retained publish (then a QoS 1 publish to know it was read).
            let (mut publisher, connack) = open(port, "dtu-1");
            assert_eq!(connack, [0x20, 2, 0, 0]);
            publisher
                .write_all(&publish_packet("plant/a", b"retained", true, None))
                .expect("socket");
            publisher
                .write_all(&publish_packet("plant/a", b"sync", false, Some(7)))
                .expect("socket");
            assert_eq!(
                read_packet(&mut publisher).expect("packet"),
                (0x40, vec![0, 7])
            );
            // A later subscriber gets no retained message: it receives only what is published
            // after it subscribed.
            let (mut subscriber, connack) = open(port, "gw");
            assert_eq!(connack, [0x20, 2, 0, 0]);
            subscriber
                .write_all(&[
                    0x82, 12, 0, 1, 0, 7, b'p', b'l', b'a', b'n', b't', b'/', b'+', 0,
                ])
                .expect("socket");
            assert_eq!(
                read_packet(&mut subscriber).expect("packet"),
                (0x90, vec![0, 1, 0])
            );
            publisher
                .write_all(&publish_packet("plant/a", b"live", true, None))
                .expect("socket");
            let (first, body) = read_packet(&mut subscriber).expect("the live message");
            assert_eq!(
                first & 0xf1,
                0x30,
                "a publish, retain flag cleared: {first:#x}"
            );
            assert_eq!(&body[9..], b"live", "not the retained message: {body:?}");
            // Sessions: a fourth distinct client id is refused (server unavailable), a known
            // one still gets in; an empty id is refused.
            assert_eq!(open(port, "dtu-3").1, [0x20, 2, 0, 0]);
            assert_eq!(open(port, "dtu-4").1, [0x20, 2, 0, 3]);
            assert_eq!(open(port, "dtu-1").1, [0x20, 2, 0, 0]);
            assert_eq!(open(port, "").1, [0x20, 2, 0, 2]);
            assert_eq!(open(port, &"d".repeat(257)).1, [0x20, 2, 0, 2]);
            // Topics: `plant/a` and `plant/b` fit, a third topic closes the connection.
            let (mut p, _) = open(port, "dtu-3");
            p.write_all(&publish_packet("plant/b", b"1", false, Some(8)))
                .expect("socket");
            assert_eq!(read_packet(&mut p).expect("packet"), (0x40, vec![0, 8]));
            p.write_all(&publish_packet("plant/c", b"1", false, Some(9)))
                .expect("socket");
            let mut rest = Vec::new();
            assert_eq!(
                p.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0),
                0,
                "connection closed without a PUBACK"
            );
            // A packet over max_payload_size closes the connection before it is read.
            let (mut p, _) = open(port, "dtu-3");
            p.write_all(&publish_packet("plant/a", &[b'x'; 8192], false, Some(10)))
                .ok();
            let mut rest = Vec::new();
            assert_eq!(
                p.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0),
                0,
                "connection closed without a PUBACK"
            );
        })
        .await
        .expect("client checks");
        // Every refusal is counted by reason (the server side may still be closing the last
        // connection: poll).
        support::eventually(
            Duration::from_secs(10),
            "refusals counted by reason",
            || {
                let text = metrics.encode();
                async move {
                    [
                        "max_sessions",
                        "empty_client_id",
                        "client_id_too_long",
                        "max_topics",
                        "packet_too_large",
                    ]
                    .iter()
                    .all(|r| {
                        text.contains(&format!(
                            "hazgate_mqtt_broker_refused_total{{reason=\"{r}\"}} 1"
                        ))
                    })
                    .then_some(())
                }
            },
        )
        .await;
    })
    .await
    .expect("test timed out");
}

#[test]
fn check_config_warns_about_an_anonymous_broker_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pw"), "secret\n").expect("write");
    let check = |broker: &str| {
        let p = dir.path().join("hazgate.toml");
        std::fs::write(&p, format!("[site]\nid = \"s\"\n[mqtt_broker]\n{broker}\n"))
            .expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
            .arg("check-config")
            .arg(&p)
            .output()
            .expect("run hazgate");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = check(r#"listen = "0.0.0.0:1883""#);
    assert!(
        text.contains("warning: mqtt_broker.listen: the embedded broker listens on 0.0.0.0:1883 without `username`/`password`"),
        "{text}"
    );
    let text = check("listen = \"127.0.0.1:1883\"\nlisten_v5 = \"[::]:1884\"");
    assert!(text.contains("warning: mqtt_broker.listen_v5:"), "{text}");
    assert!(
        !text.contains("mqtt_broker.listen:"),
        "loopback is fine: {text}"
    );
    let pw = dir.path().join("pw");
    let text = check(&format!(
        "listen = \"0.0.0.0:1883\"\nusername = \"dtu\"\npassword = {{ file = \"{}\" }}",
        pw.display()
    ));
    assert!(
        !text.contains("warning: mqtt_broker"),
        "with credentials: {text}"
    );
}
