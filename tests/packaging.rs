//! The systemd unit stays consistent with the gateway: it gives the drain more time than the
//! configured grace period, and its commands exist.

use std::path::Path;
use std::time::Duration;

#[test]
fn unit_stop_timeout_is_longer_than_the_drain_grace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("packaging/hazgate.service")).expect("unit file");
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec set");
    let stop: Duration = humantime::parse_duration(stop.trim()).expect("duration");
    let (cfg, _) =
        hazgate::config::load(&root.join("config/example.toml")).expect("example config");
    assert!(
        stop > cfg.gateway.shutdown_grace + Duration::from_secs(5),
        "{stop:?} vs {:?}",
        cfg.gateway.shutdown_grace
    );
    for line in unit.lines().filter(|l| l.starts_with("ExecStart")) {
        let args: Vec<&str> = line
            .split_once('=')
            .expect("key=value")
            .1
            .split_whitespace()
            .collect();
        assert_eq!(args[0], "/usr/bin/hazgate", "{line}");
        // Every subcommand the unit uses exists in this binary.
        let sub = args
            .iter()
            .skip(1)
            .find(|a| !a.starts_with('-') && *a != &"json")
            .expect("subcommand");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hazgate"))
            .args([sub, "--help"])
            .output()
            .expect("run");
        assert!(out.status.success(), "`hazgate {sub}` from {line}");
    }
    assert!(
        unit.contains("ProtectSystem=strict")
            && unit.contains("User=hazgate")
            && unit.contains("StateDirectory=hazgate")
    );
}
