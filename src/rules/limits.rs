//! Per-channel condition detectors (limits with deadband, rate of change, discrete states) and
//! the on/off-delay filter, all pure.
//!
//! Invariants:
//! - Detectors only see good values; the engine never feeds them a Bad or stale reading, so a
//!   missing value can neither raise nor clear a condition.
//! - The raw condition has hysteresis: once true it stays true until the value is back inside
//!   the limit by the deadband.
//! - The delay filter changes its output only after the raw condition has held for the on-delay
//!   (raise) or off-delay (clear). [`Delay::hold`] (Bad reading, unknown expression) cancels a
//!   pending clear but keeps a pending raise, so a fault never makes an alarm clear sooner nor
//!   go unreported.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// High or low limit with hysteresis.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    /// The limit.
    pub limit: f64,
    /// `true` for H/HH (at or above), `false` for L/LL (at or below).
    pub high: bool,
    /// Absolute deadband (already converted from % of span).
    pub deadband: f64,
}

impl Limit {
    /// The next raw condition given the current one and a good value.
    pub fn eval(&self, raw: bool, v: f64) -> bool {
        if !raw {
            if self.high {
                v >= self.limit
            } else {
                v <= self.limit
            }
        } else if self.high {
            v >= self.limit - self.deadband
        } else {
            v <= self.limit + self.deadband
        }
    }
}

/// Rate of change over a sliding window, in units per minute.
#[derive(Clone, Debug)]
pub struct Rate {
    /// Alarm when the value rises at least this fast (units per minute, positive); `None`
    /// for a falling-rate alarm.
    pub rise: Option<f64>,
    /// Alarm when the value falls at least this fast (units per minute, positive).
    pub fall: Option<f64>,
    /// Hysteresis on the rate.
    pub deadband: f64,
    /// The window the rate is measured over.
    pub window: Duration,
    history: VecDeque<(Instant, f64)>,
}

impl Rate {
    /// A rate detector.
    pub fn new(rise: Option<f64>, fall: Option<f64>, deadband: f64, window: Duration) -> Self {
        Self {
            rise,
            fall,
            deadband,
            window,
            history: VecDeque::new(),
        }
    }

    /// The rate (units per minute) at `now`, once the history spans at least half the window.
    pub fn rate(&self, now: Instant, v: f64) -> Option<f64> {
        let &(t0, v0) = self.history.front()?;
        let span = now.checked_duration_since(t0)?;
        if span < self.window / 2 || span.is_zero() {
            return None;
        }
        Some((v - v0) / span.as_secs_f64() * 60.0)
    }

    /// Records a good value and returns the next raw condition; `None` while the window is not
    /// yet filled (the condition holds).
    pub fn eval(&mut self, raw: bool, now: Instant, v: f64) -> Option<bool> {
        // Keep the newest sample at or before `now - window` as the reference point.
        while self.history.len() >= 2 && self.history[1].0 + self.window <= now {
            self.history.pop_front();
        }
        let r = self.rate(now, v);
        self.history.push_back((now, v));
        let r = r?;
        let db = if raw { self.deadband } else { 0.0 };
        let rising = self.rise.is_some_and(|x| r >= x - db);
        let falling = self.fall.is_some_and(|x| -r >= x - db);
        Some(rising || falling)
    }
}

/// Flat-line detection: true once every good value for `after` stayed within `band` of the
/// value that started the flat stretch. Any larger movement starts a new stretch.
#[derive(Clone, Debug)]
pub struct Stuck {
    /// Allowed movement.
    pub band: f64,
    /// Flat for this long is a fault.
    pub after: Duration,
    anchor: Option<(Instant, f64)>,
}

impl Stuck {
    /// A flat-line detector.
    pub fn new(band: f64, after: Duration) -> Self {
        Self {
            band,
            after,
            anchor: None,
        }
    }

    /// Records a good value and returns the raw condition.
    pub fn eval(&mut self, now: Instant, v: f64) -> bool {
        match self.anchor {
            Some((t0, v0)) if (v - v0).abs() <= self.band => {
                now.saturating_duration_since(t0) >= self.after
            }
            _ => {
                self.anchor = Some((now, v));
                false
            }
        }
    }

    /// Since when the reading has been flat.
    pub fn flat_since(&self) -> Option<Instant> {
        self.anchor.map(|(t, _)| t)
    }
}

/// A discrete alarm on a boolean channel (values 0.0 / 1.0; anything above 0.5 is true).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discrete {
    /// The channel state that is the alarm.
    pub active_when: bool,
}

impl Discrete {
    /// The raw condition for a good value.
    pub fn eval(&self, v: f64) -> bool {
        (v > 0.5) == self.active_when
    }
}

/// On/off-delay filter between the raw condition and the lifecycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delay {
    /// The raw condition must hold this long before the output turns true.
    pub on: Duration,
    /// The raw condition must be false this long before the output turns false.
    pub off: Duration,
    /// The filtered output.
    pub out: bool,
    /// Since when the raw condition differs from `out`.
    pub pending: Option<Instant>,
}

impl Delay {
    /// A filter whose output starts at `out`.
    pub fn new(on: Duration, off: Duration, out: bool) -> Self {
        Self {
            on,
            off,
            out,
            pending: None,
        }
    }

    /// Feeds the raw condition at `now`; returns the new output when it changed.
    pub fn feed(&mut self, raw: bool, now: Instant) -> Option<bool> {
        if raw == self.out {
            self.pending = None;
            return None;
        }
        let since = *self.pending.get_or_insert(now);
        let need = if raw { self.on } else { self.off };
        if now.saturating_duration_since(since) >= need {
            self.out = raw;
            self.pending = None;
            Some(raw)
        } else {
            None
        }
    }

    /// No usable input: a pending clear is cancelled, a pending raise is kept.
    pub fn hold(&mut self) {
        if self.out {
            self.pending = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_hysteresis_table() {
        let h = Limit {
            limit: 25.0,
            high: true,
            deadband: 2.0,
        };
        let l = Limit {
            limit: 19.5,
            high: false,
            deadband: 0.5,
        };
        // (limit, raw before, value, raw after)
        let rows = [
            (&h, false, 24.9, false),
            (&h, false, 25.0, true),
            (&h, true, 23.0, true),
            (&h, true, 22.99, false),
            (&l, false, 19.6, false),
            (&l, false, 19.5, true),
            (&l, true, 20.0, true),
            (&l, true, 20.01, false),
        ];
        for (i, (lim, raw, v, want)) in rows.into_iter().enumerate() {
            assert_eq!(lim.eval(raw, v), want, "row {i}");
        }
    }

    #[test]
    fn delay_table() {
        let t0 = Instant::now();
        let s = |x: u64| t0 + Duration::from_secs(x);
        let mut d = Delay::new(Duration::from_secs(5), Duration::from_secs(3), false);
        // (raw, at, expected change)
        let rows = [
            (true, 0, None),
            (false, 2, None), // a blip shorter than the on-delay
            (true, 3, None),
            (true, 7, None),
            (true, 8, Some(true)),
            (false, 9, None),
            (true, 10, None), // a dip shorter than the off-delay
            (false, 11, None),
            (false, 14, Some(false)),
        ];
        for (i, (raw, at, want)) in rows.into_iter().enumerate() {
            assert_eq!(d.feed(raw, s(at)), want, "row {i}");
        }
    }

    #[test]
    fn hold_keeps_pending_raise_and_cancels_pending_clear() {
        let t0 = Instant::now();
        let mut d = Delay::new(Duration::from_secs(5), Duration::from_secs(5), false);
        d.feed(true, t0);
        d.hold();
        assert_eq!(d.feed(true, t0 + Duration::from_secs(5)), Some(true));
        d.feed(false, t0 + Duration::from_secs(6));
        d.hold();
        assert_eq!(
            d.feed(false, t0 + Duration::from_secs(11)),
            None,
            "the clear timer restarted"
        );
        assert_eq!(d.feed(false, t0 + Duration::from_secs(16)), Some(false));
    }

    #[test]
    fn rate_of_change_per_minute() {
        let t0 = Instant::now();
        let mut r = Rate::new(Some(10.0), None, 2.0, Duration::from_secs(60));
        let s = |x: u64| t0 + Duration::from_secs(x);
        assert_eq!(r.eval(false, s(0), 0.0), None);
        assert_eq!(r.eval(false, s(10), 1.0), None, "window not half full");
        assert_eq!(r.eval(false, s(30), 3.0), Some(false), "6 per minute");
        assert_eq!(r.eval(false, s(60), 12.0), Some(true), "12 per minute");
        // Measured from the newest sample at or before now - 60 s.
        assert_eq!(
            r.eval(true, s(90), 16.0),
            Some(true),
            "(16-3)/60 s = 13 per minute"
        );
        assert_eq!(
            r.eval(true, s(150), 24.5),
            Some(true),
            "8.5 per minute: inside the deadband"
        );
        assert_eq!(
            r.eval(true, s(210), 32.0),
            Some(false),
            "(32-24.5)/60 s = 7.5 < 10 - 2"
        );
        let mut f = Rate::new(None, Some(0.5), 0.0, Duration::from_secs(60));
        assert_eq!(f.eval(false, s(0), 10.0), None);
        assert_eq!(
            f.eval(false, s(60), 9.4),
            Some(true),
            "falls 0.6 per minute"
        );
    }

    #[test]
    fn discrete() {
        let d = Discrete { active_when: false };
        assert!(d.eval(0.0));
        assert!(!d.eval(1.0));
        assert!(Discrete { active_when: true }.eval(1.0));
    }
}
