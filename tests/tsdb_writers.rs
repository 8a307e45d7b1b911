//! The InfluxDB writers against real servers: influxd (v1 `/write`, read back with InfluxQL) and
//! VictoriaMetrics (v2 `/api/v2/write`, read back through its export API).

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hazgate::config::{self, ResolvedChannel};
use hazgate::model::{BadReason, ChannelId, DeviceId, Reading, Sample};
use hazgate::state::SharedState;
use hazgate::telemetry::Metrics;
use hazgate::tsdb::line::encode_sample;
use hazgate::tsdb::writer::{OutputQueue, Writer};
use tokio_util::sync::CancellationToken;

fn output_config(output: &str) -> config::Resolved {
    let text = format!("[site]\nid = \"s\"\n{output}");
    let cfg = config::parse(&text, Path::new("test.toml")).expect("parses");
    config::validate(&cfg, Path::new(".")).expect("valid").0
}

fn awkward_channel() -> ResolvedChannel {
    ResolvedChannel {
        id: ChannelId::new("tank farm,1.t=101.\"level\""),
        device: DeviceId::new("t 101"),
        area: "东区 tank,farm=1".into(),
        kind: "tank_level".into(),
        unit: "m³".into(),
        label: String::new(),
        range: None,
        max_age: Duration::from_secs(5),
        states: Default::default(),
        device_name: String::new(),
    }
}

fn lines(ch: &ResolvedChannel, n: usize, t0: SystemTime) -> Vec<String> {
    (0..n)
        .map(|i| {
            let reading = if i == 3 {
                Reading::Bad(BadReason::Comm {
                    detail: "no answer \"unit 3\"".into(),
                })
            } else {
                Reading::Good(i as f64 + 0.5)
            };
            let s = Sample {
                channel: ch.id.clone(),
                ts: t0 + Duration::from_millis(i as u64),
                reading,
            };
            let mut l = String::new();
            encode_sample("s", ch, &s, &mut l);
            l
        })
        .collect()
}

async fn run_writer(
    cfg: &config::Resolved,
    queue: Arc<OutputQueue>,
    metrics: Arc<Metrics>,
) -> (
    Arc<SharedState>,
    tokio::task::JoinHandle<()>,
    CancellationToken,
) {
    let state = Arc::new(SharedState::new(cfg));
    let w =
        Writer::new(cfg.outputs[0].clone(), None, queue, state.clone(), metrics).expect("writer");
    let deadline = CancellationToken::new();
    let h = tokio::spawn(w.run(deadline.clone()));
    (state, h, deadline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_write_escapes_awkward_names_and_reads_back() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE t1").await;
        let cfg = output_config(&format!(
            "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"{}\"\ndatabase = \"t1\"\nflush_interval = \"100ms\"\nbatch_size = 3\n",
            influx.url()
        ));
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 1000, metrics.clone()));
        let ch = awkward_channel();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        q.push(lines(&ch, 10, t0));
        q.close();
        let (_state, h, _deadline) = run_writer(&cfg, q, metrics.clone()).await;
        h.await.expect("writer ends after draining");
        let v = support::influxql(&influx, "t1", "SELECT value, quality, reason, channel, area, device, unit FROM reading ORDER BY time").await;
        let series = &v["results"][0]["series"][0];
        let rows = series["values"].as_array().unwrap_or_else(|| panic!("no rows: {v}"));
        assert_eq!(rows.len(), 10, "{v}");
        let t0ns = 1_700_000_000_000_000_000i64;
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r[0].as_i64(), Some(t0ns + i as i64 * 1_000_000), "timestamp of row {i}");
            assert_eq!(r[4], ch.id.as_str(), "channel tag");
            assert_eq!(r[5], "东区 tank,farm=1", "area tag");
            assert_eq!(r[6], "t 101");
            assert_eq!(r[7], "m³");
            if i == 3 {
                assert!(r[1].is_null(), "a bad reading has no value: {r}");
                assert_eq!(r[2], "bad");
                assert_eq!(r[3], "comm");
            } else {
                assert_eq!(r[1].as_f64(), Some(i as f64 + 0.5));
                assert_eq!(r[2], "good");
            }
        }
        let text = metrics.encode();
        assert!(text.contains("hazgate_points_written_total{output=\"o\"} 10"), "{text}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_outage_is_retried_without_loss_or_duplicates() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE t2").await;
        let cfg = output_config(&format!(
            "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"{}\"\ndatabase = \"t2\"\nflush_interval = \"100ms\"\nbatch_size = 50\ntimeout = \"1s\"\n",
            influx.url()
        ));
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 100_000, metrics.clone()));
        let (state, h, _deadline) = run_writer(&cfg, q.clone(), metrics.clone()).await;
        let ch = awkward_channel();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let all = lines(&ch, 300, t0);
        q.push(all[..100].to_vec());
        support::eventually(Duration::from_secs(20), "first 100 points written", || {
            let m = metrics.encode();
            async move { m.contains("hazgate_points_written_total{output=\"o\"} 100").then_some(()) }
        })
        .await;
        influx.kill();
        q.push(all[100..200].to_vec());
        support::eventually(Duration::from_secs(20), "the output reported unhealthy", || {
            let nr = state.health.not_ready();
            async move { nr.iter().any(|r| r.starts_with("output o:")).then_some(()) }
        })
        .await;
        assert!(metrics.encode().contains("hazgate_write_errors_total"));
        assert!(
            metrics
                .encode()
                .contains("hazgate_output_write_duration_seconds_count{output="),
            "write latency histogram"
        );
        influx.restart();
        q.push(all[200..].to_vec());
        q.close();
        h.await.expect("writer drains after recovery");
        let v = support::influxql(&influx, "t2", "SELECT count(quality) FROM reading").await;
        assert_eq!(v["results"][0]["series"][0]["values"][0][1].as_i64(), Some(300), "{v}");
        assert!(state.health.not_ready().is_empty(), "healthy again");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_write_to_victoria_metrics() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let vm = support::victoria_metrics();
        let cfg = output_config(&format!(
            "[[outputs]]\nkind = \"influxdb_v2\"\nid = \"o\"\nurl = \"{}\"\norg = \"site\"\nbucket = \"b\"\nflush_interval = \"100ms\"\n",
            vm.url()
        ));
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(OutputQueue::new("o", 1000, metrics.clone()));
        let ch = awkward_channel();
        let t0 = SystemTime::now() - Duration::from_secs(60);
        q.push(lines(&ch, 10, t0));
        q.close();
        let (_s, h, _d) = run_writer(&cfg, q, metrics).await;
        h.await.expect("writer drains");
        let client = reqwest::Client::new();
        let body = support::eventually(Duration::from_secs(20), "points visible in VictoriaMetrics", || {
            let client = client.clone();
            let url = format!("{}/api/v1/export", vm.url());
            async move {
                let _ = client.get(format!("{}/internal/force_flush", url.trim_end_matches("/api/v1/export"))).send().await;
                let r = client.get(&url).query(&[("match[]", "reading_value")]).send().await.ok()?;
                let t = r.text().await.ok()?;
                (t.matches("\"values\"").count() >= 1 && t.contains("9.5")).then_some(t)
            }
        })
        .await;
        assert!(body.contains("\"area\":\"东区 tank,farm=1\""), "{body}");
        assert!(body.contains("\"device\":\"t 101\""), "{body}");
        // Nine good readings, the bad one has no value field.
        let line: serde_json::Value = serde_json::from_str(body.lines().next().expect("one series")).expect("json");
        assert_eq!(line["values"].as_array().map(Vec::len), Some(9), "{body}");
    })
    .await
    .expect("test timed out");
}
