//! The systemd unit stays consistent with the gateway: it gives the drain more time than the
//! configured grace period, and its commands exist. The Debian package, built by
//! `scripts/build-deb` around the test binary, installs as a site would: owners and modes, a
//! config the service user can read, a unit systemd accepts, an example config that validates.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
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

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Removes the `hazgate` user and group after the test when the test created them.
struct UserCleanup(bool);

impl Drop for UserCleanup {
    fn drop(&mut self) {
        if self.0 {
            // userdel removes the user's own group too; groupdel is for a leftover one.
            for (cmd, arg) in [("userdel", "hazgate"), ("groupdel", "hazgate")] {
                let _ = Command::new(cmd)
                    .arg(arg)
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

#[test]
fn deb_installs_a_config_the_service_user_can_read_and_a_unit_systemd_accepts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let uid = String::from_utf8(run(Command::new("id").arg("-u")).stdout).expect("utf-8");
    assert_eq!(
        uid.trim(),
        "0",
        "this test creates the `hazgate` system user as the package's postinst does: run it as \
         root (scripts/test in CI does)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    // The service user must be able to reach the extracted files.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // Build the package around the binary this test run built.
    let out = run(Command::new(root.join("scripts/build-deb"))
        .args(["--fast", "--binary", env!("CARGO_BIN_EXE_hazgate"), "--out"])
        .arg(tmp.path()));
    let deb = PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim());
    assert!(deb.is_file(), "{deb:?}");

    // Owners and modes as packaged.
    let listing =
        String::from_utf8(run(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout).expect("utf-8");
    let entry = |path: &str| -> (String, String) {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[0].to_owned(), f[1].to_owned())
    };
    for (path, mode) in [
        ("/usr/bin/hazgate", "-rwxr-xr-x"),
        ("/etc/hazgate/hazgate.toml", "-rw-r-----"),
        ("/lib/systemd/system/hazgate.service", "-rw-r--r--"),
        ("/usr/share/hazgate/maps/gas-4-20ma.toml", "-rw-r--r--"),
    ] {
        assert_eq!(
            entry(path),
            (mode.to_owned(), "root/root".to_owned()),
            "{path}"
        );
    }
    for line in listing.lines() {
        assert!(
            line.split_whitespace().nth(1) == Some("root/root"),
            "{line}"
        );
        assert!(
            line.as_bytes().get(8) != Some(&b'w'),
            "world-writable: {line}"
        );
    }
    let ctrl = tmp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctrl));
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/hazgate/hazgate.toml");

    // Install: unpack, then the package's own postinst (DPKG_ROOT points it at the tree; the
    // user is created on this machine, as on a site).
    let tree = tmp.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree));
    let existed = Command::new("getent")
        .args(["passwd", "hazgate"])
        .status()
        .expect("getent")
        .success();
    let _cleanup = UserCleanup(!existed);
    run(Command::new(ctrl.join("postinst"))
        .args(["configure", ""])
        .env("DPKG_ROOT", &tree));
    let gid: u32 = String::from_utf8(run(Command::new("id").args(["-g", "hazgate"])).stdout)
        .expect("utf-8")
        .trim()
        .parse()
        .expect("gid");
    let conf = tree.join("etc/hazgate/hazgate.toml");
    let m = std::fs::metadata(&conf).expect("config");
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, gid, 0o640),
        "root:hazgate 0640"
    );
    let state = std::fs::metadata(tree.join("var/lib/hazgate")).expect("state dir");
    assert_eq!((state.gid(), state.mode() & 0o7777), (gid, 0o750));

    // The service user reads its config, and the shipped example passes check-config.
    let checked = run(Command::new("setpriv")
        .args(["--reuid", "hazgate", "--regid", "hazgate", "--init-groups"])
        .arg(tree.join("usr/bin/hazgate"))
        .arg("check-config")
        .arg(&conf));
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains(": ok"),
        "{checked:?}"
    );
    // Nobody else does.
    let other = Command::new("setpriv")
        .args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "cat",
        ])
        .arg(&conf)
        .output()
        .expect("setpriv");
    assert!(!other.status.success(), "the config is readable by others");

    // systemd accepts the unit as installed (the binary path points into the tree, since
    // systemd-analyze checks that the command exists).
    let unit =
        std::fs::read_to_string(tree.join("lib/systemd/system/hazgate.service")).expect("unit");
    let copy = tmp.path().join("hazgate.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/bin/hazgate",
            &tree.join("usr/bin/hazgate").display().to_string(),
        ),
    )
    .expect("write unit");
    let analyze = system_binary("systemd-analyze", "systemd");
    let verified = run(Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify complained:\n{said}"
    );
    for want in [
        "User=hazgate",
        "SystemCallFilter=@system-service",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectKernelLogs=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "UMask=0027",
    ] {
        assert!(unit.lines().any(|l| l == want), "{want} missing");
    }
    for group in ["ttyS", "ttyUSB", "ttyACM", "ttyAMA", "ttymxc", "ttyXRUSB"] {
        let line = format!("DeviceAllow=char-{group} rw");
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
}

/// Finds a system binary or fails with the package to install.
fn system_binary(name: &str, package: &str) -> PathBuf {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: apt-get install -y {package} (scripts/test does this as root)")
        })
}

#[test]
fn restart_prevent_exit_status_names_the_config_and_usage_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("packaging/hazgate.service")).expect("unit file");
    let codes: Vec<i32> = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestartPreventExitStatus="))
        .expect("RestartPreventExitStatus set")
        .split_whitespace()
        .map(|c| c.parse().expect("number"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[site]\nid = \"s\"\ncolour = \"red\"\n").expect("write");
    let config_error = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .expect("run")
        .status
        .code()
        .expect("exit code");
    let usage_error = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["run", "--no-such-option"])
        .output()
        .expect("run")
        .status
        .code()
        .expect("exit code");
    assert_eq!(codes, vec![config_error, usage_error]);
    assert_eq!((config_error, usage_error), (1, 2));
}
