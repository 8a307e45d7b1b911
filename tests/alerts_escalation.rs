//! Call and respond through the running dispatcher task, with paused time: an unacknowledged
//! alarm escalates to tier 2 after T1, the acknowledgement arriving on the engine's channel stops
//! tier 3, and the ledger records every step and who answered.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hazgate::alerts::outbox::{LedgerEntry, LedgerFilter, Reason};
use hazgate::model::{AlarmClass, AlarmEvent, AlarmState, ChannelId, Priority, Transition};
use hazgate::state::SharedState;
use hazgate::telemetry::Metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn ev(seq: u64, t: Transition, state: AlarmState, by: Option<&str>) -> AlarmEvent {
    AlarmEvent {
        seq,
        alarm: "tankfarm.t101.level:HH".into(),
        channel: ChannelId::new("tankfarm.t101.level"),
        condition: "HH".into(),
        priority: Priority::Critical,
        transition: t,
        value: Some(9.6),
        limit: Some(9.5),
        message: "tank T101 level HH".into(),
        ts: SystemTime::now(),
        class: AlarmClass::Process,
        kind: "tank".into(),
        state,
        by: by.map(str::to_owned),
        comment: by.map(|_| "pump stopped".to_owned()),
        raised_at: None,
        notice: Default::default(),
    }
}

fn rows(ob: &hazgate::alerts::Outbox) -> Vec<LedgerEntry> {
    let mut v = ob.ledger(&LedgerFilter {
        receiver: None,
        alarm: None,
        status: None,
        limit: 100,
    });
    v.reverse();
    v
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn tier_two_after_t1_then_acknowledgement_stops_tier_three() {
    tokio::time::timeout(Duration::from_secs(7200), async {
        // Receivers that refuse connections: delivery is not what this test looks at.
        let text = "[site]\nid = \"s\"\n[alarms]\njournal_dir = \"/var/lib/hazgate/alarms\"\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"shift\"\nurl = \"http://127.0.0.1:9/a\"\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"manager\"\nurl = \"http://127.0.0.1:9/b\"\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"township\"\nurl = \"http://127.0.0.1:9/c\"\n\
             [[notifications.routes]]\nid = \"tanks\"\nkinds = [\"tank\"]\nreceivers = [\"shift\"]\ncall = [\"shift leader\"]\n\
             escalation = [{ after = \"5m\", receivers = [\"manager\"], call = [\"safety manager\"] }, \
                           { after = \"15m\", receivers = [\"township\"], call = [\"township official\"] }]\n";
        let cfg = hazgate::config::parse(text, Path::new("t.toml")).expect("parse");
        let (cfg, _) = hazgate::config::validate(&cfg, Path::new(".")).expect("valid");
        let metrics = Arc::new(Metrics::new());
        let p = hazgate::alerts::prepare(&cfg, metrics.clone()).expect("prepare");
        let ob = p.outbox.clone();
        let (tx, rx) = mpsc::channel(16);
        let tasks = hazgate::alerts::spawn(p, rx, Arc::new(SharedState::new(&cfg)), Vec::new(), CancellationToken::new());

        tx.send(ev(1, Transition::Raised, AlarmState::ActiveUnacknowledged, None)).await.expect("send");
        tokio::time::sleep(Duration::from_secs(299)).await;
        let r = rows(&ob);
        assert_eq!(r.len(), 1, "only tier 1 before T1: {r:?}");
        assert_eq!((r[0].receiver.as_str(), r[0].tier), ("shift", 1));

        tokio::time::sleep(Duration::from_secs(2)).await;
        let r = rows(&ob);
        assert_eq!(r.len(), 2, "tier 2 at T1: {r:?}");
        assert_eq!((r[1].receiver.as_str(), r[1].tier, r[1].reason), ("manager", 2, Reason::Escalation));
        assert_eq!(r[1].key, "s-1-tanks-t2-manager");
        assert_eq!(r[1].call, ["safety manager"]);

        // Acknowledged at 10 min: the route sends the acknowledgement to tier 1, tier 3 never fires.
        tokio::time::sleep(Duration::from_secs(299)).await;
        tx.send(ev(2, Transition::Acknowledged, AlarmState::ActiveAcknowledged, Some("wang")))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let r = rows(&ob);
        let tiers: Vec<(String, u32)> = r.iter().map(|e| (e.receiver.clone(), e.tier)).collect();
        assert_eq!(
            tiers,
            [("shift".to_owned(), 1), ("manager".to_owned(), 2), ("shift".to_owned(), 1)],
            "no tier 3 after the acknowledgement"
        );
        // Every row of the alarm records who answered.
        for e in &r {
            assert_eq!(e.answered_by.as_deref(), Some("wang"), "{e:?}");
        }
        let m = metrics.encode();
        assert!(m.contains("hazgate_escalations_total{route=\"tanks\",tier=\"2\"} 1"), "{m}");
        assert!(!m.contains("tier=\"3\""), "{m}");

        drop(tx);
        tasks.dispatcher.await.expect("dispatcher");
    })
    .await
    .expect("test timed out");
}
