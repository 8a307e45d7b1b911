//! Configuration scale benchmark (prints figures, asserts nothing). `cargo bench --bench config_scale`.
//!
//! Generates sites of 10 000 and 50 000 channels, once fed by MQTT (`[[sources.channels]]` under
//! one topic filter), once by MQTT declared compactly (one `[[sources.channel_sets]]` entry and
//! rule defaults: `mqtt-set`) and once by Modbus TCP (devices of 50 input registers each, up to 200 units
//! per source). For each it runs the real binary and prints:
//! - `check-config` wall time and its peak RSS as last sampled (VmHWM from /proc every 5 ms
//!   while it runs: a lower bound);
//! - start-up time of `run` until `/healthz` answers 200 (temp dir, free ports, no device or
//!   broker listening: sources retry in the background), then the RSS and peak RSS (VmRSS /
//!   VmHWM from /proc) right after start.
//!
//! Bounded: each step gives up after 120 s and the gateway is killed.

#[path = "../tests/support/mod.rs"]
#[expect(
    dead_code,
    reason = "shared test support; the bench uses only free_port and http_get"
)]
mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STEP_LIMIT: Duration = Duration::from_secs(120);
const REGISTERS_PER_DEVICE: usize = 50;
const UNITS_PER_SOURCE: usize = 200;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn header(api_port: u16) -> String {
    format!(
        "[site]\nid = \"bench\"\ntimezone = \"Asia/Shanghai\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n"
    )
}

/// `channels` MQTT channels under one topic filter, 20 per device, a rule on each.
fn mqtt_site(api_port: u16, broker_port: u16, channels: usize) -> String {
    let mut s = header(api_port);
    write!(
        s,
        "[[sources]]\nkind = \"mqtt\"\nid = \"broker\"\naddress = \"127.0.0.1:{broker_port}\"\nmax_age = \"60s\"\n\
         [[sources.topics]]\nfilter = \"site/{{area}}/{{device}}/{{name}}\"\nchannel = \"{{area}}.{{device}}.{{name}}\"\nformat = \"number\"\n"
    )
    .expect("write");
    for i in 0..channels {
        write!(
            s,
            "[[sources.channels]]\nid = \"a{}.d{}.lel{}\"\nkind = \"combustible_gas\"\nunit = \"%LEL\"\nrange = [0, 100]\n",
            i / 1000,
            i / 20,
            i % 20
        )
        .expect("write");
    }
    for i in 0..channels {
        write!(
            s,
            "[[rules]]\nchannel = \"a{}.d{}.lel{}\"\nh = 20\nhh = 40\ndeadband = 2\n",
            i / 1000,
            i / 20,
            i % 20
        )
        .expect("write");
    }
    s
}

/// The same site as [`mqtt_site`] declared compactly: one `[[sources.channel_sets]]` entry
/// (20 channels per device, one device range per area of 50 devices) and
/// `[rule_defaults.combustible_gas]` instead of a rule per channel.
fn mqtt_set_site(api_port: u16, broker_port: u16, channels: usize) -> String {
    let mut s = header(api_port);
    write!(
        s,
        "[rule_defaults.combustible_gas]\nunit = \"%LEL\"\nh = 20\nhh = 40\ndeadband = 2\n\
         [[sources]]\nkind = \"mqtt\"\nid = \"broker\"\naddress = \"127.0.0.1:{broker_port}\"\nmax_age = \"60s\"\n\
         [[sources.topics]]\nfilter = \"site/{{area}}/{{device}}/{{name}}\"\nchannel = \"{{area}}.{{device}}.{{name}}\"\nformat = \"number\"\n\
         [[sources.channel_sets]]\ndevices = [\n"
    )
    .expect("write");
    let devices = channels.div_ceil(20);
    for first in (0..devices).step_by(50) {
        writeln!(
            s,
            "{{ area = \"a{}\", prefix = \"d\", from = {first}, to = {} }},",
            first / 50,
            (first + 49).min(devices - 1)
        )
        .expect("write");
    }
    s.push_str("]\n");
    for c in 0..20 {
        write!(
            s,
            "[[sources.channel_sets.channels]]\nname = \"lel{c}\"\nkind = \"combustible_gas\"\nunit = \"%LEL\"\nrange = [0, 100]\n"
        )
        .expect("write");
    }
    s
}

/// `channels` Modbus channels: devices of 50 input registers, 200 units per source.
fn modbus_site(api_port: u16, dead_port: u16, channels: usize) -> String {
    let mut s = header(api_port);
    let devices = channels.div_ceil(REGISTERS_PER_DEVICE);
    let sources = devices.div_ceil(UNITS_PER_SOURCE);
    for src in 0..sources {
        write!(
            s,
            "[[sources]]\nkind = \"modbus_tcp\"\nid = \"bus{src}\"\naddress = \"127.0.0.1:{dead_port}\"\ntimeout = \"500ms\"\nbackoff_max = \"30s\"\n"
        )
        .expect("write");
    }
    for d in 0..devices {
        write!(
            s,
            "[[devices]]\nid = \"gd{d}\"\narea = \"a{}\"\nsource = \"bus{}\"\nunit_id = {}\npoll_interval = \"5s\"\n",
            d / UNITS_PER_SOURCE,
            d / UNITS_PER_SOURCE,
            d % UNITS_PER_SOURCE + 1
        )
        .expect("write");
        for r in 0..REGISTERS_PER_DEVICE {
            write!(
                s,
                "[[devices.registers]]\nname = \"lel{r}\"\ntable = \"input\"\naddress = {r}\nkind = \"combustible_gas\"\nunit = \"%LEL\"\nspan = {{ raw = [4000, 20000], eng = [0, 100] }}\n"
            )
            .expect("write");
        }
    }
    for d in 0..devices {
        for r in 0..REGISTERS_PER_DEVICE {
            write!(
                s,
                "[[rules]]\nchannel = \"a{}.gd{d}.lel{r}\"\nh = 20\nhh = 40\ndeadband = 2\n",
                d / UNITS_PER_SOURCE
            )
            .expect("write");
        }
    }
    s
}

fn check_config(bin: &Path, cfg: &Path) -> (Duration, bool, u64) {
    // To a file, not a pipe: thousands of warning lines would fill a pipe nobody reads yet.
    let report = cfg.with_extension("check.txt");
    let t = Instant::now();
    let mut child = Command::new(bin)
        .args(["--log-level", "warn", "check-config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&report).expect("create check-config report"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start hazgate check-config");
    let mut peak = 0;
    loop {
        if let Some(hwm) = support::proc_status_kib(child.id(), "VmHWM:") {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            if !status.success() {
                let err = std::fs::read_to_string(&report).unwrap_or_default();
                eprintln!(
                    "check-config failed:\n{}",
                    err.lines().take(20).collect::<Vec<_>>().join("\n")
                );
            }
            return (t.elapsed(), status.success(), peak);
        }
        if t.elapsed() > STEP_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return (t.elapsed(), false, peak);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn start(bin: &Path, cfg: &Path, api_port: u16) -> Option<(Duration, u64, u64)> {
    let t = Instant::now();
    let child = Command::new(bin)
        .args(["--log-level", "error", "run", "--config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hazgate run");
    let mut gw = Kill(child);
    let pid = gw.0.id();
    loop {
        if let Ok((200, _)) = support::http_get(api_port, "/healthz") {
            let up = t.elapsed();
            let rss = support::proc_status_kib(pid, "VmRSS:").unwrap_or(0);
            let hwm = support::proc_status_kib(pid, "VmHWM:").unwrap_or(0);
            return Some((up, rss, hwm));
        }
        if gw.0.try_wait().ok().flatten().is_some() {
            eprintln!("the gateway exited before /healthz answered");
            return None;
        }
        if t.elapsed() > STEP_LIMIT {
            eprintln!("/healthz did not answer within {STEP_LIMIT:?}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_hazgate"));
    println!(
        "{:<8} {:>8} {:>10} {:>12} {:>14} {:>10} {:>12} {:>12}",
        "source",
        "channels",
        "toml KiB",
        "check ms",
        "check HWM KiB",
        "start ms",
        "RSS KiB",
        "peak KiB"
    );
    for kind in ["mqtt", "mqtt-set", "modbus"] {
        for channels in [10_000usize, 50_000] {
            let dir = tempfile::tempdir().expect("tempdir");
            let cfg = dir.path().join("hazgate.toml");
            let api_port = support::free_port();
            let other_port = support::free_port();
            let text = match kind {
                "mqtt" => mqtt_site(api_port, other_port, channels),
                "mqtt-set" => mqtt_set_site(api_port, other_port, channels),
                _ => modbus_site(api_port, other_port, channels),
            };
            std::fs::write(&cfg, &text).expect("write config");
            let (check, ok, check_peak) = check_config(bin, &cfg);
            let check_peak = format!(">={check_peak}");
            let started = if ok { start(bin, &cfg, api_port) } else { None };
            match started {
                Some((up, rss, hwm)) => println!(
                    "{kind:<8} {channels:>8} {:>10} {:>12} {check_peak:>14} {:>10} {rss:>12} {hwm:>12}",
                    text.len() / 1024,
                    check.as_millis(),
                    up.as_millis()
                ),
                None => println!(
                    "{kind:<8} {channels:>8} {:>10} {:>12} {check_peak:>14} {:>10} {:>12} {:>12}",
                    text.len() / 1024,
                    if ok {
                        check.as_millis().to_string()
                    } else {
                        "failed".into()
                    },
                    "failed",
                    "-",
                    "-"
                ),
            }
        }
    }
}
