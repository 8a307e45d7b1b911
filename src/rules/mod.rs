//! The rule engine: the only writer of alarm state and of the channel snapshot.
//!
//! This first engine evaluates limit rules (LL/L/H/HH with deadband and on-delay) and fault
//! alarms (Bad quality or stale data, a class of their own). Invariants:
//! - a Bad or stale reading never clears a limit alarm and never counts as normal;
//! - a fault on one channel never delays another channel (evaluation is per sample, no I/O);
//! - alarms never wait on InfluxDB: outputs take lines without blocking; alarm events go to the
//!   alert router through a bounded channel on which the engine waits (alarms are never dropped).
//!
//! [`Engine`] is pure (time is passed in); [`run`] is the task around it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{LimitRule, Resolved, ResolvedChannel};
use crate::model::{AlarmEvent, BadReason, ChannelId, Priority, Reading, Sample, Transition};
use crate::state::SharedState;
use crate::telemetry::{Metrics, labels};
use crate::tsdb::line::{encode_event, encode_sample};
use crate::tsdb::writer::OutputQueue;

#[derive(Debug, Clone)]
struct Limit {
    condition: &'static str,
    limit: f64,
    high: bool,
    deadband: f64,
    on_delay: Duration,
    priority: Priority,
    active: bool,
    pending_since: Option<Instant>,
}

impl Limit {
    fn violated(&self, v: f64) -> bool {
        if self.high { v >= self.limit } else { v <= self.limit }
    }
    fn cleared(&self, v: f64) -> bool {
        if self.high {
            v < self.limit - self.deadband
        } else {
            v > self.limit + self.deadband
        }
    }
}

#[derive(Debug)]
struct ChannelRt {
    meta: ResolvedChannel,
    limits: Vec<Limit>,
    last_value: Option<f64>,
    last_good: Instant,
    fault: Option<String>,
}

/// Alarm state for every channel.
#[derive(Debug)]
pub struct Engine {
    chans: Vec<ChannelRt>,
    index: HashMap<ChannelId, usize>,
    seq: u64,
}

impl Engine {
    /// Builds the engine; every channel starts "last good at `now`" so that a channel that never
    /// reports becomes stale after its maximum age.
    pub fn new(cfg: &Resolved, now: Instant) -> Self {
        let mut chans: Vec<ChannelRt> = cfg
            .channels
            .iter()
            .map(|c| ChannelRt {
                meta: c.clone(),
                limits: Vec::new(),
                last_value: None,
                last_good: now,
                fault: None,
            })
            .collect();
        let index: HashMap<ChannelId, usize> = chans
            .iter()
            .enumerate()
            .map(|(i, c)| (c.meta.id.clone(), i))
            .collect();
        for r in &cfg.rules {
            if let Some(&i) = index.get(&ChannelId::new(&r.channel)) {
                chans[i].limits.extend(compile(r));
            }
        }
        Self { chans, index, seq: 0 }
    }

    /// Channel metadata.
    pub fn channel(&self, id: &ChannelId) -> Option<&ResolvedChannel> {
        self.index.get(id).map(|&i| &self.chans[i].meta)
    }

    /// Active conditions of a channel (for the snapshot).
    pub fn active(&self, id: &ChannelId) -> Vec<String> {
        let Some(&i) = self.index.get(id) else {
            return Vec::new();
        };
        let c = &self.chans[i];
        let mut v: Vec<String> = c
            .limits
            .iter()
            .filter(|l| l.active)
            .map(|l| l.condition.to_owned())
            .collect();
        if c.fault.is_some() {
            v.push("fault".into());
        }
        v
    }

    fn event(
        &mut self,
        i: usize,
        condition: &str,
        priority: Priority,
        transition: Transition,
        value: Option<f64>,
        limit: Option<f64>,
        message: String,
        ts: SystemTime,
    ) -> AlarmEvent {
        self.seq += 1;
        let ch = &self.chans[i].meta;
        AlarmEvent {
            seq: self.seq,
            alarm: format!("{}:{condition}", ch.id),
            channel: ch.id.clone(),
            condition: condition.to_owned(),
            priority,
            transition,
            value,
            limit,
            message,
            ts,
        }
    }

    /// Steps on one sample.
    pub fn on_sample(&mut self, s: &Sample, now: Instant) -> Vec<AlarmEvent> {
        let Some(&i) = self.index.get(&s.channel) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match &s.reading {
            Reading::Bad(reason) => {
                let text = reason.to_string();
                if self.chans[i].fault.is_none() {
                    self.chans[i].fault = Some(text.clone());
                    let msg = format!("{} fault: {text}", self.chans[i].meta.id);
                    out.push(self.event(i, "fault", Priority::High, Transition::Fault, None, None, msg, s.ts));
                } else {
                    self.chans[i].fault = Some(text);
                }
                // Bad readings never clear or raise limit alarms; pending on-delays restart.
                for l in &mut self.chans[i].limits {
                    l.pending_since = None;
                }
            }
            Reading::Good(v) => {
                let v = *v;
                let c = &mut self.chans[i];
                c.last_good = now;
                c.last_value = Some(v);
                if c.fault.take().is_some() {
                    let msg = format!("{} reading again", c.meta.id);
                    out.push(self.event(i, "fault", Priority::High, Transition::FaultCleared, Some(v), None, msg, s.ts));
                }
                out.extend(self.eval_limits(i, v, now, s.ts));
            }
        }
        out
    }

    fn eval_limits(&mut self, i: usize, v: f64, now: Instant, ts: SystemTime) -> Vec<AlarmEvent> {
        let mut fired = Vec::new();
        for (k, l) in self.chans[i].limits.iter_mut().enumerate() {
            if !l.active {
                if l.violated(v) {
                    let since = *l.pending_since.get_or_insert(now);
                    if now.duration_since(since) >= l.on_delay {
                        l.active = true;
                        l.pending_since = None;
                        fired.push((k, Transition::Raised));
                    }
                } else {
                    l.pending_since = None;
                }
            } else if l.cleared(v) {
                l.active = false;
                fired.push((k, Transition::Cleared));
            }
        }
        let unit = self.chans[i].meta.unit.clone();
        let id = self.chans[i].meta.id.clone();
        fired
            .into_iter()
            .map(|(k, t)| {
                let l = self.chans[i].limits[k].clone();
                let msg = match t {
                    Transition::Raised => format!(
                        "{id} {} alarm: {v} {unit} {} limit {} {unit}",
                        l.condition,
                        if l.high { "at or above" } else { "at or below" },
                        l.limit
                    ),
                    _ => format!("{id} {} alarm cleared: {v} {unit}", l.condition),
                };
                self.event(i, l.condition, l.priority, t, Some(v), Some(l.limit), msg, ts)
            })
            .collect()
    }

    /// Time passes: completes on-delays and marks stale channels. Returns stale samples to record
    /// and the events raised.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) -> (Vec<Sample>, Vec<AlarmEvent>) {
        let mut samples = Vec::new();
        let mut events = Vec::new();
        for i in 0..self.chans.len() {
            let c = &self.chans[i];
            let stale = now.duration_since(c.last_good) > c.meta.max_age;
            if stale && c.fault.is_none() {
                let s = Sample {
                    channel: c.meta.id.clone(),
                    ts: wall,
                    reading: Reading::Bad(BadReason::Stale),
                };
                events.extend(self.on_sample(&s, now));
                samples.push(s);
            } else if c.fault.is_none() {
                if let Some(v) = c.last_value {
                    if c.limits.iter().any(|l| l.pending_since.is_some()) {
                        events.extend(self.eval_limits(i, v, now, wall));
                    }
                }
            }
        }
        (samples, events)
    }

    /// Channels currently in fault.
    pub fn faults(&self) -> usize {
        self.chans.iter().filter(|c| c.fault.is_some()).count()
    }
}

fn compile(r: &LimitRule) -> Vec<Limit> {
    let mk = |condition, limit: f64, high, priority| Limit {
        condition,
        limit,
        high,
        deadband: r.deadband,
        on_delay: r.on_delay,
        priority,
        active: false,
        pending_since: None,
    };
    let mut v = Vec::new();
    if let Some(x) = r.hh {
        v.push(mk("HH", x, true, Priority::Critical));
    }
    if let Some(x) = r.h {
        v.push(mk("H", x, true, Priority::High));
    }
    if let Some(x) = r.l {
        v.push(mk("L", x, false, Priority::High));
    }
    if let Some(x) = r.ll {
        v.push(mk("LL", x, false, Priority::Critical));
    }
    v
}

/// Where the engine sends its results.
#[derive(Debug)]
pub struct Sinks {
    /// Time-series outputs (never block).
    pub outputs: Vec<Arc<OutputQueue>>,
    /// Alert router (the engine waits when it is full: alarms are never dropped).
    pub alerts: mpsc::Sender<AlarmEvent>,
}

/// Runs the engine until the sample channel closes, then closes the outputs.
pub async fn run(
    mut engine: Engine,
    mut rx: mpsc::Receiver<Vec<Sample>>,
    sinks: Sinks,
    state: Arc<SharedState>,
    metrics: Arc<Metrics>,
) {
    let site = state.site.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (samples, events) = tokio::select! {
            batch = rx.recv() => match batch {
                Some(b) => {
                    let now = tokio::time::Instant::now().into_std();
                    let mut ev = Vec::new();
                    for s in &b {
                        ev.extend(engine.on_sample(s, now));
                    }
                    (b, ev)
                }
                None => break,
            },
            _ = tick.tick() => engine.tick(tokio::time::Instant::now().into_std(), SystemTime::now()),
        };
        let mut lines = Vec::with_capacity(samples.len() + events.len());
        for s in &samples {
            state.record(s, engine.active(&s.channel));
            if let Some(ch) = engine.channel(&s.channel) {
                let mut l = String::with_capacity(200);
                encode_sample(&site, ch, s, &mut l);
                lines.push(l);
            }
        }
        for e in &events {
            state.record_alarms(&e.channel, engine.active(&e.channel));
            let area = engine.channel(&e.channel).map(|c| c.area.clone()).unwrap_or_default();
            let mut l = String::with_capacity(200);
            encode_event(&site, &area, e, &mut l);
            lines.push(l);
            metrics
                .alarm_events
                .get_or_create(&labels([("transition", e.transition.as_str())]))
                .inc();
            match e.transition {
                Transition::Raised => warn!(alarm = %e.alarm, seq = e.seq, "{}", e.message),
                Transition::Fault => warn!(alarm = %e.alarm, seq = e.seq, "{}", e.message),
                _ => info!(alarm = %e.alarm, seq = e.seq, "{}", e.message),
            }
        }
        metrics.channels_bad.set(i64::try_from(engine.faults()).unwrap_or(i64::MAX));
        if !lines.is_empty() {
            match sinks.outputs.as_slice() {
                [] => {}
                [only] => only.push(lines),
                many => {
                    for o in many {
                        o.push(lines.iter().cloned());
                    }
                }
            }
        }
        for e in events {
            if sinks.alerts.send(e).await.is_err() {
                error!("alert router is gone: alarm events cannot be delivered");
            }
        }
    }
    for o in &sinks.outputs {
        o.close();
    }
    info!("rule engine stopped: all sources drained");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Api, Gateway, Site};
    use crate::model::DeviceId;

    fn cfg(rule: LimitRule) -> Resolved {
        Resolved {
            site: Site { id: "s".into(), name: String::new() },
            gateway: Gateway::default(),
            api: Api::default(),
            channels: vec![ResolvedChannel {
                id: ChannelId::new("a.gd1.lel"),
                device: DeviceId::new("gd1"),
                area: "a".into(),
                kind: "combustible_gas".into(),
                unit: "%LEL".into(),
                label: String::new(),
                range: Some([0.0, 100.0]),
                max_age: Duration::from_secs(10),
            }],
            sources: vec![],
            rules: vec![rule],
            receivers: vec![],
            outputs: vec![],
            mqtt_sources: vec![],
            mqtt_broker: None,
        }
    }

    fn rule() -> LimitRule {
        LimitRule {
            channel: "a.gd1.lel".into(),
            ll: None,
            l: None,
            h: Some(25.0),
            hh: Some(50.0),
            deadband: 2.0,
            on_delay: Duration::ZERO,
        }
    }

    fn good(v: f64) -> Sample {
        Sample { channel: ChannelId::new("a.gd1.lel"), ts: SystemTime::UNIX_EPOCH, reading: Reading::Good(v) }
    }

    fn bad() -> Sample {
        Sample {
            channel: ChannelId::new("a.gd1.lel"),
            ts: SystemTime::UNIX_EPOCH,
            reading: Reading::Bad(BadReason::OutOfRange { raw: 1000.0 }),
        }
    }

    fn summary(ev: &[AlarmEvent]) -> Vec<(String, Transition)> {
        ev.iter().map(|e| (e.condition.clone(), e.transition)).collect()
    }

    #[test]
    fn limits_deadband_and_faults_never_clear() {
        let t0 = Instant::now();
        let mut e = Engine::new(&cfg(rule()), t0);
        // (sample, expected transitions)
        let table: Vec<(Sample, Vec<(&str, Transition)>)> = vec![
            (good(10.0), vec![]),
            (good(25.0), vec![("H", Transition::Raised)]),
            (good(60.0), vec![("HH", Transition::Raised)]),
            // A broken loop: fault raised, limit alarms stay active.
            (bad(), vec![("fault", Transition::Fault)]),
            (bad(), vec![]),
            (good(49.0), vec![("fault", Transition::FaultCleared)]),
            (good(47.9), vec![("HH", Transition::Cleared)]),
            (good(23.5), vec![]), // inside the deadband
            (good(22.9), vec![("H", Transition::Cleared)]),
        ];
        for (i, (s, want)) in table.into_iter().enumerate() {
            let got = summary(&e.on_sample(&s, t0));
            let want: Vec<(String, Transition)> = want.into_iter().map(|(c, t)| (c.to_owned(), t)).collect();
            assert_eq!(got, want, "step {i}");
        }
    }

    #[test]
    fn fault_keeps_active_alarm() {
        let t0 = Instant::now();
        let mut e = Engine::new(&cfg(rule()), t0);
        e.on_sample(&good(30.0), t0);
        e.on_sample(&bad(), t0);
        assert_eq!(e.active(&ChannelId::new("a.gd1.lel")), vec!["H".to_owned(), "fault".to_owned()]);
    }

    #[test]
    fn on_delay_and_staleness() {
        let t0 = Instant::now();
        let mut r = rule();
        r.on_delay = Duration::from_secs(5);
        let mut e = Engine::new(&cfg(r), t0);
        assert!(e.on_sample(&good(30.0), t0).is_empty());
        let (_, ev) = e.tick(t0 + Duration::from_secs(4), SystemTime::UNIX_EPOCH);
        assert!(ev.is_empty());
        let (_, ev) = e.tick(t0 + Duration::from_secs(5), SystemTime::UNIX_EPOCH);
        assert_eq!(summary(&ev), vec![("H".to_owned(), Transition::Raised)]);
        // Nothing for longer than max_age (10 s): stale fault, alarm kept.
        let (samples, ev) = e.tick(t0 + Duration::from_secs(16), SystemTime::UNIX_EPOCH);
        assert_eq!(samples.len(), 1);
        assert_eq!(summary(&ev), vec![("fault".to_owned(), Transition::Fault)]);
        assert!(e.active(&ChannelId::new("a.gd1.lel")).contains(&"H".to_owned()));
    }
}
