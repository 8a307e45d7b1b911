//! The API cannot starve the gateway of descriptors: the real `hazgate run` process under a low
//! `RLIMIT_NOFILE` (set with util-linux `prlimit`) keeps delivering alarms to a webhook while a
//! slowloris load (hundreds of connections sending a partial request head, or nothing) hits
//! its API; those connections are closed after `header_read_timeout` and the gateway never
//! holds more than `max_connections` of them.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_CONNECTIONS: usize = 8;
const SLOWLORIS: usize = 300;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_delivered_while_the_api_is_under_a_slowloris_load_with_few_descriptors() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let prlimit = support::require_binary("prlimit", "util-linux");
        // The webhook receiver records every alarm body.
        let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let g2 = got.clone();
        let hook = Router::new().route(
            "/alarms",
            post(move |body: String| {
                let g = g2.clone();
                async move {
                    g.lock().expect("lock").push(serde_json::from_str(&body).expect("json"));
                    "ok"
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let hook_addr = l.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(l, hook).await });

        let (sim, cancel) = support::sim(
            "[[listeners]]\nid = \"c\"\n[[listeners.devices]]\nid = \"gd1\"\nunit_id = 1\nmap_id = \"gas-4-20ma\"\nsignals.lel = { constant = 5 }\n",
        )
        .await;
        let api_port = support::free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("hazgate.toml");
        std::fs::write(
            &cfg,
            format!(
                "[site]\nid = \"s\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\nmax_connections = {MAX_CONNECTIONS}\n\
                 header_read_timeout = \"2s\"\nidle_timeout = \"20s\"\n\
                 [[sources]]\nkind = \"modbus_tcp\"\nid = \"c\"\naddress = \"{}\"\ntimeout = \"500ms\"\n\
                 [[devices]]\nid = \"gd1\"\narea = \"a\"\nsource = \"c\"\npoll_interval = \"100ms\"\n\
                 [[devices.registers]]\nname = \"lel\"\ntable = \"input\"\naddress = 0\nunit = \"%LEL\"\nspan = {{ raw = [4000, 20000], eng = [0, 100] }}\n\
                 [[rules]]\nchannel = \"a.gd1.lel\"\nh = 25\n\
                 [[receivers]]\nkind = \"webhook\"\nid = \"hook\"\nurl = \"http://{hook_addr}/alarms\"\ntimeout = \"2s\"\nbackoff_max = \"1s\"\n",
                sim.listeners[0].1
            ),
        )
        .expect("write config");
        // 64 descriptors: enough for the runtime, the Modbus link, the webhook and the capped
        // API; far fewer than the slowloris connections.
        let nofile = 64;
        let child = Command::new(prlimit)
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_hazgate"))
            .args(["--log-level", "warn", "run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hazgate under prlimit");
        let gw = Kill(child);
        let pid = gw.0.id(); // prlimit execs the program: same pid
        support::eventually(Duration::from_secs(30), "the API answers", || async move {
            tokio::task::spawn_blocking(move || support::http_get(api_port, "/healthz"))
                .await
                .ok()
                .and_then(Result::ok)
                .filter(|(code, _)| *code == 200)
        })
        .await;
        // The gas channel reads a good value before the load starts.
        support::eventually(Duration::from_secs(30), "a good gas reading", || async move {
            tokio::task::spawn_blocking(move || support::http_get(api_port, "/api/v1/channels"))
                .await
                .ok()
                .and_then(Result::ok)
                .filter(|(_, body)| body.contains("\"good\""))
        })
        .await;
        let baseline = open_fds(pid);

        // The slowloris: SLOWLORIS connections, half sending a partial request head, half
        // nothing; each one closed by the server is counted and replaced.
        let closed = Arc::new(AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        for i in 0..SLOWLORIS {
            let (closed, stop) = (closed.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await
                    else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    if i % 2 == 0 {
                        let _ = s.write_all(b"GET /api/v1/channels HTTP/1.1\r\nHost: x\r\n").await;
                    }
                    let mut buf = [0u8; 512];
                    tokio::select! {
                        // EOF or an error: the server closed it (perhaps after a 408 answer).
                        _ = async { while let Ok(n) = s.read(&mut buf).await { if n == 0 { break } } } => {
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                        () = stop.cancelled() => return,
                    }
                }
            });
        }
        // The idle connections are closed by the server (header_read_timeout = 2 s).
        support::eventually(Duration::from_secs(30), "slowloris connections closed by the server", || {
            let closed = closed.clone();
            async move { (closed.load(Ordering::Relaxed) >= 2 * MAX_CONNECTIONS).then_some(()) }
        })
        .await;
        let under_load = open_fds(pid);
        assert!(
            under_load <= baseline + MAX_CONNECTIONS + 4,
            "the API holds more than its {MAX_CONNECTIONS} connections: {baseline} descriptors before the load, {under_load} under it"
        );

        // An alarm while the load goes on: delivered.
        sim.handle.set_value("gd1", "lel", 30.0).expect("set gas");
        let body = support::eventually(Duration::from_secs(45), "the H alarm delivered under load", || {
            let got = got.clone();
            async move {
                got.lock()
                    .expect("lock")
                    .iter()
                    .find(|b| b["event"]["alarm"] == "a.gd1.lel:H" && b["event"]["transition"] == "raised")
                    .cloned()
            }
        })
        .await;
        assert_eq!(body["event"]["value"], 30.0);
        let fds = open_fds(pid);
        assert!(fds <= baseline + MAX_CONNECTIONS + 4, "{baseline} before, {fds} under load");
        stop.cancel();
        drop(gw);
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}

/// A request whose body never arrives is closed after `idle_timeout`, not kept forever; the
/// header timeout does not apply once the head is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stops_sending_its_body_is_closed_after_the_idle_timeout() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let app = Router::new().route("/", post(|b: String| async move { b }));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let stop = tokio_util::sync::CancellationToken::new();
        let limits = hazgate::api::serve::Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(1),
        };
        let server = tokio::spawn(hazgate::api::serve::serve(l, app, limits, stop.clone()));
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .expect("write");
        let started = tokio::time::Instant::now();
        let mut buf = Vec::new();
        // Ends (EOF or reset) only when the server closes the connection.
        let _ = s.read_to_end(&mut buf).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900),
            "closed too early: {waited:?}"
        );
        // A complete request on a new connection is still served.
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        )
        .await
        .expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        assert!(
            buf.starts_with("HTTP/1.1 200") && buf.ends_with("ok"),
            "{buf}"
        );
        stop.cancel();
        server.await.expect("server task");
    })
    .await
    .expect("test timed out: the idle connection was never closed");
}

#[test]
fn api_limits_are_checked() {
    let text = "[site]\nid = \"s\"\n[api]\nmax_connections = 0\nheader_read_timeout = \"0s\"\nrequest_timeout = \"30s\"\nidle_timeout = \"30s\"\n";
    let cfg = hazgate::config::parse(text, std::path::Path::new("t.toml")).expect("parses");
    let Err(problems) = hazgate::config::validate(&cfg, std::path::Path::new(".")) else {
        panic!("accepted");
    };
    let text = format!("{problems:?}");
    for path in [
        "api.max_connections",
        "api.header_read_timeout",
        "api.idle_timeout",
    ] {
        assert!(text.contains(path), "{path} not reported: {text}");
    }
    let ok = "[site]\nid = \"s\"\n";
    let cfg = hazgate::config::parse(ok, std::path::Path::new("t.toml")).expect("parses");
    let api = &cfg.api;
    assert_eq!(
        (
            api.max_connections,
            api.header_read_timeout,
            api.idle_timeout
        ),
        (128, Duration::from_secs(10), Duration::from_secs(60)),
        "defaults"
    );
}
