//! What a receiver needs to write about a notification: the site, its time zone and language,
//! and each channel's label, area and unit.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use super::site::AlarmInfo;
use crate::model::ChannelId;

/// What a message says about a channel: label, area and unit (equal texts are one shared
/// allocation across the table).
#[derive(Debug, Clone, Default)]
pub struct ChannelInfo {
    /// Display label (location, tag).
    pub label: Arc<str>,
    /// Area.
    pub area: Arc<str>,
    /// Unit.
    pub unit: Arc<str>,
}

/// A table shared by every task of alert delivery that a configuration reload replaces whole
/// (readers take a snapshot with [`Swap::load`]; a reload never waits for a send to finish).
#[derive(Debug)]
pub struct Swap<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Swap<T> {
    /// A table holding `v`.
    pub fn new(v: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(v))))
    }

    /// The table as it is now.
    pub fn load(&self) -> Arc<T> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the table for every holder.
    pub fn store(&self, v: T) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(v);
    }
}

/// Site-level context for formatting.
#[derive(Debug, Clone)]
pub struct Context {
    /// Site id.
    pub site: String,
    /// Site display name.
    pub site_name: String,
    /// Channel metadata (replaced by a configuration reload).
    pub channels: Swap<HashMap<ChannelId, ChannelInfo>>,
    /// The site's time zone: every time in a text for people is in it, with its offset.
    pub tz: chrono_tz::Tz,
    /// The language of texts for people (`[site] language`).
    pub language: crate::i18n::Language,
    /// What people need to know about each alarm (label, area name, unit, message, response),
    /// by alarm id (replaced by a configuration reload).
    pub alarms: Swap<HashMap<Arc<str>, AlarmInfo>>,
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
            alarms: Swap::new(alarm_table(site)),
            channels: Swap::new(channel_table(site)),
        }
    }
}

/// Every configured alarm's information, by id.
pub fn alarm_table(site: &super::site::Site<'_>) -> HashMap<Arc<str>, AlarmInfo> {
    site.alarms.iter().cloned().collect()
}

/// Every configured channel's label, area name and unit, by id.
pub fn channel_table(site: &super::site::Site<'_>) -> HashMap<ChannelId, ChannelInfo> {
    let id = &site.identity;
    let mut seen: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
    let mut text = |s: &str| -> Arc<str> {
        if let Some(t) = seen.get(s) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(s);
        seen.insert(t.clone());
        t
    };
    site.channels
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                ChannelInfo {
                    label: text(&c.label),
                    area: text(id.area_name(&c.area)),
                    unit: text(&c.unit),
                },
            )
        })
        .collect()
}
