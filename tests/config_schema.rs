//! `hazgate config-schema` prints a JSON Schema that accepts every shipped configuration and
//! refuses what the parser refuses: an unknown field, a wrong type, a bad enum value, a
//! duration without a unit. Each case is also given to the parser, so schema and parser are
//! seen to agree both ways. Run alone: `cargo test --test config_schema`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The schema as the binary prints it (`included`: the schema of an included file).
fn printed_schema(included: bool) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hazgate"));
    cmd.arg("config-schema");
    if included {
        cmd.arg("--included");
    }
    let out = cmd.output().expect("run hazgate config-schema");
    assert!(
        out.status.success(),
        "config-schema failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("config-schema prints JSON")
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).expect("the printed schema is a valid JSON Schema")
}

/// The schema's errors for a TOML text (converted to JSON as an editor's TOML plug-in does).
fn schema_errors(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    let doc: toml::Value = toml::from_str(text).expect("test TOML is well formed");
    let json = serde_json::to_value(doc).expect("TOML converts to JSON");
    v.iter_errors(&json)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn parser_accepts(text: &str) -> Result<(), String> {
    hazgate::config::parse(text, Path::new("test.toml"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Follows `$ref`s (`#/definitions/X`, or an `allOf` of one, as draft-07 writes a `$ref`
/// with a description beside it) from a node of the schema.
fn resolve<'a>(schema: &'a Value, mut node: &'a Value) -> &'a Value {
    loop {
        if let Some([only]) = node
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            node = only;
            continue;
        }
        let Some(r) = node.get("$ref").and_then(Value::as_str) else {
            break;
        };
        let name = r.strip_prefix("#/definitions/").expect("local $ref");
        node = &schema["definitions"][name];
    }
    node
}

/// The object schema a node describes: itself, or the one non-null branch of an `anyOf`
/// (an optional table), after `$ref`s.
fn object<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    let node = resolve(schema, node);
    if let Some(branches) = node.get("anyOf").and_then(Value::as_array) {
        let objects: Vec<&Value> = branches
            .iter()
            .map(|b| resolve(schema, b))
            .filter(|b| b.get("type") != Some(&Value::from("null")))
            .collect();
        assert_eq!(objects.len(), 1, "one non-null branch in {node}");
        return objects[0];
    }
    node
}

/// Asserts that a node describes a closed table with (at least) these properties.
fn assert_closed_table(schema: &Value, node: &Value, what: &str, props: &[&str]) {
    let node = object(schema, node);
    assert_eq!(
        node.get("type"),
        Some(&Value::from("object")),
        "{what}: {node}"
    );
    assert_eq!(
        node.get("additionalProperties"),
        Some(&Value::Bool(false)),
        "{what}: unknown fields must be refused (deny_unknown_fields)"
    );
    for p in props {
        assert!(
            node["properties"].get(*p).is_some(),
            "{what}: no property `{p}` in {node}"
        );
    }
}

#[test]
fn the_schema_names_every_section_and_refuses_unknown_ones() {
    let schema = printed_schema(false);
    assert_eq!(
        schema["$schema"], "http://json-schema.org/draft-07/schema#",
        "draft named"
    );
    let sections = [
        "include",
        "site",
        "gateway",
        "api",
        "sources",
        "device_maps",
        "devices",
        "device_sets",
        "channels",
        "rules",
        "rule_defaults",
        "receivers",
        "outputs",
        "areas",
        "alarms",
        "mqtt_broker",
        "notifications",
    ];
    assert_closed_table(&schema, &schema, "the file", &sections);
    let props = schema["properties"].as_object().expect("properties");
    let mut named: Vec<&str> = props.keys().map(String::as_str).collect();
    named.sort_unstable();
    let mut expected = sections.to_vec();
    expected.sort_unstable();
    assert_eq!(named, expected, "a section the test does not know of");
    assert_eq!(schema["required"], serde_json::json!(["site"]));
    // A choice of words is one `enum` (editors complete it and name the allowed values).
    let language = resolve(
        &schema,
        &schema["definitions"]["Site"]["properties"]["language"],
    );
    assert_eq!(
        language["enum"],
        serde_json::json!(["zh-CN", "en"]),
        "{language}"
    );
    let table = resolve(
        &schema,
        &schema["definitions"]["RegisterDef"]["properties"]["table"],
    );
    assert_eq!(
        table["enum"],
        serde_json::json!(["coil", "discrete", "holding", "input"]),
        "{table}"
    );
}

#[test]
fn rule_defaults_channel_sets_and_device_sets_are_described() {
    let schema = printed_schema(false);
    let p = &schema["properties"];

    // [rule_defaults.<kind>]: a table of kinds, each a closed limit table.
    let defaults = resolve(&schema, &p["rule_defaults"]);
    assert_eq!(defaults["type"], "object");
    assert_closed_table(
        &schema,
        &defaults["additionalProperties"],
        "rule_defaults.<kind>",
        &[
            "unit",
            "ll",
            "l",
            "h",
            "hh",
            "deadband_pct",
            "on_delay",
            "latch",
        ],
    );

    // [[device_sets]]: an array of closed tables with the unit id forms.
    let sets = resolve(&schema, &p["device_sets"]);
    assert_eq!(sets["type"], "array");
    assert_closed_table(
        &schema,
        &sets["items"],
        "device_sets[]",
        &["id", "area", "source", "unit_ids", "map", "poll_interval"],
    );
    let unit_ids = resolve(
        &schema,
        &object(&schema, &sets["items"])["properties"]["unit_ids"],
    );
    assert_eq!(
        unit_ids["anyOf"].as_array().map(Vec::len),
        Some(2),
        "unit_ids: a range string or an array: {unit_ids}"
    );

    // [[sources.channel_sets]] inside the `mqtt` kind of source.
    let sources = resolve(&schema, &p["sources"]);
    let kinds = resolve(&schema, &sources["items"])["oneOf"]
        .as_array()
        .expect("sources are one of their kinds");
    let mqtt = kinds
        .iter()
        .map(|k| resolve(&schema, k))
        .find(|k| k["properties"]["kind"]["const"] == "mqtt")
        .expect("an mqtt kind of source");
    assert_closed_table(
        &schema,
        mqtt,
        "sources[kind=mqtt]",
        &["kind", "channel_sets"],
    );
    let channel_sets = resolve(&schema, &mqtt["properties"]["channel_sets"]);
    assert_eq!(channel_sets["type"], "array");
    assert_closed_table(
        &schema,
        &channel_sets["items"],
        "sources[].channel_sets[]",
        &["id", "area", "devices", "max_age", "channels"],
    );
    let set = object(&schema, &channel_sets["items"]);
    let devices = resolve(&schema, &set["properties"]["devices"]);
    assert!(
        devices.get("anyOf").is_some(),
        "channel_sets[].devices: an id, a group or an array: {devices}"
    );
    let channels = resolve(&schema, &set["properties"]["channels"]);
    assert_closed_table(
        &schema,
        &channels["items"],
        "channel_sets[].channels[]",
        &["name", "kind", "unit", "max_age"],
    );
}

#[test]
fn every_shipped_config_and_map_is_valid_against_the_schema() {
    let schema = printed_schema(false);
    let v = validator(&schema);
    let mut files = toml_files("config");
    files.extend(toml_files("config/sites"));
    assert!(files.len() >= 5, "shipped configurations: {files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable");
        assert_eq!(
            schema_errors(&v, &text),
            Vec::<String>::new(),
            "{} is refused by the schema",
            f.display()
        );
        // Includes are merged by the loader: an included file is checked against the schema
        // of included files.
        let doc: toml::Table = toml::from_str(&text).expect("well formed");
        assert!(
            doc.get("include").is_none(),
            "{} includes files: validate them with the --included schema here",
            f.display()
        );
    }

    // A device map file is one `[[device_maps]]` entry written on its own.
    let mut map_schema = serde_json::json!({
        "$schema": schema["$schema"],
        "$ref": "#/definitions/DeviceMap"
    });
    map_schema["definitions"] = schema["definitions"].clone();
    let maps = validator(&map_schema);
    let map_files = toml_files("config/maps");
    assert!(map_files.len() >= 4, "maps: {map_files:?}");
    for f in &map_files {
        let text = std::fs::read_to_string(f).expect("readable");
        assert_eq!(
            schema_errors(&maps, &text),
            Vec::<String>::new(),
            "{} is refused by the DeviceMap schema",
            f.display()
        );
    }
    let misspelt = "id = \"m\"\n[[registers]]\nname = \"x\"\ntable = \"input\"\nadress = 0\n";
    assert!(
        !schema_errors(&maps, misspelt).is_empty(),
        "the map schema checks"
    );
}

/// A configuration using the forms the hand-written parsers accept: durations with several
/// terms, unit id lists, byte sizes with units, secrets from a file or variable, device maps by
/// file, channel set devices as a range, an id or mixed arrays.
const FORMS: &str = r#"
[site]
id = "forms"
language = "en"

[gateway]
shutdown_grace = "1m 30s"
self_monitoring = "1h30m"

[[sources]]
kind = "modbus_rtu_over_tcp"
id = "bus1"
address = "127.0.0.1:5020"
timeout = "500ms"

[[sources]]
kind = "mqtt"
id = "m"
address = "127.0.0.1:1883"
password = { env = "MQTT_PASSWORD" }
keep_alive = "1.5min"

[[sources.channel_sets]]
devices = { prefix = "gt-", from = 1, to = 20, width = 3 }
area = "a"
[[sources.channel_sets.channels]]
name = "lel"
kind = "combustible_gas"
unit = "%LEL"

[[sources.channel_sets]]
devices = "ox-1"
area = "b"
max_age = "2 minutes"
[[sources.channel_sets.channels]]
name = "o2"

[[sources.channel_sets]]
devices = ["h-1", { area = "c", ids = ["h-2"] }, { prefix = "h-", from = 3, to = 4 }]
area = "b"
[[sources.channel_sets.channels]]
name = "h2s"

[[device_maps]]
file = "maps/gas-lel.toml"

[[device_maps]]
id = "inline"
[[device_maps.registers]]
name = "lel"
table = "input"
address = 0
type = "u16"
order = "CDAB"

[[device_sets]]
id = "gd-{unit:03}"
area = "a"
source = "bus1"
unit_ids = "1-10, 12, 20 - 24"
map = "inline"

[[device_sets]]
id = "gx-{unit}"
area = "a"
source = "bus1"
unit_ids = [30, 31]
map = "inline"

[rule_defaults.combustible_gas]
unit = "%LEL"
h = 20
hh = 40
on_delay = "2s"
latch = true
priority = { h = "high", hh = "critical" }

[[outputs]]
kind = "influxdb_v2"
id = "influx"
url = "http://127.0.0.1:8086"
org = "o"
bucket = "b"
token = { file = "/etc/hazgate/influx.token" }
precision = "ms"
spool = { dir = "/var/lib/hazgate/spool", max_size = "512 MiB", segment_size = 16777216, fsync = "batch" }
"#;

#[test]
fn the_forms_the_parsers_accept_are_accepted_by_the_schema() {
    parser_accepts(FORMS).expect("the parser accepts the forms");
    let v = validator(&printed_schema(false));
    assert_eq!(schema_errors(&v, FORMS), Vec::<String>::new());
}

/// Mistakes: (what, a configuration the parser reads, the text changed in it, the change, a
/// part of the schema's message expected). The unchanged text is accepted by both, so a
/// refusal (even a vague `oneOf` one) is due to the change alone.
const MISTAKES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "unknown field in [site]",
        "[site]\nid = \"s\"\nname = \"Site\"\n",
        "name = ",
        "nmae = ",
        "nmae",
    ),
    (
        "unknown field in a kind of source",
        "[site]\nid = \"s\"\n[[sources]]\nkind = \"modbus_tcp\"\nid = \"t\"\naddress = \"h:502\"\ntimeout = \"1s\"\n",
        "timeout",
        "tiemout",
        "",
    ),
    (
        "unknown field in a flattened output table",
        "[site]\nid = \"s\"\n[[outputs]]\nkind = \"influxdb_v1\"\nid = \"i\"\nurl = \"http://h\"\ndatabase = \"d\"\nbatch_size = 10\n",
        "batch_size",
        "batchsize",
        "",
    ),
    (
        "unknown field in a rule default",
        "[site]\nid = \"s\"\n[rule_defaults.oxygen]\nhh = 25\n",
        "hh =",
        "hhh =",
        "hhh",
    ),
    (
        "wrong type",
        "[site]\nid = \"s\"\n[gateway]\nsample_queue = 100\n",
        "100",
        "\"many\"",
        "\"many\"",
    ),
    (
        "wrong type in an array of tables",
        "[site]\nid = \"s\"\n[[devices]]\nid = \"d\"\narea = \"a\"\nsource = \"x\"\nunit_id = 30\n",
        "30",
        "300",
        "300",
    ),
    (
        "bad enum value",
        "[site]\nid = \"s\"\nlanguage = \"en\"\n",
        "\"en\"",
        "\"fr\"",
        "\"fr\"",
    ),
    (
        "bad enum value in a register",
        "[site]\nid = \"s\"\n[[device_maps]]\nid = \"m\"\n[[device_maps.registers]]\nname = \"x\"\ntable = \"input\"\naddress = 0\ntype = \"u16\"\n",
        "u16",
        "u17",
        "",
    ),
    (
        "unknown kind of source",
        "[site]\nid = \"s\"\n[[sources]]\nkind = \"modbus_tcp\"\nid = \"o\"\naddress = \"h:502\"\n",
        "modbus_tcp",
        "opcua",
        "",
    ),
    (
        "duration without a unit",
        "[site]\nid = \"s\"\n[gateway]\nshutdown_grace = \"10s\"\n",
        "\"10s\"",
        "\"10\"",
        "\"10\"",
    ),
    (
        "inline secret",
        "[site]\nid = \"s\"\n[[outputs]]\nkind = \"influxdb_v2\"\nid = \"i\"\nurl = \"http://h\"\norg = \"o\"\nbucket = \"b\"\ntoken = { env = \"T\" }\n",
        "{ env = \"T\" }",
        "\"s3cret\"",
        "",
    ),
    (
        "unit id list with a word",
        "[site]\nid = \"s\"\n[[device_sets]]\nid = \"g{unit}\"\narea = \"a\"\nsource = \"b\"\nmap = \"m\"\nunit_ids = \"1-9\"\n",
        "1-9",
        "1-x",
        "",
    ),
    (
        "byte size with an unknown unit",
        "[site]\nid = \"s\"\n[[outputs]]\nkind = \"influxdb_v1\"\nid = \"i\"\nurl = \"http://h\"\ndatabase = \"d\"\nspool = { dir = \"/s\", max_size = \"2 GiB\" }\n",
        "GiB",
        "gigs",
        "",
    ),
    (
        "device map file with another field",
        "[site]\nid = \"s\"\n[[device_maps]]\nfile = \"maps/x.toml\"\n",
        "file = \"maps/x.toml\"",
        "file = \"maps/x.toml\"\nid = \"x\"",
        "",
    ),
    (
        "no [site]",
        "[site]\nid = \"s\"\n[gateway]\nsample_queue = 10\n",
        "[site]\nid = \"s\"\n",
        "",
        "site",
    ),
];

#[test]
fn an_unknown_field_a_wrong_type_and_a_bad_enum_value_are_refused_like_the_parser_does() {
    let v = validator(&printed_schema(false));
    for (what, good, from, to, expected) in MISTAKES {
        assert_eq!(good.matches(from).count(), 1, "{what}: `{from}` once");
        parser_accepts(good)
            .unwrap_or_else(|e| panic!("{what}: the parser refuses the control: {e}"));
        assert_eq!(
            schema_errors(&v, good),
            Vec::<String>::new(),
            "{what}: the schema refuses the control"
        );
        let bad = good.replacen(from, to, 1);
        assert!(
            parser_accepts(&bad).is_err(),
            "{what}: the parser accepts it, so the schema must too: fix the case"
        );
        let errors = schema_errors(&v, &bad);
        assert!(!errors.is_empty(), "{what}: the schema accepts\n{bad}");
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{what}: no error mentions `{expected}`: {errors:?}"
        );
    }
}

#[test]
fn the_included_file_schema_leaves_site_to_the_main_file_and_refuses_include() {
    let v = validator(&printed_schema(true));
    let part = "[[devices]]\nid = \"d\"\narea = \"a\"\nsource = \"bus\"\nmap = \"m\"\n";
    assert_eq!(schema_errors(&v, part), Vec::<String>::new());
    // The loader reads the same part the same way (it adds a placeholder `[site]`).
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("conf.d")).expect("conf.d");
    std::fs::write(dir.path().join("conf.d/a.toml"), part).expect("write part");
    std::fs::write(
        dir.path().join("conf.d/b.toml"),
        "include = [\"c.toml\"]\n[[areas]]\nid = \"a\"\nname = \"A\"\n",
    )
    .expect("write part");
    std::fs::write(
        dir.path().join("main.toml"),
        "include = [\"conf.d/a.toml\"]\n[site]\nid = \"s\"\n",
    )
    .expect("write main");
    let err = hazgate::config::load(&dir.path().join("main.toml"))
        .expect_err("device on an unknown source");
    assert!(
        matches!(err, hazgate::config::LoadError::Invalid { .. }),
        "the part parses; only validation refuses it: {err}"
    );
    std::fs::write(
        dir.path().join("main.toml"),
        "include = [\"conf.d/b.toml\"]\n[site]\nid = \"s\"\n",
    )
    .expect("write main");
    assert!(
        matches!(
            hazgate::config::load(&dir.path().join("main.toml")),
            Err(hazgate::config::LoadError::Parse { .. })
        ),
        "an included file that includes is refused by the loader"
    );
    let nested = std::fs::read_to_string(dir.path().join("conf.d/b.toml")).expect("read");
    assert!(
        !schema_errors(&v, &nested).is_empty(),
        "and by the included-file schema"
    );
    // The main file's schema still wants `[site]`.
    let main = validator(&printed_schema(false));
    assert!(!schema_errors(&main, part).is_empty());
}
