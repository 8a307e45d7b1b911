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
    pub alarms: Swap<AlarmTable>,
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
pub fn alarm_table(site: &super::site::Site<'_>) -> AlarmTable {
    site.alarms.iter().cloned().collect()
}

/// What people need to know about each alarm, by alarm id: a slice sorted by id, exactly sized
/// (a site has thousands of alarms; a hash table would hold a third more slots than entries).
#[derive(Debug, Default)]
pub struct AlarmTable(Box<[(Arc<str>, AlarmInfo)]>);

impl AlarmTable {
    /// The information of alarm `id`.
    pub fn get(&self, id: &str) -> Option<&AlarmInfo> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(id))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Number of alarms.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `new`'s entries, and `old`'s for the ids `new` does not have.
    pub fn merged(old: Self, new: Self) -> Self {
        old.0
            .into_vec()
            .into_iter()
            .chain(new.0.into_vec())
            .collect()
    }
}

impl FromIterator<(Arc<str>, AlarmInfo)> for AlarmTable {
    /// Of entries with equal ids, the last one is kept (as a map's insert would).
    fn from_iter<I: IntoIterator<Item = (Arc<str>, AlarmInfo)>>(iter: I) -> Self {
        let mut all: Vec<(Arc<str>, AlarmInfo)> = iter.into_iter().collect();
        // Stable: equal ids stay in their order, the last one wins below.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Arc<str>, AlarmInfo)> = Vec::with_capacity(all.len());
        for e in all {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        Self(out.into_boxed_slice())
    }
}

/// Every configured channel's label, area name and unit, by id.
pub fn channel_table(site: &super::site::Site<'_>) -> HashMap<ChannelId, ChannelInfo> {
    let id = &site.identity;
    let mut pool = crate::model::TextPool::default();
    let mut text = |s: &str| pool.get(s);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info(label: &str) -> AlarmInfo {
        AlarmInfo {
            label: label.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_alarm_table_finds_every_id_and_a_merge_keeps_the_new_entry() {
        let old: AlarmTable = [("b", "old b"), ("a", "old a"), ("c", "old c")]
            .into_iter()
            .map(|(k, v)| (Arc::from(k), info(v)))
            .collect();
        assert_eq!(old.len(), 3);
        for (k, v) in [("a", "old a"), ("b", "old b"), ("c", "old c")] {
            assert_eq!(&*old.get(k).expect(k).label, v);
        }
        assert!(old.get("d").is_none());
        let new: AlarmTable = [("d", "new d"), ("b", "new b"), ("d", "newer d")]
            .into_iter()
            .map(|(k, v)| (Arc::from(k), info(v)))
            .collect();
        assert_eq!(new.len(), 2);
        let m = AlarmTable::merged(old, new);
        let got: Vec<(&str, &str)> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| (*k, &*m.get(k).expect(k).label))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "old a"),
                ("b", "new b"),
                ("c", "old c"),
                ("d", "newer d")
            ]
        );
        assert_eq!(m.len(), 4);
        assert!(AlarmTable::default().is_empty());
    }
}
