//! Configuration of alert delivery: the `[notifications]` section (outbox, routes, escalation
//! tiers) and the delivery settings every receiver has. The receiver kinds live in
//! [`super::receivers`], one file each (re-exported here).
//!
//! Everything here is plain serde with `deny_unknown_fields`; [`check`] reports every problem
//! with its path. Secrets (tokens, signing secrets, SM4 key and IV) are only `SecretRef`s.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use super::receivers::common::Delivery;
pub use super::receivers::{
    Flavor, MqttReceiver, MqttTarget, REGULATOR_FIELDS, Receiver, RegulatorPoint,
    RegulatorReceiver, RobotReceiver, Sm4Config, WebhookReceiver,
};
use crate::check::Problems;
use crate::model::{AlarmClass, Priority, Transition, check_id};

/// `[notifications]`: the durable outbox and the routes.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// The durable outbox.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Routes, all evaluated for every event (no first-match stop). When there are none, every
    /// event goes to every receiver (one implicit route `default`).
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// `[notifications.outbox]`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Directory of the outbox file. Without it notifications live in memory only (a warning:
    /// a restart loses what is pending).
    pub dir: Option<PathBuf>,
    /// Disk budget of the outbox file, separate from any time-series spool. Over it, finished
    /// (delivered, expired) records are dropped first, oldest first; pending notifications are
    /// evicted only when they alone exceed it (lowest priority, then oldest).
    #[serde(default = "default_outbox_bytes")]
    pub max_bytes: u64,
    /// Finished notifications kept in the ledger (`/api/v1/notifications`).
    #[serde(default = "default_ledger")]
    pub ledger_entries: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: default_outbox_bytes(),
            ledger_entries: default_ledger(),
        }
    }
}

fn default_outbox_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_ledger() -> usize {
    10_000
}

/// One route: which events, to whom, and what happens when nobody answers.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Route id (in the ledger and idempotency keys).
    pub id: String,
    /// Site ids matched (empty = any).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Areas matched (the channel's area; empty = any).
    #[serde(default)]
    pub areas: Vec<String>,
    /// Channel kinds matched (`combustible_gas`, `tank`, …; empty = any).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Priorities matched (empty = any).
    #[serde(default)]
    pub priorities: Vec<Priority>,
    /// Transitions matched (empty = any).
    #[serde(default)]
    pub transitions: Vec<Transition>,
    /// Alarm classes matched (empty = any).
    #[serde(default)]
    pub classes: Vec<AlarmClass>,
    /// Tier-1 receivers.
    pub receivers: Vec<String>,
    /// Whom tier 1 is asking to answer (names, phone numbers): shown in messages.
    #[serde(default)]
    pub call: Vec<String>,
    /// Low and medium priority events are gathered this long into one notification per
    /// receiver. High and critical events are never held back.
    #[schemars(with = "Option<crate::schema::HumanDuration>")]
    #[serde(with = "humantime_serde", default)]
    pub group_window: Option<Duration>,
    /// Still active, unacknowledged alarms are notified again at this interval.
    #[schemars(with = "Option<crate::schema::HumanDuration>")]
    #[serde(with = "humantime_serde", default)]
    pub renotify: Option<Duration>,
    /// Escalation tiers (tier 2, 3, …): each fires when the alarm is still unacknowledged
    /// `after` its raise.
    #[serde(default)]
    pub escalation: Vec<Tier>,
}

/// An escalation tier.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Time since the alarm was raised (increasing from tier to tier).
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Receivers of this tier.
    pub receivers: Vec<String>,
    /// Whom this tier asks to answer.
    #[serde(default)]
    pub call: Vec<String>,
}

/// Checks the receivers (see [`super::receivers::check`]) and the `[notifications]` section.
/// `channel_exists` tells whether a channel id is configured; `site` is the site id.
pub fn check(
    n: &Notifications,
    receivers: &[Receiver],
    site: &str,
    channel_exists: &dyn Fn(&str) -> bool,
    p: &mut Problems,
) {
    super::receivers::check(receivers, channel_exists, p);
    let known: HashSet<&str> = receivers.iter().map(Receiver::id).collect();
    if n.outbox.max_bytes < 64 * 1024 {
        p.err("notifications.outbox.max_bytes", "must be at least 65536");
    }
    if n.outbox.dir.is_none() && !receivers.is_empty() {
        p.warn(
            "notifications.outbox.dir",
            "not set: pending notifications are kept in memory only and a restart loses them",
        );
    }
    let mut ids = HashSet::new();
    for (i, r) in n.routes.iter().enumerate() {
        let path = format!("notifications.routes[{i}]");
        if let Err(e) = check_id(&r.id, false) {
            p.err(format!("{path}.id"), e);
        }
        if !ids.insert(r.id.as_str()) {
            p.err(
                format!("{path}.id"),
                format!("duplicate route id `{}`", r.id),
            );
        }
        if !r.sites.is_empty() && !r.sites.iter().any(|s| s == site) {
            p.warn(
                format!("{path}.sites"),
                format!("does not name this site `{site}`: the route never matches"),
            );
        }
        if r.receivers.is_empty() {
            p.err(format!("{path}.receivers"), "name at least one receiver");
        }
        let mut tiers = vec![(format!("{path}.receivers"), &r.receivers)];
        let mut last = Duration::ZERO;
        for (j, t) in r.escalation.iter().enumerate() {
            let tp = format!("{path}.escalation[{j}]");
            if t.after <= last {
                p.err(
                    format!("{tp}.after"),
                    "must be positive and later than the previous tier",
                );
            }
            last = t.after;
            if t.receivers.is_empty() {
                p.err(format!("{tp}.receivers"), "name at least one receiver");
            }
            tiers.push((format!("{tp}.receivers"), &t.receivers));
        }
        for (tp, list) in tiers {
            for (k, name) in list.iter().enumerate() {
                if !known.contains(name.as_str()) {
                    p.err(format!("{tp}[{k}]"), format!("unknown receiver `{name}`"));
                }
            }
        }
        if r.renotify.is_some_and(|d| d < Duration::from_secs(1)) {
            p.err(format!("{path}.renotify"), "must be at least 1s");
        }
        if r.group_window.is_some_and(|d| d > Duration::from_secs(600)) {
            p.err(
                format!("{path}.group_window"),
                "at most 10m: grouping delays notifications",
            );
        }
    }
}
