//! Alarm events reach a webhook receiver (a real HTTP server on port 0) with the documented
//! schema and an idempotency key, and a failing receiver is retried until it accepts.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

#[derive(Default)]
struct Recorder {
    calls: usize,
    accepted: Vec<(String, serde_json::Value)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_events_are_posted_and_retried() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let rec = Arc::new(Mutex::new(Recorder::default()));
        let r2 = rec.clone();
        let app = Router::new().route(
            "/alarms",
            post(move |headers: HeaderMap, body: String| {
                let rec = r2.clone();
                async move {
                    let mut r = rec.lock().expect("lock");
                    r.calls += 1;
                    // The first two attempts fail: the gateway must retry.
                    if r.calls <= 2 {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    assert_eq!(auth, "Bearer hook-secret");
                    r.accepted.push((key, serde_json::from_str(&body).expect("json body")));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let hook = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });

        let (sim, cancel) = support::sim(
            "[[listeners]]\nid = \"c\"\n[[listeners.devices]]\nid = \"gd1\"\nunit_id = 1\nmap_id = \"gas-4-20ma\"\nsignals.lel = { constant = 30 }\n",
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "hook-secret\n").expect("token file");
        let text = format!(
            "[site]\nid = \"s\"\n[api]\nlisten = \"127.0.0.1:0\"\n[[sources]]\nkind = \"modbus_tcp\"\nid = \"c\"\naddress = \"{}\"\n\
             [[devices]]\nid = \"gd1\"\narea = \"a\"\nsource = \"c\"\npoll_interval = \"100ms\"\n\
             [[devices.registers]]\nname = \"lel\"\ntable = \"input\"\naddress = 0\nunit = \"%LEL\"\nspan = {{ raw = [4000, 20000], eng = [0, 100] }}\n\
             [[rules]]\nchannel = \"a.gd1.lel\"\nh = 25\nhh = 50\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"hook\"\nurl = \"http://{hook}/alarms\"\ntoken = {{ file = \"{}\" }}\ntimeout = \"2s\"\n",
            sim.listeners[0].1,
            token.display()
        );
        let cfg = hazgate::config::parse(&text, Path::new("t.toml")).expect("parse");
        let (cfg, _) = hazgate::config::validate(&cfg, Path::new(".")).expect("valid");
        let gw = hazgate::app::start(cfg).await.expect("start");
        let (key, body) = support::eventually(Duration::from_secs(30), "the H alarm delivered", || {
            let rec = rec.clone();
            async move { rec.lock().expect("lock").accepted.first().cloned() }
        })
        .await;
        assert!(rec.lock().expect("lock").calls >= 3, "retried after two failures");
        assert_eq!(body["schema"], "hazgate.alarm.v2");
        assert_eq!(body["idempotency_key"], key.as_str());
        assert_eq!(body["site"], "s");
        let ev = &body["event"];
        assert_eq!(ev["alarm"], "a.gd1.lel:H");
        assert_eq!(ev["transition"], "raised");
        assert_eq!(ev["priority"], "high");
        assert_eq!(ev["value"], 30.0);
        assert_eq!(ev["limit"], 25.0);
        // No alarm journal: the key carries the process start so a new run never reuses one.
        assert!(key.starts_with("s~") && key.ends_with(&format!("-{}-default-hook", ev["seq"])), "{key}");
        gw.stop().await.expect("stop");
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}

/// A latched gas alarm whose reading chatters around its limit (about one crossing a second,
/// no deadband) while nobody answers: the receiver gets one `raised` notification and one
/// "it chatters" notice, not one notification per crossing (the summary comes only after the
/// route's period, 10 minutes without `renotify`). The acknowledgement, notified after every
/// earlier notification of the receiver, marks the point where all of them have arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chattering_latched_gas_alarm_is_notified_once_not_per_crossing() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let g2 = got.clone();
        let app = Router::new().route(
            "/alarms",
            post(move |body: String| {
                let got = g2.clone();
                async move {
                    got.lock().expect("lock").push(serde_json::from_str(&body).expect("json body"));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let hook = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });

        // 25 ± 2 %LEL over one second, polled every 100 ms: about one crossing of 25 a second.
        let (sim, cancel) = support::sim(
            "[[listeners]]\nid = \"c\"\n[[listeners.devices]]\nid = \"gd1\"\nunit_id = 1\nmap_id = \"gas-4-20ma\"\nsignals.lel = { sine = { base = 25, amplitude = 2, period = \"1s\" } }\n",
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("operator");
        std::fs::write(&token, "op-secret\n").expect("token file");
        let text = format!(
            "[site]\nid = \"s\"\n[api]\nlisten = \"127.0.0.1:0\"\n[[sources]]\nkind = \"modbus_tcp\"\nid = \"c\"\naddress = \"{}\"\n\
             [[devices]]\nid = \"gd1\"\narea = \"a\"\nsource = \"c\"\npoll_interval = \"100ms\"\n\
             [[devices.registers]]\nname = \"lel\"\ntable = \"input\"\naddress = 0\nkind = \"combustible_gas\"\nunit = \"%LEL\"\nspan = {{ raw = [4000, 20000], eng = [0, 100] }}\n\
             [[rules]]\nchannel = \"a.gd1.lel\"\nh = 25\n\
             [[alarms.tokens]]\nname = \"shift-lead\"\nrole = \"operator\"\ntoken = {{ file = \"{}\" }}\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"hook\"\nurl = \"http://{hook}/alarms\"\ntimeout = \"2s\"\n",
            sim.listeners[0].1,
            token.display()
        );
        let cfg = hazgate::config::parse(&text, Path::new("t.toml")).expect("parse");
        let (cfg, _) = hazgate::config::validate(&cfg, Path::new(".")).expect("valid");
        let gw = hazgate::app::start(cfg).await.expect("start");
        let port = gw.api_addr.port();
        // Let it chatter: at least 12 crossings of the limit recorded by the engine.
        let raised = support::eventually(Duration::from_secs(60), "12 crossings of the limit", || async move {
            let (_, text) = tokio::task::spawn_blocking(move || support::http_get(port, "/metrics"))
                .await
                .expect("join")
                .ok()?;
            let n: f64 = text
                .lines()
                .find(|l| l.starts_with("hazgate_alarm_events_total{transition=\"raised\"}"))?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()?;
            (n >= 12.0).then_some(n)
        })
        .await;
        let client = reqwest::Client::new();
        let resp = client
            .post(format!("http://127.0.0.1:{port}/api/v1/alarms/a.gd1.lel:H/ack"))
            .bearer_auth("op-secret")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("ack request");
        assert!(resp.status().is_success(), "ack: {}", resp.status());
        let bodies = support::eventually(Duration::from_secs(30), "the acknowledgement delivered", || {
            let got = got.clone();
            async move {
                let v = got.lock().expect("lock").clone();
                v.iter().any(|b| b["event"]["transition"] == "acknowledged").then_some(v)
            }
        })
        .await;
        let of = |t: &str| bodies.iter().filter(|b| b["event"]["alarm"] == "a.gd1.lel:H" && b["event"]["transition"] == t).count();
        assert_eq!(of("raised"), 1, "one raised notification for {raised} crossings: {bodies:#?}");
        assert_eq!(of("chattering"), 1, "told once that it chatters");
        assert!(!bodies.iter().any(|b| b["event"]["transition"] == "flood"), "repeats are not new activations: no flood");
        assert!(of("cleared") <= 1, "at most the first return: {bodies:#?}");
        let notice = bodies.iter().find(|b| b["event"]["transition"] == "chattering").expect("chattering notice");
        let msg = notice["event"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("chattering") && msg.contains("报警振荡"), "{msg}");
        gw.stop().await.expect("stop");
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}
