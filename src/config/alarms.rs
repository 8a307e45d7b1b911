//! The `[alarms]` section: journal, API tokens, schedule (time zone, windows, holidays), flood
//! and chattering thresholds, and the rule kinds beyond limits (rate of change, discrete,
//! composite). [`check`] validates it, and the alarm options of `[[rules]]`, with paths.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::check::Problems;
use crate::model::{Priority, SiteMode};
pub use crate::rules::schedule::{Schedule, TimeWindow};
use crate::secret::SecretRef;

/// Declares a limit-rule table: its own fields, then the fields shared by `[[rules]]` and
/// `[rule_defaults.<kind>]` (each optional, so that a rule overrides a default field by
/// field), and `fields()` returning the shared ones. (`serde(flatten)` would lose
/// `deny_unknown_fields`, and a misspelt limit must be an error.)
macro_rules! limit_table {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            /// Low-low limit (critical).
            pub ll: Option<f64>,
            /// Low limit (high priority).
            pub l: Option<f64>,
            /// High limit (high priority); gas level 1.
            pub h: Option<f64>,
            /// High-high limit (critical); gas level 2.
            pub hh: Option<f64>,
            /// The value must come back this far inside the limit before the alarm clears
            /// (default 0).
            #[serde(default)]
            pub deadband: Option<f64>,
            /// Deadband as a percentage of the channel's range (instead of `deadband`).
            #[serde(default)]
            pub deadband_pct: Option<f64>,
            /// The condition must hold this long before the alarm is raised (default 0s).
            #[schemars(with = "Option<crate::schema::HumanDuration>")]
            #[serde(with = "humantime_serde", default)]
            pub on_delay: Option<Duration>,
            /// The condition must be gone this long before the alarm clears (default 0s).
            #[schemars(with = "Option<crate::schema::HumanDuration>")]
            #[serde(with = "humantime_serde", default)]
            pub off_delay: Option<Duration>,
            /// Per-limit priorities; defaults: `ll`/`hh` critical, `l`/`h` high.
            #[serde(default)]
            pub priority: LimitPriorities,
            /// Latch until a person resets; default: true on `combustible_gas` and
            /// `toxic_gas` channels.
            #[serde(default)]
            pub latch: Option<bool>,
            /// Text for people when one of these limits is raised (default: generated from
            /// the value and limit).
            #[serde(default)]
            pub message: Option<String>,
            /// What to do (处置措施), shown with the alarm and in every notification, e.g.
            /// "疏散罐区人员，关闭进料阀 XV-101，通知值班长".
            #[serde(default)]
            pub response: Option<String>,
            /// Site modes in which these alarms are suppressed by design (default: none).
            #[serde(default)]
            pub suppress_in: Option<Vec<SiteMode>>,
        }

        impl $name {
            /// The fields shared with the other limit table.
            pub fn fields(&self) -> LimitFields {
                LimitFields {
                    ll: self.ll,
                    l: self.l,
                    h: self.h,
                    hh: self.hh,
                    deadband: self.deadband,
                    deadband_pct: self.deadband_pct,
                    on_delay: self.on_delay,
                    off_delay: self.off_delay,
                    priority: self.priority.clone(),
                    latch: self.latch,
                    message: self.message.clone(),
                    response: self.response.clone(),
                    suppress_in: self.suppress_in.clone(),
                }
            }
        }
    };
}

limit_table!(
    /// High/low limit alarms on one channel. A `Bad` or stale reading never clears them. On a
    /// channel whose kind has `[rule_defaults.<kind>]`, every field given here overrides that
    /// field of the defaults and the others come from the defaults.
    LimitRule {
        /// Channel watched.
        channel: String,
        /// The channel takes none of its kind's `[rule_defaults]`, for this reason (listed by
        /// `check-config`); only the limits given here apply.
        #[serde(default)]
        opt_out: Option<String>,
    }
);

limit_table!(
    /// `[rule_defaults.<kind>]`: the limit alarms every channel of that kind gets without a
    /// `[[rules]]` entry (e.g. the GB/T 50493-2019 levels for `combustible_gas` in %LEL).
    RuleDefaults {
        /// Only channels of the kind with this unit take the defaults (a limit in %LEL must
        /// never be applied to a reading in %VOL or ppm); `check-config` warns about the
        /// others.
        #[serde(default)]
        unit: Option<String>,
    }
);

/// The shared fields of a limit rule or a kind's defaults (see [`LimitRule`]).
#[derive(Clone, Debug, Default)]
pub struct LimitFields {
    /// Low-low limit.
    pub ll: Option<f64>,
    /// Low limit.
    pub l: Option<f64>,
    /// High limit.
    pub h: Option<f64>,
    /// High-high limit.
    pub hh: Option<f64>,
    /// Absolute deadband.
    pub deadband: Option<f64>,
    /// Deadband in % of the channel's range.
    pub deadband_pct: Option<f64>,
    /// On-delay.
    pub on_delay: Option<Duration>,
    /// Off-delay.
    pub off_delay: Option<Duration>,
    /// Per-limit priorities.
    pub priority: LimitPriorities,
    /// Latching.
    pub latch: Option<bool>,
    /// Text for people.
    pub message: Option<String>,
    /// Response (处置措施).
    pub response: Option<String>,
    /// Suppressing site modes.
    pub suppress_in: Option<Vec<SiteMode>>,
}

/// Priorities of the four limits of a [`LimitRule`].
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitPriorities {
    /// Low-low.
    pub ll: Option<Priority>,
    /// Low.
    pub l: Option<Priority>,
    /// High.
    pub h: Option<Priority>,
    /// High-high.
    pub hh: Option<Priority>,
}

/// Alarm engine settings and rules beyond limits.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alarms {
    /// Directory of the alarm journal (every transition, fsync'd before it is published).
    /// Without it alarm state does not survive a restart (logged at start).
    pub journal_dir: Option<PathBuf>,
    /// How long journal segments are kept (at least 90 days by default).
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_retention")]
    pub retention: Duration,
    /// Events kept in memory for `/api/v1/alarms/history` and audit trails (the journal keeps
    /// everything within the retention).
    #[serde(default = "default_history")]
    pub history_in_memory: usize,
    /// Longest shelf a person may set.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_max_shelve")]
    pub max_shelve: Duration,
    /// More than this many activations within `flood_window` is an alarm flood.
    #[serde(default = "default_flood_threshold")]
    pub flood_threshold: usize,
    /// Window of the flood count.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_flood_window")]
    pub flood_window: Duration,
    /// This many activations of one alarm within `chatter_window` is chattering.
    #[serde(default = "default_chatter_threshold")]
    pub chatter_threshold: usize,
    /// Window of the chattering count.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_chatter_window")]
    pub chatter_window: Duration,
    /// Time zone, windows and holidays for schedule rules.
    #[serde(default)]
    pub schedule: Schedule,
    /// Bearer tokens for `/api/v1/alarms`.
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    /// Rate-of-change alarms.
    #[serde(default)]
    pub rate: Vec<RateRule>,
    /// Alarms on boolean channels.
    #[serde(default)]
    pub discrete: Vec<DiscreteRule>,
    /// Alarms on expressions over several channels, the schedule and the site mode.
    #[serde(default)]
    pub composite: Vec<CompositeRule>,
    /// Flat-line detection: a detector whose reading has not moved for too long is a fault.
    #[serde(default)]
    pub stuck: Vec<StuckRule>,
}

/// A flat-line ("stuck") fault on one channel: every good reading stayed within `band` of the
/// first one for `after`. A live gas detector always shows some noise; a frozen transmitter
/// or a sensor at the end of its life shows none, and would never alarm.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StuckRule {
    /// Channel watched.
    pub channel: String,
    /// How long the reading may stay flat.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Movement (absolute, in the channel's unit) that counts as "still alive"; 0 = any change.
    #[serde(default)]
    pub band: f64,
    /// Priority of the fault.
    #[serde(default = "default_priority")]
    pub priority: Priority,
}

impl Default for Alarms {
    fn default() -> Self {
        Self {
            journal_dir: None,
            retention: default_retention(),
            history_in_memory: default_history(),
            max_shelve: default_max_shelve(),
            flood_threshold: default_flood_threshold(),
            flood_window: default_flood_window(),
            chatter_threshold: default_chatter_threshold(),
            chatter_window: default_chatter_window(),
            schedule: Schedule::default(),
            tokens: Vec::new(),
            rate: Vec::new(),
            discrete: Vec::new(),
            composite: Vec::new(),
            stuck: Vec::new(),
        }
    }
}

fn default_retention() -> Duration {
    Duration::from_secs(90 * 86_400)
}
fn default_history() -> usize {
    10_000
}
fn default_max_shelve() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_flood_threshold() -> usize {
    10
}
fn default_flood_window() -> Duration {
    Duration::from_secs(600)
}
fn default_chatter_threshold() -> usize {
    3
}
fn default_chatter_window() -> Duration {
    Duration::from_secs(60)
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read alarm lists, history and audit trails.
    Viewer,
    /// Also act: acknowledge, reset, shelve, take out of service, set the site mode.
    Operator,
}

/// A bearer token for the alarm API: its SHA-256 (hex) or the token itself from a secret.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it; recorded as `by` on every action.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token, 64 hex digits (`printf %s TOKEN | sha256sum`).
    pub sha256: Option<String>,
    /// Or the token from an environment variable or file.
    pub token: Option<SecretRef>,
}

/// A rate-of-change alarm on one channel.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    /// Channel watched.
    pub channel: String,
    /// Alarm name (`{channel}:{name}`).
    #[serde(default = "default_rate_name")]
    pub name: String,
    /// Alarm when rising at least this fast (units per minute).
    pub rise_per_min: Option<f64>,
    /// Alarm when falling at least this fast (units per minute).
    pub fall_per_min: Option<f64>,
    /// Hysteresis on the rate (units per minute).
    #[serde(default)]
    pub deadband: f64,
    /// Window the rate is measured over.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_rate_window")]
    pub window: Duration,
    /// Priority.
    #[serde(default = "default_priority")]
    pub priority: Priority,
    /// Delay before raising.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default)]
    pub on_delay: Duration,
    /// Delay before clearing.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default)]
    pub off_delay: Duration,
    /// Latch until reset; default: true on gas channels.
    pub latch: Option<bool>,
    /// Site modes that suppress this alarm.
    #[serde(default)]
    pub suppress_in: Vec<SiteMode>,
    /// Text for people when the alarm is raised (default: generated from the rate).
    #[serde(default)]
    pub message: Option<String>,
    /// What to do (处置措施), shown with the alarm and in every notification.
    #[serde(default)]
    pub response: Option<String>,
}

fn default_rate_name() -> String {
    "ROC".into()
}
fn default_rate_window() -> Duration {
    Duration::from_secs(60)
}
fn default_priority() -> Priority {
    Priority::High
}
fn default_true() -> bool {
    true
}

/// An alarm on a boolean channel (spark detected, rotary valve fault, collector stopped).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscreteRule {
    /// Channel watched.
    pub channel: String,
    /// Alarm name (`{channel}:{name}`).
    pub name: String,
    /// The channel state that is the alarm.
    #[serde(default = "default_true")]
    pub active_when: bool,
    /// Priority.
    #[serde(default = "default_priority")]
    pub priority: Priority,
    /// Delay before raising.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default)]
    pub on_delay: Duration,
    /// Delay before clearing.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default)]
    pub off_delay: Duration,
    /// Latch until reset; default: true on gas channels.
    pub latch: Option<bool>,
    /// Site modes that suppress this alarm.
    #[serde(default)]
    pub suppress_in: Vec<SiteMode>,
    /// Text for notifications.
    pub message: Option<String>,
    /// What to do (处置措施), shown with the alarm and in every notification.
    #[serde(default)]
    pub response: Option<String>,
}

/// An alarm on an expression (see `rules::expr` for the language).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompositeRule {
    /// Alarm id.
    pub id: String,
    /// The condition.
    pub expr: String,
    /// Priority.
    #[serde(default = "default_priority")]
    pub priority: Priority,
    /// Kind used for ordering (`toxic_gas`, `combustible_gas`, …); `composite` by default.
    pub kind: Option<String>,
    /// Area tag for outputs.
    #[serde(default)]
    pub area: String,
    /// Text for notifications.
    pub message: Option<String>,
    /// What to do (处置措施), shown with the alarm and in every notification.
    #[serde(default)]
    pub response: Option<String>,
    /// Delay before raising (in addition to any `for` in the expression).
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default)]
    pub on_delay: Duration,
    /// Delay before clearing.
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default)]
    pub off_delay: Duration,
    /// Latch until reset.
    #[serde(default)]
    pub latch: bool,
    /// Site modes that suppress this alarm.
    #[serde(default)]
    pub suppress_in: Vec<SiteMode>,
}

/// Alarm names used by limit and fault alarms.
pub const RESERVED: [&str; 6] = ["LL", "L", "H", "HH", "fault", "stuck"];

/// Whether a channel kind is a gas whose alarms latch by default.
pub fn is_gas(kind: &str) -> bool {
    matches!(kind, "combustible_gas" | "toxic_gas")
}

/// Decodes 64 hex digits.
pub fn sha256_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Checks the settings of `[alarms]` (journal, thresholds, schedule, tokens); the rules are
/// checked where they are compiled (`config::plan`). Returns the compiled calendar.
pub fn check(a: &Alarms, p: &mut Problems) -> crate::rules::schedule::Calendar {
    if let Some(d) = &a.journal_dir {
        if d.as_os_str().is_empty() {
            p.err("alarms.journal_dir", "must not be empty");
        }
    }
    if a.retention < Duration::from_secs(86_400) {
        p.err("alarms.retention", "must be at least 1 day");
    } else if a.retention < Duration::from_secs(30 * 86_400) {
        p.warn("alarms.retention", "alarm records are kept less than 30 days (major hazard source rules ask for at least 30)");
    }
    if a.history_in_memory == 0 {
        p.err("alarms.history_in_memory", "must be at least 1");
    }
    if a.max_shelve.is_zero() {
        p.err("alarms.max_shelve", "must be longer than 0s");
    }
    if a.flood_threshold == 0 {
        p.err("alarms.flood_threshold", "must be at least 1");
    }
    if a.flood_window.is_zero() {
        p.err("alarms.flood_window", "must be longer than 0s");
    }
    if a.chatter_threshold < 2 {
        p.err("alarms.chatter_threshold", "must be at least 2");
    }
    if a.chatter_window.is_zero() {
        p.err("alarms.chatter_window", "must be longer than 0s");
    }

    let calendar = crate::rules::schedule::compile(&a.schedule, p);

    // Tokens.
    let mut names = HashSet::new();
    let mut hashes = HashSet::new();
    for (i, t) in a.tokens.iter().enumerate() {
        let path = format!("alarms.tokens[{i}]");
        if t.name.trim().is_empty() {
            p.err(format!("{path}.name"), "must not be empty");
        }
        if !names.insert(t.name.as_str()) {
            p.err(
                format!("{path}.name"),
                format!("duplicate token name `{}`", t.name),
            );
        }
        match (&t.sha256, &t.token) {
            (Some(h), None) => match sha256_hex(h) {
                Some(b) => {
                    if !hashes.insert(b) {
                        p.err(format!("{path}.sha256"), "the same token is given twice");
                    }
                }
                None => p.err(
                    format!("{path}.sha256"),
                    "must be 64 hex digits (printf %s TOKEN | sha256sum)",
                ),
            },
            (None, Some(s)) => {
                if s.env.is_some() == s.file.is_some() {
                    p.err(
                        format!("{path}.token"),
                        "give exactly one of `env` or `file` (secrets are never inline)",
                    );
                }
            }
            _ => p.err(path, "give exactly one of `sha256` or `token`"),
        }
    }
    calendar
}
