//! A broken detector never looks like a calm one: a 4–20 mA span without a `valid` range gets
//! the NAMUR NE 43 fault limits, a gas reading far below its range minimum is Bad whatever its
//! source, and `check-config` warns about gas channels that have no way to show a fault.

use std::path::Path;
use std::time::{Instant, SystemTime};

use hazgate::config::{self, Problem, Resolved, Severity};
use hazgate::model::{BadReason, ChannelId, Reading, Sample};
use hazgate::sources::modbus::decode::{Raw, to_reading};

fn load(text: &str) -> (Resolved, Vec<Problem>) {
    let cfg = config::parse(text, Path::new("t.toml")).expect("parses");
    config::validate(&cfg, Path::new(".")).expect("valid")
}

/// A 4–20 mA detector in µA with `range` but no `valid`, exactly as the issue found it.
const LOOP_NO_VALID: &str = r#"
[site]
id = "s"
[[sources]]
kind = "modbus_tcp"
id = "bus"
address = "127.0.0.1:1502"
[[device_maps]]
id = "loop"
[[device_maps.registers]]
name = "lel"
table = "input"
address = 0
kind = "combustible_gas"
unit = "%LEL"
span = { raw = [4000, 20000], eng = [0, 100] }
range = [0, 100]
decimals = 1
[[devices]]
id = "gd1"
area = "a"
source = "bus"
map = "loop"
"#;

fn point_def(r: &Resolved) -> hazgate::config::RegisterDef {
    r.modbus().next().expect("a Modbus source").devices[0].points[0]
        .def
        .clone()
}

#[test]
fn a_4_20_ma_span_without_valid_gets_the_namur_limits() {
    let (r, warnings) = load(LOOP_NO_VALID);
    let def = point_def(&r);
    assert_eq!(def.valid, Some([3600.0, 21000.0]));
    // 3 mA: open loop. Before, this was Good(-6.3) with no alarm.
    assert_eq!(
        to_reading(Raw::Int(3000), &def),
        Reading::Bad(BadReason::OutOfRange { raw: 3000.0 })
    );
    // Above 21 mA: short circuit.
    assert!(matches!(
        to_reading(Raw::Int(21500), &def),
        Reading::Bad(BadReason::OutOfRange { .. })
    ));
    // NAMUR's saturation band (3.8 .. 20.5 mA) is still a measurement.
    assert_eq!(to_reading(Raw::Int(3800), &def), Reading::Good(-1.3));
    assert_eq!(to_reading(Raw::Int(12000), &def), Reading::Good(50.0));
    // The NAMUR default is a path to a fault: no warning.
    assert!(warnings.is_empty(), "{warnings:#?}");

    // A map's own `valid` overrides the default.
    let (r, _) = load(&LOOP_NO_VALID.replace("range = [0, 100]", "valid = [3000, 22000]"));
    assert_eq!(point_def(&r).valid, Some([3000.0, 22000.0]));

    // Other raw units of a 4–20 mA loop: mA, and a 12-bit ADC whose 20 mA is 4095 counts.
    for (raw, want) in [("[4, 20]", [3.6, 21.0]), ("[819, 4095]", [737.1, 4299.75])] {
        let (r, _) = load(&LOOP_NO_VALID.replace("[4000, 20000]", raw));
        let v = point_def(&r).valid.expect("namur default");
        assert!(
            (v[0] - want[0]).abs() < 0.01 && (v[1] - want[1]).abs() < 0.01,
            "{raw}: {v:?}"
        );
    }
    // A span that is not 4–20 mA (0–4095 counts) gets no guessed limits.
    let (r, _) = load(&LOOP_NO_VALID.replace("[4000, 20000]", "[0, 4095]"));
    assert_eq!(point_def(&r).valid, None);
}

fn sample(ch: &str, v: f64) -> Sample {
    Sample {
        channel: ChannelId::new(ch),
        ts: SystemTime::now(),
        reading: Reading::Good(v),
    }
}

#[test]
fn a_gas_reading_below_its_range_minimum_is_bad_beyond_the_tolerance() {
    // A digital detector (linear scale, no span): nothing at the raw level can catch -6.3.
    let text = r#"
[site]
id = "s"
[[sources]]
kind = "modbus_tcp"
id = "bus"
address = "127.0.0.1:1502"
[[devices]]
id = "gd1"
area = "a"
source = "bus"
[[devices.registers]]
name = "lel"
table = "input"
address = 0
type = "i16"
scale = 0.1
kind = "combustible_gas"
unit = "%LEL"
range = [0, 100]
fault_codes = [32767]
[[devices.registers]]
name = "o2"
table = "input"
address = 1
scale = 0.01
kind = "oxygen"
unit = "%VOL"
range = [0, 30]
fault_codes = [65535]
[[devices.registers]]
name = "level"
table = "input"
address = 2
type = "i16"
kind = "tank_level"
range = [0, 10]
"#;
    let (r, warnings) = load(text);
    assert!(warnings.is_empty(), "{warnings:#?}");
    let engine = hazgate::rules::Engine::new(&r, Instant::now());
    let mut batch = vec![
        sample("a.gd1.lel", -6.3),
        sample("a.gd1.lel", -2.5),
        sample("a.gd1.lel", -1.0),
        sample("a.gd1.lel", 0.0),
        sample("a.gd1.o2", -0.8),
        sample("a.gd1.o2", 20.9),
        // Not a gas channel: a level below its range is the site's business (limit rules).
        sample("a.gd1.level", -3.0),
    ];
    engine.screen(&mut batch);
    let got: Vec<Reading> = batch.into_iter().map(|s| s.reading).collect();
    assert_eq!(
        got,
        vec![
            Reading::Bad(BadReason::BelowRange {
                value: -6.3,
                min: 0.0
            }),
            // 2.5 % of the span is the tolerance: exactly at it is still a reading.
            Reading::Good(-2.5),
            Reading::Good(-1.0),
            Reading::Good(0.0),
            // 2.5 % of 30 %VOL is 0.75.
            Reading::Bad(BadReason::BelowRange {
                value: -0.8,
                min: 0.0
            }),
            Reading::Good(20.9),
            Reading::Good(-3.0),
        ]
    );
    assert_eq!(
        BadReason::BelowRange {
            value: -6.3,
            min: 0.0
        }
        .kind(),
        "out_of_range"
    );
}

#[test]
fn check_config_warns_about_gas_channels_without_a_path_to_a_fault() {
    let text = r#"
[site]
id = "s"
[[sources]]
kind = "modbus_tcp"
id = "bus"
address = "127.0.0.1:1502"
[[sources]]
kind = "mqtt"
id = "dtu"
address = "127.0.0.1:1883"
[[sources.topics]]
filter = "gas/{d}"
channel = "b.{d}.h2s"
[[sources.channels]]
id = "b.gd9.h2s"
kind = "toxic_gas"
unit = "ppm"
[[sources.channels]]
id = "b.gd9.temp"
unit = "C"
[[device_maps]]
id = "digital"
[[device_maps.registers]]
name = "lel"
table = "holding"
address = 0
scale = 0.1
kind = "combustible_gas"
unit = "%LEL"
range = [0, 100]
[[device_maps.registers]]
name = "temp"
table = "holding"
address = 1
[[devices]]
id = "gd1"
area = "a"
source = "bus"
map = "digital"
[[devices]]
id = "gd2"
area = "a"
source = "bus"
unit_id = 2
map = "digital"
# The channel override makes this a gas channel: the check follows the resolved kind.
[[channels]]
id = "a.gd2.temp"
kind = "oxygen"
"#;
    let (_, warnings) = load(text);
    let w: Vec<String> = warnings
        .iter()
        .filter(|p| p.severity == Severity::Warning && p.message.contains("no path to a fault"))
        .map(|p| p.to_string())
        .collect();
    for needle in [
        "devices[0]: combustible_gas channel `a.gd1.lel`",
        "devices[1]: combustible_gas channel `a.gd2.lel`",
        "devices[1]: oxygen channel `a.gd2.temp`",
        "sources[1].channels[0]: toxic_gas channel `b.gd9.h2s`",
    ] {
        assert!(w.iter().any(|x| x.contains(needle)), "{needle} in {w:#?}");
    }
    assert_eq!(w.len(), 4, "{w:#?}");

    // Fault codes, a valid range, or a status on the MQTT topic are each a path to a fault.
    let fixed = text
        .replace(
            "range = [0, 100]\n",
            "range = [0, 100]\nfault_codes = [65535]\n",
        )
        .replace("address = 1\n", "address = 1\nvalid = [0, 3000]\n")
        .replace(
            "channel = \"b.{d}.h2s\"\n",
            "channel = \"b.{d}.h2s\"\nstatus = \"st\"\n",
        );
    let (_, warnings) = load(&fixed);
    assert!(
        !warnings
            .iter()
            .any(|p| p.message.contains("no path to a fault")),
        "{warnings:#?}"
    );
}
