//! The JSON bodies of the alarm and notification routes, as types: handlers build them and
//! [`super::openapi`] derives their schemas from the same types, so the document cannot drift
//! from what is sent. A leaf file: it imports the types it carries, nothing of the routes.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::alerts::outbox::LedgerEntry;
use crate::model::AlarmEvent;
use crate::rules::AlarmView;
use crate::rules::journal::ModeState;

/// An alarm as the API answers it: the engine's view and the device of its channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmRow {
    /// The alarm.
    #[serde(flatten)]
    pub alarm: AlarmView,
    /// The device of the alarm's channel (`null` for alarms over several channels or none).
    pub device: Option<String>,
    /// The device's display name (`[[devices]] name`, `[[sources.devices]]`), `null` when none
    /// is configured.
    pub device_name: Option<String>,
}

impl AlarmRow {
    /// `alarm` with its channel's device from `state`.
    pub fn new(alarm: AlarmView, state: &crate::state::SharedState) -> Self {
        let (device, name) = state
            .device_of(&alarm.channel)
            .map_or((None, None), |(d, n)| {
                (Some(d.to_string()), Some(n).filter(|n| !n.is_empty()))
            });
        Self {
            alarm,
            device,
            device_name: name,
        }
    }
}

/// `GET /api/v1/alarms`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmList {
    /// The site id.
    pub site: String,
    /// The site mode with who set it.
    pub site_mode: ModeState,
    /// An alarm flood is on (more alarms than an operator can handle).
    pub flood: bool,
    /// Alarms not normal (all with `?all=true`), highest priority first, toxic before
    /// combustible at the same level.
    pub alarms: Vec<AlarmRow>,
}

/// `GET /api/v1/alarms/history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// Events, oldest first.
    pub events: Vec<AlarmEvent>,
}

/// `GET /api/v1/alarms/{id}/audit`: the alarm and every event of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Audit {
    /// The alarm.
    pub alarm: AlarmRow,
    /// Its events, oldest first: who did what, when, with which comment.
    pub events: Vec<AlarmEvent>,
}

/// `POST /api/v1/alarms/{id}/{action}`: the alarm after the action and the events it made.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActResult {
    /// The alarm after the action.
    pub alarm: Option<AlarmRow>,
    /// The journaled events of the action.
    pub events: Vec<AlarmEvent>,
}

/// `POST /api/v1/alarms/site-mode`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModeResult {
    /// The site mode now.
    pub site_mode: ModeState,
    /// The journaled events of the change.
    pub events: Vec<AlarmEvent>,
}

/// `GET /api/v1/notifications`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notifications {
    /// The site id.
    pub site: String,
    /// The outbox is kept on disk (survives a restart).
    pub durable: bool,
    /// Notifications waiting, by receiver.
    pub backlog: BTreeMap<String, usize>,
    /// The ledger, newest first.
    pub notifications: Vec<LedgerEntry>,
}

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong (never a token).
    pub error: String,
}
