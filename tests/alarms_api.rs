//! `/api/v1/alarms` against a running engine task with a journal: 401 vs 403, listing order,
//! actions through the engine, refusals, history, audit trail, site mode, and a restart that
//! keeps a latched alarm latched.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hazgate::api::{ApiState, app};
use hazgate::config::{self, Resolved};
use hazgate::model::{AlarmEvent, ChannelId, Reading, Sample, Transition};
use hazgate::rules::{self, Sinks};
use hazgate::state::SharedState;
use hazgate::telemetry::Metrics;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;

const OP: &str = "op-secret";
const VIEWER: &str = "viewer-secret";

fn cfg(journal: &Path, reads: &str) -> Resolved {
    let text = format!(
        r#"
[site]
id = "s"
timezone = "Asia/Shanghai"
[api]
reads = "{reads}"
[[sources]]
kind = "modbus_tcp"
id = "bus"
address = "127.0.0.1:1502"
[[devices]]
id = "d"
area = "a"
source = "bus"
name = "1号罐区检测仪"
[[devices.registers]]
name = "lel"
table = "input"
address = 0
kind = "combustible_gas"
unit = "%LEL"
[[devices.registers]]
name = "tox"
table = "input"
address = 1
kind = "toxic_gas"
unit = "ppm"
[[devices.registers]]
name = "level"
table = "input"
address = 2
kind = "tank_level"
unit = "m"
[[areas]]
id = "a"
name = "储罐区"
[[channels]]
id = "a.d.lel"
label = "1号可燃气体 GD-101"
[[rules]]
channel = "a.d.lel"
h = 25
hh = 50
message = "储罐区可燃气体浓度超限"
response = "疏散罐区人员，关闭进料阀 XV-101，通知值班长"
[[rules]]
channel = "a.d.tox"
h = 10
hh = 20
[[rules]]
channel = "a.d.level"
h = 10
hh = 11
[alarms]
journal_dir = "{}"
[[alarms.tokens]]
name = "shift-lead"
role = "operator"
sha256 = "1404ccb7e370497229e0478ebfe329b1067563cb646826f6ef685a04d02431de"
[[alarms.tokens]]
name = "dashboard"
role = "viewer"
sha256 = "f6aa3a0aabbb721b4aa7763a987a47688a702b1bcf4850cb4ba5bdab26f9cc4b"
"#,
        journal.display(),
    );
    let cfg = config::parse(&text, Path::new("t.toml")).expect("parses");
    config::validate(&cfg, Path::new(".")).expect("valid").0
}

struct Gw {
    api: ApiState,
    tx: Option<mpsc::Sender<Vec<Sample>>>,
    alerts: mpsc::Receiver<AlarmEvent>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(c: &Resolved) -> Gw {
    let state = Arc::new(SharedState::new(c));
    let metrics = Arc::new(Metrics::new());
    let mut unreadable = hazgate::check::Problems::default();
    let tokens = rules::resolve_tokens(&c.alarms, &mut unreadable);
    assert!(!unreadable.has_errors(), "{:?}", unreadable.0);
    let (engine, handle) = rules::open(c, tokens, tokio::time::Instant::now().into_std())
        .await
        .expect("open");
    let (tx, rx) = mpsc::channel(16);
    let (atx, arx) = mpsc::channel(1024);
    let task = tokio::spawn(rules::run(
        engine,
        rx,
        Sinks {
            outputs: hazgate::tsdb::Fanout::new(c, vec![]),
            alerts: atx,
        },
        state.clone(),
        metrics.clone(),
    ));
    Gw {
        api: ApiState {
            state,
            metrics,
            alarms: Some(handle),
            outbox: None,
            reload: None,
        },
        tx: Some(tx),
        alerts: arx,
        task,
    }
}

impl Gw {
    async fn send(&self, vals: &[(&str, f64)]) {
        let b = vals
            .iter()
            .map(|(c, v)| Sample {
                channel: ChannelId::new(*c),
                ts: SystemTime::now(),
                reading: Reading::Good(*v),
            })
            .collect();
        self.tx
            .as_ref()
            .expect("running")
            .send(b)
            .await
            .expect("engine alive");
    }
    async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, bool) {
        let mut r = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => r
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => r.body(Body::empty()),
        }
        .expect("request");
        let resp = app(self.api.clone(), Duration::from_secs(5))
            .oneshot(req)
            .await
            .expect("infallible");
        let status = resp.status();
        let www = resp.headers().contains_key(header::WWW_AUTHENTICATE);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            www,
        )
    }
    async fn stop(mut self) {
        self.tx.take();
        self.task.await.expect("engine task ends cleanly");
    }
}

async fn wait_for(g: &Gw, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v, _) = g.req("GET", "/api/v1/alarms", Some(VIEWER), None).await;
        if f(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_owned())
        .collect()
}

/// `reads = "open"` (the default): reading needs no token, acting still needs an operator.
#[tokio::test]
async fn open_reads_still_guard_actions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(&cfg(dir.path(), "open")).await;
    for path in [
        "/api/v1/channels",
        "/api/v1/alarms",
        "/api/v1/alarms/history",
    ] {
        let (code, body, _) = g.req("GET", path, None, None).await;
        assert_eq!(code, StatusCode::OK, "{path}: {body}");
    }
    let (code, _, _) = g
        .req("POST", "/api/v1/alarms/a.d.lel:H/ack", None, None)
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _, _) = g
        .req("POST", "/api/v1/alarms/a.d.lel:H/ack", Some(VIEWER), None)
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    g.stop().await;
}

#[tokio::test]
async fn alarm_api_end_to_end() {
    tokio::time::timeout(Duration::from_secs(60), scenario())
        .await
        .expect("test timed out");
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path(), "viewer");
    let mut g = start(&c).await;

    // `reads = "viewer"`: every read under /api/v1 needs a token in the Authorization header
    // (the browser's EventSource uses a stream ticket); the OpenAPI document stays open.
    for path in [
        "/api/v1/channels",
        "/api/v1/devices",
        "/api/v1/alarms/site-mode",
    ] {
        let (code, _, www) = g.req("GET", path, None, None).await;
        assert_eq!((code, www), (StatusCode::UNAUTHORIZED, true), "{path}");
        let (code, _, _) = g.req("GET", path, Some(VIEWER), None).await;
        assert_eq!(code, StatusCode::OK, "{path} with a viewer token");
    }
    let (code, _, _) = g
        .req(
            "GET",
            &format!("/api/v1/channels?access_token={VIEWER}"),
            None,
            None,
        )
        .await;
    assert_eq!(
        code,
        StatusCode::UNAUTHORIZED,
        "a token in the URL (proxy logs, browser history) is not accepted"
    );
    let (code, _, _) = g
        .req("GET", "/api/v1/channels?access_token=guess", None, None)
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _, _) = g.req("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(code, StatusCode::OK);

    // Authentication: 401 without or with an unknown token (with WWW-Authenticate), 403 for a
    // viewer acting.
    let (code, body, www) = g.req("GET", "/api/v1/alarms", None, None).await;
    assert_eq!((code, www), (StatusCode::UNAUTHORIZED, true), "{body}");
    let (code, _, _) = g.req("GET", "/api/v1/alarms", Some("guess"), None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, body, _) = g
        .req("POST", "/api/v1/alarms/a.d.lel:H/ack", Some(VIEWER), None)
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let (code, _, _) = g
        .req("POST", "/api/v1/alarms/a.d.lel:H/ack", None, None)
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    // Three alarms at once: critical first; at the same priority toxic before combustible.
    g.send(&[("a.d.lel", 30.0), ("a.d.tox", 12.0), ("a.d.level", 11.5)])
        .await;
    let v = wait_for(&g, "three alarms", |v| {
        v["alarms"].as_array().is_some_and(|a| a.len() >= 4)
    })
    .await;
    assert_eq!(
        ids(&v),
        ["a.d.level:HH", "a.d.tox:H", "a.d.lel:H", "a.d.level:H"]
    );
    let text = g.api.metrics.encode();
    assert!(
        text.contains(r#"hazgate_alarms{state="active_unacknowledged",class="process"} 4"#),
        "alarms by state in /metrics: {text}"
    );
    assert_eq!(v["alarms"][2]["state"], "active_unacknowledged");
    // What, where and what to do.
    let lel = &v["alarms"][2];
    assert_eq!(lel["label"], "1号可燃气体 GD-101", "{lel}");
    assert_eq!(lel["area"], "a");
    assert_eq!(lel["area_name"], "储罐区");
    assert_eq!(lel["unit"], "%LEL");
    assert_eq!(lel["message"], "储罐区可燃气体浓度超限");
    assert_eq!(
        lel["response"],
        "疏散罐区人员，关闭进料阀 XV-101，通知值班长"
    );
    assert_eq!(
        v["alarms"][1]["area_name"], "储罐区",
        "area name on every alarm"
    );
    // Notifications go out in the same order.
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(g.alerts.recv().await.expect("event").alarm);
    }
    assert_eq!(
        got,
        ["a.d.level:HH", "a.d.tox:H", "a.d.lel:H", "a.d.level:H"]
    );

    // Actions go through the engine and record who.
    let (code, body, _) = g
        .req(
            "POST",
            "/api/v1/alarms/a.d.lel:H/ack",
            Some(OP),
            Some(json!({"comment": "going to look"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["alarm"]["state"], "active_acknowledged");
    assert_eq!(body["events"][0]["by"], "shift-lead");
    assert_eq!(body["events"][0]["comment"], "going to look");
    let (code, body, _) = g
        .req("POST", "/api/v1/alarms/a.d.lel:H/reset", Some(OP), None)
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("still active")
    );
    let (code, _, _) = g
        .req("POST", "/api/v1/alarms/a.d.lel:H/shelve", Some(OP), None)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _, _) = g
        .req("POST", "/api/v1/alarms/nope:H/ack", Some(OP), None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _, _) = g
        .req("POST", "/api/v1/alarms/a.d.lel:H/dance", Some(OP), None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // The gas alarm latches when the value returns; the tank alarm does not.
    g.send(&[("a.d.lel", 1.0), ("a.d.level", 5.0)]).await;
    wait_for(&g, "lel latched", |v| {
        v["alarms"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["id"] == "a.d.lel:H" && x["state"] == "latched")
        })
    })
    .await;

    // History with filters and the audit trail.
    let (code, body, _) = g
        .req(
            "GET",
            "/api/v1/alarms/history?alarm=a.d.lel:H",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let tr: Vec<&str> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["transition"].as_str().expect("t"))
        .collect();
    assert_eq!(tr, ["raised", "acknowledged", "cleared"]);
    let (_, body, _) = g
        .req(
            "GET",
            "/api/v1/alarms/history?transition=raised&limit=2",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(body["events"].as_array().expect("events").len(), 2);
    let (code, body, _) = g
        .req(
            "GET",
            "/api/v1/alarms/history?since=yesterday",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body, _) = g
        .req("GET", "/api/v1/alarms/a.d.lel:H/audit", Some(VIEWER), None)
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["alarm"]["latched"], true);
    assert_eq!(body["events"][1]["by"], "shift-lead");

    // Site mode with who and why.
    let (code, _, _) = g
        .req(
            "POST",
            "/api/v1/alarms/site-mode",
            Some(VIEWER),
            Some(json!({"mode": "suspended", "reason": "x"})),
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, _, _) = g
        .req(
            "POST",
            "/api/v1/alarms/site-mode",
            Some(OP),
            Some(json!({"mode": "suspended"})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "a reason is required");
    let (code, body, _) = g
        .req(
            "POST",
            "/api/v1/alarms/site-mode",
            Some(OP),
            Some(json!({"mode": "suspended", "reason": "order 17"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (_, body, _) = g
        .req("GET", "/api/v1/alarms/site-mode", Some(VIEWER), None)
        .await;
    assert_eq!(
        (
            body["mode"].as_str(),
            body["by"].as_str(),
            body["reason"].as_str()
        ),
        (Some("suspended"), Some("shift-lead"), Some("order 17"))
    );

    // Shelved alarms are journaled but not annunciated.
    let (code, _, _) = g
        .req(
            "POST",
            "/api/v1/alarms/a.d.tox:HH/shelve",
            Some(OP),
            Some(json!({"duration": "30m"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    g.send(&[("a.d.tox", 25.0)]).await;
    wait_for(&g, "tox HH raised while shelved", |v| {
        v["alarms"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["id"] == "a.d.tox:HH" && x["condition_active"] == true)
        })
    })
    .await;
    let mut annunciated = Vec::new();
    while let Ok(e) = g.alerts.try_recv() {
        annunciated.push((e.alarm, e.transition));
    }
    assert!(
        annunciated.contains(&("a.d.tox:HH".to_owned(), Transition::Shelved)),
        "{annunciated:?}"
    );
    assert!(
        !annunciated.contains(&("a.d.tox:HH".to_owned(), Transition::Raised)),
        "{annunciated:?}"
    );
    g.stop().await;

    // A restart (no clean shutdown matters: every batch was fsync'd): still latched, mode kept.
    let g = start(&c).await;
    let (_, body, _) = g
        .req("GET", "/api/v1/alarms/a.d.lel:H", Some(VIEWER), None)
        .await;
    assert_eq!(body["state"], "latched", "{body}");
    let (_, body, _) = g
        .req("GET", "/api/v1/alarms/site-mode", Some(VIEWER), None)
        .await;
    assert_eq!(body["mode"], "suspended");
    let (_, body, _) = g
        .req("GET", "/api/v1/alarms/a.d.lel:H/audit", Some(VIEWER), None)
        .await;
    assert_eq!(
        body["events"].as_array().expect("events").len(),
        3,
        "history replayed: {body}"
    );
    let (code, body, _) = g
        .req("POST", "/api/v1/alarms/a.d.lel:H/reset", Some(OP), None)
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["alarm"]["state"], "normal");
    g.stop().await;
}

/// One router for several requests (stream tickets live in the router).
async fn call(router: &axum::Router, req: Request<Body>) -> axum::response::Response {
    router.clone().oneshot(req).await.expect("infallible")
}

#[tokio::test]
async fn viewer_reads_guard_every_method_and_the_stream_takes_a_single_use_ticket() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path(), "viewer");
        let g = start(&c).await;
        let router = app(g.api.clone(), Duration::from_secs(5));
        // Before: HEAD (and every method but GET) passed the read guard: 200 with the length.
        for method in ["HEAD", "GET", "OPTIONS", "PUT", "DELETE", "PATCH"] {
            for path in [
                "/api/v1/channels",
                "/api/v1/alarms",
                "/api/v1/notifications",
            ] {
                let r = Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty());
                let resp = call(&router, r.expect("request")).await;
                assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            }
        }
        let r = Request::head("/api/v1/channels")
            .header(header::AUTHORIZATION, format!("Bearer {VIEWER}"))
            .body(Body::empty())
            .expect("request");
        assert_eq!(
            call(&router, r).await.status(),
            StatusCode::OK,
            "HEAD with a token"
        );

        // The stream: no token, or a token in the URL, is refused.
        for uri in [
            "/api/v1/stream",
            &format!("/api/v1/stream?access_token={VIEWER}"),
        ] {
            let r = Request::get(uri).body(Body::empty()).expect("request");
            assert_eq!(
                call(&router, r).await.status(),
                StatusCode::UNAUTHORIZED,
                "{uri}"
            );
        }
        // A ticket costs a token.
        let r = Request::post("/api/v1/stream/ticket")
            .body(Body::empty())
            .expect("request");
        assert_eq!(call(&router, r).await.status(), StatusCode::UNAUTHORIZED);
        let r = Request::post("/api/v1/stream/ticket")
            .header(header::AUTHORIZATION, format!("Bearer {VIEWER}"))
            .body(Body::empty())
            .expect("request");
        let resp = call(&router, r).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        let ticket = v["ticket"].as_str().expect("ticket").to_owned();
        assert_eq!(v["expires_in"], 60);
        assert!(!ticket.contains(VIEWER) && ticket.len() == 64, "{ticket}");
        // It opens one stream, once.
        let uri = format!("/api/v1/stream?ticket={ticket}");
        let resp = call(
            &router,
            Request::get(&uri).body(Body::empty()).expect("request"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        drop(resp);
        let resp = call(
            &router,
            Request::get(&uri).body(Body::empty()).expect("request"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "a used ticket");
        // Only on the stream: a ticket is no token for other reads.
        let r = Request::post("/api/v1/stream/ticket")
            .header(header::AUTHORIZATION, format!("Bearer {OP}"))
            .body(Body::empty())
            .expect("request");
        let bytes = axum::body::to_bytes(call(&router, r).await.into_body(), 1 << 16)
            .await
            .expect("body");
        let t2 = serde_json::from_slice::<Value>(&bytes).expect("json")["ticket"]
            .as_str()
            .expect("ticket")
            .to_owned();
        let r = Request::get(format!("/api/v1/channels?ticket={t2}"))
            .body(Body::empty())
            .expect("request");
        assert_eq!(call(&router, r).await.status(), StatusCode::UNAUTHORIZED);
        drop(g);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn status_page_and_api_responses_carry_security_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path(), "open");
    let g = start(&c).await;
    let router = app(g.api.clone(), Duration::from_secs(5));
    for path in [
        "/",
        "/assets/status.js",
        "/assets/status.css",
        "/api/v1/channels",
    ] {
        let resp = call(
            &router,
            Request::get(path).body(Body::empty()).expect("request"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        let csp = h
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{path}: no Content-Security-Policy"));
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
    }
    // The page keeps to its policy: no inline script or style.
    let resp = call(
        &router,
        Request::get("/").body(Body::empty()).expect("request"),
    )
    .await;
    let html = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body")
            .to_vec(),
    )
    .expect("utf-8");
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "inline style"
    );
    for script in html.split("<script").skip(1) {
        assert!(
            script.trim_start().starts_with("src="),
            "inline script: {script}"
        );
    }
    drop(g);
}

/// Resolves a local `$ref`.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").expect("local ref");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => s,
    }
}

/// The properties and required fields of an object schema, through `allOf`.
fn object_fields<'a>(
    doc: &'a Value,
    s: &'a Value,
    props: &mut serde_json::Map<String, Value>,
    required: &mut Vec<String>,
) {
    let s = resolve(doc, s);
    if let Some(p) = s.get("properties").and_then(Value::as_object) {
        props.extend(p.clone());
    }
    if let Some(r) = s.get("required").and_then(Value::as_array) {
        required.extend(r.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    for part in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        object_fields(doc, part, props, required);
    }
}

/// A small JSON Schema check of an answer against the document: every field sent is
/// documented (and of its documented type), every required field is sent.
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let s = resolve(doc, schema);
    if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
        let errs: Vec<String> = alts
            .iter()
            .filter_map(|a| conforms(doc, a, v, at).err())
            .collect();
        return if errs.len() < alts.len() {
            Ok(())
        } else {
            Err(errs.join(" / "))
        };
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let type_ok = types.is_empty()
        || types.contains(&kind)
        || (kind == "integer" && types.contains(&"number"));
    if !type_ok {
        return Err(format!(
            "{at}: {kind} {v} where the document says {types:?}"
        ));
    }
    match v {
        Value::Object(m) => {
            let (mut props, mut required) = (serde_json::Map::new(), Vec::new());
            object_fields(doc, schema, &mut props, &mut required);
            let extra = s.get("additionalProperties").filter(|a| a.is_object());
            for (k, x) in m {
                match (props.get(k), extra) {
                    (Some(p), _) => conforms(doc, p, x, &format!("{at}.{k}"))?,
                    (None, Some(a)) => conforms(doc, a, x, &format!("{at}.{k}"))?,
                    (None, None) => return Err(format!("{at}.{k} is sent but not documented")),
                }
            }
            for r in required {
                if !m.contains_key(&r) {
                    return Err(format!("{at}.{r} is required by the document but not sent"));
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for (i, x) in a.iter().enumerate() {
                    conforms(doc, items, x, &format!("{at}[{i}]"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Real answers of the alarm and notification routes (with shelves, out-of-service records,
/// comments and a ledger row answered by a person) match the generated document: no field is
/// sent that it lacks, none it requires is missing.
#[tokio::test]
async fn answers_match_the_openapi_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = start(&cfg(dir.path(), "open")).await;
    let doc = hazgate::api::openapi::document();
    // `route` is the documented path template of the request's path.
    let check = |route: &str, path: &str, method: &str, code: StatusCode, body: &Value| {
        let schema = &doc["paths"][route][method]["responses"][code.as_str()]["content"]["application/json"]
            ["schema"];
        assert!(
            !schema.is_null(),
            "{method} {route} {code} has no JSON schema"
        );
        if let Err(e) = conforms(&doc, schema, body, "$") {
            panic!("{method} {path} ({code}): {e}\n{body}");
        }
    };
    g.send(&[("a.d.lel", 30.0), ("a.d.tox", 12.0), ("a.d.level", 11.5)])
        .await;
    wait_for(&g, "alarms", |v| {
        v["alarms"].as_array().is_some_and(|a| a.len() >= 4)
    })
    .await;
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(g.alerts.recv().await.expect("event"));
    }
    let act = "/api/v1/alarms/{id}/{action}";
    for (path, body) in [
        (
            "/api/v1/alarms/a.d.lel:H/ack",
            json!({"comment": "going to look"}),
        ),
        (
            "/api/v1/alarms/a.d.tox:H/shelve",
            json!({"duration": "1h", "comment": "sensor check"}),
        ),
        (
            "/api/v1/alarms/a.d.level:H/out-of-service",
            json!({"reason": "calibration"}),
        ),
        ("/api/v1/alarms/nope:H/ack", json!({})),
    ] {
        let (code, v, _) = g.req("POST", path, Some(OP), Some(body)).await;
        check(act, path, "post", code, &v);
    }
    let (code, v, _) = g
        .req(
            "POST",
            "/api/v1/alarms/site-mode",
            Some(OP),
            Some(json!({"mode": "maintenance", "reason": "turnaround"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let mode = "/api/v1/alarms/site-mode";
    check(mode, mode, "post", code, &v);
    // The device of the alarm's channel, with its display name.
    let (_, v, _) = g.req("GET", "/api/v1/alarms/a.d.lel:H", None, None).await;
    assert_eq!(
        (&v["device"], &v["device_name"]),
        (&json!("d"), &json!("1号罐区检测仪")),
        "{v}"
    );
    let (_, v, _) = g.req("GET", "/api/v1/alarms", None, None).await;
    assert!(
        v["alarms"]
            .as_array()
            .expect("alarms")
            .iter()
            .all(|a| a["device_name"] == "1号罐区检测仪"),
        "{v}"
    );
    let mut shelved = false;
    let mut out_of_service = false;
    for (route, path) in [
        ("/api/v1/alarms", "/api/v1/alarms?all=true"),
        ("/api/v1/alarms", "/api/v1/alarms"),
        ("/api/v1/alarms/{id}", "/api/v1/alarms/a.d.lel:H"),
        (
            "/api/v1/alarms/{id}/audit",
            "/api/v1/alarms/a.d.lel:H/audit",
        ),
        ("/api/v1/alarms/{id}", "/api/v1/alarms/nope:H"),
        ("/api/v1/alarms/history", "/api/v1/alarms/history"),
        (mode, mode),
    ] {
        let (code, v, _) = g.req("GET", path, None, None).await;
        check(route, path, "get", code, &v);
        let text = v.to_string();
        shelved |= text.contains("\"until\"");
        out_of_service |= text.contains("calibration");
    }
    assert!(
        shelved && out_of_service,
        "the answers carried a shelf and an out-of-service record"
    );

    // The ledger: one notification, delivered, answered by the acknowledging person.
    let (ob, _) = hazgate::alerts::Outbox::open(
        &hazgate::alerts::config::OutboxConfig::default(),
        [("hook".to_owned(), 16)].into_iter().collect(),
        g.api.metrics.clone(),
    )
    .expect("outbox");
    let ev = events.remove(0);
    let ids = ob.enqueue(
        vec![hazgate::alerts::outbox::Notification {
            key: "k1".into(),
            receiver: "hook".into(),
            route: "gas".into(),
            reason: hazgate::alerts::outbox::Reason::Event,
            tier: 1,
            call: vec!["13800000000".into()],
            events: vec![ev.clone()],
            values: vec![],
            priority: ev.priority,
            created: SystemTime::now(),
            expires: SystemTime::now() + Duration::from_secs(3600),
        }],
        None,
    );
    ob.failed(ids[0], "connection refused", tokio::time::Instant::now());
    ob.delivered(ids[0], SystemTime::now());
    let (_, audit, _) = g
        .req(
            "GET",
            &format!("/api/v1/alarms/{}/audit", ev.alarm),
            None,
            None,
        )
        .await;
    let ack: AlarmEvent = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| serde_json::from_value::<AlarmEvent>(e.clone()).expect("event"))
        .find(|e| e.transition == Transition::Acknowledged)
        .unwrap_or_else(|| {
            let mut a = ev.clone();
            a.transition = Transition::Acknowledged;
            a.by = Some("shift-lead".into());
            a
        });
    ob.answer(&ack);
    g.api.outbox = Some(Arc::new(ob));
    let (code, v, _) = g
        .req("GET", "/api/v1/notifications", Some(VIEWER), None)
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let row = &v["notifications"][0];
    assert_eq!(row["status"], "delivered", "{v}");
    assert!(
        row["answered_by"].is_string() && row["last_error"].is_string(),
        "{v}"
    );
    let ledger = "/api/v1/notifications";
    check(ledger, ledger, "get", code, &v);
    // The ledger for people: words in the site's language (zh-CN by default), times in the
    // site's zone with their offset; the machine fields stay RFC 3339 UTC.
    assert_eq!(
        (&v["language"], &v["timezone"]),
        (&json!("zh-CN"), &json!("Asia/Shanghai"))
    );
    let text = &row["text"];
    assert_eq!(text["status"], "已送达", "{row}");
    assert_eq!(text["reason"], "报警通知");
    assert_eq!(text["transition"], "报警");
    assert!(
        ["紧急", "高"].contains(&text["priority"].as_str().expect("priority")),
        "{text}"
    );
    let created = text["created"].as_str().expect("created");
    assert!(created.ends_with(" +08:00"), "{created}");
    let utc =
        humantime::parse_rfc3339(row["created"].as_str().expect("machine time")).expect("RFC 3339");
    assert_eq!(
        created,
        hazgate::i18n::local_time(utc, chrono_tz::Asia::Shanghai)
    );
    assert!(
        row["created"].as_str().expect("created").ends_with('Z'),
        "{row}"
    );
    assert!(
        text["answered_at"]
            .as_str()
            .expect("answered")
            .ends_with(" +08:00"),
        "{text}"
    );
    let summary = text["summary"].as_str().expect("summary");
    for want in [
        created,
        "发往 hook（路由 gas，第 1 级）",
        "已送达",
        "尝试 2 次",
        "最近错误：connection refused",
        "shift-lead 于 ",
    ] {
        assert!(summary.contains(want), "`{want}` in {summary}");
    }
    let (code, v, _) = g
        .req("GET", "/api/v1/notifications?lang=en", Some(VIEWER), None)
        .await;
    check(ledger, ledger, "get", code, &v);
    let text = &v["notifications"][0]["text"];
    assert_eq!(
        (&text["status"], &text["reason"]),
        (&json!("delivered"), &json!("alarm notification")),
        "{text}"
    );
    let summary = text["summary"].as_str().expect("summary");
    for want in [
        "to hook (route gas, tier 1)",
        "2 attempts",
        "last error: connection refused",
        "acknowledged by shift-lead at ",
    ] {
        assert!(summary.contains(want), "`{want}` in {summary}");
    }
    assert!(summary.contains(" +08:00"), "{summary}");
    let (code, v, _) = g
        .req("GET", "/api/v1/notifications?lang=fr", Some(VIEWER), None)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().expect("error").contains("lang"), "{v}");
    g.stop().await;
}
