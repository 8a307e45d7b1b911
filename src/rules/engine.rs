//! The pure alarm engine: every alarm's detector, delay filter and lifecycle, stepped on samples,
//! on time and on people's commands. No I/O: time is passed in, events are returned.
//!
//! Invariants:
//! - A Bad or stale reading raises the channel's `fault` alarm and feeds no detector: it never
//!   clears a process alarm, never counts as normal, and an expression reading the channel
//!   becomes unknown (the alarm holds).
//! - Work per sample is bounded by the channel's own alarms and the composites that read it; a
//!   fault on one channel never delays another.
//! - The events of one call are ordered: higher priority first, at the same priority toxic gas
//!   before combustible gas before other kinds; sequence numbers follow that order.
//! - Only the engine changes alarm state; commands are validated and refused with a reason.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::expr::{Env, Expr, Timers};
use super::journal::{ModeState, Record, Replayed};
use super::lifecycle::{Ctx, Input, Life, OutOfService, Refused, Shelf};
use super::limits::{Delay, Discrete, Limit, Rate, Stuck};
use super::schedule::{Calendar, Flags};

mod build;
pub use build::{AlarmTexts, alarm_texts};
mod carry;
use crate::model::{
    AlarmClass, AlarmEvent, AlarmState, BadReason, ChannelId, Priority, Reading, Sample, SiteMode,
    Transition, screen_floor,
};

#[derive(Debug)]
enum Det {
    Limit(Limit),
    /// Boxed, as is `Stuck`: few alarms have one, and every alarm carries a `Det`.
    Rate(Box<Rate>),
    Discrete(Discrete),
    Stuck(Box<Stuck>),
    Composite,
    Fault,
    /// A device or source communication alarm.
    Group,
}

/// One alarm at run time. The texts fixed by the plan (ids, names, area, unit, messages) are
/// shared: the board's views hold the same allocations, and alarms with equal texts (a kind,
/// an area, a unit) share one.
#[derive(Debug)]
struct AlarmRt {
    id: Arc<str>,
    condition: Arc<str>,
    channel: ChannelId,
    chan: Option<usize>,
    area: Arc<str>,
    class: AlarmClass,
    kind: Arc<str>,
    priority: Priority,
    latching: bool,
    suppress_in: Vec<SiteMode>,
    det: Det,
    raw: bool,
    delay: Delay,
    life: Life,
    limit: Option<f64>,
    unit: Arc<str>,
    message: Option<Arc<str>>,
    response: Option<Arc<str>>,
    label: Arc<str>,
    area_name: Arc<str>,
    inputs: Arc<[ChannelId]>,
    raised_at: Option<SystemTime>,
    value: Option<f64>,
    activations: VecDeque<Instant>,
    chattering: bool,
    /// The condition's latest rise was a repeat (latched, still unanswered): its return is
    /// one too.
    repeating: bool,
    since: Option<SystemTime>,
}

#[derive(Debug)]
struct ChannelRt {
    id: ChannelId,
    /// A reading older than this is stale.
    max_age: Duration,
    /// The floor below which a reading is Bad and the range minimum it is measured from, for
    /// gas and oxygen channels with a range ([`crate::model::gas_floor`]).
    floor: Option<(f64, f64)>,
    alarms: Vec<usize>,
    fault: usize,
    deps: Vec<usize>,
    value: Option<f64>,
    last_good: Instant,
    bad: Option<String>,
    /// The current Bad reason is a communication one (`comm`, `stale`).
    bad_comm: bool,
    /// The current Bad reason is `stale`: no further Bad sample will come to reveal a
    /// consequence whose cause has cleared, so it is revealed without one.
    bad_stale: bool,
    /// A communication fault waits for the end of the batch to learn whether its device or
    /// source is down (then it is a consequence).
    pending: bool,
    /// Read (Bad) in the current batch.
    fresh: bool,
    /// The active fault was raised for a communication reason.
    fault_comm: bool,
    /// Its device group and source group, when it has them.
    groups: Vec<usize>,
}

#[derive(Debug)]
struct GroupRt {
    def: super::groups::GroupDef,
    alarm: usize,
    /// Since when this source group is down because its connection is (a channel went Bad
    /// for a communication reason while the link was down); `None` otherwise.
    link_down_since: Option<Instant>,
    /// When the connection came back while the group is still held down: the group stays down
    /// until every member reads again or the longest `max_age` of its members has passed, so a
    /// reconnect whose first messages arrive one by one does not reveal every other channel's
    /// fault as an alarm of its own.
    link_up_at: Option<Instant>,
}

#[derive(Debug)]
struct CompRt {
    alarm: usize,
    expr: Expr,
    timers: Timers,
}

#[derive(Debug, Clone)]
struct Settings {
    max_shelve: Duration,
    flood_threshold: usize,
    flood_window: Duration,
    chatter_threshold: usize,
    chatter_window: Duration,
}

/// An action by a person on one alarm.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Acknowledge.
    Ack,
    /// Reset a latched alarm.
    Reset,
    /// Shelve for this long (at most `alarms.max_shelve`).
    Shelve {
        /// How long.
        duration: Duration,
    },
    /// End a shelf.
    Unshelve,
    /// Take out of service.
    OutOfService {
        /// Why (required).
        reason: String,
    },
    /// Return to service.
    Return,
}

/// A command to the engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// An action on one alarm.
    Act {
        /// Alarm id.
        alarm: String,
        /// What.
        action: Action,
        /// Who.
        by: String,
        /// Comment.
        comment: String,
    },
    /// Set the site mode.
    SetMode {
        /// The new mode.
        mode: SiteMode,
        /// Who.
        by: String,
        /// Why (required).
        reason: String,
    },
}

/// Why a command was not carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such alarm.
    #[error("unknown alarm `{0}`")]
    UnknownAlarm(String),
    /// The lifecycle refused it.
    #[error("{0}")]
    Refused(#[from] Refused),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// An alarm as listed by the API. Its texts are the engine's own (shared, not copied), so the
/// board keeps a view of every alarm without a second copy of every name.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AlarmView {
    /// Alarm id.
    #[schema(value_type = String)]
    pub id: Arc<str>,
    /// Channel (or `rule.{id}` for composites).
    #[schema(value_type = String)]
    pub channel: ChannelId,
    /// Condition name.
    #[schema(value_type = String)]
    pub condition: Arc<str>,
    /// Process, fault or system.
    pub class: AlarmClass,
    /// Kind used for ordering.
    #[schema(value_type = String)]
    pub kind: Arc<str>,
    /// Area.
    #[schema(value_type = String)]
    pub area: Arc<str>,
    /// Priority.
    pub priority: Priority,
    /// ISA-18.2 state.
    pub state: AlarmState,
    /// The process condition is true now.
    pub condition_active: bool,
    /// Awaits acknowledgement.
    pub unacknowledged: bool,
    /// Awaits reset.
    pub latched: bool,
    /// Shelf, when shelved.
    pub shelf: Option<Box<Shelf>>,
    /// Out-of-service record.
    pub out_of_service: Option<Box<OutOfService>>,
    /// Suppressed by the site mode.
    pub suppressed: bool,
    /// Suppressed by design as a consequence of this device or source communication alarm
    /// (state `suppressed`): still Bad and listed, not notified, nothing to acknowledge.
    pub consequence_of: Option<String>,
    /// Activated at least the chattering threshold within the chattering window.
    pub chattering: bool,
    /// Latest value seen by the alarm.
    pub value: Option<f64>,
    /// Limit, for limit alarms.
    pub limit: Option<f64>,
    /// Unit.
    #[schema(value_type = String)]
    pub unit: Arc<str>,
    /// Time of the latest transition.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub since: Option<SystemTime>,
    /// The channel's label (a composite's message or id).
    #[schema(value_type = String)]
    pub label: Arc<str>,
    /// The area's display name (`[[areas]]`), else its id.
    #[schema(value_type = String)]
    pub area_name: Arc<str>,
    /// The rule's configured message, when it has one.
    #[schema(value_type = Option<String>)]
    pub message: Option<Arc<str>>,
    /// What to do (处置措施), when the rule says.
    #[schema(value_type = Option<String>)]
    pub response: Option<Arc<str>>,
    /// The channels a composite alarm reads (empty for single-channel alarms): the status page
    /// marks them while the alarm is active, so no tile contradicts it.
    #[schema(value_type = Vec<String>)]
    pub inputs: Arc<[ChannelId]>,
    /// When the alarm was last raised (a latched alarm shows this, not when it cleared).
    #[serde(with = "humantime_serde")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub raised_at: Option<SystemTime>,
}

pub use crate::model::kind_rank;

/// Orders a batch of events (higher priority first, then toxic before combustible) and
/// renumbers their sequence numbers in that order. Events of one alarm keep their order.
pub fn order(events: &mut [AlarmEvent]) {
    if events.len() < 2 {
        return;
    }
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    events.sort_by_key(|e| (std::cmp::Reverse(e.priority), kind_rank(&e.kind)));
    for (e, s) in events.iter_mut().zip(seqs) {
        e.seq = s;
    }
}

struct EnvRef<'a> {
    chans: &'a [ChannelRt],
    mode: SiteMode,
    flags: &'a Flags,
}

impl Env for EnvRef<'_> {
    fn value(&self, i: usize) -> Option<f64> {
        self.chans[i].value
    }
    fn mode(&self) -> SiteMode {
        self.mode
    }
    fn window(&self, i: usize) -> bool {
        self.flags.windows.get(i).copied().unwrap_or(false)
    }
    fn weekend(&self) -> bool {
        self.flags.weekend
    }
    fn holiday(&self) -> bool {
        self.flags.holiday
    }
}

/// Alarm state for every channel and rule.
#[derive(Debug)]
pub struct Engine {
    chans: Vec<ChannelRt>,
    index: HashMap<ChannelId, usize>,
    /// Set by every full settle: no channel is bad and no link group is down or recovering,
    /// so a batch of good readings on good channels has nothing to settle.
    quiet: bool,
    alarms: Vec<AlarmRt>,
    by_id: HashMap<Arc<str>, usize>,
    comps: Vec<CompRt>,
    calendar: Calendar,
    flags: Flags,
    flags_at: Option<u64>,
    mode: ModeState,
    seq: u64,
    settings: Settings,
    recent: VecDeque<Instant>,
    flood: bool,
    groups: Vec<GroupRt>,
    /// Sources whose connection is down now, see [`Engine::set_sources_down`].
    sources_down: std::collections::BTreeSet<String>,
    /// Gateway components failing now (component → reason), see [`Engine::gateway_health`].
    gateway: std::collections::BTreeMap<String, String>,
}

impl Engine {
    /// Restores alarm lifecycles, the site mode and the sequence number from a journal replay.
    /// Returns the ids of journaled alarms that are no longer configured.
    pub fn restore(&mut self, r: &Replayed) -> Vec<String> {
        let mut gone = Vec::new();
        for (id, life) in &r.alarms {
            match self.by_id.get(id.as_str()) {
                Some(&a) => {
                    let al = &mut self.alarms[a];
                    al.life = life.clone();
                    // The episode's raise time survives the restart with its state.
                    al.raised_at = r.raised.get(id).copied();
                    al.raw = life.cond;
                    al.delay.out = life.cond;
                    al.delay.pending = None;
                    if al.class == AlarmClass::Fault && life.cond {
                        if let Some(c) = al.chan {
                            let comm = life.consequential.is_some();
                            let ch = &mut self.chans[c];
                            ch.bad = Some("fault before restart".into());
                            ch.bad_comm = comm;
                            ch.fault_comm = comm;
                        }
                    }
                }
                None => gone.push(id.clone()),
            }
        }
        self.mode = r.mode.clone();
        self.seq = self.seq.max(r.seq);
        // The configuration may have changed which modes suppress an alarm: follow it now (the
        // start-up checkpoint records the result).
        let mode = self.mode.mode;
        for al in &mut self.alarms {
            al.life.suppressed = al.suppress_in.contains(&mode);
        }
        gone.sort();
        gone
    }

    /// A checkpoint of every alarm that is not normal, and the site mode.
    pub fn checkpoint(&self) -> Record {
        Record::Checkpoint {
            seq: self.seq,
            alarms: self
                .alarms
                .iter()
                .filter(|a| a.life != Life::default())
                .map(|a| (a.id.to_string(), a.life.clone()))
                .collect(),
            mode: self.mode.clone(),
            raised: self
                .alarms
                .iter()
                .filter(|a| a.life != Life::default())
                .filter_map(|a| a.raised_at.map(|t| (a.id.to_string(), t)))
                .collect(),
        }
    }

    /// Screens a batch before it is used anywhere (alarms, snapshot, time series): a gas or
    /// oxygen reading further below its range minimum than the tolerance is Bad
    /// ([`crate::model::gas_floor`]), whichever source produced it.
    pub fn screen(&self, samples: &mut [Sample]) {
        for s in samples {
            if let Some((floor, min)) = self
                .index
                .get(&s.channel)
                .and_then(|&i| self.chans[i].floor)
            {
                screen_floor(&mut s.reading, floor, min);
            }
        }
    }

    /// Conditions of a channel that are active or latched (for the channel snapshot).
    pub fn active(&self, id: &ChannelId) -> Vec<String> {
        let Some(&i) = self.index.get(id) else {
            return Vec::new();
        };
        let c = &self.chans[i];
        let mut v: Vec<String> = c
            .alarms
            .iter()
            .map(|&a| &self.alarms[a])
            .filter(|a| a.life.cond || a.life.latched)
            .map(|a| a.condition.to_string())
            .collect();
        if self.alarms[c.fault].life.cond {
            v.push("fault".into());
        }
        v
    }

    /// Channels currently in fault.
    pub fn faults(&self) -> usize {
        self.chans
            .iter()
            .filter(|c| self.alarms[c.fault].life.cond)
            .count()
    }

    /// The lifecycle of an alarm.
    pub fn life(&self, alarm: &str) -> Option<&Life> {
        self.by_id.get(alarm).map(|&a| &self.alarms[a].life)
    }

    /// The site mode.
    pub fn mode(&self) -> &ModeState {
        &self.mode
    }

    /// Whether an alarm flood is in progress.
    pub fn flood(&self) -> bool {
        self.flood
    }

    /// The last sequence number used.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Number of alarms (every kind, faults included).
    pub fn alarm_count(&self) -> usize {
        self.alarms.len()
    }

    /// Number of alarms not in the normal state.
    pub fn not_normal(&self) -> usize {
        self.alarms
            .iter()
            .filter(|a| a.life.state() != AlarmState::Normal)
            .count()
    }

    /// The API view of one alarm.
    pub fn view(&self, alarm: &str) -> Option<AlarmView> {
        self.by_id.get(alarm).map(|&a| self.view_at(a))
    }

    fn view_at(&self, a: usize) -> AlarmView {
        let al = &self.alarms[a];
        AlarmView {
            id: al.id.clone(),
            channel: al.channel.clone(),
            condition: al.condition.clone(),
            class: al.class,
            kind: al.kind.clone(),
            area: al.area.clone(),
            priority: al.priority,
            state: al.life.state(),
            condition_active: al.life.cond,
            unacknowledged: al.life.unacked,
            latched: al.life.latched,
            shelf: al.life.shelf.clone(),
            out_of_service: al.life.oos.clone(),
            suppressed: al.life.suppressed,
            consequence_of: al.life.consequential.clone(),
            chattering: al.chattering,
            value: al.value,
            limit: al.limit,
            unit: al.unit.clone(),
            since: al.since,
            label: al.label.clone(),
            area_name: al.area_name.clone(),
            message: al.message.clone(),
            response: al.response.clone(),
            inputs: al.inputs.clone(),
            raised_at: al.raised_at,
        }
    }

    /// Every alarm's view.
    pub fn views(&self) -> Vec<AlarmView> {
        (0..self.alarms.len()).map(|a| self.view_at(a)).collect()
    }

    fn emit(
        &mut self,
        a: usize,
        t: Transition,
        wall: SystemTime,
        by: Option<&str>,
        comment: Option<&str>,
        out: &mut Vec<AlarmEvent>,
    ) {
        self.seq += 1;
        let al = &mut self.alarms[a];
        al.since = Some(wall);
        let (t, message) = match (al.class, t) {
            (AlarmClass::Fault, Transition::Raised) if matches!(al.det, Det::Stuck(_)) => {
                let Det::Stuck(st) = &al.det else {
                    unreachable!("matched above")
                };
                (
                    Transition::Fault,
                    format!(
                        "{} fault: reading flat at {} {} (within ±{}) for {}: detector stuck?",
                        al.channel,
                        al.value.map_or_else(|| "?".to_owned(), |v| format!("{v}")),
                        al.unit,
                        st.band,
                        humantime::format_duration(st.after)
                    ),
                )
            }
            (AlarmClass::Fault, Transition::Raised) => (
                Transition::Fault,
                format!(
                    "{} fault: {}",
                    al.channel,
                    al.chan
                        .and_then(|c| self.chans[c].bad.clone())
                        .unwrap_or_default()
                ),
            ),
            (AlarmClass::Fault, Transition::Cleared) => (
                Transition::FaultCleared,
                format!("{} reading again", al.channel),
            ),
            (_, Transition::Raised) => (t, raised_message(al)),
            (_, Transition::Cleared) => (
                t,
                match al.value {
                    Some(v) if al.chan.is_some() => format!("{} cleared: {v} {}", al.id, al.unit),
                    _ => format!("{} cleared", al.id),
                },
            ),
            (_, t) => {
                let who = by.unwrap_or("system");
                (
                    t,
                    match comment.filter(|c| !c.is_empty()) {
                        Some(c) => {
                            format!("{} {} by {who}: {c}", al.id, t.as_str().replace('_', " "))
                        }
                        None => format!("{} {} by {who}", al.id, t.as_str().replace('_', " ")),
                    },
                )
            }
        };
        if matches!(t, Transition::Raised | Transition::Fault) {
            al.raised_at = Some(wall);
        }
        // The raise time travels with every transition of the episode (acknowledgement,
        // reset, clear, and shelving or suppression while it lasts), not with transitions of an
        // alarm that is normal and answered.
        let episode = matches!(
            t,
            Transition::Raised
                | Transition::Fault
                | Transition::Cleared
                | Transition::FaultCleared
                | Transition::Acknowledged
                | Transition::Reset
        ) || al.life.cond
            || al.life.unacked
            || al.life.latched;
        let raised_at = if episode { al.raised_at } else { None };
        out.push(AlarmEvent {
            seq: self.seq,
            alarm: al.id.to_string(),
            channel: al.channel.clone(),
            condition: al.condition.to_string(),
            priority: al.priority,
            transition: t,
            value: al.value,
            limit: al.limit,
            message,
            ts: wall,
            class: al.class,
            kind: al.kind.to_string(),
            state: al.life.state(),
            by: by.map(str::to_owned),
            comment: comment.filter(|c| !c.is_empty()).map(str::to_owned),
            raised_at,
            notice: Default::default(),
        });
    }

    /// The gateway components that endanger records when they fail (an output's spool full or
    /// unreadable, the alarm journal failing), as `(component, reason)` of those failing now.
    /// Each newly failing one raises a system fault `gateway:{component}` (priority high,
    /// annunciated); one that recovered gives `fault_cleared`. Not latched or acknowledged: they
    /// say what the gateway itself cannot guarantee, for as long as that lasts.
    pub fn gateway_health(
        &mut self,
        failing: &[(String, String)],
        wall: SystemTime,
    ) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        let now: std::collections::BTreeMap<String, String> = failing.iter().cloned().collect();
        let gone: Vec<String> = self
            .gateway
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        for c in gone {
            self.gateway.remove(&c);
            let id = format!("gateway:{c}");
            self.emit_system(
                &id,
                Transition::FaultCleared,
                Priority::High,
                format!("{c}: recovered"),
                wall,
                None,
                &mut out,
            );
        }
        for (c, reason) in now {
            if self.gateway.contains_key(&c) {
                continue;
            }
            let id = format!("gateway:{c}");
            self.emit_system(
                &id,
                Transition::Fault,
                Priority::High,
                format!("{c}: {reason}"),
                wall,
                None,
                &mut out,
            );
            if let Some(e) = out.last_mut() {
                e.class = AlarmClass::Fault;
                e.state = AlarmState::ActiveUnacknowledged;
            }
            self.gateway.insert(c, reason);
        }
        out
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one private helper; a struct would only rename the arguments"
    )]
    fn emit_system(
        &mut self,
        alarm: &str,
        t: Transition,
        priority: Priority,
        message: String,
        wall: SystemTime,
        by: Option<&str>,
        out: &mut Vec<AlarmEvent>,
    ) {
        self.seq += 1;
        out.push(AlarmEvent {
            seq: self.seq,
            alarm: alarm.into(),
            channel: ChannelId::new(alarm.split(':').next().unwrap_or("site")),
            condition: alarm.split_once(':').map_or(alarm, |(_, c)| c).into(),
            priority,
            transition: t,
            value: None,
            limit: None,
            message,
            ts: wall,
            class: AlarmClass::System,
            kind: "system".into(),
            state: AlarmState::Normal,
            by: by.map(str::to_owned),
            comment: None,
            raised_at: None,
            notice: Default::default(),
        });
    }

    /// The process condition of alarm `a` (after delays) is now `cond`.
    fn set_cond(
        &mut self,
        a: usize,
        cond: bool,
        now: Instant,
        wall: SystemTime,
        out: &mut Vec<AlarmEvent>,
    ) {
        let al = &mut self.alarms[a];
        let ctx = Ctx {
            latching: al.latching,
            now: wall,
            by: "system",
            comment: "",
        };
        let repeat = if cond {
            al.life.is_repeat(true)
        } else {
            al.repeating
        };
        let chattering = al.chattering;
        let Ok(Some(t)) = al.life.step(&Input::Condition(cond), &ctx) else {
            return;
        };
        if cond {
            al.repeating = repeat;
        }
        // Process and fault alarms both count towards the flood and chattering: a converter
        // losing power floods the people on duty as surely as a process upset does. A repeat is
        // not a new activation (no flood count) but it is a crossing (chattering count).
        let visible = cond && !al.life.hidden();
        self.emit(a, t, wall, None, None, out);
        if let Some(e) = out.last_mut() {
            e.notice.repeat = repeat;
            e.notice.chattering = chattering;
        }
        if visible {
            self.activation(a, now, wall, !repeat, out);
        }
    }

    fn activation(
        &mut self,
        a: usize,
        now: Instant,
        wall: SystemTime,
        new: bool,
        out: &mut Vec<AlarmEvent>,
    ) {
        let s = self.settings.clone();
        prune(&mut self.recent, now, s.flood_window);
        if new {
            self.recent.push_back(now);
        }
        if !self.flood && self.recent.len() > s.flood_threshold {
            self.flood = true;
            let msg = format!(
                "alarm flood: {} activations within {}",
                self.recent.len(),
                humantime::format_duration(s.flood_window)
            );
            self.emit_system(
                "site:flood",
                Transition::Flood,
                Priority::High,
                msg,
                wall,
                None,
                out,
            );
        }
        let al = &mut self.alarms[a];
        prune(&mut al.activations, now, s.chatter_window);
        al.activations.push_back(now);
        if !al.chattering && al.activations.len() >= s.chatter_threshold {
            al.chattering = true;
            let n = al.activations.len();
            self.emit(a, Transition::Chattering, wall, None, None, out);
            if let Some(e) = out.last_mut() {
                let w = humantime::format_duration(s.chatter_window);
                e.message = format!(
                    "{alarm} chattering: {n} activations within {w}; further ones are summarised, not notified one by one / 报警振荡：{alarm} 在 {w} 内激活 {n} 次，此后的激活汇总通知，不再逐次通知",
                    alarm = e.alarm,
                );
            }
        }
    }

    fn wall_flags(&mut self, wall: SystemTime) {
        let secs = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.flags_at != Some(secs) {
            self.flags = self.calendar.flags(wall);
            self.flags_at = Some(secs);
        }
    }

    fn eval_comp(&mut self, k: usize, now: Instant, wall: SystemTime, out: &mut Vec<AlarmEvent>) {
        self.wall_flags(wall);
        let env = EnvRef {
            chans: &self.chans,
            mode: self.mode.mode,
            flags: &self.flags,
        };
        let c = &mut self.comps[k];
        let v = c.expr.eval(&env, &mut c.timers, now).truth();
        let a = c.alarm;
        let al = &mut self.alarms[a];
        match v {
            Some(raw) => {
                al.raw = raw;
                if let Some(cond) = al.delay.feed(raw, now) {
                    self.set_cond(a, cond, now, wall, out);
                }
            }
            None => al.delay.hold(),
        }
    }

    /// Tells the engine which sources' connections are down now (from the health registry,
    /// every tick): see [`Engine::settle`]'s source groups.
    pub fn set_sources_down(&mut self, ids: impl IntoIterator<Item = String>) {
        self.sources_down = ids.into_iter().collect();
    }

    /// Steps on one sample (a batch of one).
    pub fn on_sample(&mut self, s: &Sample, now: Instant) -> Vec<AlarmEvent> {
        self.on_batch(std::slice::from_ref(s), now)
    }

    /// Steps on a batch of samples (one poll of a device, one MQTT message). Communication
    /// faults are settled at the end of the batch: when a whole device or source is down, one
    /// communication alarm is raised and its channels' faults are consequences of it.
    pub fn on_batch(&mut self, batch: &[Sample], now: Instant) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        for s in batch {
            self.apply(s, now, &mut out);
        }
        if let Some(last) = batch.last() {
            // Nothing to settle when every channel was good before this batch, no link group
            // was down, and the batch left its channels good: settling then changes nothing
            // (it walks every group and channel, the cost of a step on a large site).
            let still_quiet = self.quiet
                && batch.iter().all(|s| {
                    self.index
                        .get(&s.channel)
                        .is_none_or(|&i| self.chans[i].bad.is_none())
                });
            if !still_quiet {
                self.settle(now, last.ts, &mut out);
            }
        }
        order(&mut out);
        out
    }

    fn apply(&mut self, s: &Sample, now: Instant, out: &mut Vec<AlarmEvent>) {
        let Some(&i) = self.index.get(&s.channel) else {
            return;
        };
        let wall = s.ts;
        match &s.reading {
            Reading::Bad(reason) => {
                let was_good = self.chans[i].value.is_some();
                let comm = matches!(reason, BadReason::Comm { .. } | BadReason::Stale);
                let c = &mut self.chans[i];
                c.value = None;
                c.bad = Some(reason.to_string());
                c.bad_comm = comm;
                c.bad_stale = matches!(reason, BadReason::Stale);
                c.fresh = true;
                let f = c.fault;
                if !self.alarms[f].life.cond {
                    if comm && !self.chans[i].groups.is_empty() {
                        self.chans[i].pending = true;
                    } else {
                        self.chans[i].fault_comm = comm;
                        self.set_cond(f, true, now, wall, out);
                    }
                }
                for k in 0..self.chans[i].alarms.len() {
                    let a = self.chans[i].alarms[k];
                    self.alarms[a].delay.hold();
                }
                if was_good {
                    for k in 0..self.chans[i].deps.len() {
                        let d = self.chans[i].deps[k];
                        self.eval_comp(d, now, wall, out);
                    }
                }
            }
            Reading::Good(v) => {
                let v = *v;
                let c = &mut self.chans[i];
                c.value = Some(v);
                c.last_good = now;
                c.bad = None;
                c.bad_comm = false;
                c.bad_stale = false;
                c.pending = false;
                c.fault_comm = false;
                let f = c.fault;
                if self.alarms[f].life.cond {
                    self.alarms[f].value = Some(v);
                    // A consequence clears with its cause named, and is no longer one.
                    let cause = self.alarms[f].life.consequential.take();
                    self.set_cond(f, false, now, wall, out);
                    if let (Some(c), Some(e)) = (cause, out.last_mut()) {
                        e.notice.consequence_of = Some(c);
                    }
                }
                for k in 0..self.chans[i].alarms.len() {
                    let a = self.chans[i].alarms[k];
                    let al = &mut self.alarms[a];
                    al.value = Some(v);
                    let raw = match &mut al.det {
                        Det::Limit(l) => Some(l.eval(al.raw, v)),
                        Det::Rate(r) => {
                            let x = r.eval(al.raw, now, v);
                            if let Some(rate) = r.rate(now, v) {
                                al.value = Some(rate);
                            }
                            x
                        }
                        Det::Discrete(d) => Some(d.eval(v)),
                        Det::Stuck(st) => Some(st.eval(now, v)),
                        Det::Composite | Det::Fault | Det::Group => None,
                    };
                    if let Some(raw) = raw {
                        al.raw = raw;
                        if let Some(cond) = al.delay.feed(raw, now) {
                            self.set_cond(a, cond, now, wall, out);
                        }
                    }
                }
                for k in 0..self.chans[i].deps.len() {
                    let d = self.chans[i].deps[k];
                    self.eval_comp(d, now, wall, out);
                }
            }
        }
    }

    /// Settles communication faults after a batch (see [`super::groups`]): groups that went
    /// down raise their alarm (a consequence of their source's when that is down too), groups
    /// that answer again clear it; channel faults for a communication reason become
    /// consequences of the outermost group that is down, or stay their own alarms.
    fn settle(&mut self, now: Instant, wall: SystemTime, out: &mut Vec<AlarmEvent>) {
        self.settle_all(now, wall, out);
        self.quiet = self.chans.iter().all(|c| c.bad.is_none() && !c.pending)
            && self.groups.iter().all(|g| {
                g.link_down_since.is_none()
                    && g.link_up_at.is_none()
                    && !g.def.members.is_empty()
                    && !self.alarms[g.alarm].life.cond
            });
    }

    fn settle_all(&mut self, now: Instant, wall: SystemTime, out: &mut Vec<AlarmEvent>) {
        if self.groups.is_empty() {
            for c in &mut self.chans {
                c.fresh = false;
            }
            return;
        }
        // A source whose connection is down (an MQTT session lost, say) is down as a whole as
        // soon as one of its channels has no reading: the others are only younger than their
        // `max_age` and will follow as consequences, not as alarms of their own.
        for g in &mut self.groups {
            let link = g.def.scope == super::groups::Scope::Source
                && self.sources_down.contains(&g.def.name);
            let any_bad = g.def.members.iter().any(|&m| {
                let c = &self.chans[m];
                c.bad.is_some() && c.bad_comm
            });
            match (g.link_down_since, link) {
                (None, true) if any_bad => g.link_down_since = Some(now),
                (Some(_), true) => g.link_up_at = None,
                (Some(_), false) => {
                    let up = *g.link_up_at.get_or_insert(now);
                    let grace = g
                        .def
                        .members
                        .iter()
                        .map(|&m| self.chans[m].max_age)
                        .max()
                        .unwrap_or_default();
                    if !any_bad || now.saturating_duration_since(up) >= grace {
                        g.link_down_since = None;
                        g.link_up_at = None;
                    }
                }
                _ => {}
            }
        }
        let down: Vec<bool> = self
            .groups
            .iter()
            .map(|g| {
                g.link_down_since.is_some()
                    || g.def.members.iter().all(|&m| {
                        let c = &self.chans[m];
                        c.bad.is_some() && c.bad_comm
                    })
            })
            .collect();
        let cause_of = |gs: &[usize], groups: &[GroupRt], alarms: &[AlarmRt]| {
            // Source groups come first: the outermost group that is down.
            gs.iter()
                .copied()
                .filter(|&g| down[g])
                .min()
                .map(|g| alarms[groups[g].alarm].id.to_string())
        };
        for (g, &is_down) in down.iter().enumerate() {
            let a = self.groups[g].alarm;
            let parent: Vec<usize> = self.groups[g].def.parent.into_iter().collect();
            let cause = cause_of(&parent, &self.groups, &self.alarms);
            if is_down && !self.alarms[a].life.cond {
                let n = self.groups[g].def.members.len();
                let detail = self.groups[g]
                    .def
                    .members
                    .iter()
                    .find_map(|&m| self.chans[m].bad.clone())
                    .unwrap_or_default();
                let (what, what_zh) = match self.groups[g].def.scope {
                    super::groups::Scope::Device => ("device", "设备"),
                    super::groups::Scope::Source => ("source", "数据源"),
                };
                let name = self.groups[g].def.name.clone();
                let msg = format!(
                    "{what} {name} not communicating: its {n} channels have no readings ({detail}); their faults are suppressed as consequences / {what_zh} {name} 通信中断：{n} 个通道无读数，其通道故障作为后果报警被抑制"
                );
                self.raise_consequence(a, cause, now, wall, out);
                if let Some(e) = out.last_mut() {
                    e.message = msg;
                }
            } else if is_down {
                self.reconsider(a, cause, true, wall, out);
            } else if self.alarms[a].life.cond {
                let cause = self.alarms[a].life.consequential.take();
                self.set_cond(a, false, now, wall, out);
                if let Some(e) = out.last_mut() {
                    let name = &self.groups[g].def.name;
                    e.message = format!("{} answering again / {name} 恢复通信", e.channel);
                    e.notice.consequence_of = cause;
                }
            }
        }
        for i in 0..self.chans.len() {
            let c = &self.chans[i];
            let f = c.fault;
            let fresh = c.fresh || c.bad_stale;
            if c.groups.is_empty() || c.bad.is_none() {
                continue;
            }
            let cause = cause_of(&c.groups, &self.groups, &self.alarms);
            if c.pending {
                self.chans[i].pending = false;
                self.chans[i].fault_comm = true;
                self.raise_consequence(f, cause, now, wall, out);
            } else if self.alarms[f].life.cond
                && (c.fault_comm || self.alarms[f].life.consequential.is_some())
            {
                self.reconsider(f, cause, fresh, wall, out);
            }
        }
        for c in &mut self.chans {
            c.fresh = false;
        }
    }

    /// Raises alarm `a`, as a consequence of `cause` when there is one.
    fn raise_consequence(
        &mut self,
        a: usize,
        cause: Option<String>,
        now: Instant,
        wall: SystemTime,
        out: &mut Vec<AlarmEvent>,
    ) {
        let consequence = cause.is_some();
        if consequence {
            self.alarms[a].life.consequential = cause.clone();
        }
        self.set_cond(a, true, now, wall, out);
        if consequence {
            if let Some(e) = out.last_mut() {
                e.notice.consequence_of = cause;
            }
        }
    }

    /// An active alarm becomes a consequence of `cause`, or (when `fresh`: it read Bad again
    /// while nothing above it is down) its own alarm again.
    fn reconsider(
        &mut self,
        a: usize,
        cause: Option<String>,
        fresh: bool,
        wall: SystemTime,
        out: &mut Vec<AlarmEvent>,
    ) {
        let current = self.alarms[a].life.consequential.clone();
        let input = match (&current, &cause) {
            (None, Some(_)) => Input::Consequence(cause.clone()),
            (Some(_), None) if fresh => Input::Consequence(None),
            _ => return,
        };
        let al = &mut self.alarms[a];
        let ctx = Ctx {
            latching: al.latching,
            now: wall,
            by: "system",
            comment: "",
        };
        if let Ok(Some(t)) = al.life.step(&input, &ctx) {
            let comment = match (&cause, &current) {
                (Some(c), _) => format!("consequence of {c} / {c} 的后果报警"),
                (None, Some(c)) => format!(
                    "no longer a consequence of {c}: {} / 不再是 {c} 的后果报警",
                    al.chan
                        .and_then(|i| self.chans[i].bad.clone())
                        .unwrap_or_else(|| "still failing".into())
                ),
                (None, None) => String::new(),
            };
            self.emit(a, t, wall, Some("system"), Some(&comment), out);
            if let Some(e) = out.last_mut() {
                e.notice.consequence_of = cause.or(current);
            }
        }
    }

    /// Time passes: completes delays, marks stale channels, expires shelves, evaluates timed
    /// expressions and ends floods. Returns the stale samples to record and the events.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) -> (Vec<Sample>, Vec<AlarmEvent>) {
        let mut samples = Vec::new();
        let mut out = Vec::new();
        for i in 0..self.chans.len() {
            let c = &self.chans[i];
            if c.bad.is_none() && now.saturating_duration_since(c.last_good) > c.max_age {
                let s = Sample {
                    channel: c.id.clone(),
                    ts: wall,
                    reading: Reading::Bad(BadReason::Stale),
                };
                self.apply(&s, now, &mut out);
                samples.push(s);
            }
        }
        self.settle(now, wall, &mut out);
        let s = self.settings.clone();
        for a in 0..self.alarms.len() {
            let al = &mut self.alarms[a];
            if al.delay.pending.is_some() && al.chan.is_some_and(|c| self.chans[c].value.is_some())
            {
                if let Some(cond) = al.delay.feed(al.raw, now) {
                    self.set_cond(a, cond, now, wall, &mut out);
                }
            }
            let al = &mut self.alarms[a];
            if al.life.shelf.is_some() {
                let ctx = Ctx {
                    latching: al.latching,
                    now: wall,
                    by: "system",
                    comment: "",
                };
                if let Ok(Some(t)) = al.life.step(&Input::Tick, &ctx) {
                    self.emit(a, t, wall, Some("system"), Some("shelf expired"), &mut out);
                }
            }
            let al = &mut self.alarms[a];
            if al.chattering {
                prune(&mut al.activations, now, s.chatter_window);
                if al.activations.len() < s.chatter_threshold {
                    al.chattering = false;
                }
            }
        }
        for k in 0..self.comps.len() {
            self.eval_comp(k, now, wall, &mut out);
        }
        prune(&mut self.recent, now, s.flood_window);
        if self.flood && self.recent.len() <= s.flood_threshold {
            self.flood = false;
            let msg = format!(
                "alarm flood over: {} activations within {}",
                self.recent.len(),
                humantime::format_duration(s.flood_window)
            );
            self.emit_system(
                "site:flood",
                Transition::FloodEnded,
                Priority::High,
                msg,
                wall,
                None,
                &mut out,
            );
        }
        order(&mut out);
        (samples, out)
    }

    /// Carries out a command from a person.
    pub fn command(
        &mut self,
        cmd: &Command,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Vec<AlarmEvent>, CommandError> {
        let mut out = Vec::new();
        match cmd {
            Command::Act {
                alarm,
                action,
                by,
                comment,
            } => {
                let &a = self
                    .by_id
                    .get(alarm.as_str())
                    .ok_or_else(|| CommandError::UnknownAlarm(alarm.clone()))?;
                let input = match action {
                    Action::Ack => Input::Ack,
                    Action::Reset => Input::Reset,
                    Action::Shelve { duration } => {
                        if duration.is_zero() || *duration > self.settings.max_shelve {
                            return Err(CommandError::Invalid(format!(
                                "a shelf lasts more than 0s and at most {}",
                                humantime::format_duration(self.settings.max_shelve)
                            )));
                        }
                        Input::Shelve {
                            until: wall + *duration,
                        }
                    }
                    Action::Unshelve => Input::Unshelve,
                    Action::OutOfService { reason } => {
                        if reason.trim().is_empty() {
                            return Err(CommandError::Invalid(
                                "taking an alarm out of service needs a reason".into(),
                            ));
                        }
                        Input::OutOfService {
                            reason: reason.clone(),
                        }
                    }
                    Action::Return => Input::Return,
                };
                let al = &mut self.alarms[a];
                let ctx = Ctx {
                    latching: al.latching,
                    now: wall,
                    by,
                    comment,
                };
                if let Some(t) = al.life.step(&input, &ctx)? {
                    if matches!(t, Transition::Acknowledged | Transition::Reset) {
                        // Answered: the next return or crossing is news again.
                        al.repeating = false;
                    }
                    let c = match action {
                        Action::OutOfService { reason } if comment.is_empty() => reason.as_str(),
                        _ => comment.as_str(),
                    };
                    self.emit(a, t, wall, Some(by), Some(c), &mut out);
                }
            }
            Command::SetMode { mode, by, reason } => {
                if reason.trim().is_empty() {
                    return Err(CommandError::Invalid(
                        "changing the site mode needs a reason".into(),
                    ));
                }
                let old = self.mode.mode;
                self.mode = ModeState {
                    mode: *mode,
                    by: by.clone(),
                    reason: reason.clone(),
                    since: Some(wall),
                };
                let msg = format!(
                    "site mode {} -> {} by {by}: {reason}",
                    old.as_str(),
                    mode.as_str()
                );
                self.emit_system(
                    "site:mode",
                    Transition::SiteMode,
                    Priority::Low,
                    msg,
                    wall,
                    Some(by),
                    &mut out,
                );
                if let Some(e) = out.last_mut() {
                    e.comment = Some(reason.clone());
                }
                for a in 0..self.alarms.len() {
                    let al = &mut self.alarms[a];
                    if al.suppress_in.is_empty() && !al.life.suppressed {
                        continue;
                    }
                    let on = al.suppress_in.contains(mode);
                    let ctx = Ctx {
                        latching: al.latching,
                        now: wall,
                        by,
                        comment: reason,
                    };
                    if let Ok(Some(t)) = al.life.step(&Input::Suppress(on), &ctx) {
                        self.emit(a, t, wall, Some(by), Some(reason), &mut out);
                    }
                }
                for k in 0..self.comps.len() {
                    self.eval_comp(k, now, wall, &mut out);
                }
            }
        }
        order(&mut out);
        Ok(out)
    }
}

fn raised_message(al: &AlarmRt) -> String {
    if let Some(m) = &al.message {
        return m.to_string();
    }
    match (&al.det, al.value) {
        (Det::Limit(l), Some(v)) => format!(
            "{} {} alarm: {v} {} {} limit {} {}",
            al.channel,
            al.condition,
            al.unit,
            if l.high { "at or above" } else { "at or below" },
            l.limit,
            al.unit
        ),
        (Det::Rate(_), Some(r)) => format!(
            "{} {} alarm: changing at {r:.3} {}",
            al.channel, al.condition, al.unit
        ),
        _ => format!("{} {} alarm", al.channel, al.condition),
    }
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) >= window)
    {
        q.pop_front();
    }
}
