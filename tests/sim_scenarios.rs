//! Every shipped simulator scenario (`simulator/scenarios/*.toml`) against the real gateway:
//! `hazgate::demo::start` runs the simulated site (Modbus TCP listener, MQTT data units publishing
//! to the gateway's embedded rumqttd broker), the scenario at its `test_speed` (simulated seconds
//! per real second) and the gateway with `config/demo.toml` time-scaled to match. Once the
//! scenario's duration has passed, the alarm engine's history is compared with the scenario's
//! expected timeline: every expected transition must occur within its tolerance, and no other
//! raised / cleared / fault / fault_cleared transition may occur (except alarms the scenario
//! ignores). Scenarios run concurrently, each with its own ports.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use hazgate::demo::{DemoOptions, start};
use hazgate::rules::HistoryFilter;
use hazgate_sim::Scenario;
use hazgate_sim::scenario::TRANSITIONS;

/// One observed transition, in simulated time.
#[derive(Debug, Clone)]
struct Seen {
    at: f64,
    alarm: String,
    transition: String,
}

struct Outcome {
    name: String,
    speed: f64,
    sim_secs: f64,
    real_secs: f64,
    problems: Vec<String>,
    timeline: Vec<String>,
    worst: f64,
}

async fn run_one(s: Scenario) -> Outcome {
    let opts = DemoOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        influx_url: None,
        influx_db: "hazgate".into(),
        operator_token: None,
    };
    let speed = s.test_speed;
    let started = Instant::now();
    let demo = start(&opts, s.clone(), speed)
        .await
        .unwrap_or_else(|e| panic!("scenario {}: demo does not start: {e:?}", s.name));
    // Wall time of simulated t = 0.
    let t0 = SystemTime::now() - demo.sim.handle.sim_time().div_f64(speed);
    let end = s.duration.as_secs_f64();
    // Let the last expected transitions arrive (gateway latency), in simulated time.
    let slack = 5.0;
    let wait = (end + slack - demo.sim.handle.sim_time().as_secs_f64()).max(0.0) / speed;
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let board = demo.gateway.alarms.board.clone();
    let history = board.history(&HistoryFilter {
        limit: 100_000,
        ..HistoryFilter::default()
    });
    let real_secs = started.elapsed().as_secs_f64();
    demo.stop().await.expect("clean stop");

    let mut seen: Vec<Seen> = history
        .iter()
        .filter(|e| TRANSITIONS.contains(&e.transition.as_str()))
        .filter(|e| !s.ignore.contains(&e.alarm))
        .map(|e| Seen {
            at: match e.ts.duration_since(t0) {
                Ok(d) => d.as_secs_f64() * speed,
                Err(b) => -b.duration().as_secs_f64() * speed,
            },
            alarm: e.alarm.clone(),
            transition: e.transition.as_str().to_owned(),
        })
        // Only the first cycle of a repeating scenario.
        .filter(|x| x.at < end)
        .collect();
    let timeline = seen
        .iter()
        .map(|x| format!("{:>8.1}s {} {}", x.at, x.alarm, x.transition))
        .collect();
    let mut problems = Vec::new();
    let mut worst: f64 = 0.0;
    for x in &s.expect {
        let want = x.at.as_secs_f64();
        let best = seen
            .iter()
            .enumerate()
            .filter(|(_, y)| y.alarm == x.alarm && y.transition == x.transition)
            .min_by(|a, b| (a.1.at - want).abs().total_cmp(&(b.1.at - want).abs()))
            .map(|(i, y)| (i, y.at));
        match best {
            Some((i, at)) if (at - want).abs() <= x.tolerance.as_secs_f64() => {
                worst = worst.max((at - want).abs());
                seen.remove(i);
            }
            Some((_, at)) => problems.push(format!(
                "{} {} expected at {want}s ± {:?}, happened at {at:.1}s",
                x.alarm, x.transition, x.tolerance
            )),
            None => problems.push(format!(
                "{} {} expected at {want}s, never happened",
                x.alarm, x.transition
            )),
        }
    }
    for y in seen {
        problems.push(format!(
            "unexpected: {} {} at {:.1}s",
            y.alarm, y.transition, y.at
        ));
    }
    Outcome {
        name: s.name.clone(),
        speed,
        sim_secs: end,
        real_secs,
        problems,
        timeline,
        worst,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_scenario_produces_its_alarm_timeline() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("simulator/scenarios");
    let scenarios = Scenario::load_dir(&dir).expect("scenarios load");
    assert!(
        scenarios.len() >= 10,
        "expected the shipped scenarios in {}, found {}",
        dir.display(),
        scenarios.len()
    );
    for s in &scenarios {
        assert!(
            !s.expect.is_empty(),
            "scenario {} carries no expected timeline",
            s.name
        );
    }
    let outcomes = tokio::time::timeout(Duration::from_secs(240), async {
        let mut set = tokio::task::JoinSet::new();
        for s in scenarios {
            set.spawn(run_one(s));
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.expect("scenario task panicked"));
        }
        out
    })
    .await
    .expect("scenarios timed out");
    let mut failed = Vec::new();
    eprintln!("scenario                 speed  simulated     real  worst deviation");
    for o in &outcomes {
        eprintln!(
            "{:<24} {:>5}x {:>9.0}s {:>7.1}s  {:>6.1}s",
            o.name, o.speed, o.sim_secs, o.real_secs, o.worst
        );
        if !o.problems.is_empty() {
            failed.push(format!(
                "scenario {}:\n  {}\n  observed timeline:\n{}",
                o.name,
                o.problems.join("\n  "),
                o.timeline.join("\n")
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
