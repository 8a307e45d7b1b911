//! Configuration reload against real parts: a real mosquitto, the simulator's Modbus TCP
//! devices behind a counting TCP relay, the alarm journal on disk, the API over a socket and,
//! for `SIGHUP`, the real binary.
//!
//! Under a stream of QoS 1 readings: a changed limit takes effect; an unchanged Modbus source
//! keeps its one TCP connection and an unchanged MQTT source its session; a changed source
//! reconnects; a latched, acknowledged alarm stays so; a removed alarm is journaled as removed
//! (and a restart does not bring its old state back); an invalid configuration or one that
//! changes a restart-only setting is refused with its problems and the old one keeps running;
//! every reading published during the reloads arrives.

#[expect(
    dead_code,
    reason = "shared test support; this binary uses its servers and helpers only"
)]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hazgate::app;
use hazgate::config;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(150);
/// The operator token (its SHA-256 is in the configuration).
const OP: &str = "op-secret";
const OP_SHA256: &str = "1404ccb7e370497229e0478ebfe329b1067563cb646826f6ef685a04d02431de";

/// A TCP relay in front of the simulator that counts the connections it accepted.
async fn counting_relay(to: std::net::SocketAddr) -> (u16, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("relay listens");
    let port = l.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicU64::new(0));
    let n = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = l.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (port, accepted)
}

struct Site {
    modbus_port: u16,
    mqtt_port: u16,
    journal: PathBuf,
}

/// The site's configuration: `gd1_rule` is the `[[rules]]` block of tank.gd1.lel, `gd2_rule`
/// that of tank.gd2.lel (or empty), `m2_keep_alive` a setting of the second MQTT source,
/// `extra` anything appended.
fn config_text(
    s: &Site,
    gd1_rule: &str,
    gd2_rule: &str,
    m2_keep_alive: &str,
    extra: &str,
) -> String {
    let maps = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/maps/gas-lel.toml");
    format!(
        r#"
[site]
id = "north"
[api]
listen = "127.0.0.1:0"
[alarms]
journal_dir = "{journal}"
[[alarms.tokens]]
name = "shift-lead"
role = "operator"
sha256 = "{OP_SHA256}"

[[sources]]
kind = "modbus_tcp"
id = "plc"
address = "127.0.0.1:{modbus_port}"
timeout = "500ms"
[[device_maps]]
file = "{maps}"
[[devices]]
id = "gd1"
area = "tank"
source = "plc"
unit_id = 1
map = "gas-lel"
poll_interval = "100ms"
[[devices]]
id = "gd2"
area = "tank"
source = "plc"
unit_id = 2
map = "gas-lel"
poll_interval = "100ms"

[[sources]]
kind = "mqtt"
id = "m"
address = "127.0.0.1:{mqtt_port}"
backoff_max = "500ms"
[[sources.topics]]
filter = "site/{{site}}/gas/{{device}}"
channel = "{{site}}.{{device}}.lel"
value = "lel"
[[sources.channels]]
id = "north.gd9.lel"
kind = "combustible_gas"
unit = "%LEL"
max_age = "30s"

[[sources]]
kind = "mqtt"
id = "m2"
address = "127.0.0.1:{mqtt_port}"
backoff_max = "500ms"
keep_alive = "{m2_keep_alive}"
[[sources.topics]]
filter = "plant/{{device}}"
channel = "plant.{{device}}.lel"
value = "lel"
[[sources.channels]]
id = "plant.gd5.lel"
kind = "combustible_gas"
unit = "%LEL"
max_age = "30s"
{extra}
{gd1_rule}
{gd2_rule}
"#,
        journal = s.journal.display(),
        modbus_port = s.modbus_port,
        mqtt_port = s.mqtt_port,
        maps = maps.display(),
    )
}

const GD1_V1: &str = "[[rules]]\nchannel = \"tank.gd1.lel\"\nh = 25\nhh = 50\n";
const GD1_V2: &str = "[[rules]]\nchannel = \"tank.gd1.lel\"\nh = 20\nhh = 28\n";
const GD2: &str = "[[rules]]\nchannel = \"tank.gd2.lel\"\nh = 25\nhh = 50\n";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

async fn reload(api: std::net::SocketAddr, token: Option<&str>) -> (u16, Value) {
    let mut r = client().post(format!("http://{api}/api/v1/config/reload"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.expect("reload request");
    let code = resp.status().as_u16();
    (code, resp.json().await.expect("JSON answer"))
}

async fn get(api: std::net::SocketAddr, path: &str) -> Value {
    client()
        .get(format!("http://{api}{path}"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON")
}

async fn alarm(api: std::net::SocketAddr, id: &str) -> Value {
    get(api, &format!("/api/v1/alarms/{id}")).await
}

async fn wait_state(api: std::net::SocketAddr, id: &str, states: &[&str]) -> Value {
    let what = format!("{id} in {states:?}");
    support::eventually(Duration::from_secs(20), &what, || async move {
        let a = alarm(api, id).await;
        states.iter().any(|s| a["state"] == *s).then_some(a)
    })
    .await
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Publishes QoS 1 readings of north.gd9.lel until `stop`; returns how many the broker
/// acknowledged.
fn start_load(port: u16, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut o = MqttOptions::new("reload-load", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 64);
        let pump = tokio::spawn(async move {
            let mut acked = 0u64;
            loop {
                match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                    Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Err(_) => {
                        return acked;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("load publisher connection: {e}"),
                }
            }
        });
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let v = 1.0 + (i % 10) as f64 / 10.0;
            client
                .publish(
                    "site/north/gas/GD9",
                    QoS::AtLeastOnce,
                    false,
                    format!(r#"{{"lel": {v}}}"#),
                )
                .await
                .expect("queue publish");
            i += 1;
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        // Let the last acknowledgements arrive, then disconnect.
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.disconnect().await.expect("disconnect");
        let acked = pump.await.expect("pump");
        assert_eq!(acked, i, "every QoS 1 publish acknowledged by the broker");
        acked
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_applies_changes_and_keeps_connections_and_alarm_state() {
    tokio::time::timeout(LIMIT, async {
        let broker = support::mosquitto();
        let (sim, sim_cancel) = support::sim(
            "[[listeners]]\nid = \"tcp\"\n[[listeners.devices]]\nid = \"gd1\"\nunit_id = 1\nmap_id = \"gas-lel\"\nsignals.lel = { constant = 5.0 }\n[[listeners.devices]]\nid = \"gd2\"\nunit_id = 2\nmap_id = \"gas-lel\"\nsignals.lel = { constant = 5.0 }\n",
        )
        .await;
        let (modbus_port, accepted) = counting_relay(sim.addr("tcp").expect("tcp")).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let site = Site {
            modbus_port,
            mqtt_port: broker.port,
            journal: dir.path().join("journal"),
        };
        let path = dir.path().join("hazgate.toml");
        let write = |text: String| std::fs::write(&path, text).expect("write config");
        write(config_text(&site, GD1_V1, GD2, "30s", ""));

        let load = |p: &Path| config::load(p).unwrap_or_else(|e| panic!("{e}")).0;
        let running = app::start_with(load(&path), Some(path.clone()))
            .await
            .expect("gateway starts");
        let api = running.api_addr;
        let st = running.state.clone();
        support::eventually(Duration::from_secs(20), "every source connected", || {
            let st = st.clone();
            async move { st.health.not_ready().is_empty().then_some(()) }
        })
        .await;

        // tank.gd1.lel: raised, acknowledged, back under the limit: latched (gas latches).
        sim.handle.set_value("gd1", "lel", 30.0).expect("set");
        wait_state(api, "tank.gd1.lel:H", &["active_unacknowledged"]).await;
        let ack = client()
            .post(format!("http://{api}/api/v1/alarms/tank.gd1.lel:H/ack"))
            .bearer_auth(OP)
            .json(&serde_json::json!({"comment": "seen"}))
            .send()
            .await
            .expect("ack");
        assert_eq!(ack.status(), 200);
        sim.handle.set_value("gd1", "lel", 5.0).expect("set");
        let before = wait_state(api, "tank.gd1.lel:H", &["latched"]).await;
        // tank.gd2.lel: active when its rule is removed.
        sim.handle.set_value("gd2", "lel", 30.0).expect("set");
        wait_state(api, "tank.gd2.lel:H", &["active_unacknowledged"]).await;

        let stop = Arc::new(AtomicBool::new(false));
        let loader = start_load(broker.port, stop.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let connections = |m: &str, src: &str| {
            metric(
                m,
                &format!(r#"hazgate_mqtt_connections_total{{source="{src}",result="connected"}}"#),
            )
        };
        let m0 = running.metrics.encode();
        assert_eq!((connections(&m0, "m"), connections(&m0, "m2")), (1, 1), "{m0}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // Only a viewer or no token: refused before anything is read.
        let (code, _) = reload(api, None).await;
        assert_eq!(code, 401);

        // v2: tank.gd1.lel's limits change, tank.gd2.lel's rule goes, m2 changes (and gets a
        // channel that never reports).
        write(config_text(
            &site,
            GD1_V2,
            "",
            "20s",
            "[[sources.channels]]\nid = \"plant.gd6.lel\"\nkind = \"combustible_gas\"\nunit = \"%LEL\"\nmax_age = \"2s\"\n",
        ));
        let (code, report) = reload(api, Some(OP)).await;
        assert_eq!(code, 200, "{report:#}");
        assert_eq!(report["applied"], true);
        assert_eq!(report["by"], "shift-lead");
        let ids = |k: &str| -> Vec<String> {
            report["changes"][k]
                .as_array()
                .unwrap_or_else(|| panic!("{k} in {report:#}"))
                .iter()
                .map(|v| v.as_str().expect("id").to_owned())
                .collect()
        };
        assert_eq!(ids("sources_kept"), ["m", "plc"]);
        assert_eq!(ids("sources_restarted"), ["m2"]);
        assert_eq!(ids("channels_added"), ["plant.gd6.lel"]);
        assert_eq!(ids("alarms_removed"), ["tank.gd2.lel:H", "tank.gd2.lel:HH"]);
        assert_eq!(ids("alarms_changed"), ["tank.gd1.lel:H", "tank.gd1.lel:HH"]);

        // The latched, acknowledged alarm is as it was.
        let after = alarm(api, "tank.gd1.lel:H").await;
        assert_eq!(after["state"], "latched", "{after:#}");
        assert_eq!(after["unacknowledged"], false, "{after:#}");
        assert_eq!(before["unacknowledged"], false, "{before:#}");
        assert_eq!(after["raised_at"], before["raised_at"], "{after:#}");
        // The new limits apply from the next reading: 29 %LEL is now HH (28), not yet under v1.
        sim.handle.set_value("gd1", "lel", 29.0).expect("set");
        let hh = wait_state(api, "tank.gd1.lel:HH", &["active_unacknowledged"]).await;
        assert_eq!(hh["limit"], 28.0, "{hh:#}");
        // The removed alarms are gone from the board and journaled as removed, by the token.
        let gone = client()
            .get(format!("http://{api}/api/v1/alarms/tank.gd2.lel:H"))
            .send()
            .await
            .expect("get");
        assert_eq!(gone.status(), 404);
        let history = get(api, "/api/v1/alarms/history?transition=removed").await;
        let removed: Vec<&Value> = history["events"]
            .as_array()
            .unwrap_or_else(|| panic!("{history:#}"))
            .iter()
            .filter(|e| e["alarm"] == "tank.gd2.lel:H")
            .collect();
        assert_eq!(removed.len(), 1, "{history:#}");
        assert_eq!(removed[0]["state"], "active_unacknowledged");
        assert_eq!(removed[0]["by"], "shift-lead");
        let changed = get(api, "/api/v1/alarms/history?transition=config_changed").await;
        let changed = changed["events"].as_array().expect("events").clone();
        assert_eq!(changed.len(), 1, "{changed:?}");
        let msg = changed[0]["message"].as_str().expect("message");
        assert!(
            msg.contains("shift-lead") && msg.contains("2 alarms removed") && msg.contains("移除报警 2 个"),
            "{msg}"
        );
        // The new channel that never reports goes stale after its max_age.
        support::eventually(Duration::from_secs(10), "plant.gd6.lel stale", || {
            let st = st.clone();
            async move {
                st.channels()
                    .into_iter()
                    .find(|c| c.id.as_str() == "plant.gd6.lel" && c.quality == "bad")
            }
        })
        .await;

        // An invalid configuration: refused with its problems; v2 keeps running.
        write(config_text(
            &site,
            GD1_V1,
            "[[rules]]\nchannel = \"tank.nope.lel\"\nh = 1\n",
            "20s",
            "",
        ));
        let (code, refused) = reload(api, Some(OP)).await;
        assert_eq!(code, 422, "{refused:#}");
        assert_eq!(refused["applied"], false);
        let problems = refused["problems"].to_string();
        assert!(problems.contains("rules[1]") && problems.contains("tank.nope.lel"), "{refused:#}");
        // A restart-only setting: refused, naming it.
        write(config_text(&site, GD1_V2, "", "20s", "").replace(
            "[api]\nlisten = \"127.0.0.1:0\"",
            "[api]\nlisten = \"127.0.0.1:0\"\nrequest_timeout = \"7s\"",
        ));
        let (code, refused) = reload(api, Some(OP)).await;
        assert_eq!(code, 422, "{refused:#}");
        assert_eq!(refused["problems"][0]["path"], "api", "{refused:#}");
        // Still v2: the HH limit is 28, the removed alarm is still gone, no new change event.
        assert_eq!(alarm(api, "tank.gd1.lel:HH").await["limit"], 28.0);
        let changed = get(api, "/api/v1/alarms/history?transition=config_changed").await;
        assert_eq!(changed["events"].as_array().expect("events").len(), 1);

        // The same configuration again: applied, nothing changes, nothing restarts.
        write(config_text(
            &site,
            GD1_V2,
            "",
            "20s",
            "[[sources.channels]]\nid = \"plant.gd6.lel\"\nkind = \"combustible_gas\"\nunit = \"%LEL\"\nmax_age = \"2s\"\n",
        ));
        let (code, same) = reload(api, Some(OP)).await;
        assert_eq!(code, 200, "{same:#}");
        assert_eq!(same["changes"]["sources_kept"].as_array().map(Vec::len), Some(3));
        assert!(same["summary"].as_str().expect("summary").contains("no change"));

        stop.store(true, Ordering::SeqCst);
        let published = loader.await.expect("load");
        assert!(published > 200, "load: {published} messages");
        // Every reading published during the reloads arrived; m and plc kept their
        // connections, m2 reconnected once.
        let m = support::eventually(Duration::from_secs(10), "every reading counted", || {
            let metrics = running.metrics.clone();
            async move {
                let m = metrics.encode();
                (metric(&m, r#"hazgate_mqtt_messages_total{source="m"}"#) >= published).then_some(m)
            }
        })
        .await;
        assert_eq!(connections(&m, "m"), 1, "{m}");
        assert_eq!(connections(&m, "m2"), 2, "{m}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one Modbus TCP connection");

        // A restart with the first configuration (the removed rule back): the removed alarm's
        // old state is not restored from the journal, the latched one is.
        sim.handle.set_value("gd2", "lel", 5.0).expect("set");
        sim.handle.set_value("gd1", "lel", 5.0).expect("set");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let gd1 = alarm(api, "tank.gd1.lel:H").await["state"].clone();
        assert_ne!(gd1, "normal", "a latching alarm stays until reset");
        running.stop().await.expect("stops");
        write(config_text(&site, GD1_V1, GD2, "30s", ""));
        let running = app::start_with(load(&path), Some(path.clone()))
            .await
            .expect("gateway starts again");
        let api = running.api_addr;
        assert_eq!(alarm(api, "tank.gd2.lel:H").await["state"], "normal");
        assert_eq!(alarm(api, "tank.gd1.lel:H").await["state"], gd1);
        running.stop().await.expect("stops");
        sim_cancel.cancel();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary_and_a_broken_file_leaves_it_running() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hazgate.toml");
        let port = support::free_port();
        let base = format!(
            "[site]\nid = \"s\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[[sources]]\nkind = \"mqtt\"\nid = \"m\"\naddress = \"127.0.0.1:{}\"\nbackoff_max = \"500ms\"\n[[sources.topics]]\nfilter = \"g/{{device}}\"\nchannel = \"a.{{device}}.lel\"\nvalue = \"lel\"\n[[sources.channels]]\nid = \"a.d1.lel\"\nkind = \"combustible_gas\"\nunit = \"%LEL\"\nmax_age = \"30s\"\n",
            support::free_port()
        );
        std::fs::write(&path, format!("{base}[[rules]]\nchannel = \"a.d1.lel\"\nh = 25\n"))
            .expect("write");
        let log = dir.path().join("gateway.log");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hazgate"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("gateway binary");
        let pid = child.id().to_string();
        let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let limit = || async move {
            get(api, "/api/v1/alarms/a.d1.lel:H").await["limit"].as_f64()
        };
        support::eventually(Duration::from_secs(20), "the API", || async move {
            client()
                .get(format!("http://{api}/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        })
        .await;
        assert_eq!(limit().await, Some(25.0));
        let hup = || {
            let ok = std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .expect("kill");
            assert!(ok.success());
        };

        std::fs::write(&path, format!("{base}[[rules]]\nchannel = \"a.d1.lel\"\nh = 15\n"))
            .expect("write");
        hup();
        support::eventually(Duration::from_secs(20), "the new limit", || async move {
            (limit().await == Some(15.0)).then_some(())
        })
        .await;

        // A broken file: the gateway keeps running with the last good configuration and says
        // why at error level.
        std::fs::write(&path, format!("{base}[[rules]]\nchannel = \"a.d1.lel\"\nh = \"high\"\n"))
            .expect("write");
        hup();
        let log2 = log.clone();
        support::eventually(Duration::from_secs(20), "the refusal in the log", || {
            let log = log2.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.contains("configuration reload refused").then_some(text)
            }
        })
        .await;
        assert!(child.try_wait().expect("wait").is_none(), "still running");
        assert_eq!(limit().await, Some(15.0));
        let history = get(api, "/api/v1/alarms/history?transition=config_changed").await;
        assert_eq!(history["events"][0]["by"], "SIGHUP", "{history:#}");

        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert!(status.success(), "{status:?}");
    })
    .await
    .expect("test timed out");
}
