//! `[rule_defaults.<kind>]`: every channel of a kind gets its limit alarms without a
//! `[[rules]]` entry; an explicit rule overrides field by field; a channel opts out with a
//! reason; the compiled plan says where each limit came from.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use hazgate::config::{self, Resolved, Severity};
use hazgate::model::{AlarmState, ChannelId, Priority, Reading, Sample};
use hazgate::rules::plan::{AlarmDef, Detector};

/// Four combustible-gas detectors in %LEL (range 0-100), one in %VOL, one oxygen channel.
const SITE: &str = r#"
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
name = "gd1"
table = "input"
address = 0
kind = "combustible_gas"
unit = "%LEL"
range = [0, 100]
fault_codes = [65535]
[[devices.registers]]
name = "gd2"
table = "input"
address = 1
kind = "combustible_gas"
unit = "%LEL"
range = [0, 100]
fault_codes = [65535]
[[devices.registers]]
name = "gd3"
table = "input"
address = 2
kind = "combustible_gas"
unit = "%LEL"
range = [0, 100]
fault_codes = [65535]
[[devices.registers]]
name = "gd4"
table = "input"
address = 3
kind = "combustible_gas"
unit = "%VOL"
range = [0, 100]
fault_codes = [65535]
[[devices.registers]]
name = "o2"
table = "input"
address = 4
kind = "oxygen"
unit = "%VOL"
range = [0, 25]
fault_codes = [65535]
"#;

const DEFAULTS: &str = r#"
[rule_defaults.combustible_gas]
unit = "%LEL"
h = 20
hh = 40
deadband_pct = 2
on_delay = "2s"
response = "疏散人员，切断气源"
"#;

fn load(extra: &str) -> Result<(Resolved, Vec<String>), Vec<String>> {
    let text = format!("{SITE}{extra}");
    let cfg = config::parse(&text, Path::new("x.toml")).map_err(|e| vec![e.to_string()])?;
    match config::validate(&cfg, Path::new(".")) {
        Ok((r, w)) => Ok((r, w.iter().map(ToString::to_string).collect())),
        Err(p) => Err(p
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(ToString::to_string)
            .collect()),
    }
}

fn alarm<'a>(r: &'a Resolved, id: &str) -> &'a AlarmDef {
    r.plan
        .alarms
        .iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("no alarm {id} in {:#?}", ids(r)))
}

fn ids(r: &Resolved) -> Vec<&str> {
    r.plan.alarms.iter().map(|a| a.id.as_str()).collect()
}

#[test]
fn a_channel_of_the_kind_gets_the_defaults_without_a_rule() {
    let (r, _) = load(DEFAULTS).expect("valid");
    let hh = alarm(&r, "a.d.gd1:HH");
    assert_eq!(hh.limit, Some(40.0));
    assert_eq!(hh.priority, Priority::Critical);
    assert!(hh.latching, "gas alarms latch by default");
    assert_eq!(hh.on_delay, Duration::from_secs(2));
    assert_eq!(hh.response.as_deref(), Some("疏散人员，切断气源"));
    assert_eq!(
        hh.detector,
        Detector::Limit {
            limit: 40.0,
            high: true,
            deadband: 2.0
        },
        "2 % of a 0-100 span"
    );
    assert_eq!(hh.origin, "rule_defaults.combustible_gas.hh");
    for id in ["a.d.gd2:H", "a.d.gd2:HH", "a.d.gd3:H", "a.d.gd3:HH"] {
        alarm(&r, id);
    }
    // The engine runs them: the on-delay holds, then the alarm is raised and latches.
    let mut e = hazgate::rules::Engine::new(&r, Instant::now());
    let t0 = Instant::now();
    let s = |v| Sample {
        channel: ChannelId::new("a.d.gd2"),
        ts: SystemTime::now(),
        reading: Reading::Good(v),
    };
    e.on_sample(&s(45.0), t0);
    assert_eq!(
        e.life("a.d.gd2:HH").map(|l| l.state()),
        Some(AlarmState::Normal)
    );
    e.tick(t0 + Duration::from_secs(3), SystemTime::now());
    e.on_sample(&s(45.0), t0 + Duration::from_secs(3));
    e.on_sample(&s(0.0), t0 + Duration::from_secs(4));
    assert_eq!(
        e.life("a.d.gd2:HH").map(|l| l.state()),
        Some(AlarmState::Latched)
    );
}

#[test]
fn a_unit_the_defaults_are_not_for_gets_none_and_is_named() {
    let (r, warnings) = load(DEFAULTS).expect("valid");
    assert!(
        !ids(&r).iter().any(|i| i.starts_with("a.d.gd4:")),
        "a %VOL detector must not take %LEL limits: {:?}",
        ids(&r)
    );
    assert!(
        warnings.iter().any(
            |w| w.starts_with("warning: rule_defaults.combustible_gas.unit:")
                && w.contains("a.d.gd4")
        ),
        "{warnings:#?}"
    );
    let text = config::plan::describe(&r.plan, &r.channels, r.site.language);
    assert!(text.contains("a.d.gd4"), "listed as unguarded:\n{text}");
}

#[test]
fn an_explicit_rule_overrides_field_by_field() {
    let (r, _) = load(&format!(
        "{DEFAULTS}\n[[rules]]\nchannel = \"a.d.gd1\"\nh = 10\non_delay = \"0s\"\ndeadband = 0.5\n"
    ))
    .expect("valid");
    let h = alarm(&r, "a.d.gd1:H");
    let hh = alarm(&r, "a.d.gd1:HH");
    assert_eq!(h.limit, Some(10.0));
    assert_eq!(h.origin, "rules[0].h");
    assert_eq!(hh.limit, Some(40.0), "hh still from the defaults");
    assert_eq!(hh.origin, "rule_defaults.combustible_gas.hh");
    assert_eq!(h.on_delay, Duration::ZERO, "overridden");
    assert_eq!(h.response.as_deref(), Some("疏散人员，切断气源"), "kept");
    assert_eq!(h.defaults_from.as_deref(), Some("combustible_gas"));
    assert!(matches!(h.detector, Detector::Limit { deadband, .. } if deadband == 0.5));
    let text = config::plan::describe(&r.plan, &r.channels, r.site.language);
    assert!(
        text.contains("rules[0].h") && text.contains("rule_defaults.combustible_gas.hh"),
        "{text}"
    );
    // An override that breaks the order is reported at the field that breaks it.
    let errors = load(&format!(
        "{DEFAULTS}\n[[rules]]\nchannel = \"a.d.gd1\"\nh = 45\n"
    ))
    .expect_err("h above the default hh");
    assert!(
        errors
            .iter()
            .any(|e| e
                .starts_with("error: rule_defaults.combustible_gas.hh: limits must be ordered")),
        "{errors:#?}"
    );
}

#[test]
fn opting_out_needs_a_reason_and_is_listed() {
    let (r, warnings) = load(&format!(
        "{DEFAULTS}\n[[rules]]\nchannel = \"a.d.gd3\"\nopt_out = \"calibration gas line, alarms from the DCS\"\n"
    ))
    .expect("valid");
    assert!(
        !ids(&r).iter().any(|i| i.starts_with("a.d.gd3:")),
        "{:?}",
        ids(&r)
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("warning: rules[0].opt_out:")
                && w.contains("calibration gas line")),
        "{warnings:#?}"
    );
    let text = config::plan::describe(&r.plan, &r.channels, r.site.language);
    assert!(text.contains("a.d.gd3: calibration gas line"), "{text}");
    let errors = load(&format!(
        "{DEFAULTS}\n[[rules]]\nchannel = \"a.d.gd3\"\nopt_out = \" \"\n"
    ))
    .expect_err("an opt-out without a reason");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("error: rules[0].opt_out:")),
        "{errors:#?}"
    );
}

#[test]
fn the_defaults_form_compiles_to_the_same_alarms_as_the_long_form() {
    let (short, _) = load(DEFAULTS).expect("valid");
    let long_rules: String = ["gd1", "gd2", "gd3"]
        .iter()
        .map(|c| {
            format!(
                "[[rules]]\nchannel = \"a.d.{c}\"\nh = 20\nhh = 40\ndeadband_pct = 2\non_delay = \"2s\"\nresponse = \"疏散人员，切断气源\"\n"
            )
        })
        .collect();
    let (long, _) = load(&long_rules).expect("valid");
    let strip = |r: &Resolved| -> Vec<AlarmDef> {
        r.plan
            .alarms
            .iter()
            .cloned()
            .map(|mut a| {
                a.origin.clear();
                a.defaults_from = None;
                a
            })
            .collect()
    };
    assert_eq!(strip(&short), strip(&long));
}

#[test]
fn mistakes_in_the_defaults_name_their_path() {
    let errors = load("[rule_defaults.combustible_gas]\nh = 30\nhh = 20\ndeadband_pct = 80\n")
        .expect_err("invalid");
    for want in [
        "error: rule_defaults.combustible_gas.hh: limits must be ordered",
        "error: rule_defaults.combustible_gas.deadband_pct: must be between 0 and 50",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "{want}: {errors:#?}"
        );
    }
    let errors =
        load("[rule_defaults.combustible_gas]\nhh_limit = 50\n").expect_err("unknown field");
    assert!(
        errors.iter().any(|e| e.contains("hh_limit")),
        "a misspelt field is refused: {errors:#?}"
    );
    let (_, warnings) = load("[rule_defaults.toxic_gas]\nh = 100\n").expect("valid");
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("warning: rule_defaults.toxic_gas: no channel is of kind")),
        "{warnings:#?}"
    );
}
