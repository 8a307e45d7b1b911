//! A latched gas alarm survives `kill -9` of the `hazgate run` process: after the restart it is
//! still latched (from the journal, not re-detected: the gas is gone by then), sequence numbers
//! continue, and an operator can reset it, which the audit trail records.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

const SITE: &str = r#"
[[listeners]]
id = "conv"
listen = "127.0.0.1:0"
[[listeners.devices]]
id = "gd1"
unit_id = 1
map_id = "gas-4-20ma"
signals.lel = { constant = 5.0 }
"#;

const OPERATOR: &str = "night-shift-secret";

fn config(sim: std::net::SocketAddr, api_port: u16, journal: &Path) -> String {
    let digest = hex(&Sha256::digest(OPERATOR.as_bytes()));
    format!(
        r#"
[site]
id = "crash"
[gateway]
shutdown_grace = "2s"
[api]
listen = "127.0.0.1:{api_port}"
[[sources]]
kind = "modbus_tcp"
id = "conv"
address = "{sim}"
timeout = "500ms"
[[devices]]
id = "gd1"
area = "a"
source = "conv"
unit_id = 1
poll_interval = "100ms"
[[devices.registers]]
name = "lel"
table = "input"
address = 0
kind = "combustible_gas"
unit = "%LEL"
span = {{ raw = [4000, 20000], eng = [0, 100] }}
[[rules]]
channel = "a.gd1.lel"
h = 25
hh = 50
[alarms]
journal_dir = "{}"
[[alarms.tokens]]
name = "li.wei"
role = "operator"
sha256 = "{digest}"
"#,
        journal.display()
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn spawn(cfg: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start hazgate")
}

/// The alarm `id` from `GET /api/v1/alarms?all=true`, once `pred` holds for it.
async fn alarm_when(port: u16, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    support::eventually(Duration::from_secs(20), what, || {
        let found = support::http_get(port, "/api/v1/alarms?all=true")
            .ok()
            .filter(|(code, _)| *code == 200)
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| {
                v["alarms"]
                    .as_array()?
                    .iter()
                    .find(|a| a["id"] == id)
                    .cloned()
            })
            .filter(|a| pred(a));
        async move { found }
    })
    .await
}

fn history_seqs(port: u16) -> Vec<u64> {
    let (code, body) =
        support::http_get(port, "/api/v1/alarms/history?alarm=a.gd1.lel:HH").expect("history");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latched_alarm_survives_kill_9() {
    tokio::time::timeout(Duration::from_secs(120), scenario())
        .await
        .expect("test timed out");
}

async fn scenario() {
    let (sim, cancel) = support::sim(SITE).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = support::free_port();
    let cfg = dir.path().join("crash.toml");
    std::fs::write(
        &cfg,
        config(sim.listeners[0].1, api_port, &dir.path().join("journal")),
    )
    .expect("write config");
    let log = dir.path().join("run1.log");
    let mut gw = spawn(&cfg, &log);

    // Gas above HH, then gone: the latching alarm stays latched.
    sim.handle.set_value("gd1", "lel", 60.0).expect("set");
    alarm_when(api_port, "a.gd1.lel:HH", "HH raised", |a| {
        a["state"] == "active_unacknowledged"
    })
    .await;
    sim.handle.set_value("gd1", "lel", 5.0).expect("set");
    alarm_when(
        api_port,
        "a.gd1.lel:HH",
        "HH latched after the gas is gone",
        |a| a["state"] == "latched",
    )
    .await;
    let before = history_seqs(api_port);
    assert!(before.len() >= 2, "raised and cleared events: {before:?}");

    // kill -9: no drain, no goodbye.
    gw.kill().expect("SIGKILL");
    gw.wait().expect("reaped");

    let log2 = dir.path().join("run2.log");
    let mut gw = spawn(&cfg, &log2);
    let a = alarm_when(
        api_port,
        "a.gd1.lel:HH",
        "HH latched after the restart",
        |a| a["state"] == "latched",
    )
    .await;
    assert_eq!(a["condition_active"], false, "{a}");
    let after = history_seqs(api_port);
    assert!(
        after.starts_with(&before),
        "history kept across the crash: {before:?} then {after:?}"
    );

    // The operator resets it; the audit trail says who, and sequence numbers went on.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let resp = client
        .post(format!(
            "http://127.0.0.1:{api_port}/api/v1/alarms/a.gd1.lel:HH/reset"
        ))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({ "comment": "detector checked after the leak" }))
        .send()
        .await
        .expect("reset request");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    alarm_when(api_port, "a.gd1.lel:HH", "HH normal after reset", |a| {
        a["state"] == "normal"
    })
    .await;
    let (_, audit) =
        support::http_get(api_port, "/api/v1/alarms/a.gd1.lel:HH/audit").expect("audit");
    assert!(
        audit.contains("\"by\":\"li.wei\"") && audit.contains("detector checked after the leak"),
        "{audit}"
    );
    let last = history_seqs(api_port);
    let max_before = before.iter().max().copied().unwrap_or(0);
    assert!(
        last.iter().any(|&s| s > max_before),
        "new events numbered after the old ones: {last:?}"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &gw.id().to_string()])
        .status();
    let _ = gw.wait();
    cancel.cancel();
}
