//! A configuration reload: the engine built from the new plan takes over the runtime state of
//! the engine it replaces, so a reload never resets what people and detectors already know.
//!
//! What is kept, by id:
//! - every alarm that still exists keeps its lifecycle (active, acknowledged, latched, shelved,
//!   out of service), its filtered condition, raise time, last value, activation history and
//!   chattering mark; a detector with memory (rate of change, stuck) keeps it when its settings
//!   did not change. A changed limit is applied from the next reading on: a latched alarm stays
//!   latched until a person resets it, whatever the new limit says;
//! - every channel that still exists keeps its last value, its last good time (so staleness
//!   goes on counting) and its fault;
//! - link groups keep whether their connection is down; the site mode, the sequence number,
//!   the flood window and the gateway faults are kept.
//!
//! What starts fresh: new alarms and channels (a new channel is "last good at the reload", so
//! one that never reports goes stale after its `max_age`), composite expressions' `for`
//! timers, and the calendar flags (recomputed on the next evaluation).
//!
//! Every alarm of the old engine that the new plan no longer has gives a `removed` event
//! carrying the state it had, and the reload itself gives one `config_changed` event
//! (`site:config`) naming who asked and what changed.

use std::time::SystemTime;

use super::{Det, Engine};
use crate::model::{AlarmClass, AlarmEvent, AlarmState, Priority, Transition};

impl Engine {
    /// Takes over the runtime state of `old` (see the module documentation) and returns the
    /// events of the change: one `removed` per alarm that is gone, in id order, then the
    /// `config_changed` event with `by` and `summary`.
    pub fn take_over(
        &mut self,
        mut old: Engine,
        by: &str,
        summary: &str,
        wall: SystemTime,
    ) -> Vec<AlarmEvent> {
        // Channels.
        for c in &mut self.chans {
            let Some(&o) = old.index.get(&c.id) else {
                continue;
            };
            let oc = &old.chans[o];
            c.value = oc.value;
            c.last_good = oc.last_good;
            c.bad = oc.bad.clone();
            c.bad_comm = oc.bad_comm;
            c.bad_stale = oc.bad_stale;
            c.fault_comm = oc.fault_comm;
        }
        // Alarms.
        for al in &mut self.alarms {
            let Some(&o) = old.by_id.get(&al.id) else {
                continue;
            };
            let oa = &mut old.alarms[o];
            al.life = oa.life.clone();
            al.raw = oa.raw;
            al.delay.out = oa.delay.out;
            al.delay.pending = oa.delay.pending;
            al.raised_at = oa.raised_at;
            al.value = oa.value;
            al.activations = std::mem::take(&mut oa.activations);
            al.chattering = oa.chattering;
            al.repeating = oa.repeating;
            al.since = oa.since;
            let keep = match (&al.det, &oa.det) {
                (Det::Rate(n), Det::Rate(o)) => {
                    n.rise == o.rise
                        && n.fall == o.fall
                        && n.deadband == o.deadband
                        && n.window == o.window
                }
                (Det::Stuck(n), Det::Stuck(o)) => n.band == o.band && n.after == o.after,
                _ => false,
            };
            if keep {
                std::mem::swap(&mut al.det, &mut oa.det);
            }
        }
        // Link groups.
        for g in &mut self.groups {
            let id = &self.alarms[g.alarm].id;
            if let Some(og) = old.groups.iter().find(|og| &old.alarms[og.alarm].id == id) {
                g.link_down_since = og.link_down_since;
                g.link_up_at = og.link_up_at;
            }
        }
        self.mode = old.mode.clone();
        self.seq = self.seq.max(old.seq);
        self.recent = std::mem::take(&mut old.recent);
        self.flood = old.flood;
        self.sources_down = std::mem::take(&mut old.sources_down);
        self.gateway = std::mem::take(&mut old.gateway);
        self.flags_at = None;
        // Settled again on the next step.
        self.quiet = false;
        // The new configuration may suppress different alarms in the current mode.
        let mode = self.mode.mode;
        for al in &mut self.alarms {
            al.life.suppressed = al.suppress_in.contains(&mode);
        }

        let mut out = Vec::new();
        let mut gone: Vec<usize> = old
            .alarms
            .iter()
            .enumerate()
            .filter(|(_, a)| !self.by_id.contains_key(&a.id))
            .map(|(i, _)| i)
            .collect();
        gone.sort_by(|a, b| old.alarms[*a].id.cmp(&old.alarms[*b].id));
        for i in gone {
            let a = &old.alarms[i];
            self.seq += 1;
            let state = a.life.state();
            out.push(AlarmEvent {
                seq: self.seq,
                alarm: a.id.to_string(),
                channel: a.channel.clone(),
                condition: a.condition.to_string(),
                priority: a.priority,
                transition: Transition::Removed,
                value: a.value,
                limit: a.limit,
                message: format!(
                    "{} removed by a configuration reload ({}) / 报警 {} 已因配置重新加载移除（{}）",
                    a.id,
                    state.as_str(),
                    a.id,
                    state.as_str()
                ),
                ts: wall,
                class: a.class,
                kind: a.kind.to_string(),
                state,
                by: Some(by.to_owned()),
                comment: None,
                raised_at: if state == AlarmState::Normal { None } else { a.raised_at },
                notice: Default::default(),
            });
        }
        self.seq += 1;
        out.push(AlarmEvent {
            seq: self.seq,
            alarm: "site:config".into(),
            channel: crate::model::ChannelId::new("site"),
            condition: "config".into(),
            priority: Priority::Low,
            transition: Transition::ConfigChanged,
            value: None,
            limit: None,
            message: summary.to_owned(),
            ts: wall,
            class: AlarmClass::System,
            kind: "system".into(),
            state: AlarmState::Normal,
            by: Some(by.to_owned()),
            comment: None,
            raised_at: None,
            notice: Default::default(),
        });
        out
    }
}
