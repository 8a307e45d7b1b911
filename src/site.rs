//! Who the site is for the people who read about it: its display name, time zone, language and
//! area names. Compiled once from the configuration and handed to every component that writes
//! text for people (alert texts, the status page, the ledger).

use std::collections::BTreeMap;

use chrono_tz::Tz;

use crate::i18n::Language;

/// The site's identity for people.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Site id (the `site` tag of every point).
    pub id: String,
    /// Display name; may be empty (then the id is shown).
    pub name: String,
    /// Time zone of every time shown to people.
    pub zone: Tz,
    /// Language of alert texts.
    pub language: Language,
    /// Display names of areas by id (`[[areas]]`).
    pub areas: BTreeMap<String, String>,
}

impl Identity {
    /// The name of an area shown to people: its `[[areas]]` name, else its id.
    pub fn area_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.areas.get(id).map_or(id, String::as_str)
    }

    /// The site's name shown to people: its display name, else its id.
    pub fn display_name(&self) -> &str {
        if self.name.trim().is_empty() {
            &self.id
        } else {
            &self.name
        }
    }
}
