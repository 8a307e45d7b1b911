//! `GET /api/v1/notifications`: the delivery ledger and the outbox backlog. It always needs a
//! viewer or operator token, also with `[api] reads = "open"`: it names people and the phone
//! numbers to call.
//!
//! Query: `receiver`, `alarm`, `status` (`pending`, `delivered`, `expired`, `evicted`), `limit`
//! (default 200, at most 10 000), `lang` (`zh-CN` or `en`, default `[site] language`): the
//! language of each row's `text` (its words and times in the site's zone with their offset; the
//! machine fields stay RFC 3339 UTC). Rows are newest first: who was notified (receiver, route,
//! tier, whom to call), when, delivered or not, attempts, the last error, who acknowledged and
//! the handling result.

use super::alarms::{ApiError, authorize, handle};
use super::bodies;
use super::handles::ApiState;
use crate::alerts::outbox::{LedgerFilter, Status};
use crate::config::alarms::Role;
use crate::i18n::Language;
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
    lang: Option<String>,
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
    let lang = match q.lang.as_deref() {
        None => s.state.site_info.language,
        Some("zh-CN") => Language::ZhCn,
        Some("en") => Language::En,
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("`lang` must be zh-CN or en, not `{other}`"),
            ));
        }
    };
    let tz: chrono_tz::Tz = s
        .state
        .site_info
        .timezone
        .parse()
        .unwrap_or(chrono_tz::Tz::UTC);
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
        language: lang.tag().to_owned(),
        timezone: tz.name().to_owned(),
        notifications: ob
            .ledger(&f)
            .into_iter()
            .map(|e| bodies::LedgerRow::new(e, lang, tz))
            .collect(),
    })
    .into_response())
}
