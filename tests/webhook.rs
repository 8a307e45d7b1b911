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
