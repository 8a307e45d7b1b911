//! Loss of view in a real headless Chromium on the real `hazgate demo` binary: the status page
//! must never keep showing data it no longer receives as normal.
//!
//! - The gateway stalled (SIGSTOP: the process is alive and its sockets open, nothing answers):
//!   the heartbeat deadline passes and the page shows the banner and greys every value.
//! - After SIGCONT the page recovers by itself.
//! - The gateway killed (kill -9): the live stream drops and the page says so at once.
//!
//! The page runs in Chinese (browser language zh-CN) for the stall and in English (its language
//! switch) for the kill. The measured times to the banner are printed.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the demo if the test fails half-way (also when stopped: SIGKILL ends a stopped process).
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("the kill command runs");
    assert!(st.success(), "kill {sig} {pid} failed");
}

/// Starts `hazgate demo` on a free port; returns the process and the status page URL.
fn start_demo() -> (Demo, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("HAZGATE_LOG_LEVEL", "warn")
        .env_remove("HAZGATE_INFLUX_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("hazgate demo starts");
    let stdout = child.stdout.take().expect("stdout");
    let demo = Demo(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo prints its status page URL within 60 s");
        if let Some(rest) = line.trim().strip_prefix("status page:") {
            break rest.trim().to_owned();
        }
    };
    (demo, url)
}

/// What the page shows: banner (hidden?, text, cause), body classes, and per card
/// (channel, classes, text).
#[derive(Debug)]
struct View {
    banner_hidden: bool,
    banner: String,
    cause: String,
    body: String,
    cards: Vec<(String, String, String)>,
    alarms_note: String,
}

async fn view(b: &support::Browser) -> Option<View> {
    let v = b
        .eval(
            "const ban = document.querySelector('#banner');
             return [ban.hidden, ban.textContent, ban.dataset.cause || '', document.body.className,
                     [...document.querySelectorAll('.card')].map((c) => [c.dataset.channel, c.className, c.textContent]),
                     document.querySelector('#alarms-empty').hidden ? '' : document.querySelector('#alarms-empty').textContent];",
        )
        .await;
    let cards = v[4]
        .as_array()?
        .iter()
        .filter_map(|c| {
            Some((
                c[0].as_str()?.to_owned(),
                c[1].as_str()?.to_owned(),
                c[2].as_str()?.to_owned(),
            ))
        })
        .collect();
    Some(View {
        banner_hidden: v[0].as_bool()?,
        banner: v[1].as_str()?.to_owned(),
        cause: v[2].as_str()?.to_owned(),
        body: v[3].as_str()?.to_owned(),
        cards,
        alarms_note: v[5].as_str()?.to_owned(),
    })
}

/// `hh:mm:ss +hh:mm` somewhere in `s` (the site's zone, with its offset).
fn has_clock_with_offset(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(15)).any(|i| {
        let w = &b[i..i + 15];
        let d = |j: usize| w[j].is_ascii_digit();
        d(0) && d(1)
            && w[2] == b':'
            && d(3)
            && d(4)
            && w[5] == b':'
            && d(6)
            && d(7)
            && w[8] == b' '
            && (w[9] == b'+' || w[9] == b'-')
            && d(10)
            && d(11)
            && w[12] == b':'
            && d(13)
            && d(14)
    })
}

fn assert_lost(v: &View, words: &[&str], normal_word: &str) {
    assert!(!v.banner_hidden, "banner shown: {v:?}");
    for w in words {
        assert!(v.banner.contains(w), "banner says `{w}`: {}", v.banner);
    }
    assert!(
        has_clock_with_offset(&v.banner),
        "banner has the time with its offset: {}",
        v.banner
    );
    assert!(v.body.contains("lost"), "{}", v.body);
    assert!(!v.cards.is_empty(), "cards still listed");
    for (id, class, text) in &v.cards {
        assert!(class.contains("stale"), "{id} greyed: {class} {text}");
        assert!(
            !text.contains(normal_word),
            "{id} must not say `{normal_word}` without data: {text}"
        );
    }
    assert!(
        !v.alarms_note.is_empty() && !v.alarms_note.contains("No active alarms"),
        "no claim of `no alarms` without communication: {:?}",
        v.alarms_note
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_communication_lost_when_the_gateway_stalls_or_dies() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let (mut demo, url) = start_demo();
        let pid = demo.0.id();
        let driver = support::chromedriver();
        let browser = support::Browser::open_lang(&driver, "zh-CN").await;
        browser.goto(&url).await;

        // Live first: values shown, some channel normal, no banner; the page is in Chinese.
        support::eventually(Duration::from_secs(60), "live values with 正常", || async {
            let v = view(&browser).await?;
            (v.banner_hidden
                && !v.body.contains("lost")
                && !v.body.contains("connecting")
                && v.cards
                    .iter()
                    .any(|(_, c, t)| c.contains("ok") && t.contains("正常")))
            .then_some(())
        })
        .await;
        let h2 = browser
            .eval("return document.querySelector('h2').textContent;")
            .await;
        assert_eq!(h2, "当前报警", "page follows the browser language");

        // Stalled: alive but silent.
        signal(pid, "-STOP");
        let stopped = Instant::now();
        let v = support::eventually(
            Duration::from_secs(30),
            "the banner after SIGSTOP",
            || async {
                view(&browser).await.filter(|v| {
                    !v.banner_hidden && v.cards.iter().all(|(_, c, _)| c.contains("stale"))
                })
            },
        )
        .await;
        let took = stopped.elapsed();
        println!("stall (SIGSTOP) → banner and greyed values after {took:?}");
        assert_lost(&v, &["通信中断"], "正常");
        assert!(
            v.cause == "heartbeat" || v.cause == "api",
            "a stalled gateway is found by its missing heartbeat: {v:?}"
        );
        assert!(
            took < Duration::from_secs(15),
            "loss of view shown within a few seconds, took {took:?}"
        );

        // Running again: the page recovers by itself.
        signal(pid, "-CONT");
        support::eventually(
            Duration::from_secs(60),
            "recovery after SIGCONT",
            || async {
                let v = view(&browser).await?;
                (v.banner_hidden
                    && v.cards.iter().any(|(_, c, t)| {
                        c.contains("ok") && !c.contains("stale") && t.contains("正常")
                    }))
                .then_some(())
            },
        )
        .await;

        // English through the switch, then killed.
        let lang = browser
            .find_all("#lang")
            .await
            .pop()
            .expect("language switch");
        browser.click(&lang).await;
        support::eventually(Duration::from_secs(10), "English page", || async {
            let h2 = browser
                .eval("return document.querySelector('h2').textContent;")
                .await;
            (h2 == "Active alarms").then_some(())
        })
        .await;
        signal(pid, "-KILL");
        let killed = Instant::now();
        let _ = demo.0.wait();
        let v = support::eventually(
            Duration::from_secs(30),
            "the banner after kill -9",
            || async {
                view(&browser).await.filter(|v| {
                    !v.banner_hidden && v.cards.iter().all(|(_, c, _)| c.contains("stale"))
                })
            },
        )
        .await;
        let took = killed.elapsed();
        println!("kill -9 → banner and greyed values after {took:?}");
        assert_lost(&v, &["Communication lost since"], "normal");
        assert!(
            took < Duration::from_secs(15),
            "loss of view shown within a few seconds, took {took:?}"
        );
        browser.close().await;
    })
    .await
    .expect("test timed out");
}
