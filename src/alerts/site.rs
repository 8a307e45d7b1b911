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

pub use crate::model::AlarmInfo;
