//! `GET /api/v1/notifications`: the delivery ledger and the outbox backlog. It always needs a
//! viewer or operator token, also with `[api] reads = "open"`: it names people and the phone
//! numbers to call.
//!
//! Query: `receiver`, `alarm`, `status` (`pending`, `delivered`, `expired`, `evicted`), `limit`
//! (default 200, at most 10 000). Rows are newest first: who was notified (receiver, route,
//! tier, whom to call), when, delivered or not, attempts, the last error, who acknowledged and
//! the handling result.

use super::alarms::{ApiError, authorize, handle};
use super::bodies;
use super::handles::ApiState;
use crate::alerts::outbox::{LedgerFilter, Status};
use crate::config::alarms::Role;
use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

/// The notification routes, merged into [`super::app`].
pub fn router() -> Router<ApiState> {
    Router::new().route("/api/v1/notifications", get(list))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    receiver: Option<String>,
    alarm: Option<String>,
    status: Option<Status>,
    limit: Option<usize>,
}

async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(handle(&s)?, &headers, Role::Viewer)?;
    let Some(ob) = &s.outbox else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "alert delivery is not running".into(),
        ));
    };
    let f = LedgerFilter {
        receiver: q.receiver,
        alarm: q.alarm,
        status: q.status,
        limit: q.limit.unwrap_or(200).min(10_000),
    };
    Ok(Json(bodies::Notifications {
        site: s.state.site.clone(),
        durable: ob.durable(),
        backlog: ob.backlog(),
        notifications: ob.ledger(&f),
    })
    .into_response())
}
