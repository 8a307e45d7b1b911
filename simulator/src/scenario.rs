//! Scenario files: events scripted over simulated time, and the alarm timeline a gateway must
//! produce in answer.
//!
//! ```toml
//! name = "gas-leak"
//! description = "A leak near gd101 builds up to 60 %LEL and dies down"
//! site = "demo"          # the built-in demo site, or a site spec path relative to this file
//! duration = "150s"      # simulated time the scenario lasts (one cycle when `repeat`)
//! repeat = false         # start again after `duration` (every device and publisher reset)
//! speed = 1.0            # simulated seconds per real second when run (CLI `--speed` overrides)
//! test_speed = 10.0      # speed-up used by the gateway test (tests/sim_scenarios.rs)
//! start_time = "10:00"   # site time of day at t = 0 (overrides the site's)
//!
//! [[events]]
//! at = "20s"
//! device = "gd101"
//! point = "lel"
//! ramp = { to = 60, over = "30s" }
//!
//! [[expect]]             # the gateway's answer, in simulated time
//! at = "35s"
//! alarm = "tankfarm.gd101.lel:H"
//! transition = "raised"  # raised | cleared | fault | fault_cleared
//! tolerance = "8s"       # default 10s
//! ```
//!
//! An event has one action: `set` (engineering value), `raw` (raw register value, e.g. 1000 µA
//! on a 4–20 mA loop), `ramp` (from the present value), `hold` (stuck at the present value),
//! `clear` (back to the signal), `silent`, `delay` (answer delay in **real** time: it acts on the
//! wire), `exception` (Modbus exception code, 0 to stop), `swap_words`, `reset` (every fault and
//! override of the device), `publisher_silent` (with `publisher`), or `site_mode` (a request to
//! the gateway, carried out by whoever runs the scenario: the demo, the test, or the operator).
//!
//! Invariants (checked by [`Scenario::from_toml_str`]): events are in time order and within
//! `duration`; each has exactly one action and the device/point/publisher that action needs;
//! speeds are finite and > 0; expectations name a known transition.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control::{ControlError, SimHandle};
use crate::signal::de_duration;

/// Errors from loading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading scenario {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Malformed TOML or a wrongly typed/unknown field.
    #[error("parsing scenario: {0}")]
    Parse(#[from] toml::de::Error),
    /// The scenario violates an invariant.
    #[error("invalid scenario {name:?}: {message}")]
    Invalid {
        /// Scenario name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// A scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (`--list-scenarios`).
    pub name: String,
    /// What it shows.
    pub description: String,
    /// `demo` or a site spec path (relative to the scenario file).
    #[serde(default = "demo_site")]
    pub site: String,
    /// Length of the scenario (of one cycle when `repeat`).
    #[serde(deserialize_with = "de_duration")]
    pub duration: Duration,
    /// Loop forever, resetting every device at the start of each cycle.
    #[serde(default)]
    pub repeat: bool,
    /// Simulated seconds per real second.
    #[serde(default = "one")]
    pub speed: f64,
    /// Speed used by the gateway test.
    #[serde(default = "ten")]
    pub test_speed: f64,
    /// Site time of day at t = 0.
    #[serde(default, deserialize_with = "crate::signal::de_time_of_day_opt")]
    pub start_time: Option<Duration>,
    /// The events, in time order.
    #[serde(default)]
    pub events: Vec<Event>,
    /// The alarm timeline expected from the gateway.
    #[serde(default)]
    pub expect: Vec<Expect>,
    /// Alarm ids whose transitions the timeline check ignores (e.g. wall-clock windows).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// The file it was loaded from (for resolving `site`).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

fn demo_site() -> String {
    "demo".into()
}
fn one() -> f64 {
    1.0
}
fn ten() -> f64 {
    10.0
}

/// One scripted event.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Simulated time since the start (of the cycle).
    #[serde(deserialize_with = "de_duration")]
    pub at: Duration,
    /// What it stands for (logged).
    #[serde(default)]
    pub note: String,
    /// Target device.
    pub device: Option<String>,
    /// Target point (register or variable).
    pub point: Option<String>,
    /// Target publisher.
    pub publisher: Option<String>,
    /// Hold this engineering value.
    pub set: Option<f64>,
    /// Hold this raw value.
    pub raw: Option<f64>,
    /// Ramp from the present value.
    pub ramp: Option<RampTo>,
    /// Freeze at the present value.
    pub hold: Option<bool>,
    /// Back to the signal.
    pub clear: Option<bool>,
    /// Stop/resume answering and publishing.
    pub silent: Option<bool>,
    /// Answer delay (real time; zero = none).
    #[serde(default, deserialize_with = "de_duration_opt")]
    pub delay: Option<Duration>,
    /// Exception code for every request (0 = none).
    pub exception: Option<u8>,
    /// Reverse the words of multi-register values.
    pub swap_words: Option<bool>,
    /// Clear every fault and override of the device.
    pub reset: Option<bool>,
    /// Stop/resume a publisher.
    pub publisher_silent: Option<bool>,
    /// Ask the gateway to set the site mode (`normal`, `suspended`, `maintenance`).
    pub site_mode: Option<String>,
}

/// Target of a ramp.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampTo {
    /// Final engineering value.
    pub to: f64,
    /// Length in simulated time.
    #[serde(deserialize_with = "de_duration")]
    pub over: Duration,
}

/// One expected alarm transition.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Simulated time.
    #[serde(deserialize_with = "de_duration")]
    pub at: Duration,
    /// Alarm id (`tankfarm.gd101.lel:H`, a composite rule id, …).
    pub alarm: String,
    /// `raised`, `cleared`, `fault` or `fault_cleared`.
    pub transition: String,
    /// Allowed distance from `at`, in simulated time.
    #[serde(default = "ten_secs", deserialize_with = "de_duration")]
    pub tolerance: Duration,
}

fn ten_secs() -> Duration {
    Duration::from_secs(10)
}

fn de_duration_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// Transitions a timeline may name.
pub const TRANSITIONS: [&str; 4] = ["raised", "cleared", "fault", "fault_cleared"];

/// A request to the gateway made by a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayAction {
    /// Set the site mode.
    SiteMode {
        /// `normal`, `suspended` or `maintenance`.
        mode: String,
        /// Why (the event's note).
        reason: String,
    },
}

impl Scenario {
    /// Parses and validates a scenario.
    pub fn from_toml_str(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut s = Self::from_toml_str(&text)?;
        s.path = Some(path.to_owned());
        Ok(s)
    }

    /// Every `*.toml` scenario of a directory, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, ScenarioError> {
        let io = |source| ScenarioError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut paths = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io)? {
            let p = e.map_err(io)?.path();
            if p.extension().is_some_and(|x| x == "toml") {
                paths.push(p);
            }
        }
        paths.sort();
        paths.iter().map(|p| Self::load(p)).collect()
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |message: String| {
            Err(ScenarioError::Invalid {
                name: self.name.clone(),
                message,
            })
        };
        for (what, v) in [("speed", self.speed), ("test_speed", self.test_speed)] {
            if !v.is_finite() || v <= 0.0 {
                return bad(format!("{what} must be > 0"));
            }
        }
        if self.duration.is_zero() {
            return bad("duration must be > 0".into());
        }
        let mut last = Duration::ZERO;
        for (i, e) in self.events.iter().enumerate() {
            if e.at < last {
                return bad(format!("events[{i}] at {:?} is before the previous", e.at));
            }
            if e.at > self.duration {
                return bad(format!("events[{i}] is after the end of the scenario"));
            }
            last = e.at;
            let (needs_device, needs_point, needs_publisher) =
                e.needs().map_err(|m| ScenarioError::Invalid {
                    name: self.name.clone(),
                    message: format!("events[{i}]: {m}"),
                })?;
            if needs_device != e.device.is_some()
                || needs_point != e.point.is_some()
                || needs_publisher != e.publisher.is_some()
            {
                return bad(format!(
                    "events[{i}]: this action needs {}",
                    match (needs_device, needs_point, needs_publisher) {
                        (true, true, _) => "`device` and `point` only",
                        (true, false, _) => "`device` only",
                        (_, _, true) => "`publisher` only",
                        _ => "no device, point or publisher",
                    }
                ));
            }
            if let Some(m) = &e.site_mode {
                if !["normal", "suspended", "maintenance"].contains(&m.as_str()) {
                    return bad(format!("events[{i}]: unknown site mode {m:?}"));
                }
            }
        }
        for (i, x) in self.expect.iter().enumerate() {
            if !TRANSITIONS.contains(&x.transition.as_str()) {
                return bad(format!(
                    "expect[{i}]: transition must be one of {TRANSITIONS:?}"
                ));
            }
        }
        Ok(())
    }

    /// The site spec path when `site` is not `demo`.
    pub fn site_path(&self) -> Option<PathBuf> {
        (self.site != "demo").then(|| {
            self.path
                .as_deref()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."))
                .join(&self.site)
        })
    }
}

impl Event {
    /// `(device, point, publisher)` needed by the event's single action.
    fn needs(&self) -> Result<(bool, bool, bool), String> {
        let actions = [
            (self.set.is_some(), (true, true, false)),
            (self.raw.is_some(), (true, true, false)),
            (self.ramp.is_some(), (true, true, false)),
            (self.hold.is_some(), (true, true, false)),
            (self.clear.is_some(), (true, true, false)),
            (self.silent.is_some(), (true, false, false)),
            (self.delay.is_some(), (true, false, false)),
            (self.exception.is_some(), (true, false, false)),
            (self.swap_words.is_some(), (true, false, false)),
            (self.reset.is_some(), (true, false, false)),
            (self.publisher_silent.is_some(), (false, false, true)),
            (self.site_mode.is_some(), (false, false, false)),
        ];
        let set: Vec<_> = actions.iter().filter(|(on, _)| *on).collect();
        match set.as_slice() {
            [(_, needs)] => Ok(*needs),
            [] => Err("no action".into()),
            _ => Err("more than one action".into()),
        }
    }

    /// Applies the event to the simulation; a gateway request goes to `gateway`.
    pub fn apply(
        &self,
        sim: &SimHandle,
        gateway: Option<&mpsc::Sender<GatewayAction>>,
    ) -> Result<(), ControlError> {
        let dev = self.device.as_deref().unwrap_or_default();
        let point = self.point.as_deref().unwrap_or_default();
        if let Some(v) = self.set {
            sim.set_value(dev, point, v)?;
        } else if let Some(v) = self.raw {
            sim.set_raw(dev, point, v)?;
        } else if let Some(r) = self.ramp {
            sim.ramp_to(dev, point, r.to, r.over)?;
        } else if self.hold == Some(true) {
            sim.hold(dev, point)?;
        } else if self.hold.is_some() || self.clear.is_some() {
            sim.clear_override(dev, point)?;
        } else if let Some(on) = self.silent {
            sim.set_silent(dev, on)?;
        } else if let Some(d) = self.delay {
            sim.set_delay(dev, d)?;
        } else if let Some(code) = self.exception {
            sim.set_exception(dev, (code != 0).then_some(code))?;
        } else if let Some(on) = self.swap_words {
            sim.set_swap_words(dev, on)?;
        } else if self.reset.is_some() {
            sim.reset(dev)?;
        } else if let Some(on) = self.publisher_silent {
            sim.set_publisher_silent(self.publisher.as_deref().unwrap_or_default(), on)?;
        } else if let Some(mode) = &self.site_mode {
            let action = GatewayAction::SiteMode {
                mode: mode.clone(),
                reason: if self.note.is_empty() {
                    "scenario".into()
                } else {
                    self.note.clone()
                },
            };
            match gateway {
                Some(tx) => {
                    if let Err(e) = tx.try_send(action) {
                        tracing::warn!(error = %e, "the gateway request could not be queued; dropped");
                    }
                }
                None => tracing::warn!(
                    ?action,
                    "the scenario asks the gateway for this; no gateway is attached, do it by hand"
                ),
            }
        }
        Ok(())
    }
}

/// Runs `scenario` against a running simulation until it ends (or forever when it repeats),
/// or until `cancel`. Event times are simulated time since the simulation started (the first
/// cycle) plus `k × duration` for cycle `k`. An event naming an unknown device or point is
/// logged and skipped (the scenario was validated against the site by [`check_against`]).
pub async fn run(
    scenario: Scenario,
    sim: SimHandle,
    gateway: Option<mpsc::Sender<GatewayAction>>,
    speed: f64,
    cancel: CancellationToken,
) {
    let mut cycle: u32 = 0;
    loop {
        let base = scenario.duration * cycle;
        if cycle > 0 {
            sim.reset_all();
            tracing::info!(scenario = %scenario.name, cycle, "scenario starts again");
        }
        for e in &scenario.events {
            let due = base + e.at;
            let now = sim.sim_time();
            if due > now {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep((due - now).div_f64(speed)) => {}
                }
            }
            tracing::info!(scenario = %scenario.name, at = ?e.at, note = %e.note, "scenario event");
            if let Err(err) = e.apply(&sim, gateway.as_ref()) {
                tracing::warn!(scenario = %scenario.name, %err, "scenario event skipped");
            }
        }
        if !scenario.repeat {
            return;
        }
        let end = base + scenario.duration;
        let now = sim.sim_time();
        if end > now {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep((end - now).div_f64(speed)) => {}
            }
        }
        cycle += 1;
    }
}

/// Checks that every device, point and publisher an event names exists in the running site.
pub fn check_against(scenario: &Scenario, sim: &SimHandle) -> Result<(), String> {
    for (i, e) in scenario.events.iter().enumerate() {
        if let Some(d) = &e.device {
            let r = match &e.point {
                Some(p) => sim.value(d, p).map(|_| ()),
                None => sim
                    .device_ids()
                    .contains(d)
                    .then_some(())
                    .ok_or_else(|| ControlError::UnknownDevice(d.clone())),
            };
            r.map_err(|err| format!("scenario {:?} events[{i}]: {err}", scenario.name))?;
        }
        if let Some(p) = &e.publisher {
            if !sim.publisher_ids().contains(p) {
                return Err(format!(
                    "scenario {:?} events[{i}]: unknown publisher {p:?}",
                    scenario.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const OK: &str = r#"
        name = "t"
        description = "d"
        duration = "60s"
        [[events]]
        at = "1s"
        device = "gd101"
        point = "lel"
        ramp = { to = 60, over = "10s" }
        [[events]]
        at = "2s"
        device = "gd101"
        silent = true
        [[events]]
        at = "3s"
        site_mode = "suspended"
        [[expect]]
        at = "5s"
        alarm = "a:H"
        transition = "raised"
    "#;

    #[test]
    fn parses_and_validates() {
        let s = Scenario::from_toml_str(OK).unwrap();
        assert_eq!((s.speed, s.test_speed, s.events.len()), (1.0, 10.0, 3));
        assert_eq!(s.expect[0].tolerance, Duration::from_secs(10));
        for (text, needle) in [
            (
                OK.replace("at = \"2s\"", "at = \"0s\""),
                "before the previous",
            ),
            (
                OK.replace("silent = true", "silent = true\nreset = true"),
                "more than one",
            ),
            (OK.replace("silent = true", ""), "no action"),
            (
                OK.replace("site_mode = \"suspended\"", "site_mode = \"x\""),
                "unknown site mode",
            ),
            (OK.replace("point = \"lel\"", ""), "`device` and `point`"),
            (OK.replace("\"raised\"", "\"up\""), "transition"),
            (OK.replace("at = \"3s\"", "at = \"3m\""), "after the end"),
            (OK.replace("duration", "length"), "unknown field"),
        ] {
            let e = Scenario::from_toml_str(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should contain {needle}");
        }
    }
}
