//! `[[sources.channel_sets]]`: the channels of an MQTT source declared by template for a list
//! of expected devices (`devices = { prefix = "gt-", from = 1, to = 500, width = 3 }`).
//!
//! Invariants:
//! - A set expands, before anything else reads the source, into ordinary
//!   [`MqttChannel`]s appended after the source's explicit `[[sources.channels]]`: every
//!   expected channel exists from the start with a maximum age and goes stale when silent; a
//!   message for a device or channel that is not expected is dropped (counted) as for any
//!   undeclared channel, never auto-created.
//! - A set's mistakes are reported once, at the set's own path
//!   (`sources[0].channel_sets[1].devices.to`), never once per generated channel.
//! - A generated channel that is also declared elsewhere on the source is refused, naming
//!   both places.

use std::collections::HashMap;

pub use super::mqtt::{ChannelSet, DeviceGroup, ExpectedDevices, SetChannel};
use super::mqtt::{Expanded, MqttChannel, MqttSource, Origin};
use crate::check::Problems;
use crate::model::check_id;

/// Most devices one set may expand to (a typo such as `to = 5000000` must not allocate
/// millions of channels).
pub const MAX_SET_DEVICES: u64 = 100_000;

/// Expands every set of `s` (at config path `path`), reporting its mistakes into `p`. A set
/// with a mistake contributes no channel (its problems are errors, so the file is refused).
pub fn expand(s: &MqttSource, path: &str, p: &mut Problems) -> Expanded {
    let mut source = s.clone();
    source.channel_sets = Vec::new();
    let mut origins: Vec<Origin> = (0..s.channels.len()).map(Origin::Explicit).collect();
    // Channel id → its origin, for duplicates across sets and with explicit channels
    // (duplicates among explicit channels are reported by `check_source`).
    let mut seen: HashMap<String, Origin> = s
        .channels
        .iter()
        .enumerate()
        .map(|(j, c)| (c.id.clone(), Origin::Explicit(j)))
        .collect();
    for (k, set) in s.channel_sets.iter().enumerate() {
        let sp = format!("{path}.channel_sets[{k}]");
        let members = match members(set, &sp, p) {
            Some(m) => m,
            None => continue,
        };
        for c in members {
            if let Some(first) = seen.get(&c.id) {
                let at = match first {
                    Origin::Explicit(j) => format!("{path}.channels[{j}]"),
                    Origin::Set(o) => format!("{path}.channel_sets[{o}]"),
                };
                p.err(
                    sp.clone(),
                    format!(
                        "channel `{}` (device `{}`) is also declared at {at}: declare it once",
                        c.id,
                        c.device_id()
                    ),
                );
                continue;
            }
            seen.insert(c.id.clone(), Origin::Set(k));
            source.channels.push(c);
            origins.push(Origin::Set(k));
        }
    }
    Expanded { source, origins }
}

/// The channels of one set, or `None` after reporting its mistakes.
fn members(set: &ChannelSet, sp: &str, p: &mut Problems) -> Option<Vec<MqttChannel>> {
    let before = p.0.len();
    let template = match Template::parse(&set.id) {
        Ok(t) => Some(t),
        Err(e) => {
            p.err(format!("{sp}.id"), e);
            None
        }
    };
    if let Some(a) = &set.area {
        if let Err(e) = check_id(a, false) {
            p.err(format!("{sp}.area"), e);
        }
    }
    if set.max_age.is_some_and(|a| a.is_zero()) {
        p.err(format!("{sp}.max_age"), "must be longer than 0s");
    }
    if set.channels.is_empty() {
        p.err(
            format!("{sp}.channels"),
            "give at least one channel (`[[sources.channel_sets.channels]]`)",
        );
    }
    let mut names = HashMap::new();
    for (c, ch) in set.channels.iter().enumerate() {
        let cp = format!("{sp}.channels[{c}]");
        if let Err(e) = check_id(&ch.name, false) {
            p.err(format!("{cp}.name"), e);
        } else if let Some(first) = names.insert(ch.name.as_str(), c) {
            p.err(
                format!("{cp}.name"),
                format!(
                    "`{}` is already {sp}.channels[{first}]: every device would get the channel twice",
                    ch.name
                ),
            );
        }
        if let Some(r) = ch.range {
            if r[0].partial_cmp(&r[1]) != Some(std::cmp::Ordering::Less) {
                p.err(
                    format!("{cp}.range"),
                    "first bound must be below the second",
                );
            }
        }
        if ch.max_age.is_some_and(|a| a.is_zero()) {
            p.err(format!("{cp}.max_age"), "must be longer than 0s");
        }
    }
    // Devices: (area, id) in order.
    let mut devices: Vec<(&str, String)> = Vec::new();
    let mut device_at: HashMap<String, String> = HashMap::new();
    let mut total: u64 = 0;
    if set.devices.groups.is_empty() {
        p.err(format!("{sp}.devices"), "give at least one device");
    }
    for (g, group) in set.devices.groups.iter().enumerate() {
        let gp = if set.devices.single {
            format!("{sp}.devices")
        } else {
            format!("{sp}.devices[{g}]")
        };
        let area = match (&group.area, &set.area) {
            (Some(a), _) => {
                if let Err(e) = check_id(a, false) {
                    p.err(format!("{gp}.area"), e);
                }
                a.as_str()
            }
            (None, Some(a)) => a.as_str(),
            (None, None) => {
                p.err(
                    format!("{gp}.area"),
                    "give the devices' `area` here or on the set",
                );
                ""
            }
        };
        let mut ids: Vec<(String, String)> = group
            .ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let at = if group.bare {
                    gp.clone()
                } else {
                    format!("{gp}.ids[{n}]")
                };
                (id.clone(), at)
            })
            .collect();
        match (group.from, group.to) {
            (None, None) => {
                if group.ids.is_empty() {
                    p.err(
                        gp.clone(),
                        "give `ids = [...]` or a range (`prefix`, `from`, `to`, `width`)",
                    );
                }
                if !group.prefix.is_empty() || group.width != 0 {
                    p.err(
                        format!("{gp}.from"),
                        "`prefix` and `width` need a range: give `from` and `to`",
                    );
                }
            }
            (Some(_), None) => p.err(format!("{gp}.to"), "a range needs `to` (inclusive)"),
            (None, Some(_)) => p.err(format!("{gp}.from"), "a range needs `from`"),
            (Some(from), Some(to)) => {
                if from > to {
                    p.err(
                        format!("{gp}.to"),
                        format!("must not be below `from` ({from})"),
                    );
                } else if (to - from).saturating_add(1).saturating_add(total) > MAX_SET_DEVICES {
                    p.err(
                        format!("{gp}.to"),
                        format!("a set holds at most {MAX_SET_DEVICES} devices"),
                    );
                } else if group.width > 20 {
                    p.err(format!("{gp}.width"), "must be at most 20 digits");
                } else {
                    let w = group.width;
                    for n in from..=to {
                        ids.push((format!("{}{n:0w$}", group.prefix), format!("{gp}.prefix")));
                    }
                }
            }
        }
        total += ids.len() as u64;
        if total > MAX_SET_DEVICES {
            p.err(
                gp.clone(),
                format!("a set holds at most {MAX_SET_DEVICES} devices"),
            );
            break;
        }
        let mut bad_id = false;
        for (id, at) in ids {
            if let Err(e) = check_id(&id, false) {
                // One message per group: a bad prefix would otherwise be reported per device.
                if !bad_id {
                    p.err(at, e);
                    bad_id = true;
                }
                continue;
            }
            if let Some(first) = device_at.insert(id.clone(), at.clone()) {
                p.err(
                    at,
                    format!("device `{id}` is already expected at {first}: list it once"),
                );
                continue;
            }
            devices.push((area, id));
        }
    }
    let template = template?;
    if p.0.len() > before {
        return None;
    }
    let mut out = Vec::with_capacity(devices.len() * set.channels.len());
    for (area, device) in &devices {
        for ch in &set.channels {
            let vars = [
                ("area", *area),
                ("device", device.as_str()),
                ("name", &ch.name),
            ];
            let id = template.fill(&vars);
            if let Err(e) = check_id(&id, true) {
                p.err(
                    format!("{sp}.id"),
                    format!("gives channel id `{id}` for device `{device}`: {e}"),
                );
                return None;
            }
            out.push(MqttChannel {
                id,
                area: Some((*area).to_owned()),
                device: Some(device.clone()),
                kind: ch.kind.clone(),
                unit: ch.unit.clone(),
                label: ch.label.as_deref().map(|l| fill_text(l, &vars)),
                range: ch.range,
                max_age: ch.max_age.or(set.max_age),
                states: ch.states.clone(),
            });
        }
    }
    Some(out)
}

/// A parsed channel id template.
struct Template(Vec<Piece>);

enum Piece {
    Text(String),
    Var(&'static str),
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut has_device = false;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("`{text}`: `{{` without `}}`"));
            };
            let var = match &rest[open + 1..open + close] {
                "area" => "area",
                "device" => {
                    has_device = true;
                    "device"
                }
                "name" => "name",
                other => {
                    return Err(format!(
                        "`{text}`: unknown placeholder `{{{other}}}` (use `{{area}}`, `{{device}}` and `{{name}}`)"
                    ));
                }
            };
            pieces.push(Piece::Var(var));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}`: `}}` without `{{`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        if !has_device {
            return Err(format!(
                "`{text}` must use `{{device}}` so every device gets its own channels"
            ));
        }
        Ok(Template(pieces))
    }

    fn fill(&self, vars: &[(&str, &str); 3]) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => {
                    out.push_str(vars.iter().find(|(k, _)| k == v).map_or("", |(_, x)| x))
                }
            }
        }
        out
    }
}

/// `{area}`, `{device}` and `{name}` filled into free text (a label); other braces are kept.
fn fill_text(text: &str, vars: &[(&str, &str); 3]) -> String {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}
