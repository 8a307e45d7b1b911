//! The output spool's directories and files are created 0750 / 0640 by the `hazgate run`
//! process under umask 022 (before: 0755 / 0644, readable by every local user).

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_directories_and_files_are_private_under_umask_022() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel) = support::sim(
            "[[listeners]]\nid = \"c\"\n[[listeners.devices]]\nid = \"gd1\"\nunit_id = 1\nmap_id = \"gas-4-20ma\"\nsignals.lel = { constant = 5 }\n",
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        // Two levels the gateway must create.
        let state = dir.path().join("state");
        let spool = state.join("spool");
        let dead = support::free_port(); // nothing listens: every point stays in the spool
        let cfg = dir.path().join("hazgate.toml");
        std::fs::write(
            &cfg,
            format!(
                "[site]\nid = \"s\"\n[api]\nlisten = \"127.0.0.1:{}\"\n\
                 [[sources]]\nkind = \"modbus_tcp\"\nid = \"c\"\naddress = \"{}\"\ntimeout = \"500ms\"\n\
                 [[devices]]\nid = \"gd1\"\narea = \"a\"\nsource = \"c\"\npoll_interval = \"100ms\"\n\
                 [[devices.registers]]\nname = \"lel\"\ntable = \"input\"\naddress = 0\nspan = {{ raw = [4000, 20000], eng = [0, 100] }}\n\
                 [[outputs]]\nkind = \"influxdb_v1\"\nid = \"o\"\nurl = \"http://127.0.0.1:{dead}\"\ndatabase = \"d\"\n\
                 flush_interval = \"100ms\"\ntimeout = \"1s\"\n\
                 spool = {{ dir = \"{}\", fsync = \"batch\" }}\n",
                support::free_port(),
                sim.listeners[0].1,
                spool.display()
            ),
        )
        .expect("write config");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("umask 022 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_hazgate"))
            .args(["--log-level", "warn", "run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hazgate");
        let seg = support::eventually(Duration::from_secs(30), "a spool segment with data", || {
            let spool = spool.clone();
            async move {
                std::fs::read_dir(&spool).ok()?.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                    p.extension().is_some_and(|e| e == "seg")
                        && std::fs::metadata(p).is_ok_and(|m| m.len() > 0)
                })
            }
        })
        .await;
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(mode(&state), 0o750, "{}", state.display());
        assert_eq!(mode(&spool), 0o750, "{}", spool.display());
        assert_eq!(mode(&seg), 0o640, "{}", seg.display());
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}

/// The helper every state writer uses: exact modes under the test's umask, and a looser file
/// from an older version is tightened when opened.
#[test]
fn private_fs_creates_and_tightens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("a/b");
    hazgate::private_fs::create_dir_all(&d).expect("create");
    assert_eq!(mode(&d) & !0o750, 0, "{:o}", mode(&d));
    assert_eq!(mode(&dir.path().join("a")) & !0o750, 0);
    let f = d.join("x");
    drop(hazgate::private_fs::create(&f).expect("create file"));
    assert_eq!(mode(&f) & !0o640, 0, "{:o}", mode(&f));
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    drop(hazgate::private_fs::open(hazgate::private_fs::options().append(true), &f).expect("open"));
    assert_eq!(mode(&f), 0o640);
}
