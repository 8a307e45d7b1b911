//! Outbox throughput: notifications enqueued (each `enqueue` call fsync'd) and marked delivered
//! per second, on disk (a temp dir on this machine's disk) and in memory. Prints figures; asserts
//! nothing about speed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hazgate::alerts::config::OutboxConfig;
use hazgate::alerts::outbox::{Next, Notification, Outbox, Reason};
use hazgate::model::{AlarmEvent, ChannelId, Priority, Transition};
use hazgate::telemetry::Metrics;

fn note(i: u64) -> Notification {
    let now = SystemTime::now();
    Notification {
        key: format!("s-{i}-gas-hook"),
        receiver: "hook".into(),
        route: "gas".into(),
        reason: Reason::Event,
        tier: 1,
        call: vec!["Shift leader 13800000000".into()],
        events: vec![AlarmEvent {
            seq: i,
            alarm: "tankfarm.gd101.lel:H".into(),
            channel: ChannelId::new("tankfarm.gd101.lel"),
            condition: "H".into(),
            priority: Priority::High,
            transition: Transition::Raised,
            value: Some(27.5),
            limit: Some(25.0),
            message: "tankfarm.gd101.lel H alarm: 27.5 %LEL at or above limit 25 %LEL".into(),
            ts: now,
            class: Default::default(),
            kind: "combustible_gas".into(),
            state: Default::default(),
            by: None,
            comment: None,
            raised_at: None,
            notice: Default::default(),
        }],
        values: vec![],
        priority: Priority::High,
        created: now,
        expires: now + Duration::from_secs(3600),
    }
}

fn run(label: &str, dir: Option<std::path::PathBuf>, n: u64, batch: u64) {
    let cfg = OutboxConfig {
        dir,
        max_bytes: 64 * 1024 * 1024,
        ledger_entries: 10_000,
    };
    let caps: HashMap<String, usize> = [("hook".to_owned(), 1_000_000)].into_iter().collect();
    let (ob, _) = Outbox::open(&cfg, caps, Arc::new(Metrics::new())).expect("open");
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        ob.enqueue((i..i + batch).map(note).collect(), None);
        i += batch;
    }
    let enq = t.elapsed();
    let t = Instant::now();
    let now = tokio::time::Instant::now();
    while let Next::Due(id, _, _) = ob.next("hook", now, SystemTime::now()) {
        ob.delivered(id, SystemTime::now());
    }
    let del = t.elapsed();
    println!(
        "{label:<28} enqueue {:>9.0}/s ({batch} per fsync)   next+delivered {:>9.0}/s",
        n as f64 / enq.as_secs_f64(),
        n as f64 / del.as_secs_f64()
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    run("disk, 1 per call", Some(dir.path().join("a")), 2_000, 1);
    run("disk, 10 per call", Some(dir.path().join("b")), 10_000, 10);
    run("memory, 1 per call", None, 2_000, 1);
}
