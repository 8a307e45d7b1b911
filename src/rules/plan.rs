//! The compiled alarm plan: every configured alarm of the site (limit, rate of change,
//! discrete, flat-line and composite), with every default applied and every expression parsed,
//! in the order the engine numbers them. `config` compiles it once from `[[rules]]`,
//! `[rule_defaults]` and `[alarms.*]`; the engine builds its state from it and nothing
//! downstream reads the rule tables of the file. The per-channel fault alarms and the
//! communication group alarms are not in the plan: every channel and every link has them.

use std::time::Duration;

use super::expr::Expr;
use crate::model::{ChannelId, Priority, SiteMode};

/// What decides whether an alarm's condition holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Detector {
    /// A high (at or above) or low (at or below) limit with an absolute deadband.
    Limit {
        /// The limit.
        limit: f64,
        /// `true` for H/HH, `false` for L/LL.
        high: bool,
        /// Absolute deadband in the channel's unit (a `deadband_pct` already converted).
        deadband: f64,
    },
    /// Rate of change over a window (units per minute).
    Rate {
        /// Rising at least this fast.
        rise: Option<f64>,
        /// Falling at least this fast.
        fall: Option<f64>,
        /// Hysteresis on the rate.
        deadband: f64,
        /// Window the rate is measured over.
        window: Duration,
    },
    /// A boolean channel in its alarm state.
    Discrete {
        /// The state that is the alarm.
        active_when: bool,
    },
    /// A reading that stayed within `band` for `after` (a fault, not a process alarm).
    Stuck {
        /// Allowed movement.
        band: f64,
        /// Flat for this long.
        after: Duration,
    },
    /// An expression over channels, the calendar and the site mode (parsed, not yet bound to
    /// the engine's channel indices).
    Composite(Expr),
}

/// One alarm of the plan, ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmDef {
    /// Alarm id: `{channel}:{condition}`, or a composite rule's id.
    pub id: String,
    /// Condition name: `HH`, `H`, `L`, `LL`, a rate or discrete rule's name, `stuck`, or the
    /// composite id.
    pub condition: String,
    /// The channel watched; `None` for a composite alarm (its channel tag is `rule.{id}`).
    pub channel: Option<ChannelId>,
    /// Area tag.
    pub area: String,
    /// Channel kind (`composite` or the rule's `kind` for a composite alarm).
    pub kind: String,
    /// Label shown to people: the channel's, or a composite rule's message or id.
    pub label: String,
    /// Unit of `limit` and of the value shown (`%LEL`, `%LEL/min` for a rate alarm).
    pub unit: String,
    /// A fault (flat-line) rather than a process alarm.
    pub fault: bool,
    /// Priority.
    pub priority: Priority,
    /// Latches until a person resets it.
    pub latching: bool,
    /// Site modes that suppress it by design.
    pub suppress_in: Vec<SiteMode>,
    /// The condition must hold this long before the alarm is raised.
    pub on_delay: Duration,
    /// The condition must be gone this long before the alarm clears.
    pub off_delay: Duration,
    /// The limit (or rate) shown with the alarm.
    pub limit: Option<f64>,
    /// Text for people (default: generated from the value and limit).
    pub message: Option<String>,
    /// What to do (处置措施).
    pub response: Option<String>,
    /// Channels a composite alarm reads (empty otherwise).
    pub inputs: Vec<ChannelId>,
    /// What decides the condition.
    pub detector: Detector,
    /// Where its limit (or the whole rule) is configured: `rules[3].hh`,
    /// `rule_defaults.combustible_gas.hh`, `alarms.rate[0]`.
    pub origin: String,
    /// The kind whose `[rule_defaults]` gave this alarm any of its fields, if one did.
    pub defaults_from: Option<String>,
}

/// Every configured alarm, in engine order: per limit rule HH, H, L, LL; then the limits of
/// channels that take their kind's defaults only; then rate, discrete, flat-line and composite
/// alarms, each in configuration order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The alarms.
    pub alarms: Vec<AlarmDef>,
    /// Channels excluded from their kind's defaults, with the reason given.
    pub opted_out: Vec<(ChannelId, String)>,
    /// The site calendar the composite alarms read (`[alarms.schedule]`, compiled).
    pub calendar: super::schedule::Calendar,
}

impl Plan {
    /// The alarms on `channel`, in plan order.
    pub fn on_channel<'a>(&'a self, channel: &'a str) -> impl Iterator<Item = &'a AlarmDef> + 'a {
        self.alarms
            .iter()
            .filter(move |a| a.channel.as_ref().is_some_and(|c| c.as_str() == channel))
    }
}
