//! `GET /api/v1/openapi.json`. The alarm, event and notification bodies are described by
//! schemas derived from the Rust types the handlers send ([`super::bodies`], and through them
//! `rules::AlarmView`, `model::AlarmEvent`, `alerts::outbox::LedgerEntry`, …), merged at start
//! into the paths of `openapi.json` (the routes' summaries, parameters and answers). A field added
//! to one of those types is documented by the same build; `tests/api.rs` checks that every route
//! the router registers is documented and `tests/alarms_api.rs` validates real answers against
//! the document.

use std::sync::LazyLock;

use serde_json::Value;
use utoipa::OpenApi;

use super::bodies;

#[derive(OpenApi)]
#[openapi(components(schemas(
    bodies::AlarmList,
    bodies::AlarmRow,
    bodies::History,
    bodies::Audit,
    bodies::ActResult,
    bodies::ModeResult,
    bodies::Notifications,
    bodies::LedgerRow,
    bodies::ErrorBody,
    crate::control::ReloadReport
)))]
struct Generated;

/// The paths and the schemas of the snapshot routes.
const PATHS: &str = include_str!("openapi.json");

static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

/// The document: `openapi.json` with the generated schemas added under `components/schemas`.
pub fn document() -> Value {
    let mut doc: Value = serde_json::from_str(PATHS).expect("src/api/openapi.json is JSON");
    let generated = serde_json::to_value(Generated::openapi().components.unwrap_or_default())
        .expect("schemas serialise");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("openapi.json has components.schemas");
    if let Some(g) = generated["schemas"].as_object() {
        for (name, schema) in g {
            let clash = schemas.insert(name.clone(), schema.clone());
            assert!(
                clash.is_none(),
                "schema {name} is both in openapi.json and generated"
            );
        }
    }
    doc
}

/// The document as served (built once).
pub fn served() -> &'static str {
    &DOCUMENT
}
