//! Compact declarations: a `[[device_sets]]` entry validates to exactly what its members
//! written out as `[[devices]]` give, and its problems name the set and the member.

use std::fmt::Write as _;
use std::path::Path;

use hazgate::config::{self, LoadError};

const HEAD: &str = r#"
[site]
id = "s"

[[sources]]
kind = "modbus_tcp"
id = "bus-a"
address = "127.0.0.1:502"

[[device_maps]]
id = "gas"
[[device_maps.registers]]
name = "lel"
table = "input"
address = 0
type = "u16"
kind = "combustible_gas"
unit = "%LEL"
span = { raw = [4000, 20000], eng = [0, 100] }
valid = [3600, 21000]
"#;

fn resolved(text: &str) -> String {
    let cfg = config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
    let (r, w) = config::validate(&cfg, Path::new(".")).unwrap_or_else(|p| panic!("{p:?}"));
    format!("{r:?} {w:?}")
}

fn problems(text: &str) -> Vec<String> {
    let cfg = config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
    match config::validate(&cfg, Path::new(".")) {
        Ok(_) => panic!("expected problems"),
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

fn parse_error(text: &str) -> String {
    match config::parse(text, Path::new("t.toml")).expect_err("parse error") {
        LoadError::Parse { message, .. } => message,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_device_set_is_its_members_written_out() {
    let compact = format!(
        "{HEAD}
[[devices]]
id = \"tk1\"
area = \"tanks\"
source = \"bus-a\"
unit_id = 50
map = \"gas\"

[[device_sets]]
id = \"gd-{{unit:02}}\"
area = \"zone{{unit}}\"
name = \"{{unit}} 号可燃气体探测器\"
source = \"bus-a\"
unit_ids = \"1-3, 7, 9-10\"
map = \"gas\"
poll_interval = \"2s\"
address_base = 1
address_offset = 10

[[device_sets]]
id = \"ox{{unit}}\"
area = \"tanks\"
source = \"bus-a\"
unit_ids = [20, 22]
map = \"gas\"
channel_prefix = \"tanks.o2_{{unit}}\"
"
    );
    let mut long = format!(
        "{HEAD}
[[devices]]
id = \"tk1\"
area = \"tanks\"
source = \"bus-a\"
unit_id = 50
map = \"gas\"
"
    );
    for u in [1, 2, 3, 7, 9, 10] {
        write!(
            long,
            "
[[devices]]
id = \"gd-{u:02}\"
area = \"zone{u}\"
name = \"{u} 号可燃气体探测器\"
source = \"bus-a\"
unit_id = {u}
map = \"gas\"
poll_interval = \"2s\"
address_base = 1
address_offset = 10
"
        )
        .expect("write");
    }
    for u in [20, 22] {
        write!(
            long,
            "
[[devices]]
id = \"ox{u}\"
area = \"tanks\"
source = \"bus-a\"
unit_id = {u}
map = \"gas\"
channel_prefix = \"tanks.o2_{u}\"
"
        )
        .expect("write");
    }
    let a = resolved(&compact);
    assert_eq!(a, resolved(&long));
    assert!(a.contains("zone9.gd-09.lel"), "{a}");
    assert!(a.contains("tanks.o2_22.lel"), "{a}");
}

#[test]
fn problems_name_the_set_and_the_member() {
    let p = problems(&format!(
        "{HEAD}
[[devices]]
id = \"gd-2\"
area = \"a\"
source = \"bus-a\"
unit_id = 40
map = \"gas\"

[[device_sets]]
id = \"gd-{{unit}}\"
area = \"a\"
source = \"bus-b\"
unit_ids = \"1-3\"
map = \"gas\"
"
    ));
    for u in 1..=3 {
        assert!(
            p.iter().any(|l| l.starts_with(&format!(
                "error: device_sets[0].members[gd-{u}].source: unknown source `bus-b`"
            ))),
            "{p:?}"
        );
    }
    assert!(
        p.iter()
            .any(|l| l.starts_with("error: device_sets[0].members[gd-2].id: duplicate device id")),
        "{p:?}"
    );

    let p = problems(&format!(
        "{HEAD}
[[device_sets]]
id = \"gd\"
area = \"a\"
source = \"bus-a\"
unit_ids = \"1-3\"
map = \"gas\"
"
    ));
    assert!(
        p.iter()
            .any(|l| l.starts_with("error: device_sets[0].id:") && l.contains("{unit}")),
        "{p:?}"
    );
}

#[test]
fn bad_unit_ids_are_parse_errors_naming_the_field() {
    for (ids, expect) in [
        ("\"1-300\"", "`300` in `1-300` is not a unit id"),
        ("\"5-1\"", "range `5-1` runs backwards"),
        ("\"1-3, 2\"", "unit id 2 is listed twice"),
        ("[1, 256]", "`256` is not a unit id"),
        ("[]", "names no unit id"),
        ("7", "found integer"),
        ("\"x\"", "`x` in `x` is not a unit id"),
    ] {
        let m = parse_error(&format!(
            "{HEAD}
[[device_sets]]
id = \"gd-{{unit}}\"
area = \"a\"
source = \"bus-a\"
unit_ids = {ids}
map = \"gas\"
"
        ));
        assert!(m.contains(expect), "{ids}: {m}");
        assert!(m.contains("unit_ids"), "{ids}: {m}");
    }
}
