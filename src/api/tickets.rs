//! Stream tickets: a browser's `EventSource` cannot send an `Authorization` header, and a
//! bearer token in a URL ends up in proxy logs and browser history. Instead the page asks
//! `POST /api/v1/stream/ticket` (with its bearer token) for a ticket and opens
//! `GET /api/v1/stream?ticket=T`.
//!
//! Invariants:
//! - A ticket is 256 random bits, valid for [`TTL`], and opens one stream: it is removed when a
//!   stream request presents it (valid or not, it cannot be replayed).
//! - A ticket is accepted only on `GET /api/v1/stream`; everywhere else tokens travel in the
//!   `Authorization` header only.
//! - At most [`MAX_OUTSTANDING`] tickets exist; expired ones are dropped on every issue, and
//!   a request beyond the bound is answered 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::alarms::{ApiError, Redeemed, authorize, handle};
use super::handles::ApiState;
use crate::config::alarms::Role;

/// How long a ticket is valid.
pub const TTL: Duration = Duration::from_secs(60);
/// Most tickets outstanding at once.
pub const MAX_OUTSTANDING: usize = 256;
/// The path tickets open.
pub const STREAM_PATH: &str = "/api/v1/stream";

/// Outstanding tickets and when they expire.
#[derive(Debug, Default)]
pub struct Tickets(Mutex<HashMap<String, Instant>>);

impl Tickets {
    /// A new ticket, or `None` when [`MAX_OUTSTANDING`] unexpired tickets exist.
    pub fn issue(&self, now: Instant) -> Option<String> {
        let bytes: [u8; 32] = rand::random();
        let ticket = crate::alerts::deliver::hex(&bytes);
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.retain(|_, exp| *exp > now);
        if m.len() >= MAX_OUTSTANDING {
            return None;
        }
        m.insert(ticket.clone(), now + TTL);
        Some(ticket)
    }

    /// Removes `ticket`; true when it existed and had not expired.
    pub fn redeem(&self, ticket: &str, now: Instant) -> bool {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.remove(ticket).is_some_and(|exp| exp > now)
    }
}

/// `POST /api/v1/stream/ticket`: a viewer or operator token buys one ticket.
pub async fn issue(
    State(s): State<ApiState>,
    Extension(t): Extension<Arc<Tickets>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let h = handle(&s)?;
    authorize(h, &headers, Role::Viewer)?;
    let ticket = t.issue(Instant::now()).ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many stream tickets outstanding; retry in a minute".into(),
        )
    })?;
    Ok(Json(json!({ "ticket": ticket, "expires_in": TTL.as_secs() })).into_response())
}

/// Middleware: a `ticket` on `GET /api/v1/stream` is redeemed (once); a valid one marks the
/// request [`Redeemed`], an unknown or expired one is answered 401.
pub async fn guard(
    Extension(t): Extension<Arc<Tickets>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.uri().path() == STREAM_PATH {
        let ticket = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("ticket="))
                .map(str::to_owned)
        });
        if let Some(ticket) = ticket {
            if req.method() == axum::http::Method::GET && t.redeem(&ticket, Instant::now()) {
                req.extensions_mut().insert(Redeemed);
            } else {
                return ApiError(
                    StatusCode::UNAUTHORIZED,
                    "unknown, used or expired stream ticket".into(),
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_open_one_stream_within_their_ttl_and_are_bounded() {
        let t = Tickets::default();
        let now = Instant::now();
        let a = t.issue(now).expect("ticket");
        assert_eq!(a.len(), 64);
        assert!(t.redeem(&a, now + Duration::from_secs(59)));
        assert!(!t.redeem(&a, now), "single use");
        let b = t.issue(now).expect("ticket");
        assert!(!t.redeem(&b, now + TTL), "expired");
        for _ in 0..MAX_OUTSTANDING {
            t.issue(now).expect("below the bound");
        }
        assert!(t.issue(now).is_none(), "bounded");
        assert!(t.issue(now + TTL).is_some(), "expired ones make room");
    }
}
