//! The example sites under config/sites/ are short (under 100 lines), valid, declare the
//! expected number of channels, and give exactly the channels and effective alarms (limit,
//! deadband, delays, latch, priority, texts) of the same site written out in long form, which
//! this test generates itself: every channel and every rule declared one by one, no sets and
//! no rule defaults.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hazgate::config::{self, Resolved};

fn site(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/sites")
        .join(name)
}

fn load(path: &Path) -> Resolved {
    config::load(path)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .0
}

/// The long form: the compact file up to its first set (site, areas, sources, maps), then
/// `rest`, validated from a file next to the compact one (relative map paths still resolve).
fn long_form(compact: &Path, first_set: &str, rest: &str) -> Resolved {
    let text = std::fs::read_to_string(compact).expect("readable");
    let head = &text[..text.find(first_set).expect("the set")];
    assert!(
        head.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .all(|l| !l.contains("rule_defaults") && !l.contains("[[rules]]")),
        "the long form must declare every rule itself"
    );
    let dir = tempfile::tempdir_in(compact.parent().expect("dir")).expect("tempdir");
    let path = dir.path().join("long.toml");
    // One level deeper: map paths `../maps/x` become `../../maps/x`.
    let head = head.replace("\"../maps/", "\"../../maps/");
    std::fs::write(&path, format!("{head}\n{rest}")).expect("write");
    load(&path)
}

/// Every field of every alarm that decides when it fires and what people see, except where
/// it was configured (`origin`), sorted by alarm id.
fn effective(r: &Resolved) -> Vec<String> {
    let mut out: Vec<String> = r
        .plan
        .alarms
        .iter()
        .map(|a| {
            format!(
                "{} {} {:?} {} {} {} {} {:?} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                a.id,
                a.condition,
                a.channel,
                a.area,
                a.kind,
                a.label,
                a.unit,
                a.fault,
                a.latching,
                a.priority,
                a.suppress_in,
                a.on_delay,
                a.off_delay,
                a.limit,
                a.message,
                a.response,
                a.detector,
            )
        })
        .collect();
    out.sort();
    out
}

fn under_100_lines(path: &Path) {
    let n = std::fs::read_to_string(path)
        .expect("readable")
        .lines()
        .count();
    assert!(n < 100, "{}: {n} lines", path.display());
}

fn assert_same(compact: &Resolved, long: &Resolved) {
    assert_eq!(compact.channels.len(), long.channels.len());
    for (a, b) in compact.channels.iter().zip(&long.channels) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
    assert_eq!(
        format!("{:?}", compact.sources),
        format!("{:?}", long.sources)
    );
    let (a, b) = (effective(compact), effective(long));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
}

#[test]
fn mqtt_1000_is_its_long_form() {
    let path = site("mqtt-1000.toml");
    under_100_lines(&path);
    let compact = load(&path);
    assert_eq!(compact.channels.len(), 1000);
    let areas = ["tankfarm", "loading", "unit1", "unit2", "warehouse"];
    let mut rest = String::new();
    for n in 1..=500 {
        let area = areas[(n - 1) / 100];
        let dev = format!("gt-{n:03}");
        for (name, kind, unit, label) in [
            ("lel", "combustible_gas", "%LEL", "可燃气体"),
            ("h2s", "toxic_gas", "ppm", "硫化氢"),
        ] {
            writeln!(
                rest,
                "[[sources.channels]]\nid = \"{area}.{dev}.{name}\"\narea = \"{area}\"\n\
                 device = \"{dev}\"\nkind = \"{kind}\"\nunit = \"{unit}\"\nrange = [0, 100]\n\
                 label = \"{dev} {label}\"\nmax_age = \"30s\""
            )
            .expect("write to a String");
        }
    }
    for n in 1..=500 {
        let area = areas[(n - 1) / 100];
        let dev = format!("gt-{n:03}");
        let (h, hh) = if dev == "gt-101" { (10, 25) } else { (20, 40) };
        writeln!(
            rest,
            "[[rules]]\nchannel = \"{area}.{dev}.lel\"\nh = {h}\nhh = {hh}\ndeadband = 2\n\
             on_delay = \"2s\"\npriority = {{ h = \"high\", hh = \"critical\" }}\n\
             response = \"疏散现场人员，切断气源，通知值班长\""
        )
        .expect("write to a String");
        if dev == "gt-500" {
            // Opted out of the defaults: only its own high-high alarm.
            writeln!(
                rest,
                "[[rules]]\nchannel = \"{area}.{dev}.h2s\"\nhh = 30\ndeadband = 1"
            )
        } else {
            writeln!(
                rest,
                "[[rules]]\nchannel = \"{area}.{dev}.h2s\"\nh = 10\nhh = 20\ndeadband = 1\n\
                 on_delay = \"3s\"\noff_delay = \"10s\"\nlatch = true"
            )
        }
        .expect("write to a String");
    }
    let long = long_form(&path, "# 500 expected detectors", &rest);
    assert_eq!(compact.plan.alarms.len(), 1999);
    assert_same(&compact, &long);
}

#[test]
fn modbus_200_is_its_long_form() {
    let path = site("modbus-200.toml");
    under_100_lines(&path);
    let compact = load(&path);
    assert_eq!(compact.channels.len(), 200);
    let devices: usize = compact.modbus().map(|m| m.devices.len()).sum();
    assert_eq!(devices, 200);
    let mut rest = String::new();
    for (prefix, area, source, map, name) in [
        ("gd-tank", "tankfarm", "bus-tank", "gas-lel", Some("储罐区")),
        ("gd-pump", "pumps", "bus-pump", "gas-lel", Some("泵房")),
        ("gd-unit", "unit3", "bus-unit", "gas-lel", None),
        ("ma", "unit3", "bus-ma", "gas-4-20ma", None),
    ] {
        for unit in 1..=50 {
            writeln!(
                rest,
                "[[devices]]\nid = \"{prefix}-{unit:02}\"\narea = \"{area}\"\nsource = \"{source}\"\n\
                 unit_id = {unit}\nmap = \"{map}\"\npoll_interval = \"2s\"\nname = \"{}\"",
                name.map(|n| format!("{n} {unit} 号可燃气体探测器"))
                    .unwrap_or_default()
            )
            .expect("write to a String");
        }
    }
    for ch in &compact.channels {
        let (h, hh) = if ch.id.as_str() == "pumps.gd-pump-07.lel" {
            (10, 25)
        } else {
            (20, 40)
        };
        writeln!(
            rest,
            "[[rules]]\nchannel = \"{}\"\nh = {h}\nhh = {hh}\ndeadband = 2\non_delay = \"2s\"\n\
             priority = {{ h = \"high\", hh = \"critical\" }}",
            ch.id
        )
        .expect("write to a String");
    }
    let long = long_form(&path, "# Units 1-50 on each bus", &rest);
    assert_eq!(compact.plan.alarms.len(), 400);
    assert_same(&compact, &long);
}
