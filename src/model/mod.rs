//! Pure data types shared by every stage: ids, samples and their quality, alarm events.
//!
//! Invariants:
//! - A [`Sample`] with [`Quality::Bad`] carries no value. A missing reading can never be mistaken
//!   for a safe one downstream, because there is no number to compare against a limit.
//! - Ids are newtypes validated at configuration time; nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Eq, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        /// The text's hash, as `str` hashes it (lookups by `&str` find the id).
        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                str::hash(&self.0, state);
            }
        }

        /// Equal when the text is; an id shared from the configuration (the same allocation)
        /// is recognised without reading the text. `Arc<str>` itself always compares the
        /// bytes, and every map lookup of a sample's channel paid for that (perf: 8 % of the
        /// gateway's CPU at 20,000 msg/s, mostly cache misses on the keys' text).
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
            }
        }

        impl $name {
            /// Wraps a string; validity is checked by the configuration pass.
            pub fn new(s: impl AsRef<str>) -> Self {
                Self(Arc::from(s.as_ref()))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// Maps and sets of ids can be searched with a `&str` (the hash and order are the
        /// text's).
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// What an alarm is about, for people: every notification carries it (webhook `details`,
/// robot texts). The texts are the alarm engine's own, shared (not copied per alarm).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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

/// Interns texts: equal texts handed out by one pool are one shared allocation (the kinds,
/// areas and units repeated over thousands of channels and alarms).
#[derive(Debug, Default)]
pub struct TextPool(std::collections::HashSet<Arc<str>>);

impl TextPool {
    /// The shared text equal to `s`.
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(t) = self.0.get(s) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(s);
        self.0.insert(t.clone());
        t
    }

    /// [`TextPool::get`] for an optional text.
    pub fn opt(&mut self, s: Option<&str>) -> Option<Arc<str>> {
        s.map(|s| self.get(s))
    }
}

id_type!(
    /// Stable channel id such as `tankfarm.t101.level`: dotted segments of `[a-z0-9_-]`.
    ChannelId
);
id_type!(
    /// A field device (one Modbus unit, one data unit) as named in the configuration.
    DeviceId
);
id_type!(
    /// A connection the gateway owns: one TCP socket, one serial bus, one MQTT session.
    SourceId
);

/// A channel of the site with all defaults applied: what every stage knows of it.
#[derive(Clone, Debug)]
pub struct Channel {
    /// Stable id.
    pub id: ChannelId,
    /// Producing device.
    pub device: DeviceId,
    /// Area.
    pub area: String,
    /// Kind (`combustible_gas`, …), `generic` when unset.
    pub kind: String,
    /// Engineering unit, empty when unset.
    pub unit: String,
    /// Display label.
    pub label: String,
    /// Engineering range.
    pub range: Option<[f64; 2]>,
    /// Staleness limit.
    pub max_age: Duration,
    /// Words for the channel's values (`0 → 停止`), empty when none are configured.
    pub states: BTreeMap<i64, String>,
    /// The display name of its device (`[[devices]] name`, `[[sources.devices]]`), empty when
    /// none is configured.
    pub device_name: String,
}

/// Ordering rank of a kind: toxic before combustible before others, at the same priority.
pub fn kind_rank(kind: &str) -> u8 {
    match kind {
        "toxic_gas" => 0,
        "combustible_gas" => 1,
        "oxygen" => 2,
        "system" => 4,
        _ => 3,
    }
}

/// Checks the shape of an id: non-empty dotted segments of lowercase ASCII letters, digits, `_`, `-`.
pub fn check_id(s: &str, dotted: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    for seg in s.split('.') {
        if !dotted && s.contains('.') {
            return Err(format!("`{s}` must not contain `.`"));
        }
        if seg.is_empty() {
            return Err(format!("`{s}` has an empty segment"));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "`{s}` contains `{c}`; use lowercase letters, digits, `_` and `-`"
            ));
        }
    }
    Ok(())
}

/// Why a sample is not usable as a measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum BadReason {
    /// The link to the device failed (connect error, timeout, broken connection).
    Comm { detail: String },
    /// The device answered with a Modbus exception code.
    Exception { code: u8 },
    /// The raw value is outside the configured valid range (for example an open 4–20 mA loop).
    OutOfRange { raw: f64 },
    /// The device reported its own fault code.
    DeviceFault { code: i64 },
    /// No good sample arrived within the channel's maximum age.
    Stale,
    /// The payload could not be decoded.
    Decode { detail: String },
    /// The device (or its data unit) reported a non-numeric status other than a good one.
    DeviceStatus { status: String },
    /// A gas or oxygen reading further below its range minimum than [`GAS_BELOW_RANGE_TOLERANCE`]
    /// allows: a broken loop or sensor, never a calm reading.
    BelowRange { value: f64, min: f64 },
}

impl BadReason {
    /// Short, low-cardinality name used in metrics and the time-series schema.
    pub fn kind(&self) -> &'static str {
        match self {
            BadReason::Comm { .. } => "comm",
            BadReason::Exception { .. } => "exception",
            BadReason::OutOfRange { .. } => "out_of_range",
            BadReason::DeviceFault { .. } => "device_fault",
            BadReason::Stale => "stale",
            BadReason::Decode { .. } => "decode",
            BadReason::DeviceStatus { .. } => "device_fault",
            BadReason::BelowRange { .. } => "out_of_range",
        }
    }
}

impl fmt::Display for BadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadReason::Comm { detail } => write!(f, "communication failure: {detail}"),
            BadReason::Exception { code } => f.write_str(&exception_text(*code)),
            BadReason::OutOfRange { raw } => write!(f, "raw value {raw} outside valid range"),
            BadReason::DeviceFault { code } => write!(f, "device fault code {code}"),
            BadReason::Stale => f.write_str("no good reading within the channel's maximum age"),
            BadReason::Decode { detail } => write!(f, "undecodable value: {detail}"),
            BadReason::DeviceStatus { status } => write!(f, "device reported status `{status}`"),
            BadReason::BelowRange { value, min } => write!(
                f,
                "value {value} below the range minimum {min} (broken loop or sensor)"
            ),
        }
    }
}

/// A Modbus exception as every text names it (samples, device health, `probe`, logs): code in
/// hex and the specification's name, e.g. `exception 0x02 illegal data address`.
pub fn exception_text(code: u8) -> String {
    let name = match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "not defined by the Modbus specification",
    };
    format!("exception 0x{code:02X} {name}")
}

/// How far (as a fraction of the range's span) a gas or oxygen reading may fall below its range
/// minimum and still be Good: 2.5 %, the NAMUR NE 43 fault limit of a 4–20 mA loop (3.6 mA is
/// 4 mA − 2.5 % of 16 mA) carried over to the engineering value, so digital detectors get the
/// same rule. Zero drift within it (−1 %LEL) stays a reading; −6.3 %LEL is a fault.
pub const GAS_BELOW_RANGE_TOLERANCE: f64 = 0.025;

/// Channel kinds that measure a gas concentration (combustible, toxic, oxygen).
pub fn is_gas_kind(kind: &str) -> bool {
    matches!(kind, "combustible_gas" | "toxic_gas" | "oxygen")
}

/// The lowest Good value of a channel: for a gas channel with a range, its minimum less
/// [`GAS_BELOW_RANGE_TOLERANCE`] of the span; `None` otherwise.
pub fn gas_floor(kind: &str, range: Option<[f64; 2]>) -> Option<f64> {
    let [lo, hi] = range?;
    (is_gas_kind(kind) && hi > lo).then_some(lo - GAS_BELOW_RANGE_TOLERANCE * (hi - lo))
}

/// Turns a Good reading below `floor` into `Bad(BelowRange)`; `min` is the range minimum named
/// in the reason.
pub fn screen_floor(reading: &mut Reading, floor: f64, min: f64) {
    if let Reading::Good(v) = *reading {
        if v < floor {
            *reading = Reading::Bad(BadReason::BelowRange { value: v, min });
        }
    }
}

/// A reading: a value, or the reason there is none.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// A usable engineering value (booleans are 0.0 / 1.0).
    Good(f64),
    /// No usable value.
    Bad(BadReason),
}

impl Reading {
    /// The value, when good.
    pub fn value(&self) -> Option<f64> {
        match self {
            Reading::Good(v) => Some(*v),
            Reading::Bad(_) => None,
        }
    }
}

/// One observation of one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Which channel.
    pub channel: ChannelId,
    /// When it was observed (device time when trusted, else the gateway's receive time).
    pub ts: SystemTime,
    /// The value or the reason it is missing.
    pub reading: Reading,
}

/// Nanoseconds since the Unix epoch, saturating at 0 for times before it.
pub fn epoch_nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Alarm severity as configured; higher sorts first in listings.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Informational.
    Low,
    /// Needs attention this shift.
    Medium,
    /// Needs action now.
    High,
    /// Danger to life: act immediately.
    Critical,
}

/// What happened to an alarm.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// The condition became true (after its on-delay).
    Raised,
    /// The condition became false (after its off-delay and deadband).
    Cleared,
    /// The channel has no usable reading.
    Fault,
    /// The channel has usable readings again.
    FaultCleared,
    /// A person acknowledged the alarm ("I have seen it").
    Acknowledged,
    /// A person reset a latched alarm whose condition had returned ("it is over").
    Reset,
    /// A person shelved the alarm for a limited time.
    Shelved,
    /// The shelf ended (by a person, or by expiry: `by` is `system`).
    Unshelved,
    /// A person took the alarm out of service (with a reason).
    OutOfService,
    /// A person returned the alarm to service.
    ReturnedToService,
    /// The site mode suppresses the alarm (suppressed by design).
    Suppressed,
    /// The site mode no longer suppresses the alarm.
    Unsuppressed,
    /// The site mode changed (`alarm` is `site:mode`).
    SiteMode,
    /// More than the flood threshold of activations in the flood window (`alarm` is `site:flood`).
    Flood,
    /// The flood is over.
    FloodEnded,
    /// One alarm activated at least the chattering threshold within the chattering window.
    Chattering,
    /// A configuration reload removed the alarm; `state` is the state it had (journaled so a
    /// replay forgets it; announced when it was not normal).
    Removed,
    /// A configuration reload was applied (`alarm` is `site:config`, `by` who asked, `message`
    /// what changed).
    ConfigChanged,
}

impl Transition {
    /// Name used in the time-series schema and notifications.
    pub fn as_str(&self) -> &'static str {
        match self {
            Transition::Raised => "raised",
            Transition::Cleared => "cleared",
            Transition::Fault => "fault",
            Transition::FaultCleared => "fault_cleared",
            Transition::Acknowledged => "acknowledged",
            Transition::Reset => "reset",
            Transition::Shelved => "shelved",
            Transition::Unshelved => "unshelved",
            Transition::OutOfService => "out_of_service",
            Transition::ReturnedToService => "returned_to_service",
            Transition::Suppressed => "suppressed",
            Transition::Unsuppressed => "unsuppressed",
            Transition::SiteMode => "site_mode",
            Transition::Flood => "flood",
            Transition::FloodEnded => "flood_ended",
            Transition::Chattering => "chattering",
            Transition::Removed => "removed",
            Transition::ConfigChanged => "config_changed",
        }
    }
}

/// The ISA-18.2 state of an alarm, as shown to people.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    /// Condition false, nothing to acknowledge or reset.
    #[default]
    Normal,
    /// Condition true, not yet acknowledged.
    ActiveUnacknowledged,
    /// Condition true, acknowledged.
    ActiveAcknowledged,
    /// Condition false again, the activation not yet acknowledged.
    ReturnedUnacknowledged,
    /// A latching alarm whose condition is false again: stays until a person resets it.
    Latched,
    /// Shelved by a person for a limited time.
    Shelved,
    /// Suppressed by design (the site mode).
    Suppressed,
    /// Out of service (reason, person, time recorded).
    OutOfService,
}

impl AlarmState {
    /// Every state, in lifecycle order.
    pub const ALL: [AlarmState; 8] = [
        AlarmState::Normal,
        AlarmState::ActiveUnacknowledged,
        AlarmState::ActiveAcknowledged,
        AlarmState::ReturnedUnacknowledged,
        AlarmState::Latched,
        AlarmState::Shelved,
        AlarmState::Suppressed,
        AlarmState::OutOfService,
    ];

    /// Name used in listings.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlarmState::Normal => "normal",
            AlarmState::ActiveUnacknowledged => "active_unacknowledged",
            AlarmState::ActiveAcknowledged => "active_acknowledged",
            AlarmState::ReturnedUnacknowledged => "returned_unacknowledged",
            AlarmState::Latched => "latched",
            AlarmState::Shelved => "shelved",
            AlarmState::Suppressed => "suppressed",
            AlarmState::OutOfService => "out_of_service",
        }
    }
}

/// The class of an alarm: process conditions, instrument faults, and gateway-level events are
/// kept apart in every output.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AlarmClass {
    /// A process condition (limit, rate, discrete, composite, schedule).
    #[default]
    Process,
    /// No usable reading (Bad quality or stale).
    Fault,
    /// Site-level events: site mode, flood, chattering.
    System,
}

impl AlarmClass {
    /// Name used in listings and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlarmClass::Process => "process",
            AlarmClass::Fault => "fault",
            AlarmClass::System => "system",
        }
    }
}

/// One alarm transition, as published by the rule engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlarmEvent {
    /// Monotonic; with an alarm journal, across restarts too.
    pub seq: u64,
    /// Rule id, e.g. `tankfarm.t101.level:HH`, or `tankfarm.t101.level:fault`.
    pub alarm: String,
    /// Channel the alarm watches.
    #[schema(value_type = String)]
    pub channel: ChannelId,
    /// Limit name (`LL`, `L`, `H`, `HH`), `ROC+`/`ROC-`, a discrete alarm's name, `fault`, or a
    /// composite rule's id.
    pub condition: String,
    /// Priority of the rule (faults are `high`).
    pub priority: Priority,
    /// What happened.
    pub transition: Transition,
    /// The value that caused it, when there was one.
    pub value: Option<f64>,
    /// The configured limit, for limit alarms.
    pub limit: Option<f64>,
    /// Human-readable description.
    pub message: String,
    /// When it happened.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, format = DateTime)]
    pub ts: SystemTime,
    /// Process, fault or system.
    #[serde(default)]
    pub class: AlarmClass,
    /// Channel kind (`toxic_gas`, `combustible_gas`, …) used for ordering; `composite` or
    /// `system` for alarms over several channels or none.
    #[serde(default)]
    pub kind: String,
    /// The alarm's ISA-18.2 state after this transition.
    #[serde(default)]
    pub state: AlarmState,
    /// Who did it, for actions by people (`system` for expiries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The person's comment or reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When the alarm episode this transition belongs to was raised (`raised`/`fault`: `ts`;
    /// acknowledgement, reset, clear and the other transitions of a live episode: the raise
    /// time; unset outside an episode). Regulator feeds send it as `alarm_time`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub raised_at: Option<SystemTime>,
    /// How the transition is announced to people (all unset for an ordinary transition).
    #[serde(default, flatten)]
    pub notice: Notice,
}

/// Why a recorded transition is not (or not one by one) notified to people. Every field is
/// omitted from JSON when unset, so ordinary events look as before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notice {
    /// The condition came back (or went again) while the latched alarm's activation was still
    /// unanswered: not a new activation (ISA-18.2). Journaled and written, never notified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    /// The alarm is chattering (`alarms.chatter_threshold` activations within
    /// `alarms.chatter_window`): its raised/cleared transitions are counted into one summary per
    /// route period instead of one notification each.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chattering: bool,
    /// Suppressed by design as a consequence of this alarm (a device or source communication
    /// alarm, `device.{id}:comm` / `source.{id}:comm`): recorded, never notified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consequence_of: Option<String>,
}

impl Notice {
    /// Whether a transition with this notice is notified one by one.
    pub fn notified(&self) -> bool {
        !self.repeat && !self.chattering && self.consequence_of.is_none()
    }
}

/// The site's operating mode, set by a person through the API (with who and why). Alarms can be
/// suppressed by design in some modes, and rules can test the mode (`mode("suspended")`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SiteMode {
    /// Production as usual.
    #[default]
    Normal,
    /// Production suspended (for example under a rectification order, 停产整顿).
    Suspended,
    /// Maintenance work in progress.
    Maintenance,
}

impl SiteMode {
    /// Name used in the API and in expressions.
    pub fn as_str(&self) -> &'static str {
        match self {
            SiteMode::Normal => "normal",
            SiteMode::Suspended => "suspended",
            SiteMode::Maintenance => "maintenance",
        }
    }

    /// Parses a mode name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "normal" => Some(SiteMode::Normal),
            "suspended" => Some(SiteMode::Suspended),
            "maintenance" => Some(SiteMode::Maintenance),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_and_hash_by_text_whatever_the_allocation() {
        let a = ChannelId::new("t.a.level");
        let shared = a.clone();
        let copy = ChannelId::new(String::from("t.a.level"));
        assert!(Arc::ptr_eq(&a.0, &shared.0) && !Arc::ptr_eq(&a.0, &copy.0));
        assert_eq!(a, shared);
        assert_eq!(a, copy);
        assert_ne!(a, ChannelId::new("t.a.levels"));
        let map: std::collections::HashMap<ChannelId, u8> = [(copy, 1)].into();
        assert_eq!(map.get(&a), Some(&1));
        assert_eq!(
            map.get("t.a.level"),
            Some(&1),
            "a &str finds it (same hash as str)"
        );
        assert_eq!(map.get("t.b.level"), None);
    }

    #[test]
    fn id_shapes() {
        assert!(check_id("tankfarm.t101.level", true).is_ok());
        assert!(check_id("Tank", true).is_err());
        assert!(check_id("a..b", true).is_err());
        assert!(check_id("", true).is_err());
        assert!(check_id("a.b", false).is_err());
        assert!(check_id("gd-101_x", false).is_ok());
    }

    #[test]
    fn bad_reading_has_no_value() {
        assert_eq!(Reading::Bad(BadReason::Stale).value(), None);
        assert_eq!(Reading::Good(1.5).value(), Some(1.5));
    }
}
