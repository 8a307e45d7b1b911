//! Routing, grouping, reminders and escalation (call and respond), as a state machine driven by
//! alarm events and time ([`Dispatcher`]), and the task that runs it ([`run`]).
//!
//! Invariants:
//! - Every matching route applies (no first-match stop); a route names its tier-1 receivers.
//! - Clear notifications (`cleared`, `fault_cleared`, `reset`) go only to receivers with
//!   `send_clear = true`.
//! - Only low and medium priority events are held for a route's `group_window`; high and
//!   critical events are turned into notifications at once.
//! - An alarm raised (or faulted) on a route with escalation tiers or `renotify` is tracked until
//!   it is answered: an `acknowledged` or `reset` transition, or any event whose state is no
//!   longer unanswered (normal, active-acknowledged, shelved, suppressed, out of service), stops
//!   its reminders and escalation. Reminders are sent only while it is active-unacknowledged;
//!   tiers fire at `raise + after` while it is unanswered.
//! - Time is tokio time: tests drive it with `tokio::time::pause()`.
//! - Idempotency keys are derived from the site, event sequence number, route, receiver and
//!   step, so the same step of the same alarm always has the same key. Without an alarm journal
//!   sequence numbers restart at 1 with the process, so the key prefix is then
//!   `{site}~{start time in ms}` instead of `{site}`: a new run never reuses an old key.
//! - Restart: the outbox remembers up to which sequence number every event's notifications are
//!   stored ([`Outbox::routed`]; events held in an open group are not yet stored). On start,
//!   [`Dispatcher::recover`] replays the journal's history: events up to that mark rebuild the
//!   escalation and reminder tracking silently, later ones are dispatched as if live. Tracking
//!   uses the event's own time, so a tier due during the downtime fires at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::config::Route;
use super::outbox::{Notification, Outbox, Reason};
use crate::model::{AlarmEvent, AlarmState, ChannelId, Priority, Transition};
use crate::telemetry::{Metrics, labels};

#[derive(Debug)]
struct Track {
    raised_at: Instant,
    event: AlarmEvent,
    next_tier: usize,
    next_reminder: Option<Instant>,
    reminders: u32,
}

/// Transitions of one alarm on one route that are summarised instead of notified one by one
/// (a chattering alarm, a latched alarm's repeats).
#[derive(Debug)]
struct Summary {
    due: Instant,
    /// Sequence number of the first event summarised (the routed mark waits for it).
    first: u64,
    /// Activations (raised or fault) summarised.
    activations: u32,
    /// Transitions summarised.
    transitions: u32,
    since: SystemTime,
    last: AlarmEvent,
}

/// The summary period of a route without `renotify`.
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Group {
    due: Instant,
    events: Vec<AlarmEvent>,
}

#[derive(Debug, Clone)]
struct Recv {
    send_clear: bool,
    expire_after: Duration,
    /// A regulator feed's registered channels (`[[receivers.points]]`): it is sent nothing else,
    /// so a platform never gets a record with empty tag and indicator codes.
    points: Option<HashSet<String>>,
}

/// Whether `rcv` is not sent `ev`: an alarm about the receiver itself, or a channel a regulator
/// feed has not registered.
fn skips(ev: &AlarmEvent, rcv: &str, info: &Recv) -> bool {
    about_itself(ev, rcv)
        || info
            .points
            .as_ref()
            .is_some_and(|p| !p.contains(ev.channel.as_str()))
}

/// One step of an alarm's notification: the event itself, a reminder, an escalation tier.
struct Step<'a> {
    reason: Reason,
    tier: u32,
    call: &'a [String],
    /// Key suffix after the route: empty, `-t{tier}`, `-r{n}`.
    tag: String,
}

impl Step<'_> {
    fn notify(
        &self,
        prefix: &str,
        route: &str,
        rcv: &str,
        ev: &AlarmEvent,
        info: &Recv,
        wall: SystemTime,
    ) -> Notification {
        Notification {
            key: format!("{prefix}-{}-{route}{}-{rcv}", ev.seq, self.tag),
            receiver: rcv.to_owned(),
            route: route.to_owned(),
            reason: self.reason,
            tier: self.tier,
            call: self.call.to_vec(),
            events: vec![ev.clone()],
            values: vec![],
            priority: ev.priority,
            created: wall,
            expires: wall + info.expire_after,
        }
    }
}

/// The area of every channel, including the communication alarm channels of devices and
/// sources (`device.{id}`, `source.{id}`). Equal areas are one shared allocation.
pub fn area_table(site: &super::site::Site<'_>) -> HashMap<ChannelId, Arc<str>> {
    let mut pool = crate::model::TextPool::default();
    let mut text = |s: &str| pool.get(s);
    site.channels
        .iter()
        .map(|c| (c.id.clone(), c.area.as_str()))
        .chain(
            site.group_areas
                .iter()
                .map(|(c, a)| (c.clone(), a.as_str())),
        )
        .map(|(c, a)| (c, text(a)))
        .collect()
}

/// The routing state machine.
#[derive(Debug)]
pub struct Dispatcher {
    site: String,
    prefix: String,
    routes: Vec<Route>,
    /// Area of every channel, for routes by area (replaced by a configuration reload).
    areas: super::context::Swap<HashMap<ChannelId, Arc<str>>>,
    receivers: HashMap<String, Recv>,
    tracks: BTreeMap<(usize, String), Track>,
    groups: BTreeMap<(usize, String), Group>,
    summaries: BTreeMap<(usize, String), Summary>,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// Builds the dispatcher from the pieces of the site model alert delivery gets.
    pub fn new(site: &super::site::Site<'_>, metrics: Arc<Metrics>) -> Self {
        let mut routes = site.notifications.routes.clone();
        if routes.is_empty() {
            routes.push(Route {
                id: "default".into(),
                sites: vec![],
                areas: vec![],
                kinds: vec![],
                priorities: vec![],
                transitions: vec![],
                classes: vec![],
                receivers: site.receivers.iter().map(|r| r.id().to_owned()).collect(),
                call: vec![],
                group_window: None,
                renotify: None,
                escalation: vec![],
            });
        }
        let prefix = if site.journaled {
            site.identity.id.clone()
        } else {
            let ms = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            format!("{}~{ms}", site.identity.id)
        };
        Self {
            site: site.identity.id.clone(),
            prefix,
            routes,
            areas: super::context::Swap::new(area_table(site)),
            receivers: site
                .receivers
                .iter()
                .map(|r| {
                    let d = r.delivery();
                    (
                        r.id().to_owned(),
                        Recv {
                            send_clear: d.send_clear,
                            expire_after: d.expire_after,
                            points: match r {
                                super::receivers::Receiver::Regulator(g) => {
                                    Some(g.points.iter().map(|p| p.channel.clone()).collect())
                                }
                                _ => None,
                            },
                        },
                    )
                })
                .collect(),
            tracks: BTreeMap::new(),
            groups: BTreeMap::new(),
            summaries: BTreeMap::new(),
            metrics,
        }
    }

    /// The area table, shared with [`super::SiteTables`].
    pub fn areas(&self) -> super::context::Swap<HashMap<ChannelId, Arc<str>>> {
        self.areas.clone()
    }

    fn matches(&self, r: &Route, ev: &AlarmEvent) -> bool {
        let areas = self.areas.load();
        let area = areas.get(&ev.channel).map_or("", |a| &**a);
        (r.sites.is_empty() || r.sites.contains(&self.site))
            && (r.areas.is_empty() || r.areas.iter().any(|a| a == area))
            && (r.kinds.is_empty() || r.kinds.contains(&ev.kind))
            && (r.priorities.is_empty() || r.priorities.contains(&ev.priority))
            && (r.transitions.is_empty() || r.transitions.contains(&ev.transition))
            && (r.classes.is_empty() || r.classes.contains(&ev.class))
    }

    /// Turns one alarm event into notifications (and starts or stops tracking).
    pub fn on_event(
        &mut self,
        ev: &AlarmEvent,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        // Answers stop reminders and escalation on every route; so does the alarm's removal by
        // a configuration reload (nothing is left to answer).
        let answered = matches!(
            ev.transition,
            Transition::Acknowledged | Transition::Reset | Transition::Removed
        ) || !matches!(
            ev.state,
            AlarmState::ActiveUnacknowledged
                | AlarmState::ReturnedUnacknowledged
                | AlarmState::Latched
        );
        let keys: Vec<(usize, String)> = self
            .tracks
            .keys()
            .filter(|(_, a)| *a == ev.alarm)
            .cloned()
            .collect();
        for k in keys {
            if answered {
                if let Some(t) = self.tracks.remove(&k) {
                    info!(alarm = %ev.alarm, route = %self.routes[k.0].id, by = ?ev.by, tiers_notified = t.next_tier + 1, "alarm answered: escalation stopped");
                }
            } else if ev.state != AlarmState::ActiveUnacknowledged {
                if let Some(t) = self.tracks.get_mut(&k) {
                    t.next_reminder = None;
                }
            }
        }
        let clear = matches!(
            ev.transition,
            Transition::Cleared | Transition::FaultCleared | Transition::Reset
        );
        let condition = matches!(
            ev.transition,
            Transition::Raised | Transition::Cleared | Transition::Fault | Transition::FaultCleared
        );
        // Consequences of a device or source alarm are recorded, never notified; repeats and a
        // chattering alarm's crossings go into one summary per route period.
        // A fault revealed when its cause cleared while it still fails (`unsuppressed`, naming
        // its former cause) is no longer a consequence: people are told.
        let consequence =
            ev.notice.consequence_of.is_some() && ev.transition != Transition::Unsuppressed;
        let summarised = condition && !consequence && (ev.notice.repeat || ev.notice.chattering);
        for (i, r) in self.routes.iter().enumerate() {
            if !self.matches(r, ev) {
                continue;
            }
            if summarised {
                let period = r.renotify.unwrap_or(SUMMARY_PERIOD);
                let s = self
                    .summaries
                    .entry((i, ev.alarm.clone()))
                    .or_insert_with(|| Summary {
                        due: now + period,
                        first: ev.seq,
                        activations: 0,
                        transitions: 0,
                        since: ev.ts,
                        last: ev.clone(),
                    });
                s.transitions += 1;
                if matches!(ev.transition, Transition::Raised | Transition::Fault) {
                    s.activations += 1;
                }
                s.last = ev.clone();
            }
            let groupable = ev.priority <= Priority::Medium && r.group_window.is_some();
            for rcv in &r.receivers {
                let Some(info) = self.receivers.get(rcv) else {
                    continue;
                };
                if skips(ev, rcv, info) || (clear && !info.send_clear) || summarised || consequence
                {
                    continue;
                }
                if groupable {
                    let window = r.group_window.unwrap_or_default();
                    self.groups
                        .entry((i, rcv.clone()))
                        .or_insert_with(|| Group {
                            due: now + window,
                            events: Vec::new(),
                        })
                        .events
                        .push(ev.clone());
                    continue;
                }
                let step = Step {
                    reason: Reason::Event,
                    tier: 1,
                    call: &r.call,
                    tag: String::new(),
                };
                out.push(step.notify(&self.prefix, &r.id, rcv, ev, info, wall));
            }
            let starts = matches!(ev.transition, Transition::Raised | Transition::Fault)
                && ev.state == AlarmState::ActiveUnacknowledged
                && (!r.escalation.is_empty() || r.renotify.is_some());
            if starts {
                // The raise's own time: an event replayed after a restart keeps its deadlines.
                let age = wall.duration_since(ev.ts).unwrap_or_default();
                let raised_at = now.checked_sub(age).unwrap_or(now);
                self.tracks
                    .entry((i, ev.alarm.clone()))
                    // Raised again while still unanswered: reminders resume.
                    .and_modify(|t| {
                        if t.next_reminder.is_none() {
                            t.next_reminder = r.renotify.map(|d| now + d);
                        }
                    })
                    .or_insert_with(|| Track {
                        raised_at,
                        event: ev.clone(),
                        next_tier: 0,
                        next_reminder: r.renotify.map(|d| raised_at + d),
                        reminders: 0,
                    });
            }
        }
        out
    }

    /// Fires what is due at `now`: escalation tiers, reminders, groups.
    pub fn on_tick(&mut self, now: Instant, wall: SystemTime) -> Vec<Notification> {
        let mut out = Vec::new();
        for ((i, alarm), t) in &mut self.tracks {
            let r = &self.routes[*i];
            while let Some(tier) = r.escalation.get(t.next_tier) {
                if t.raised_at + tier.after > now {
                    break;
                }
                t.next_tier += 1;
                let n = t.next_tier + 1;
                self.metrics
                    .escalations
                    .get_or_create(&labels([("route", &r.id), ("tier", &n.to_string())]))
                    .inc();
                warn!(alarm = %alarm, route = %r.id, tier = n, after = ?tier.after, call = ?tier.call, "alarm not acknowledged in time: escalating");
                for rcv in &tier.receivers {
                    let Some(info) = self.receivers.get(rcv) else {
                        continue;
                    };
                    if skips(&t.event, rcv, info) {
                        continue;
                    }
                    let step = Step {
                        reason: Reason::Escalation,
                        tier: u32::try_from(n).unwrap_or(u32::MAX),
                        call: &tier.call,
                        tag: format!("-t{n}"),
                    };
                    out.push(step.notify(&self.prefix, &r.id, rcv, &t.event, info, wall));
                }
            }
            if let (Some(due), Some(every)) = (t.next_reminder, r.renotify) {
                if due <= now {
                    t.reminders += 1;
                    t.next_reminder = Some(due + every);
                    for rcv in &r.receivers {
                        let Some(info) = self.receivers.get(rcv) else {
                            continue;
                        };
                        if skips(&t.event, rcv, info) {
                            continue;
                        }
                        let step = Step {
                            reason: Reason::Reminder,
                            tier: 1,
                            call: &r.call,
                            tag: format!("-r{}", t.reminders),
                        };
                        out.push(step.notify(&self.prefix, &r.id, rcv, &t.event, info, wall));
                    }
                }
            }
        }
        let due: Vec<(usize, String)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(g) = self.groups.remove(&k) {
                out.extend(self.group_notification(&k, g, wall));
            }
        }
        let due: Vec<(usize, String)> = self
            .summaries
            .iter()
            .filter(|(_, s)| s.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(s) = self.summaries.remove(&k) {
                out.extend(self.summary_notifications(k.0, s, wall));
            }
        }
        out
    }

    /// The summary of one alarm's summarised transitions, to the route's tier-1 receivers.
    /// Nothing when no activation was summarised (returns only).
    fn summary_notifications(&self, i: usize, s: Summary, wall: SystemTime) -> Vec<Notification> {
        if s.activations == 0 {
            return Vec::new();
        }
        let r = &self.routes[i];
        let mut ev = s.last;
        let since = humantime::format_rfc3339_seconds(s.since);
        ev.message = format!(
            "{alarm} repeated: {a} activations ({t} transitions) since {since}, not notified one by one; now {state} / {alarm} 反复激活：自 {since} 起激活 {a} 次（共 {t} 次变化），未逐次通知；当前状态 {state}",
            alarm = ev.alarm,
            a = s.activations,
            t = s.transitions,
            state = ev.state.as_str(),
        );
        let step = Step {
            reason: Reason::Summary,
            tier: 1,
            call: &r.call,
            tag: "-s".into(),
        };
        r.receivers
            .iter()
            .filter_map(|rcv| {
                let info = self.receivers.get(rcv)?;
                if skips(&ev, rcv, info) {
                    return None;
                }
                Some(step.notify(&self.prefix, &r.id, rcv, &ev, info, wall))
            })
            .collect()
    }

    /// The highest sequence number up to which every event handled so far has its
    /// notifications out of the dispatcher (`last` is the last event handled).
    pub fn mark(&self, last: u64) -> u64 {
        self.groups
            .values()
            .flat_map(|g| g.events.first())
            .map(|e| e.seq)
            .chain(self.summaries.values().map(|s| s.first))
            .map(|seq| seq.saturating_sub(1))
            .min()
            .map_or(last, |m| m.min(last))
    }

    /// Replays the journal's history after a restart: events up to `routed` rebuild tracking
    /// only; later ones are dispatched. Returns the notifications of the later ones.
    pub fn recover(
        &mut self,
        mut history: Vec<AlarmEvent>,
        routed: u64,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Notification> {
        history.retain(crate::rules::annunciated);
        history.sort_by_key(|e| e.seq);
        let (old, new): (Vec<_>, Vec<_>) = history.into_iter().partition(|e| e.seq <= routed);
        for ev in &old {
            let _ = self.on_event(ev, now, wall);
        }
        self.groups.clear();
        self.summaries.clear();
        let mut out = Vec::new();
        for ev in &new {
            out.extend(self.on_event(ev, now, wall));
        }
        if !new.is_empty() || !self.tracks.is_empty() {
            info!(
                replayed = new.len(),
                tracked = self.tracks.len(),
                "alert dispatcher recovered from the alarm journal"
            );
        }
        out
    }

    /// Every open group, at once (shutdown).
    pub fn flush(&mut self, wall: SystemTime) -> Vec<Notification> {
        let groups = std::mem::take(&mut self.groups);
        let summaries = std::mem::take(&mut self.summaries);
        let mut out: Vec<Notification> = groups
            .into_iter()
            .filter_map(|(k, g)| self.group_notification(&k, g, wall))
            .collect();
        for ((i, _), s) in summaries {
            out.extend(self.summary_notifications(i, s, wall));
        }
        out
    }

    fn group_notification(
        &self,
        (i, rcv): &(usize, String),
        g: Group,
        wall: SystemTime,
    ) -> Option<Notification> {
        let r = &self.routes[*i];
        let info = self.receivers.get(rcv)?;
        let first = g.events.first()?.seq;
        let last = g.events.last()?.seq;
        Some(Notification {
            key: format!("{}-g{first}.{last}-{}-{rcv}", self.prefix, r.id),
            receiver: rcv.clone(),
            route: r.id.clone(),
            reason: if g.events.len() == 1 {
                Reason::Event
            } else {
                Reason::Group
            },
            tier: 1,
            call: r.call.clone(),
            priority: g.events.iter().map(|e| e.priority).max()?,
            events: g.events,
            values: vec![],
            created: wall,
            expires: wall + info.expire_after,
        })
    }

    /// The next instant something is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let tiers = self.tracks.iter().flat_map(|((i, _), t)| {
            let tier = self.routes[*i]
                .escalation
                .get(t.next_tier)
                .map(|x| t.raised_at + x.after);
            tier.into_iter().chain(t.next_reminder)
        });
        let groups = self.groups.values().map(|g| g.due);
        let summaries = self.summaries.values().map(|s| s.due);
        tiers.chain(groups).chain(summaries).min()
    }

    /// Alarms currently tracked for escalation or reminders, as `(route, alarm, tiers notified)`.
    pub fn tracked(&self) -> Vec<(String, String, usize)> {
        self.tracks
            .iter()
            .map(|((i, a), t)| (self.routes[*i].id.clone(), a.clone(), t.next_tier + 1))
            .collect()
    }
}

/// Runs the dispatcher until the engine closes `rx`; open groups are flushed at the end.
/// `history` is the alarm journal's replayed history (empty without a journal).
pub async fn run(
    mut d: Dispatcher,
    mut rx: mpsc::Receiver<AlarmEvent>,
    outbox: Arc<Outbox>,
    history: Vec<AlarmEvent>,
) {
    let mut last = outbox.routed();
    if let Some(seq) = history.iter().map(|e| e.seq).max() {
        let ns = d.recover(history, last, Instant::now(), SystemTime::now());
        last = last.max(seq);
        store(&outbox, ns, Some(d.mark(last))).await;
    }
    loop {
        let deadline = d.next_deadline();
        let ns = tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    if matches!(ev.transition, Transition::Acknowledged | Transition::Reset) {
                        let e = ev.clone();
                        outbox.blocking("dispatcher", move |ob| ob.answer(&e)).await;
                    }
                    last = last.max(ev.seq);
                    d.on_event(&ev, Instant::now(), SystemTime::now())
                }
                None => break,
            },
            () = sleep_until(deadline) => d.on_tick(Instant::now(), SystemTime::now()),
        };
        store(&outbox, ns, Some(d.mark(last))).await;
    }
    let ns = d.flush(SystemTime::now());
    store(&outbox, ns, Some(last)).await;
    info!("alert dispatcher stopped: the engine's event channel is closed");
}

/// Whether `ev` is the gateway fault of receiver `rcv` itself (`gateway:receiver {rcv}`): it goes
/// to the other receivers only (the failing one could not deliver it).
fn about_itself(ev: &AlarmEvent, rcv: &str) -> bool {
    ev.alarm
        .strip_prefix("gateway:receiver ")
        .is_some_and(|r| r == rcv)
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Puts notifications in the outbox (fsync off the runtime), with the routed mark.
pub async fn store(outbox: &Arc<Outbox>, ns: Vec<Notification>, mark: Option<u64>) {
    if ns.is_empty() && mark.is_none_or(|m| m <= outbox.routed()) {
        return;
    }
    outbox
        .blocking("dispatcher", move |ob| ob.enqueue(ns, mark))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AlarmClass;
    use std::path::Path;

    const CFG: &str = r#"
[site]
id = "s"
[alarms]
journal_dir = "/var/lib/hazgate/alarms"
[[receivers]]
kind = "webhook"
id = "shift"
url = "http://127.0.0.1:9/a"
[[receivers]]
kind = "webhook"
id = "manager"
url = "http://127.0.0.1:9/b"
send_clear = false
[[receivers]]
kind = "webhook"
id = "township"
url = "http://127.0.0.1:9/c"
[[notifications.routes]]
id = "gas"
kinds = ["combustible_gas"]
receivers = ["shift", "manager"]
call = ["shift leader"]
group_window = "30s"
renotify = "10m"
escalation = [
  { after = "5m", receivers = ["manager"], call = ["safety manager"] },
  { after = "15m", receivers = ["township"], call = ["township official"] },
]
"#;

    fn dispatcher() -> Dispatcher {
        let cfg = crate::config::parse(CFG, Path::new("t.toml")).expect("parse");
        let (cfg, _) = crate::config::validate(&cfg, Path::new(".")).expect("valid");
        Dispatcher::new(&(&cfg).into(), Arc::new(Metrics::new()))
    }

    fn ev(seq: u64, p: Priority, t: Transition, state: AlarmState) -> AlarmEvent {
        AlarmEvent {
            seq,
            alarm: "a.gd1.lel:HH".into(),
            channel: ChannelId::new("a.gd1.lel"),
            condition: "HH".into(),
            priority: p,
            transition: t,
            value: Some(55.0),
            limit: Some(50.0),
            message: "m".into(),
            ts: SystemTime::now(),
            class: AlarmClass::Process,
            kind: "combustible_gas".into(),
            state,
            by: (t == Transition::Acknowledged).then(|| "wang".to_owned()),
            comment: None,
            raised_at: None,
            notice: Default::default(),
        }
    }

    /// A route by area reaches the alarms of its area's channels and the communication alarm
    /// of a source whose area it is, no others.
    #[test]
    fn a_route_by_area_matches_the_channels_and_links_of_that_area() {
        let text = r#"
[site]
id = "s"
[[sources]]
kind = "mqtt"
id = "m"
address = "127.0.0.1:1883"
[[sources.topics]]
filter = "site/{site}/tank/{device}"
channel = "{site}.{device}.level"
value = "level"
[[sources.channels]]
id = "a.t1.level"
kind = "tank_level"
[[sources.channels]]
id = "b.t2.level"
kind = "tank_level"
[[receivers]]
kind = "webhook"
id = "shift"
url = "http://127.0.0.1:9/a"
[[notifications.routes]]
id = "area-a"
areas = ["a"]
receivers = ["shift"]
"#;
        let cfg = crate::config::parse(text, Path::new("t.toml")).expect("parse");
        let (cfg, _) = crate::config::validate(&cfg, Path::new(".")).expect("valid");
        let site: super::super::Site<'_> = (&cfg).into();
        let d = Dispatcher::new(&site, Arc::new(Metrics::new()));
        let on = |channel: &str| {
            let mut e = ev(
                1,
                Priority::High,
                Transition::Raised,
                AlarmState::ActiveUnacknowledged,
            );
            e.channel = ChannelId::new(channel);
            d.matches(&d.routes[0], &e)
        };
        // The source's communication alarm has the area of its first channel.
        assert_eq!(
            site.group_areas,
            [(ChannelId::new("source.m"), "a".to_owned())]
        );
        assert!(on("a.t1.level"));
        assert!(on("source.m"));
        assert!(!on("b.t2.level"));
        assert!(!on("nowhere"));
    }

    fn keys(ns: &[Notification]) -> Vec<&str> {
        ns.iter().map(|n| n.key.as_str()).collect()
    }

    /// Advances paused time to the dispatcher's next deadline and fires it.
    async fn step(d: &mut Dispatcher) -> (Duration, Vec<Notification>) {
        let start = Instant::now();
        let t = d.next_deadline().expect("something is due");
        tokio::time::sleep_until(t).await;
        (t - start, d.on_tick(Instant::now(), SystemTime::now()))
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_alarms_escalate_tier_by_tier_until_acknowledged() {
        tokio::time::timeout(Duration::from_secs(3600), async {
            let mut d = dispatcher();
            let t0 = Instant::now();
            let raised = ev(
                7,
                Priority::Critical,
                Transition::Raised,
                AlarmState::ActiveUnacknowledged,
            );
            let ns = d.on_event(&raised, t0, SystemTime::now());
            // Critical: never held for the group window.
            assert_eq!(keys(&ns), ["s-7-gas-shift", "s-7-gas-manager"]);
            assert_eq!(ns[0].call, ["shift leader"]);

            let (_, ns) = step(&mut d).await;
            assert_eq!(Instant::now() - t0, Duration::from_secs(300));
            assert_eq!(keys(&ns), ["s-7-gas-t2-manager"]);
            assert_eq!((ns[0].reason, ns[0].tier), (Reason::Escalation, 2));
            assert_eq!(ns[0].call, ["safety manager"]);

            let (_, ns) = step(&mut d).await;
            assert_eq!(Instant::now() - t0, Duration::from_secs(600));
            assert_eq!(keys(&ns), ["s-7-gas-r1-shift", "s-7-gas-r1-manager"]);
            assert_eq!(ns[0].reason, Reason::Reminder);

            // Acknowledged at 12 min: tier 3 (15 min) never fires, no more reminders.
            tokio::time::advance(Duration::from_secs(120)).await;
            let ack = ev(
                8,
                Priority::Critical,
                Transition::Acknowledged,
                AlarmState::ActiveAcknowledged,
            );
            let ns = d.on_event(&ack, Instant::now(), SystemTime::now());
            assert_eq!(
                keys(&ns),
                ["s-8-gas-shift", "s-8-gas-manager"],
                "the acknowledgement is itself notified"
            );
            assert!(d.tracked().is_empty());
            assert_eq!(d.next_deadline(), None);
            tokio::time::advance(Duration::from_secs(3600)).await;
            assert!(d.on_tick(Instant::now(), SystemTime::now()).is_empty());
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(start_paused = true)]
    async fn tiers_continue_after_return_to_normal_while_unacknowledged() {
        tokio::time::timeout(Duration::from_secs(3600), async {
            let mut d = dispatcher();
            let t0 = Instant::now();
            d.on_event(
                &ev(
                    1,
                    Priority::High,
                    Transition::Raised,
                    AlarmState::ActiveUnacknowledged,
                ),
                t0,
                SystemTime::now(),
            );
            let cleared = ev(
                2,
                Priority::High,
                Transition::Cleared,
                AlarmState::ReturnedUnacknowledged,
            );
            let ns = d.on_event(&cleared, t0 + Duration::from_secs(60), SystemTime::now());
            assert_eq!(
                keys(&ns),
                ["s-2-gas-shift"],
                "manager has send_clear = false"
            );
            let (_, ns) = step(&mut d).await;
            assert_eq!(keys(&ns), ["s-1-gas-t2-manager"]);
            // No reminder: the alarm is no longer active. Next is tier 3 at 15 min.
            let (_, ns) = step(&mut d).await;
            assert_eq!(Instant::now() - t0, Duration::from_secs(900));
            assert_eq!(keys(&ns), ["s-1-gas-t3-township"]);
            assert_eq!(d.next_deadline(), None);
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(start_paused = true)]
    async fn reminders_pause_while_returned_and_resume_when_raised_again() {
        tokio::time::timeout(Duration::from_secs(3600), async {
            let mut d = dispatcher();
            let t0 = Instant::now();
            let up = |seq| {
                ev(
                    seq,
                    Priority::High,
                    Transition::Raised,
                    AlarmState::ActiveUnacknowledged,
                )
            };
            d.on_event(&up(1), t0, SystemTime::now());
            let back = ev(
                2,
                Priority::High,
                Transition::Cleared,
                AlarmState::ReturnedUnacknowledged,
            );
            d.on_event(&back, t0 + Duration::from_secs(60), SystemTime::now());
            let (_, ns) = step(&mut d).await; // tier 2 at 5 min, no reminder at 10 min
            assert_eq!(keys(&ns), ["s-1-gas-t2-manager"]);
            tokio::time::advance(Duration::from_secs(60)).await; // 6 min
            d.on_event(&up(3), Instant::now(), SystemTime::now());
            let (_, ns) = step(&mut d).await;
            assert_eq!(
                Instant::now() - t0,
                Duration::from_secs(900),
                "tier 3 at 15 min first"
            );
            assert_eq!(keys(&ns), ["s-1-gas-t3-township"]);
            let (_, ns) = step(&mut d).await;
            assert_eq!(
                Instant::now() - t0,
                Duration::from_secs(960),
                "reminder 10 min after the new raise"
            );
            assert_eq!(keys(&ns), ["s-1-gas-r1-shift", "s-1-gas-r1-manager"]);
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(start_paused = true)]
    async fn low_priority_events_are_grouped_high_ones_are_not() {
        tokio::time::timeout(Duration::from_secs(3600), async {
            let mut d = dispatcher();
            let t0 = Instant::now();
            let mut a = ev(
                1,
                Priority::Low,
                Transition::Raised,
                AlarmState::ActiveUnacknowledged,
            );
            a.alarm = "a.gd1.lel:H".into();
            assert!(d.on_event(&a, t0, SystemTime::now()).is_empty());
            let mut b = a.clone();
            b.seq = 2;
            b.priority = Priority::Medium;
            assert!(
                d.on_event(&b, t0 + Duration::from_secs(10), SystemTime::now())
                    .is_empty()
            );
            let high = ev(
                3,
                Priority::High,
                Transition::Raised,
                AlarmState::ActiveUnacknowledged,
            );
            assert_eq!(
                d.on_event(&high, t0 + Duration::from_secs(11), SystemTime::now())
                    .len(),
                2
            );
            let (_, ns) = step(&mut d).await;
            assert_eq!(Instant::now() - t0, Duration::from_secs(30));
            assert_eq!(keys(&ns), ["s-g1.2-gas-manager", "s-g1.2-gas-shift"]);
            assert_eq!(ns[0].events.len(), 2);
            assert_eq!(
                (ns[0].reason, ns[0].priority),
                (Reason::Group, Priority::Medium)
            );
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_rebuilds_tracking_and_dispatches_what_was_not_routed() {
        tokio::time::timeout(Duration::from_secs(3600), async {
            let mut d = dispatcher();
            let wall = SystemTime::now();
            let mut raised = ev(
                1,
                Priority::Critical,
                Transition::Raised,
                AlarmState::ActiveUnacknowledged,
            );
            raised.ts = wall - Duration::from_secs(360);
            let mut other = ev(
                2,
                Priority::High,
                Transition::Raised,
                AlarmState::ActiveUnacknowledged,
            );
            other.alarm = "a.gd2.lel:H".into();
            let ns = d.recover(vec![other, raised], 1, Instant::now(), wall);
            // Event 1 was routed before the restart: no new notification for it; event 2 was not.
            assert_eq!(keys(&ns), ["s-2-gas-shift", "s-2-gas-manager"]);
            // Raised 6 minutes ago: tier 2 (5 min) is overdue and fires at once.
            let ns = d.on_tick(Instant::now(), wall);
            assert_eq!(keys(&ns), ["s-1-gas-t2-manager"]);
            assert_eq!(d.tracked().len(), 2);
            assert_eq!(d.mark(2), 2);
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(start_paused = true)]
    async fn repeats_and_chatter_are_summarised_once_per_period() {
        tokio::time::timeout(Duration::from_secs(3600), async {
            let mut d = dispatcher();
            let t0 = Instant::now();
            let wall = SystemTime::now();
            let raised = |seq| {
                ev(
                    seq,
                    Priority::High,
                    Transition::Raised,
                    AlarmState::ActiveUnacknowledged,
                )
            };
            let cleared = |seq| {
                ev(
                    seq,
                    Priority::High,
                    Transition::Cleared,
                    AlarmState::Latched,
                )
            };
            let ns = d.on_event(&raised(1), t0, wall);
            assert_eq!(keys(&ns), ["s-1-gas-shift", "s-1-gas-manager"]);
            let ns = d.on_event(&cleared(2), t0, wall);
            assert_eq!(keys(&ns), ["s-2-gas-shift"], "the first return is news");
            // Latched and unanswered: the crossings are repeats; then it chatters.
            let mut quiet = Vec::new();
            for seq in 3..=20 {
                let mut e = if seq % 2 == 1 {
                    raised(seq)
                } else {
                    cleared(seq)
                };
                e.notice.repeat = true;
                e.notice.chattering = seq > 5;
                quiet.extend(d.on_event(&e, t0, wall));
            }
            assert!(quiet.is_empty(), "no notification per crossing: {quiet:?}");
            let mut chatter = raised(21);
            chatter.transition = Transition::Chattering;
            assert_eq!(d.on_event(&chatter, t0, wall).len(), 2, "told it chatters");
            assert_eq!(d.mark(21), 2, "the summarised events are not routed yet");
            // The summary comes one renotify period (10 min) after the first repeat.
            let mut summaries = Vec::new();
            while Instant::now() - t0 < Duration::from_secs(600) {
                let (_, ns) = step(&mut d).await;
                summaries.extend(ns.into_iter().filter(|n| n.reason == Reason::Summary));
            }
            assert_eq!(keys(&summaries), ["s-20-gas-s-shift", "s-20-gas-s-manager"]);
            let text = &summaries[0].events[0].message;
            assert!(text.contains("9 activations (18 transitions)"), "{text}");
            assert!(text.contains("反复激活"), "{text}");
            assert_eq!(d.mark(21), 21);
        })
        .await
        .expect("test timed out");
    }

    #[test]
    fn consequences_are_recorded_not_notified() {
        let mut d = dispatcher();
        let mut e = ev(1, Priority::High, Transition::Fault, AlarmState::Suppressed);
        e.notice.consequence_of = Some("device.gd1:comm".into());
        assert!(d.on_event(&e, Instant::now(), SystemTime::now()).is_empty());
        e.transition = Transition::FaultCleared;
        e.state = AlarmState::Normal;
        assert!(d.on_event(&e, Instant::now(), SystemTime::now()).is_empty());
    }

    #[test]
    fn a_fault_still_failing_when_its_cause_clears_is_notified() {
        let cfg = crate::config::parse(
            "[site]\nid = \"s\"\n[[receivers]]\nkind = \"webhook\"\nid = \"h\"\nurl = \"http://127.0.0.1:9/a\"\n",
            Path::new("t.toml"),
        )
        .expect("parse");
        let (cfg, _) = crate::config::validate(&cfg, Path::new(".")).expect("valid");
        let mut d = Dispatcher::new(&(&cfg).into(), Arc::new(Metrics::new()));
        let mut e = ev(1, Priority::High, Transition::Fault, AlarmState::Suppressed);
        e.notice.consequence_of = Some("source.bus:comm".into());
        assert!(d.on_event(&e, Instant::now(), SystemTime::now()).is_empty());
        // The connection is back, this data unit is still silent: its own fault now.
        e.seq = 2;
        e.transition = Transition::Unsuppressed;
        e.state = AlarmState::ActiveUnacknowledged;
        assert_eq!(d.on_event(&e, Instant::now(), SystemTime::now()).len(), 1);
    }

    #[test]
    fn routes_match_on_kind_and_the_default_route_sends_everything() {
        let mut d = dispatcher();
        let mut e = ev(
            1,
            Priority::High,
            Transition::Raised,
            AlarmState::ActiveUnacknowledged,
        );
        e.kind = "tank".into();
        assert!(d.on_event(&e, Instant::now(), SystemTime::now()).is_empty());
        let cfg = crate::config::parse(
            "[site]\nid = \"s\"\n[[receivers]]\nkind = \"webhook\"\nid = \"h\"\nurl = \"http://127.0.0.1:9/a\"\n",
            Path::new("t.toml"),
        )
        .expect("parse");
        let (cfg, _) = crate::config::validate(&cfg, Path::new(".")).expect("valid");
        let mut d = Dispatcher::new(&(&cfg).into(), Arc::new(Metrics::new()));
        let ns = d.on_event(&e, Instant::now(), SystemTime::now());
        // Without an alarm journal, sequence numbers restart with the process: the key carries
        // the start time so a new run never reuses an old key.
        let k = &ns[0].key;
        assert!(k.starts_with("s~") && k.ends_with("-1-default-h"), "{k}");
    }
}
