//! Data-driven alarm scenarios: every `tests/scenarios/*.toml` file gives channels, rules and
//! timed steps (samples, bad readings, actions, site-mode changes, restarts); each step lists
//! exactly the transitions it must produce (`"{alarm} {transition} {state}"`, in published
//! order, followed by `[repeat]`, `[chattering]` or `[consequence of ALARM]` when the transition
//! is not notified one by one) and optionally the states alarms must be in afterwards.
//!
//! The engine runs on a virtual clock (no sleeping); every step ends with a tick. Every batch of
//! events is journaled exactly as the engine task does, and `restart = true` rebuilds the engine
//! from the journal alone (as after `kill -9`: no clean shutdown).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use hazgate::config::{self, Resolved};
use hazgate::model::{BadReason, ChannelId, Reading, Sample, SiteMode};
use hazgate::rules::journal::Journal;
use hazgate::rules::{self, Action, Command, Engine};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    description: String,
    /// RFC 3339 wall time of `at = 0s`.
    #[serde(default)]
    start: Option<String>,
    channels: Vec<Chan>,
    /// TOML appended to the generated configuration (rules, [alarms] …).
    #[serde(default)]
    config: String,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Chan {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    range: Option<[f64; 2]>,
    #[serde(default)]
    bool: bool,
    #[serde(default = "default_max_age")]
    max_age: String,
    /// Device (default `d`); the channel id is `a.{device}.{name}`.
    #[serde(default)]
    device: Option<String>,
    /// Source of the device (default `bus`; a device's first channel decides).
    #[serde(default)]
    source: Option<String>,
}

fn default_max_age() -> String {
    "1h".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    at: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    restart: bool,
    #[serde(default)]
    mode: Option<ModeStep>,
    #[serde(default)]
    act: Option<ActStep>,
    /// `channel = value` good samples (channel ids relative: `lel` means `a.d.lel`).
    #[serde(default)]
    set: BTreeMap<String, f64>,
    /// Channels that read Bad (communication failure).
    #[serde(default)]
    bad: Vec<String>,
    /// Channels whose loop is broken while the device answers (Bad: raw value out of range).
    #[serde(default)]
    broken: Vec<String>,
    /// Exactly these transitions, in order.
    expect: Vec<String>,
    /// Alarm states after the step.
    #[serde(default)]
    states: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeStep {
    mode: String,
    #[serde(default = "default_reason")]
    reason: String,
}

fn default_reason() -> String {
    "scenario".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActStep {
    alarm: String,
    action: String,
    #[serde(default = "default_by")]
    by: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    reason: String,
    /// The refusal expected, if any (substring of the error).
    #[serde(default)]
    refused: Option<String>,
}

fn default_by() -> String {
    "operator".into()
}

/// `lel` is `a.d.lel`; `u1.lel` is `a.u1.lel` (device `u1`); longer ids are as written.
fn full_id(name: &str) -> String {
    match name.matches('.').count() {
        0 => format!("a.d.{name}"),
        1 if !name.starts_with("device.") && !name.starts_with("source.") => format!("a.{name}"),
        _ => name.to_owned(),
    }
}

fn alarm_id(name: &str) -> String {
    match name.split_once(':') {
        Some((ch, cond)) if ch != "site" => format!("{}:{cond}", full_id(ch)),
        _ => name.to_owned(),
    }
}

/// The inverse of [`alarm_id`], for printing.
fn short_id(id: &str) -> &str {
    if let Some(rest) = id.strip_prefix("a.d.") {
        rest
    } else if id.starts_with("a.")
        && id
            .split(':')
            .next()
            .is_some_and(|c| c.matches('.').count() == 2)
    {
        &id[2..]
    } else {
        id
    }
}

fn build_config(s: &Scenario, file: &Path) -> Resolved {
    let mut t = String::from("[site]\nid = \"s\"\n");
    let dev = |c: &Chan| c.device.clone().unwrap_or_else(|| "d".into());
    let mut sources: Vec<String> = Vec::new();
    let mut devices: Vec<(String, String)> = Vec::new();
    for c in &s.channels {
        let src = c.source.clone().unwrap_or_else(|| "bus".into());
        if !sources.contains(&src) {
            sources.push(src.clone());
        }
        if !devices.iter().any(|(d, _)| *d == dev(c)) {
            devices.push((dev(c), src));
        }
    }
    for (i, src) in sources.iter().enumerate() {
        t.push_str(&format!(
            "[[sources]]\nkind = \"modbus_tcp\"\nid = \"{src}\"\naddress = \"127.0.0.1:{}\"\n",
            1502 + i
        ));
    }
    for (u, (d, src)) in devices.iter().enumerate() {
        t.push_str(&format!(
            "[[devices]]\nid = \"{d}\"\narea = \"a\"\nsource = \"{src}\"\nunit_id = {}\n",
            u + 1
        ));
        for (i, c) in s.channels.iter().enumerate().filter(|(_, c)| dev(c) == *d) {
            t.push_str(&format!(
                "[[devices.registers]]\nname = \"{}\"\naddress = {i}\n",
                c.name
            ));
            if c.bool {
                t.push_str("table = \"discrete\"\ntype = \"bool\"\n");
            } else {
                // Scenario files feed Bad samples directly; the code gives gas channels the
                // path to a fault that `check-config` asks for.
                t.push_str("table = \"input\"\nfault_codes = [65535]\n");
            }
            if let Some(k) = &c.kind {
                t.push_str(&format!("kind = \"{k}\"\n"));
            }
            if let Some(u) = &c.unit {
                t.push_str(&format!("unit = \"{u}\"\n"));
            }
            if let Some([lo, hi]) = c.range {
                t.push_str(&format!("range = [{lo}, {hi}]\n"));
            }
        }
    }
    for c in &s.channels {
        t.push_str(&format!(
            "[[channels]]\nid = \"a.{}.{}\"\nmax_age = \"{}\"\n",
            dev(c),
            c.name,
            c.max_age
        ));
    }
    t.push_str(&s.config);
    let cfg = config::parse(&t, file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    match config::validate(&cfg, Path::new(".")) {
        Ok((r, mut warnings)) => {
            // Scenarios play chatter on purpose: a gas rule without deadband or on-delay is
            // the subject of the test there, not a mistake.
            warnings.retain(|w| !w.message.contains("neither `deadband`"));
            assert!(
                warnings.is_empty(),
                "{}: warnings {warnings:?}",
                file.display()
            );
            r
        }
        Err(p) => panic!("{}: config problems: {p:#?}", file.display()),
    }
}

struct Run {
    cfg: Resolved,
    dir: PathBuf,
    engine: Engine,
    journal: Journal,
}

impl Run {
    fn persist(&mut self, events: &[hazgate::model::AlarmEvent]) {
        if !events.is_empty() {
            self.journal
                .append(&rules::records(&self.engine, events))
                .expect("journal append");
        }
    }
}

fn parse_start(s: &Option<String>) -> SystemTime {
    match s {
        None => SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000),
        Some(t) => {
            let d = chrono::DateTime::parse_from_rfc3339(t).expect("start is RFC 3339");
            SystemTime::from(d)
        }
    }
}

fn run_scenario(file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let sc: Scenario = toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    assert!(!sc.description.is_empty());
    let cfg = build_config(&sc, file);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let wall0 = parse_start(&sc.start);
    let (engine, journal, _) =
        rules::recover(&cfg, t0, tmp.path(), wall0).map_err(|e| e.to_string())?;
    let mut run = Run {
        cfg,
        dir: tmp.path().to_owned(),
        engine,
        journal,
    };
    let mut last = Duration::ZERO;
    let mut last_seq = 0u64;
    // When each alarm was last raised (the journal keeps it across restarts).
    let mut raised: BTreeMap<String, SystemTime> = BTreeMap::new();
    for (n, step) in sc.steps.iter().enumerate() {
        let at = humantime::parse_duration(&step.at).map_err(|e| format!("step {n}: at: {e}"))?;
        assert!(at >= last, "step {n}: time goes backwards");
        last = at;
        let (now, wall) = (t0 + at, wall0 + at);
        let ctx = format!("{} step {n} (at {}) {}", file.display(), step.at, step.note);
        let mut events = Vec::new();
        if step.restart {
            // As after kill -9: the engine is gone; only the journal remains.
            let (engine, journal, _) =
                rules::recover(&run.cfg, now, &run.dir, wall).map_err(|e| e.to_string())?;
            run.engine = engine;
            run.journal = journal;
        }
        if let Some(m) = &step.mode {
            let mode = SiteMode::parse(&m.mode).ok_or_else(|| format!("{ctx}: bad mode"))?;
            let ev = run
                .engine
                .command(
                    &Command::SetMode {
                        mode,
                        by: "operator".into(),
                        reason: m.reason.clone(),
                    },
                    now,
                    wall,
                )
                .map_err(|e| format!("{ctx}: {e}"))?;
            run.persist(&ev);
            events.extend(ev);
        }
        if let Some(a) = &step.act {
            let action = match a.action.as_str() {
                "ack" => Action::Ack,
                "reset" => Action::Reset,
                "shelve" => Action::Shelve {
                    duration: humantime::parse_duration(a.duration.as_deref().unwrap_or(""))
                        .map_err(|e| format!("{ctx}: {e}"))?,
                },
                "unshelve" => Action::Unshelve,
                "out-of-service" => Action::OutOfService {
                    reason: a.reason.clone(),
                },
                "return" => Action::Return,
                other => return Err(format!("{ctx}: unknown action {other}")),
            };
            let cmd = Command::Act {
                alarm: alarm_id(&a.alarm),
                action,
                by: a.by.clone(),
                comment: a.comment.clone(),
            };
            match (run.engine.command(&cmd, now, wall), &a.refused) {
                (Ok(ev), None) => {
                    run.persist(&ev);
                    events.extend(ev);
                }
                (Err(e), Some(want)) if e.to_string().contains(want.as_str()) => {}
                (r, want) => {
                    return Err(format!(
                        "{ctx}: command result {r:?}, expected refusal {want:?}"
                    ));
                }
            }
        }
        // One batch, as one poll: good readings, then communication failures, then broken loops.
        let mut samples = Vec::new();
        for (ch, v) in &step.set {
            samples.push(Sample {
                channel: ChannelId::new(full_id(ch)),
                ts: wall,
                reading: Reading::Good(*v),
            });
        }
        for ch in &step.bad {
            samples.push(Sample {
                channel: ChannelId::new(full_id(ch)),
                ts: wall,
                reading: Reading::Bad(BadReason::Comm {
                    detail: "timeout".into(),
                }),
            });
        }
        for ch in &step.broken {
            samples.push(Sample {
                channel: ChannelId::new(full_id(ch)),
                ts: wall,
                reading: Reading::Bad(BadReason::OutOfRange { raw: 2.1 }),
            });
        }
        let mut batch = if samples.is_empty() {
            Vec::new()
        } else {
            run.engine.on_batch(&samples, now)
        };
        let (_, ev) = run.engine.tick(now, wall);
        batch.extend(ev);
        rules::order(&mut batch);
        run.persist(&batch);
        events.extend(batch);
        let got: Vec<String> = events
            .iter()
            .map(|e| {
                let mut line = format!(
                    "{} {} {}",
                    short_id(&e.alarm),
                    e.transition.as_str(),
                    e.state.as_str()
                );
                // How it reaches people, when not one notification per transition.
                if e.notice.repeat {
                    line.push_str(" [repeat]");
                }
                if e.notice.chattering {
                    line.push_str(" [chattering]");
                }
                if let Some(c) = &e.notice.consequence_of {
                    line.push_str(&format!(" [consequence of {}]", short_id(c)));
                }
                line
            })
            .collect();
        let want: Vec<String> = step.expect.clone();
        if got != want {
            return Err(format!("{ctx}:\n  expected {want:#?}\n  got      {got:#?}"));
        }
        // The raise time travels with every transition of the episode (regulator records keep
        // `alarm_time` the raise time on acknowledgement, reset and clear records).
        for e in &events {
            use hazgate::model::Transition as T;
            match e.transition {
                T::Raised | T::Fault => {
                    if e.raised_at != Some(e.ts) {
                        return Err(format!("{ctx}: {} raised_at {:?}", e.alarm, e.raised_at));
                    }
                    raised.insert(e.alarm.clone(), e.ts);
                }
                T::Acknowledged | T::Reset | T::Cleared | T::FaultCleared => {
                    if let Some(t) = raised.get(&e.alarm) {
                        if e.raised_at != Some(*t) {
                            return Err(format!(
                                "{ctx}: {} {} carries raised_at {:?}, raised at {t:?}",
                                e.alarm,
                                e.transition.as_str(),
                                e.raised_at
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        // Sequence numbers increase, across restarts too.
        for e in &events {
            if e.seq <= last_seq {
                return Err(format!("{ctx}: sequence number {} after {last_seq}", e.seq));
            }
            last_seq = e.seq;
        }
        for (alarm, state) in &step.states {
            let v = run
                .engine
                .view(&alarm_id(alarm))
                .ok_or_else(|| format!("{ctx}: no alarm {alarm}"))?;
            if v.state.as_str() != state {
                return Err(format!(
                    "{ctx}: {alarm} is {} , expected {state}",
                    v.state.as_str()
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_scenario_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/scenarios exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected the scenario files, found {}",
        files.len()
    );
    let failures: Vec<String> = files.iter().filter_map(|f| run_scenario(f).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
