//! The status page's audible cue for new critical alarms and its notification ledger view, in a
//! real headless Chromium against the demo site in process.
//!
//! The cue: Web Audio is replaced in the page by a counting stand-in; a critical alarm that
//! becomes active and unacknowledged while the page is open starts the cue exactly once (not on
//! every refresh), acknowledging it stops it, the switch is off by default and remembered, and
//! with the switch off nothing sounds. The ledger view: its texts in zh-CN and in English.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A stand-in for `AudioContext` that counts what the page does with it.
const PATCH_AUDIO: &str = r#"
window.__cue = { contexts: 0, oscillators: 0, started: 0, stoppedNow: 0 };
window.AudioContext = class {
  constructor() { window.__cue.contexts++; this.currentTime = 0; this.state = "running"; this.destination = {}; }
  resume() { return Promise.resolve(); }
  createOscillator() {
    window.__cue.oscillators++;
    return { frequency: { value: 0 }, connect() {},
      start() { window.__cue.started++; },
      stop(when) { if (when === undefined) window.__cue.stoppedNow++; } };
  }
  createGain() { return { gain: { value: 0, setValueAtTime() {} }, connect() {} }; }
};
window.webkitAudioContext = window.AudioContext;
return true;
"#;

async fn cue(b: &support::Browser) -> (u64, u64) {
    let v = b
        .eval("return [window.__cue.started, window.__cue.stoppedNow];")
        .await;
    (
        v[0].as_u64().expect("started"),
        v[1].as_u64().expect("stopped"),
    )
}

async fn state_of(b: &support::Browser, id: &str) -> Option<String> {
    let v = b
        .eval(&format!(
            "const r = document.querySelector('tr[data-alarm=\"{id}\"]'); return r ? r.className : null;"
        ))
        .await;
    v.as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_alarm_cue_fires_once_and_stops_on_acknowledge() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let cancel = CancellationToken::new();
        let mut spec = hazgate_sim::demo_spec();
        spec.listeners[0].listen = "127.0.0.1:0".into();
        let sim = hazgate_sim::start(spec, Path::new("."), cancel.clone())
            .await
            .expect("sim");
        let opts = hazgate::demo::DemoOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            influx_url: None,
            influx_db: "hazgate".into(),
            operator_token: Some("demo-test-token".into()),
        };
        let gw = hazgate::app::start(
            hazgate::demo::demo_config(sim.listeners[0].1, &opts).expect("config"),
        )
        .await
        .expect("gateway");
        let driver = support::chromedriver();
        let browser = support::Browser::open_lang(&driver, "zh-CN").await;
        let url = format!("http://{}/", gw.api_addr);
        browser.goto(&url).await;
        support::eventually(Duration::from_secs(30), "the page has channel tiles", || async {
            browser
                .eval("return document.querySelectorAll('.card').length;")
                .await
                .as_u64()
                .filter(|n| *n > 0)
        })
        .await;
        assert_eq!(
            browser.eval("return document.querySelector('#sound').checked;").await,
            false,
            "the cue is off by default"
        );
        assert_eq!(browser.eval(PATCH_AUDIO).await, true);
        // The operator token (acknowledging needs it) and the switch, as a person would.
        browser
            .eval("const t = document.querySelector('#token'); t.value = 'demo-test-token'; t.dispatchEvent(new Event('change')); document.querySelector('#sound').click(); return true;")
            .await;
        assert_eq!(
            browser.eval("return localStorage.getItem('hazgate-sound');").await,
            "on",
            "the switch is remembered"
        );

        // A new critical alarm (HH): the cue starts once, and only once over many refreshes.
        sim.handle.set_value("gd101", "lel", 60.0).expect("gas above HH");
        let hh = "tankfarm.gd101.lel:HH";
        support::eventually(Duration::from_secs(30), "HH unacknowledged on the page", || async {
            state_of(&browser, hh)
                .await
                .filter(|c| c.contains("st-active_unacknowledged"))
        })
        .await;
        support::eventually(Duration::from_secs(10), "the cue starts", || async {
            Some(cue(&browser).await).filter(|(s, _)| *s >= 1)
        })
        .await;
        // The page refreshes alarms every 2 s: three more refreshes.
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert_eq!(cue(&browser).await, (1, 0), "one cue for one new alarm, still sounding");

        // Acknowledged on the page: the cue stops and does not come back.
        browser
            .eval(&format!(
                "document.querySelector('tr[data-alarm=\"{hh}\"] button[data-act=\"ack\"]').click(); return true;"
            ))
            .await;
        support::eventually(Duration::from_secs(15), "HH acknowledged", || async {
            state_of(&browser, hh)
                .await
                .filter(|c| c.contains("st-active_acknowledged"))
        })
        .await;
        support::eventually(Duration::from_secs(10), "the cue stops", || async {
            Some(cue(&browser).await).filter(|(_, stopped)| *stopped >= 1)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(cue(&browser).await, (1, 1), "no cue after the acknowledgement");

        // A second new critical alarm: one more cue.
        sim.handle.set_value("gd102", "lel", 60.0).expect("second gas above HH");
        support::eventually(Duration::from_secs(30), "the second cue", || async {
            Some(cue(&browser).await).filter(|(s, _)| *s == 2)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(cue(&browser).await.0, 2, "exactly one cue for the second alarm");

        // Switched off: the cue stops at once, and a new critical alarm stays silent.
        browser.eval("document.querySelector('#sound').click(); return true;").await;
        assert_eq!(cue(&browser).await, (2, 2), "switching off stops the cue");
        assert_eq!(browser.eval("return localStorage.getItem('hazgate-sound');").await, "off");
        sim.handle.set_value("t101", "level", 100.0).ok();
        sim.handle.set_value("gd101", "lel", 0.0).expect("gas back");
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(cue(&browser).await.0, 2, "nothing sounds with the switch off");

        // Remembered across a reload.
        browser.eval("localStorage.setItem('hazgate-sound', 'on'); return true;").await;
        browser.goto(&url).await;
        assert_eq!(
            browser.eval("return document.querySelector('#sound').checked;").await,
            true,
            "the switch is remembered"
        );

        // The ledger view: in Chinese, with the token it lists (no receivers in the demo:
        // empty); without a token it says one is needed. Then in English.
        browser
            .eval("sessionStorage.removeItem('hazgate-token'); document.querySelector('#ledger').open = true; return true;")
            .await;
        let note = support::eventually(Duration::from_secs(10), "ledger note without a token", || async {
            browser
                .eval("return document.querySelector('#ledger-note').innerText;")
                .await
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        })
        .await;
        assert!(note.contains("令牌"), "{note}");
        assert_eq!(
            browser.eval("return document.querySelector('#ledger > summary').innerText;").await,
            "通知记录"
        );
        browser
            .eval("const t = document.querySelector('#token'); t.value = 'demo-test-token'; t.dispatchEvent(new Event('change')); return true;")
            .await;
        let answered = support::eventually(
            Duration::from_secs(10),
            "ledger answered with the token",
            || async {
                browser
                    .eval("return document.querySelector('#ledger-note').innerText;")
                    .await
                    .as_str()
                    .filter(|t| !t.contains("令牌"))
                    .map(str::to_owned)
            },
        )
        .await;
        let rows = browser
            .eval("return document.querySelectorAll('#ledger-table tbody tr').length;")
            .await;
        assert!(
            answered == "暂无通知记录。" || (answered.is_empty() && rows.as_u64() > Some(0)),
            "the ledger answered in Chinese: `{answered}`, {rows} rows"
        );
        browser.eval("document.querySelector('#lang').click(); return true;").await;
        let head = support::eventually(Duration::from_secs(10), "ledger in English", || async {
            browser
                .eval("return document.querySelector('#ledger > summary').innerText + ' | ' + document.querySelector('#ledger-table thead').innerText;")
                .await
                .as_str()
                .filter(|t| t.starts_with("Notification ledger"))
                .map(str::to_owned)
        })
        .await;
        assert!(head.contains("Acknowledged"), "{head}");

        browser.close().await;
        gw.stop().await.expect("stop");
        cancel.cancel();
    })
    .await
    .expect("test timed out");
}
