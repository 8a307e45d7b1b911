//! The status page in a real headless Chromium (Debian's chromium + chromium-driver): live
//! values grouped by area in the usual colours, a broken detector shown as a fault.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_values_alarms_and_faults() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let cancel = CancellationToken::new();
        let mut spec = hazgate_sim::demo_spec();
        spec.listeners[0].listen = "127.0.0.1:0".into();
        let sim = hazgate_sim::start(spec, Path::new("."), cancel.clone())
            .await
            .expect("sim");
        sim.handle
            .set_value("gd101", "lel", 30.0)
            .expect("gas above H");
        sim.handle
            .set_raw("gd102", "lel", 1000.0)
            .expect("broken loop");
        let opts = hazgate::demo::DemoOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            influx_url: None,
            influx_db: "hazgate".into(),
        };
        let gw = hazgate::app::start(
            hazgate::demo::demo_config(sim.listeners[0].1, &opts).expect("config"),
        )
        .await
        .expect("gateway");
        let driver = support::chromedriver();
        let browser = support::Browser::open(&driver).await;
        browser.goto(&format!("http://{}/", gw.api_addr)).await;

        let card = |id: &'static str| {
            let b = &browser;
            async move {
                let found = b.find_all(&format!(".card[data-channel=\"{id}\"]")).await;
                let el = found.first()?.clone();
                Some((b.attr(&el, "class").await, b.text(&el).await))
            }
        };
        let (class, text) =
            support::eventually(Duration::from_secs(30), "gd101 shown in alarm", || async {
                card("tankfarm.gd101.lel")
                    .await
                    .filter(|(c, _)| c.contains("alarm"))
            })
            .await;
        assert!(class.contains("alarm"), "{class}");
        assert!(
            text.contains("30") && text.contains("%LEL") && text.contains("ALARM H"),
            "{text}"
        );
        let (class, text) = card("tankfarm.gd102.lel").await.expect("gd102 card");
        assert!(
            class.contains("fault"),
            "broken loop shown as fault: {class} {text}"
        );
        assert!(
            text.contains("FAULT") && text.contains("—"),
            "no value shown for a fault: {text}"
        );
        let (class, _) = card("dustline.dc1.dp").await.expect("dc1 card");
        assert!(class.contains("ok"), "{class}");
        let areas: Vec<String> = {
            let mut v = Vec::new();
            for el in browser.find_all(".area h3").await {
                v.push(browser.text(&el).await);
            }
            v
        };
        assert_eq!(areas, ["TANKFARM", "DUSTLINE", "POWER"]);
        // The active-alarm table lists the gas alarm and the fault.
        let rows = browser.find_all("#alarms tbody tr").await;
        let mut listed = Vec::new();
        for r in &rows {
            listed.push(browser.attr(r, "data-alarm").await);
        }
        assert!(
            listed.contains(&"tankfarm.gd101.lel:H".to_owned()),
            "{listed:?}"
        );
        assert!(
            listed.contains(&"tankfarm.gd102.lel:fault".to_owned()),
            "{listed:?}"
        );
        let devices = browser.find_all("#devices tbody tr").await;
        assert_eq!(devices.len(), 5, "every device listed");
        let shot = std::env::temp_dir().join("hazgate-status-page.png");
        browser.screenshot(&shot).await;
        assert!(
            std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 1000,
            "screenshot written"
        );
        browser.close().await;
        gw.stop().await.expect("stop");
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}
