//! Deterministic signal generators: engineering value as a function of simulated time `f(t)`.
//!
//! Invariants:
//! - A [`SignalGen`] is seeded from [`point_seed`]`(site seed, device id, register name)` with a
//!   `ChaCha8Rng`, so a point's values depend only on the seed and `t`, never on how often or in
//!   which order points are sampled.
//! - Random parts are quantised to [`TICK`] of simulated time: a random walk takes one step per
//!   tick and noise is constant within a tick (random access into the ChaCha stream).
//! - Noise is "gaussian-ish" (sum of four uniforms) and bounded by `±noise`. It is not applied
//!   to `counter` (which must stay monotonic) nor to `toggle`.
//!
//! TOML shape (one generator key, plus optional `noise`); durations are numbers of seconds or
//! strings like `"500ms"`, `"90s"`, `"2m"`, `"1h"`:
//! ```toml
//! lel    = { sine = { base = 12, amplitude = 18, period = "90s" }, noise = 0.3 }
//! dp     = { random_walk = { start = 900, step = 15, min = 700, max = 1100 } }
//! level  = { ramp = { from = 6, to = 10.5, duration = "3m" } }
//! energy = { counter = { start = 10000, rate_per_hour = 120 } }
//! pump   = { toggle = { period = "60s", duty = 0.25 } }
//! spark  = { constant = false }   # or a number
//! power  = { daily = { night = 35, day = 140, from = "07:00", to = "19:00", ramp = "1h" }, noise = 2 }
//! energy = { integral = { start = 10000, per = "1h", of = { power = 1.0 } } }
//! level  = { integral = { start = 6, per = "1h", of = { inflow = 0.04, outflow = -0.04 }, min = 0, max = 12 } }
//! ```
//!
//! `daily` follows the site's time of day (`start_time` of the site spec plus simulated time):
//! `night` outside `from..to`, `day` inside, with linear ramps of length `ramp` after `from` and
//! before `to`. `integral` is evaluated by the device (it reads other points): the running sum
//! over [`TICK`] steps of `Σ coefficient × point value`, per `per` of simulated time, clamped into
//! `[min, max]` after each step; it is monotonic when the integrand is never negative (a kWh
//! counter clamps negative power to 0 by `min_rate = 0`).

use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// Quantum of simulated time for random parts (random-walk steps, noise samples).
pub const TICK: Duration = Duration::from_secs(1);

/// A signal: a generator plus optional bounded noise.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "SignalRepr")]
pub struct Signal {
    /// The generator.
    pub kind: SignalKind,
    /// Noise amplitude (0 = none); added values stay within `±noise`.
    pub noise: f64,
}

impl Signal {
    /// A constant signal without noise.
    pub fn constant(value: f64) -> Self {
        Signal {
            kind: SignalKind::Constant(value),
            noise: 0.0,
        }
    }
}

/// Signal generators. Times are simulated time since the simulation started.
#[derive(Clone, Debug, PartialEq)]
pub enum SignalKind {
    /// Always this value (bools: 0/1).
    Constant(f64),
    /// `base + amplitude * sin(2π t / period)`.
    Sine {
        /// Mean value.
        base: f64,
        /// Peak deviation.
        amplitude: f64,
        /// Full cycle.
        period: Duration,
    },
    /// Starts at `start`, moves by a uniform step in `±step` each [`TICK`], reflected into
    /// `[min, max]`.
    RandomWalk {
        /// Initial value (clamped into `[min, max]`).
        start: f64,
        /// Largest step per tick.
        step: f64,
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// Linear from `from` to `to` over `duration`, then holds `to`.
    Ramp {
        /// Value at t = 0.
        from: f64,
        /// Value from `duration` on.
        to: f64,
        /// Ramp length.
        duration: Duration,
    },
    /// `start + rate_per_hour * hours`: a monotonic counter such as kWh.
    Counter {
        /// Value at t = 0.
        start: f64,
        /// Increase per simulated hour.
        rate_per_hour: f64,
    },
    /// 1 for the first `duty` fraction of every `period`, else 0.
    Toggle {
        /// Full cycle.
        period: Duration,
        /// Fraction of the period that is 1, in `[0, 1]`.
        duty: f64,
    },
    /// Day/night profile over the site's time of day.
    Daily {
        /// Value outside `from..to`.
        night: f64,
        /// Value inside `from..to` (after the ramp).
        day: f64,
        /// Start of the day shift, as time since midnight.
        from: Duration,
        /// End of the day shift, as time since midnight.
        to: Duration,
        /// Length of the linear ramps.
        ramp: Duration,
    },
    /// Running integral of other points of the same device (evaluated by the device).
    Integral(Integral),
}

/// Parameters of [`SignalKind::Integral`].
#[derive(Clone, Debug, PartialEq)]
pub struct Integral {
    /// Value at t = 0.
    pub start: f64,
    /// The coefficients apply per this much simulated time (e.g. 1 h: kW → kWh).
    pub per: Duration,
    /// `(point name, coefficient)`.
    pub of: Vec<(String, f64)>,
    /// The integrand is clamped to at least this (0 for a counter that never decreases).
    pub min_rate: Option<f64>,
    /// Lower bound of the value.
    pub min: f64,
    /// Upper bound of the value.
    pub max: f64,
}

/// Stable seed of one point: FNV-1a over the site seed, device id and register name.
pub fn point_seed(seed: u64, device: &str, register: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = seed
        .to_le_bytes()
        .into_iter()
        .chain(device.bytes())
        .chain([0xff])
        .chain(register.bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Evaluates a [`Signal`] for one point. Holds the random-walk state so that sampling forward
/// in time is incremental; sampling backwards replays from the start (same result).
#[derive(Debug)]
pub struct SignalGen {
    signal: Signal,
    seed: u64,
    /// Time of day at t = 0 (for `daily`).
    day_offset: Duration,
    noise_rng: ChaCha8Rng,
    walk: Option<Walk>,
}

#[derive(Debug)]
struct Walk {
    tick: u64,
    value: f64,
    rng: ChaCha8Rng,
}

impl SignalGen {
    /// A generator for `signal` seeded with `seed` (see [`point_seed`]).
    pub fn new(signal: Signal, seed: u64) -> Self {
        SignalGen {
            signal,
            seed,
            day_offset: Duration::ZERO,
            noise_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x006e_6f69_7365),
            walk: None,
        }
    }

    /// Sets the site's time of day at t = 0 (for `daily` profiles).
    pub fn with_day_offset(mut self, offset: Duration) -> Self {
        self.day_offset = offset;
        self
    }

    /// The signal being generated.
    pub fn signal(&self) -> &Signal {
        &self.signal
    }

    /// The value at simulated time `t`.
    pub fn value_at(&mut self, t: Duration) -> f64 {
        let secs = t.as_secs_f64();
        let tick = (t.as_nanos() / TICK.as_nanos()) as u64;
        let (value, noisy) = match self.signal.kind {
            SignalKind::Constant(v) => (v, true),
            SignalKind::Sine {
                base,
                amplitude,
                period,
            } => {
                let phase = secs / period.as_secs_f64().max(1e-9);
                (
                    base + amplitude * (std::f64::consts::TAU * phase).sin(),
                    true,
                )
            }
            SignalKind::RandomWalk {
                start,
                step,
                min,
                max,
            } => (self.walk_at(tick, start, step, min, max), true),
            SignalKind::Ramp { from, to, duration } => {
                let d = duration.as_secs_f64();
                let f = if d <= 0.0 { 1.0 } else { (secs / d).min(1.0) };
                (from + (to - from) * f, true)
            }
            SignalKind::Counter {
                start,
                rate_per_hour,
            } => (start + rate_per_hour * secs / 3600.0, false),
            SignalKind::Toggle { period, duty } => {
                let p = period.as_secs_f64().max(1e-9);
                (f64::from(u8::from((secs % p) / p < duty)), false)
            }
            SignalKind::Daily {
                night,
                day,
                from,
                to,
                ramp,
            } => {
                let tod = (self.day_offset.as_secs_f64() + secs) % 86_400.0;
                let f = day_fraction(
                    tod,
                    from.as_secs_f64(),
                    to.as_secs_f64(),
                    ramp.as_secs_f64(),
                );
                (night + (day - night) * f, true)
            }
            // Evaluated by the device, which can read the other points; alone it is its start.
            SignalKind::Integral(ref i) => (i.start, false),
        };
        if noisy && self.signal.noise != 0.0 {
            value + self.noise(tick)
        } else {
            value
        }
    }

    fn noise(&mut self, tick: u64) -> f64 {
        self.noise_rng.set_word_pos(u128::from(tick) * 4);
        let sum: f64 = (0..4)
            .map(|_| f64::from(self.noise_rng.next_u32()) / f64::from(u32::MAX) - 0.5)
            .sum();
        self.signal.noise * sum / 2.0
    }

    fn walk_at(&mut self, tick: u64, start: f64, step: f64, min: f64, max: f64) -> f64 {
        let (lo, hi) = (min.min(max), min.max(max));
        let walk = match &mut self.walk {
            Some(w) if w.tick <= tick => w,
            slot => slot.insert(Walk {
                tick: 0,
                value: start.clamp(lo, hi),
                rng: ChaCha8Rng::seed_from_u64(self.seed),
            }),
        };
        while walk.tick < tick {
            let mut v = walk.value + walk.rng.random_range(-1.0..=1.0) * step;
            if v > hi {
                v = 2.0 * hi - v;
            }
            if v < lo {
                v = 2.0 * lo - v;
            }
            walk.value = v.clamp(lo, hi);
            walk.tick += 1;
        }
        walk.value
    }
}

/// Fraction of the day level at time of day `tod` (seconds since midnight), for a shift
/// `from..to` (wrapping past midnight when `to < from`) with linear ramps of `ramp` seconds.
fn day_fraction(tod: f64, from: f64, to: f64, ramp: f64) -> f64 {
    let len = (to - from).rem_euclid(86_400.0);
    let into = (tod - from).rem_euclid(86_400.0);
    if into >= len {
        return 0.0;
    }
    let ramp = ramp.min(len / 2.0);
    if ramp <= 0.0 {
        return 1.0;
    }
    (into / ramp).min((len - into) / ramp).min(1.0)
}

/// Serde shape of a signal: exactly one generator key plus optional `noise`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalRepr {
    constant: Option<ConstRepr>,
    sine: Option<SineRepr>,
    random_walk: Option<WalkRepr>,
    ramp: Option<RampRepr>,
    counter: Option<CounterRepr>,
    toggle: Option<ToggleRepr>,
    daily: Option<DailyRepr>,
    integral: Option<IntegralRepr>,
    #[serde(default)]
    noise: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DailyRepr {
    night: f64,
    day: f64,
    #[serde(deserialize_with = "de_time_of_day")]
    from: Duration,
    #[serde(deserialize_with = "de_time_of_day")]
    to: Duration,
    #[serde(deserialize_with = "de_duration", default = "one_hour")]
    ramp: Duration,
}

fn one_hour() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntegralRepr {
    #[serde(default)]
    start: f64,
    #[serde(deserialize_with = "de_duration", default = "one_hour")]
    per: Duration,
    of: std::collections::BTreeMap<String, f64>,
    min_rate: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ConstRepr {
    Bool(bool),
    Number(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SineRepr {
    base: f64,
    amplitude: f64,
    #[serde(deserialize_with = "de_duration")]
    period: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WalkRepr {
    start: f64,
    step: f64,
    min: f64,
    max: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RampRepr {
    from: f64,
    to: f64,
    #[serde(deserialize_with = "de_duration")]
    duration: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterRepr {
    #[serde(default)]
    start: f64,
    rate_per_hour: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToggleRepr {
    #[serde(deserialize_with = "de_duration")]
    period: Duration,
    #[serde(default = "half")]
    duty: f64,
}

fn half() -> f64 {
    0.5
}

impl TryFrom<SignalRepr> for Signal {
    type Error = String;

    fn try_from(r: SignalRepr) -> Result<Self, String> {
        let mut kinds = Vec::new();
        if let Some(c) = r.constant {
            kinds.push(SignalKind::Constant(match c {
                ConstRepr::Bool(b) => f64::from(u8::from(b)),
                ConstRepr::Number(n) => n,
            }));
        }
        if let Some(s) = r.sine {
            kinds.push(SignalKind::Sine {
                base: s.base,
                amplitude: s.amplitude,
                period: nonzero(s.period, "sine.period")?,
            });
        }
        if let Some(w) = r.random_walk {
            if w.min > w.max || w.step < 0.0 {
                return Err("random_walk needs min <= max and step >= 0".into());
            }
            kinds.push(SignalKind::RandomWalk {
                start: w.start,
                step: w.step,
                min: w.min,
                max: w.max,
            });
        }
        if let Some(x) = r.ramp {
            kinds.push(SignalKind::Ramp {
                from: x.from,
                to: x.to,
                duration: x.duration,
            });
        }
        if let Some(c) = r.counter {
            kinds.push(SignalKind::Counter {
                start: c.start,
                rate_per_hour: c.rate_per_hour,
            });
        }
        if let Some(t) = r.toggle {
            if !(0.0..=1.0).contains(&t.duty) {
                return Err("toggle.duty must be within 0..=1".into());
            }
            kinds.push(SignalKind::Toggle {
                period: nonzero(t.period, "toggle.period")?,
                duty: t.duty,
            });
        }
        if let Some(d) = r.daily {
            kinds.push(SignalKind::Daily {
                night: d.night,
                day: d.day,
                from: d.from,
                to: d.to,
                ramp: d.ramp,
            });
        }
        if let Some(i) = r.integral {
            if i.of.is_empty() {
                return Err("integral.of needs at least one point".into());
            }
            let (min, max) = (
                i.min.unwrap_or(f64::NEG_INFINITY),
                i.max.unwrap_or(f64::INFINITY),
            );
            if min > max {
                return Err("integral needs min <= max".into());
            }
            kinds.push(SignalKind::Integral(Integral {
                start: i.start,
                per: nonzero(i.per, "integral.per")?,
                of: i.of.into_iter().collect(),
                min_rate: i.min_rate,
                min,
                max,
            }));
        }
        if !r.noise.is_finite() || r.noise < 0.0 {
            return Err("noise must be a finite amplitude >= 0".into());
        }
        match <[SignalKind; 1]>::try_from(kinds) {
            Ok([kind]) => Ok(Signal {
                kind,
                noise: r.noise,
            }),
            Err(_) => Err(
                "a signal needs exactly one of constant, sine, random_walk, ramp, \
                           counter, toggle, daily, integral"
                    .into(),
            ),
        }
    }
}

fn nonzero(d: Duration, what: &str) -> Result<Duration, String> {
    if d.is_zero() {
        Err(format!("{what} must be > 0"))
    } else {
        Ok(d)
    }
}

/// Parses `"500ms"`, `"90s"`, `"1.5m"`, `"2h"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let factor = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(n * factor).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Parses a time of day `"HH:MM"` or `"HH:MM:SS"` into time since midnight.
pub fn parse_time_of_day(text: &str) -> Result<Duration, String> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    let nums: Result<Vec<u64>, _> = parts.iter().map(|p| p.parse::<u64>()).collect();
    match nums.as_deref() {
        Ok([h, m]) if *h < 24 && *m < 60 => Ok(Duration::from_secs(h * 3600 + m * 60)),
        Ok([h, m, s]) if *h < 24 && *m < 60 && *s < 60 => {
            Ok(Duration::from_secs(h * 3600 + m * 60 + s))
        }
        _ => Err(format!("invalid time of day {text:?} (want HH:MM)")),
    }
}

/// Serde helper: a time of day `"HH:MM"`.
pub fn de_time_of_day<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_time_of_day(&text).map_err(serde::de::Error::custom)
}

/// Serde helper: an optional time of day `"HH:MM"`.
pub fn de_time_of_day_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    de_time_of_day(d).map(Some)
}

/// Serde helper: a duration as seconds (number) or a string accepted by [`parse_duration`].
pub fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Secs(f64),
        Text(String),
    }
    match Repr::deserialize(d)? {
        Repr::Secs(s) => Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom),
        Repr::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sig(text: &str) -> Signal {
        #[derive(Deserialize)]
        struct W {
            s: Signal,
        }
        toml::from_str::<W>(&format!("s = {text}")).unwrap().s
    }

    fn at(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn parses_the_documented_shapes() {
        let s = sig("{ sine = { base = 12, amplitude = 18, period = \"90s\" }, noise = 0.3 }");
        assert_eq!(s.noise, 0.3);
        assert_eq!(
            s.kind,
            SignalKind::Sine {
                base: 12.0,
                amplitude: 18.0,
                period: at(90.0)
            }
        );
        assert_eq!(sig("{ constant = true }"), Signal::constant(1.0));
        assert_eq!(sig("{ constant = 4 }"), Signal::constant(4.0));
        assert!(matches!(
            sig("{ toggle = { period = 60 } }").kind,
            SignalKind::Toggle { duty: 0.5, .. }
        ));
        assert!(matches!(
            sig("{ counter = { rate_per_hour = 120 } }").kind,
            SignalKind::Counter { start: 0.0, .. }
        ));
        assert_eq!(parse_duration("500ms").unwrap(), at(0.5));
        assert_eq!(parse_duration("1.5m").unwrap(), at(90.0));
        assert_eq!(parse_duration("2h").unwrap(), at(7200.0));
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn rejects_bad_shapes() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct W {
            s: Signal,
        }
        for bad in [
            "{ }",
            "{ constant = 1, sine = { base = 0, amplitude = 1, period = 1 } }",
            "{ sine = { base = 0, amplitude = 1, period = 0 } }",
            "{ random_walk = { start = 0, step = 1, min = 5, max = 1 } }",
            "{ constant = 1, noise = -1 }",
            "{ constant = 1, nois = 1 }",
        ] {
            assert!(toml::from_str::<W>(&format!("s = {bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn deterministic_generators() {
        let mut sine = SignalGen::new(
            sig("{ sine = { base = 12, amplitude = 18, period = 90 } }"),
            1,
        );
        assert!((sine.value_at(at(0.0)) - 12.0).abs() < 1e-9);
        assert!((sine.value_at(at(22.5)) - 30.0).abs() < 1e-9);
        assert!((sine.value_at(at(67.5)) - -6.0).abs() < 1e-9);
        let mut ramp = SignalGen::new(sig("{ ramp = { from = 6, to = 10, duration = 100 } }"), 1);
        assert_eq!(ramp.value_at(at(25.0)), 7.0);
        assert_eq!(ramp.value_at(at(1000.0)), 10.0);
        let mut ctr = SignalGen::new(
            sig("{ counter = { start = 10000, rate_per_hour = 120 }, noise = 5 }"),
            1,
        );
        assert_eq!(ctr.value_at(at(1800.0)), 10060.0);
        let mut t = SignalGen::new(sig("{ toggle = { period = 10, duty = 0.3 } }"), 1);
        let v: Vec<f64> = [0.0, 2.9, 3.1, 9.9, 10.0]
            .map(|s| t.value_at(at(s)))
            .to_vec();
        assert_eq!(v, [1.0, 1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn random_parts_depend_only_on_seed_and_time() {
        let walk = sig("{ random_walk = { start = 3, step = 1, min = 0, max = 8 }, noise = 0.5 }");
        let seed = point_seed(42, "gd102", "lel");
        let mut a = SignalGen::new(walk.clone(), seed);
        let mut b = SignalGen::new(walk.clone(), seed);
        // a samples every tick, b jumps around (including backwards): same values.
        let series: Vec<f64> = (0..300).map(|s| a.value_at(at(f64::from(s)))).collect();
        for s in [250, 7, 299, 0, 120] {
            assert_eq!(b.value_at(at(f64::from(s))), series[s as usize]);
        }
        assert!(series.iter().all(|v| (-0.5..=8.5).contains(v)));
        assert!(series.windows(2).any(|w| w[0] != w[1]), "walk must move");
        // A different seed (or point) gives a different series.
        let mut c = SignalGen::new(walk, point_seed(43, "gd102", "lel"));
        let other: Vec<f64> = (0..300).map(|s| c.value_at(at(f64::from(s)))).collect();
        assert_ne!(series, other);
        assert_ne!(point_seed(1, "a", "bc"), point_seed(1, "ab", "c"));
    }

    #[test]
    fn daily_profile_follows_the_time_of_day() {
        let s = sig(
            "{ daily = { night = 30, day = 130, from = \"07:00\", to = \"19:00\", ramp = \"1h\" } }",
        );
        // The site starts at 06:00.
        let mut g = SignalGen::new(s, 1).with_day_offset(at(6.0 * 3600.0));
        let h = |g: &mut SignalGen, hours: f64| g.value_at(at(hours * 3600.0));
        assert_eq!(h(&mut g, 0.0), 30.0); // 06:00
        assert!((h(&mut g, 1.5) - 80.0).abs() < 1e-9); // 07:30, half-way up the ramp
        assert_eq!(h(&mut g, 6.0), 130.0); // 12:00
        assert_eq!(h(&mut g, 16.0), 30.0); // 22:00
        assert_eq!(h(&mut g, 30.0), 130.0); // 12:00 the next day
        assert_eq!(
            day_fraction(3.0 * 3600.0, 22.0 * 3600.0, 6.0 * 3600.0, 0.0),
            1.0
        );
        assert_eq!(parse_time_of_day("21:30").unwrap(), at(77_400.0));
        assert!(parse_time_of_day("24:00").is_err());
    }

    #[test]
    fn noise_is_bounded_and_not_constant() {
        let mut g = SignalGen::new(sig("{ constant = 25, noise = 0.5 }"), 9);
        let v: Vec<f64> = (0..500).map(|s| g.value_at(at(f64::from(s)))).collect();
        assert!(v.iter().all(|x| (24.5..=25.5).contains(x)));
        assert!(v.iter().any(|x| *x > 25.1) && v.iter().any(|x| *x < 24.9));
        // Constant within a tick.
        assert_eq!(g.value_at(at(3.1)), g.value_at(at(3.9)));
    }
}
