//! What a receiver needs to write about a notification: the site, its time zone and language,
//! and each channel's label, area and unit.

use std::collections::HashMap;
use std::sync::Arc;

pub use super::site::AlarmInfo;
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

impl Context {
    /// From the pieces of the site model alert delivery gets.
    pub fn new(site: &super::site::Site<'_>) -> Self {
        let id = &site.identity;
        Self {
            site: id.id.clone(),
            site_name: id.name.clone(),
            tz: id.zone,
            language: id.language,
            alarms: Arc::new(site.alarms.iter().cloned().collect()),
            channels: Arc::new(
                site.channels
                    .iter()
                    .map(|c| {
                        (
                            c.id.clone(),
                            ChannelInfo {
                                label: c.label.clone(),
                                area: id.area_name(&c.area).to_owned(),
                                unit: c.unit.clone(),
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }
}
