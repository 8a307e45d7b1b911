//! MQTT acquisition against a real mosquitto (started per test on a free port) and against the
//! embedded rumqttd broker: topic mapping, every payload format, bad payloads between good ones,
//! broker restarts with resubscription, QoS 1 messages kept by a persistent session, TLS with a CA
//! made at test time, staleness through the full gateway pipeline.

#[expect(
    dead_code,
    reason = "shared test support; this binary uses only its MQTT parts"
)]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hazgate::app;
use hazgate::config::{self, Resolved};
use hazgate::model::{Reading, Sample};
use hazgate::sources::mqtt::{self, Prepared};
use hazgate::state::{ChannelSnapshot, SharedState};
use hazgate::telemetry::Metrics;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(90);

fn resolve(text: &str) -> Resolved {
    let cfg = config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
    match config::validate(&cfg, Path::new(".")) {
        Ok((r, _)) => r,
        Err(p) => panic!("invalid test config: {p:#?}"),
    }
}

/// Publishes messages with QoS 1 (or 0) and waits until the broker acknowledged every QoS 1 one.
async fn publish(port: u16, auth: Option<(&str, &str)>, msgs: &[(&str, String, QoS, bool)]) {
    let mut o = MqttOptions::new(format!("pub-{}", rand_id()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = auth {
        o.set_credentials(u, p);
    }
    let (client, mut el) = AsyncClient::new(o, msgs.len() + 10);
    let want = msgs.iter().filter(|m| m.2 != QoS::AtMostOnce).count();
    let qos0 = msgs.len() - want;
    for (t, p, q, r) in msgs {
        client
            .publish(*t, *q, *r, p.clone())
            .await
            .expect("queue publish");
    }
    let mut acked = 0;
    let mut sent0 = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while acked < want || sent0 < qos0 {
            match el.poll().await.expect("publisher connection") {
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                Event::Outgoing(Outgoing::Publish(0)) => sent0 += 1,
                _ => {}
            }
        }
        client.disconnect().await.expect("disconnect");
        while !matches!(
            el.poll().await,
            Err(_) | Ok(Event::Outgoing(Outgoing::Disconnect))
        ) {}
    })
    .await
    .expect("publisher timed out");
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) * 1_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

/// A source task fed into an mpsc receiver (unit level).
struct Harness {
    rx: mpsc::Receiver<Vec<Sample>>,
    state: Arc<SharedState>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn run(cfg: &Resolved) -> Harness {
    let p: Prepared = mqtt::prepare(cfg.mqtt().next().expect("an MQTT source"), &cfg.site.id)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let (tx, rx) = mpsc::channel(64);
    let state = Arc::new(SharedState::new(cfg));
    let metrics = Arc::new(Metrics::new());
    let cancel = CancellationToken::new();
    state.health.fail(
        &hazgate::telemetry::Component::Source("m".into()),
        "not connected yet",
    );
    let task = tokio::spawn(mqtt::run_source(
        p,
        tx,
        state.clone(),
        metrics.clone(),
        cancel.clone(),
    ));
    Harness {
        rx,
        state,
        metrics,
        cancel,
        task,
    }
}

impl Harness {
    async fn subscribed(&self) {
        let st = self.state.clone();
        support::eventually(
            Duration::from_secs(20),
            "the source to be subscribed",
            move || {
                let st = st.clone();
                async move { st.health.not_ready().is_empty().then_some(()) }
            },
        )
        .await;
    }

    async fn samples(&mut self, n: usize) -> Vec<Sample> {
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout(Duration::from_secs(20), self.rx.recv()).await {
                Ok(Some(b)) => out.extend(b),
                Ok(None) => panic!("source ended after {} samples", out.len()),
                Err(_) => panic!("only {} of {n} samples arrived: {out:?}", out.len()),
            }
        }
        out
    }

    async fn stop(self) -> (mpsc::Receiver<Vec<Sample>>, Arc<Metrics>) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("source stops within 5 s of cancellation")
            .expect("source task did not panic");
        (self.rx, self.metrics)
    }
}

fn metric(m: &Metrics, needle: &str) -> f64 {
    m.encode()
        .lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn source_cfg(port: u16, protocol: &str, extra: &str) -> String {
    format!(
        r#"
[site]
id = "s"
[api]
listen = "127.0.0.1:0"
[[sources]]
kind = "mqtt"
id = "m"
address = "127.0.0.1:{port}"
protocol = "{protocol}"
client_id = "hazgate-test-{id}"
backoff_max = "500ms"
connect_timeout = "2s"
keep_alive = "5s"
{extra}
[[sources.topics]]
filter = "plant/{{area}}/num/{{device}}"
channel = "{{area}}.{{device}}.lel"
format = "number"
[[sources.channels]]
id = "a.gd1.lel"
kind = "combustible_gas"
unit = "%LEL"
"#,
        id = rand_id()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_format_through_the_gateway() {
    tokio::time::timeout(LIMIT, async {
        let broker = support::mosquitto_with(|_| "allow_anonymous true".into());
        let mut text = source_cfg(
            broker.port,
            "3.1.1",
            "",
        );
        text.push_str(
            r#"
[[sources.topics]]
filter = "plant/{area}/json/{device}"
channel = "{area}.{device}.o2"
value = "data.v"
timestamp = "data.t"
status = "st"
[[sources.topics]]
filter = "dtu/{device}/obj"
channel = "b.{device}.{key}"
object = ""
timestamp = "ts"
timestamp_unit = "ms"
[[sources.topics]]
filter = "dtu/{device}/rec"
channel = "c.{device}.{key}"
records = "data"
key = "name"
value = "val"
status = "q"
timestamp = "time"
[[sources.topics]]
filter = "fixed/topic/tank1"
channel = "t.tank1.level"
format = "number"
[[sources.channels]]
id = "a.gd1.o2"
[[sources.channels]]
id = "a.gd2.o2"
[[sources.channels]]
id = "b.u7.temp"
[[sources.channels]]
id = "b.u7.pressure"
[[sources.channels]]
id = "c.u8.flow"
[[sources.channels]]
id = "c.u8.level"
[[sources.channels]]
id = "t.tank1.level"
unit = "m"
"#,
        );
        let cfg = resolve(&text);
        let running = app::start(cfg).await.expect("gateway starts");
        let st = running.state.clone();
        support::eventually(Duration::from_secs(20), "MQTT source ready", || {
            let st = st.clone();
            async move { st.health.not_ready().is_empty().then_some(()) }
        })
        .await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        let q1 = QoS::AtLeastOnce;
        publish(
            broker.port,
            None,
            &[
                ("plant/a/num/GD1", "12.5".into(), q1, false),
                ("plant/a/json/gd1", format!(r#"{{"data":{{"v":20.9,"t":{}}},"st":"ok"}}"#, now_ms / 1000), q1, false),
                ("plant/a/json/gd2", r#"{"data":{"v":20.1,"t":"2020-01-01T00:00:00+08:00"},"st":"sensor_fault"}"#.into(), q1, false),
                ("dtu/u7/obj", format!(r#"{{"ts":{now_ms},"temp":"31.5","pressure":101.2,"sn":"X"}}"#), q1, false),
                ("dtu/U8/rec", r#"{"data":[{"name":"FLOW","val":3.25,"q":0},{"name":"level","val":1.5,"q":2}]}"#.into(), q1, false),
                ("fixed/topic/tank1", "\"7.75\"".into(), QoS::AtMostOnce, false),
                ("plant/a/num/unknown", "1".into(), q1, false),
                // Not subscribed: never delivered (unmapped topics arrive only from sessions made
                // by an older configuration; counted, see the mapping unit tests).
                ("not/mapped", "1".into(), q1, false),
            ],
        )
        .await;
        let want: Vec<(&str, &str, Option<f64>)> = vec![
            ("a.gd1.lel", "good", Some(12.5)),
            ("a.gd1.o2", "good", Some(20.9)),
            ("a.gd2.o2", "bad", None),
            ("b.u7.temp", "good", Some(31.5)),
            ("b.u7.pressure", "good", Some(101.2)),
            ("c.u8.flow", "good", Some(3.25)),
            ("c.u8.level", "bad", None),
            ("t.tank1.level", "good", Some(7.75)),
        ];
        let chans: Vec<ChannelSnapshot> = support::eventually(Duration::from_secs(20), "every channel updated", || {
            let st = st.clone();
            async move {
                let c = st.channels();
                c.iter().all(|c| c.quality != "unknown").then_some(c)
            }
        })
        .await;
        for (id, q, v) in want {
            let c = chans.iter().find(|c| c.id.as_str() == id).unwrap_or_else(|| panic!("{id} missing"));
            assert_eq!((c.quality, c.value), (q, v), "{id}: {c:?}");
        }
        let gd2 = chans.iter().find(|c| c.id.as_str() == "a.gd2.o2").expect("gd2");
        assert!(gd2.reason.as_deref().unwrap_or("").contains("sensor_fault"), "{gd2:?}");
        assert!(gd2.alarms.contains(&"fault".to_owned()), "a bad status raises a fault: {gd2:?}");
        let flow = chans.iter().find(|c| c.id.as_str() == "c.u8.level").expect("level");
        assert!(flow.reason.as_deref().unwrap_or("").contains("fault code 2"), "{flow:?}");
        let obj = chans.iter().find(|c| c.id.as_str() == "b.u7.temp").expect("temp");
        let ts = obj.ts.expect("ts");
        assert_eq!(
            ts.duration_since(std::time::UNIX_EPOCH).expect("after epoch").as_millis(),
            now_ms,
            "the device timestamp (ms) is kept"
        );
        let m = &running.metrics;
        support::eventually(Duration::from_secs(10), "problem counters", || async {
            (metric(m, r#"hazgate_mqtt_events_total{source="m",event="unknown_channel"}"#) == 2.0
                && metric(m, r#"hazgate_mqtt_events_total{source="m",event="timestamp_clamped"}"#) == 1.0
                && metric(m, r#"hazgate_mqtt_messages_total{source="m"}"#) == 7.0)
                .then_some(())
        })
        .await;
        running.stop().await.expect("clean stop");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_between_good_ones_lose_nothing_v311_and_v5() {
    tokio::time::timeout(LIMIT, async {
        let broker = support::mosquitto();
        for protocol in ["3.1.1", "5"] {
            let cfg = resolve(&source_cfg(broker.port, protocol, ""));
            let mut h = run(&cfg);
            h.subscribed().await;
            let mut msgs = Vec::new();
            for i in 0..100 {
                msgs.push(("plant/a/num/gd1", format!("{i}"), QoS::AtLeastOnce, false));
                let junk = match i % 4 {
                    0 => "{\"value\": oops".to_owned(),
                    1 => String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x41]).into_owned(),
                    2 => "x".repeat(5000),
                    _ => String::new(),
                };
                msgs.push(("plant/a/num/gd1", junk, QoS::AtLeastOnce, false));
            }
            publish(broker.port, None, &msgs).await;
            let samples = h.samples(200).await;
            let good: Vec<f64> = samples.iter().filter_map(|s| s.reading.value()).collect();
            assert_eq!(
                good,
                (0..100).map(f64::from).collect::<Vec<_>>(),
                "{protocol}: every good value, in order"
            );
            assert!(
                samples
                    .iter()
                    .filter(|s| matches!(s.reading, Reading::Bad(_)))
                    .count()
                    == 100,
                "{protocol}: each garbage payload is a Bad(decode) sample"
            );
            let (_, metrics) = h.stop().await;
            assert_eq!(
                metric(
                    &metrics,
                    r#"hazgate_mqtt_events_total{source="m",event="decode_error"}"#
                ),
                100.0
            );
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_resubscribe_and_kept_qos1_messages_arrive() {
    tokio::time::timeout(LIMIT, async {
        let mut broker = support::mosquitto_with(|_| "allow_anonymous true".into());
        let cfg = resolve(&source_cfg(broker.port, "3.1.1", ""));
        let mut h = run(&cfg);
        h.subscribed().await;
        publish(
            broker.port,
            None,
            &[("plant/a/num/gd1", "1".into(), QoS::AtLeastOnce, false)],
        )
        .await;
        assert_eq!(h.samples(1).await[0].reading, Reading::Good(1.0));

        // 1. The broker dies and comes back with no memory of the session (persistence removed):
        //    only a resubscription brings data back.
        broker.kill();
        for f in std::fs::read_dir(&broker.dir).expect("dir").flatten() {
            if f.file_name().to_string_lossy().ends_with(".db") {
                std::fs::remove_file(f.path()).expect("remove persistence");
            }
        }
        let st = h.state.clone();
        support::eventually(Duration::from_secs(10), "the outage to be noticed", || {
            let st = st.clone();
            async move { (!st.health.not_ready().is_empty()).then_some(()) }
        })
        .await;
        broker.start_again();
        h.subscribed().await;
        publish(
            broker.port,
            None,
            &[("plant/a/num/gd1", "2".into(), QoS::AtLeastOnce, false)],
        )
        .await;
        assert_eq!(h.samples(1).await[0].reading, Reading::Good(2.0));

        // 2. The gateway goes away (clean DISCONNECT, persistent session); QoS 1 messages published
        //    meanwhile are kept by the broker, across a clean broker restart, and delivered when the
        //    gateway comes back with the same client id.
        let (_, metrics) = h.stop().await;
        assert!(
            metric(
                &metrics,
                r#"hazgate_mqtt_connections_total{source="m",result="connected"}"#
            ) >= 2.0
        );
        let kept: Vec<_> = (100..150)
            .map(|i| ("plant/a/num/gd1", format!("{i}"), QoS::AtLeastOnce, false))
            .collect();
        publish(broker.port, None, &kept).await;
        broker.terminate();
        broker.start_again();
        let mut h = run(&cfg);
        let got = h.samples(50).await;
        let mut vals: Vec<f64> = got.iter().filter_map(|s| s.reading.value()).collect();
        // A reading the gateway had not yet acknowledged when it stopped (end-to-end ack) is
        // delivered again: at least once. Only the kept ones are counted here.
        vals.retain(|v| *v >= 100.0);
        if vals.len() < 50 {
            let more = h.samples(50 - vals.len()).await;
            vals.extend(more.iter().filter_map(|s| s.reading.value()));
        }
        assert_eq!(
            vals,
            (100..150).map(f64::from).collect::<Vec<_>>(),
            "kept QoS 1 messages, none lost"
        );
        h.subscribed().await;
        publish(
            broker.port,
            None,
            &[("plant/a/num/gd1", "3".into(), QoS::AtLeastOnce, false)],
        )
        .await;
        assert_eq!(h.samples(1).await[0].reading, Reading::Good(3.0));
        h.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_test_ca_client_certificate_and_password() {
    tokio::time::timeout(LIMIT, async {
        let pki = support::test_pki();
        let pw = support::mosquitto_password_file(pki.dir.path(), "gw", "s3cret");
        std::fs::write(pki.path("gw.pw"), "s3cret\n").expect("write secret");
        std::fs::write(pki.path("wrong.pw"), "nope\n").expect("write secret");
        let (ca, crt, key) = (pki.path("ca.crt"), pki.path("server.crt"), pki.path("server.key"));
        let broker = support::mosquitto_with(|_| {
            format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nallow_anonymous false\npassword_file {}\n",
                ca.display(),
                crt.display(),
                key.display(),
                pw.display()
            )
        });
        let tls = |pwfile: &str| {
            format!(
                "username = \"gw\"\npassword = {{ file = \"{}\" }}\n[sources.tls]\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
                pki.path(pwfile).display(),
                pki.path("ca.crt").display(),
                pki.path("client.crt").display(),
                pki.path("client.key").display()
            )
        };
        // Wrong password: refused, reported in health, retried with backoff (no crash).
        let bad = run(&resolve(&source_cfg(broker.port, "3.1.1", &tls("wrong.pw"))));
        let st = bad.state.clone();
        let reason = support::eventually(Duration::from_secs(20), "a refused connection reported", || {
            let st = st.clone();
            async move { st.health.not_ready().into_iter().find(|r| r.contains("MQTT")) }
        })
        .await;
        assert!(reason.contains("127.0.0.1"), "{reason}");
        bad.stop().await;

        let mut h = run(&resolve(&source_cfg(broker.port, "5", &tls("gw.pw"))));
        h.subscribed().await;
        // The publisher also needs the certificate: use a client over TLS.
        let mut o = MqttOptions::new("tls-pub", "127.0.0.1", broker.port);
        o.set_credentials("gw", "s3cret");
        o.set_transport(rumqttc::Transport::tls(
            std::fs::read(pki.path("ca.crt")).expect("ca"),
            Some((
                std::fs::read(pki.path("client.crt")).expect("crt"),
                std::fs::read(pki.path("client.key")).expect("key"),
            )),
            None,
        ));
        let (client, mut el) = AsyncClient::new(o, 10);
        client.publish("plant/a/num/gd1", QoS::AtLeastOnce, false, "42.5").await.expect("queue");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.expect("tls publisher") {
                    break;
                }
            }
        })
        .await
        .expect("publish acknowledged");
        assert_eq!(h.samples(1).await[0].reading, Reading::Good(42.5));
        h.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_feeds_the_gateway_and_silence_becomes_a_stale_fault() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("broker.pw");
        std::fs::write(&secret, "dtu-pass\n").expect("write");
        let port = support::free_port();
        let text = format!(
            r#"
[site]
id = "s"
[api]
listen = "127.0.0.1:0"
[mqtt_broker]
listen = "127.0.0.1:{port}"
username = "dtu"
password = {{ file = "{pw}" }}
[[sources]]
kind = "mqtt"
id = "m"
address = "127.0.0.1:{port}"
username = "dtu"
password = {{ file = "{pw}" }}
backoff_max = "500ms"
[[sources.topics]]
filter = "site/{{site}}/gas/{{device}}"
channel = "{{site}}.{{device}}.lel"
value = "lel"
[[sources.channels]]
id = "north.gd9.lel"
kind = "combustible_gas"
unit = "%LEL"
max_age = "1500ms"
"#,
            pw = secret.display()
        );
        let running = app::start(resolve(&text)).await.expect("gateway starts");
        assert_eq!(
            running.mqtt_broker.as_ref().map(|b| b.local_addr().port()),
            Some(port)
        );
        let st = running.state.clone();
        support::eventually(
            Duration::from_secs(20),
            "MQTT source subscribed to the embedded broker",
            || {
                let st = st.clone();
                async move { st.health.not_ready().is_empty().then_some(()) }
            },
        )
        .await;
        publish(
            port,
            Some(("dtu", "dtu-pass")),
            &[(
                "site/north/gas/GD9",
                r#"{"lel": 8.5}"#.into(),
                QoS::AtLeastOnce,
                false,
            )],
        )
        .await;
        support::eventually(
            Duration::from_secs(10),
            "the value through the embedded broker",
            || {
                let st = st.clone();
                async move { st.channels().into_iter().find(|c| c.value == Some(8.5)) }
            },
        )
        .await;
        // Nothing more is published: after max_age the channel is stale, a fault alarm.
        let c = support::eventually(
            Duration::from_secs(10),
            "the channel to become stale",
            || {
                let st = st.clone();
                async move {
                    st.channels()
                        .into_iter()
                        .find(|c| c.quality == "bad" && c.alarms.contains(&"fault".to_owned()))
                }
            },
        )
        .await;
        assert!(
            c.reason.as_deref().unwrap_or("").contains("maximum age"),
            "{c:?}"
        );
        // A wrong password is refused by the embedded broker.
        let mut o = MqttOptions::new("intruder", "127.0.0.1", port);
        o.set_credentials("dtu", "guess");
        let (_c, mut el) = AsyncClient::new(o, 10);
        let r = tokio::time::timeout(Duration::from_secs(10), el.poll())
            .await
            .expect("answer");
        assert!(r.is_err(), "wrong credentials must be refused: {r:?}");
        running.stop().await.expect("clean stop");
    })
    .await
    .expect("test timed out");
}

/// Issue 13: `parse_rfc3339` cut this timestamp inside the `€` and the panic killed the source
/// task. Now the channel reads Bad(decode) and the next message is read by the same task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_with_a_multibyte_character_is_bad_decode_and_the_source_keeps_running() {
    tokio::time::timeout(LIMIT, async {
        let broker = support::mosquitto();
        let mut text = source_cfg(broker.port, "3.1.1", "");
        text.push_str(
            "[[sources.topics]]\nfilter = \"plant/{area}/json/{device}\"\nchannel = \"{area}.{device}.lel\"\ntimestamp = \"ts\"\nstatus = \"status\"\n",
        );
        let cfg = resolve(&text);
        let mut h = run(&cfg);
        h.subscribed().await;
        let msgs = [
            (
                "plant/a/json/gd1",
                r#"{"value":1.0,"ts":"aaaa€bbbbb","status":"ok"}"#.to_owned(),
                QoS::AtLeastOnce,
                false,
            ),
            ("plant/a/num/gd1", "7".to_owned(), QoS::AtLeastOnce, false),
        ];
        publish(broker.port, None, &msgs).await;
        let samples = h.samples(2).await;
        assert!(
            matches!(
                samples[0].reading,
                Reading::Bad(hazgate::model::BadReason::Decode { .. })
            ),
            "{samples:?}"
        );
        assert_eq!(samples[1].reading, Reading::Good(7.0), "{samples:?}");
        // `stop` fails if the task panicked.
        h.stop().await;
    })
    .await
    .expect("test timed out");
}
