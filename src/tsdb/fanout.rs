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
//! - Alarm events go to every output, unreduced.
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

use super::line::{encode_aggregate, encode_event, encode_sample};
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

/// The engine's handle on every time-series output; see the module docs.
#[derive(Debug)]
pub struct Fanout {
    site: String,
    channels: HashMap<ChannelId, ResolvedChannel>,
    sinks: Vec<Sink>,
    aggs: Vec<Aggregate>,
}

impl Fanout {
    /// One sink per queue; each output's settings are found in `cfg.outputs` by id (an unknown
    /// id gets every reading).
    pub fn new(cfg: &Resolved, queues: Vec<Arc<OutputQueue>>) -> Self {
        let sinks = queues
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
        Self {
            site: cfg.site.id.clone(),
            channels: cfg
                .channels
                .iter()
                .map(|c| (c.id.clone(), c.clone()))
                .collect(),
            sinks,
            aggs: Vec::new(),
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
                            if let Some(ach) = self.channels.get(&a.channel) {
                                let mut l = String::with_capacity(220);
                                encode_aggregate(&self.site, measurement, ach, &a, &mut l);
                                sink.buf.push(l);
                            }
                        }
                        continue;
                    }
                }
                if line.is_empty() {
                    encode_sample(&self.site, ch, s, &mut line);
                }
                sink.buf.push(line.clone());
            }
        }
        for e in events {
            let area = self
                .channels
                .get(&e.channel)
                .map(|c| c.area.as_str())
                .unwrap_or_default();
            let mut l = String::with_capacity(200);
            encode_event(&self.site, area, e, &mut l);
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
                    if let Some(ch) = self.channels.get(&a.channel) {
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
