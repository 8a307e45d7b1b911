//! `/api/v1/alarms`: alarm listings, history, audit trails and actions by people.
//!
//! Actions need `Authorization: Bearer TOKEN` with an operator token from `[[alarms.tokens]]`;
//! reads need a viewer or operator token when `[api] reads = "viewer"` ([`read_guard`], which
//! covers every method under `/api/v1`), and are open otherwise. A missing or unknown token is
//! answered 401 (with `WWW-Authenticate: Bearer`), a viewer token on an action 403. Actions are carried out by the rule engine (the only writer of alarm state)
//! and answered after they are journaled; the token's name is recorded as `by`.
//!
//! | method | path | role | what |
//! |---|---|---|---|
//! | GET | `/api/v1/alarms[?all=true]` | viewer | alarms not normal (or all), highest priority first, toxic before combustible |
//! | GET | `/api/v1/alarms/history?alarm=&channel=&transition=&class=&since=&until=&limit=` | viewer | events, oldest first (`since`/`until` RFC 3339) |
//! | GET | `/api/v1/alarms/{id}` | viewer | one alarm |
//! | GET | `/api/v1/alarms/{id}/audit` | viewer | the alarm and its events |
//! | POST | `/api/v1/alarms/{id}/{ack,reset,shelve,unshelve,out-of-service,return}` | operator | `{"comment":…, "duration":"2h", "reason":…}` |
//! | GET/POST | `/api/v1/alarms/site-mode` | viewer/operator | `{"mode":"suspended","reason":…}` |

use std::time::Duration;

use super::bodies;
use super::handles::ApiState;
use crate::config::ReadAccess;
use crate::config::alarms::Role;
use crate::model::SiteMode;
use crate::rules::{Action, AlarmsHandle, Command, CommandError, HistoryFilter};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

/// An error answer: status and a JSON `{"error": …}` body. Never echoes tokens.
#[derive(Debug)]
pub struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(bodies::ErrorBody { error: self.1 });
        if self.0 == StatusCode::UNAUTHORIZED {
            (
                self.0,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"hazgate\"")],
                body,
            )
                .into_response()
        } else {
            (self.0, body).into_response()
        }
    }
}

/// The alarm routes, merged into [`super::app`].
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/alarms", get(list))
        .route("/api/v1/alarms/history", get(history))
        .route("/api/v1/alarms/site-mode", get(get_mode).post(set_mode))
        .route("/api/v1/alarms/{id}", get(one))
        .route("/api/v1/alarms/{id}/audit", get(audit))
        .route("/api/v1/alarms/{id}/{action}", post(act))
}

pub(super) fn handle(s: &ApiState) -> Result<&AlarmsHandle, ApiError> {
    s.alarms.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the alarm engine is not running".into(),
        )
    })
}

/// The bearer token of a request: `Authorization: Bearer TOKEN` only. Tokens never travel in a
/// URL (proxy logs, browser history); `EventSource` clients use a stream ticket
/// ([`super::tickets`]).
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.into());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing bearer token"))?
        .to_str()
        .map_err(|_| unauthorized("malformed Authorization header"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("expected `Authorization: Bearer TOKEN`"))
}

/// Checks the bearer token; returns the holder's name.
pub(super) fn authorize(
    h: &AlarmsHandle,
    headers: &HeaderMap,
    need: Role,
) -> Result<String, ApiError> {
    let token = bearer(headers)?;
    let (name, role) = h
        .authenticate(token)
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))?;
    if need == Role::Operator && role != Role::Operator {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("token `{name}` may read but not act (role viewer)"),
        ));
    }
    Ok(name.to_owned())
}

/// Middleware for `[api] reads = "viewer"`: every request under `/api/v1/` (any method: `GET`,
/// `HEAD`, `OPTIONS`, …; except the OpenAPI document) needs a viewer or operator token, or
/// for the event stream a redeemed ticket. Actions check the operator role themselves.
pub async fn read_guard(
    State(s): State<ApiState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let guarded = path.starts_with("/api/v1/")
        && path != "/api/v1/openapi.json"
        && req.extensions().get::<Redeemed>().is_none();
    if guarded {
        if let Some(h) = &s.alarms {
            if h.reads == ReadAccess::Viewer {
                let checked = bearer(req.headers()).and_then(|t| {
                    h.authenticate(t)
                        .map(|_| ())
                        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))
                });
                if let Err(e) = checked {
                    return e.into_response();
                }
            }
        }
    }
    next.run(req).await
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list(State(s): State<ApiState>, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    let h = handle(&s)?;
    Ok(Json(bodies::AlarmList {
        site: s.state.site.clone(),
        site_mode: h.board.mode(),
        flood: h.board.flood(),
        alarms: h
            .board
            .list(q.all)
            .into_iter()
            .map(|a| bodies::AlarmRow::new(a, &s.state))
            .collect(),
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    alarm: Option<String>,
    channel: Option<String>,
    transition: Option<String>,
    class: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

fn time(field: &str, v: Option<&str>) -> Result<Option<std::time::SystemTime>, ApiError> {
    v.map(|t| {
        humantime::parse_rfc3339_weak(t).map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("`{field}` must be an RFC 3339 time such as 2026-01-31T08:00:00Z"),
            )
        })
    })
    .transpose()
}

async fn history(
    State(s): State<ApiState>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let h = handle(&s)?;
    let f = HistoryFilter {
        alarm: q.alarm,
        channel: q.channel,
        transition: q.transition,
        class: q.class,
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        limit: q.limit.unwrap_or(100).clamp(1, 10_000),
    };
    Ok(Json(bodies::History {
        events: h.board.history(&f),
    })
    .into_response())
}

async fn one(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let h = handle(&s)?;
    let v = h
        .board
        .get(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("unknown alarm `{id}`")))?;
    Ok(Json(bodies::AlarmRow::new(v, &s.state)).into_response())
}

async fn audit(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let h = handle(&s)?;
    let v = h
        .board
        .get(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("unknown alarm `{id}`")))?;
    let f = HistoryFilter {
        alarm: Some(id),
        limit: 10_000,
        ..HistoryFilter::default()
    };
    Ok(Json(bodies::Audit {
        alarm: bodies::AlarmRow::new(v, &s.state),
        events: h.board.history(&f),
    })
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActBody {
    #[serde(default)]
    comment: String,
    #[serde(default, with = "humantime_serde")]
    duration: Option<Duration>,
    #[serde(default)]
    reason: String,
}

fn body<T: serde::de::DeserializeOwned + Default>(b: &Bytes) -> Result<T, ApiError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

async fn send(h: &AlarmsHandle, cmd: Command) -> Result<Vec<crate::model::AlarmEvent>, ApiError> {
    match h.send(cmd).await {
        Err(m) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, m.into())),
        Ok(Err(CommandError::UnknownAlarm(a))) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown alarm `{a}`"),
        )),
        Ok(Err(e @ CommandError::Refused(_))) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
        Ok(Err(e @ CommandError::Invalid(_))) => {
            Err(ApiError(StatusCode::BAD_REQUEST, e.to_string()))
        }
        Ok(Ok(ev)) => Ok(ev),
    }
}

async fn act(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let h = handle(&s)?;
    let by = authorize(h, &headers, Role::Operator)?;
    let b: ActBody = body(&raw)?;
    let action = match action.as_str() {
        "ack" => Action::Ack,
        "reset" => Action::Reset,
        "shelve" => Action::Shelve {
            duration: b.duration.ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    "shelving needs a `duration` such as \"2h\"".into(),
                )
            })?,
        },
        "unshelve" => Action::Unshelve,
        "out-of-service" => Action::OutOfService {
            reason: b.reason.clone(),
        },
        "return" => Action::Return,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown action `{other}`: use ack, reset, shelve, unshelve, out-of-service or return"
                ),
            ));
        }
    };
    let events = send(
        h,
        Command::Act {
            alarm: id.clone(),
            action,
            by,
            comment: b.comment,
        },
    )
    .await?;
    Ok(Json(bodies::ActResult {
        alarm: h.board.get(&id).map(|a| bodies::AlarmRow::new(a, &s.state)),
        events,
    })
    .into_response())
}

async fn get_mode(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let h = handle(&s)?;
    Ok(Json(h.board.mode()).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    #[serde(default)]
    mode: String,
    #[serde(default)]
    reason: String,
}

async fn set_mode(
    State(s): State<ApiState>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let h = handle(&s)?;
    let by = authorize(h, &headers, Role::Operator)?;
    let b: ModeBody = body(&raw)?;
    let mode = SiteMode::parse(&b.mode).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "`mode` must be normal, suspended or maintenance".into(),
        )
    })?;
    let events = send(
        h,
        Command::SetMode {
            mode,
            by,
            reason: b.reason,
        },
    )
    .await?;
    Ok(Json(bodies::ModeResult {
        site_mode: h.board.mode(),
        events,
    })
    .into_response())
}

/// Marks a stream request whose ticket was redeemed (`super::tickets`); the read guard lets it
/// through. Defined here, beside the guard that reads it, so tickets depend on alarms only.
#[derive(Clone, Copy, Debug)]
pub struct Redeemed;
