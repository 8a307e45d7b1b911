//! Modbus polling benchmark (prints figures, asserts nothing): 100 simulated devices x 50
//! registers polled at 1 Hz by the real pollers, over 10 simulated converters (10 unit ids each,
//! one source per converter).
//!
//! Reports requests per second, requests per cycle against the coalesced plan, the gateway's CPU
//! (its runtime threads only, from /proc/self/task/*/stat; the simulator runs on other threads of
//! the same process) and the whole process's CPU (/proc/self/stat), RSS (whole process), and
//! poll-interval jitter (spacing of consecutive sample timestamps of each device minus 1 s).
//!
//! Run: `cargo bench --bench modbus` (about 25 s). Target: under 2 % of one core.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hazgate::config;
use hazgate::state::SharedState;
use hazgate::telemetry::Metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CONVERTERS: usize = 10;
const UNITS: usize = 10;
const WARMUP: Duration = Duration::from_secs(4);
const WINDOW: Duration = Duration::from_secs(20);

/// 50 u16 registers: 0..=39 and 60..=69 (the gap of 20 exceeds max_gap, so two requests).
fn map_toml() -> String {
    let mut s = String::from("id = \"bench\"\n");
    for a in (0..40).chain(60..70) {
        s += &format!("[[registers]]\nname = \"r{a}\"\ntable = \"input\"\naddress = {a}\n");
    }
    s
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime (ticks) from a stat line.
fn ticks(stat: &str) -> u64 {
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
}

/// (ticks of threads whose name starts with `prefix`, ticks of the whole process).
fn cpu_ticks(prefix: &str) -> (u64, u64) {
    let mut gw = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.starts_with(prefix) {
                gw += ticks(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default());
            }
        }
    }
    (
        gw,
        ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default()),
    )
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // The simulator on its own runtime and threads.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim")
        .enable_all()
        .build()
        .expect("sim runtime");
    let map = hazgate_sim::DeviceMap::from_toml_str(&map_toml()).expect("sim map");
    let mut site = String::new();
    for c in 0..CONVERTERS {
        site += &format!("[[listeners]]\nid = \"c{c}\"\n");
        for u in 1..=UNITS {
            site += &format!(
                "[[listeners.devices]]\nid = \"d{c}_{u}\"\nunit_id = {u}\nmap_id = \"bench\"\n"
            );
        }
    }
    let sim_cancel = CancellationToken::new();
    let sim = sim_rt
        .block_on(hazgate_sim::start_with_maps(
            hazgate_sim::SiteSpec::from_toml_str(&site).expect("site"),
            Path::new("."),
            &[map],
            sim_cancel.clone(),
        ))
        .expect("simulator starts");

    // The gateway's pollers.
    let mut cfg = format!(
        "[site]\nid = \"bench\"\n[[device_maps]]\n{}",
        map_toml().replace("[[registers]]", "[[device_maps.registers]]")
    );
    for (c, (_, addr)) in sim.listeners.iter().enumerate() {
        cfg += &format!(
            "[[sources]]\nkind = \"modbus_tcp\"\nid = \"c{c}\"\naddress = \"{addr}\"\ntimeout = \"1s\"\n"
        );
        for u in 1..=UNITS {
            cfg += &format!(
                "[[devices]]\nid = \"d{c}_{u}\"\narea = \"b\"\nsource = \"c{c}\"\nunit_id = {u}\nmap = \"bench\"\npoll_interval = \"1s\"\n"
            );
        }
    }
    let parsed = config::parse(&cfg, Path::new("bench.toml")).expect("parses");
    let resolved = match config::validate(&parsed, Path::new(".")) {
        Ok((r, _)) => r,
        Err(p) => panic!("invalid bench config: {p:#?}"),
    };
    let planned: usize = resolved
        .modbus()
        .flat_map(|s| {
            s.devices.iter().map(|d| {
                hazgate::sources::modbus::plan::groups(&d.points, s.timing.max_gap)
                    .iter()
                    .map(|g| g.reads.len())
                    .sum::<usize>()
            })
        })
        .sum();
    let points: usize = resolved.channels.len();

    let gw_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gw")
        .enable_all()
        .build()
        .expect("gateway runtime");
    let state = Arc::new(SharedState::new(&resolved));
    let metrics = Arc::new(Metrics::new());
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<Vec<hazgate::model::Sample>>(1024);
    for s in resolved.modbus().cloned().collect::<Vec<_>>() {
        gw_rt.spawn(hazgate::sources::modbus::run_source(
            s,
            tx.clone(),
            state.clone(),
            metrics.clone(),
            cancel.clone(),
        ));
    }
    drop(tx);

    let requests = |m: &Metrics| -> u64 {
        // Sum of hazgate_modbus_requests_total over every label set.
        m.encode()
            .lines()
            .filter(|l| l.starts_with("hazgate_modbus_requests_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };

    let report = gw_rt.block_on(async {
        let mut last_ts: HashMap<String, SystemTime> = HashMap::new();
        let mut spacing_ms: Vec<f64> = Vec::new();
        let mut good = 0u64;
        let mut bad = 0u64;
        let mut measuring = false;
        let warm_end = tokio::time::Instant::now() + WARMUP;
        let end = warm_end + WINDOW;
        let mut start_marks = None;
        loop {
            let deadline = if measuring { end } else { warm_end };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    if measuring { break; }
                    measuring = true;
                    start_marks = Some((Instant::now(), cpu_ticks("gw"), requests(&metrics)));
                    last_ts.clear();
                }
                b = rx.recv() => {
                    let Some(b) = b else { break };
                    if !measuring { continue; }
                    // Jitter per device: its first register's samples.
                    for s in &b {
                        if s.reading.value().is_some() { good += 1 } else { bad += 1 }
                        if s.channel.as_str().ends_with(".r0") {
                            let key = s.channel.as_str().to_owned();
                            if let Some(prev) = last_ts.insert(key, s.ts) {
                                if let Ok(d) = s.ts.duration_since(prev) {
                                    spacing_ms.push(d.as_secs_f64() * 1000.0);
                                }
                            }
                        }
                    }
                }
            }
        }
        let (t0, (gw0, all0), r0) = start_marks.expect("measured");
        let elapsed = t0.elapsed().as_secs_f64();
        let (gw1, all1) = cpu_ticks("gw");
        let r1 = requests(&metrics);
        (
            elapsed,
            gw1 - gw0,
            all1 - all0,
            r1 - r0,
            spacing_ms,
            good,
            bad,
        )
    });
    let (elapsed, gw_ticks, all_ticks, reqs, spacing, good, bad) = report;
    let hz = clk_tck();
    let mut jitter: Vec<f64> = spacing.iter().map(|s| (s - 1000.0).abs()).collect();
    jitter.sort_by(f64::total_cmp);
    let cycles = elapsed; // 1 Hz
    println!(
        "modbus poll benchmark: {} devices x 50 registers at 1 Hz ({points} points), {CONVERTERS} sources",
        CONVERTERS * UNITS
    );
    println!("  window                  {elapsed:.1} s");
    println!("  requests/s              {:.1}", reqs as f64 / elapsed);
    println!(
        "  requests per cycle      {:.1} (coalesced plan: {planned}; uncoalesced would be {points})",
        reqs as f64 / cycles
    );
    println!("  samples                 {good} good, {bad} bad");
    println!(
        "  gateway CPU             {:.2} % of one core (gateway runtime threads)",
        gw_ticks as f64 / hz / elapsed * 100.0
    );
    println!(
        "  process CPU             {:.2} % of one core (gateway + simulator, /proc/self/stat)",
        all_ticks as f64 / hz / elapsed * 100.0
    );
    println!(
        "  RSS                     {} KiB (whole process, simulator included)",
        rss_kib()
    );
    println!(
        "  poll-interval jitter    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} intervals)",
        percentile(&jitter, 0.5),
        percentile(&jitter, 0.99),
        jitter.last().copied().unwrap_or(f64::NAN),
        jitter.len()
    );
    cancel.cancel();
    sim_cancel.cancel();
    gw_rt.shutdown_timeout(Duration::from_secs(2));
    sim_rt.shutdown_timeout(Duration::from_secs(2));
}
