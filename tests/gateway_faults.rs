//! Gateway faults end to end: a failing gateway component (the alert outbox on a real, full
//! disk; a receiver that keeps failing) raises the system fault alarm `gateway:{component}`,
//! which reaches the receivers and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

/// Token `op-secret`.
const OP_SHA256: &str = "1404ccb7e370497229e0478ebfe329b1067563cb646826f6ef685a04d02431de";

type Seen = Arc<Mutex<Vec<Value>>>;

async fn hook() -> (Seen, String) {
    let (seen, url) = hook_that_can_fail(Arc::default()).await;
    (seen, url)
}

/// A webhook receiver that records what it accepted; while `down` is set it answers 500.
async fn hook_that_can_fail(down: Arc<AtomicBool>) -> (Seen, String) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .fallback(post(
            |State((s, down)): State<(Seen, Arc<AtomicBool>)>, body: String| async move {
                if down.load(Ordering::SeqCst) {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "down");
                }
                if let Ok(v) = serde_json::from_str(&body) {
                    s.lock().expect("lock").push(v);
                }
                (StatusCode::OK, "ok")
            },
        ))
        .with_state((seen.clone(), down));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    (seen, format!("http://{addr}"))
}

fn alarms_seen(seen: &Seen) -> Vec<(String, String)> {
    seen.lock()
        .expect("lock")
        .iter()
        .flat_map(|v| v["events"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["alarm"].as_str().unwrap_or("").to_owned(),
                e["transition"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn set_mode(api: &str, mode: &str) {
    let r = reqwest::Client::new()
        .post(format!("{api}/api/v1/alarms/site-mode"))
        .bearer_auth("op-secret")
        .json(&serde_json::json!({"mode": mode, "reason": "test"}))
        .send()
        .await
        .expect("site-mode request");
    let status = r.status();
    assert!(
        status.is_success(),
        "site mode: {status} {}",
        r.text().await.unwrap_or_default()
    );
}

async fn readyz(api: &str) -> (u16, String) {
    let r = reqwest::get(format!("{api}/readyz")).await.expect("readyz");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_on_a_full_disk_raises_the_gateway_fault_alarm() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let disk = support::Tmpfs::mount(256);
        let dir = tempfile::tempdir().expect("tempdir");
        let (seen, url) = hook().await;
        let text = format!(
            "[site]\nid = \"s\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [alarms]\njournal_dir = \"{}\"\n\
             [[alarms.tokens]]\nname = \"op\"\nrole = \"operator\"\nsha256 = \"{OP_SHA256}\"\n\
             [notifications.outbox]\ndir = \"{}\"\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"shift\"\nurl = \"{url}/shift\"\nsend_clear = true\n\
             [[sources]]\nkind = \"modbus_tcp\"\nid = \"c\"\naddress = \"127.0.0.1:9\"\n\
             [[devices]]\nid = \"gd1\"\narea = \"a\"\nsource = \"c\"\n\
             [[devices.registers]]\nname = \"lel\"\ntable = \"input\"\naddress = 0\nspan = {{ raw = [4000, 20000], eng = [0, 100] }}\n",
            dir.path().join("journal").display(),
            disk.path().join("outbox").display(),
        );
        let cfg = hazgate::config::parse(&text, std::path::Path::new("t.toml")).expect("parse");
        let (cfg, _) = hazgate::config::validate(&cfg, std::path::Path::new("."))
            .unwrap_or_else(|p| panic!("invalid config: {p:?}"));
        let gw = hazgate::app::start(cfg).await.expect("gateway starts");
        let api = format!("http://{}", gw.api_addr);
        // (The source is never reachable: it keeps the engine running and is not a gateway fault.)
        let (_, body) = readyz(&api).await;
        assert!(!body.contains("alert outbox"), "{body}");

        disk.fill("filler");
        // Each site-mode change is a notification that has to be written to the outbox. The
        // first few may still fit in the file's last, partly used page; then writes fail.
        let fault = ("gateway:alert outbox".to_owned(), "fault".to_owned());
        let mut changes = 0;
        while !alarms_seen(&seen).contains(&fault) {
            assert!(
                changes < 300,
                "no gateway:alert outbox fault after {changes} notifications written to a full disk"
            );
            set_mode(&api, ["maintenance", "suspended"][changes % 2]).await;
            changes += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (code, body) = readyz(&api).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("alert outbox: cannot write to disk"), "{body}");
        assert!(
            gw.metrics.encode().contains("hazgate_outbox_write_failing 1"),
            "gauge set"
        );
        // The notification of the site-mode change itself was not lost either.
        assert!(
            alarms_seen(&seen).iter().any(|(a, _)| a == "site:mode"),
            "{:?}",
            alarms_seen(&seen)
        );

        // Space again: the next write succeeds, the fault clears.
        std::fs::remove_file(disk.path().join("filler")).expect("remove filler");
        set_mode(&api, "normal").await;
        support::eventually(
            Duration::from_secs(30),
            "the fault cleared at the receiver",
            || {
                let s = alarms_seen(&seen);
                async move {
                    s.contains(&(
                        "gateway:alert outbox".to_owned(),
                        "fault_cleared".to_owned(),
                    ))
                    .then_some(())
                }
            },
        )
        .await;
        let (_, body) = readyz(&api).await;
        assert!(!body.contains("alert outbox"), "{body}");
        gw.stop().await.expect("clean stop");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_keeps_failing_is_a_gateway_fault_told_to_the_others() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("tempdir");
        let down = Arc::new(AtomicBool::new(true));
        let (seen_a, url_a) = hook_that_can_fail(down.clone()).await;
        let (seen_b, url_b) = hook().await;
        // Default backoff_max (30 s): a receiver that comes back gets what is pending within it.
        let text = format!(
            "[site]\nid = \"s\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [alarms]\njournal_dir = \"{d}/journal\"\n\
             [[alarms.tokens]]\nname = \"op\"\nrole = \"operator\"\nsha256 = \"{OP_SHA256}\"\n\
             [notifications.outbox]\ndir = \"{d}/outbox\"\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"a\"\nurl = \"{url_a}/a\"\nfault_after = \"2s\"\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"b\"\nurl = \"{url_b}/b\"\nfault_after = \"2s\"\n\
             [[sources]]\nkind = \"modbus_tcp\"\nid = \"c\"\naddress = \"127.0.0.1:9\"\n\
             [[devices]]\nid = \"gd1\"\narea = \"a\"\nsource = \"c\"\n\
             [[devices.registers]]\nname = \"lel\"\ntable = \"input\"\naddress = 0\nspan = {{ raw = [4000, 20000], eng = [0, 100] }}\n",
            d = dir.path().display(),
        );
        let cfg = hazgate::config::parse(&text, std::path::Path::new("t.toml")).expect("parse");
        let (cfg, _) = hazgate::config::validate(&cfg, std::path::Path::new("."))
            .unwrap_or_else(|p| panic!("invalid config: {p:?}"));
        let gw = hazgate::app::start(cfg).await.expect("gateway starts");
        let api = format!("http://{}", gw.api_addr);
        set_mode(&api, "maintenance").await;

        let fault = ("gateway:receiver a".to_owned(), "fault".to_owned());
        support::eventually(Duration::from_secs(30), "gateway:receiver a at receiver b", || {
            let hit = alarms_seen(&seen_b).contains(&fault);
            async move { hit.then_some(()) }
        })
        .await;
        let (code, body) = readyz(&api).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("receiver a: every delivery attempt failed"), "{body}");
        assert!(!body.contains("receiver b"), "{body}");

        // Receiver a answers again: what is pending reaches it within the 30 s retry cap, and
        // the others are told the fault cleared. It is never sent its own fault.
        down.store(false, Ordering::SeqCst);
        let back = tokio::time::Instant::now();
        support::eventually(Duration::from_secs(45), "the pending site-mode change at a", || {
            let s = alarms_seen(&seen_a);
            async move { s.iter().any(|(a, _)| a == "site:mode").then_some(()) }
        })
        .await;
        println!("receiver a got its pending notifications {:?} after it came back", back.elapsed());
        let cleared = ("gateway:receiver a".to_owned(), "fault_cleared".to_owned());
        support::eventually(Duration::from_secs(30), "fault_cleared at receiver b", || {
            let hit = alarms_seen(&seen_b).contains(&cleared);
            async move { hit.then_some(()) }
        })
        .await;
        assert!(
            !alarms_seen(&seen_a).iter().any(|(a, _)| a == "gateway:receiver a"),
            "{:?}",
            alarms_seen(&seen_a)
        );
        let (_, body) = readyz(&api).await;
        assert!(!body.contains("receiver a"), "{body}");
        gw.stop().await.expect("clean stop");
    })
    .await
    .expect("test timed out");
}
