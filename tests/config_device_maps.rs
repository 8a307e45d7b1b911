//! Device-map mistakes name the file, the map entry, the offending field and what is allowed,
//! inline in `[[device_maps]]` and in a map file alike.

use std::path::Path;

use hazgate::config::{self, LoadError};

const HEAD: &str = "[site]\nid = \"s\"\n\n";

/// A valid inline register, to which one mistake is added or in which one is made.
const REGISTER: &str = "name = \"lel\"\ntable = \"input\"\naddress = 0\ntype = \"u16\"\n";

fn parse_error(text: &str) -> String {
    match config::parse(text, Path::new("site.toml")).expect_err("a mistake") {
        LoadError::Parse { path, message } => {
            assert_eq!(path, Path::new("site.toml"));
            assert!(
                !message.contains("did not match any variant"),
                "the untagged-enum message is back: {message}"
            );
            message
        }
        other => panic!("{other:?}"),
    }
}

fn inline(register: &str) -> String {
    format!("{HEAD}[[device_maps]]\nid = \"gas\"\n\n[[device_maps.registers]]\n{register}")
}

#[test]
fn a_valid_inline_map_still_parses() {
    config::parse(&inline(REGISTER), Path::new("site.toml")).expect("valid");
}

#[test]
fn an_unknown_register_field_names_it_and_the_allowed_fields() {
    let m = parse_error(&inline(&format!("{REGISTER}tpye = \"u16\"\n")));
    assert!(m.contains("inline map `gas`"), "{m}");
    assert!(m.contains("registers[0]"), "{m}");
    assert!(m.contains("unknown field `tpye`"), "{m}");
    assert!(m.contains("`address`") && m.contains("`span`"), "{m}");
    assert!(m.contains("device_maps"), "{m}");
}

#[test]
fn a_wrong_enum_value_names_the_field_and_the_allowed_values() {
    let m = parse_error(&inline(&REGISTER.replace("\"u16\"", "\"u17\"")));
    assert!(m.contains("registers[0].type"), "{m}");
    assert!(m.contains("unknown variant `u17`"), "{m}");
    assert!(m.contains("`f32`") && m.contains("`bool`"), "{m}");

    let m = parse_error(&inline(&REGISTER.replace("\"input\"", "\"inputs\"")));
    assert!(m.contains("registers[0].table"), "{m}");
    assert!(m.contains("`holding`") && m.contains("`coil`"), "{m}");

    let m = parse_error(&inline(&format!("{REGISTER}order = \"abcd\"\n")));
    assert!(m.contains("registers[0].order"), "{m}");
    assert!(m.contains("`ABCD`") && m.contains("`CDAB`"), "{m}");
}

#[test]
fn a_wrong_value_type_names_the_field_and_the_expected_type() {
    let m = parse_error(&inline(
        &REGISTER.replace("address = 0", "address = \"40001\""),
    ));
    assert!(m.contains("registers[0].address"), "{m}");
    assert!(m.contains("invalid type: string"), "{m}");
    assert!(m.contains("u16"), "{m}");

    let m = parse_error(&inline(&format!(
        "{REGISTER}span = {{ raw = [4000], eng = [0, 100] }}\n"
    )));
    assert!(m.contains("registers[0].span.raw"), "{m}");
}

#[test]
fn a_missing_field_is_named() {
    let m = parse_error(&inline(&REGISTER.replace("address = 0\n", "")));
    assert!(m.contains("registers[0]"), "{m}");
    assert!(m.contains("missing field `address`"), "{m}");

    let m = parse_error(&format!("{HEAD}[[device_maps]]\ndescription = \"no id\"\n"));
    assert!(m.contains("inline map"), "{m}");
    assert!(m.contains("missing field `id`"), "{m}");
}

#[test]
fn file_and_inline_fields_together_are_refused() {
    let m = parse_error(&format!(
        "{HEAD}[[device_maps]]\nfile = \"maps/gas.toml\"\nid = \"gas\"\n"
    ));
    assert!(m.contains("`file`"), "{m}");
    assert!(m.contains("found `id`"), "{m}");

    let m = parse_error(&format!("{HEAD}[[device_maps]]\nfile = 3\n"));
    assert!(m.contains("file: must be a path string"), "{m}");
    assert!(m.contains("integer"), "{m}");

    let m = parse_error(&format!("device_maps = [\"maps/gas.toml\"]\n{HEAD}"));
    assert!(m.contains("found string"), "{m}");
}

#[test]
fn a_mistake_in_a_map_file_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("maps")).expect("mkdir");
    let map = dir.path().join("maps/gas.toml");
    std::fs::write(
        &map,
        format!(
            "id = \"gas\"\n[[registers]]\n{}",
            REGISTER.replace("u16", "u17")
        ),
    )
    .expect("write");
    let main = dir.path().join("site.toml");
    std::fs::write(
        &main,
        format!("{HEAD}[[device_maps]]\nfile = \"maps/gas.toml\"\n"),
    )
    .expect("write");
    match config::load(&main).expect_err("bad map file") {
        LoadError::Invalid { problems, .. } => {
            let p = problems
                .iter()
                .find(|p| p.path == "device_maps[0].file")
                .unwrap_or_else(|| panic!("{problems:?}"));
            assert!(p.message.contains("maps/gas.toml"), "{p}");
            assert!(p.message.contains("registers[0].type"), "{p}");
            assert!(p.message.contains("unknown variant `u17`"), "{p}");
            assert!(p.message.contains("`f64`"), "{p}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&map, "id = \"gas\"\n[[registers]\n").expect("write");
    match config::load(&main).expect_err("syntax") {
        LoadError::Invalid { problems, .. } => {
            assert!(
                problems
                    .iter()
                    .any(|p| p.path == "device_maps[0].file" && p.message.contains("line 2")),
                "{problems:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}
