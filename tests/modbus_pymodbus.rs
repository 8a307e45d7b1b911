//! Decoding checked against an independent Modbus implementation: pymodbus (PyPI) serves
//! registers whose values are encoded by Python's struct module (tests/pymodbus/server.py), in
//! every type and byte/word order, plus coils, discrete inputs and an unmapped address. The real
//! pollers read them over Modbus TCP and over RTU framing on TCP (pymodbus's RTU framer).
//!
//! Needs python3 with pymodbus (`scripts/test` installs it); without it the test fails and says
//! how to install it.

#[allow(dead_code, reason = "each test binary uses part of the helpers")]
mod modbus_common;
#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hazgate::model::{BadReason, Reading};
use modbus_common::{Pollers, resolve};

struct PyServer(Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(name, table, type, order, value)` of every point served.
fn points() -> Vec<(String, &'static str, &'static str, &'static str, f64)> {
    let values: [(&str, f64); 8] = [
        ("u16", 48879.0),
        ("i16", -12345.0),
        ("u32", 3_735_928_559.0),
        ("i32", -123_456_789.0),
        ("u64", 1_234_567_890_123_456_789u64 as f64),
        ("i64", -987_654_321_012_345.0),
        ("f32", f64::from(-273.15f32)),
        ("f64", std::f64::consts::PI),
    ];
    let mut out = Vec::new();
    for table in ["holding", "input"] {
        for (t, v) in values {
            for o in ["ABCD", "DCBA", "BADC", "CDAB"] {
                out.push((
                    format!("{}_{t}_{}", &table[..1], o.to_lowercase()),
                    table,
                    t,
                    o,
                    v,
                ));
            }
        }
    }
    out
}

fn words(t: &str) -> u16 {
    match t {
        "u16" | "i16" => 1,
        "u32" | "i32" | "f32" => 2,
        _ => 4,
    }
}

/// Starts pymodbus on a free port; returns it once it accepts connections.
async fn start_pymodbus(framer: &str) -> (PyServer, u16) {
    let mut spec = Vec::new();
    let mut next: HashMap<&str, u16> = HashMap::new();
    for (_, table, t, o, v) in points() {
        let a = next.entry(table).or_insert(0);
        spec.push(serde_json::json!({"table": table, "address": *a, "type": t, "order": o,
            "value": if t.starts_with('f') { serde_json::json!(v) } else { serde_json::json!(v as i128) }}));
        *a += words(t);
    }
    // u64/i64 values are sent as exact integers.
    for s in &mut spec {
        if s["type"] == "u64" {
            s["value"] = serde_json::json!(1_234_567_890_123_456_789u64);
        }
    }
    for (a, on) in [(0, true), (1, false), (2, true), (17, true)] {
        spec.push(serde_json::json!({"table": "coil", "address": a, "type": "bool", "value": on}));
        spec.push(
            serde_json::json!({"table": "discrete", "address": a, "type": "bool", "value": !on}),
        );
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pymodbus/server.py");
    let probe = Command::new("python3")
        .args(["-c", "import pymodbus"])
        .status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "python3 with pymodbus is required: python3 -m pip install 'pymodbus>=3.6,<4' (scripts/test does this)"
    );
    let port = support::free_port();
    let child = Command::new("python3")
        .args([
            script,
            &port.to_string(),
            &serde_json::Value::Array(spec).to_string(),
            framer,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 starts");
    let server = PyServer(child);
    support::eventually(Duration::from_secs(20), "pymodbus to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    (server, port)
}

fn gateway(kind: &str, port: u16) -> hazgate::config::Resolved {
    let mut text = format!(
        "[site]\nid = \"py\"\n[[sources]]\nkind = \"{kind}\"\nid = \"py\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"1s\"\n[[devices]]\nid = \"dev\"\narea = \"a\"\nsource = \"py\"\npoll_interval = \"300ms\"\n"
    );
    let mut next: HashMap<&str, u16> = HashMap::new();
    for (name, table, t, o, _) in points() {
        let a = next.entry(table).or_insert(0);
        text += &format!(
            "[[devices.registers]]\nname = \"{name}\"\ntable = \"{table}\"\naddress = {a}\ntype = \"{t}\"\norder = \"{o}\"\n"
        );
        *a += words(t);
    }
    for a in [0, 1, 2, 17] {
        text += &format!(
            "[[devices.registers]]\nname = \"coil{a}\"\ntable = \"coil\"\naddress = {a}\n"
        );
        text += &format!(
            "[[devices.registers]]\nname = \"di{a}\"\ntable = \"discrete\"\naddress = {a}\n"
        );
    }
    // Beyond pymodbus's 300-register block: an exception answer.
    text += "[[devices.registers]]\nname = \"unmapped\"\ntable = \"holding\"\naddress = 400\n";
    resolve(&text)
}

async fn check(kind: &str, framer: &str) {
    let (_py, port) = start_pymodbus(framer).await;
    let mut p = Pollers::start(&gateway(kind, port));
    p.until(Duration::from_secs(20), "a.dev.unmapped", |r| {
        matches!(r, Reading::Bad(_))
    })
    .await;
    let window = p.collect(Duration::from_millis(1500)).await;
    let last = |c: &str| -> Reading {
        window
            .get(&format!("a.dev.{c}"))
            .and_then(|v| v.last())
            .map(|s| s.reading.clone())
            .unwrap_or_else(|| panic!("no sample of {c}"))
    };
    let mut wrong = Vec::new();
    for (name, _, _, _, v) in points() {
        let r = last(&name);
        if r != Reading::Good(v) {
            wrong.push(format!("{name}: {r:?}, expected {v}"));
        }
    }
    for (a, on) in [(0, true), (1, false), (2, true), (17, true)] {
        let want = Reading::Good(if on { 1.0 } else { 0.0 });
        if last(&format!("coil{a}")) != want {
            wrong.push(format!("coil{a}: {:?}", last(&format!("coil{a}"))));
        }
        let want = Reading::Good(if on { 0.0 } else { 1.0 });
        if last(&format!("di{a}")) != want {
            wrong.push(format!("di{a}: {:?}", last(&format!("di{a}"))));
        }
    }
    assert!(
        wrong.is_empty(),
        "{kind}: decoded differently from pymodbus:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        last("unmapped"),
        Reading::Bad(BadReason::Exception { code: 2 }),
        "illegal data address from pymodbus"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_order_from_pymodbus_over_tcp() {
    tokio::time::timeout(Duration::from_secs(90), check("modbus_tcp", "socket"))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_order_from_pymodbus_over_rtu_framing() {
    tokio::time::timeout(Duration::from_secs(90), check("modbus_rtu_over_tcp", "rtu"))
        .await
        .expect("test timed out");
}
