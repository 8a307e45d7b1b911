//! Rule evaluation cost per sample with 5,000 channels and 20,000 limit rules (LL/L/H/HH on
//! every channel), then again with 1,000 composite rules on top. Prints figures; asserts nothing.
//!
//! Run: `cargo bench --bench rules`. Target: under 1 µs median per sample on one core.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use hazgate::config;
use hazgate::model::{ChannelId, Reading, Sample};
use hazgate::rules::Engine;

const CHANNELS: usize = 5_000;
const BATCH: usize = 100;

fn config(composites: usize) -> config::Resolved {
    let mut t = String::from(
        "[site]\nid = \"bench\"\n[[sources]]\nkind = \"modbus_tcp\"\nid = \"bus\"\naddress = \"127.0.0.1:1502\"\n",
    );
    for dev in 0..CHANNELS / 100 {
        let _ = write!(
            t,
            "[[devices]]\nid = \"d{dev}\"\narea = \"a\"\nsource = \"bus\"\n"
        );
        for r in 0..100 {
            let _ = write!(
                t,
                "[[devices.registers]]\nname = \"c{r}\"\ntable = \"input\"\naddress = {r}\nkind = \"tank_level\"\nunit = \"m\"\nrange = [0, 100]\n"
            );
        }
    }
    for dev in 0..CHANNELS / 100 {
        for r in 0..100 {
            let _ = write!(
                t,
                "[[rules]]\nchannel = \"a.d{dev}.c{r}\"\nll = 5\nl = 10\nh = 90\nhh = 95\ndeadband_pct = 2\non_delay = \"2s\"\n"
            );
        }
    }
    for k in 0..composites {
        let (a, b, c) = (
            k % CHANNELS,
            (k * 7 + 1) % CHANNELS,
            (k * 13 + 2) % CHANNELS,
        );
        let ch = |i: usize| format!("a.d{}.c{}", i / 100, i % 100);
        let _ = write!(
            t,
            "[[alarms.composite]]\nid = \"v{k}\"\nexpr = \"2 of ({} >= 90, {} >= 90, {} >= 90)\"\n",
            ch(a),
            ch(b),
            ch(c)
        );
    }
    let cfg = config::parse(&t, Path::new("bench.toml")).expect("parses");
    config::validate(&cfg, Path::new(".")).expect("valid").0
}

/// xorshift: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn run(label: &str, composites: usize) {
    let cfg = config(composites);
    let t0 = Instant::now();
    let mut engine = Engine::new(&cfg, t0);
    let ids: Vec<ChannelId> = cfg.channels.iter().map(|c| c.id.clone()).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut values = vec![50.0f64; ids.len()];
    // 200 rounds of every channel: a random walk, so some channels cross limits and back.
    let mut samples = Vec::with_capacity(ids.len() * 200);
    for round in 0..200u64 {
        for (i, id) in ids.iter().enumerate() {
            let step = f64::from(u32::try_from(rng.next() % 2001).unwrap_or(0)) / 100.0 - 10.0;
            values[i] = (values[i] + step).clamp(0.0, 100.0);
            let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000 + round);
            samples.push((
                round,
                Sample {
                    channel: id.clone(),
                    ts,
                    reading: Reading::Good(values[i]),
                },
            ));
        }
    }
    let mut per_sample_ns = Vec::with_capacity(samples.len() / BATCH);
    let mut events = 0usize;
    let start = Instant::now();
    for chunk in samples.chunks(BATCH) {
        let now = t0 + Duration::from_secs(chunk[0].0);
        let b = Instant::now();
        for (_, s) in chunk {
            events += engine.on_sample(s, now).len();
        }
        per_sample_ns.push(b.elapsed().as_nanos() as f64 / chunk.len() as f64);
    }
    let total = start.elapsed();
    per_sample_ns.sort_by(f64::total_cmp);
    let q = |p: f64| per_sample_ns[((per_sample_ns.len() - 1) as f64 * p) as usize];
    println!(
        "{label}: {} channels, {} alarms ({} composite), {} samples, {} events",
        ids.len(),
        engine.alarm_count(),
        composites,
        samples.len(),
        events
    );
    println!(
        "  per sample: median {:.0} ns, p90 {:.0} ns, p99 {:.0} ns, max {:.0} ns (batches of {BATCH})",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    println!(
        "  throughput: {:.2} M samples/s on one core ({:.0} ns mean)",
        samples.len() as f64 / total.as_secs_f64() / 1e6,
        total.as_nanos() as f64 / samples.len() as f64
    );
    let b = Instant::now();
    let (_, ev) = engine.tick(
        t0 + Duration::from_secs(200),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_200),
    );
    println!(
        "  one tick over every alarm: {:.2} ms ({} events)",
        b.elapsed().as_secs_f64() * 1e3,
        ev.len()
    );
}

fn main() {
    run("limits only", 0);
    run("limits + 2oo3 votes", 1_000);
}
