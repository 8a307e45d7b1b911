//! The first real path: simulator Modbus TCP device → hazgate polls it → samples → line protocol →
//! a real influxd (v1 /write) → read back with InfluxQL. Also: influxd stopped mid-run does not
//! stall the gateway, and a broken 4–20 mA loop is written as a fault, never as a value.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hazgate::config;
use tokio_util::sync::CancellationToken;

const SITE: &str = r#"
seed = 7
[[listeners]]
id = "conv"
listen = "127.0.0.1:0"
[[listeners.devices]]
id = "gd101"
unit_id = 1
map_id = "gas-4-20ma"
signals.lel = { constant = 12.5 }
[[listeners.devices]]
id = "t101"
unit_id = 3
map_id = "tank-radar"
signals.level = { constant = 7.25 }
signals.temperature = { constant = 25.0 }
signals.pressure = { constant = 101.3 }
"#;

fn gateway_config(sim: std::net::SocketAddr, influx: &str) -> config::Resolved {
    let maps = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let text = format!(
        r#"
[site]
id = "e2e"
[gateway]
shutdown_grace = "3s"
[api]
listen = "127.0.0.1:0"
[[sources]]
kind = "modbus_tcp"
id = "conv"
address = "{sim}"
timeout = "500ms"
[[device_maps]]
file = "maps/gas-4-20ma.toml"
[[device_maps]]
file = "maps/tank-radar.toml"
[[devices]]
id = "gd101"
area = "tankfarm"
source = "conv"
unit_id = 1
map = "gas-4-20ma"
poll_interval = "200ms"
[[devices]]
id = "t101"
area = "tankfarm"
source = "conv"
unit_id = 3
map = "tank-radar"
poll_interval = "200ms"
[[rules]]
channel = "tankfarm.gd101.lel"
h = 25
hh = 50
[[outputs]]
kind = "influxdb_v1"
id = "site"
url = "{influx}"
database = "e2e"
flush_interval = "200ms"
timeout = "2s"
"#
    );
    let cfg = config::parse(&text, &maps.join("e2e.toml")).expect("parses");
    config::validate(&cfg, &maps).expect("valid").0
}

fn rows(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["results"][0]["series"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_to_influxdb_and_back() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE e2e").await;
        let (sim, cancel) = support::sim(SITE).await;
        let sim_addr = sim.listeners[0].1;
        let started = SystemTime::now();
        let gw = hazgate::app::start(gateway_config(sim_addr, &influx.url())).await.expect("gateway starts");

        // Values, tags and timestamps read back with InfluxQL.
        let q = "SELECT value, quality, site, area, device, kind, unit FROM reading WHERE channel = 'tankfarm.t101.level' ORDER BY time DESC LIMIT 3";
        let r = support::eventually(Duration::from_secs(30), "tank level points in influxd", || async {
            let r = rows(&support::influxql(&influx, "e2e", q).await);
            (!r.is_empty()).then_some(r)
        })
        .await;
        let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as i64;
        let start_ns = started.duration_since(UNIX_EPOCH).expect("clock").as_nanos() as i64;
        for row in &r {
            let ts = row[0].as_i64().expect("ns timestamp");
            assert!(ts >= start_ns && ts <= now_ns, "timestamp {ts} outside [{start_ns}, {now_ns}]");
            assert_eq!(row[1].as_f64(), Some(7.25), "f32 CDAB level decoded: {row}");
            assert_eq!(row[2], "good");
            assert_eq!(row[3], "e2e");
            assert_eq!(row[4], "tankfarm");
            assert_eq!(row[5], "t101");
            assert_eq!(row[6], "tank_level");
            assert_eq!(row[7], "m");
        }
        let gas = support::eventually(Duration::from_secs(10), "gas points", || async {
            let r = rows(&support::influxql(&influx, "e2e", "SELECT last(value) FROM reading WHERE channel = 'tankfarm.gd101.lel'").await);
            r.first().and_then(|x| x[1].as_f64())
        })
        .await;
        assert_eq!(gas, 12.5, "4-20 mA span decoded");
        let temp = rows(&support::influxql(&influx, "e2e", "SELECT last(value) FROM reading WHERE channel = 'tankfarm.t101.temperature'").await);
        assert_eq!(temp[0][1].as_f64(), Some(25.0));

        // A broken loop (1 mA) is a fault point with no value, and a fault alarm event.
        sim.handle.set_raw("gd101", "lel", 1000.0).expect("set raw");
        support::eventually(Duration::from_secs(15), "out_of_range point and fault event", || async {
            let bad = rows(&support::influxql(&influx, "e2e", "SELECT value, reason FROM reading WHERE channel = 'tankfarm.gd101.lel' AND quality = 'bad'").await);
            let ev = rows(&support::influxql(&influx, "e2e", "SELECT alarm FROM alarm_event WHERE transition = 'fault' AND channel = 'tankfarm.gd101.lel'").await);
            (bad.iter().any(|b| b[1].is_null() && b[2] == "out_of_range") && !ev.is_empty()).then_some(())
        })
        .await;
        // And a gas level above H raises an alarm event.
        sim.handle.set_value("gd101", "lel", 30.0).expect("set value");
        support::eventually(Duration::from_secs(15), "H raised event", || async {
            let ev = rows(&support::influxql(&influx, "e2e", "SELECT value, \"limit\" FROM alarm_event WHERE transition = 'raised' AND condition = 'H'").await);
            ev.iter().any(|e| e[1].as_f64() == Some(30.0) && e[2].as_f64() == Some(25.0)).then_some(())
        })
        .await;

        // influxd stops: the gateway keeps polling, reports the failure, and retries.
        influx.kill();
        let api = format!("http://{}", gw.api_addr);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        let reasons = support::eventually(Duration::from_secs(20), "/readyz to report the output", || {
            let client = client.clone();
            let url = format!("{api}/readyz");
            async move {
                let r = client.get(&url).send().await.ok()?;
                if r.status() != 503 {
                    return None;
                }
                let t = r.text().await.ok()?;
                t.contains("output site").then_some(t)
            }
        })
        .await;
        assert!(reasons.contains("output site"), "{reasons}");
        let before = gw.state.channels().iter().find(|c| c.id.as_str() == "tankfarm.t101.level").and_then(|c| c.ts).expect("has ts");
        support::eventually(Duration::from_secs(10), "channels still updating while influxd is down", || {
            let st = gw.state.clone();
            async move {
                let ts = st.channels().iter().find(|c| c.id.as_str() == "tankfarm.t101.level").and_then(|c| c.ts)?;
                (ts > before).then_some(())
            }
        })
        .await;
        let healthz = client.get(format!("{api}/healthz")).send().await.expect("healthz answers");
        assert_eq!(healthz.status(), 200);
        // It comes back: points written after the restart arrive.
        influx.restart();
        let restart_ns = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as i64;
        support::eventually(Duration::from_secs(30), "points after influxd restart", || async {
            let q = format!("SELECT count(value) FROM reading WHERE time > {restart_ns}");
            let r = rows(&support::influxql(&influx, "e2e", &q).await);
            r.first().and_then(|x| x[1].as_i64()).filter(|&n| n > 0)
        })
        .await;

        gw.stop().await.expect("clean stop");
        cancel.cancel();
        sim.wait().await.expect("simulator stops");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_config_runs_against_the_demo_site() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let cancel = CancellationToken::new();
        let mut spec = hazgate_sim::demo_spec();
        spec.listeners[0].listen = "127.0.0.1:0".into();
        let sim = hazgate_sim::start(spec, Path::new("."), cancel.clone())
            .await
            .expect("simulator");
        let opts = hazgate::demo::DemoOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            influx_url: None,
            influx_db: "hazgate".into(),
            operator_token: None,
        };
        let cfg = hazgate::demo::demo_config(sim.listeners[0].1, &opts).expect("demo config");
        // Channels fed by the simulated data units over MQTT are not published here (only the
        // Modbus side of the simulator runs); tests/demo_first_alarm.rs covers them.
        let mqtt: Vec<String> = cfg
            .mqtt()
            .flat_map(|m| m.cfg.channels.iter().map(|c| c.id.clone()))
            .collect();
        assert!(!mqtt.is_empty(), "the demo has MQTT channels");
        let gw = hazgate::app::start(cfg).await.expect("starts");
        // Every Modbus channel of the demo gets a good value: maps, unit ids and orders agree
        // with the simulator.
        support::eventually(
            Duration::from_secs(20),
            "every demo Modbus channel good",
            || {
                let st = gw.state.clone();
                let mqtt = mqtt.clone();
                async move {
                    let modbus: Vec<_> = st
                        .channels()
                        .into_iter()
                        .filter(|c| !mqtt.iter().any(|m| m == c.id.as_str()))
                        .collect();
                    (modbus.len() > 10 && modbus.iter().all(|c| c.quality == "good")).then_some(())
                }
            },
        )
        .await;
        let chans = gw.state.channels();
        let energy = chans
            .iter()
            .find(|c| c.id.as_str() == "power.pm1.energy")
            .and_then(|c| c.value)
            .expect("energy");
        assert!(
            energy >= 10_000.0,
            "energy counter starts at 10000 kWh, got {energy}"
        );
        let level = chans
            .iter()
            .find(|c| c.id.as_str() == "tankfarm.t101.level")
            .and_then(|c| c.value)
            .expect("level");
        assert!(
            (5.5..=11.0).contains(&level),
            "tank level plausible: {level}"
        );
        // Ready: every source connected (the MQTT source to the embedded broker too).
        support::eventually(Duration::from_secs(20), "the gateway ready", || {
            let st = gw.state.clone();
            async move { st.health.not_ready().is_empty().then_some(()) }
        })
        .await;
        gw.stop().await.expect("clean stop");
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}
