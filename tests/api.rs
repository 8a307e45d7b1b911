//! The API router, called without a socket.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hazgate::api::{ApiState, app};
use hazgate::config;
use hazgate::model::{BadReason, ChannelId, Reading, Sample};
use hazgate::state::SharedState;
use hazgate::telemetry::Metrics;
use tower::ServiceExt;

fn state() -> (Arc<SharedState>, Arc<Metrics>) {
    let text = r#"
[site]
id = "s"
[[sources]]
kind = "modbus_tcp"
id = "bus"
address = "127.0.0.1:1502"
[[devices]]
id = "gd1"
area = "a"
source = "bus"
[[devices.registers]]
name = "lel"
table = "input"
address = 0
kind = "combustible_gas"
unit = "%LEL"
[[devices.registers]]
name = "o2"
table = "input"
address = 1
kind = "oxygen"
unit = "%VOL"
"#;
    let cfg = config::parse(text, Path::new("t.toml")).expect("parses");
    let (cfg, _) = config::validate(&cfg, Path::new(".")).expect("valid");
    (Arc::new(SharedState::new(&cfg)), Arc::new(Metrics::new()))
}

async fn get(s: &ApiState, path: &str) -> (StatusCode, String) {
    let resp = app(s.clone(), Duration::from_secs(5))
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn endpoints() {
    let (st, metrics) = state();
    let s = ApiState { state: st.clone(), metrics: metrics.clone() };
    assert_eq!(get(&s, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&s, "/readyz").await.0, StatusCode::OK);
    st.health.fail("source bus", "cannot connect to 127.0.0.1:1502: refused");
    let (code, body) = get(&s, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("source bus: cannot connect"), "{body}");

    let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    st.record(&Sample { channel: ChannelId::new("a.gd1.lel"), ts, reading: Reading::Good(12.5) }, vec![]);
    st.record(
        &Sample { channel: ChannelId::new("a.gd1.o2"), ts, reading: Reading::Bad(BadReason::Exception { code: 2 }) },
        vec!["fault".into()],
    );
    let (code, body) = get(&s, "/api/v1/channels").await;
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let chans = v["channels"].as_array().expect("array");
    assert_eq!(chans.len(), 2);
    assert_eq!(chans[0]["id"], "a.gd1.lel");
    assert_eq!(chans[0]["value"], 12.5);
    assert_eq!(chans[0]["quality"], "good");
    assert_eq!(chans[0]["unit"], "%LEL");
    assert_eq!(chans[0]["ts"], "2023-11-14T22:13:20Z");
    assert!(chans[1]["value"].is_null(), "a bad reading shows no value: {body}");
    assert_eq!(chans[1]["quality"], "bad");
    assert_eq!(chans[1]["alarms"][0], "fault");

    metrics.sample_queue_full.inc();
    let (code, body) = get(&s, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("hazgate_sample_queue_full_total 1"), "{body}");
    assert_eq!(get(&s, "/nope").await.0, StatusCode::NOT_FOUND);
}
