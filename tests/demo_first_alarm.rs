//! `hazgate demo` tried as a new user would: the binary is started with a free API port, the URL
//! is read from what it prints, and the public API is polled. Live values (Modbus and MQTT
//! channels) must appear within seconds and the first alarm within 60 s of starting the command.
//! The measured times are printed.

#[expect(
    dead_code,
    reason = "shared test support; this binary uses only http_get"
)]
mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the demo if the test fails half-way.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_shows_live_values_at_once_and_the_first_alarm_within_a_minute() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("HAZGATE_LOG_LEVEL", "warn")
        .env_remove("HAZGATE_INFLUX_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("hazgate demo starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut demo = Demo(child);
    // The status page URL, as printed.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo| {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo prints its status page URL within 30 s");
        if let Some(rest) = line.trim().strip_prefix("status page:") {
            break rest.trim().to_owned();
        }
    };
    let port: u16 = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the port of {url}"));
    let printed = started.elapsed();

    let (status, page) = support::http_get(port, "/").expect("status page");
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!DOCTYPE"),
        "{page}"
    );

    let mut live_at = None;
    let mut first_alarm = None;
    let deadline = started + Duration::from_secs(60);
    while Instant::now() < deadline && (live_at.is_none() || first_alarm.is_none()) {
        if let Some(status) = demo.0.try_wait().expect("wait") {
            panic!("the demo exited early: {status}");
        }
        let (code, body) = support::http_get(port, "/api/v1/channels").expect("channels");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let channels = v["channels"].as_array().cloned().unwrap_or_default();
        let good: Vec<&str> = channels
            .iter()
            .filter(|c| c["quality"] == "good")
            .filter_map(|c| c["id"].as_str())
            .collect();
        // Live: Modbus (tank farm, dust line, power) and MQTT (workshop, warehouse) channels.
        if live_at.is_none()
            && [
                "tankfarm.",
                "dustline.",
                "power.",
                "workshop.",
                "warehouse.",
            ]
            .iter()
            .all(|area| good.iter().any(|id| id.starts_with(area)))
        {
            live_at = Some(started.elapsed());
        }
        if first_alarm.is_none() {
            if let Some(c) = channels
                .iter()
                .find(|c| c["alarms"].as_array().is_some_and(|a| !a.is_empty()))
            {
                first_alarm = Some((started.elapsed(), format!("{} {}", c["id"], c["alarms"])));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("status page URL printed after {printed:.1?}");
    let live_at = live_at.expect("live values from every area within 60 s");
    println!("live values from every area (Modbus and MQTT) after {live_at:.1?}");
    let (alarm_at, which) = first_alarm.expect("an alarm within 60 s of starting the demo");
    println!("first alarm after {alarm_at:.1?}: {which}");
    assert!(
        live_at < Duration::from_secs(15),
        "live values took {live_at:?}"
    );
    // Graceful stop on SIGTERM.
    let pid = demo.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if let Some(status) = demo.0.try_wait().expect("wait") {
            assert!(status.success(), "demo exit status {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the demo did not stop within 15 s of SIGTERM");
}

/// A demo whose standard output is closed (a pager quit, a pipe whose reader ended) keeps
/// running: the start-up banner cannot be printed, the gateway serves on. It used to panic on
/// the banner (println! into a broken pipe) and stop.
#[test]
fn demo_runs_on_when_its_standard_output_is_gone() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("HAZGATE_LOG_LEVEL", "info")
        .env_remove("HAZGATE_INFLUX_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hazgate demo starts");
    // The reader goes away before the banner is written.
    drop(child.stdout.take());
    let stderr = child.stderr.take().expect("stderr");
    let mut demo = Demo(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            println!("demo| {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|l: &String| l.contains("demo banner")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "the demo reports within 30 s that its banner cannot be printed; it wrote:\n{}",
                seen.join("\n")
            ),
        }
    }
    // Still running a while later, and it never panicked.
    std::thread::sleep(Duration::from_secs(2));
    while let Ok(line) = rx.try_recv() {
        seen.push(line);
    }
    let status = demo.0.try_wait().expect("try_wait");
    assert!(
        status.is_none(),
        "the demo stopped ({status:?}):\n{}",
        seen.join("\n")
    );
    assert!(
        !seen.iter().any(|l| l.contains("panicked")),
        "{}",
        seen.join("\n")
    );
}
