//! The `hazgate` process killed with SIGKILL while notifications are pending (the receiver is
//! down), then started again: every notification is delivered after the restart, and any
//! duplicate carries the same idempotency key. The ledger is checked through
//! `GET /api/v1/notifications`.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Rec {
    attempts: Vec<String>,
    accepted: Vec<(String, Value)>,
}

fn spawn(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["run", "--config"])
        .arg(config)
        .env("HZ_VIEW", "viewer-token")
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(log)
                .expect("log"),
        )
        .spawn()
        .expect("start hazgate")
}

/// Serves `app` on a free port.
async fn serve(app: Router) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

/// A simulated gas detector reading 60 %LEL (above H 25 and HH 50).
async fn gas_at_60(cancel: &CancellationToken) -> hazgate_sim::RunningSim {
    let spec = hazgate_sim::site::SiteSpec::from_toml_str(
        "[[listeners]]\nid = \"c\"\n[[listeners.devices]]\nid = \"gd1\"\nunit_id = 1\nmap_id = \"gas-4-20ma\"\nsignals.lel = { constant = 60 }\n",
    )
    .expect("spec");
    hazgate_sim::start(spec, Path::new("."), cancel.clone())
        .await
        .expect("sim")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_pending_notifications_loses_nothing() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let up = Arc::new(AtomicBool::new(false));
        let rec = Arc::new(Mutex::new(Rec::default()));
        let (u2, r2) = (up.clone(), rec.clone());
        let app = Router::new().route(
            "/alarms",
            post(move |headers: HeaderMap, body: String| {
                let (up, rec) = (u2.clone(), r2.clone());
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let mut r = rec.lock().expect("lock");
                    r.attempts.push(key.clone());
                    if !up.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    r.accepted.push((key, serde_json::from_str(&body).unwrap_or(Value::Null)));
                    StatusCode::OK
                }
            }),
        );
        let hook = serve(app).await;
        let cancel = CancellationToken::new();
        let sim = gas_at_60(&cancel).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let api_port = support::free_port();
        let d = dir.path().display();
        let config = dir.path().join("gw.toml");
        std::fs::write(
            &config,
            format!(
                "[site]\nid = \"s\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n\
                 [alarms]\njournal_dir = \"{d}/journal\"\n\
                 [[alarms.tokens]]\nname = \"view\"\nrole = \"viewer\"\ntoken = {{ env = \"HZ_VIEW\" }}\n\
                 [notifications.outbox]\ndir = \"{d}/outbox\"\n\
                 [[sources]]\nkind = \"modbus_tcp\"\nid = \"c\"\naddress = \"{}\"\n\
                 [[devices]]\nid = \"gd1\"\narea = \"a\"\nsource = \"c\"\npoll_interval = \"100ms\"\n\
                 [[devices.registers]]\nname = \"lel\"\ntable = \"input\"\naddress = 0\nunit = \"%LEL\"\nspan = {{ raw = [4000, 20000], eng = [0, 100] }}\n\
                 [[rules]]\nchannel = \"a.gd1.lel\"\nh = 25\nhh = 50\n\
                 [[receivers]]\nkind = \"webhook\"\nid = \"hook\"\nurl = \"http://{hook}/alarms\"\ntimeout = \"1s\"\nbackoff_max = \"500ms\"\n",
                sim.listeners[0].1
            ),
        )
        .expect("config");
        let log = dir.path().join("hazgate.log");
        let mut child = spawn(&config, &log);
        // H and HH raised; both notifications attempted (so both are on disk) and refused.
        let pending: BTreeSet<String> =
            support::eventually(Duration::from_secs(30), "both alarms attempted twice", || {
                let r = rec.clone();
                async move {
                    let r = r.lock().expect("lock");
                    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
                    for k in &r.attempts {
                        *n.entry(k).or_default() += 1;
                    }
                    (n.len() >= 2 && n.values().all(|&c| c >= 2))
                        .then(|| n.keys().map(|k| (*k).to_owned()).collect())
                }
            })
            .await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        assert!(rec.lock().expect("lock").accepted.is_empty());

        up.store(true, Ordering::SeqCst);
        let mut child = spawn(&config, &log);
        let accepted = support::eventually(Duration::from_secs(30), "every pending notification delivered", || {
            let r = rec.clone();
            let want = pending.clone();
            async move {
                let r = r.lock().expect("lock");
                let got: BTreeSet<String> = r.accepted.iter().map(|(k, _)| k.clone()).collect();
                want.is_subset(&got).then(|| r.accepted.clone())
            }
        })
        .await;
        // Duplicates only with the same key: one key per (event seq, receiver).
        let mut by_event: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for (k, body) in &accepted {
            assert_eq!(body["idempotency_key"], k.as_str());
            let seq = body["event"]["seq"].as_u64().expect("seq");
            by_event.entry(seq).or_default().insert(k.clone());
        }
        for (seq, keys) in &by_event {
            assert_eq!(keys.len(), 1, "event {seq} delivered under several keys: {keys:?}");
        }
        let alarms: BTreeSet<String> = accepted
            .iter()
            .map(|(_, b)| b["event"]["alarm"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(alarms.contains("a.gd1.lel:H") && alarms.contains("a.gd1.lel:HH"), "{alarms:?}");

        // The ledger of the restarted process shows them delivered, with their attempts.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        let url = format!("http://127.0.0.1:{api_port}/api/v1/notifications?receiver=hook");
        let ledger: Value = support::eventually(Duration::from_secs(20), "ledger shows delivered", || {
            let (c, url, want) = (client.clone(), url.clone(), pending.clone());
            async move {
                let v: Value = c.get(&url).bearer_auth("viewer-token").send().await.ok()?.json().await.ok()?;
                let rows = v["notifications"].as_array()?;
                let done = want.iter().all(|k| {
                    rows.iter().any(|r| r["key"] == k.as_str() && r["status"] == "delivered" && r["attempts"].as_u64() >= Some(3))
                });
                done.then_some(v)
            }
        })
        .await;
        assert_eq!(ledger["durable"], true);
        assert_eq!(ledger["backlog"]["hook"], 0);
        let unauth = client.get(&url).send().await.expect("request");
        assert_eq!(unauth.status(), 401);

        child.kill().expect("kill");
        child.wait().expect("reap");
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}

/// An alarm raised, notified to tier 1, then the process killed before tier 2 is due: after the
/// restart the dispatcher rebuilds the escalation from the journal and tier 2 fires (the alarm is
/// still active, so the engine raises nothing new that could trigger it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_survives_sigkill() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let g2 = got.clone();
        let app = Router::new().route(
            "/{who}",
            post(move |axum::extract::Path(who): axum::extract::Path<String>, headers: HeaderMap| {
                let g = g2.clone();
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    g.lock().expect("lock").push((who, key));
                    StatusCode::OK
                }
            }),
        );
        let hook = serve(app).await;
        let cancel = CancellationToken::new();
        let sim = gas_at_60(&cancel).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let config = dir.path().join("gw.toml");
        std::fs::write(
            &config,
            format!(
                "[site]\nid = \"s\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
                 [alarms]\njournal_dir = \"{d}/journal\"\n\
                 [notifications.outbox]\ndir = \"{d}/outbox\"\n\
                 [[sources]]\nkind = \"modbus_tcp\"\nid = \"c\"\naddress = \"{}\"\n\
                 [[devices]]\nid = \"gd1\"\narea = \"a\"\nsource = \"c\"\npoll_interval = \"100ms\"\n\
                 [[devices.registers]]\nname = \"lel\"\ntable = \"input\"\naddress = 0\nspan = {{ raw = [4000, 20000], eng = [0, 100] }}\n\
                 [[rules]]\nchannel = \"a.gd1.lel\"\nhh = 50\n\
                 [[receivers]]\nkind = \"webhook\"\nid = \"shift\"\nurl = \"http://{hook}/shift\"\n\
                 [[receivers]]\nkind = \"webhook\"\nid = \"boss\"\nurl = \"http://{hook}/boss\"\n\
                 [[notifications.routes]]\nid = \"gas\"\nreceivers = [\"shift\"]\n\
                 escalation = [{{ after = \"4s\", receivers = [\"boss\"] }}]\n",
                sim.listeners[0].1
            ),
        )
        .expect("config");
        let log = dir.path().join("hazgate.log");
        let mut child = spawn(&config, &log);
        let first = support::eventually(Duration::from_secs(30), "tier 1 notified", || {
            let g = got.lock().expect("lock").first().cloned();
            async move { g }
        })
        .await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        assert_eq!(first.0, "shift");
        assert!(
            got.lock().expect("lock").iter().all(|(who, _)| who == "shift"),
            "killed before tier 2 was due"
        );
        let mut child = spawn(&config, &log);
        let (_, key) = support::eventually(Duration::from_secs(30), "tier 2 after the restart", || {
            let g = got.lock().expect("lock").iter().find(|(w, _)| w == "boss").cloned();
            async move { g }
        })
        .await;
        assert!(key.starts_with("s-") && key.ends_with("-gas-t2-boss"), "{key}");
        // Tier 1 was not notified again under another key.
        let shift: BTreeSet<String> = got
            .lock()
            .expect("lock")
            .iter()
            .filter(|(w, _)| w == "shift")
            .map(|(_, k)| k.clone())
            .collect();
        assert_eq!(shift.len(), 1, "{shift:?}");
        child.kill().expect("kill");
        child.wait().expect("reap");
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}
