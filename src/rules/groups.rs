//! Communication groups: which channels share a device and a source, for annunciating one
//! device (or source) communication alarm instead of one fault per channel.
//!
//! The grouping rule (docs/ARCHITECTURE.md, "Consequential faults"):
//! - A **source group** is every channel of one source (a Modbus TCP connection or serial bus, an
//!   MQTT session) when the source has at least two channels. Its alarm is `source.{id}:comm`.
//! - A **device group** is every channel of one device when the device has at least two channels
//!   and is not the only device of its source (then the source group says the same). Its alarm
//!   is `device.{id}:comm`; its parent is its source's group.
//! - A group is **down** when every one of its channels is Bad with a communication reason
//!   (`comm`, or `stale`: nothing arrived). It is up again as soon as one channel reads Good or
//!   Bad for another reason (the device answered).
//!
//! Pure: computed once from the resolved configuration.

use std::collections::BTreeMap;

use crate::config::Resolved;
use crate::model::ChannelId;

/// Whether a group is a whole source or one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A connection (Modbus TCP socket, serial bus, MQTT session).
    Source,
    /// A field device (a Modbus unit, an MQTT device).
    Device,
}

/// One communication group.
#[derive(Clone, Debug)]
pub struct GroupDef {
    /// Source or device.
    pub scope: Scope,
    /// The device or source id.
    pub name: String,
    /// The alarm's channel: `device.{id}` or `source.{id}`.
    pub channel: ChannelId,
    /// Area of its first channel.
    pub area: String,
    /// The most safety-relevant kind among its channels (toxic before combustible before
    /// oxygen before others), so routes by kind still reach the people they did.
    pub kind: String,
    /// Indices into `Resolved.channels`.
    pub members: Vec<usize>,
    /// Index of the source group of a device group.
    pub parent: Option<usize>,
}

impl GroupDef {
    /// The group's alarm id.
    pub fn alarm_id(&self) -> String {
        format!("{}:comm", self.channel)
    }
}

/// Every group of a configuration: source groups first, then device groups.
pub fn groups(cfg: &Resolved) -> Vec<GroupDef> {
    let index: BTreeMap<&ChannelId, usize> = cfg
        .channels
        .iter()
        .enumerate()
        .map(|(i, c)| (&c.id, i))
        .collect();
    // source id -> device id -> channel indices, in configuration order.
    type Devices = Vec<(String, Vec<usize>)>;
    let mut by_source: Vec<(String, Devices)> = Vec::new();
    let mut add = |src: &str, dev: &str, ch: usize| {
        let s = match by_source.iter().position(|(s, _)| s == src) {
            Some(p) => p,
            None => {
                by_source.push((src.to_owned(), Vec::new()));
                by_source.len() - 1
            }
        };
        let devs = &mut by_source[s].1;
        match devs.iter_mut().find(|(d, _)| d == dev) {
            Some((_, v)) => v.push(ch),
            None => devs.push((dev.to_owned(), vec![ch])),
        }
    };
    for s in cfg.modbus() {
        for d in &s.devices {
            for p in &d.points {
                if let Some(&i) = index.get(&p.channel) {
                    add(s.id.as_str(), d.id.as_str(), i);
                }
            }
        }
    }
    for m in cfg.mqtt() {
        for c in &m.cfg.channels {
            if let Some(&i) = index.get(&ChannelId::new(&c.id)) {
                add(m.id.as_str(), cfg.channels[i].device.as_str(), i);
            }
        }
    }
    let def = |scope, name: &str, members: Vec<usize>, parent| {
        let prefix = match scope {
            Scope::Source => "source",
            Scope::Device => "device",
        };
        let kind = members
            .iter()
            .map(|&i| cfg.channels[i].kind.as_str())
            .min_by_key(|k| crate::model::kind_rank(k))
            .unwrap_or("generic")
            .to_owned();
        GroupDef {
            scope,
            name: name.to_owned(),
            channel: ChannelId::new(format!("{prefix}.{name}")),
            area: members
                .first()
                .map(|&i| cfg.channels[i].area.clone())
                .unwrap_or_default(),
            kind,
            members,
            parent,
        }
    };
    let mut out = Vec::new();
    let mut parents = Vec::new();
    for (src, devs) in &by_source {
        let mut members: Vec<usize> = devs.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        members.sort_unstable();
        members.dedup();
        if members.len() >= 2 {
            out.push(def(Scope::Source, src, members, None));
            parents.push(Some(out.len() - 1));
        } else {
            parents.push(None);
        }
    }
    for ((_, devs), parent) in by_source.iter().zip(parents) {
        if devs.len() < 2 && parent.is_some() {
            continue;
        }
        for (dev, members) in devs {
            if members.len() >= 2 {
                out.push(def(Scope::Device, dev, members.clone(), parent));
            }
        }
    }
    out
}
