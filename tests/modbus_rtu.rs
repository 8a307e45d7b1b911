//! Modbus RTU against the simulator's RTU server: on a pseudo-terminal pair (the simulator
//! creates it in-process; the gateway opens the other end as a serial port with baud, parity,
//! data and stop bits), and RTU frames over TCP. Several unit ids share the bus; a dead unit is
//! backed off; after a timeout the late reply is drained, never taken for the next answer.

#[allow(dead_code, reason = "each test binary uses part of the helpers")]
mod modbus_common;
#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::time::Duration;

use hazgate::model::{BadReason, Reading};
use hazgate_sim::RunningSim;
use modbus_common::{Pollers, assert_rate, good, readings, resolve};
use tokio_util::sync::CancellationToken;

const INTERVAL: Duration = Duration::from_millis(200);

async fn site(protocol: &str) -> (RunningSim, CancellationToken) {
    let text = format!(
        r#"
[[listeners]]
id = "bus"
protocol = "{protocol}"
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
id = "t1"
unit_id = 7
map_id = "tank-radar"
signals.level = {{ constant = 7.25 }}
signals.temperature = {{ constant = -12.5 }}
signals.pressure = {{ constant = 101.3 }}
"#
    );
    support::sim(&text).await
}

fn gateway(source: &str) -> hazgate::config::Resolved {
    let mut text = format!(
        r#"
[site]
id = "rtu"
[[sources]]
{source}
[[device_maps]]
file = "maps/gas-4-20ma.toml"
[[device_maps]]
file = "maps/tank-radar.toml"
"#
    );
    for (id, unit, map) in [
        ("g1", 1, "gas-4-20ma"),
        ("g2", 2, "gas-4-20ma"),
        ("t1", 7, "tank-radar"),
    ] {
        text += &format!(
            "[[devices]]\nid = \"{id}\"\narea = \"a\"\nsource = \"bus\"\nunit_id = {unit}\nmap = \"{map}\"\npoll_interval = \"200ms\"\n"
        );
    }
    resolve(&text)
}

fn serial_source(port: &str, extra: &str) -> String {
    format!(
        "kind = \"modbus_rtu\"\nid = \"bus\"\nport = \"{port}\"\nbaud_rate = 19200\nparity = \"even\"\ndata_bits = 8\nstop_bits = 1\ntimeout = \"200ms\"\npause = \"2ms\"\nbackoff_max = \"2s\"\n{extra}"
    )
}

async fn finish(sim: RunningSim, cancel: CancellationToken, p: Pollers) {
    p.stop().await;
    cancel.cancel();
    let _ = sim.wait().await;
}

async fn all_values_decoded(p: &mut Pollers) {
    p.until(Duration::from_secs(10), "a.g1.lel", |r| {
        r.value() == Some(10.0)
    })
    .await;
    p.until(Duration::from_secs(10), "a.g2.lel", |r| {
        r.value() == Some(40.0)
    })
    .await;
    p.until(Duration::from_secs(10), "a.t1.level", |r| {
        r.value() == Some(7.25)
    })
    .await;
    p.until(Duration::from_secs(10), "a.t1.temperature", |r| {
        r.value() == Some(-12.5)
    })
    .await;
    p.until(Duration::from_secs(10), "a.t1.pressure", |r| {
        r.value() == Some(101.3)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_on_a_serial_port_reads_every_unit_on_the_bus() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel) = site("rtu_pty").await;
        let port = sim.serial_port("bus").expect("pty path").to_owned();
        assert!(port.starts_with("/dev/"), "{port}");
        let mut p = Pollers::start(&gateway(&serial_source(&port, "")));
        all_values_decoded(&mut p).await;
        let w = Duration::from_secs(3);
        let window = p.collect(w).await;
        for c in ["a.g1.lel", "a.g2.lel", "a.t1.level"] {
            assert_rate(&window, c, w, INTERVAL, 0.6);
        }
        finish(sim, cancel, p).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_reads_every_unit() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel) = site("rtu_over_tcp").await;
        let addr = sim.addr("bus").expect("bound");
        let src = format!(
            "kind = \"modbus_rtu_over_tcp\"\nid = \"bus\"\naddress = \"{addr}\"\ntimeout = \"300ms\""
        );
        let mut p = Pollers::start(&gateway(&src));
        all_values_decoded(&mut p).await;
        finish(sim, cancel, p).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_unit_on_the_bus_is_backed_off_and_the_others_keep_their_rate() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel) = site("rtu_pty").await;
        let port = sim.serial_port("bus").expect("pty").to_owned();
        let mut p = Pollers::start(&gateway(&serial_source(&port, "drain = \"20ms\"")));
        all_values_decoded(&mut p).await;
        sim.handle.set_silent("g1", true).expect("fault");
        p.skip(Duration::from_secs(1)).await;
        let w = Duration::from_secs(4);
        let window = p.collect(w).await;
        let rs = readings(&window, "a.g1.lel");
        assert!(
            !rs.is_empty()
                && rs
                    .iter()
                    .all(|r| matches!(r, Reading::Bad(BadReason::Comm { .. }))),
            "{rs:?}"
        );
        // 200 ms timeout + 20 ms drain per attempt; without backoff every 200 ms cycle would
        // spend more than its interval on the dead unit and the others would fall below half.
        assert_rate(&window, "a.g2.lel", w, INTERVAL, 0.6);
        assert_rate(&window, "a.t1.level", w, INTERVAL, 0.6);
        assert!(p.polls("g1", "skipped") > p.polls("g1", "failed"));
        finish(sim, cancel, p).await;
    })
    .await
    .expect("test timed out");
}

/// g1 answers 300 ms late with a 200 ms timeout: its reply arrives while the gateway moves on.
/// With the drain the late reply is discarded and g2 (same map, same request) always gets its
/// own answer; with `drain = "0s"` the late reply lands on g2's request and is rejected there
/// (header mismatch), which shows the test can see the difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_is_drained_never_matched_to_the_next_request() {
    tokio::time::timeout(Duration::from_secs(90), async {
        for (drain, expect_clean) in [("250ms", true), ("0s", false)] {
            let (sim, cancel) = site("rtu_pty").await;
            let port = sim.serial_port("bus").expect("pty").to_owned();
            let mut p = Pollers::start(&gateway(&serial_source(
                &port,
                &format!("drain = \"{drain}\""),
            )));
            all_values_decoded(&mut p).await;
            sim.handle
                .set_delay("g1", Duration::from_millis(300))
                .expect("fault");
            let window = p.collect(Duration::from_secs(4)).await;
            let g1 = good(&window, "a.g1.lel");
            let g2 = readings(&window, "a.g2.lel");
            // Never a wrong number, drain or not.
            assert!(g1.is_empty(), "late answers of g1 used: {g1:?}");
            assert!(
                g2.iter().all(|r| r.value().is_none_or(|v| v == 40.0)),
                "g2 read another unit's value: {g2:?}"
            );
            let g2_bad = g2.iter().filter(|r| r.value().is_none()).count();
            if expect_clean {
                assert_eq!(g2_bad, 0, "drain {drain}: g2 lost samples: {g2:?}");
                assert!(g2.len() >= 10, "{} samples", g2.len());
            } else {
                assert!(
                    g2_bad > 0,
                    "without a drain the late reply should hit g2's request"
                );
            }
            finish(sim, cancel, p).await;
        }
    })
    .await
    .expect("test timed out");
}

/// A unit whose first request of a poll times out: its other requests are not sent, and their
/// channels say which unit did not answer; RS-485 has no connection that could have dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_of_a_silent_unit_name_the_unit_not_a_connection() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel) = site("rtu_pty").await;
        let port = sim.serial_port("bus").expect("pty").to_owned();
        // Unit 7 read in two requests (level at 0..1, pressure at 3: max_gap 0 keeps them apart).
        let text = format!(
            r#"
[site]
id = "rtu"
[[sources]]
{}
[[devices]]
id = "t1"
area = "a"
source = "bus"
unit_id = 7
poll_interval = "200ms"
[[devices.registers]]
name = "level"
table = "holding"
address = 0
type = "f32"
[[devices.registers]]
name = "pressure"
table = "holding"
address = 3
scale = 0.1
"#,
            serial_source(&port, "drain = \"20ms\"\nmax_gap = 0")
        );
        let cfg = resolve(&text);
        assert_eq!(
            hazgate::sources::modbus::plan::plan(
                &cfg.modbus().next().expect("a Modbus source").devices[0].points,
                0
            )
            .len(),
            2
        );
        let mut p = Pollers::start(&cfg);
        p.until(Duration::from_secs(10), "a.t1.pressure", |r| {
            r.value() == Some(101.3)
        })
        .await;
        sim.handle.set_silent("t1", true).expect("fault");
        let detail = |r: &Reading| match r {
            Reading::Bad(BadReason::Comm { detail }) => detail.clone(),
            _ => String::new(),
        };
        // Polls before the backoff: level times out, pressure is not asked.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let seen = loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no poll with a timed-out first request"
            );
            let w = p.collect(Duration::from_millis(300)).await;
            let pressure = readings(&w, "a.t1.pressure");
            if let Some(d) = pressure
                .iter()
                .map(detail)
                .find(|d| d.contains("not asked again"))
            {
                break d;
            }
        };
        assert!(seen.contains("no answer from unit 7"), "{seen}");
        assert!(!seen.contains("connection"), "{seen}");
        finish(sim, cancel, p).await;
    })
    .await
    .expect("test timed out");
}
