//! From the rule engine to the output queues: encodes samples and alarm events into line
//! protocol and hands each output what it asked for.
//!
//! - An output without `reduction` or `downsample` gets every reading (the `reading`
//!   measurement) and every alarm event.
//! - `reduction`: readings pass through the output's [`Reducer`] (deadband + heartbeat; Bad and
//!   first-good-after-Bad always pass). Suppressed readings are counted
//!   (`hazgate_points_suppressed_total{output}`).
//! - `downsample`: readings feed the output's [`Downsampler`]; the output gets one aggregate line
//!   per channel and window (measurement `reading_1m` etc.) instead of raw readings.
//! - Alarm events go to every output, unreduced, with the time their activation was raised
//!   (`raised_at`) and, on the event that ends it, its `duration`: the fanout remembers the
//!   raise time of each open alarm (at most one entry per alarm, removed when it closes; empty
//!   after a restart, so the first events of an alarm raised before it carry neither).
//!
//! The engine calls [`Fanout::publish`] once per iteration (samples and events of that step, or
//! nothing on a timer tick: the call also closes downsampling windows whose time is up) and
//! [`Fanout::close`] when it stops (open windows are flushed, then the queues closed);
//! [`Fanout::publish_held`] when the samples came with a receipt (see `crate::receipt`). A sample
//! is encoded once, whatever the number of outputs. Nothing here blocks: output queues drop their
//! oldest lines when full.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::line::{encode_aggregate, encode_event_with, encode_sample_fields, open_flags};
use super::reduce::{Aggregate, Downsampler, Reducer};
use super::writer::OutputQueue;
use crate::config::{Resolved, ResolvedChannel};
use crate::model::{AlarmEvent, ChannelId, Sample};
use crate::receipt::Receipt;

#[derive(Debug)]
enum Mode {
    Raw,
    Reduce(Reducer),
    Downsample {
        measurement: String,
        ds: Downsampler,
    },
}

#[derive(Debug)]
struct Sink {
    queue: Arc<OutputQueue>,
    mode: Mode,
    /// Lines gathered during one publish.
    buf: Vec<String>,
}

/// Raise time of every open alarm, by alarm id (one entry per open alarm).
#[derive(Debug, Default)]
struct Activations(HashMap<String, SystemTime>);

impl Activations {
    /// Notes `e` and returns when the activation it belongs to was raised, when known: a
    /// raise (or fault, or flood) that leaves the alarm open starts one; an event after which
    /// the alarm is no longer open ends it.
    fn on_event(&mut self, e: &AlarmEvent) -> Option<SystemTime> {
        use crate::model::Transition;
        let (active, _) = open_flags(e);
        let starts = matches!(
            e.transition,
            Transition::Raised | Transition::Fault | Transition::Flood
        );
        // A fault raised while hidden (a consequence of a device's communication alarm, shelved,
        // suppressed by design) is still a fault whose duration counts.
        let hidden = matches!(
            e.transition,
            Transition::Suppressed | Transition::Shelved | Transition::OutOfService
        ) || e.state == crate::model::AlarmState::Suppressed;
        if starts && (active || hidden) {
            self.0.insert(e.alarm.clone(), e.ts);
        }
        if active
            || (hidden
                && !matches!(
                    e.transition,
                    Transition::Cleared
                        | Transition::FaultCleared
                        | Transition::Reset
                        | Transition::Removed
                ))
        {
            self.0.get(&e.alarm).copied()
        } else {
            self.0.remove(&e.alarm)
        }
    }
}

/// A channel the outputs write, with the start of its `reading` lines encoded once: only what
/// the lines need (the whole channel only when an output downsamples, for its aggregate lines).
#[derive(Debug)]
struct Known {
    key: Box<str>,
    area: Box<str>,
    ch: Option<Box<ResolvedChannel>>,
}

fn known(site: &str, channels: &[ResolvedChannel], downsampled: bool) -> HashMap<ChannelId, Known> {
    channels
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                Known {
                    key: super::line::sample_key(site, c).into_boxed_str(),
                    area: c.area.as_str().into(),
                    ch: downsampled.then(|| Box::new(c.clone())),
                },
            )
        })
        .collect()
}

/// The engine's handle on every time-series output; see the module docs.
#[derive(Debug)]
pub struct Fanout {
    site: String,
    channels: HashMap<ChannelId, Known>,
    sinks: Vec<Sink>,
    aggs: Vec<Aggregate>,
    /// Raise time of every open alarm.
    raised: Activations,
}

impl Fanout {
    /// One sink per queue; each output's settings are found in `cfg.outputs` by id (an unknown
    /// id gets every reading).
    pub fn new(cfg: &Resolved, queues: Vec<Arc<OutputQueue>>) -> Self {
        let sinks: Vec<Sink> = queues
            .into_iter()
            .map(|queue| {
                let out = cfg.outputs.iter().find(|o| o.id() == queue.id());
                let mode = match out.map(crate::config::Output::batching) {
                    Some(b) => match (&b.reduction, &b.downsample) {
                        (_, Some(d)) => Mode::Downsample {
                            measurement: d.measurement(),
                            ds: Downsampler::new(d),
                        },
                        (Some(r), None) => Mode::Reduce(Reducer::new(r, &cfg.channels)),
                        (None, None) => Mode::Raw,
                    },
                    None => Mode::Raw,
                };
                Sink {
                    queue,
                    mode,
                    buf: Vec::new(),
                }
            })
            .collect();
        let downsampled = sinks
            .iter()
            .any(|s| matches!(s.mode, Mode::Downsample { .. }));
        Self {
            site: cfg.site.id.clone(),
            channels: known(&cfg.site.id, &cfg.channels, downsampled),
            sinks,
            aggs: Vec::new(),
            raised: Activations::default(),
        }
    }

    /// After a configuration reload: the new configuration's channels (metadata, tags) and, for
    /// outputs that report by exception, each channel's deadband from the new ranges; the last
    /// written point of every channel that still exists is kept (no extra point on reload).
    /// The outputs themselves are the same (changing them needs a restart).
    pub fn reconfigure(&mut self, cfg: &Resolved) {
        let downsampled = self
            .sinks
            .iter()
            .any(|s| matches!(s.mode, Mode::Downsample { .. }));
        self.channels = known(&self.site, &cfg.channels, downsampled);
        for sink in &mut self.sinks {
            let Mode::Reduce(old) = &mut sink.mode else {
                continue;
            };
            let Some(r) = cfg
                .outputs
                .iter()
                .find(|o| o.id() == sink.queue.id())
                .and_then(|o| o.batching().reduction.as_ref())
            else {
                continue;
            };
            let mut new = Reducer::new(r, &cfg.channels);
            new.carry_from(std::mem::replace(old, Reducer::new(r, &[])));
            *old = new;
        }
    }

    /// Hands one engine step to every output, with the wall clock as "now".
    pub fn publish(&mut self, samples: &[Sample], events: &[AlarmEvent]) {
        self.publish_at(samples, events, SystemTime::now());
    }

    /// [`Fanout::publish`] for samples that came with a receipt: every raw or reduced output
    /// that gets lines from this step holds a clone on the step's last line until the lines are
    /// durable. Outputs that get nothing from the step (everything reduced away) and downsampled
    /// outputs (which keep aggregates, not readings) do not hold it: for them the readings are
    /// done once processed.
    pub fn publish_held(
        &mut self,
        samples: &[Sample],
        events: &[AlarmEvent],
        receipt: Option<&Receipt>,
    ) {
        self.publish_inner(samples, events, SystemTime::now(), receipt);
    }

    /// [`Fanout::publish`] with an explicit "now" (closes downsampling windows that are due).
    pub fn publish_at(&mut self, samples: &[Sample], events: &[AlarmEvent], now: SystemTime) {
        self.publish_inner(samples, events, now, None);
    }

    fn publish_inner(
        &mut self,
        samples: &[Sample],
        events: &[AlarmEvent],
        now: SystemTime,
        receipt: Option<&Receipt>,
    ) {
        let mut line = String::with_capacity(200);
        for s in samples {
            let Some(ch) = self.channels.get(&s.channel) else {
                continue;
            };
            line.clear();
            for sink in &mut self.sinks {
                match &mut sink.mode {
                    Mode::Raw => {}
                    Mode::Reduce(r) => {
                        if !r.keep(s) {
                            sink.queue.count_suppressed(1);
                            continue;
                        }
                    }
                    Mode::Downsample { measurement, ds } => {
                        ds.add(s, &mut self.aggs);
                        for a in self.aggs.drain(..) {
                            if let Some(ach) =
                                self.channels.get(&a.channel).and_then(|k| k.ch.as_deref())
                            {
                                let mut l = String::with_capacity(220);
                                encode_aggregate(&self.site, measurement, ach, &a, &mut l);
                                sink.buf.push(l);
                            }
                        }
                        continue;
                    }
                }
                if line.is_empty() {
                    line.push_str(&ch.key);
                    encode_sample_fields(s, &mut line);
                }
                sink.buf.push(line.clone());
            }
        }
        for e in events {
            let area = self
                .channels
                .get(&e.channel)
                .map(|k| &*k.area)
                .unwrap_or_default();
            let raised = self.raised.on_event(e);
            let mut l = String::with_capacity(260);
            encode_event_with(&self.site, area, e, raised, &mut l);
            for sink in &mut self.sinks {
                sink.buf.push(l.clone());
            }
        }
        self.flush_windows(|ds, out| ds.tick(now, out));
        for sink in &mut self.sinks {
            if sink.buf.is_empty() {
                continue;
            }
            let lines = std::mem::take(&mut sink.buf);
            match receipt {
                Some(r) if !matches!(sink.mode, Mode::Downsample { .. }) => {
                    sink.queue.push_held(lines, r.clone());
                }
                _ => sink.queue.push(lines),
            }
        }
    }

    fn flush_windows(&mut self, mut f: impl FnMut(&mut Downsampler, &mut Vec<Aggregate>)) {
        for sink in &mut self.sinks {
            if let Mode::Downsample { measurement, ds } = &mut sink.mode {
                f(ds, &mut self.aggs);
                for a in self.aggs.drain(..) {
                    if let Some(ch) = self.channels.get(&a.channel).and_then(|k| k.ch.as_deref()) {
                        let mut l = String::with_capacity(220);
                        encode_aggregate(&self.site, measurement, ch, &a, &mut l);
                        sink.buf.push(l);
                    }
                }
            }
        }
    }

    /// No more data: writes the open downsampling windows, then closes every queue.
    pub fn close(&mut self) {
        self.flush_windows(Downsampler::flush);
        for sink in &mut self.sinks {
            if !sink.buf.is_empty() {
                sink.queue.push(std::mem::take(&mut sink.buf));
            }
            sink.queue.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{AlarmState, Priority, Transition};
    use crate::tsdb::line::encode_event_with;

    fn ev(t: Transition, state: AlarmState, secs: u64) -> AlarmEvent {
        AlarmEvent {
            seq: secs,
            alarm: "a.gd1.lel:fault".into(),
            channel: ChannelId::new("a.gd1.lel"),
            condition: "fault".into(),
            priority: Priority::High,
            transition: t,
            value: None,
            limit: None,
            message: "m".into(),
            ts: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            class: crate::model::AlarmClass::Fault,
            kind: "combustible_gas".into(),
            state,
            by: (t == Transition::Acknowledged).then(|| "li.wei".into()),
            comment: None,
            raised_at: None,
            notice: Default::default(),
        }
    }

    #[test]
    fn events_carry_raise_time_and_the_activation_duration() {
        let mut acts = Activations::default();
        let mut lines = Vec::new();
        for e in [
            ev(Transition::Fault, AlarmState::ActiveUnacknowledged, 100),
            ev(
                Transition::Acknowledged,
                AlarmState::ActiveAcknowledged,
                130,
            ),
            ev(Transition::FaultCleared, AlarmState::Normal, 160),
            // After the close, nothing is remembered.
            ev(Transition::Acknowledged, AlarmState::Normal, 170),
        ] {
            let raised = acts.on_event(&e);
            let mut l = String::new();
            encode_event_with("s", "a", &e, raised, &mut l);
            lines.push(l);
        }
        assert!(
            lines[0].contains(
                ",state=\"active_unacknowledged\",active=1i,unacked=1i,raised_at=100000i "
            ),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(",active=1i,unacked=0i,by=\"li.wei\",raised_at=100000i "),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains(",active=0i,unacked=0i,raised_at=100000i,duration=60 "),
            "{}",
            lines[2]
        );
        assert!(!lines[3].contains("raised_at"), "{}", lines[3]);
        assert!(acts.0.is_empty());
    }

    #[test]
    fn a_fault_hidden_as_a_consequence_keeps_its_duration() {
        // A channel fault that becomes a consequence of its device's communication alarm is
        // still a fault for as long as it lasts (the overview's fault time per channel).
        let mut acts = Activations::default();
        let mut durations = Vec::new();
        for e in [
            ev(Transition::Fault, AlarmState::ActiveUnacknowledged, 100),
            ev(Transition::Suppressed, AlarmState::Suppressed, 101),
            ev(Transition::FaultCleared, AlarmState::Suppressed, 190),
        ] {
            let raised = acts.on_event(&e);
            let mut l = String::new();
            encode_event_with("s", "a", &e, raised, &mut l);
            durations.push(l.contains("duration=90 "));
        }
        assert_eq!(durations, [false, false, true]);
        assert!(acts.0.is_empty());
    }
}
