//! When an output lets go of the receipts of MQTT readings (see `hazgate::receipt`): after
//! spooling them (whatever the server does, and without waiting for the flush interval), after
//! the server accepted them when there is no spool, and at the first failed attempt when there
//! is no spool (an output that is down must not stall the broker's window).

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hazgate::config;
use hazgate::receipt::Board;
use hazgate::state::SharedState;
use hazgate::telemetry::Metrics;
use hazgate::tsdb::writer::{OutputQueue, Writer};
use tokio_util::sync::CancellationToken;

fn output_config(output: &str) -> config::Resolved {
    let text = format!("[site]\nid = \"s\"\n{output}");
    let cfg = config::parse(&text, Path::new("test.toml")).expect("parses");
    config::validate(&cfg, Path::new(".")).expect("valid").0
}

fn start(cfg: &config::Resolved, metrics: Arc<Metrics>) -> (Arc<OutputQueue>, CancellationToken) {
    let q = Arc::new(OutputQueue::new("o", 10_000, metrics.clone()));
    let state = Arc::new(SharedState::new(cfg));
    let w = Writer::new(cfg.outputs[0].clone(), None, q.clone(), state, metrics).expect("writer");
    let deadline = CancellationToken::new();
    tokio::spawn(w.run(deadline.clone()));
    (q, deadline)
}

fn lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "reading,site=s,channel=c value={i} {}\n",
                1_700_000_000_000_000_000i64 + i as i64
            )
        })
        .collect()
}

/// Waits (at most `limit`) until receipt `seq` of `board` is complete.
async fn completed(board: &Board, seq: u64, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            if board.take(seq) {
                return;
            }
            board.notified().await;
        }
    })
    .await
    .is_ok()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_output_releases_receipts_once_spooled_while_the_server_is_down() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dead = support::free_port(); // nothing listens: every write fails
        let spool = tempfile::tempdir().expect("tmp");
        // A flush interval far longer than the wait below: the intake must not wait for it.
        let cfg = output_config(&format!(
            "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"http://127.0.0.1:{dead}\"\n\
             database = \"x\"\nflush_interval = \"10m\"\ntimeout = \"1s\"\nspool = {{ dir = \"{}\" }}\n",
            spool.path().display()
        ));
        let metrics = Arc::new(Metrics::new());
        let (q, deadline) = start(&cfg, metrics.clone());
        let board = Board::new();
        q.push_held(lines(5), board.issue(1));
        assert!(
            completed(&board, 1, Duration::from_secs(20)).await,
            "the receipt is released once the lines are spooled"
        );
        assert_eq!(metric(&metrics, "hazgate_spool_points{output=\"o\"}"), 5, "spooled, not sent");
        assert_eq!(metric(&metrics, "hazgate_points_written_total{output=\"o\"}"), 0);
        deadline.cancel();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_spool_receipts_wait_for_the_server_or_go_at_its_first_failure() {
    tokio::time::timeout(Duration::from_secs(90), async {
        // Down: released at the first failed attempt, and counted.
        let dead = support::free_port();
        let cfg = output_config(&format!(
            "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"http://127.0.0.1:{dead}\"\n\
             database = \"x\"\nflush_interval = \"10m\"\ntimeout = \"1s\"\n"
        ));
        let metrics = Arc::new(Metrics::new());
        let (q, deadline) = start(&cfg, metrics.clone());
        let board = Board::new();
        q.push_held(lines(3), board.issue(1));
        assert!(
            completed(&board, 1, Duration::from_secs(20)).await,
            "a failing output without spool does not hold the receipt"
        );
        assert_eq!(
            metric(&metrics, "hazgate_output_acks_released_total{output=\"o\"}"),
            1
        );
        deadline.cancel();

        // Up: released only once the server accepted the points.
        let influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE rc").await;
        let cfg = output_config(&format!(
            "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"{}\"\n\
             database = \"rc\"\nflush_interval = \"10m\"\ntimeout = \"5s\"\n",
            influx.url()
        ));
        let metrics = Arc::new(Metrics::new());
        let (q, deadline) = start(&cfg, metrics.clone());
        let board = Board::new();
        q.push_held(lines(4), board.issue(7));
        assert!(
            completed(&board, 7, Duration::from_secs(30)).await,
            "released after the write"
        );
        let v = support::influxql(&influx, "rc", "SELECT count(value) FROM reading").await;
        assert_eq!(
            v["results"][0]["series"][0]["values"][0][1].as_u64(),
            Some(4),
            "the points were in InfluxDB when the receipt was released: {v}"
        );
        assert_eq!(
            metric(&metrics, "hazgate_output_acks_released_total{output=\"o\"}"),
            0
        );
        deadline.cancel();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_group_commits_release_receipts_at_once_and_share_a_write_request() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE gc").await;
        let spool = tempfile::tempdir().expect("tmp");
        let cfg = output_config(&format!(
            "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"{}\"\n\
             database = \"gc\"\nflush_interval = \"2s\"\nbatch_size = 100\ntimeout = \"5s\"\n\
             spool = {{ dir = \"{}\" }}\n",
            influx.url(),
            spool.path().display()
        ));
        let metrics = Arc::new(Metrics::new());
        let (q, deadline) = start(&cfg, metrics.clone());
        let board = Board::new();
        let line = |i: i64| {
            format!(
                "reading,site=s,channel=c value={i} {}\n",
                1_700_000_000_000_000_000i64 + i
            )
        };
        // Ten group commits, each its own spool record (more than HELD_EVERY apart), each
        // receipt released once spooled: long before the flush interval.
        for k in 0..10u64 {
            let i = k as i64 * 3;
            q.push_held((i..i + 3).map(line).collect(), board.issue(k));
            assert!(
                completed(&board, k, Duration::from_millis(1500)).await,
                "receipt {k} released by the spool append, not by the write"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let requests = "hazgate_output_write_duration_seconds_count{output=\"o\"}";
        assert_eq!(
            metric(&metrics, requests),
            0,
            "no request before the flush interval"
        );
        assert_eq!(metric(&metrics, "hazgate_spool_points{output=\"o\"}"), 30);
        // The flush interval after the first record: one request carries all ten records.
        support::eventually(Duration::from_secs(10), "30 points written", || {
            let m = metrics.clone();
            async move {
                (metric(&m, "hazgate_points_written_total{output=\"o\"}") == 30).then_some(())
            }
        })
        .await;
        assert_eq!(
            metric(&metrics, requests),
            1,
            "one request for ten group commits"
        );
        assert_eq!(
            metric(&metrics, "hazgate_spool_points{output=\"o\"}"),
            0,
            "all acknowledged"
        );
        // batch_size still bounds a request: 40 group commits of 5 = 200 points, 100 a request.
        for k in 10..50u64 {
            let i = 1000 + k as i64 * 5;
            q.push_held((i..i + 5).map(line).collect(), board.issue(k));
            assert!(
                completed(&board, k, Duration::from_millis(1500)).await,
                "receipt {k}"
            );
            tokio::time::sleep(Duration::from_millis(6)).await;
        }
        support::eventually(Duration::from_secs(10), "230 points written", || {
            let m = metrics.clone();
            async move {
                (metric(&m, "hazgate_points_written_total{output=\"o\"}") == 230).then_some(())
            }
        })
        .await;
        let n = metric(&metrics, requests);
        assert!(
            (3..=4).contains(&n),
            "two requests of 100 for the 200 (plus at most one for a tail): {n}"
        );
        let v = support::influxql(&influx, "gc", "SELECT count(value) FROM reading").await;
        assert_eq!(
            v["results"][0]["series"][0]["values"][0][1].as_u64(),
            Some(230),
            "{v}"
        );
        deadline.cancel();
    })
    .await
    .expect("test timed out");
}
