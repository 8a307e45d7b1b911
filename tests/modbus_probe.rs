//! `hazgate probe` against the simulator: the installer's display value finds the right type,
//! word order and address base, over Modbus TCP and over RTU on a pseudo-terminal.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::process::Command;
use std::time::Duration;

const SITE: &str = r#"
[[listeners]]
id = "tcp"
[[listeners.devices]]
id = "t101"
unit_id = 3
map_id = "tank-radar"
signals.level = { constant = 7.31 }
signals.temperature = { constant = -12.5 }
[[listeners]]
id = "bus"
protocol = "rtu_pty"
[[listeners.devices]]
id = "t102"
unit_id = 9
map_id = "tank-radar"
signals.level = { constant = 4.56 }
"#;

async fn probe(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
            .arg("probe")
            .args(&args)
            .output()
            .expect("hazgate runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_marks_the_matching_interpretations() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel) = support::sim(SITE).await;
        let addr = sim.addr("tcp").expect("tcp").to_string();

        // The tank radar's level is an f32 in CDAB order at holding 0 (manual address 1 with
        // base 1); its temperature an i16 x0.1 at holding 2.
        let args = |extra: &[&str]| -> Vec<String> {
            ["--tcp", &addr, "--unit", "3", "--table", "holding"]
                .iter()
                .chain(extra)
                .map(|s| (*s).to_owned())
                .collect()
        };
        let (ok, out) = probe(args(&["--address", "1", "--count", "4", "--expect", "7.31"])).await;
        assert!(ok, "{out}");
        // Closest first: the true layout. (Others within 0.005 are listed too: a float whose low
        // word is the neighbouring register can read 7.312, which a 2-decimal display shows as
        // 7.31; the installer sees every candidate.)
        let suggestions: Vec<&str> = out.lines().filter(|l| l.contains("# device address_base")).collect();
        assert_eq!(
            suggestions.first().map(|l| l.trim()),
            Some("table = \"holding\", address = 1, type = \"f32\", order = \"CDAB\"  # device address_base = 1"),
            "{out}"
        );
        assert!(suggestions.len() <= 3, "{out}");
        // Every type, order and base is listed.
        for needle in ["u16 ABCD", "i16 BADC", "u32 DCBA", "i64 CDAB", "f64 ABCD", "base 0", "base 1"] {
            assert!(out.contains(needle), "{needle} missing:\n{out}");
        }
        // A scaled integer is found with its scale.
        let (ok, out) = probe(args(&["--address", "2", "--count", "2", "--expect", "-12.5"])).await;
        assert!(ok, "{out}");
        assert!(
            out.contains("address = 2, type = \"i16\", order = \"ABCD\", scale = 0.1  # device address_base = 0"),
            "{out}"
        );
        // No match: said so, exit 0 (the read worked).
        let (ok, out) = probe(args(&["--address", "1", "--count", "2", "--expect", "999.9"])).await;
        assert!(ok && out.contains("no interpretation matches"), "{out}");
        // Over RTU on a serial port (the simulator's pseudo-terminal).
        let port = sim.serial_port("bus").expect("pty").to_owned();
        let (ok, out) = probe(
            ["--serial", &port, "--baud", "19200", "--unit", "9", "--table", "holding", "--address", "0", "--count", "2", "--expect", "4.56"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        )
        .await;
        assert!(ok, "{out}");
        assert!(out.contains("address = 0, type = \"f32\", order = \"CDAB\"  # device address_base = 0"), "{out}");
        // A unit that does not answer: exit status 5 and the reason.
        sim.handle.set_silent("t101", true).expect("fault");
        let (ok, out) = probe(args(&["--address", "1", "--timeout", "300ms"])).await;
        assert!(!ok && out.contains("no answer from unit 3"), "{out}");
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}

#[test]
fn plan_shows_links_and_interval_groups() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["plan", "--config", example])
        .output()
        .expect("hazgate runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("source rs485-2 (modbus rtu /dev/ttyUSB0 9600 8N1"),
        "{text}"
    );
    assert!(
        text.contains("source converter-1 (modbus tcp 192.0.2.10:502"),
        "{text}"
    );
    // t101's level overridden to 5 s in [[channels]].
    assert!(
        text.contains("every 5s:\n      holding 0..1 (2): level@0"),
        "{text}"
    );
}
