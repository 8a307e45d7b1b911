//! RS-485 pacing: the bus is quiet for `pause` (and never less than 3.5 character times)
//! before every request, whichever unit it goes to. A timestamping relay sits between two
//! pseudo-terminal pairs: the gateway opens one, the simulator's RTU server the other; the relay
//! forwards bytes both ways and records, for each request frame, the silence since the last
//! byte on the line in either direction.

#[allow(dead_code, reason = "each test binary uses part of the helpers")]
mod modbus_common;
#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use modbus_common::{Pollers, resolve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_serial::SerialPort as _;

/// A read request on RTU is always 8 bytes (unit, function, address, count, CRC).
const REQUEST_LEN: usize = 8;

/// Relays between two pty masters; pushes the silence before each request frame.
async fn relay(
    mut gw: tokio_serial::SerialStream,
    mut dev: tokio_serial::SerialStream,
    gaps: Arc<Mutex<Vec<Duration>>>,
) {
    let mut last: Option<Instant> = None;
    let mut in_frame = 0usize;
    let (mut a, mut b) = ([0u8; 256], [0u8; 256]);
    loop {
        tokio::select! {
            r = gw.read(&mut a) => {
                let Ok(n) = r else { return };
                if n == 0 { return; }
                let now = Instant::now();
                for _ in 0..n {
                    if in_frame == 0 {
                        if let Some(t) = last {
                            gaps.lock().expect("lock").push(now - t);
                        }
                    }
                    in_frame = (in_frame + 1) % REQUEST_LEN;
                }
                last = Some(now);
                if dev.write_all(&a[..n]).await.is_err() { return; }
            }
            r = dev.read(&mut b) => {
                let Ok(n) = r else { return };
                if n == 0 { return; }
                if gw.write_all(&b[..n]).await.is_err() { return; }
                last = Some(Instant::now());
            }
        }
    }
}

fn pty() -> (
    tokio_serial::SerialStream,
    tokio_serial::SerialStream,
    String,
) {
    let (master, slave) = tokio_serial::SerialStream::pair().expect("a pseudo-terminal pair");
    let path = slave.name().expect("pty path");
    (master, slave, path)
}

/// Three units on one bus, one request each per poll; returns the silences before requests.
async fn measure(pause: &str, baud: u32) -> Vec<Duration> {
    let (gw_master, _gw_slave, gw_path) = pty();
    let (dev_master, _dev_slave, dev_path) = pty();
    let (sim, cancel) = support::sim(&format!(
        r#"
[[listeners]]
id = "bus"
protocol = "rtu"
serial = "{dev_path}"
[[listeners.devices]]
id = "g1"
unit_id = 1
map_id = "gas-4-20ma"
signals.lel = {{ constant = 10 }}
[[listeners.devices]]
id = "g2"
unit_id = 2
map_id = "gas-4-20ma"
signals.lel = {{ constant = 40 }}
[[listeners.devices]]
id = "g3"
unit_id = 3
map_id = "gas-4-20ma"
signals.lel = {{ constant = 70 }}
"#
    ))
    .await;
    let gaps = Arc::new(Mutex::new(Vec::new()));
    let relay = tokio::spawn(relay(gw_master, dev_master, gaps.clone()));
    let mut text = format!(
        "[site]\nid = \"pace\"\n[[sources]]\nkind = \"modbus_rtu\"\nid = \"bus\"\nport = \"{gw_path}\"\nbaud_rate = {baud}\ntimeout = \"500ms\"\npause = \"{pause}\"\n[[device_maps]]\nfile = \"maps/gas-4-20ma.toml\"\n"
    );
    for u in 1..=3 {
        text += &format!(
            "[[devices]]\nid = \"g{u}\"\narea = \"a\"\nsource = \"bus\"\nunit_id = {u}\nmap = \"gas-4-20ma\"\npoll_interval = \"300ms\"\n"
        );
    }
    let mut p = Pollers::start(&resolve(&text));
    for (u, v) in [(1, 10.0), (2, 40.0), (3, 70.0)] {
        p.until(Duration::from_secs(15), &format!("a.g{u}.lel"), |r| {
            r.value() == Some(v)
        })
        .await;
    }
    // At least 15 requests after a previous one.
    let deadline = Instant::now() + Duration::from_secs(20);
    while gaps.lock().expect("lock").len() < 15 {
        assert!(Instant::now() < deadline, "too few requests relayed");
        p.skip(Duration::from_millis(100)).await;
    }
    p.stop().await;
    relay.abort();
    cancel.cancel();
    let _ = sim.wait().await;
    gaps.lock().expect("lock").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_is_kept_before_every_request_on_the_bus_not_only_within_a_unit() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let gaps = measure("50ms", 9600).await;
        let min = gaps.iter().min().copied().expect("gaps");
        println!(
            "pause 50ms: {} requests, silence before a request min {:?} max {:?}",
            gaps.len(),
            min,
            gaps.iter().max().expect("gaps")
        );
        // Before the fix, the first request of each unit followed the previous unit's reply
        // within 0.1-0.5 ms.
        assert!(min >= Duration::from_millis(50), "{gaps:?}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pause_the_bus_still_gets_three_and_a_half_characters() {
    tokio::time::timeout(Duration::from_secs(90), async {
        // 9600 baud 8N1: 10 bits a character, 3.5 characters = 3.65 ms.
        let gaps = measure("0s", 9600).await;
        let min = gaps.iter().min().copied().expect("gaps");
        println!(
            "pause 0s at 9600 baud: {} requests, silence before a request min {min:?}",
            gaps.len()
        );
        assert!(min >= Duration::from_micros(3645), "{gaps:?}");
    })
    .await
    .expect("test timed out");
}
