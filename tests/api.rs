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
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn endpoints() {
    let (st, metrics) = state();
    let s = ApiState {
        state: st.clone(),
        metrics: metrics.clone(),
        alarms: None,
        outbox: None,
        reload: None,
    };
    assert_eq!(get(&s, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&s, "/readyz").await.0, StatusCode::OK);
    st.health.fail(
        &hazgate::telemetry::Component::Source("bus".into()),
        "cannot connect to 127.0.0.1:1502: refused",
    );
    let (code, body) = get(&s, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("source bus: cannot connect"), "{body}");

    let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    st.record(
        &Sample {
            channel: ChannelId::new("a.gd1.lel"),
            ts,
            reading: Reading::Good(12.5),
        },
        vec![],
    );
    st.record(
        &Sample {
            channel: ChannelId::new("a.gd1.o2"),
            ts,
            reading: Reading::Bad(BadReason::Exception { code: 2 }),
        },
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
    assert!(
        chans[1]["value"].is_null(),
        "a bad reading shows no value: {body}"
    );
    assert_eq!(chans[1]["quality"], "bad");
    assert_eq!(chans[1]["alarms"][0], "fault");

    metrics.sample_queue_full.inc();
    let (code, body) = get(&s, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("hazgate_sample_queue_full_total 1"), "{body}");
    assert_eq!(get(&s, "/nope").await.0, StatusCode::NOT_FOUND);
}

/// The routes `src/api/*.rs` registers, with their methods: every `.route("PATH", …)` call (the
/// stream's path is `tickets::STREAM_PATH`). Read from the source so that a new route cannot be
/// left out of the document by forgetting to list it here.
fn registered_routes() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut routes =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    for entry in std::fs::read_dir(&dir).expect("src/api") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        for (at, _) in text.match_indices(".route(") {
            let rest = &text[at + ".route(".len()..];
            let rest = rest.trim_start();
            let (route, after) = if let Some(r) = rest.strip_prefix('"') {
                let end = r.find('"').expect("closing quote");
                (r[..end].to_owned(), &r[end + 1..])
            } else if let Some(r) = rest.strip_prefix("tickets::STREAM_PATH") {
                (hazgate::api::tickets::STREAM_PATH.to_owned(), r)
            } else {
                panic!(
                    "{}: a route whose path this test cannot read: {}",
                    path.display(),
                    &rest[..40.min(rest.len())]
                );
            };
            // The handler expression runs until the `)` that closes `.route(`.
            let mut depth = 1usize;
            let end = after
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("closing parenthesis of .route(");
            let handlers = &after[..end];
            let methods = routes.entry(route.clone()).or_default();
            for m in ["get", "post", "put", "delete", "patch"] {
                let bare = format!(" {m}(");
                let chained = format!(".{m}(");
                let routing = format!("routing::{m}(");
                if handlers.contains(&bare)
                    || handlers.contains(&chained)
                    || handlers.contains(&routing)
                {
                    methods.insert(m.to_owned());
                }
            }
            assert!(
                !methods.is_empty(),
                "{route}: no method found in {}",
                path.display()
            );
        }
    }
    routes
}

/// Every `$ref` in `v` names a schema of the document.
fn refs_resolve(doc: &serde_json::Value, v: &serde_json::Value, at: &str) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                let name = r.strip_prefix("#/components/schemas/").expect("local ref");
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{at}: $ref {r} names no schema"
                );
            }
            for (k, x) in m {
                refs_resolve(doc, x, &format!("{at}/{k}"));
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| refs_resolve(doc, x, at)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_documents_every_route_and_only_existing_ones() {
    let (st, metrics) = state();
    let s = ApiState {
        state: st,
        metrics,
        alarms: None,
        outbox: None,
        reload: None,
    };
    let doc = hazgate::api::openapi::document();
    let (code, served) = get(&s, "/api/v1/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&served).expect("json"),
        doc
    );
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    // Every route the router registers is documented with each of its methods, and nothing
    // else is.
    let routes = registered_routes();
    for must in [
        "/",
        "/api/v1/stream",
        "/api/v1/alarms/{id}/{action}",
        "/api/v1/notifications",
    ] {
        assert!(
            routes.contains_key(must),
            "the source scan misses {must}: {routes:?}"
        );
    }
    for (route, methods) in &routes {
        let ops = paths
            .get(route)
            .unwrap_or_else(|| panic!("{route} is served but not documented"));
        for m in methods {
            assert!(
                ops.get(m).is_some(),
                "{} {route} is served but not documented",
                m.to_uppercase()
            );
        }
    }
    for (path, ops) in paths {
        let methods = routes
            .get(path)
            .unwrap_or_else(|| panic!("{path} is documented but not registered"));
        for m in ops.as_object().expect("operations").keys() {
            assert!(
                methods.contains(m),
                "{} {path} is documented but not served",
                m.to_uppercase()
            );
        }
    }
    // The alarm, event and notification bodies are the generated schemas of their types.
    for (path, method, schema) in [
        ("/api/v1/alarms", "get", "AlarmList"),
        ("/api/v1/alarms/history", "get", "History"),
        ("/api/v1/alarms/{id}", "get", "AlarmRow"),
        ("/api/v1/alarms/{id}/audit", "get", "Audit"),
        ("/api/v1/alarms/{id}/{action}", "post", "ActResult"),
        ("/api/v1/alarms/site-mode", "get", "ModeState"),
        ("/api/v1/alarms/site-mode", "post", "ModeResult"),
        ("/api/v1/notifications", "get", "Notifications"),
    ] {
        assert_eq!(
            paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{schema}"),
            "{method} {path}"
        );
    }
    let schemas = &doc["components"]["schemas"];
    for (schema, fields) in [
        (
            "AlarmView",
            &[
                "id",
                "label",
                "area_name",
                "unit",
                "message",
                "response",
                "raised_at",
                "state",
                "priority",
                "inputs",
            ][..],
        ),
        (
            "LedgerEntry",
            &[
                "receiver",
                "route",
                "tier",
                "call",
                "created",
                "status",
                "answered_by",
                "handling",
            ][..],
        ),
        (
            "Notifications",
            &["site", "durable", "backlog", "notifications"][..],
        ),
    ] {
        for f in fields {
            assert!(
                schemas[schema]["properties"].get(*f).is_some(),
                "{schema}.{f} is not documented: {}",
                schemas[schema]
            );
        }
    }
    refs_resolve(&doc, &doc, "#");
    // Every documented GET answers (the stream is checked by its headers only).
    for (path, ops) in paths {
        if ops.get("get").is_none() {
            continue;
        }
        let resp = app(s.clone(), Duration::from_secs(5))
            .oneshot(
                Request::get(path.as_str())
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_ne!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "{path} is documented but not served"
        );
        if path == "/api/v1/stream" {
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
        }
    }
}

#[tokio::test]
async fn status_page_is_self_contained() {
    let (st, metrics) = state();
    let s = ApiState {
        state: st,
        metrics,
        alarms: None,
        outbox: None,
        reload: None,
    };
    let (code, html) = get(&s, "/").await;
    assert_eq!(code, StatusCode::OK);
    assert!(html.contains("/assets/status.js") && html.contains("/assets/status.css"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
    let (code, js) = get(&s, "/assets/status.js").await;
    assert_eq!(code, StatusCode::OK);
    assert!(!js.contains("http://") && !js.contains("https://"));
    assert_eq!(get(&s, "/assets/status.css").await.0, StatusCode::OK);
}

/// Reads the event stream until `want` appears in it or `limit` passes; returns what was read.
async fn read_stream(body: &mut axum::body::BodyDataStream, limit: Duration) -> String {
    use futures_util::StreamExt as _;
    let mut got = String::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(Ok(chunk)) = body.next().await {
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    got
}

/// The live stream carries the engine's heartbeat only while the engine ticks: a stalled engine
/// (here: one that never beats) leaves the stream open but silent about heartbeats, which is
/// what the status page's deadline detects.
#[tokio::test]
async fn stream_heartbeat_follows_the_engine_tick() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (st, metrics) = state();
        let s = ApiState {
            state: st.clone(),
            metrics,
            alarms: None,
            outbox: None,
            reload: None,
        };
        let resp = app(s, Duration::from_secs(5))
            .oneshot(
                Request::get("/api/v1/stream")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body().into_data_stream();
        // No engine tick: channels, but no heartbeat.
        let first = read_stream(&mut body, Duration::from_millis(2500)).await;
        assert!(first.contains("event: channels"), "{first}");
        assert!(first.contains("\"site_info\""), "{first}");
        assert!(!first.contains("event: heartbeat"), "{first}");
        // The engine ticks: a heartbeat with its time and the page's deadline.
        st.beat(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_987_698));
        let next = read_stream(&mut body, Duration::from_millis(2500)).await;
        assert!(next.contains("event: heartbeat"), "{next}");
        assert!(
            next.contains("\"ts\":\"2026-11-29T21:28:18.000Z\""),
            "{next}"
        );
        assert!(next.contains("\"deadline_ms\":5000"), "{next}");
        // Stalled again: no further heartbeat.
        let after = read_stream(&mut body, Duration::from_millis(2500)).await;
        assert!(!after.contains("event: heartbeat"), "{after}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn channels_carry_their_state_words_only_when_configured() {
    let text = r#"
[site]
id = "s"
[[sources]]
kind = "modbus_tcp"
id = "bus"
address = "127.0.0.1:1502"
[[devices]]
id = "p1"
area = "a"
source = "bus"
[[devices.registers]]
name = "running"
table = "discrete"
address = 0
kind = "running"
states = { 0 = "停止", 1 = "运行" }
[[devices.registers]]
name = "flow"
table = "input"
address = 0
unit = "m3/h"
"#;
    let cfg = config::parse(text, Path::new("t.toml")).expect("parses");
    let (cfg, _) = config::validate(&cfg, Path::new(".")).expect("valid");
    let s = ApiState {
        state: Arc::new(SharedState::new(&cfg)),
        metrics: Arc::new(Metrics::new()),
        alarms: None,
        outbox: None,
        reload: None,
    };
    let (code, body) = get(&s, "/api/v1/channels").await;
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let chans = v["channels"].as_array().expect("array");
    let by_id = |id: &str| {
        chans
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {body}"))
    };
    assert_eq!(
        by_id("a.p1.running")["states"],
        serde_json::json!({ "0": "停止", "1": "运行" })
    );
    assert!(
        by_id("a.p1.flow").get("states").is_none(),
        "no states key without words: {body}"
    );
}
