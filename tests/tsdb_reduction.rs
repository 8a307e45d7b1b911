//! Per-output reduction, downsampling, precision, 413 splitting and bounded concurrency, end to
//! end: the engine's hand-off ([`Fanout`]) → output queue → writer → a real influxd (read back
//! with InfluxQL), or a tiny axum server on port 0 standing in for InfluxDB where a behaviour
//! (413 above a size, slow answers) must be forced.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use hazgate::config::{self, ResolvedChannel};
use hazgate::model::{
    AlarmEvent, BadReason, ChannelId, DeviceId, Priority, Reading, Sample, Transition,
};
use hazgate::state::SharedState;
use hazgate::telemetry::Metrics;
use hazgate::tsdb::Fanout;
use hazgate::tsdb::writer::{OutputQueue, Writer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// 2023-11-14T22:14:00Z: a whole minute, so windows of one minute start here.
const T0: u64 = 1_700_000_040;
const NS: i64 = 1_000_000_000;

fn channel(id: &str) -> ResolvedChannel {
    ResolvedChannel {
        id: ChannelId::new(id),
        device: DeviceId::new("gd1"),
        area: "east".into(),
        kind: "combustible_gas".into(),
        unit: "%LEL".into(),
        label: String::new(),
        range: Some([0.0, 100.0]),
        max_age: Duration::from_secs(5),
        states: Default::default(),
        device_name: String::new(),
    }
}

/// A validated config with these outputs, plus channels (added after validation: they would
/// otherwise need Modbus devices).
fn resolved(outputs: &str, channels: &[&str]) -> config::Resolved {
    let text = format!("[site]\nid = \"s\"\n{outputs}");
    let cfg = config::parse(&text, Path::new("test.toml")).expect("parses");
    let mut r = config::validate(&cfg, Path::new(".")).expect("valid").0;
    r.channels = channels.iter().map(|c| channel(c)).collect();
    r
}

fn v1(id: &str, url: &str, db: &str, extra: &str) -> String {
    format!(
        "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"{id}\"\nurl = \"{url}\"\ndatabase = \"{db}\"\n\
         flush_interval = \"100ms\"\nbatch_size = 100\ntimeout = \"5s\"\n{extra}"
    )
}

fn at(ch: &str, ns: i64, reading: Reading) -> Sample {
    Sample {
        channel: ChannelId::new(ch),
        ts: SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64),
        reading,
    }
}

fn comm() -> Reading {
    Reading::Bad(BadReason::Comm {
        detail: "no answer".into(),
    })
}

fn metric(m: &Metrics, series: &str) -> u64 {
    m.encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

/// Starts one writer per output of `cfg`; returns the fanout over their queues.
fn start(
    cfg: &config::Resolved,
    metrics: &Arc<Metrics>,
) -> (Fanout, Vec<JoinHandle<()>>, Arc<SharedState>) {
    let state = Arc::new(SharedState::new(cfg));
    let mut queues = Vec::new();
    let mut handles = Vec::new();
    for o in &cfg.outputs {
        let q = Arc::new(OutputQueue::new(o.id(), 100_000, metrics.clone()));
        let w = Writer::new(o.clone(), None, q.clone(), state.clone(), metrics.clone())
            .expect("writer");
        handles.push(tokio::spawn(w.run(CancellationToken::new())));
        queues.push(q);
    }
    (Fanout::new(cfg, queues), handles, state)
}

/// A row as text: numbers through f64 (InfluxDB prints `0.0` as `0`), null as `null`.
fn norm(row: &[serde_json::Value]) -> Vec<String> {
    row.iter()
        .map(|v| match v {
            serde_json::Value::Number(n) => {
                n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string())
            }
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn svec(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// `(time ns, column values…)` rows of the first series of an InfluxQL answer.
fn rows(v: &serde_json::Value) -> Vec<Vec<serde_json::Value>> {
    v["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {v}"))
        .iter()
        .map(|r| r.as_array().expect("row").clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduction_and_downsampling_read_back_from_influxd() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let influx = support::influxd();
        for db in ["raw", "reduced", "slow"] {
            support::influxql(&influx, "", &format!("CREATE DATABASE {db}")).await;
        }
        let url = influx.url();
        let cfg = resolved(
            &format!(
                "{}{}{}",
                v1("raw", &url, "raw", ""),
                v1(
                    "reduced",
                    &url,
                    "reduced",
                    "reduction = { deadband = 0.5, heartbeat = \"10s\" }\n"
                ),
                v1("slow", &url, "slow", "downsample = { window = \"1m\" }\n"),
            ),
            &["east.gd1.lel", "east.gd2.lel"],
        );
        let metrics = Arc::new(Metrics::new());
        let (mut fanout, handles, _state) = start(&cfg, &metrics);

        // gd1, one reading a second: (second, reading, written by the reduced output?)
        let script: Vec<(i64, Reading, bool)> = vec![
            (0, Reading::Good(10.0), true),  // first
            (1, Reading::Good(10.2), false), // inside the deadband
            (2, Reading::Good(10.4), false),
            (3, Reading::Good(11.0), true), // moved 1.0 from 10.0
            (4, Reading::Good(11.2), false),
            (5, Reading::Good(11.2), false),
            (6, Reading::Good(11.1), false),
            (7, Reading::Good(11.2), false),
            (8, Reading::Good(11.2), false),
            (9, Reading::Good(11.2), false),
            (10, Reading::Good(11.2), false),
            (11, Reading::Good(11.2), false),
            (12, Reading::Good(11.2), false),
            (13, Reading::Good(11.2), true), // heartbeat: 10 s after second 3
            (14, comm(), true),              // bad: always
            (15, comm(), true),
            (16, Reading::Good(11.2), true), // first good after bad, unchanged
            (17, Reading::Good(11.3), false),
            (18, Reading::Good(40.0), true),
        ];
        let t0 = T0 as i64 * NS;
        let mut samples: Vec<Sample> = script
            .iter()
            .map(|(s, r, _)| at("east.gd1.lel", t0 + s * NS, r.clone()))
            .collect();
        // gd2: three minutes at 1 Hz for the downsampled output, with a bad reading at second 70
        // and an incomplete third minute (written at close).
        for s in 0..150i64 {
            let r = if s == 70 {
                comm()
            } else {
                Reading::Good((s % 60) as f64 + if s >= 60 { 100.0 } else { 0.0 })
            };
            samples.push(at("east.gd2.lel", t0 + s * NS, r));
        }
        let event = AlarmEvent {
            seq: 1,
            alarm: "east.gd1.lel:fault".into(),
            channel: ChannelId::new("east.gd1.lel"),
            condition: "fault".into(),
            priority: Priority::High,
            transition: Transition::Fault,
            value: None,
            limit: None,
            message: "east.gd1.lel fault: no answer".into(),
            ts: SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + 14),
            class: hazgate::model::AlarmClass::Fault,
            kind: "combustible_gas".into(),
            state: hazgate::model::AlarmState::ActiveUnacknowledged,
            by: None,
            comment: None,
            raised_at: None,
            notice: Default::default(),
        };
        // "Now" right after the data: windows are closed by later samples or at close.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + 150);
        fanout.publish_at(&samples, std::slice::from_ref(&event), now);
        fanout.close();
        for h in handles {
            h.await.expect("writer drains");
        }

        // Raw: every reading.
        let v = support::influxql(&influx, "raw", "SELECT count(quality) FROM reading WHERE channel = 'east.gd1.lel'").await;
        assert_eq!(rows(&v)[0][1], 19, "{v}");

        // Reduced: exactly the expected points, with their values and qualities.
        let v = support::influxql(
            &influx,
            "reduced",
            "SELECT value, quality FROM reading WHERE channel = 'east.gd1.lel'",
        )
        .await;
        let got: Vec<(i64, Option<f64>, String)> = rows(&v)
            .iter()
            .map(|r| {
                (
                    (r[0].as_i64().expect("time") - t0) / NS,
                    r[1].as_f64(),
                    r[2].as_str().expect("quality").to_owned(),
                )
            })
            .collect();
        let want: Vec<(i64, Option<f64>, String)> = script
            .iter()
            .filter(|(_, _, keep)| *keep)
            .map(|(s, r, _)| {
                let q = if r.value().is_some() { "good" } else { "bad" };
                (*s, r.value(), q.to_owned())
            })
            .collect();
        assert_eq!(got, want, "deadband, heartbeat and quality transitions");
        let suppressed = metric(&metrics, "hazgate_points_suppressed_total{output=\"reduced\"}");
        assert_eq!(suppressed, 12, "gd1's suppressed readings are counted; gd2 loses none");
        let v = support::influxql(&influx, "reduced", "SELECT count(value) FROM reading WHERE channel = 'east.gd2.lel'").await;
        // gd2 cycles 0..59 then 100..: each step of 1.0 beats the deadband, so nothing is cut.
        assert_eq!(rows(&v)[0][1], 149, "{v}");
        // Alarm events reach every output, reduced or not.
        for db in ["raw", "reduced", "slow"] {
            let v = support::influxql(&influx, db, "SELECT alarm FROM alarm_event").await;
            assert_eq!(rows(&v).len(), 1, "{db}: {v}");
        }

        // Downsampled: one point a minute, no raw readings.
        let v = support::influxql(&influx, "slow", "SHOW MEASUREMENTS").await;
        let names: Vec<&str> = v["results"][0]["series"][0]["values"]
            .as_array()
            .expect("measurements")
            .iter()
            .filter_map(|r| r[0].as_str())
            .collect();
        assert_eq!(names, vec!["alarm_event", "reading_1m"]);
        let v = support::influxql(
            &influx,
            "slow",
            "SELECT min, max, mean, \"count\", bad_count, quality, reason FROM reading_1m WHERE channel = 'east.gd2.lel'",
        )
        .await;
        let got: Vec<Vec<String>> = rows(&v).iter().map(|r| norm(r)).collect();
        let m = |k: i64| ((t0 + k * 60 * NS) as f64).to_string();
        // Minute 1: 100..159 without second 70 (bad): 59 good readings.
        let mean1 = (((100..160).sum::<i64>() - 110) as f64 / 59.0).to_string();
        assert_eq!(
            got,
            vec![
                svec(&[&m(0), "0", "59", "29.5", "60", "0", "good", "null"]),
                svec(&[&m(1), "100", "159", &mean1, "59", "1", "mixed", "comm"]),
                // Minute 2: the 30 readings seen before the close.
                svec(&[&m(2), "100", "129", "114.5", "30", "0", "good", "null"]),
            ]
        );
        // gd1 over its 19 seconds: one window.
        let v = support::influxql(&influx, "slow", "SELECT min, max, \"count\", bad_count, quality FROM reading_1m WHERE channel = 'east.gd1.lel'").await;
        assert_eq!(
            rows(&v).iter().map(|r| norm(r)).collect::<Vec<_>>(),
            vec![svec(&[&m(0), "10", "40", "17", "2", "mixed"])]
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coarse_precision_floors_unaligned_timestamps() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let influx = support::influxd();
        let url = influx.url();
        let mut outputs = String::new();
        for p in ["s", "ms", "us", "ns"] {
            support::influxql(&influx, "", &format!("CREATE DATABASE p_{p}")).await;
            outputs += &v1(
                p,
                &url,
                &format!("p_{p}"),
                &format!("precision = \"{p}\"\n"),
            );
        }
        let cfg = resolved(&outputs, &["east.gd1.lel", "east.gd2.lel"]);
        let metrics = Arc::new(Metrics::new());
        let (mut fanout, handles, _state) = start(&cfg, &metrics);
        let base = 1_700_000_001i64 * NS;
        // None of these is aligned to a second, millisecond or microsecond.
        let a = base + 999_999_999; // just before the next second
        let b = base + NS + 1; // just after it
        let c = base + 123_456_789;
        fanout.publish_at(
            &[
                at("east.gd1.lel", a, Reading::Good(1.0)),
                at("east.gd1.lel", b, Reading::Good(2.0)),
                // gd2: two readings in the same second; at `s` precision the later one wins.
                at("east.gd2.lel", c, Reading::Good(3.0)),
                at("east.gd2.lel", a, Reading::Good(4.0)),
            ],
            &[],
            SystemTime::now(),
        );
        fanout.close();
        for h in handles {
            h.await.expect("writer drains");
        }
        let floor = |t: i64, unit: i64| t.div_euclid(unit) * unit;
        for (p, unit) in [("s", NS), ("ms", 1_000_000), ("us", 1_000), ("ns", 1)] {
            let db = format!("p_{p}");
            let v = support::influxql(
                &influx,
                &db,
                "SELECT value FROM reading WHERE channel = 'east.gd1.lel'",
            )
            .await;
            let times: Vec<(i64, f64)> = rows(&v)
                .iter()
                .map(|r| (r[0].as_i64().expect("t"), r[1].as_f64().expect("v")))
                .collect();
            assert_eq!(
                times,
                vec![(floor(a, unit), 1.0), (floor(b, unit), 2.0)],
                "precision {p}"
            );
            let v = support::influxql(
                &influx,
                &db,
                "SELECT value FROM reading WHERE channel = 'east.gd2.lel'",
            )
            .await;
            let times: Vec<(i64, f64)> = rows(&v)
                .iter()
                .map(|r| (r[0].as_i64().expect("t"), r[1].as_f64().expect("v")))
                .collect();
            let want = if p == "s" {
                // Same second: one point, the one written last.
                vec![(floor(c, unit), 4.0)]
            } else {
                vec![(floor(c, unit), 3.0), (floor(a, unit), 4.0)]
            };
            assert_eq!(times, want, "precision {p}");
        }
        assert_eq!(
            floor(a, NS),
            base,
            "floored, never rounded up into the next second"
        );
    })
    .await
    .expect("test timed out");
}

/// A stand-in for InfluxDB's `/write`: 413 for bodies above `limit` bytes, optional delay,
/// records accepted lines and the largest number of requests seen at once.
#[derive(Debug, Default)]
struct Fake {
    limit: usize,
    delay: Duration,
    lines: Mutex<Vec<String>>,
    too_large: AtomicUsize,
    current: AtomicUsize,
    max: AtomicUsize,
}

async fn write(State(f): State<Arc<Fake>>, body: Bytes) -> (StatusCode, String) {
    let now = f.current.fetch_add(1, Ordering::SeqCst) + 1;
    f.max.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(f.delay).await;
    f.current.fetch_sub(1, Ordering::SeqCst);
    if body.len() > f.limit {
        f.too_large.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{{\"error\":\"body of {} bytes over {}\"}}",
                body.len(),
                f.limit
            ),
        );
    }
    let text = String::from_utf8_lossy(&body);
    f.lines
        .lock()
        .expect("lock")
        .extend(text.lines().map(str::to_owned));
    (StatusCode::NO_CONTENT, String::new())
}

async fn fake_influx(f: Arc<Fake>) -> String {
    let app = Router::new().route("/write", post(write)).with_state(f);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

fn point(i: usize) -> String {
    format!(
        "reading,site=s,channel=c{} value={i} {}\n",
        i % 4,
        1_700_000_000_000_000_000i64 + i as i64 * 1_000_000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_splits_the_batch_and_delivers_everything() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let fake = Arc::new(Fake {
            limit: 2000,
            ..Fake::default()
        });
        let url = fake_influx(fake.clone()).await;
        let cfg = resolved(
            &v1("o", &url, "db", "gzip = false\nbatch_size = 200\n")
                .replace("batch_size = 100\n", ""),
            &[],
        );
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 10_000, metrics.clone()));
        let state = Arc::new(SharedState::new(&cfg));
        let w = Writer::new(
            cfg.outputs[0].clone(),
            None,
            q.clone(),
            state,
            metrics.clone(),
        )
        .expect("writer");
        let h = tokio::spawn(w.run(CancellationToken::new()));
        // ~62 bytes a point: a batch of 200 is ~12 KB, six times the limit; one point is larger
        // than the limit on its own and can never be accepted.
        let mut lines: Vec<String> = (0..400).map(point).collect();
        let huge = format!(
            "reading,site=s,channel=big note=\"{}\" 1700000000000000000\n",
            "x".repeat(2500)
        );
        lines.insert(123, huge);
        q.push(lines);
        q.close();
        h.await.expect("writer drains");
        let mut got = fake.lines.lock().expect("lock").clone();
        got.sort();
        let mut want: Vec<String> = (0..400).map(|i| point(i).trim_end().to_owned()).collect();
        want.sort();
        assert_eq!(got.len(), 400, "every point delivered once");
        assert_eq!(got, want);
        assert!(
            fake.too_large.load(Ordering::SeqCst) > 2,
            "the server did answer 413"
        );
        assert_eq!(
            metric(&metrics, "hazgate_points_written_total{output=\"o\"}"),
            400
        );
        assert_eq!(
            metric(
                &metrics,
                "hazgate_points_dropped_total{output=\"o\",reason=\"invalid\"}"
            ),
            1,
            "only the point too large on its own is set aside"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_flight_are_bounded_by_max_in_flight() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let fake = Arc::new(Fake {
            limit: usize::MAX,
            delay: Duration::from_millis(150),
            ..Fake::default()
        });
        let url = fake_influx(fake.clone()).await;
        let spool = tempfile::tempdir().expect("tmp");
        let cfg = resolved(
            &v1(
                "o",
                &url,
                "db",
                &format!(
                    "gzip = false\nmax_in_flight = 3\nspool = {{ dir = \"{}\", segment_size = \"4KiB\", max_size = \"1MiB\" }}\n",
                    spool.path().display()
                ),
            )
            .replace("batch_size = 100", "batch_size = 10"),
            &[],
        );
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 10_000, metrics.clone()));
        let state = Arc::new(SharedState::new(&cfg));
        let w = Writer::new(cfg.outputs[0].clone(), None, q.clone(), state, metrics.clone())
            .expect("writer");
        let h = tokio::spawn(w.run(CancellationToken::new()));
        q.push((0..300).map(point));
        q.close();
        h.await.expect("writer drains");
        assert_eq!(fake.lines.lock().expect("lock").len(), 300);
        assert_eq!(
            fake.max.load(Ordering::SeqCst),
            3,
            "the spooled backlog keeps exactly max_in_flight requests in flight"
        );
        let left: Vec<_> = std::fs::read_dir(spool.path())
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "acknowledged out of order, every segment still deleted: {left:?}");
    })
    .await
    .expect("test timed out");
}
