//! Device health tells the truth while a link is down: every due poll counts (attempted,
//! backed off or waiting to reconnect), and the last error says what is wrong in words.
//! Real sockets: a port nobody listens on, a server that closes every connection, and the
//! simulator answering with exceptions (counted per request, named alike everywhere).

#[allow(dead_code, reason = "each test binary uses part of the helpers")]
mod modbus_common;
#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::time::Duration;

use hazgate::model::DeviceId;
use modbus_common::{Pollers, resolve};

fn gateway(addr: &str) -> hazgate::config::Resolved {
    resolve(&format!(
        r#"
[site]
id = "health"
[[sources]]
kind = "modbus_tcp"
id = "conv"
address = "{addr}"
timeout = "300ms"
connect_timeout = "300ms"
backoff_max = "1s"
[[devices]]
id = "d1"
area = "a"
source = "conv"
unit_id = 3
poll_interval = "100ms"
[[devices.registers]]
name = "lel"
table = "input"
address = 0
kind = "combustible_gas"
unit = "%LEL"
fault_codes = [65535]
"#
    ))
}

/// Waits until the device has at least `n` consecutive failures; returns its last error.
async fn until_failures(p: &Pollers, n: u32) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let h = p.state.devices().get(&DeviceId::new("d1")).cloned();
        if let Some(h) = &h {
            if h.consecutive_failures >= n {
                return h.last_error.clone().unwrap_or_default();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "device health froze below {n} consecutive failures: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_keeps_counting_and_says_connection_refused() {
    tokio::time::timeout(Duration::from_secs(60), async {
        // A free port with nobody listening: every connect is refused.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        drop(l);
        let mut p = Pollers::start(&gateway(&addr));
        // 100 ms polls, reconnect backoff capped at 1 s: far more than 15 polls within 30 s,
        // nearly all of them waiting to reconnect.
        let last = until_failures(&p, 15).await;
        assert!(last.contains("connection refused"), "{last}");
        assert!(!last.contains("os error"), "{last}");
        let h = p.state.devices()[&DeviceId::new("d1")].clone();
        assert!(h.last_success.is_none(), "{h:?}");
        assert_eq!(p.polls("d1", "ok"), 0);
        assert!(
            p.polls("d1", "failed") >= 1,
            "connect attempts are failed polls"
        );
        assert!(p.polls("d1", "skipped") >= 1, "waiting polls are counted");
        // The samples say it too.
        let w = p.collect(Duration::from_millis(500)).await;
        let rs = modbus_common::readings(&w, "a.d1.lel");
        assert!(!rs.is_empty());
        for r in rs {
            let t = format!("{r:?}");
            assert!(t.contains("connection refused"), "{t}");
        }
        p.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_closing_every_connection_keeps_counting_while_backed_off() {
    tokio::time::timeout(Duration::from_secs(60), async {
        // Accepts every connection and closes it at once, like a converter that lost its port.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                drop(s);
            }
        });
        let p = Pollers::start(&gateway(&addr));
        // After three polls without an answer the device is backed off (1 s at most); health
        // must keep counting through the backoff instead of freezing at the first failure.
        let last = until_failures(&p, 12).await;
        assert!(p.polls("d1", "skipped") >= 1, "never backed off");
        assert!(
            last.contains("connection closed by device"),
            "the cause survives the backoff: {last}"
        );
        assert!(!last.contains("os error"), "{last}");
        assert_eq!(p.polls("d1", "ok"), 0);
        let gauge = p.metrics.encode();
        assert!(
            gauge.lines().any(|l| l
                .starts_with("hazgate_modbus_device_consecutive_failures{device=\"d1\"}")
                && l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<u32>().ok())
                    .is_some_and(|v| v >= 12)),
            "{gauge}"
        );
        p.stop().await;
        server.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_count_requests_and_are_named_alike_everywhere() {
    tokio::time::timeout(Duration::from_secs(60), async {
        // A tank gauge: three points served by one request per poll.
        let (sim, cancel) = support::sim(
            "[[listeners]]\nid = \"tcp\"\n[[listeners.devices]]\nid = \"t1\"\nunit_id = 3\nmap_id = \"tank-radar\"\nsignals.level = { constant = 7.25 }\n",
        )
        .await;
        let addr = sim.addr("tcp").expect("tcp").to_string();
        let cfg = resolve(&format!(
            "[site]\nid = \"x\"\n[[sources]]\nkind = \"modbus_tcp\"\nid = \"conv\"\naddress = \"{addr}\"\ntimeout = \"300ms\"\n[[device_maps]]\nfile = \"maps/tank-radar.toml\"\n[[devices]]\nid = \"t1\"\narea = \"a\"\nsource = \"conv\"\nunit_id = 3\nmap = \"tank-radar\"\npoll_interval = \"100ms\"\n"
        ));
        assert_eq!(cfg.modbus().next().expect("a Modbus source").devices[0].points.len(), 3);
        let mut p = Pollers::start(&cfg);
        p.until(Duration::from_secs(10), "a.t1.level", |r| {
            r.value() == Some(7.25)
        })
        .await;
        sim.handle.set_exception("t1", Some(2)).expect("fault");
        let named = "exception 0x02 illegal data address";
        p.until(Duration::from_secs(10), "a.t1.level", |r| {
            *r == hazgate::model::Reading::Bad(hazgate::model::BadReason::Exception { code: 2 })
        })
        .await;
        p.skip(Duration::from_millis(500)).await;
        p.stop_polling().await;
        // One request per poll: the exception count equals the requests answered with one.
        let m = p.metrics.encode();
        let value = |prefix: &str| -> u64 {
            m.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{prefix} not in {m}"))
        };
        let by_device = value("hazgate_modbus_device_exceptions_total{device=\"t1\"}");
        let requests = value(
            "hazgate_modbus_requests_total{source=\"conv\",result=\"exception\"}",
        );
        assert!(requests >= 3, "{m}");
        assert_eq!(by_device, requests, "exceptions counted per point, not per request");
        let h = p.state.devices()[&DeviceId::new("t1")].clone();
        assert_eq!(h.exceptions, requests);
        // The API's device health and the channel's reason use the same words.
        assert_eq!(h.last_error.as_deref(), Some(named), "{h:?}");
        assert_eq!(
            hazgate::model::BadReason::Exception { code: 2 }.to_string(),
            named
        );
        // And so does `hazgate probe`.
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hazgate"))
                .args([
                    "probe", "--tcp", &addr, "--unit", "3", "--table", "holding", "--address",
                    "0", "--count", "2",
                ])
                .output()
                .expect("hazgate runs")
        })
        .await
        .expect("join");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success());
        assert!(text.contains(named), "{text}");
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}
