//! SIGTERM under load: the `hazgate run` process drains within its grace period and exits 0,
//! even with an output that cannot be reached (what it could not deliver is logged).

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::fmt::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNITS: u8 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_within_grace_with_status_0() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut site = String::from("[[listeners]]\nid = \"conv\"\nlisten = \"127.0.0.1:0\"\n");
        for u in 1..=UNITS {
            let _ = write!(
                site,
                "[[listeners.devices]]\nid = \"gd{u}\"\nunit_id = {u}\nmap_id = \"gas-4-20ma\"\nsignals.lel = {{ sine = {{ base = 10, amplitude = 5, period = \"10s\" }} }}\n"
            );
        }
        let (sim, cancel) = support::sim(&site).await;
        let api_port = support::free_port();
        let dead_port = support::free_port(); // nothing listens here: the output keeps failing
        let mut cfg = format!(
            "[site]\nid = \"load\"\n[gateway]\nshutdown_grace = \"2s\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n\
             [[sources]]\nkind = \"modbus_tcp\"\nid = \"conv\"\naddress = \"{}\"\ntimeout = \"500ms\"\n\
             [[outputs]]\nkind = \"influxdb_v1\"\nid = \"down\"\nurl = \"http://127.0.0.1:{dead_port}\"\ndatabase = \"x\"\nflush_interval = \"100ms\"\ntimeout = \"1s\"\n",
            sim.listeners[0].1
        );
        for u in 1..=UNITS {
            let _ = write!(
                cfg,
                "[[devices]]\nid = \"gd{u}\"\narea = \"a\"\nsource = \"conv\"\nunit_id = {u}\npoll_interval = \"50ms\"\n\
                 [[devices.registers]]\nname = \"lel\"\ntable = \"input\"\naddress = 0\nspan = {{ raw = [4000, 20000], eng = [0, 100] }}\n"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("load.toml");
        std::fs::write(&path, cfg).expect("write config");
        let log = dir.path().join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hazgate"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start hazgate");
        // Under load: every channel has a good value and the output has points queued.
        support::eventually(Duration::from_secs(20), "all channels good", || async {
            let (code, body) = support::http_get(api_port, "/api/v1/channels").ok()?;
            (code == 200 && body.matches("\"quality\":\"good\"").count() == usize::from(UNITS)).then_some(())
        })
        .await;
        support::eventually(Duration::from_secs(10), "queued points", || async {
            let (_, body) = support::http_get(api_port, "/metrics").ok()?;
            body.lines()
                .find(|l| l.starts_with("hazgate_output_queue_points{output=\"down\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .filter(|&n| n > 0)
        })
        .await;
        let t0 = Instant::now();
        let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(kill.success());
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("hazgate did not exit 10 s after SIGTERM; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let elapsed = t0.elapsed();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "exit status; log:\n{text}");
        // Grace is 2 s; allow process start-up noise but not a second grace period.
        assert!(elapsed < Duration::from_millis(3500), "took {elapsed:?}; log:\n{text}");
        assert!(text.contains("points not delivered"), "undelivered points are reported:\n{text}");
        assert!(text.contains("gateway stopped"), "{text}");
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}
