//! Time-series benchmarks; figures are printed, not asserted. Run with `cargo bench --bench tsdb`.
//!
//! 1. Line-protocol encoding on one core (target ≥ 200k points/s).
//! 2. End to end to a local influxd (v1 `/write`, gzip, batches of 5,000): points/s and the
//!    gateway's CPU time per 100k points.
//! 3. Replay of a spooled 10-minute outage of 2,000 channels at 1 Hz (1.2M points, target under
//!    30 s): spooled while influxd is down, then timed from its restart until all are written.
//!
//! 2 and 3 run with `max_in_flight` = 1, 2 (the default) and 4 (end to end) / 1 and 2 (replay).
//! 4. The engine's hand-off (`tsdb::Fanout`) to one output: raw, with reduction, downsampled.

#[allow(
    dead_code,
    reason = "the benchmark uses part of the test support module"
)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hazgate::config::{self, ResolvedChannel};
use hazgate::model::{ChannelId, DeviceId, Reading, Sample};
use hazgate::state::SharedState;
use hazgate::telemetry::Metrics;
use hazgate::tsdb::Fanout;
use hazgate::tsdb::line::encode_sample;
use hazgate::tsdb::writer::{OutputQueue, Writer};
use tokio_util::sync::CancellationToken;

fn channels(n: usize) -> Vec<ResolvedChannel> {
    (0..n)
        .map(|i| ResolvedChannel {
            id: ChannelId::new(format!("area{}.gt{:04}.gas", i / 100, i)),
            device: DeviceId::new(format!("gt{i:04}")),
            area: format!("area {}", i / 100),
            kind: "combustible_gas".into(),
            unit: "%LEL".into(),
            label: String::new(),
            range: None,
            max_age: Duration::from_secs(5),
            states: Default::default(),
            device_name: String::new(),
        })
        .collect()
}

/// `seconds` of 1 Hz readings from every channel, encoded.
fn encode_all(chs: &[ResolvedChannel], t0: SystemTime, seconds: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(chs.len() * seconds);
    for s in 0..seconds {
        for (i, ch) in chs.iter().enumerate() {
            let sample = Sample {
                channel: ch.id.clone(),
                ts: t0 + Duration::from_secs(s as u64),
                reading: Reading::Good((i * 7 + s) as f64 * 0.125),
            };
            let mut l = String::with_capacity(160);
            encode_sample("site-a", ch, &sample, &mut l);
            out.push(l);
        }
    }
    out
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name; ticks of 10 ms.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
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

fn output(url: &str, db: &str, spool: Option<&Path>, in_flight: usize) -> config::Resolved {
    let spool = spool.map_or(String::new(), |d| {
        format!(
            "spool = {{ dir = \"{}\", fsync = \"interval\" }}\n",
            d.display()
        )
    });
    let text = format!(
        "[site]\nid = \"s\"\n[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"{url}\"\ndatabase = \"{db}\"\n\
         batch_size = 5000\nflush_interval = \"1s\"\ntimeout = \"30s\"\nqueue_capacity = 2000000\n\
         max_in_flight = {in_flight}\n{spool}"
    );
    let cfg = config::parse(&text, Path::new("bench.toml")).expect("parses");
    config::validate(&cfg, Path::new(".")).expect("valid").0
}

async fn wait_for(m: &Metrics, series: &str, n: u64, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if metric(m, series) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn bench_encode() {
    let chs = channels(2000);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // Warm up, then the best of three runs of 1M points.
    let _ = encode_all(&chs, t0, 50);
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let lines = encode_all(&chs, t0, 500);
        let el = start.elapsed().as_secs_f64();
        bytes = lines.iter().map(String::len).sum::<usize>() / lines.len();
        best = best.min(el);
        std::hint::black_box(lines);
    }
    println!(
        "encode: {:.0} points/s on one core ({bytes} bytes a point)",
        1_000_000.0 / best
    );
}

async fn bench_end_to_end(in_flight: usize) {
    let influx = support::influxd();
    support::influxql(&influx, "", "CREATE DATABASE bench").await;
    let cfg = output(&influx.url(), "bench", None, in_flight);
    let chs = channels(2000);
    let now = SystemTime::now() - Duration::from_secs(3600);
    let lines = encode_all(&chs, now, 500);
    let n = lines.len() as u64;
    let metrics = Arc::new(Metrics::new());
    let q = Arc::new(OutputQueue::new("o", 2_000_000, metrics.clone()));
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
    let cpu0 = cpu_time();
    let start = Instant::now();
    q.push(lines);
    q.close();
    h.await.expect("writer");
    let el = start.elapsed();
    let cpu = cpu_time() - cpu0;
    let written = metric(&metrics, "hazgate_points_written_total{output=\"o\"}");
    println!(
        "end to end (influxd v1, gzip, 5,000 a batch, no spool, max_in_flight {in_flight}): {written} of {n} points in {:.2} s = {:.0} points/s; \
         gateway CPU {:.0} ms per 100k points",
        el.as_secs_f64(),
        written as f64 / el.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 * 100_000.0 / n as f64
    );
}

async fn bench_replay(in_flight: usize) {
    let mut influx = support::influxd();
    support::influxql(&influx, "", "CREATE DATABASE replay").await;
    influx.kill();
    let spool = tempfile::tempdir().expect("tmp");
    let cfg = output(&influx.url(), "replay", Some(spool.path()), in_flight);
    let chs = channels(2000);
    let now = SystemTime::now() - Duration::from_secs(3600);
    let metrics = Arc::new(Metrics::new());
    let q = Arc::new(OutputQueue::new("o", 2_000_000, metrics.clone()));
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
    // Ten minutes of data, pushed one second at a time (as the engine would, only faster).
    let lines = encode_all(&chs, now, 600);
    let n = lines.len() as u64;
    let spool_start = Instant::now();
    let cpu0 = cpu_time();
    let mut it = lines.into_iter();
    loop {
        let chunk: Vec<String> = it.by_ref().take(2000).collect();
        if chunk.is_empty() {
            break;
        }
        q.push(chunk);
    }
    // Two batches are held by the sender (in flight, live slot) and counted in the spool too.
    if !wait_for(
        &metrics,
        "hazgate_spool_points{output=\"o\"}",
        n,
        Duration::from_secs(120),
    )
    .await
    {
        println!("replay: spooling did not finish within 120 s");
        return;
    }
    let spooled_in = spool_start.elapsed();
    let spool_cpu = cpu_time() - cpu0;
    let bytes = metric(&metrics, "hazgate_spool_bytes{output=\"o\"}");
    influx.restart();
    let start = Instant::now();
    let cpu1 = cpu_time();
    let ok = wait_for(
        &metrics,
        "hazgate_points_written_total{output=\"o\"}",
        n,
        Duration::from_secs(300),
    )
    .await;
    let el = start.elapsed();
    let cpu = cpu_time() - cpu1;
    q.close();
    let _ = h.await;
    let written = metric(&metrics, "hazgate_points_written_total{output=\"o\"}");
    let v = support::influxql(&influx, "replay", "SELECT count(value) FROM reading").await;
    let stored = v["results"][0]["series"][0]["values"][0][1]
        .as_i64()
        .unwrap_or(0);
    println!(
        "spool: {n} points ({:.0} MiB) spooled in {:.2} s = {:.0} points/s, CPU {:.0} ms per 100k points",
        bytes as f64 / (1 << 20) as f64,
        spooled_in.as_secs_f64(),
        n as f64 / spooled_in.as_secs_f64(),
        spool_cpu.as_secs_f64() * 1000.0 * 100_000.0 / n as f64
    );
    println!(
        "replay (10-minute outage, 2,000 channels at 1 Hz, max_in_flight {in_flight}): {written} of {n} points written{} in {:.2} s = {:.0} points/s \
         (target under 30 s); gateway CPU {:.0} ms per 100k points; influxd counts {stored}",
        if ok { "" } else { " (INCOMPLETE)" },
        el.as_secs_f64(),
        written as f64 / el.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 * 100_000.0 / n as f64
    );
}

/// The engine's hand-off: 2,000 channels, 300 steps of one reading each, into one output
/// (raw, reduced with a 1 % deadband on slowly drifting values, downsampled per minute).
fn bench_fanout() {
    let chs = channels(2000);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_040);
    let steps: Vec<Vec<Sample>> = (0..300u64)
        .map(|s| {
            chs.iter()
                .enumerate()
                .map(|(i, ch)| Sample {
                    channel: ch.id.clone(),
                    ts: t0 + Duration::from_secs(s),
                    // Mostly within 1 % of a 0–100 range, a jump every 50 s.
                    reading: Reading::Good(
                        (i % 50) as f64 + (s % 7) as f64 * 0.1 + (s / 50) as f64,
                    ),
                })
                .collect()
        })
        .collect();
    let n = 2000 * 300;
    for (name, extra) in [
        ("raw", ""),
        (
            "reduction (deadband 1 %, heartbeat 60 s)",
            "reduction = { deadband_percent = 1.0, heartbeat = \"60s\" }\n",
        ),
        ("downsample (1 min)", "downsample = { window = \"1m\" }\n"),
    ] {
        let text = format!(
            "[site]\nid = \"s\"\n[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\n\
             url = \"http://127.0.0.1:9\"\ndatabase = \"d\"\nqueue_capacity = 2000000\n{extra}"
        );
        let cfg = config::parse(&text, Path::new("bench.toml")).expect("parses");
        let mut cfg = config::validate(&cfg, Path::new(".")).expect("valid").0;
        cfg.channels = chs
            .iter()
            .map(|c| ResolvedChannel {
                range: Some([0.0, 100.0]),
                ..c.clone()
            })
            .collect();
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 2_000_000, metrics.clone()));
        let mut f = Fanout::new(&cfg, vec![q]);
        let start = Instant::now();
        for (k, step) in steps.iter().enumerate() {
            f.publish_at(step, &[], t0 + Duration::from_secs(k as u64));
        }
        f.close();
        let el = start.elapsed().as_secs_f64();
        let lines = metric(&metrics, "hazgate_output_queue_points{output=\"o\"}");
        println!(
            "fanout {name}: {:.0} samples/s on one core, {lines} lines out of {n} samples",
            n as f64 / el
        );
    }
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("tsdb benchmark: run with `cargo bench --bench tsdb`");
        return;
    }
    bench_encode();
    bench_fanout();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for in_flight in [1, 2, 4] {
            bench_end_to_end(in_flight).await;
        }
        for in_flight in [1, 2] {
            bench_replay(in_flight).await;
        }
    });
}
