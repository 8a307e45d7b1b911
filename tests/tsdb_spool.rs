//! Store-and-forward against real servers: outages and recovery with every point present exactly
//! once (influxd v1 read back with InfluxQL, VictoriaMetrics v2 read back through its export
//! API), a restart during an outage, a spool that fills up, a batch with one invalid point, and
//! what a kill -9 of a process writing to the spool costs (measured in a child process).

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hazgate::config;
use hazgate::state::SharedState;
use hazgate::telemetry::Metrics;
use hazgate::tsdb::options::{ByteSize, FsyncPolicy, SpoolConfig};
use hazgate::tsdb::spool::Spool;
use hazgate::tsdb::writer::{OutputQueue, Writer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn output_config(output: &str) -> config::Resolved {
    let text = format!("[site]\nid = \"s\"\n{output}");
    let cfg = config::parse(&text, Path::new("test.toml")).expect("parses");
    config::validate(&cfg, Path::new(".")).expect("valid").0
}

/// Point `i`: its own timestamp (`t0 + i ms`) and value `i`, spread over 4 channels.
fn point(t0_ns: i64, i: usize) -> String {
    format!(
        "reading,site=s,channel=c{} value={i} {}\n",
        i % 4,
        t0_ns + i as i64 * 1_000_000
    )
}

fn points(t0_ns: i64, r: std::ops::Range<usize>) -> Vec<String> {
    r.map(|i| point(t0_ns, i)).collect()
}

/// The value of a metric sample line such as `hazgate_points_written_total{output="o"}`.
fn metric(m: &Metrics, series: &str) -> u64 {
    m.encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

struct Running {
    state: Arc<SharedState>,
    handle: JoinHandle<()>,
    deadline: CancellationToken,
}

fn start_writer(cfg: &config::Resolved, queue: Arc<OutputQueue>, metrics: Arc<Metrics>) -> Running {
    let state = Arc::new(SharedState::new(cfg));
    let w =
        Writer::new(cfg.outputs[0].clone(), None, queue, state.clone(), metrics).expect("writer");
    let deadline = CancellationToken::new();
    let handle = tokio::spawn(w.run(deadline.clone()));
    Running {
        state,
        handle,
        deadline,
    }
}

async fn wait_metric(m: &Metrics, series: &str, at_least: u64, what: &str) {
    support::eventually(Duration::from_secs(30), what, || {
        let v = metric(m, series);
        async move { (v >= at_least).then_some(()) }
    })
    .await;
}

/// Every value `0..n` exactly once among the rows `[time, value]` of an InfluxQL answer.
fn assert_each_once(v: &serde_json::Value, expect: impl Iterator<Item = usize>) {
    let mut got: Vec<i64> = Vec::new();
    for series in v["results"][0]["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no series: {v}"))
    {
        for row in series["values"].as_array().expect("rows") {
            got.push(row[1].as_f64().expect("value") as i64);
        }
    }
    got.sort_unstable();
    let want: Vec<i64> = expect.map(|i| i as i64).collect();
    assert_eq!(got.len(), want.len(), "point count");
    assert_eq!(got, want, "every point exactly once");
}

fn v1_output(url: &str, db: &str, spool: &Path, extra: &str) -> String {
    format!(
        "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"{url}\"\ndatabase = \"{db}\"\n\
         flush_interval = \"100ms\"\nbatch_size = 50\ntimeout = \"2s\"\n{extra}\
         spool = {{ dir = \"{}\", max_size = \"64MiB\", segment_size = \"8KiB\", fsync = \"batch\" }}\n",
        spool.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_outage_spooled_and_replayed_exactly_once() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE sp1").await;
        let spool = tempfile::tempdir().expect("tmp");
        let cfg = output_config(&v1_output(
            &influx.url(),
            "sp1",
            spool.path(),
            "precision = \"ms\"\n",
        ));
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 100_000, metrics.clone()));
        let w = start_writer(&cfg, q.clone(), metrics.clone());
        let t0 = 1_700_000_000_000_000_000i64;
        q.push(points(t0, 0..200));
        wait_metric(
            &metrics,
            "hazgate_points_written_total{output=\"o\"}",
            200,
            "first 200 points written",
        )
        .await;
        influx.kill();
        // During the outage every batch lands in the spool.
        for k in 0..10 {
            q.push(points(t0, 200 + k * 100..300 + k * 100));
            tokio::task::yield_now().await;
        }
        wait_metric(
            &metrics,
            "hazgate_spool_points{output=\"o\"}",
            1000,
            "the outage's points spooled",
        )
        .await;
        assert!(
            w.state
                .health
                .not_ready()
                .iter()
                .any(|r| r.starts_with("output o:")),
            "unhealthy during the outage"
        );
        let segments = std::fs::read_dir(spool.path()).expect("ls").count();
        assert!(
            segments > 1,
            "the outage spans several segment files, found {segments}"
        );
        influx.restart();
        q.push(points(t0, 1200..1500));
        q.close();
        w.handle.await.expect("writer drains after recovery");
        let v =
            support::influxql(&influx, "sp1", "SELECT value FROM reading GROUP BY channel").await;
        assert_each_once(&v, 0..1500);
        assert_eq!(
            metric(&metrics, "hazgate_points_written_total{output=\"o\"}"),
            1500
        );
        assert_eq!(metric(&metrics, "hazgate_spool_points{output=\"o\"}"), 0);
        let left: Vec<_> = std::fs::read_dir(spool.path())
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "every delivered segment deleted: {left:?}");
        assert!(
            w.state.health.not_ready().is_empty(),
            "healthy again: {:?}",
            w.state.health.not_ready()
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_restart_during_outage_loses_nothing() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE sp2").await;
        let spool = tempfile::tempdir().expect("tmp");
        let cfg = output_config(&v1_output(&influx.url(), "sp2", spool.path(), ""));
        let t0 = 1_700_000_000_000_000_000i64;

        // First life: 100 delivered, then the output goes down and 300 are spooled; then the
        // process "crashes" (the task is aborted: no clean shutdown).
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 100_000, metrics.clone()));
        let w = start_writer(&cfg, q.clone(), metrics.clone());
        q.push(points(t0, 0..100));
        wait_metric(
            &metrics,
            "hazgate_points_written_total{output=\"o\"}",
            100,
            "first 100 written",
        )
        .await;
        influx.kill();
        q.push(points(t0, 100..400));
        wait_metric(
            &metrics,
            "hazgate_spool_points{output=\"o\"}",
            300,
            "300 points spooled",
        )
        .await;
        w.handle.abort();
        let _ = w.handle.await;

        // Second life, still down: a clean shutdown keeps the backlog (and new points) spooled.
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 100_000, metrics.clone()));
        let w = start_writer(&cfg, q.clone(), metrics.clone());
        q.push(points(t0, 400..500));
        // The backlog is 400: the 300 and the 100 delivered before the crash, which share the
        // newest segment (kept for reuse, see tsdb::spool); with the 100 new ones, 500.
        wait_metric(
            &metrics,
            "hazgate_spool_points{output=\"o\"}",
            500,
            "backlog found and new points spooled",
        )
        .await;
        q.close();
        w.deadline.cancel();
        w.handle.await.expect("writer stops at the deadline");
        assert_eq!(
            metric(
                &metrics,
                "hazgate_points_dropped_total{output=\"o\",reason=\"shutdown\"}"
            ),
            0,
            "nothing counted as lost"
        );

        // Third life, output back: everything arrives.
        influx.restart();
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 100_000, metrics.clone()));
        let w = start_writer(&cfg, q.clone(), metrics.clone());
        q.push(points(t0, 500..600));
        q.close();
        w.handle.await.expect("writer drains");
        let v =
            support::influxql(&influx, "sp2", "SELECT value FROM reading GROUP BY channel").await;
        assert_each_once(&v, 0..600);
        // Backlog + new, and the 100 delivered before the crash once more (stored once).
        assert_eq!(
            metric(&metrics, "hazgate_points_written_total{output=\"o\"}"),
            600,
            "the spooled 500, the 100 new ones; nothing else sent twice"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drops_oldest_and_counts() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE sp3").await;
        influx.kill();
        let spool = tempfile::tempdir().expect("tmp");
        let text = format!(
            "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"{}\"\ndatabase = \"sp3\"\n\
             flush_interval = \"50ms\"\nbatch_size = 50\ntimeout = \"1s\"\n\
             spool = {{ dir = \"{}\", max_size = \"24KiB\", segment_size = \"8KiB\", fsync = \"never\" }}\n",
            influx.url(),
            spool.path().display()
        );
        let cfg = output_config(&text);
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 100_000, metrics.clone()));
        let w = start_writer(&cfg, q.clone(), metrics.clone());
        let t0 = 1_700_000_000_000_000_000i64;
        // ~60 bytes a point: 2,000 points are ~120 KB, five times the spool.
        let n = 2000;
        for k in 0..n / 50 {
            q.push(points(t0, k * 50..(k + 1) * 50));
            if k % 5 == 4 {
                let spooled = metric(&metrics, "hazgate_spool_points{output=\"o\"}")
                    + metric(&metrics, "hazgate_points_dropped_total{output=\"o\",reason=\"spool_full\"}");
                // Let the intake keep up so the memory queue never drops anything.
                support::eventually(Duration::from_secs(10), "intake keeps up", || {
                    let m = metrics.clone();
                    async move {
                        let s = metric(&m, "hazgate_spool_points{output=\"o\"}") + metric(&m, "hazgate_points_dropped_total{output=\"o\",reason=\"spool_full\"}");
                        (s >= spooled).then_some(())
                    }
                })
                .await;
            }
        }
        wait_metric(&metrics, "hazgate_points_dropped_total{output=\"o\",reason=\"spool_full\"}", 1, "spool full").await;
        support::eventually(Duration::from_secs(10), "all points spooled or dropped", || {
            let m = metrics.clone();
            async move {
                let s = metric(&m, "hazgate_spool_points{output=\"o\"}") + metric(&m, "hazgate_points_dropped_total{output=\"o\",reason=\"spool_full\"}");
                // The sender holds up to three claimed batches (max_in_flight = 2 and the live slot).
                (s + 150 >= n as u64).then_some(())
            }
        })
        .await;
        assert!(
            w.state.health.not_ready().iter().any(|r| r.starts_with("output o spool: spool full")),
            "{:?}",
            w.state.health.not_ready()
        );
        let bytes = metric(&metrics, "hazgate_spool_bytes{output=\"o\"}");
        assert!(bytes <= 24 * 1024, "spool stays within max_size: {bytes}");
        assert_eq!(
            metric(&metrics, "hazgate_output_spool_full{output=\"o\"}"),
            1,
            "the spool-full gauge is raised"
        );
        influx.restart();
        q.close();
        w.handle.await.expect("writer drains");
        let dropped = metric(&metrics, "hazgate_points_dropped_total{output=\"o\",reason=\"spool_full\"}") as usize;
        assert_eq!(
            metric(&metrics, "hazgate_output_spool_full{output=\"o\"}"),
            0,
            "the gauge falls once the spool drained"
        );
        assert_eq!(metric(&metrics, "hazgate_points_dropped_total{output=\"o\",reason=\"queue_full\"}"), 0);
        let v = support::influxql(&influx, "sp3", "SELECT value FROM reading GROUP BY channel").await;
        let mut got: Vec<i64> = Vec::new();
        for s in v["results"][0]["series"].as_array().unwrap_or_else(|| panic!("{v}")) {
            for row in s["values"].as_array().expect("rows") {
                got.push(row[1].as_f64().expect("value") as i64);
            }
        }
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len() + dropped, n, "every point either delivered or counted as dropped");
        // What is kept: the newest points (a contiguous run up to the last one), and before
        // them at most the three batches the sender held when the spool filled (two in flight
        // and one in the live slot; which ones depends on timing). Everything else, the oldest
        // spooled, was dropped.
        let tail_len = got.iter().rev().zip((0..n as i64).rev()).take_while(|(v, i)| **v == *i).count();
        let (early, _tail) = got.split_at(got.len() - tail_len);
        assert!(early.len() <= 150 && early.len() % 50 == 0, "only whole claimed batches before the newest run: {early:?}");
        for batch in early.chunks(50) {
            assert!(batch[0] % 50 == 0 && batch[49] == batch[0] + 49, "whole batches: {early:?}");
        }
        assert!(tail_len + early.len() < n - 200, "something was dropped");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invalid_point_is_isolated_and_quarantined() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE sp4").await;
        let spool = tempfile::tempdir().expect("tmp");
        let cfg = output_config(
            &v1_output(&influx.url(), "sp4", spool.path(), "")
                .replace("batch_size = 50", "batch_size = 500"),
        );
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 100_000, metrics.clone()));
        let t0 = 1_700_000_000_000_000_000i64;
        let mut batch = points(t0, 0..300);
        let bad = "reading,site=s,channel=c9 value= 1700000000000000000\n".to_owned();
        batch.insert(137, bad.clone());
        q.push(batch);
        q.close();
        let w = start_writer(&cfg, q, metrics.clone());
        w.handle.await.expect("writer drains");
        let v =
            support::influxql(&influx, "sp4", "SELECT value FROM reading GROUP BY channel").await;
        assert_each_once(&v, 0..300);
        assert_eq!(
            metric(&metrics, "hazgate_points_written_total{output=\"o\"}"),
            300
        );
        assert_eq!(
            metric(
                &metrics,
                "hazgate_points_dropped_total{output=\"o\",reason=\"invalid\"}"
            ),
            1
        );
        let quarantine =
            std::fs::read_to_string(spool.path().join("quarantine.lp")).expect("quarantine file");
        let mut lines = quarantine.lines();
        let msg = lines.next().expect("message line");
        assert!(
            msg.starts_with("# HTTP 400") && msg.contains("unable to parse"),
            "server message kept: {msg}"
        );
        assert_eq!(lines.next(), Some(bad.trim_end()), "{quarantine}");
        assert_eq!(lines.next(), None);
    })
    .await
    .expect("test timed out");
}

async fn vm_export_values(vm: &support::Server) -> Vec<i64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let _ = client
        .get(format!("{}/internal/force_flush", vm.url()))
        .send()
        .await;
    let body = client
        .get(format!("{}/api/v1/export", vm.url()))
        .query(&[("match[]", "reading_value")])
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        for x in v["values"].as_array().expect("values") {
            out.push(x.as_f64().expect("number") as i64);
        }
    }
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_outage_and_restart_replayed_exactly_once_to_victoria_metrics() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut vm = support::victoria_metrics();
        let spool = tempfile::tempdir().expect("tmp");
        let cfg = output_config(&format!(
            "[[outputs]]\nkind = \"influxdb_v2\"\nid = \"o\"\nurl = \"{}\"\norg = \"site\"\nbucket = \"b\"\n\
             flush_interval = \"100ms\"\nbatch_size = 50\ntimeout = \"2s\"\n\
             spool = {{ dir = \"{}\", segment_size = \"8KiB\", max_size = \"1MiB\" }}\n",
            vm.url(),
            spool.path().display()
        ));
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").as_nanos() as i64;
        let t0 = now - 600 * 1_000_000_000;
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 100_000, metrics.clone()));
        let w = start_writer(&cfg, q.clone(), metrics.clone());
        q.push(points(t0, 0..200));
        wait_metric(&metrics, "hazgate_points_written_total{output=\"o\"}", 200, "first 200 written").await;
        support::eventually(Duration::from_secs(20), "first 200 stored", || {
            let vm = &vm;
            async move { (vm_export_values(vm).await.len() == 200).then_some(()) }
        })
        .await;
        // SIGTERM: VictoriaMetrics loses its in-memory samples on SIGKILL.
        vm.terminate();
        q.push(points(t0, 200..700));
        wait_metric(&metrics, "hazgate_spool_points{output=\"o\"}", 500, "outage spooled").await;
        // Clean restart of the gateway during the outage.
        q.close();
        w.deadline.cancel();
        w.handle.await.expect("writer stops");
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 100_000, metrics.clone()));
        let w = start_writer(&cfg, q.clone(), metrics.clone());
        q.push(points(t0, 700..800));
        wait_metric(&metrics, "hazgate_spool_points{output=\"o\"}", 600, "backlog and new points spooled").await;
        vm.restart();
        q.push(points(t0, 800..1000));
        q.close();
        w.handle.await.expect("writer drains");
        assert_eq!(metric(&metrics, "hazgate_points_written_total{output=\"o\"}"), 800);
        let want: Vec<i64> = (0..1000).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        let got = loop {
            let v = vm_export_values(&vm).await;
            if v.len() >= 1000 || Instant::now() > deadline {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(got, want, "every point exactly once");
    })
    .await
    .expect("test timed out");
}

const CHILD_ENV: &str = "HAZGATE_SPOOL_KILL_CHILD";
const CHILD_RATE: usize = 10_000;
const CHILD_FLUSH_MS: u64 = 200;

/// The child role of `kill_9_loses_at_most_one_flush_interval`: this test binary, re-run with
/// that one test selected and `CHILD_ENV` set, writes to a spool until it is killed.
fn write_until_killed(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // An output nobody listens on: everything goes to the spool.
        let port = support::free_port();
        let cfg = output_config(&format!(
            "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"http://127.0.0.1:{port}\"\ndatabase = \"x\"\n\
             flush_interval = \"{CHILD_FLUSH_MS}ms\"\nbatch_size = 5000\ntimeout = \"1s\"\n\
             spool = {{ dir = \"{dir}\", fsync = \"interval\" }}\n"
        ));
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 1_000_000, metrics.clone()));
        let _w = start_writer(&cfg, q.clone(), metrics);
        let started = Instant::now();
        let mut out = std::io::stdout().lock();
        let mut n = 0;
        // 100 points every 10 ms; runs until killed (at most a minute).
        while started.elapsed() < Duration::from_secs(60) {
            q.push(points(0, n..n + 100));
            n += 100;
            let _ = writeln!(out, "pushed {n}");
            let _ = out.flush();
            let next = started + Duration::from_millis((n / 100 * 10) as u64);
            tokio::time::sleep_until(next.into()).await;
        }
    });
}

#[test]
fn kill_9_loses_at_most_one_flush_interval() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        write_until_killed(&dir);
        return;
    }
    let spool = tempfile::tempdir().expect("tmp");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "kill_9_loses_at_most_one_flush_interval",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spool.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("stdout");
    let mut pushed = 0usize;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pushed < 3 * CHILD_RATE && Instant::now() < deadline {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(n) = l.strip_prefix("pushed ").and_then(|n| n.parse().ok()) {
                    pushed = n;
                }
            }
            _ => break,
        }
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // Whatever the child printed before dying was pushed before the kill.
    for l in lines.map_while(Result::ok) {
        if let Some(n) = l.strip_prefix("pushed ").and_then(|n| n.parse().ok()) {
            pushed = n;
        }
    }
    assert!(
        pushed >= 3 * CHILD_RATE,
        "the child pushed only {pushed} points"
    );
    let (mut s, report) = Spool::open(SpoolConfig {
        dir: spool.path().to_owned(),
        max_size: ByteSize(2 << 30),
        segment_size: ByteSize(16 << 20),
        fsync: FsyncPolicy::Never,
        fsync_interval: Duration::from_secs(1),
        quarantine_size: ByteSize(1 << 20),
    })
    .expect("open the spool");
    let mut values = Vec::new();
    while let Some(r) = s.next_backlog().expect("read").record {
        for l in r.lines {
            let v = l
                .split("value=")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|t| t.parse::<usize>().ok());
            values.push(v.unwrap_or_else(|| panic!("unexpected line {l:?}")));
        }
    }
    let survived = values.len();
    let want: Vec<usize> = (0..survived).collect();
    assert_eq!(
        values, want,
        "the spool holds a gap-free, duplicate-free prefix of what was pushed"
    );
    let lost = pushed - survived;
    let lost_ms = lost as f64 * 1000.0 / CHILD_RATE as f64;
    println!(
        "kill -9: pushed {pushed}, spooled {survived}, lost {lost} points = {lost_ms:.0} ms of data \
         (flush_interval {CHILD_FLUSH_MS} ms; torn bytes cut on open: {})",
        report.truncated_bytes
    );
    // The design bound is one flush interval; a second of slack absorbs scheduling on a loaded
    // machine. Without a spool, all of it would be lost.
    assert!(
        lost_ms <= (CHILD_FLUSH_MS + 1000) as f64,
        "lost {lost_ms:.0} ms of data"
    );
}
