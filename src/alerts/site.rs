//! What alert delivery needs from the site model.

use std::sync::Arc;

/// What alert delivery needs from the site model, handed over at construction (alert delivery
/// never reads the whole configuration). `config` builds it from its `Resolved`.
#[derive(Clone, Debug)]
pub struct Site<'a> {
    /// Who the site is for people (name, zone, language, area names).
    pub identity: crate::site::Identity,
    /// `[notifications]`: outbox and routes.
    pub notifications: &'a super::config::Notifications,
    /// The receivers, in configuration order.
    pub receivers: &'a [super::receivers::Receiver],
    /// The configured channels.
    pub channels: &'a [crate::model::Channel],
    /// Areas of the communication alarm channels (`device.{id}`, `source.{id}`).
    pub group_areas: Vec<(crate::model::ChannelId, String)>,
    /// What people need to know about each configured alarm, by alarm id.
    pub alarms: Vec<(Arc<str>, AlarmInfo)>,
    /// Whether an alarm journal keeps sequence numbers across restarts (else idempotency keys
    /// carry the start time).
    pub journaled: bool,
}

/// What an alarm is about, for people: every notification carries it (webhook `details`,
/// robot texts). The texts are the alarm engine's own, shared (not copied per alarm).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AlarmInfo {
    /// The channel's label (a composite's message or id).
    pub label: Arc<str>,
    /// Area id.
    pub area: Arc<str>,
    /// Area display name.
    pub area_name: Arc<str>,
    /// Unit.
    pub unit: Arc<str>,
    /// The rule's configured message.
    pub message: Option<Arc<str>>,
    /// What to do (处置措施).
    pub response: Option<Arc<str>>,
}
