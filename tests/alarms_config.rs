//! Alarm configuration mistakes are reported together, each with its path.

use std::path::Path;

use hazgate::config::{self, Severity};

const BASE: &str = r#"
[site]
id = "s"
[[sources]]
kind = "modbus_tcp"
id = "bus"
address = "127.0.0.1:1502"
[[devices]]
id = "d"
area = "a"
source = "bus"
[[devices.registers]]
name = "lel"
table = "input"
address = 0
kind = "combustible_gas"
unit = "%LEL"
fault_codes = [65535]
[[devices.registers]]
name = "h2s"
table = "input"
address = 1
kind = "toxic_gas"
unit = "%OEL"
fault_codes = [65535]
"#;

#[test]
fn every_alarm_mistake_with_its_path() {
    let text = format!(
        r#"{BASE}
[[rules]]
channel = "a.d.lel"
h = 20
deadband = 1
deadband_pct = 2
[[rules]]
channel = "a.d.h2s"
h = 120
hh = 150
[alarms]
retention = "12h"
[alarms.schedule]
timezone = "Mars/Olympus"
holidays = ["2026-13-01"]
[[alarms.schedule.windows]]
name = "night"
start = "22:00"
end = "6am"
[[alarms.tokens]]
name = "a"
role = "operator"
sha256 = "abc"
[[alarms.discrete]]
channel = "a.d.nope"
name = "H"
[[alarms.composite]]
id = "c1"
expr = "a.d.lel > 5 and a.d.missing"
[[alarms.composite]]
id = "c2"
expr = "(a.d.lel > 5"
[[alarms.composite]]
id = "c3"
expr = "window(lunch) and a.d.lel > 1"
"#
    );
    let cfg = config::parse(&text, Path::new("x.toml")).expect("parses");
    let problems = config::validate(&cfg, Path::new(".")).expect_err("invalid");
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let want = [
        "error: rules[0].deadband_pct: give either `deadband` or `deadband_pct`",
        "error: rules[0].deadband_pct: channel `a.d.lel` has no range",
        "warning: rules[1].h: level-1 toxic gas alarm above 100 % OEL",
        "error: alarms.retention: must be at least 1 day",
        "error: alarms.schedule.timezone: unknown time zone `Mars/Olympus`",
        "error: alarms.schedule.holidays[0]: `2026-13-01` is not a YYYY-MM-DD date",
        "error: alarms.schedule.windows[0].end: `6am` is not HH:MM",
        "error: alarms.tokens[0].sha256: must be 64 hex digits",
        "error: alarms.discrete[0].channel: unknown channel `a.d.nope`",
        "error: alarms.discrete[0].name: `H` is reserved",
        "error: alarms.composite[0].expr: unknown channel `a.d.missing`",
        "error: alarms.composite[1].expr: at character 13: expected `)` at the end",
        "error: alarms.composite[2].expr: unknown window `lunch`",
    ];
    for w in want {
        assert!(
            text.iter().any(|t| t.starts_with(w)),
            "missing `{w}` in:\n{}",
            text.join("\n")
        );
    }
    assert!(problems.iter().any(|p| p.severity == Severity::Warning));
}

#[test]
fn gas_limits_latch_by_default_and_example_rules_are_valid() {
    let text = format!("{BASE}\n[[rules]]\nchannel = \"a.d.lel\"\nh = 20\nhh = 40\ndeadband = 1\n");
    let cfg = config::parse(&text, Path::new("x.toml")).expect("parses");
    let (r, warnings) = config::validate(&cfg, Path::new(".")).expect("valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut e = hazgate::rules::Engine::new(&r, std::time::Instant::now());
    let s = |v| hazgate::model::Sample {
        channel: hazgate::model::ChannelId::new("a.d.lel"),
        ts: std::time::SystemTime::now(),
        reading: hazgate::model::Reading::Good(v),
    };
    let now = std::time::Instant::now();
    e.on_sample(&s(25.0), now);
    e.on_sample(&s(0.0), now);
    assert_eq!(
        e.life("a.d.lel:H").map(|l| l.state()),
        Some(hazgate::model::AlarmState::Latched)
    );
}
