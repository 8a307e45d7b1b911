//! `[[sources.channel_sets]]`: MQTT channels declared by template for a list of expected
//! devices validate to exactly what the channels written out one by one give (rule defaults
//! included), only expected channels are accepted, and mistakes name the set's path.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use hazgate::config::{self, ResolvedSource};
use hazgate::sources::mqtt::mapping::{Issue, Mapper};

const HEAD: &str = r#"
[site]
id = "s"

[rule_defaults.combustible_gas]
unit = "%LEL"
h = 20
hh = 40
deadband = 2
on_delay = "2s"

[[sources]]
kind = "mqtt"
id = "m"
address = "127.0.0.1:1883"
max_age = "45s"
[[sources.topics]]
filter = "site/{area}/{device}/{name}"
channel = "{area}.{device}.{name}"
status = "st"
"#;

const SETS: &str = r#"
[[sources.channel_sets]]
area = "tanks"
max_age = "30s"
devices = [{ prefix = "gt-", from = 8, to = 11, width = 3 }, "ox-a", { area = "dock", ids = ["gt-d1"] }]
[[sources.channel_sets.channels]]
name = "lel"
kind = "combustible_gas"
unit = "%LEL"
label = "{device} 可燃气"
range = [0, 100]
[[sources.channel_sets.channels]]
name = "temp"
unit = "°C"
max_age = "5m"

[[sources.channel_sets]]
id = "{area}.{device}.{name}"
devices = { area = "unit2", prefix = "h2s", from = 1, to = 2 }
[[sources.channel_sets.channels]]
name = "ppm"
kind = "toxic_gas"
unit = "ppm"
"#;

/// The same channels as `SETS`, written out one by one, in the same order.
fn long_form() -> String {
    let mut s = String::new();
    let devs = [
        ("tanks", "gt-008"),
        ("tanks", "gt-009"),
        ("tanks", "gt-010"),
        ("tanks", "gt-011"),
        ("tanks", "ox-a"),
        ("dock", "gt-d1"),
    ];
    for (area, dev) in devs {
        write!(
            s,
            "[[sources.channels]]\nid = \"{area}.{dev}.lel\"\narea = \"{area}\"\ndevice = \"{dev}\"\n\
             kind = \"combustible_gas\"\nunit = \"%LEL\"\nlabel = \"{dev} 可燃气\"\nrange = [0, 100]\nmax_age = \"30s\"\n\
             [[sources.channels]]\nid = \"{area}.{dev}.temp\"\narea = \"{area}\"\ndevice = \"{dev}\"\n\
             unit = \"°C\"\nmax_age = \"5m\"\n"
        )
        .expect("write to a String");
    }
    for dev in ["h2s1", "h2s2"] {
        write!(
            s,
            "[[sources.channels]]\nid = \"unit2.{dev}.ppm\"\narea = \"unit2\"\ndevice = \"{dev}\"\n\
             kind = \"toxic_gas\"\nunit = \"ppm\"\n"
        )
        .expect("write to a String");
    }
    s
}

fn resolved(text: &str) -> config::Resolved {
    let cfg = config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
    let (r, w) = config::validate(&cfg, Path::new(".")).unwrap_or_else(|p| panic!("{p:#?}"));
    assert!(w.is_empty(), "{w:#?}");
    r
}

fn problems(text: &str) -> Vec<String> {
    let cfg = config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
    match config::validate(&cfg, Path::new(".")) {
        Ok(_) => panic!("expected problems"),
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_channel_set_is_its_channels_written_out() {
    let compact = resolved(&format!("{HEAD}{SETS}"));
    let long = resolved(&format!("{HEAD}{}", long_form()));
    assert_eq!(compact.channels.len(), 6 * 2 + 2);
    // Everything downstream reads: channels, the compiled alarm plan (rule defaults applied
    // to the generated gas channels) and the source as the MQTT task receives it.
    assert_eq!(
        format!("{:?}", compact.channels),
        format!("{:?}", long.channels)
    );
    assert_eq!(format!("{:?}", compact.plan), format!("{:?}", long.plan));
    assert_eq!(
        format!("{:?}", compact.sources),
        format!("{:?}", long.sources)
    );
    let ch = |id: &str| {
        compact
            .channels
            .iter()
            .find(|c| c.id.as_str() == id)
            .unwrap_or_else(|| panic!("{id} missing"))
    };
    assert_eq!(ch("tanks.gt-008.lel").max_age, Duration::from_secs(30));
    assert_eq!(ch("tanks.gt-008.temp").max_age, Duration::from_secs(300));
    assert_eq!(ch("unit2.h2s1.ppm").max_age, Duration::from_secs(45));
    assert_eq!(ch("dock.gt-d1.lel").area, "dock");
    assert_eq!(ch("tanks.gt-010.lel").label, "gt-010 可燃气");
    // The defaults of combustible_gas reach every generated gas channel (6 × h and hh).
    let gas_alarms = compact
        .plan
        .alarms
        .iter()
        .filter(|a| format!("{:?}", a.channel).contains(".lel"))
        .count();
    assert_eq!(gas_alarms, 12, "{:#?}", compact.plan.alarms);
}

#[test]
fn only_expected_channels_are_accepted() {
    let r = resolved(&format!("{HEAD}{SETS}"));
    let src = r
        .sources
        .iter()
        .find_map(|s| match s {
            ResolvedSource::Mqtt(m) => Some(m),
            _ => None,
        })
        .expect("the MQTT source");
    let mapper = Mapper::new(&src.cfg).expect("compiles");
    let now = SystemTime::now();
    let ok = mapper.map("site/tanks/gt-011/lel", br#"{"value": 3, "st": 0}"#, now);
    assert_eq!(ok.samples.len(), 1, "{:?}", ok.issues);
    for topic in [
        "site/tanks/gt-012/lel",
        "site/tanks/gt-011/co",
        "site/dock/gt-008/lel",
    ] {
        let out = mapper.map(topic, br#"{"value": 3, "st": 0}"#, now);
        assert!(out.samples.is_empty(), "{topic} accepted");
        assert!(
            out.issues
                .iter()
                .any(|i| matches!(i, Issue::UnknownChannel(_))),
            "{topic}: {:?}",
            out.issues
        );
    }
}

#[test]
fn set_mistakes_are_reported_once_with_the_sets_path() {
    let bad = format!(
        r#"{HEAD}
[[sources.channels]]
id = "tanks.gt-002.lel"
[[sources.channel_sets]]
area = "tanks"
devices = {{ prefix = "gt-", from = 1, to = 3, width = 3 }}
[[sources.channel_sets.channels]]
name = "lel"
[[sources.channel_sets]]
area = "tanks"
devices = {{ prefix = "gt-", from = 9, to = 4 }}
[[sources.channel_sets.channels]]
name = "lel"
[[sources.channel_sets]]
id = "{{area}}.{{dev}}.{{name}}"
area = "Tanks"
devices = ["a", {{ prefix = "GT", from = 1, to = 3 }}, {{ from = 1 }}, {{ ids = ["a"] }}]
[[sources.channel_sets.channels]]
name = "lel"
range = [5, 1]
[[sources.channel_sets.channels]]
name = "lel"
[[sources.channel_sets]]
devices = {{ prefix = "x", from = 1, to = 200000 }}
channels = []
"#
    );
    let errs = problems(&bad);
    let has = |path: &str, word: &str| {
        assert!(
            errs.iter()
                .any(|e| e.contains(&format!(": {path}: ")) && e.contains(word)),
            "{path} ({word}) not in {errs:#?}"
        )
    };
    // Duplicate with an explicit channel: both places named.
    has("sources[0].channel_sets[0]", "sources[0].channels[0]");
    has("sources[0].channel_sets[1].devices.to", "below `from`");
    has("sources[0].channel_sets[2].id", "{dev}");
    has("sources[0].channel_sets[2].area", "Tanks");
    has("sources[0].channel_sets[2].devices[1].prefix", "GT1");
    has("sources[0].channel_sets[2].devices[2].to", "needs `to`");
    has("sources[0].channel_sets[2].devices[3].ids[0]", "devices[0]");
    has("sources[0].channel_sets[2].channels[0].range", "below");
    has("sources[0].channel_sets[2].channels[1].name", "channels[0]");
    has("sources[0].channel_sets[3].devices.to", "at most");
    has("sources[0].channel_sets[3].devices.area", "area");
    has("sources[0].channel_sets[3].channels", "at least one");
    // The widest range TOML can write is refused, not overflowed.
    let huge = format!(
        "{HEAD}[[sources.channel_sets]]\narea = \"a\"\ndevices = {{ from = 0, to = 9223372036854775807 }}\n\
         [[sources.channel_sets.channels]]\nname = \"v\"\n"
    );
    assert!(
        problems(&huge)
            .iter()
            .any(|e| e.contains("channel_sets[0].devices.to") && e.contains("at most")),
        "{:?}",
        problems(&huge)
    );
    // Reported once per set, not once per generated device.
    let prefix_errs = errs
        .iter()
        .filter(|e| e.contains("devices[1].prefix"))
        .count();
    assert_eq!(prefix_errs, 1, "{errs:#?}");
    // A parse-level mistake in `devices` is a parse error naming the field.
    let text = format!(
        "{HEAD}[[sources.channel_sets]]\narea = \"a\"\ndevices = [{{ prefix = \"g\", form = 1, to = 2 }}]\n\
         [[sources.channel_sets.channels]]\nname = \"v\"\n"
    );
    let e = config::parse(&text, Path::new("t.toml")).expect_err("unknown field");
    assert!(e.to_string().contains("form"), "{e}");
}

#[test]
fn generated_channels_clash_with_another_sources_channels() {
    let text = format!(
        "{HEAD}{SETS}
[[sources]]
kind = \"mqtt\"
id = \"m2\"
address = \"127.0.0.1:1884\"
[[sources.topics]]
filter = \"x/{{device}}\"
channel = \"tanks.{{device}}.lel\"
status = \"st\"
[[sources.channel_sets]]
area = \"tanks\"
devices = [\"gt-009\"]
[[sources.channel_sets.channels]]
name = \"lel\"
kind = \"combustible_gas\"
unit = \"%LEL\"
"
    );
    let errs = problems(&text);
    assert!(
        errs.iter()
            .any(|e| e.contains("sources[1].channel_sets[0]:")
                && e.contains("tanks.gt-009.lel")
                && e.contains("`m`")),
        "{errs:#?}"
    );
}

#[test]
fn rules_and_check_config_show_generated_channels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("site.toml");
    std::fs::write(&path, format!("{HEAD}{SETS}")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["rules", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for id in ["tanks.gt-008.lel", "tanks.gt-011.lel", "dock.gt-d1.lel"] {
        assert!(text.contains(id), "{id} not in\n{text}");
    }
    assert!(!text.contains("gt-012"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_set_mistake_in_an_included_file_names_that_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("conf.d")).expect("mkdir");
    let main = dir.path().join("site.toml");
    std::fs::write(
        &main,
        "include = [\"conf.d/*.toml\"]\n[site]\nid = \"s\"\n[[sources]]\nkind = \"mqtt\"\nid = \"a\"\n\
         address = \"127.0.0.1:1883\"\n[[sources.topics]]\nfilter = \"a/{device}\"\nchannel = \"x.{device}.v\"\n\
         [[sources.channels]]\nid = \"x.y.v\"\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("conf.d/gas.toml"),
        "[[sources]]\nkind = \"mqtt\"\nid = \"b\"\naddress = \"127.0.0.1:1883\"\n[[sources.topics]]\n\
         filter = \"b/{device}\"\nchannel = \"x.{device}.v\"\n[[sources.channel_sets]]\narea = \"x\"\n\
         devices = { prefix = \"g\", from = 5, to = 1 }\n[[sources.channel_sets.channels]]\nname = \"v\"\n",
    )
    .expect("write");
    let e = config::load(&main).expect_err("invalid");
    let config::LoadError::Invalid { problems, .. } = e else {
        panic!("{e:?}")
    };
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(
        lines.iter().any(
            |l| l.starts_with("error: conf.d/gas.toml: sources[0].channel_sets[0].devices.to:")
        ),
        "{lines:#?}"
    );
}
