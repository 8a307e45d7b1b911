//! The standalone `hazgate-sim` binary: `--list-scenarios`, and `--scenario gas-leak
//! --modbus-listen 127.0.0.1:0 --mqtt-url …` against a mosquitto started on a free port: a
//! register read over Modbus TCP follows the scenario (the leak), and the three data units'
//! messages arrive in their payload styles. Fails (does not skip) when mosquitto is missing.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_modbus::prelude::*;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_hazgate-sim");

#[test]
fn lists_the_shipped_scenarios() {
    let out = Command::new(BIN).arg("--list-scenarios").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for (name, _) in hazgate_sim::SCENARIO_FILES {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{text}"
        );
    }
}

fn mosquitto(port: u16, dir: &std::path::Path) -> Kill {
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("mosquitto is not installed: apt-get install -y mosquitto (scripts/test does)");
    let conf = dir.join("m.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .unwrap();
    Kill(
        Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_over_modbus_and_mqtt() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile_dir();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let _broker = mosquitto(port, &dir);
        // Subscribe first (retrying until mosquitto is up).
        let mut o = MqttOptions::new("cli-test", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 100);
        client.subscribe("demo/#", QoS::AtMostOnce).await.unwrap();
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => break,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }

        let mut child = Command::new(BIN)
            .args([
                "--scenario",
                "gas-leak",
                "--speed",
                "10",
                "--modbus-listen",
                "127.0.0.1:0",
                "--mqtt-url",
                &format!("mqtt://127.0.0.1:{port}"),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let _sim = Kill(child);
        let mut lines = BufReader::new(stdout).lines();
        let addr: SocketAddr = loop {
            let line = lines.next().expect("listener line").unwrap();
            if let Some(rest) = line.strip_prefix("listener rs485-1 modbus tcp ") {
                break rest.split(' ').next().unwrap().parse().unwrap();
            }
        };

        // Modbus: gd101 (unit 1, µA of the 4-20 mA loop) starts at background level and the
        // scenario's leak takes it past 25 %LEL (8000 µA) within ~2.6 s at speed 10.
        let mut ctx = tcp::connect_slave(addr, Slave(1)).await.unwrap();
        let first = ctx.read_input_registers(0, 1).await.unwrap().unwrap()[0];
        assert!((4000..5000).contains(&first), "background reading {first}");
        let t = Instant::now();
        loop {
            let v = ctx.read_input_registers(0, 1).await.unwrap().unwrap()[0];
            if v >= 8000 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(15), "no leak seen: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // MQTT: one message of each style.
        let mut json = None;
        let mut object = None;
        let mut number = None;
        while json.is_none() || object.is_none() || number.is_none() {
            if let Event::Incoming(Packet::Publish(p)) = el.poll().await.unwrap() {
                let body = String::from_utf8(p.payload.to_vec()).unwrap();
                match p.topic.as_str() {
                    "demo/dtu1/workshop/gt201/h2s" => json = Some(body),
                    "demo/dtu2/dustline/wc1" => object = Some(body),
                    "demo/dtu3/warehouse/gd301/lel" => number = Some(body),
                    _ => {}
                }
            }
        }
        let j: serde_json::Value = serde_json::from_str(&json.unwrap()).unwrap();
        assert_eq!(j["status"], "ok");
        assert!(
            j["value"].as_f64().is_some() && j["ts"].as_u64().is_some(),
            "{j}"
        );
        let o: serde_json::Value = serde_json::from_str(&object.unwrap()).unwrap();
        assert!(
            o["level"].as_f64().is_some() && o["flow"].as_f64().is_some(),
            "{o}"
        );
        assert!(number.unwrap().parse::<f64>().is_ok());
    })
    .await
    .expect("test timed out");
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hazgate-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
