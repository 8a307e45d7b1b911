//! Under systemd (stderr is the stream named by `JOURNAL_STREAM`), every log line starts with
//! its syslog priority `<N>`, so journald keeps the level (`journalctl -p warning`). Otherwise
//! lines are unchanged.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

/// Runs `hazgate run` on a config that gives a warning (anonymous broker beyond loopback) and
/// then fails start-up (the API address is taken): returns (exit status, stderr).
fn run(journal: bool, log_format: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let api = taken.local_addr().expect("addr");
    let config = dir.path().join("hazgate.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"s\"\n[api]\nlisten = \"{api}\"\n[mqtt_broker]\nlisten = \"0.0.0.0:0\"\n"
        ),
    )
    .expect("write config");
    let err_path = dir.path().join("stderr");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let meta = err.metadata().expect("metadata");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hazgate"));
    cmd.args(["--log-format", log_format, "run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .env_remove("JOURNAL_STREAM");
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    let status = cmd.status().expect("run hazgate");
    (
        status.code(),
        std::fs::read_to_string(&err_path).expect("read stderr"),
    )
}

#[test]
fn log_lines_carry_syslog_priorities_when_stderr_is_the_journal() {
    for format in ["text", "json"] {
        let (code, text) = run(true, format);
        assert_eq!(code, Some(3), "start-up failure: {text}");
        let warning = text
            .lines()
            .find(|l| l.contains("mqtt_broker.listen"))
            .unwrap_or_else(|| panic!("no warning line in {text}"));
        assert!(warning.starts_with("<4>"), "{format}: {warning}");
        let error = text
            .lines()
            .find(|l| l.starts_with("<3>"))
            .unwrap_or_else(|| panic!("no <3> line in {text}"));
        assert!(error.contains("127.0.0.1"), "{format}: {error}");
        if format == "json" {
            assert!(
                error[3..].starts_with('{'),
                "JSON after the prefix: {error}"
            );
        }
    }
    // Not the journal (no variable, or one naming another file): no prefixes.
    let (code, text) = run(false, "text");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.lines().all(|l| !l.starts_with('<')), "{text}");
    assert!(text.contains("WARN"), "{text}");
}
