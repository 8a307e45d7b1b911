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
            operator_token: Some("demo-test-token".into()),
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
                // One script call: the class and text of the same element.
                let v = b
                    .eval(&format!(
                        "const c = document.querySelector('.card[data-channel=\"{id}\"]'); return c ? [c.className, c.innerText] : null;"
                    ))
                    .await;
                Some((v[0].as_str()?.to_owned(), v[1].as_str()?.to_owned()))
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
        // The device's display name (`[[devices]] name` in config/demo.toml) is on its tile.
        assert!(text.contains("1号罐区可燃气体探测器"), "{text}");
        // And an MQTT device's (`[[sources.devices]]`).
        let (_, text) = card("workshop.gt201.h2s").await.expect("gt201 card");
        assert!(text.contains("车间硫化氢探测器"), "{text}");
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
        // A state channel shows its configured word (config/demo.toml `states`), not 0/1.
        let word = support::eventually(
            Duration::from_secs(30),
            "dc1 running shown as a word",
            || async {
                let v = browser
                    .eval("const v = document.querySelector('.card[data-channel=\"dustline.dc1.running\"] .value'); return v ? v.innerText : null;")
                    .await;
                v.as_str().filter(|t| *t != "—").map(str::to_owned)
            },
        )
        .await;
        assert!(["停止", "运行"].contains(&word.trim()), "{word}");
        let areas: Vec<String> = browser
            .eval("return [...document.querySelectorAll('.area h3')].map((h) => h.innerText);")
            .await
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        // The MQTT areas come from the demo's data units (declared channels, shown before data).
        // Areas by their display names (`[[areas]]` in config/demo.toml).
        assert_eq!(areas, ["储罐区", "除尘线", "配电室", "生产车间", "仓库"]);
        // The alarm row says what, where and what to do: label, area name, the rule's message
        // and its response text.
        let row = support::eventually(
            Duration::from_secs(15),
            "the engine's row for gd101:H",
            || async {
                text_of(&browser, "tr[data-alarm=\"tankfarm.gd101.lel:H\"] td.al-what").await
            },
        )
        .await;
        for want in [
            "1号罐区可燃气体 GD-101",
            "储罐区",
            "1号罐区可燃气体探测器",
            "储罐区可燃气体浓度超限",
            "Response",
            "疏散罐区人员，关闭进料阀 XV-101",
        ] {
            assert!(row.contains(want), "`{want}` missing in the alarm row: {row}");
        }
        // The active-alarm table lists the gas alarm and the fault.
        let listed: Vec<String> = browser
            .eval("return [...document.querySelectorAll('#alarms tbody tr')].map((r) => r.dataset.alarm);")
            .await
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        assert!(
            listed.contains(&"tankfarm.gd101.lel:H".to_owned()),
            "{listed:?}"
        );
        assert!(
            listed.contains(&"tankfarm.gd102.lel:fault".to_owned()),
            "{listed:?}"
        );
        // With the operator token, the alarm engine's list appears with an Acknowledge button;
        // clicking it reaches the engine and shows in the alarm's audit trail.
        let token_input = browser.find_all("#token").await.pop().expect("token input");
        browser.type_text(&token_input, "demo-test-token\n").await;
        // With a token the live stream is reopened with a single-use ticket, never the token,
        // in its URL, and keeps delivering values.
        let url = support::eventually(Duration::from_secs(15), "the stream open with a ticket", || async {
            let v = browser
                .eval("return (typeof source !== 'undefined' && source && source.readyState === 1) ? source.url : null;")
                .await;
            v.as_str().filter(|u| u.contains("?ticket=")).map(str::to_owned)
        })
        .await;
        assert!(!url.contains("demo-test-token"), "{url}");
        let note = browser
            .find_all("#user-note")
            .await
            .pop()
            .expect("comment input");
        browser.type_text(&note, "checked on site").await;
        let ack = support::eventually(
            Duration::from_secs(15),
            "an Acknowledge button for gd101:H",
            || async {
                browser
                    .find_all("tr[data-alarm=\"tankfarm.gd101.lel:H\"] button[data-act=\"ack\"]")
                    .await
                    .pop()
            },
        )
        .await;
        // States at a glance: unacknowledged rows flash; the header counts by priority and
        // takes the colour of the worst unacknowledged alarm.
        let row_class = |id: &'static str| {
            let b = &browser;
            async move {
                let v = b
                    .eval(&format!(
                        "const r = document.querySelector('tr[data-alarm=\"{id}\"]'); return r ? r.className : null;"
                    ))
                    .await;
                v.as_str().map(str::to_owned)
            }
        };
        let class = row_class("tankfarm.gd101.lel:H").await.expect("gd101:H row");
        assert!(class.contains("st-active_unacknowledged"), "{class}");
        let anim = browser
            .eval("return getComputedStyle(document.querySelector('tr[data-alarm=\"tankfarm.gd101.lel:H\"] td')).animationName;")
            .await;
        assert_eq!(anim, "flash", "an unacknowledged alarm flashes");
        let header = browser.eval("return [document.querySelector('header').className, document.querySelector('#counts').textContent];").await;
        let hclass = header[0].as_str().unwrap_or_default();
        assert!(hclass.contains("worst-critical") || hclass.contains("worst-high"), "{header}");
        assert!(header[1].as_str().unwrap_or_default().contains("high"), "{header}");
        drop(ack);
        click_css(
            &browser,
            "tr[data-alarm=\"tankfarm.gd101.lel:H\"] button[data-act=\"ack\"]",
        )
        .await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let audit_url = format!(
            "http://{}/api/v1/alarms/tankfarm.gd101.lel:H/audit",
            gw.api_addr
        );
        let audit = support::eventually(
            Duration::from_secs(15),
            "the acknowledgement in the audit trail",
            || {
                let (client, url) = (client.clone(), audit_url.clone());
                async move {
                    let v: serde_json::Value = client
                        .get(&url)
                        .bearer_auth("demo-test-token")
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    let acked = v["events"]
                        .as_array()?
                        .iter()
                        .any(|e| e["by"] == "demo-operator" && e["comment"] == "checked on site");
                    acked.then_some(v)
                }
            },
        )
        .await;
        assert_eq!(audit["alarm"]["unacknowledged"], false, "{audit}");
        support::eventually(
            Duration::from_secs(10),
            "the button gone after acknowledging",
            || async {
                browser
                    .find_all("tr[data-alarm=\"tankfarm.gd101.lel:H\"] button[data-act=\"ack\"]")
                    .await
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
        // Acknowledged: the row stops flashing and says so.
        support::eventually(Duration::from_secs(10), "the row acknowledged", || async {
            row_class("tankfarm.gd101.lel:H")
                .await
                .filter(|c| c.contains("st-active_acknowledged"))
        })
        .await;
        // Clicking the alarm shows its audit trail (who, with the comment) and recent values.
        click_css(&browser, "tr[data-alarm=\"tankfarm.gd101.lel:H\"] td.al-what").await;
        let detail = support::eventually(Duration::from_secs(10), "the alarm's detail", || async {
            let text = text_of(&browser, "#detail").await?;
            text.contains("checked on site").then_some(text)
        })
        .await;
        for want in ["Audit trail", "demo-operator", "acknowledged", "Recent values", "%LEL"] {
            assert!(detail.contains(want), "`{want}` missing in the detail: {detail}");
        }
        let devices = browser.find_all("#devices tbody tr").await;
        assert_eq!(
            devices.len(),
            6,
            "every Modbus device listed (line1 included)"
        );
        let shot = std::env::temp_dir().join("hazgate-status-page.png");
        browser.screenshot(&shot).await;
        assert!(
            std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 1000,
            "screenshot written"
        );
        // A tablet held upright and a phone: the page itself never scrolls sideways (wide
        // tables scroll inside their own box) and the acknowledge buttons stay finger-sized.
        for (w, h) in [(768, 1024), (412, 915)] {
            browser.resize(w, h).await;
            let (page, view) = support::eventually(Duration::from_secs(5), "layout at the new size", || async {
                let v = browser
                    .eval("return [document.documentElement.scrollWidth, document.documentElement.clientWidth];")
                    .await;
                let page = v[0].as_u64()?;
                let view = v[1].as_u64()?;
                (view <= u64::from(w)).then_some((page, view))
            })
            .await;
            assert!(page <= view, "{w}x{h}: page {page} px wide in a {view} px viewport");
            // Every action button (gd102's fault still awaits acknowledgement) is on screen
            // horizontally, without scrolling sideways.
            let rects = browser
                .eval("return [...document.querySelectorAll('#alarms button')].map((b) => { const r = b.getBoundingClientRect(); return [r.left, r.right, window.innerWidth]; });")
                .await;
            let rects = rects.as_array().cloned().unwrap_or_default();
            assert!(!rects.is_empty(), "{w}x{h}: action buttons listed");
            for r in rects {
                let (l, rt, iw) = (r[0].as_f64().unwrap_or(-1.0), r[1].as_f64().unwrap_or(1e9), r[2].as_f64().unwrap_or(0.0));
                assert!(l >= 0.0 && rt <= iw, "{w}x{h}: button at {l}..{rt} outside 0..{iw}");
            }
        }
        let shot = std::env::temp_dir().join("hazgate-status-page-tablet.png");
        browser.screenshot(&shot).await;
        // `HAZGATE_UPDATE_SCREENSHOT=1` refreshes the README's screenshot (docs/status-page.png)
        // from this run, at a desktop size.
        if std::env::var_os("HAZGATE_UPDATE_SCREENSHOT").is_some() {
            browser.resize(1280, 900).await;
            let lang = browser.find_all("#lang").await.pop().expect("language switch");
            browser.click(&lang).await;
            support::eventually(Duration::from_secs(5), "the page in Chinese", || async {
                let h2 = browser.eval("return document.querySelector('h2').textContent;").await;
                (h2 == "当前报警").then_some(())
            })
            .await;
            let _ = support::eventually(Duration::from_secs(5), "desktop layout", || async {
                let v = browser.eval("return document.documentElement.clientWidth;").await;
                (v.as_u64()? > 1000).then_some(())
            })
            .await;
            browser
                .screenshot(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png"))
                .await;
        }
        browser.close().await;
        gw.stop().await.expect("stop");
        cancel.cancel();
        let _ = sim.wait().await;
    })
    .await
    .expect("test timed out");
}

/// The visible text of the first element matching `css`, read in one script call (the page
/// redraws rows when data changes; an element id could go stale between two calls).
async fn text_of(b: &support::Browser, css: &str) -> Option<String> {
    let css = serde_json::to_string(css).expect("json string");
    let v = b
        .eval(&format!(
            "const e = document.querySelector({css}); return e ? e.innerText : null;"
        ))
        .await;
    v.as_str().map(str::to_owned)
}

/// Clicks the first element matching `css` in one script call (see [`text_of`]).
async fn click_css(b: &support::Browser, css: &str) {
    let sel = serde_json::to_string(css).expect("json string");
    let v = b
        .eval(&format!(
            "const e = document.querySelector({sel}); if (!e) return false; e.click(); return true;"
        ))
        .await;
    assert_eq!(v, true, "nothing to click at {css}");
}
