//! What a receiver needs to write about a notification: the site, its time zone and language,
//! and each channel's label, area and unit.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Resolved;
use crate::model::ChannelId;

/// What a message says about a channel: label, area and unit.
#[derive(Debug, Clone, Default)]
pub struct ChannelInfo {
    /// Display label (location, tag).
    pub label: String,
    /// Area.
    pub area: String,
    /// Unit.
    pub unit: String,
}

/// Site-level context for formatting.
#[derive(Debug, Clone)]
pub struct Context {
    /// Site id.
    pub site: String,
    /// Site display name.
    pub site_name: String,
    /// Channel metadata.
    pub channels: Arc<HashMap<ChannelId, ChannelInfo>>,
    /// The site's time zone: every time in a text for people is in it, with its offset.
    pub tz: chrono_tz::Tz,
    /// The language of texts for people (`[site] language`).
    pub language: crate::i18n::Language,
    /// What people need to know about each alarm (label, area name, unit, message, response),
    /// by alarm id.
    pub alarms: Arc<HashMap<String, AlarmInfo>>,
}

/// What an alarm is about, for people: every notification carries it (webhook `details`,
/// robot texts).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AlarmInfo {
    /// The channel's label (a composite's message or id).
    pub label: String,
    /// Area id.
    pub area: String,
    /// Area display name.
    pub area_name: String,
    /// Unit.
    pub unit: String,
    /// The rule's configured message.
    pub message: Option<String>,
    /// What to do (处置措施).
    pub response: Option<String>,
}

impl Context {
    /// From the validated configuration.
    pub fn new(cfg: &Resolved) -> Self {
        Self {
            site: cfg.site.id.clone(),
            site_name: cfg.site.name.clone(),
            tz: cfg.site_zone(),
            language: cfg.site.language,
            // The engine's own view of every configured alarm (pure, no I/O), so texts name
            // alarms exactly as the API does.
            alarms: Arc::new(
                crate::rules::Engine::new(cfg, std::time::Instant::now())
                    .views()
                    .into_iter()
                    .map(|v| {
                        (
                            v.id,
                            AlarmInfo {
                                label: v.label,
                                area: v.area,
                                area_name: v.area_name,
                                unit: v.unit,
                                message: v.message,
                                response: v.response,
                            },
                        )
                    })
                    .collect(),
            ),
            channels: Arc::new(
                cfg.channels
                    .iter()
                    .map(|c| {
                        (
                            c.id.clone(),
                            ChannelInfo {
                                label: c.label.clone(),
                                area: cfg.area_name(&c.area).to_owned(),
                                unit: c.unit.clone(),
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }
}
