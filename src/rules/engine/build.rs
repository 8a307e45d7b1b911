//! Builds the engine's state from the compiled plan (`rules::plan`): one fault alarm per
//! channel, the plan's alarms in its order, then one communication alarm per link group. The
//! plan is checked and complete (every channel it names exists, every expression parsed), so
//! building cannot fail.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::{AlarmRt, ChannelRt, CompRt, Det, Engine, GroupRt, Settings};
use crate::config::{Resolved, ResolvedChannel};
use crate::model::{AlarmClass, ChannelId, Priority};
use crate::rules::limits::{Delay, Discrete, Limit, Rate, Stuck};
use crate::rules::plan::{AlarmDef, Detector};
use crate::rules::schedule::Flags;

/// An alarm in its initial state.
fn alarm(
    id: String,
    condition: String,
    chan: Option<usize>,
    channel: ChannelId,
    det: Det,
) -> AlarmRt {
    AlarmRt {
        id,
        condition,
        channel,
        chan,
        area: String::new(),
        class: AlarmClass::Process,
        kind: String::new(),
        priority: Priority::High,
        latching: false,
        suppress_in: Vec::new(),
        det,
        raw: false,
        delay: Delay::default(),
        life: Default::default(),
        limit: None,
        unit: String::new(),
        message: None,
        response: None,
        label: String::new(),
        area_name: String::new(),
        inputs: Vec::new(),
        raised_at: None,
        value: None,
        activations: VecDeque::new(),
        chattering: false,
        repeating: false,
        since: None,
    }
}

/// The fault alarm of channel `i`.
fn fault_alarm(i: usize, c: &ResolvedChannel) -> AlarmRt {
    let mut f = alarm(
        format!("{}:fault", c.id),
        "fault".into(),
        Some(i),
        c.id.clone(),
        Det::Fault,
    );
    f.class = AlarmClass::Fault;
    f.area = c.area.clone();
    f.kind = c.kind.clone();
    f.unit = c.unit.clone();
    f.label = c.label.clone();
    f
}

/// A plan alarm, its detector made.
fn plan_alarm(d: &AlarmDef, chan: Option<usize>) -> AlarmRt {
    let det = match &d.detector {
        Detector::Limit {
            limit,
            high,
            deadband,
        } => Det::Limit(Limit {
            limit: *limit,
            high: *high,
            deadband: *deadband,
        }),
        Detector::Rate {
            rise,
            fall,
            deadband,
            window,
        } => Det::Rate(Rate::new(*rise, *fall, *deadband, *window)),
        Detector::Discrete { active_when } => Det::Discrete(Discrete {
            active_when: *active_when,
        }),
        Detector::Stuck { band, after } => Det::Stuck(Stuck::new(*band, *after)),
        Detector::Composite(_) => Det::Composite,
    };
    let channel = d
        .channel
        .clone()
        .unwrap_or_else(|| ChannelId::new(format!("rule.{}", d.id)));
    let mut al = alarm(d.id.clone(), d.condition.clone(), chan, channel, det);
    al.area = d.area.clone();
    al.kind = d.kind.clone();
    al.class = if d.fault {
        AlarmClass::Fault
    } else {
        AlarmClass::Process
    };
    al.priority = d.priority;
    al.latching = d.latching;
    al.suppress_in = d.suppress_in.clone();
    al.delay = Delay::new(d.on_delay, d.off_delay, false);
    al.limit = d.limit;
    al.unit = d.unit.clone();
    al.message = d.message.clone();
    al.response = d.response.clone();
    al.label = d.label.clone();
    al.inputs = d.inputs.clone();
    al
}

impl Engine {
    /// Builds the engine from a validated configuration; every channel starts "last good at
    /// `now`" so that a channel that never reports becomes stale after its maximum age.
    pub fn new(cfg: &Resolved, now: Instant) -> Self {
        let a = &cfg.alarms;
        let mut chans: Vec<ChannelRt> = Vec::with_capacity(cfg.channels.len());
        let mut alarms: Vec<AlarmRt> = Vec::new();
        for (i, c) in cfg.channels.iter().enumerate() {
            alarms.push(fault_alarm(i, c));
            chans.push(ChannelRt {
                meta: c.clone(),
                alarms: Vec::new(),
                fault: alarms.len() - 1,
                deps: Vec::new(),
                value: None,
                last_good: now,
                bad: None,
                bad_comm: false,
                bad_stale: false,
                pending: false,
                fresh: false,
                fault_comm: false,
                groups: Vec::new(),
            });
        }
        let index: HashMap<ChannelId, usize> = chans
            .iter()
            .enumerate()
            .map(|(i, c)| (c.meta.id.clone(), i))
            .collect();
        let calendar = cfg.plan.calendar.clone();
        let mut comps = Vec::new();
        for d in &cfg.plan.alarms {
            let ci = d.channel.as_ref().and_then(|c| index.get(c).copied());
            alarms.push(plan_alarm(d, ci));
            let k = alarms.len() - 1;
            if let Some(ci) = ci {
                chans[ci].alarms.push(k);
            }
            if let Detector::Composite(expr) = &d.detector {
                let mut expr = expr.clone();
                let ch_of = |c: &str| index.get(&ChannelId::new(c)).copied().unwrap_or(0);
                let win_of = |w: &str| calendar.window_index(w).unwrap_or(usize::MAX);
                expr.bind(&ch_of, &win_of);
                for c in &d.inputs {
                    if let Some(&ci) = index.get(c) {
                        chans[ci].deps.push(comps.len());
                    }
                }
                let timers = expr.timers();
                comps.push(CompRt {
                    alarm: k,
                    expr,
                    timers,
                });
            }
        }
        let mut groups = Vec::new();
        for (g, def) in crate::rules::groups::groups(cfg).into_iter().enumerate() {
            let mut al = alarm(
                def.alarm_id(),
                "comm".into(),
                None,
                def.channel.clone(),
                Det::Group,
            );
            al.area = def.area.clone();
            al.kind = def.kind.clone();
            al.class = AlarmClass::Fault;
            alarms.push(al);
            for &m in &def.members {
                chans[m].groups.push(g);
            }
            groups.push(GroupRt {
                def,
                alarm: alarms.len() - 1,
                link_down_since: None,
                link_up_at: None,
            });
        }
        for al in &mut alarms {
            al.area_name = cfg.area_name(&al.area).to_owned();
        }
        let by_id = alarms
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        Self {
            chans,
            index,
            quiet: false,
            alarms,
            by_id,
            comps,
            calendar,
            flags: Flags::default(),
            flags_at: None,
            mode: Default::default(),
            seq: 0,
            settings: Settings {
                max_shelve: a.max_shelve,
                flood_threshold: a.flood_threshold,
                flood_window: a.flood_window,
                chatter_threshold: a.chatter_threshold,
                chatter_window: a.chatter_window,
            },
            recent: VecDeque::new(),
            flood: false,
            groups,
            sources_down: Default::default(),
            gateway: std::collections::BTreeMap::new(),
        }
    }
}
