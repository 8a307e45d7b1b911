//! No error message contains a secret value: every field that holds a secret ([`SecretRef`])
//! written inline (as a string, a number, a boolean or an array) is refused with a message that
//! names the key's path, line and column but never quotes the value.
//!
//! [`SecretRef`]: hazgate::config::SecretRef

use std::path::Path;
use std::process::Command;

use hazgate::config;

const S: &str = "HUNTER2-s3cr3t-€";

/// `(the key's path as the error must name it, config text with `@` where the secret goes)`.
fn cases() -> Vec<(&'static str, String)> {
    let site = "[site]\nid = \"a\"\n";
    [
        ("mqtt_broker.password", "[mqtt_broker]\nusername = \"u\"\npassword = @\n"),
        (
            "alarms.tokens",
            "[alarms]\n[[alarms.tokens]]\nname = \"x\"\nrole = \"operator\"\ntoken = @\n",
        ),
        (
            "password",
            "[[sources]]\nkind = \"mqtt\"\nid = \"m\"\naddress = \"127.0.0.1:1883\"\nusername = \"u\"\npassword = @\n",
        ),
        (
            "password",
            "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"d\"\nusername = \"u\"\npassword = @\n",
        ),
        (
            "token",
            "[[outputs]]\nkind = \"influxdb_v2\"\nid = \"o\"\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken = @\n",
        ),
        (
            "token",
            "[[receivers]]\nkind = \"webhook\"\nid = \"w\"\nurl = \"http://127.0.0.1:1/\"\ntoken = @\n",
        ),
        (
            "hmac_secret",
            "[[receivers]]\nkind = \"webhook\"\nid = \"w\"\nurl = \"http://127.0.0.1:1/\"\nhmac_secret = @\n",
        ),
        (
            "token",
            "[[receivers]]\nkind = \"wecom\"\nid = \"r\"\nurl = \"http://127.0.0.1:1/\"\ntoken = @\n",
        ),
        (
            "secret",
            "[[receivers]]\nkind = \"dingtalk\"\nid = \"r\"\nurl = \"http://127.0.0.1:1/\"\nsecret = @\n",
        ),
        (
            "secret",
            "[[receivers]]\nkind = \"feishu\"\nid = \"r\"\nurl = \"http://127.0.0.1:1/\"\nsecret = @\n",
        ),
        (
            "password",
            "[[receivers]]\nkind = \"mqtt\"\nid = \"q\"\naddress = \"127.0.0.1:1883\"\ntopic = \"t\"\nusername = \"u\"\npassword = @\n",
        ),
        (
            "key",
            "[[receivers]]\nkind = \"regulator\"\nid = \"g\"\nurl = \"http://127.0.0.1:1/\"\n[receivers.sm4]\nkey = @\niv = { file = \"/x\" }\n",
        ),
        (
            "iv",
            "[[receivers]]\nkind = \"regulator\"\nid = \"g\"\nurl = \"http://127.0.0.1:1/\"\n[receivers.sm4]\nkey = { file = \"/x\" }\niv = @\n",
        ),
    ]
    .into_iter()
    .map(|(k, t)| (k, format!("{site}{t}")))
    .collect()
}

/// The ways a secret gets written inline.
fn inline_forms() -> Vec<(String, &'static str)> {
    vec![
        (format!("\"{S}\""), S),
        (format!("'{S}'"), S),
        (format!("\"\"\"{S}\"\"\""), S),
        ("8675309123987".into(), "8675309123987"),
        (format!("[\"{S}\"]"), S),
        (format!("{{ env = \"X\", value = \"{S}\" }}"), S),
        // A syntax error on the secret's own line.
        (format!("\"{S}"), S),
    ]
}

#[test]
fn no_error_message_quotes_an_inline_secret() {
    let mut checked = 0;
    for (key, text) in cases() {
        for (form, secret) in inline_forms() {
            let t = text.replace('@', &form);
            let e = match config::parse(&t, Path::new("x.toml")) {
                Err(e) => e,
                Ok(c) => match config::validate(&c, Path::new(".")) {
                    Err(p) => {
                        panic!("{key} = {form}: accepted by the parser, refused later: {p:?}")
                    }
                    Ok(_) => panic!("{key} = {form}: accepted"),
                },
            };
            let msg = e.to_string();
            let dbg = format!("{e:?}");
            assert!(
                !msg.contains(secret) && !dbg.contains(secret) && !msg.contains("HUNTER2"),
                "{key} = {form}: the secret leaked into the error:\n{msg}"
            );
            assert!(msg.contains("line "), "{key} = {form}: no line in {msg}");
            checked += 1;
        }
        // The inline-string case names the key and says what to do.
        let t = text.replace('@', &format!("\"{S}\""));
        let msg = config::parse(&t, Path::new("x.toml"))
            .expect_err("inline")
            .to_string();
        assert!(msg.contains(key), "{key}: the key is not named: {msg}");
        assert!(msg.contains("never written inline"), "{key}: {msg}");
    }
    assert_eq!(checked, cases().len() * inline_forms().len());
}

#[test]
fn check_config_does_not_print_an_inline_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, text) in cases() {
        let p = dir.path().join("hazgate.toml");
        std::fs::write(&p, text.replace('@', &format!("\"{S}\""))).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
            .arg("check-config")
            .arg(&p)
            .output()
            .expect("run hazgate");
        assert_eq!(out.status.code(), Some(1), "{key}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains("HUNTER2"),
            "{key}: check-config printed the secret:\n{all}"
        );
    }
}

/// `run` reads every secret before anything starts and names every unreadable one, whichever
/// component it belongs to, instead of stopping at the first.
#[test]
fn run_names_every_unreadable_secret_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("hazgate.toml");
    let missing = dir.path().join("no-such-file");
    std::fs::write(
        &p,
        format!(
            r#"
[site]
id = "s"
[api]
listen = "127.0.0.1:0"
[[sources]]
kind = "mqtt"
id = "dtu"
address = "127.0.0.1:1"
username = "u"
password = {{ env = "HAZGATE_TEST_UNSET_MQTT_PASSWORD" }}
[[sources.topics]]
filter = "d/{{device}}/lel"
channel = "a.{{device}}.lel"
format = "number"
[[sources.channels]]
id = "a.d1.lel"
kind = "combustible_gas"
unit = "%LEL"
max_age = "10s"
[[outputs]]
kind = "influxdb_v2"
id = "tsdb"
url = "http://127.0.0.1:1"
org = "o"
bucket = "b"
token = {{ file = "{missing}" }}
[[receivers]]
kind = "webhook"
id = "duty"
url = "http://127.0.0.1:1/hook"
token = {{ env = "HAZGATE_TEST_UNSET_WEBHOOK_TOKEN" }}
"#,
            missing = missing.display()
        ),
    )
    .expect("write");
    let check = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .arg("check-config")
        .arg(&p)
        .output()
        .expect("run hazgate");
    assert!(
        check.status.success(),
        "the config itself is valid: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["run", "--config"])
        .arg(&p)
        .env_remove("HAZGATE_TEST_UNSET_MQTT_PASSWORD")
        .env_remove("HAZGATE_TEST_UNSET_WEBHOOK_TOKEN")
        .output()
        .expect("run hazgate");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{all}");
    for path in [
        "outputs[0].token",
        "sources[0].password",
        "receivers[0].token",
    ] {
        assert!(all.contains(path), "`{path}` not named:\n{all}");
    }
}
