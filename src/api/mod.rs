//! The HTTP API. [`app`] builds the router so tests can call it without a socket.
//!
//! Stable paths: `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /api/v1/channels`,
//! `GET /api/v1/devices`, and the alarm routes of [`alarms`].

pub mod alarms;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tower_http::timeout::TimeoutLayer;

use crate::state::SharedState;
use crate::telemetry::Metrics;

/// What handlers read.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// Snapshots.
    pub state: Arc<SharedState>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// The router.
pub fn app(s: ApiState, request_timeout: Duration) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/channels", get(channels))
        .route("/api/v1/devices", get(devices))
        .merge(alarms::router())
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .with_state(s)
}

async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    let reasons = s.state.health.not_ready();
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({ "ready": true, "reasons": [] })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "reasons": reasons })))
    }
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
}

async fn channels(State(s): State<ApiState>) -> impl IntoResponse {
    Json(json!({ "site": s.state.site, "channels": s.state.channels() }))
}

async fn devices(State(s): State<ApiState>) -> impl IntoResponse {
    Json(json!({ "site": s.state.site, "devices": s.state.devices() }))
}
