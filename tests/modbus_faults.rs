//! One bad device never hurts the others: the real pollers against the simulator's Modbus TCP
//! server, with a unit that never answers, answers slowly, returns exceptions, drops the
//! connection or answers with a wrong transaction id. The healthy units (on the same converter
//! and on a separate one) must keep their sample rate — counted over a window and compared with
//! the nominal rate with generous bounds, never timed assertions on performance — and the bad
//! unit must never produce a plausible number.

#[allow(dead_code, reason = "each test binary uses part of the helpers")]
mod modbus_common;
#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::time::Duration;

use hazgate::model::{BadReason, Reading};
use hazgate_sim::RunningSim;
use modbus_common::{Pollers, assert_rate, good, readings, resolve};
use tokio_util::sync::CancellationToken;

const INTERVAL: Duration = Duration::from_millis(200);
const WINDOW: Duration = Duration::from_secs(4);
const HEALTHY: [&str; 4] = ["d2", "d3", "d4", "d5"];

/// Five gas detectors behind one converter, one behind another; each reads 5 %LEL per unit id.
async fn site() -> (RunningSim, CancellationToken) {
    let mut text = String::from("seed = 1\n[[listeners]]\nid = \"conv\"\n");
    for u in 1..=5 {
        text += &format!(
            "[[listeners.devices]]\nid = \"d{u}\"\nunit_id = {u}\nmap_id = \"gas-4-20ma\"\nsignals.lel = {{ constant = {} }}\n",
            u * 5
        );
    }
    text += "[[listeners]]\nid = \"solo\"\n[[listeners.devices]]\nid = \"s1\"\nunit_id = 1\nmap_id = \"gas-4-20ma\"\nsignals.lel = { constant = 42 }\n";
    support::sim(&text).await
}

fn gateway(sim: &RunningSim) -> hazgate::config::Resolved {
    let conv = sim.addr("conv").expect("conv");
    let solo = sim.addr("solo").expect("solo");
    let mut text = format!(
        r#"
[site]
id = "faults"
[[sources]]
kind = "modbus_tcp"
id = "conv"
address = "{conv}"
timeout = "300ms"
backoff_max = "2s"
[[sources]]
kind = "modbus_tcp"
id = "solo"
address = "{solo}"
timeout = "300ms"
[[device_maps]]
file = "maps/gas-4-20ma.toml"
[[devices]]
id = "s1"
area = "a"
source = "solo"
map = "gas-4-20ma"
poll_interval = "200ms"
"#
    );
    for u in 1..=5 {
        text += &format!(
            "[[devices]]\nid = \"d{u}\"\narea = \"a\"\nsource = \"conv\"\nunit_id = {u}\nmap = \"gas-4-20ma\"\npoll_interval = \"200ms\"\n"
        );
    }
    resolve(&text)
}

fn ch(dev: &str) -> String {
    format!("a.{dev}.lel")
}

/// Starts site and pollers, waits until every unit reads its value, injects `fault` into d1,
/// lets the gateway settle, and returns the pollers with a counted window.
async fn with_fault(
    fault: impl FnOnce(&hazgate_sim::SimHandle),
) -> (
    RunningSim,
    CancellationToken,
    Pollers,
    std::collections::HashMap<String, Vec<hazgate::model::Sample>>,
) {
    let (sim, cancel) = site().await;
    let mut p = Pollers::start(&gateway(&sim));
    for u in 1..=5u32 {
        let want = f64::from(u * 5);
        p.until(Duration::from_secs(10), &ch(&format!("d{u}")), |r| {
            r.value() == Some(want)
        })
        .await;
    }
    fault(&sim.handle);
    p.skip(Duration::from_secs(1)).await;
    let window = p.collect(WINDOW).await;
    // Every healthy unit kept its rate with its own value; so did the separate converter.
    for (i, d) in HEALTHY.iter().enumerate() {
        assert_rate(&window, &ch(d), WINDOW, INTERVAL, 0.6);
        let want = (i as f64 + 2.0) * 5.0;
        assert!(
            good(&window, &ch(d)).iter().all(|&v| v == want),
            "{d} read a value other than {want}"
        );
    }
    assert_rate(&window, &ch("s1"), WINDOW, INTERVAL, 0.75);
    assert!(good(&window, &ch("s1")).iter().all(|&v| v == 42.0));
    (sim, cancel, p, window)
}

async fn finish(sim: RunningSim, cancel: CancellationToken, p: Pollers) {
    p.stop().await;
    cancel.cancel();
    let _ = sim.wait().await;
}

fn all_comm(rs: &[Reading]) -> bool {
    !rs.is_empty()
        && rs
            .iter()
            .all(|r| matches!(r, Reading::Bad(BadReason::Comm { .. })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_unit_is_backed_off_and_costs_one_timeout_per_backoff_period() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel, mut p, window) = with_fault(|h| {
            h.set_silent("d1", true).expect("fault");
        })
        .await;
        assert!(
            all_comm(&readings(&window, &ch("d1"))),
            "dead unit gives Bad(comm) only"
        );
        // Still one sample per schedule slot (Bad), so the channel shows the fault on time.
        let n = readings(&window, &ch("d1")).len() as f64;
        assert!(
            n >= 0.5 * WINDOW.as_secs_f64() / INTERVAL.as_secs_f64(),
            "{n} samples"
        );
        // Backoff: after three failed polls, at most one attempt (one timeout) per backoff
        // period, which starts at 0.5-1 s and grows to 1-2 s (backoff_max = 2 s).
        let failed = p.polls("d1", "failed");
        let skipped = p.polls("d1", "skipped");
        assert!(skipped > 0, "the dead unit was never backed off");
        let window_s = WINDOW.as_secs_f64() + 1.0 + 10.0; // generous: whole test run
        assert!(
            failed as f64 <= 3.0 + window_s / 0.5,
            "{failed} failed polls: more than one timeout per backoff period"
        );
        // In the counted window specifically, far fewer timeouts than polls.
        assert!(failed < skipped, "failed {failed} skipped {skipped}");
        // It comes back once it answers again.
        sim.handle.reset("d1").expect("reset");
        p.until(Duration::from_secs(10), &ch("d1"), |r| {
            r.value() == Some(5.0)
        })
        .await;
        let h = p.state.devices();
        assert_eq!(
            h[&hazgate::model::DeviceId::new("d1")].consecutive_failures,
            0
        );
        finish(sim, cancel, p).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_unit_within_the_timeout_stays_good_and_others_keep_their_rate() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel, p, window) = with_fault(|h| {
            h.set_delay("d1", Duration::from_millis(100))
                .expect("fault");
        })
        .await;
        assert!(good(&window, &ch("d1")).iter().all(|&v| v == 5.0));
        assert_rate(&window, &ch("d1"), WINDOW, INTERVAL, 0.6);
        let lat = p.state.devices()[&hazgate::model::DeviceId::new("d1")]
            .latency_ms
            .expect("latency");
        assert!(lat >= 100.0, "latency {lat} ms reflects the 100 ms delay");
        finish(sim, cancel, p).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_slower_than_the_timeout_is_bad_and_backed_off() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel, p, window) = with_fault(|h| {
            h.set_delay("d1", Duration::from_millis(600))
                .expect("fault");
        })
        .await;
        assert!(
            all_comm(&readings(&window, &ch("d1"))),
            "late answers are never used"
        );
        assert!(p.polls("d1", "skipped") > 0);
        finish(sim, cancel, p).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_are_bad_samples_and_keep_the_link() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel, mut p, window) = with_fault(|h| {
            h.set_exception("d1", Some(4)).expect("fault");
        })
        .await;
        let rs = readings(&window, &ch("d1"));
        assert!(
            !rs.is_empty()
                && rs
                    .iter()
                    .all(|r| *r == Reading::Bad(BadReason::Exception { code: 4 })),
            "{rs:?}"
        );
        // An answering device is not backed off: it keeps its full rate of (Bad) samples.
        assert!(rs.len() as f64 >= 0.6 * WINDOW.as_secs_f64() / INTERVAL.as_secs_f64());
        assert_eq!(p.polls("d1", "skipped"), 0);
        // But an exception is a failed poll: the unit is not healthy (it answered every poll
        // of the window with an exception and never with data).
        let h = &p.state.devices()[&hazgate::model::DeviceId::new("d1")];
        assert!(h.exceptions > 0, "{h:?}");
        assert!(
            f64::from(h.consecutive_failures)
                >= 0.6 * WINDOW.as_secs_f64() / INTERVAL.as_secs_f64(),
            "{h:?}"
        );
        assert!(
            h.last_error
                .as_deref()
                .is_some_and(|e| e.contains("exception")),
            "{h:?}"
        );
        let last_success = h.last_success.expect("it read before the fault");
        let since = std::time::SystemTime::now()
            .duration_since(last_success)
            .unwrap_or_default();
        assert!(
            since >= WINDOW,
            "last_success is {since:?} old: exception answers renewed it"
        );
        let ok = p.polls("d1", "ok");
        p.skip(Duration::from_secs(1)).await;
        assert_eq!(p.polls("d1", "ok"), ok, "exception polls counted as ok");
        assert!(p.polls("d1", "failed") > 0);
        let m = p.metrics.encode();
        assert!(
            m.contains("hazgate_modbus_device_exceptions_total{device=\"d1\"}"),
            "{m}"
        );
        finish(sim, cancel, p).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_drops_the_connection_is_bad_and_others_recover_at_once() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel, p, window) = with_fault(|h| {
            h.set_drop_connection("d1", true).expect("fault");
        })
        .await;
        assert!(all_comm(&readings(&window, &ch("d1"))));
        assert!(p.polls("d1", "skipped") > 0, "backed off");
        finish(sim, cancel, p).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_transaction_id_is_never_taken_as_an_answer() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sim, cancel, p, window) = with_fault(|h| {
            h.set_wrong_transaction_id("d1", true).expect("fault");
        })
        .await;
        let rs = readings(&window, &ch("d1"));
        assert!(all_comm(&rs), "{rs:?}");
        let detail = p.state.devices()[&hazgate::model::DeviceId::new("d1")]
            .last_error
            .clone()
            .unwrap_or_default();
        assert!(
            detail.contains("mismatch") || detail.contains("backing off"),
            "last error names the mismatch: {detail}"
        );
        finish(sim, cancel, p).await;
    })
    .await
    .expect("test timed out");
}
