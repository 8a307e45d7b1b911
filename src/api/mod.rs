//! The HTTP API. [`app`] builds the router so tests can call it without a socket.
//!
//! Stable paths: `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /api/v1/channels`,
//! `GET /api/v1/devices`, `GET /api/v1/stream` (Server-Sent Events; `POST /api/v1/stream/ticket`
//! gives a browser a single-use ticket for it, see [`tickets`]), `GET /api/v1/openapi.json`,
//! the alarm routes of [`alarms`], `GET /api/v1/notifications` ([`notifications`]),
//! `POST /api/v1/config/reload` ([`reload`]), and the status page at `/` (assets embedded in the binary,
//! nothing from a CDN).

pub mod alarms;
pub mod bodies;
mod handles;
pub mod notifications;
pub mod openapi;
pub mod reload;
pub mod serve;
pub mod tickets;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde_json::json;
use tower_http::timeout::TimeoutLayer;

pub use handles::ApiState;

/// The router.
pub fn app(s: ApiState, request_timeout: Duration) -> Router {
    // The event stream is long-lived: it is not under the request timeout.
    let events = Router::new().route(tickets::STREAM_PATH, get(stream));
    let stream_tickets = Arc::new(tickets::Tickets::default());
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route(
            "/assets/status.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    STATUS_JS,
                )
            }),
        )
        .route(
            "/assets/status.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    STATUS_CSS,
                )
            }),
        )
        .route(
            "/api/v1/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi::served(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/channels", get(channels))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/stream/ticket", axum::routing::post(tickets::issue))
        .merge(alarms::router())
        .merge(notifications::router())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .merge(events)
        .merge(reload::router())
        .layer(axum::middleware::from_fn_with_state(
            s.clone(),
            alarms::read_guard,
        ))
        .layer(axum::middleware::from_fn(tickets::guard))
        .layer(axum::Extension(stream_tickets))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(s)
}

/// The status page's only sources are its own files; nothing may frame it (clickjacking of the
/// acknowledge and reset buttons) and no response is content-sniffed. Sent on every response,
/// so also on JSON that a browser is tricked into rendering. The page therefore has no inline
/// `<script>`, `<style>` or `style=` attributes.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn security_headers(mut resp: axum::response::Response) -> axum::response::Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    resp
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const STATUS_JS: &str = include_str!("assets/status.js");
const STATUS_CSS: &str = include_str!("assets/status.css");

/// The body of a `channels` event and of `GET /api/v1/channels`.
fn channels_body(s: &ApiState) -> serde_json::Value {
    json!({
        "site": s.state.site,
        "site_info": s.state.site_info,
        "channels": s.state.channels(),
    })
}

/// Every second: the channel snapshot when it changed (event `channels`) and the engine's
/// heartbeat when the engine ticked since the last one (event `heartbeat`, with the deadline
/// after which the page declares communication lost); a keep-alive comment otherwise. A stalled
/// engine stops the heartbeats although this stream stays open. A slow client simply sees fewer
/// updates: nothing is queued per client beyond the two events of one second.
async fn stream(
    State(s): State<ApiState>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let ticks = tokio::time::interval(Duration::from_secs(1));
    let pending: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
    let st = futures_util::stream::unfold(
        (ticks, s, String::new(), 0u64, pending),
        |(mut ticks, s, last, beat, mut pending)| async move {
            let (mut last, mut beat) = (last, beat);
            loop {
                if let Some(ev) = pending.pop_front() {
                    return Some((Ok(ev), (ticks, s, last, beat, pending)));
                }
                ticks.tick().await;
                let body = channels_body(&s).to_string();
                if body != last {
                    pending.push_back(Event::default().event("channels").data(body.clone()));
                    last = body;
                }
                let hb = s.state.heartbeat();
                if hb.seq != beat {
                    beat = hb.seq;
                    let deadline = crate::state::HEARTBEAT_DEADLINE.as_millis();
                    let data = json!({ "seq": hb.seq, "ts": hb.ts.map(|t| humantime::format_rfc3339_millis(t).to_string()), "deadline_ms": deadline });
                    pending.push_back(Event::default().event("heartbeat").data(data.to_string()));
                }
            }
        },
    );
    Sse::new(st).keep_alive(KeepAlive::new().interval(serve::STREAM_KEEP_ALIVE))
}

async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    let reasons = s.state.health.not_ready();
    if reasons.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "ready": true, "reasons": [] })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reasons": reasons })),
        )
    }
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn channels(State(s): State<ApiState>) -> impl IntoResponse {
    Json(channels_body(&s))
}

async fn devices(State(s): State<ApiState>) -> impl IntoResponse {
    Json(json!({ "site": s.state.site, "devices": s.state.devices() }))
}
