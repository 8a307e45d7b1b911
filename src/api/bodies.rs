//! The JSON bodies of the alarm and notification routes, as types: handlers build them and
//! [`super::openapi`] derives their schemas from the same types, so the document cannot drift
//! from what is sent. A leaf file: it imports the types it carries, nothing of the routes.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::alerts::outbox::{LedgerEntry, Reason, Status};
use crate::i18n::{self, Language};
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
    /// The language of the rows' `text` (`?lang=`, else `[site] language`).
    pub language: String,
    /// The site's time zone, in which the rows' `text` times are.
    pub timezone: String,
    /// The ledger, newest first.
    pub notifications: Vec<LedgerRow>,
}

/// One ledger row: the machine fields (RFC 3339 UTC times) and the same in words.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerRow {
    /// The row.
    #[serde(flatten)]
    pub entry: LedgerEntry,
    /// For people.
    pub text: LedgerText,
}

/// A ledger row for people: words in the answer's language, times in the site's zone with
/// their offset (`2026-11-30 05:28:18 +08:00`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerText {
    /// Delivered, pending, expired or evicted, in words.
    pub status: String,
    /// Why it was made, in words.
    pub reason: String,
    /// The priority in words (紧急/高/中/低).
    pub priority: String,
    /// The first event's transition in words.
    pub transition: Option<String>,
    /// When it was made.
    pub created: String,
    /// When it was delivered, expired or evicted.
    pub finished: Option<String>,
    /// When the alarm was acknowledged.
    pub answered_at: Option<String>,
    /// The row in one line.
    pub summary: String,
}

impl LedgerRow {
    /// `entry` with its texts in `lang`, times in `tz`.
    pub fn new(entry: LedgerEntry, lang: Language, tz: chrono_tz::Tz) -> Self {
        let w = i18n::ledger_words(lang);
        let status = match entry.status {
            Status::Pending => w.pending,
            Status::Delivered => w.delivered,
            Status::Expired => w.expired,
            Status::Evicted => w.evicted,
        };
        let reason = match entry.reason {
            Reason::Event => w.event,
            Reason::Group => w.group,
            Reason::Reminder => w.reminder,
            Reason::Escalation => w.escalation,
            Reason::Report => w.report,
            Reason::Summary => w.summary,
        };
        let local = |t: std::time::SystemTime| i18n::local_time(t, tz);
        let created = local(entry.created);
        let finished = entry.finished.map(local);
        let answered_at = entry.answered_at.map(local);
        let priority = i18n::priority(lang, entry.priority);
        let transition = entry.transition.map(|t| i18n::transition(lang, t));
        let mut parts = vec![format!(
            "{created} {priority}{} {}",
            transition.map(|t| format!(" {t}")).unwrap_or_default(),
            entry.alarms.join(", ")
        )];
        parts.push(reason.to_owned());
        parts.push(
            w.to.replace("{receiver}", &entry.receiver)
                .replace("{route}", &entry.route)
                .replace("{tier}", &entry.tier.to_string()),
        );
        parts.push(status.to_owned());
        parts.push(w.attempts.replace("{n}", &entry.attempts.to_string()));
        if let Some(f) = &finished {
            parts.push(w.finished.replace("{at}", f));
        }
        if let Some(e) = &entry.last_error {
            parts.push(w.last_error.replace("{error}", e));
        }
        if let (Some(by), Some(at)) = (&entry.answered_by, &answered_at) {
            parts.push(w.answered.replace("{by}", by).replace("{at}", at));
        }
        let text = LedgerText {
            status: status.to_owned(),
            reason: reason.to_owned(),
            priority: priority.to_owned(),
            transition: transition.map(str::to_owned),
            created,
            finished,
            answered_at,
            summary: parts.join(" · "),
        };
        Self { entry, text }
    }
}

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong (never a token).
    pub error: String,
}
