//! `POST /api/v1/config/reload` (operator): reads the configuration file again and applies it,
//! or refuses it with every problem (the running configuration goes on). Answers the
//! [`crate::control::ReloadReport`]: 200 when applied, 422 when refused, 503 when this API was
//! built without a coordinator or the gateway is stopping. The token's name is recorded as who
//! asked. Not under the request timeout: a reload waits for the engine and for stopped
//! sources, each step bounded by its own timeout.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::alarms::{ApiError, authorize, handle};
use super::handles::ApiState;
use crate::config::alarms::Role;

/// The reload route, merged into [`super::app`].
pub fn router() -> Router<ApiState> {
    Router::new().route("/api/v1/config/reload", post(reload))
}

async fn reload(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let h = handle(&s)?;
    let by = authorize(h, &headers, Role::Operator)?;
    let tx = s.reload.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "configuration reload is not available in this process".into(),
        )
    })?;
    let report = crate::control::ask(tx, &by).await;
    let code = if report.applied {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((code, Json(report)).into_response())
}
