//! Builds the engine's state from the compiled plan (`rules::plan`): one fault alarm per
//! channel, the plan's alarms in its order, then one communication alarm per link group. The
//! plan is checked and complete (every channel it names exists, every expression parsed), so
//! building cannot fail.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::{AlarmRt, ChannelRt, CompRt, Det, Engine, GroupRt, Settings};
use crate::config::{Resolved, ResolvedChannel};
use crate::model::{AlarmClass, ChannelId, Priority};
use crate::rules::limits::{Delay, Discrete, Limit, Rate, Stuck};
use crate::rules::plan::{AlarmDef, Detector};
use crate::rules::schedule::Flags;

/// The texts of the alarms being built: equal texts (a kind, an area, a unit, a condition) are
/// one shared allocation.
#[derive(Default)]
struct Texts {
    pool: crate::model::TextPool,
    no_inputs: Option<Arc<[ChannelId]>>,
}

impl Texts {
    fn get(&mut self, s: &str) -> Arc<str> {
        self.pool.get(s)
    }

    fn opt(&mut self, s: Option<&str>) -> Option<Arc<str>> {
        self.pool.opt(s)
    }

    fn inputs(&mut self, v: &[ChannelId]) -> Arc<[ChannelId]> {
        if v.is_empty() {
            return self
                .no_inputs
                .get_or_insert_with(|| Arc::from(Vec::new()))
                .clone();
        }
        Arc::from(v)
    }
}

/// An alarm in its initial state.
fn alarm(
    t: &mut Texts,
    id: &str,
    condition: &str,
    chan: Option<usize>,
    channel: ChannelId,
    det: Det,
) -> AlarmRt {
    let empty = t.get("");
    AlarmRt {
        // Ids are unique: not worth looking up among the shared texts.
        id: Arc::from(id),
        condition: t.get(condition),
        channel,
        chan,
        area: empty.clone(),
        class: AlarmClass::Process,
        kind: empty.clone(),
        priority: Priority::High,
        latching: false,
        suppress_in: Vec::new(),
        det,
        raw: false,
        delay: Delay::default(),
        life: Default::default(),
        limit: None,
        unit: empty.clone(),
        message: None,
        response: None,
        label: empty.clone(),
        area_name: empty,
        inputs: t.inputs(&[]),
        raised_at: None,
        value: None,
        activations: VecDeque::new(),
        chattering: false,
        repeating: false,
        since: None,
    }
}

/// The fault alarm of channel `i`.
fn fault_alarm(t: &mut Texts, i: usize, c: &ResolvedChannel) -> AlarmRt {
    let mut f = alarm(
        t,
        &format!("{}:fault", c.id),
        "fault",
        Some(i),
        c.id.clone(),
        Det::Fault,
    );
    f.class = AlarmClass::Fault;
    f.area = t.get(&c.area);
    f.kind = t.get(&c.kind);
    f.unit = t.get(&c.unit);
    f.label = t.get(&c.label);
    f
}

/// A plan alarm, its detector made.
fn plan_alarm(t: &mut Texts, d: &AlarmDef, chan: Option<usize>) -> AlarmRt {
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
        } => Det::Rate(Box::new(Rate::new(*rise, *fall, *deadband, *window))),
        Detector::Discrete { active_when } => Det::Discrete(Discrete {
            active_when: *active_when,
        }),
        Detector::Stuck { band, after } => Det::Stuck(Box::new(Stuck::new(*band, *after))),
        Detector::Composite(_) => Det::Composite,
    };
    let channel = d
        .channel
        .clone()
        .unwrap_or_else(|| ChannelId::new(format!("rule.{}", d.id)));
    let mut al = alarm(t, &d.id, &d.condition, chan, channel, det);
    al.area = t.get(&d.area);
    al.kind = t.get(&d.kind);
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
    al.unit = t.get(&d.unit);
    al.message = t.opt(d.message.as_deref());
    al.response = t.opt(d.response.as_deref());
    al.label = t.get(&d.label);
    al.inputs = t.inputs(&d.inputs);
    al
}

/// What people read about one alarm (no state): its id and texts, as the engine's view of it
/// would carry them ([`Engine::views`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmTexts {
    /// Alarm id.
    pub id: Arc<str>,
    /// What the alarm is about.
    pub info: crate::model::AlarmInfo,
}

/// The texts of every alarm [`Engine::new`] would build from `cfg`, in its order (one fault
/// alarm per channel, the plan's alarms, one communication alarm per link group), without
/// building an engine: tables kept apart from the engine (alert delivery's) and a reload's
/// diff need no more than this. Equal texts are one allocation.
pub fn alarm_texts(cfg: &Resolved) -> Vec<AlarmTexts> {
    let link_groups = crate::rules::groups::groups(cfg);
    let mut out =
        Vec::with_capacity(cfg.channels.len() + cfg.plan.alarms.len() + link_groups.len());
    let mut t = Texts::default();
    let texts = |t: &mut Texts,
                 id: Arc<str>,
                 label: &str,
                 area: &str,
                 unit: &str,
                 message: Option<&str>,
                 response: Option<&str>| AlarmTexts {
        id,
        info: crate::model::AlarmInfo {
            label: t.get(label),
            area: t.get(area),
            area_name: t.get(cfg.area_name(area)),
            unit: t.get(unit),
            message: t.opt(message),
            response: t.opt(response),
        },
    };
    for c in &cfg.channels {
        let id = Arc::from(format!("{}:fault", c.id));
        out.push(texts(&mut t, id, &c.label, &c.area, &c.unit, None, None));
    }
    for d in &cfg.plan.alarms {
        out.push(texts(
            &mut t,
            Arc::from(d.id.as_str()),
            &d.label,
            &d.area,
            &d.unit,
            d.message.as_deref(),
            d.response.as_deref(),
        ));
    }
    for g in &link_groups {
        let id = Arc::from(g.alarm_id());
        out.push(texts(&mut t, id, "", &g.area, "", None, None));
    }
    out
}

impl Engine {
    /// Builds the engine from a validated configuration; every channel starts "last good at
    /// `now`" so that a channel that never reports becomes stale after its maximum age.
    pub fn new(cfg: &Resolved, now: Instant) -> Self {
        let a = &cfg.alarms;
        let mut chans: Vec<ChannelRt> = Vec::with_capacity(cfg.channels.len());
        let link_groups = crate::rules::groups::groups(cfg);
        // Sized exactly: the engine keeps this table for its lifetime.
        let mut alarms: Vec<AlarmRt> =
            Vec::with_capacity(cfg.channels.len() + cfg.plan.alarms.len() + link_groups.len());
        let mut t = Texts::default();
        for (i, c) in cfg.channels.iter().enumerate() {
            alarms.push(fault_alarm(&mut t, i, c));
            chans.push(ChannelRt {
                id: c.id.clone(),
                max_age: c.max_age,
                floor: match (crate::model::gas_floor(&c.kind, c.range), c.range) {
                    (Some(floor), Some([min, _])) => Some((floor, min)),
                    _ => None,
                },
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
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        let calendar = cfg.plan.calendar.clone();
        let mut comps = Vec::new();
        for d in &cfg.plan.alarms {
            let ci = d.channel.as_ref().and_then(|c| index.get(c).copied());
            alarms.push(plan_alarm(&mut t, d, ci));
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
        for (g, def) in link_groups.into_iter().enumerate() {
            let mut al = alarm(
                &mut t,
                &def.alarm_id(),
                "comm",
                None,
                def.channel.clone(),
                Det::Group,
            );
            al.area = t.get(&def.area);
            al.kind = t.get(&def.kind);
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
            al.area_name = t.get(cfg.area_name(&al.area));
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
