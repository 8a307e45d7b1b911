//! Per-output data reduction, as pure state machines (no I/O, time passed in):
//!
//! - [`Reducer`]: report by exception. A good reading is written when it differs from the last
//!   value *written* for its channel by more than the channel's deadband (so the stored series
//!   never strays more than one deadband from the truth), or when the heartbeat is due (sample
//!   time since the last written point ≥ `heartbeat`).
//! - [`Downsampler`]: one aggregate per channel and epoch-aligned window (min, max, mean, count of
//!   good readings, count of bad ones, quality).
//!
//! # Invariants
//! - A Bad reading is never suppressed, and neither is the first good reading after a Bad one:
//!   quality transitions always reach the database. A non-finite "good" value counts as Bad (it
//!   is encoded as bad, see `line`).
//! - Alarm events are never reduced (the reducers only see samples).
//! - Downsampling never drops a sample: every sample lands in exactly one window, and a window
//!   is emitted when the channel's first sample of a later window arrives, when its delay after
//!   the window's end has passed, or at shutdown. A sample that arrives after its window was
//!   emitted (late, or a clock stepped back) reopens that window when it is the last one emitted,
//!   so the re-emitted aggregate (same series and timestamp: InfluxDB overwrites) is complete;
//!   older windows are re-emitted with only the late samples.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::options::{DownsampleConfig, ReductionConfig};
use crate::config::ResolvedChannel;
use crate::model::{ChannelId, Reading, Sample, epoch_nanos};

/// Effective reduction settings of one channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChannelRule {
    /// Absolute deadband (engineering units) after applying the percentage to the range.
    pub deadband: f64,
    /// Heartbeat.
    pub heartbeat: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Written {
    /// `None` when the last written point was bad.
    value: Option<f64>,
    ts: SystemTime,
}

/// Report by exception for one output; see the module docs.
#[derive(Debug)]
pub struct Reducer {
    rules: HashMap<ChannelId, Option<ChannelRule>>,
    default_pct: f64,
    default: ChannelRule,
    last: HashMap<ChannelId, Written>,
}

fn good_value(r: &Reading) -> Option<f64> {
    r.value().filter(|v| v.is_finite())
}

impl Reducer {
    /// Builds the reducer for `cfg` over the configured channels.
    pub fn new(cfg: &ReductionConfig, channels: &[ResolvedChannel]) -> Self {
        let span = |ch: &ResolvedChannel| ch.range.map_or(0.0, |[lo, hi]| (hi - lo).abs());
        let mut rules = HashMap::new();
        for ch in channels {
            let o = cfg.channels.iter().find(|o| o.id == ch.id.as_str());
            let rule = match o {
                Some(o) if o.off => None,
                _ => {
                    let abs = o.and_then(|o| o.deadband).unwrap_or(cfg.deadband);
                    let pct = o
                        .and_then(|o| o.deadband_percent)
                        .unwrap_or(cfg.deadband_percent);
                    Some(ChannelRule {
                        deadband: abs.max(pct / 100.0 * span(ch)),
                        heartbeat: o.and_then(|o| o.heartbeat).unwrap_or(cfg.heartbeat),
                    })
                }
            };
            rules.insert(ch.id.clone(), rule);
        }
        Self {
            rules,
            default_pct: cfg.deadband_percent,
            default: ChannelRule {
                deadband: cfg.deadband,
                heartbeat: cfg.heartbeat,
            },
            last: HashMap::new(),
        }
    }

    /// Keeps `old`'s last written point of every channel this reducer knows (a reload).
    pub fn carry_from(&mut self, old: Reducer) {
        self.last = old
            .last
            .into_iter()
            .filter(|(id, _)| self.rules.contains_key(id))
            .collect();
    }

    /// The rule applied to `channel` (`None`: reduction is off for it).
    pub fn rule(&self, channel: &ChannelId) -> Option<ChannelRule> {
        match self.rules.get(channel) {
            Some(r) => *r,
            // Not a configured channel: the output's absolute deadband (no range known).
            None => Some(ChannelRule {
                deadband: self.default.deadband,
                heartbeat: self.default.heartbeat,
            }),
        }
    }

    /// Whether the output's percentage deadband is in use (for start-up logging).
    pub fn uses_percent(&self) -> bool {
        self.default_pct > 0.0
    }

    /// Decides whether `s` is written, and remembers it if so.
    pub fn keep(&mut self, s: &Sample) -> bool {
        let Some(rule) = self.rule(&s.channel) else {
            return true;
        };
        let value = good_value(&s.reading);
        let keep = match (self.last.get(&s.channel), value) {
            // Bad: always written.
            (_, None) => true,
            // First reading seen, or first good after bad.
            (None, Some(_)) | (Some(Written { value: None, .. }), Some(_)) => true,
            (
                Some(Written {
                    value: Some(last),
                    ts,
                }),
                Some(v),
            ) => {
                (v - last).abs() > rule.deadband
                    // A timestamp going backwards (clock step) restarts the heartbeat.
                    || s.ts.duration_since(*ts).map_or(true, |d| d >= rule.heartbeat)
            }
        };
        if keep {
            self.last
                .insert(s.channel.clone(), Written { value, ts: s.ts });
        }
        keep
    }
}

/// One channel's aggregate over one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// Channel.
    pub channel: ChannelId,
    /// Window start, nanoseconds since the epoch (a multiple of the window).
    pub start_ns: i64,
    /// Smallest good value.
    pub min: f64,
    /// Largest good value.
    pub max: f64,
    /// Sum of good values.
    pub sum: f64,
    /// Good readings.
    pub count: u64,
    /// Bad readings.
    pub bad: u64,
    /// Reason of the last bad reading (`BadReason::kind`), if any.
    pub last_reason: Option<&'static str>,
}

impl Aggregate {
    fn new(channel: ChannelId, start_ns: i64) -> Self {
        Self {
            channel,
            start_ns,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            count: 0,
            bad: 0,
            last_reason: None,
        }
    }

    fn add(&mut self, r: &Reading) {
        match (good_value(r), r) {
            (Some(v), _) => {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                self.sum += v;
                self.count += 1;
            }
            (None, Reading::Bad(reason)) => {
                self.bad += 1;
                self.last_reason = Some(reason.kind());
            }
            (None, Reading::Good(_)) => {
                self.bad += 1;
                self.last_reason = Some("decode");
            }
        }
    }

    /// Mean of the good values, when there was one.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// `good` (no bad reading), `bad` (no good one) or `mixed`.
    pub fn quality(&self) -> &'static str {
        match (self.count, self.bad) {
            (_, 0) => "good",
            (0, _) => "bad",
            _ => "mixed",
        }
    }
}

#[derive(Debug, Default)]
struct ChannelWindows {
    open: Option<Aggregate>,
    /// The last aggregate emitted (reopened by a late sample of the same window).
    last: Option<Aggregate>,
}

/// Per-window aggregation for one output; see the module docs.
#[derive(Debug)]
pub struct Downsampler {
    window_ns: i64,
    delay: Duration,
    chans: HashMap<ChannelId, ChannelWindows>,
}

impl Downsampler {
    /// Builds a downsampler with `cfg`'s window and delay.
    pub fn new(cfg: &DownsampleConfig) -> Self {
        Self {
            window_ns: i64::try_from(cfg.window.as_nanos())
                .unwrap_or(i64::MAX)
                .max(1),
            delay: cfg.delay,
            chans: HashMap::new(),
        }
    }

    /// Adds a sample; appends to `out` the aggregates it completes.
    pub fn add(&mut self, s: &Sample, out: &mut Vec<Aggregate>) {
        let start = epoch_nanos(s.ts).div_euclid(self.window_ns) * self.window_ns;
        let c = self.chans.entry(s.channel.clone()).or_default();
        match &mut c.open {
            Some(a) if a.start_ns == start => {
                a.add(&s.reading);
                return;
            }
            Some(_) => {
                // A later window starts (or, out of order, an earlier one): emit the open one.
                if let Some(done) = c.open.take() {
                    out.push(done.clone());
                    c.last = Some(done);
                }
            }
            None => {}
        }
        let mut a = match c.last.take() {
            Some(l) if l.start_ns == start => l,
            other => {
                c.last = other;
                Aggregate::new(s.channel.clone(), start)
            }
        };
        a.add(&s.reading);
        c.open = Some(a);
    }

    /// Emits the windows that ended at least `delay` before `now`.
    pub fn tick(&mut self, now: SystemTime, out: &mut Vec<Aggregate>) {
        let cutoff = epoch_nanos(now) - i64::try_from(self.delay.as_nanos()).unwrap_or(i64::MAX);
        for c in self.chans.values_mut() {
            if c.open
                .as_ref()
                .is_some_and(|a| a.start_ns.saturating_add(self.window_ns) <= cutoff)
            {
                if let Some(done) = c.open.take() {
                    out.push(done.clone());
                    c.last = Some(done);
                }
            }
        }
    }

    /// Emits every open window (shutdown).
    pub fn flush(&mut self, out: &mut Vec<Aggregate>) {
        for c in self.chans.values_mut() {
            if let Some(done) = c.open.take() {
                out.push(done.clone());
                c.last = Some(done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadReason, DeviceId};
    use crate::tsdb::options::ChannelReduction;

    fn ch(id: &str, range: Option<[f64; 2]>) -> ResolvedChannel {
        ResolvedChannel {
            id: ChannelId::new(id),
            device: DeviceId::new("d"),
            area: "a".into(),
            kind: "k".into(),
            unit: "u".into(),
            label: String::new(),
            range,
            max_age: Duration::from_secs(5),
            states: Default::default(),
            device_name: String::new(),
        }
    }

    fn at(id: &str, secs: u64, r: Reading) -> Sample {
        Sample {
            channel: ChannelId::new(id),
            ts: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs),
            reading: r,
        }
    }

    fn good(v: f64) -> Reading {
        Reading::Good(v)
    }

    fn bad() -> Reading {
        Reading::Bad(BadReason::Comm {
            detail: "timeout".into(),
        })
    }

    #[test]
    fn deadband_heartbeat_and_quality_transitions() {
        let cfg = ReductionConfig {
            deadband: 0.5,
            deadband_percent: 0.0,
            heartbeat: Duration::from_secs(60),
            channels: vec![],
        };
        let mut r = Reducer::new(&cfg, &[ch("c", None)]);
        // (second, reading, written?)
        let table = [
            (0, good(10.0), true, "first reading"),
            (1, good(10.3), false, "inside the deadband"),
            (
                2,
                good(10.5),
                false,
                "exactly the deadband is not more than it",
            ),
            (
                3,
                good(10.6),
                true,
                "more than the deadband from the last written",
            ),
            (4, good(10.2), false, "compared with 10.6, the last written"),
            (
                5,
                good(10.0),
                true,
                "drift accumulates against the last written",
            ),
            (64, good(10.0), false, "59 s after the last written"),
            (65, good(10.0), true, "heartbeat due (60 s)"),
            (66, bad(), true, "bad is always written"),
            (67, bad(), true, "every bad reading"),
            (68, good(10.0), true, "first good after bad, even unchanged"),
            (69, good(10.1), false, "then the deadband again"),
            (70, good(f64::NAN), true, "non-finite counts as bad"),
            (71, good(10.0), true, "first good after that"),
            (
                10,
                good(10.0),
                true,
                "timestamp going back restarts the heartbeat",
            ),
        ];
        for (secs, reading, want, why) in table {
            assert_eq!(r.keep(&at("c", secs, reading)), want, "t={secs}: {why}");
        }
    }

    #[test]
    fn percent_of_range_and_overrides() {
        let cfg = ReductionConfig {
            deadband: 0.1,
            deadband_percent: 1.0,
            heartbeat: Duration::from_secs(60),
            channels: vec![
                ChannelReduction {
                    id: "tight".into(),
                    deadband: Some(0.0),
                    deadband_percent: Some(0.0),
                    heartbeat: Some(Duration::from_secs(5)),
                    off: false,
                },
                ChannelReduction {
                    id: "raw".into(),
                    deadband: None,
                    deadband_percent: None,
                    heartbeat: None,
                    off: true,
                },
            ],
        };
        let chans = [
            ch("gas", Some([0.0, 100.0])),
            ch("norange", None),
            ch("tight", Some([0.0, 100.0])),
            ch("raw", None),
        ];
        let r = Reducer::new(&cfg, &chans);
        let rule = |id: &str| r.rule(&ChannelId::new(id));
        assert_eq!(
            rule("gas").map(|r| r.deadband),
            Some(1.0),
            "1 % of 0–100 beats 0.1"
        );
        assert_eq!(
            rule("norange").map(|r| r.deadband),
            Some(0.1),
            "no range: absolute only"
        );
        assert_eq!(
            rule("tight"),
            Some(ChannelRule {
                deadband: 0.0,
                heartbeat: Duration::from_secs(5)
            })
        );
        assert_eq!(rule("raw"), None);
        let mut r = r;
        assert!(r.keep(&at("raw", 0, good(1.0))));
        assert!(r.keep(&at("raw", 1, good(1.0))), "reduction off");
        assert!(r.keep(&at("tight", 0, good(1.0))));
        assert!(!r.keep(&at("tight", 1, good(1.0))), "unchanged");
        assert!(r.keep(&at("tight", 2, good(1.000001))), "any change");
    }

    fn ds(window: u64, delay: u64) -> Downsampler {
        Downsampler::new(&DownsampleConfig {
            window: Duration::from_secs(window),
            measurement: None,
            delay: Duration::from_secs(delay),
        })
    }

    #[test]
    fn windows_are_aligned_and_complete() {
        let mut d = ds(60, 5);
        let mut out = Vec::new();
        // 1_700_000_000 is 20 s into a minute (1_699_999_980 = 28333333 × 60).
        let w0 = 1_699_999_980i64 * 1_000_000_000;
        for (s, r) in [
            (0, good(3.0)),
            (10, good(1.0)),
            (20, bad()),
            (39, good(5.0)),
        ] {
            d.add(&at("c", s, r), &mut out);
        }
        assert!(out.is_empty(), "window still open");
        d.add(&at("c", 40, good(7.0)), &mut out);
        assert_eq!(out.len(), 1, "the next window's first sample closes it");
        let a = &out[0];
        assert_eq!(a.start_ns, w0);
        assert_eq!(
            (a.min, a.max, a.mean(), a.count, a.bad),
            (1.0, 5.0, Some(3.0), 3, 1)
        );
        assert_eq!((a.quality(), a.last_reason), ("mixed", Some("comm")));
        out.clear();
        // Silence: the open window is emitted `delay` after its end.
        d.tick(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_104),
            &mut out,
        );
        assert!(out.is_empty(), "4 s after the end");
        d.tick(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_105),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].start_ns, out[0].count), (w0 + 60_000_000_000, 1));
        assert_eq!(out[0].quality(), "good");
        out.clear();
        // A late sample of that window reopens it: the re-emitted aggregate is complete.
        d.add(&at("c", 99, good(9.0)), &mut out);
        d.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].start_ns, out[0].count, out[0].min, out[0].max),
            (w0 + 60_000_000_000, 2, 7.0, 9.0)
        );
        out.clear();
        d.flush(&mut out);
        assert!(out.is_empty(), "nothing open");
    }

    #[test]
    fn all_bad_window_has_no_value() {
        let mut d = ds(60, 5);
        let mut out = Vec::new();
        d.add(&at("c", 0, bad()), &mut out);
        d.add(&at("c", 1, Reading::Bad(BadReason::Stale)), &mut out);
        d.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].mean(), None);
        assert_eq!(
            (out[0].quality(), out[0].bad, out[0].last_reason),
            ("bad", 2, Some("stale"))
        );
    }
}
