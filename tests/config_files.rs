//! Every file under config/ is valid, and `check-config` reports every mistake with its path.

use std::path::Path;
use std::process::Command;

use hazgate::config::{self, DeviceMap, LoadError, Severity};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_shipped_config_validates() {
    let mut n = 0;
    // config/sites/ holds example sites; check-config never opens a serial port or connects,
    // so they validate on any machine. Their only warnings allowed are the listings of
    // deliberate opt-outs from rule defaults (`rules[i].opt_out`).
    for dir in ["config", "config/sites"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("directory exists") {
            let p = entry.expect("dir entry").path();
            if p.extension().is_some_and(|e| e == "toml") {
                match config::load(&p) {
                    Ok((_, warnings)) => assert!(
                        warnings
                            .iter()
                            .all(|w| dir == "config/sites" && w.path.ends_with(".opt_out")),
                        "{}: unexpected warnings: {warnings:?}",
                        p.display()
                    ),
                    Err(e) => panic!("{}: {e:?}", p.display()),
                }
                n += 1;
            }
        }
    }
    assert!(
        n >= 4,
        "expected at least example.toml, demo.toml and the two sites, found {n}"
    );
    let mut maps = 0;
    for entry in std::fs::read_dir(root().join("config/maps")).expect("config/maps exists") {
        let p = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&p).expect("readable");
        let m: DeviceMap = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!m.registers.is_empty(), "{}: no registers", p.display());
        maps += 1;
    }
    assert!(maps >= 4);
}

#[test]
fn example_config_is_what_print_default_config_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .arg("print-default-config")
        .output()
        .expect("run hazgate");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let file = std::fs::read_to_string(root().join("config/example.toml")).expect("example");
    assert_eq!(printed, file);
    // And the printed text passes validation on its own (inline maps, no relative files).
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("hazgate.toml");
    std::fs::write(&p, printed).expect("write");
    let status = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["check-config", p.to_str().expect("utf-8 path")])
        .status()
        .expect("run hazgate");
    assert!(status.success());
}

/// `hazgate print-default-config | head` is how an installer looks at the example: a reader
/// that goes away before the text is written ends the command quietly (exit 0), never with a
/// panic message.
#[test]
fn printing_commands_end_quietly_when_the_reader_is_gone() {
    for cmd in ["print-default-config", "config-schema"] {
        // `true` exits at once; the gateway writes half a second later, into a pipe without
        // a reader (EPIPE: Rust ignores SIGPIPE).
        let out = Command::new("sh")
            .args([
                "-c",
                "( sleep 0.5; \"$0\" \"$1\"; echo \"rc=$?\" >&2 ) | true",
                env!("CARGO_BIN_EXE_hazgate"),
                cmd,
            ])
            .output()
            .expect("run sh");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("rc=0"), "{cmd}: exit status 0, got: {err}");
        assert!(!err.contains("panicked"), "{cmd}: no panic, got: {err}");
    }
}

/// The shipped examples name only the webhook schema the gateway sends (`hazgate.alarm.v2`):
/// the v1 schema is gone.
#[test]
fn examples_name_only_the_webhook_schema_that_is_sent() {
    for name in ["config/example.toml", "config/demo.toml"] {
        let text = std::fs::read_to_string(root().join(name)).expect("example");
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(i) = rest.find("hazgate.alarm.v") {
                let version: String = rest[i + "hazgate.alarm.v".len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                assert_eq!(
                    version,
                    "2",
                    "{name}:{}: names schema hazgate.alarm.v{version}, the gateway sends v2",
                    n + 1
                );
                rest = &rest[i + 1..];
            }
        }
    }
}

const THREE_MISTAKES: &str = r#"
[site]
id = "plant-a"

[[sources]]
kind = "modbus_tcp"
id = "bus1"
address = "127.0.0.1:502"

[[devices]]
id = "gd1"
area = "tankfarm"
source = "bus2"              # mistake 1: unknown source
unit_id = 1
[[devices.registers]]
name = "lel"
table = "input"
address = 4
[[devices.registers]]
name = "level"
table = "input"
address = 3
type = "f32"                 # mistake 2: overlaps registers[0] at address 4

[[rules]]
channel = "tankfarm.gd1.lel"
h = 50
hh = 25                      # mistake 3: hh below h
"#;

#[test]
fn check_config_reports_all_three_mistakes_with_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, THREE_MISTAKES).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["check-config", p.to_str().expect("utf-8 path")])
        .output()
        .expect("run hazgate");
    assert_eq!(out.status.code(), Some(1), "exit status 1 on errors");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "devices[0].source: unknown source `bus2`",
        "devices[0].registers[1].address: overlaps devices[0].registers[0]",
        "rules[0].hh: limits must be ordered",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}

#[test]
fn unknown_field_and_inline_secret_are_rejected() {
    let bad = "[site]\nid = \"a\"\ncolour = \"red\"\n";
    let e = config::parse(bad, Path::new("x.toml")).expect_err("unknown field");
    assert!(e.to_string().contains("colour"), "{e}");
    let inline = r#"
[site]
id = "a"
[[outputs]]
kind = "influxdb_v2"
id = "o"
url = "http://127.0.0.1:8086"
org = "o"
bucket = "b"
token = "s3cret"
"#;
    let e = config::parse(inline, Path::new("x.toml")).expect_err("inline secret");
    assert!(matches!(e, LoadError::Parse { .. }));
    let msg = e.to_string();
    assert!(
        !msg.contains("s3cret"),
        "the secret leaked into the error: {msg}"
    );
    assert!(msg.contains("never written inline"), "{msg}");
}

#[test]
fn gas_limits_looser_than_the_standard_warn() {
    let text = r#"
[site]
id = "a"
[[sources]]
kind = "modbus_tcp"
id = "s"
address = "127.0.0.1:502"
[[devices]]
id = "gd1"
area = "x"
source = "s"
[[devices.registers]]
name = "lel"
table = "input"
address = 0
kind = "combustible_gas"
unit = "%LEL"
fault_codes = [65535]
[[rules]]
channel = "x.gd1.lel"
h = 30
hh = 60
deadband = 1
"#;
    let cfg = config::parse(text, Path::new("x.toml")).expect("parses");
    let (_, warnings) = config::validate(&cfg, Path::new(".")).expect("valid");
    let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["rules[0].h", "rules[0].hh"]);
    assert!(warnings.iter().all(|w| w.severity == Severity::Warning));
}

const ONE_GAS_DEVICE: &str = r#"
[site]
id = "a"
[[sources]]
kind = "modbus_tcp"
id = "s"
address = "127.0.0.1:502"
[[devices]]
id = "gd1"
area = "x"
source = "s"
[[devices.registers]]
name = "lel"
table = "input"
address = 0
kind = "combustible_gas"
unit = "%LEL"
range = [0, 100]
fault_codes = [65535]
"#;

fn problems(text: &str) -> Vec<String> {
    let cfg = config::parse(text, Path::new("x.toml")).expect("parses");
    match config::validate(&cfg, Path::new(".")) {
        Ok((_, w)) => w.iter().map(|p| p.to_string()).collect(),
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_channel_configured_twice_is_rejected_with_both_paths() {
    let text = format!(
        "{ONE_GAS_DEVICE}[[channels]]\nid = \"x.gd1.lel\"\nmax_age = \"10s\"\n[[channels]]\nid = \"x.gd1.lel\"\nmax_age = \"10m\"\n"
    );
    let p = problems(&text);
    assert!(
        p.iter().any(|e| e.starts_with("error: channels[1].id:")
            && e.contains("x.gd1.lel")
            && e.contains("channels[0]")),
        "{p:#?}"
    );
    let cfg = config::parse(&text, Path::new("x.toml")).expect("parses");
    assert!(config::validate(&cfg, Path::new(".")).is_err());
}

#[test]
fn order_on_a_16_bit_register_warns() {
    for (ty, order, warns) in [
        ("u16", "CDAB", true),
        ("i16", "DCBA", true),
        ("u16", "BADC", true),
        ("f32", "CDAB", false),
        ("u32", "DCBA", false),
    ] {
        let text = ONE_GAS_DEVICE.replace(
            "kind = \"combustible_gas\"",
            &format!("type = \"{ty}\"\norder = \"{order}\"\nkind = \"combustible_gas\""),
        );
        let p = problems(&text);
        let hit = p
            .iter()
            .any(|e| e.starts_with("warning: devices[0].registers[0].order:"));
        assert_eq!(hit, warns, "{ty} {order}: {p:#?}");
    }
}

#[test]
fn gas_limit_rules_without_deadband_or_on_delay_warn() {
    let rule = "[[rules]]\nchannel = \"x.gd1.lel\"\nh = 20\nhh = 40\n";
    let p = problems(&format!("{ONE_GAS_DEVICE}{rule}"));
    assert!(
        p.iter()
            .any(|e| e.starts_with("warning: rules[0]:") && e.contains("on_delay")),
        "{p:#?}"
    );
    for fix in [
        "deadband = 1\n",
        "deadband_pct = 2\n",
        "on_delay = \"5s\"\n",
    ] {
        let p = problems(&format!("{ONE_GAS_DEVICE}{rule}{fix}"));
        assert!(p.is_empty(), "{fix}: {p:#?}");
    }
    // Not a gas channel: no such warning.
    let text = ONE_GAS_DEVICE.replace("combustible_gas", "tank_level");
    assert!(problems(&format!("{text}{rule}")).is_empty());
}

#[test]
fn state_words_come_from_the_register_and_a_channel_override_replaces_them() {
    let text = format!("{ONE_GAS_DEVICE}states = {{ 0 = \"正常\", -1 = \"故障\" }}\n");
    let cfg = config::parse(&text, Path::new("x.toml")).expect("parses");
    let (r, _) = config::validate(&cfg, Path::new(".")).expect("valid");
    let ch = r
        .channels
        .iter()
        .find(|c| c.id.as_str() == "x.gd1.lel")
        .expect("channel");
    let words: Vec<(i64, &str)> = ch.states.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(words, [(-1, "故障"), (0, "正常")]);

    let text = format!("{text}[[channels]]\nid = \"x.gd1.lel\"\nstates = {{ 1 = \"运行\" }}\n");
    let cfg = config::parse(&text, Path::new("x.toml")).expect("parses");
    let (r, _) = config::validate(&cfg, Path::new(".")).expect("valid");
    let ch = r
        .channels
        .iter()
        .find(|c| c.id.as_str() == "x.gd1.lel")
        .expect("channel");
    let words: Vec<(i64, &str)> = ch.states.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(words, [(1, "运行")]);
}

#[test]
fn bad_state_words_are_rejected_with_their_paths() {
    let text = format!(
        "{ONE_GAS_DEVICE}states = {{ on = \"运行\", 1 = \" \" }}\n[[channels]]\nid = \"x.gd1.lel\"\nstates = {{ \"1.5\" = \"半\", 2 = \"二\", 02 = \"又二\" }}\n"
    );
    let p = problems(&text);
    for want in [
        "error: devices[0].registers[0].states.on:",
        "error: devices[0].registers[0].states.1:",
        "error: channels[0].states.1.5:",
        "error: channels[0].states.2:",
    ] {
        assert!(p.iter().any(|e| e.starts_with(want)), "{want} in {p:#?}");
    }
    let cfg = config::parse(&text, Path::new("x.toml")).expect("parses");
    assert!(config::validate(&cfg, Path::new(".")).is_err());
}

const ONE_MQTT_SOURCE: &str = r#"
[site]
id = "s"
[[sources]]
kind = "mqtt"
id = "dtu"
address = "127.0.0.1:1883"
[[sources.topics]]
filter = "d/{area}/{device}/{point}"
channel = "{area}.{device}.{point}"
format = "number"
[[sources.channels]]
id = "ws.gt201.h2s"
kind = "toxic_gas"
unit = "ppm"
[[sources.channels]]
id = "ws.x.o2"
device = "ox201"
kind = "oxygen"
"#;

#[test]
fn device_display_names_reach_the_channels_and_ids_stay_ascii() {
    let text = ONE_GAS_DEVICE.replace(
        "[[devices]]\nid = \"gd1\"",
        "[[devices]]\nid = \"gd1\"\nname = \" 1号可燃气体探测器 \"",
    );
    assert_ne!(text, ONE_GAS_DEVICE, "the device table was found");
    let cfg = config::parse(&text, Path::new("x.toml")).expect("parses");
    let (r, _) = config::validate(&cfg, Path::new(".")).expect("valid");
    let ch = r
        .channels
        .iter()
        .find(|c| c.id.as_str() == "x.gd1.lel")
        .expect("channel");
    assert_eq!(
        (ch.device.as_str(), ch.device_name.as_str()),
        ("gd1", "1号可燃气体探测器")
    );

    let text = format!(
        "{ONE_MQTT_SOURCE}[[sources.devices]]\nid = \"gt201\"\nname = \"车间硫化氢探测器\"\n[[sources.devices]]\nid = \"ox201\"\nname = \"车间氧含量仪\"\n"
    );
    let cfg = config::parse(&text, Path::new("x.toml")).expect("parses");
    let (r, _) = config::validate(&cfg, Path::new(".")).expect("valid");
    let names: Vec<(&str, &str)> = r
        .channels
        .iter()
        .map(|c| (c.device.as_str(), c.device_name.as_str()))
        .collect();
    assert_eq!(
        names,
        [("gt201", "车间硫化氢探测器"), ("ox201", "车间氧含量仪")]
    );
    // Without names: empty, the page shows the id.
    let cfg = config::parse(ONE_MQTT_SOURCE, Path::new("x.toml")).expect("parses");
    let (r, _) = config::validate(&cfg, Path::new(".")).expect("valid");
    assert!(r.channels.iter().all(|c| c.device_name.is_empty()));
}

#[test]
fn bad_mqtt_device_names_are_rejected_with_their_paths() {
    let text = format!(
        "{ONE_MQTT_SOURCE}[[sources.devices]]\nid = \"GT-201\"\nname = \"x\"\n[[sources.devices]]\nid = \"gt201\"\nname = \" \"\n[[sources.devices]]\nid = \"gt201\"\nname = \"again\"\n[[sources.devices]]\nid = \"nobody\"\nname = \"无此设备\"\n"
    );
    let p = problems(&text);
    for want in [
        "error: sources[0].devices[0].id:",
        "error: sources[0].devices[1].name:",
        "error: sources[0].devices[2].id:",
        "error: sources[0].devices[3].id:",
    ] {
        assert!(p.iter().any(|e| e.starts_with(want)), "{want} in {p:#?}");
    }
    assert!(
        p.iter().any(|e| e.contains("nobody")),
        "the unknown device is named: {p:#?}"
    );
}

/// `check-config` prints each problem as before (severity, field path, message) and its summary
/// line in the file's `[site] language`.
#[test]
fn check_config_summary_lines_follow_the_site_language() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
            .args(["check-config", p.to_str().expect("utf-8 path")])
            .output()
            .expect("run hazgate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            p.display().to_string(),
        )
    };
    let warn = "[[rules]]\nchannel = \"x.gd1.lel\"\nh = 20\nhh = 40\n";
    let zh = format!("{ONE_GAS_DEVICE}{warn}");
    let en = zh.replace(
        "[site]\nid = \"a\"\n",
        "[site]\nid = \"a\"\nlanguage = \"en\"\n",
    );
    assert_ne!(zh, en);

    let (code, text, file) = run("zh.toml", &zh);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("{file}: warning: rules[0]:")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{file}: ok，配置有效（1 个警告）")),
        "{text}"
    );
    let (code, text, file) = run("en.toml", &en);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("{file}: warning: rules[0]:")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{file}: ok (1 warning(s))")),
        "{text}"
    );

    // Invalid: the language is read from the file that failed validation.
    let bad = |t: &str| t.replace("source = \"s\"", "source = \"nope\"");
    let (code, text, file) = run("zh-bad.toml", &bad(&zh));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("{file}: error: devices[0].source:")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{file}: 配置无效：1 个错误，1 个警告")),
        "{text}"
    );
    let (code, text, file) = run("en-bad.toml", &bad(&en));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("{file}: error: devices[0].source:")),
        "{text}"
    );
    assert!(text.contains(&format!("{file}: 1 error(s)")), "{text}");
    assert!(!text.contains("配置"), "{text}");

    // Unparseable: the parser's line as before, then a line in the default language.
    let (code, text, file) = run("broken.toml", "[site\nid = 1\n");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("{file}: 配置文件无法解析")),
        "{text}"
    );
}
