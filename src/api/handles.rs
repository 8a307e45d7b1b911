//! What every handler reads: snapshots, metrics and the handles of the alarm engine and the
//! alert outbox, all given when the API is built (nothing is attached later).

use std::sync::Arc;

use crate::state::SharedState;
use crate::telemetry::Metrics;

/// What handlers read.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// Snapshots.
    pub state: Arc<SharedState>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The alarm engine's board and command channel (`/api/v1/alarms`, tokens, read access),
    /// given at construction. `None` only for an API built without an engine (tests of the
    /// snapshot routes): alarm and notification routes then answer 503, and with no engine
    /// there are no tokens to check reads against.
    pub alarms: Option<crate::rules::AlarmsHandle>,
    /// The alert outbox and delivery ledger (`/api/v1/notifications`), given at construction.
    pub outbox: Option<Arc<crate::alerts::Outbox>>,
    /// Where `POST /api/v1/config/reload` sends its ask, given at construction. `None` for an
    /// API built without a coordinator: the route answers 503.
    pub reload: Option<tokio::sync::mpsc::Sender<crate::control::ReloadAsk>>,
}
