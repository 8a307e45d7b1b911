//! Property tests for every decoder of outside input: MQTT topic matching, channel templates,
//! payload mapping and JSON paths, device timestamps, Modbus register decoding, IM robot
//! answers and configuration files. Each asserts "no panic; a Bad sample or an error", over a
//! small corpus kept in `tests/corpus/` plus a bounded number of generated cases (a few seconds
//! per target in a debug build).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::Value;

use hazgate::alerts::deliver::robot_answer;
use hazgate::config::mqtt::{MqttSource, TimestampUnit};
use hazgate::config::{self, ByteOrder, DataType, RegisterDef, Span, Table};
use hazgate::model::{BadReason, Reading};
use hazgate::sources::modbus::decode::{decode_words, to_reading};
use hazgate::sources::mqtt::mapping::{
    Json, JsonPath, Mapper, Template, TopicPattern, parse_rfc3339, parse_ts,
};

fn corpus(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// One mapping of every shape, with timestamps and statuses, over channels `a.d1.v`,
/// `a.d1.lel`, `a.d1.o2`.
fn mapper(unit: &str) -> Mapper {
    let text = format!(
        r#"id = "m"
address = "127.0.0.1:1883"
[timestamps]
max_past = "36500d"
max_future = "36500d"
[[topics]]
filter = "n/{{d}}"
channel = "a.{{d}}.v"
format = "number"
[[topics]]
filter = "j/{{d}}"
channel = "a.{{d}}.v"
timestamp = "ts"
timestamp_unit = "{unit}"
status = "status"
[[topics]]
filter = "o/{{d}}/#"
channel = "a.{{d}}.{{key}}"
object = ""
timestamp = "ts"
timestamp_unit = "{unit}"
[[topics]]
filter = "r/+/{{d}}"
channel = "a.{{d}}.{{key}}"
records = "data"
value = "v"
timestamp = "ts"
timestamp_unit = "{unit}"
status = "q"
[[channels]]
id = "a.d1.v"
[[channels]]
id = "a.d1.lel"
[[channels]]
id = "a.d1.o2"
"#
    );
    let src: MqttSource = toml::from_str(&text).expect("test mapping parses");
    Mapper::new(&src).expect("test mapping compiles")
}

const UNITS: [&str; 6] = ["auto", "s", "ms", "us", "ns", "rfc3339"];
const TOPICS: [&str; 5] = ["n/d1", "j/d1", "o/d1/x", "r/x/d1", "j/D1"];

/// Every sample is for a declared channel and is Good with a finite value or Bad.
fn check_outcome(m: &Mapper, topic: &str, payload: &[u8]) {
    let o = m.map(topic, payload, now());
    for s in &o.samples {
        assert!(
            ["a.d1.v", "a.d1.lel", "a.d1.o2"].contains(&s.channel.as_str()),
            "undeclared channel {}",
            s.channel
        );
        if let Reading::Good(v) = s.reading {
            assert!(v.is_finite(), "Good({v}) from {payload:?}");
        }
        // Even with 100-year limits no sample leaves 1970..9999 (formatters panic outside).
        assert!(
            s.ts >= UNIX_EPOCH && s.ts < UNIX_EPOCH + Duration::from_secs(253_402_300_800),
            "{:?} from {payload:?}",
            s.ts
        );
    }
}

#[test]
fn the_timestamp_that_panicked_the_mqtt_source_is_a_bad_decode_sample() {
    // Before: `parse_rfc3339` split the string 6 bytes from its end, inside the `€`: a panic
    // that killed the source task.
    let m = mapper("auto");
    let o = m.map(
        "j/d1",
        r#"{"value":1.0,"ts":"aaaa€bbbbb","status":"ok"}"#.as_bytes(),
        now(),
    );
    assert_eq!(o.samples.len(), 1, "{o:?}");
    assert!(
        matches!(o.samples[0].reading, Reading::Bad(BadReason::Decode { .. })),
        "{o:?}"
    );
    assert_eq!(o.issues[0].kind(), "decode_error");
    assert!(parse_rfc3339("aaaa€bbbbb").is_err());
    // A local time before 1970 in UTC, and device times far in the future, give a sample and
    // a message (before: formatting them for the message panicked).
    for payload in [
        r#"{"value":1,"ts":"1970-01-01T00:00:00+08:00"}"#,
        r#"{"value":1,"ts":"0001-01-01T00:00:00Z"}"#,
        r#"{"value":1,"ts":99999999999}"#,
    ] {
        let o = mapper("auto").map("j/d1", payload.as_bytes(), now());
        assert_eq!(o.samples.len(), 1, "{payload}: {o:?}");
        assert_eq!(o.samples[0].ts, now(), "{payload}: the receive time");
        assert_eq!(o.issues[0].kind(), "timestamp_clamped", "{payload}");
    }
    let o = mapper("s").map("j/d1", br#"{"value":1,"ts":1e15}"#, now());
    assert_eq!(o.samples.len(), 1, "{o:?}");
    // chrono parses the forms devices send.
    let t = parse_rfc3339("2023-11-15T06:13:18.5+08:00").expect("offset");
    assert_eq!(t, now() - Duration::from_millis(1500));
    let t = parse_rfc3339("2023-11-14t22:13:19z").expect("lowercase");
    assert_eq!(t, now() - Duration::from_secs(1));
    assert!(parse_rfc3339("2023-11-14T22:13:19").is_err(), "no zone");
}

#[test]
fn mqtt_payload_corpus_never_panics() {
    let text = corpus("mqtt/payloads.txt");
    let mut n = 0;
    for unit in UNITS {
        let m = mapper(unit);
        for line in text.lines().filter(|l| !l.is_empty()) {
            for topic in TOPICS {
                check_outcome(&m, topic, line.as_bytes());
                n += 1;
            }
        }
    }
    assert!(n > 100, "corpus too small: {n}");
}

/// JSON with values devices are known to send wrong, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::String),
        prop::sample::select(vec![
            "aaaa€bbbbb",
            "2023-11-14T22:13:19Z",
            "2023-11-14T22:13:19+08:00",
            "1970-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-12:00",
            "+08:00",
            "€€:€€",
            "1e400",
            "NaN",
            "ok",
            "fault",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "value", "ts", "status", "data", "v", "q", "id", "lel", "o2", "x",
                    ]),
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cases(400))]

    #[test]
    fn mqtt_json_payloads_give_good_or_bad_never_panic(
        v in json_value(),
        unit in prop::sample::select(UNITS.to_vec()),
        topic in prop::sample::select(TOPICS.to_vec()),
    ) {
        let m = mapper(unit);
        check_outcome(&m, topic, v.to_string().as_bytes());
    }

    #[test]
    fn mqtt_raw_payloads_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        topic in prop::sample::select(TOPICS.to_vec()),
    ) {
        check_outcome(&mapper("auto"), topic, &bytes);
    }

    #[test]
    fn timestamps_parse_or_error(s in "\\PC{0,40}", x in any::<f64>(), i in any::<u64>()) {
        let _ = parse_rfc3339(&s);
        for unit in [TimestampUnit::Auto, TimestampUnit::S, TimestampUnit::Ms,
                     TimestampUnit::Us, TimestampUnit::Ns, TimestampUnit::Rfc3339] {
            let _ = parse_ts(&Json::String(s.as_str().into()), unit);
            if let Some(n) = serde_json::Number::from_f64(x) {
                let _ = parse_ts(&Json::Number(n), unit);
            }
            let _ = parse_ts(&Json::Number(i.into()), unit);
            let _ = parse_ts(&Json::String(x.to_string().into()), unit);
        }
    }

    #[test]
    fn topics_match_or_not_never_panic(
        filter in "[a-z{}+#/€$]{0,16}",
        topic in "[a-z/€$+#]{0,24}",
        template in "[a-z{}.€_]{0,16}",
    ) {
        if let Ok(p) = TopicPattern::parse(&filter) {
            let names: Vec<&str> = p.captures().collect();
            let _ = p.mqtt_filter();
            if let Some(caps) = p.matches(&topic) {
                prop_assert_eq!(caps.len(), names.len());
                if let Ok(t) = Template::parse(&template, &names) {
                    let _ = t.render(&caps, Some("€Key"));
                }
            }
        }
        let _ = Template::parse(&template, &["a", "key"]);
    }

    #[test]
    fn json_paths_look_up_or_miss(path in "[a-z0-9.€]{0,12}", v in json_value()) {
        let text = v.to_string();
        let j = Json::parse(text.as_bytes()).expect("printed JSON parses");
        let got = JsonPath::parse(&path).get(&j).map(Json::to_value);
        prop_assert_eq!(got.as_ref(), value_path(&v, &path), "{} in {}", path, text);
    }

    /// The mapper's borrowed tree answers as `serde_json::Value` does: the same tree for every
    /// document, repeated member names included, and the same error text for every other input.
    #[test]
    fn borrowed_json_agrees_with_value(
        v in json_value(),
        dup in prop::sample::select(vec!["", "value", "ts", "x"]),
        bytes in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut text = v.to_string();
        if !dup.is_empty() && text.starts_with('{') && text.len() > 2 {
            // A repeated name: the last one must win, as in `Value`.
            text.insert_str(1, &format!("\"{dup}\":[1],"));
            text.pop();
            text.push_str(&format!(",\"{dup}\":\"last\"}}"));
        }
        for input in [text.as_bytes(), &bytes[..]] {
            let want = serde_json::from_slice::<Value>(input).map_err(|e| e.to_string());
            let got = Json::parse(input).map(|j| j.to_value()).map_err(|e| e.to_string());
            prop_assert_eq!(&got, &want, "{}", String::from_utf8_lossy(input));
            if let Ok(j) = Json::parse(input) {
                prop_assert_eq!(j.to_string(), want.expect("parsed").to_string());
            }
        }
    }
}

/// The lookup `JsonPath` made on `serde_json::Value` before the mapper had its own tree.
fn value_path<'v>(mut v: &'v Value, path: &str) -> Option<&'v Value> {
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn data_type() -> impl Strategy<Value = DataType> {
    prop::sample::select(vec![
        DataType::Bool,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::F32,
        DataType::U64,
        DataType::I64,
        DataType::F64,
    ])
}

fn finite_or_not() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6..1e6f64,
        any::<f64>(),
        Just(0.0),
        Just(f64::MAX),
        Just(1e-300)
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn modbus_registers_decode_to_good_finite_or_bad(
        dt in data_type(),
        order in prop::sample::select(vec![ByteOrder::ABCD, ByteOrder::DCBA, ByteOrder::BADC, ByteOrder::CDAB]),
        words in prop::collection::vec(any::<u16>(), 4),
        bit in any::<u8>(),
        scale in prop::option::of(finite_or_not()),
        offset in prop::option::of(finite_or_not()),
        span in prop::option::of((finite_or_not(), finite_or_not(), finite_or_not(), finite_or_not())),
        valid in prop::option::of((finite_or_not(), finite_or_not())),
        decimals in prop::option::of(any::<u8>()),
        fault in prop::collection::vec(any::<i64>(), 0..3),
    ) {
        let n = usize::from(dt.words());
        let raw = decode_words(&words[..n], dt, order, Some(bit));
        let def = RegisterDef {
            name: "x".into(),
            table: Table::Holding,
            address: 0,
            data_type: Some(dt),
            bit: Some(bit),
            order,
            kind: None,
            unit: None,
            scale,
            offset,
            span: span.map(|(a, b, c, d)| Span { raw: [a, b], eng: [c, d] }),
            valid: valid.map(|(a, b)| [a, b]),
            fault_codes: fault,
            states: Default::default(),
            decimals,
            range: None,
        };
        match to_reading(raw, &def) {
            Reading::Good(v) => prop_assert!(v.is_finite(), "Good({}) from {:?}", v, raw),
            Reading::Bad(_) => {}
        }
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn robot_answers_are_delivered_or_an_error(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            (prop::sample::select(vec!["errcode", "code", "StatusCode"]), any::<i64>(), "\\PC{0,200}")
                .prop_map(|(k, c, m)| serde_json::json!({k: c, "errmsg": m}).to_string().into_bytes()),
        ],
    ) {
        match robot_answer(&body) {
            Ok(()) => {
                let v: Value = serde_json::from_slice(&body).expect("Ok only for JSON");
                let code = v.get("errcode").or_else(|| v.get("code")).or_else(|| v.get("StatusCode"));
                prop_assert_eq!(code.and_then(Value::as_i64), Some(0));
            }
            // An answer's message is quoted at most in a short excerpt.
            Err(e) => prop_assert!(e.len() < 400, "{}", e),
        }
    }
}

#[test]
fn robot_answer_examples() {
    assert!(robot_answer(br#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
    assert!(robot_answer(br#"{"code":0}"#).is_ok());
    assert!(robot_answer(br#"{"StatusCode":0}"#).is_ok());
    let e =
        robot_answer(br#"{"errcode":93000,"errmsg":"invalid webhook url"}"#).expect_err("93000");
    assert!(
        e.contains("93000") && e.contains("invalid webhook url"),
        "{e}"
    );
    assert!(robot_answer(b"<html>").is_err());
    assert!(robot_answer(br#"{"errcode":"0"}"#).is_err());
}

/// Parses and, when that succeeds, validates `text` as a config file in an empty directory.
fn parse_and_validate(text: &str, dir: &Path) {
    let p = dir.join("hazgate.toml");
    if let Ok(cfg) = config::parse(text, &p) {
        let _ = config::validate(&cfg, dir);
    }
}

/// Values that break naive code: huge, negative, non-finite, empty, multi-byte, wrong type.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "-1",
            "18446744073709551616",
            "9223372036854775807",
            "1e309",
            "nan",
            "-inf",
            "\"\"",
            "\"€\"",
            "\"aaaa€bbbbb\"",
            "\"0s\"",
            "\"99999999999999999999y\"",
            "\"1ns\"",
            "\"{€}/#\"",
            "\"+\"",
            "\"#\"",
            "\"/\"",
            "\"..\"",
            "\"a..b\"",
            "\"0.0.0.0:0\"",
            "\"[::1]:99999\"",
            "[]",
            "[0, 0]",
            "[1e309, -1e309]",
            "{}",
            "{ env = \"\" }",
            "{ file = \"/\" }",
            "true",
        ])
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|i| i.to_string()),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
    ]
}

#[test]
fn config_corpus_gives_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/config");
    let mut n = 0;
    for e in std::fs::read_dir(&root).expect("corpus dir") {
        let p = e.expect("entry").path();
        let text = std::fs::read_to_string(&p).expect("readable");
        let res = config::parse(&text, &p)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                config::validate(&c, dir.path())
                    .map(|_| ())
                    .map_err(|p| format!("{p:?}"))
            });
        assert!(res.is_err(), "{}: accepted", p.display());
        n += 1;
    }
    assert!(n >= 3);
}

#[test]
fn config_files_with_a_value_changed_give_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let texts: Vec<String> = ["config/example.toml", "config/demo.toml"]
        .iter()
        .map(|p| std::fs::read_to_string(base.join(p)).expect("shipped config"))
        .collect();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 300,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strat = (
        0..texts.len(),
        any::<prop::sample::Index>(),
        prop::collection::vec(hostile_value(), 1..4),
        any::<prop::sample::Index>(),
    );
    runner
        .run(&strat, |(which, line, values, cut)| {
            let text = &texts[which];
            let lines: Vec<&str> = text.lines().collect();
            // Replace the value of one `key = value` line (and the ones after it) by hostile
            // values.
            let assigns: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].contains(" = ") && !lines[i].trim_start().starts_with('#'))
                .collect();
            let first = *line.get(&assigns);
            let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            for (k, v) in values.iter().enumerate() {
                let Some(&i) =
                    assigns.get(assigns.iter().position(|&a| a == first).unwrap_or(0) + k)
                else {
                    break;
                };
                let key = lines[i].split(" = ").next().unwrap_or("x");
                out[i] = format!("{key} = {v}");
            }
            let mutated = out.join("\n");
            parse_and_validate(&mutated, dir.path());
            // And the same text cut anywhere (on a char boundary).
            let mut at = cut.index(mutated.len() + 1);
            while !mutated.is_char_boundary(at) {
                at -= 1;
            }
            parse_and_validate(&mutated[..at], dir.path());
            Ok(())
        })
        .expect("no panic");
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn arbitrary_config_text_gives_an_error_not_a_panic(
        text in prop_oneof![
            "\\PC{0,200}",
            prop::collection::vec(
                (prop::sample::select(vec!["[site]", "[api]", "[[sources]]", "[[sources.topics]]",
                    "[[devices]]", "[[device_maps]]", "[[device_maps.registers]]", "[[outputs]]",
                    "[[receivers]]", "[alarms]", "[[alarms.tokens]]", "[mqtt_broker]", "[[channels]]"]),
                 prop::sample::select(vec!["id", "kind", "address", "listen", "filter", "channel",
                    "token", "password", "name", "table", "type", "span", "valid", "url", "map",
                    "unit_id", "poll_interval", "max_age", "queue_capacity", "sample_queue"]),
                 hostile_value()),
                0..12,
            ).prop_map(|v| v.into_iter()
                .map(|(h, k, val)| format!("{h}\n{k} = {val}\n"))
                .collect::<String>()),
        ],
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        parse_and_validate(&text, dir.path());
    }
}
