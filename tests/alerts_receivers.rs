//! Alert delivery against real receivers: HTTP servers on port 0 that record requests and can
//! answer 500, hang or be slow, and a real mosquitto. Events are fed straight into the alert
//! dispatcher (the rule engine's channel), so each test controls exactly what is sent.
//! Regulator payloads are also decrypted by Python `cryptography` (SM4), which `scripts/test`
//! installs; without it those tests fail and say so.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use base64::Engine;
use hazgate::alerts::deliver::{dingtalk_sign, feishu_sign, hex, hmac};
use hazgate::alerts::outbox::{LedgerFilter, Status};
use hazgate::alerts::regulator::{parse_key, sm4_cbc_decrypt};
use hazgate::model::{AlarmClass, AlarmEvent, AlarmState, ChannelId, Priority, Transition};
use hazgate::state::SharedState;
use hazgate::telemetry::Metrics;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

// Mode 0 (the default): answer at once with success.
const FAIL: u8 = 1;
const HANG: u8 = 2;
const SLOW: u8 = 3;

#[derive(Clone, Debug)]
struct Req {
    uri: String,
    headers: HeaderMap,
    body: String,
}

#[derive(Clone, Default)]
struct Hook {
    mode: Arc<AtomicU8>,
    calls: Arc<Mutex<Vec<Req>>>,
    accepted: Arc<Mutex<Vec<Req>>>,
}

async fn record(
    State(h): State<Hook>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let r = Req {
        uri: uri.to_string(),
        headers,
        body,
    };
    h.calls.lock().expect("lock").push(r.clone());
    match h.mode.load(Ordering::SeqCst) {
        FAIL => (StatusCode::INTERNAL_SERVER_ERROR, "down".to_owned()),
        HANG => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::OK, String::new())
        }
        SLOW => {
            // Slow but within the receiver's timeout.
            tokio::time::sleep(Duration::from_millis(250)).await;
            h.accepted.lock().expect("lock").push(r);
            (StatusCode::OK, r#"{"errcode":0}"#.to_owned())
        }
        _ => {
            h.accepted.lock().expect("lock").push(r);
            (
                StatusCode::OK,
                r#"{"errcode":0,"code":0,"errmsg":"ok"}"#.to_owned(),
            )
        }
    }
}

async fn hook() -> (Hook, String) {
    let h = Hook::default();
    let app = Router::new().fallback(post(record)).with_state(h.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    (h, format!("http://{addr}"))
}

fn ev(seq: u64, t: Transition) -> AlarmEvent {
    AlarmEvent {
        seq,
        alarm: "a.gd1.lel:HH".into(),
        channel: ChannelId::new("a.gd1.lel"),
        condition: "HH".into(),
        priority: Priority::Critical,
        transition: t,
        value: Some(55.0),
        limit: Some(50.0),
        message: "a.gd1.lel 55 %LEL above HH 50".into(),
        ts: SystemTime::now(),
        class: AlarmClass::Process,
        kind: "combustible_gas".into(),
        state: AlarmState::ActiveUnacknowledged,
        by: None,
        comment: None,
        raised_at: None,
        notice: Default::default(),
    }
}

/// A Modbus device (never polled in these tests) that defines the channel `a.gd1.lel`.
const GAS_CHANNEL: &str = "[[sources]]\nkind = \"modbus_tcp\"\nid = \"c\"\naddress = \"127.0.0.1:9\"\n\
     [[devices]]\nid = \"gd1\"\narea = \"a\"\nsource = \"c\"\n\
     [[devices.registers]]\nname = \"lel\"\ntable = \"input\"\naddress = 0\nunit = \"%LEL\"\nspan = { raw = [4000, 20000], eng = [0, 100] }\n";

struct Running {
    tx: mpsc::Sender<AlarmEvent>,
    outbox: Arc<hazgate::alerts::Outbox>,
    tasks: hazgate::alerts::Tasks,
    metrics: Arc<Metrics>,
    state: Arc<SharedState>,
}

/// With `[alarms] journal_dir` set, keys are `{site}-{seq}-…` (sequence numbers are stable
/// across restarts); the engine itself does not run in these tests.
fn start(toml: &str) -> Running {
    let toml = format!("{toml}\n[alarms]\njournal_dir = \"/var/lib/hazgate/alarms\"\n");
    let cfg = hazgate::config::parse(&toml, Path::new("t.toml")).expect("parse");
    let (cfg, _) = match hazgate::config::validate(&cfg, Path::new(".")) {
        Ok(c) => c,
        Err(p) => panic!("invalid test config: {p:?}"),
    };
    let metrics = Arc::new(Metrics::new());
    let p = hazgate::alerts::prepare(&cfg, metrics.clone()).expect("prepare");
    let outbox = p.outbox.clone();
    let (tx, rx) = mpsc::channel(16);
    let state = Arc::new(SharedState::new(&cfg));
    let tasks = hazgate::alerts::spawn(p, rx, state.clone(), Vec::new(), CancellationToken::new());
    Running {
        tx,
        outbox,
        tasks,
        metrics,
        state,
    }
}

fn all(outbox: &hazgate::alerts::Outbox) -> Vec<hazgate::alerts::outbox::LedgerEntry> {
    outbox.ledger(&LedgerFilter {
        receiver: None,
        alarm: None,
        status: None,
        limit: 1000,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_outage_hang_and_recovery_deliver_once_per_key_with_a_signature() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        h.mode.store(FAIL, Ordering::SeqCst);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("hmac"), "sign-me\n").expect("secret");
        let r = start(&format!(
            "[site]\nid = \"s\"\n[notifications.outbox]\ndir = \"{}/outbox\"\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"hook\"\nurl = \"{url}/alarms\"\ntimeout = \"500ms\"\n\
             backoff_max = \"1s\"\nhmac_secret = {{ file = \"{}/hmac\" }}\nheaders = {{ X-Site = \"plant-1\" }}\n",
            dir.path().display(),
            dir.path().display()
        ));
        r.tx.send(ev(1, Transition::Raised)).await.expect("send");
        // Outage: several 500s.
        support::eventually(Duration::from_secs(20), "three failed attempts", || {
            let n = h.calls.lock().expect("lock").len();
            async move { (n >= 3).then_some(()) }
        })
        .await;
        // Now the receiver hangs: attempts time out after 500 ms and are retried.
        h.mode.store(HANG, Ordering::SeqCst);
        let before = h.calls.lock().expect("lock").len();
        support::eventually(Duration::from_secs(20), "an attempt on the hanging receiver", || {
            let n = h.calls.lock().expect("lock").len();
            async move { (n > before).then_some(()) }
        })
        .await;
        let row = &all(&r.outbox)[0];
        assert_eq!(row.status, Status::Pending);
        assert!(row.attempts >= 3, "{row:?}");
        // Recovery, on a slow receiver (answers after 250 ms; the timeout is 500 ms).
        h.mode.store(SLOW, Ordering::SeqCst);
        let got = support::eventually(Duration::from_secs(20), "delivery after recovery", || {
            let a = h.accepted.lock().expect("lock").first().cloned();
            async move { a }
        })
        .await;
        let key = got.headers["idempotency-key"].to_str().expect("key");
        assert_eq!(key, "s-1-default-hook");
        let body: Value = serde_json::from_str(&got.body).expect("json");
        assert_eq!(body["schema"], "hazgate.alarm.v2");
        assert_eq!(body["idempotency_key"], key);
        assert_eq!(body["event"]["alarm"], "a.gd1.lel:HH");
        assert_eq!(body["events"].as_array().map(Vec::len), Some(1));
        assert_eq!(got.headers["x-site"], "plant-1");
        let ts = got.headers["x-hazgate-timestamp"].to_str().expect("ts");
        let want = format!("sha256={}", hex(&hmac(b"sign-me", format!("{ts}.{}", got.body).as_bytes())));
        assert_eq!(got.headers["x-hazgate-signature"], want.as_str());
        // Every attempt carried the same key.
        for c in h.calls.lock().expect("lock").iter() {
            assert_eq!(c.headers["idempotency-key"], key);
        }
        support::eventually(Duration::from_secs(5), "ledger shows delivered", || {
            let row = all(&r.outbox)[0].clone();
            async move { (row.status == Status::Delivered).then_some(()) }
        })
        .await;
        let m = r.metrics.encode();
        assert!(m.contains("hazgate_alarm_deliveries_total{receiver=\"hook\",result=\"delivered\"} 1"), "{m}");
        assert!(m.contains("hazgate_outbox_pending{receiver=\"hook\"} 0"), "{m}");
        drop(r.tx);
        r.tasks.dispatcher.await.expect("dispatcher");
        for (_, w) in r.tasks.workers {
            w.await.expect("worker");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_are_signed_as_their_platforms_document() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let dir = tempfile::tempdir().expect("tempdir");
        for (f, v) in [("ding-token", "DT"), ("ding-secret", "SECabc"), ("fs-token", "hook-id"), ("fs-secret", "fsSecret"), ("wc-key", "WK")] {
            std::fs::write(dir.path().join(f), v).expect("secret");
        }
        let d = dir.path().display();
        let r = start(&format!(
            "[site]\nid = \"s\"\nname = \"Plant 1\"\nlanguage = \"en\"\ntimezone = \"UTC\"\n\
             [[receivers]]\nkind = \"dingtalk\"\nid = \"ding\"\nurl = \"{url}/robot/send\"\ntoken = {{ file = \"{d}/ding-token\" }}\nsecret = {{ file = \"{d}/ding-secret\" }}\nmention_mobiles = [\"13800000000\"]\n\
             [[receivers]]\nkind = \"feishu\"\nid = \"fs\"\nurl = \"{url}/open-apis/bot/v2/hook\"\ntoken = {{ file = \"{d}/fs-token\" }}\nsecret = {{ file = \"{d}/fs-secret\" }}\nmention_user_ids = [\"ou_7d8a6e6df7621556ce0d21922b676706\"]\n\
             [[receivers]]\nkind = \"wecom\"\nid = \"wc\"\nurl = \"{url}/cgi-bin/webhook/send\"\ntoken = {{ file = \"{d}/wc-key\" }}\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"sms\"\nurl = \"{url}/sms\"\ncontent_type = \"text/plain\"\n\
             body_template = \"{{site}}: {{alarm}} {{transition}} value {{value}} limit {{limit}}; call {{call}} [{{key}}]\"\n\
             [[notifications.routes]]\nid = \"gas\"\nreceivers = [\"ding\", \"fs\", \"wc\", \"sms\"]\ncall = [\"Wang 13800000000\"]\n"
        ));
        r.tx.send(ev(5, Transition::Raised)).await.expect("send");
        let reqs = support::eventually(Duration::from_secs(20), "three robot messages and an SMS", || {
            let a = h.accepted.lock().expect("lock").clone();
            async move { (a.len() == 4).then_some(a) }
        })
        .await;
        let find = |p: &str| reqs.iter().find(|r| r.uri.starts_with(p)).cloned().expect(p);
        // DingTalk: timestamp (ms) and sign = urlencode(base64(HMAC-SHA256(secret, ts\nsecret))).
        let ding = find("/robot/send");
        let query = ding.uri.split_once('?').map_or("", |(_, q)| q);
        let q: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone()).expect(k);
        assert_eq!(get("access_token"), "DT");
        let ts: u128 = get("timestamp").parse().expect("ms timestamp");
        let expect = base64::engine::general_purpose::STANDARD
            .encode(hmac(b"SECabc", format!("{ts}\nSECabc").as_bytes()));
        assert_eq!(get("sign"), expect);
        assert_eq!(dingtalk_sign("SECabc", ts), expect);
        let body: Value = serde_json::from_str(&ding.body).expect("json");
        assert_eq!(body["msgtype"], "text");
        assert_eq!(body["at"]["atMobiles"][0], "13800000000");
        let text = body["text"]["content"].as_str().expect("text");
        // DingTalk shows the mention only when the content names it too.
        assert!(text.contains("@13800000000"), "no @mention in the content: {text}");
        for want in ["Plant 1", "a.gd1.lel:HH", "55", "50", "unacknowledged", "Wang 13800000000", "Time: ", " +00:00"] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
        // Feishu: token in the path, sign = base64(HMAC-SHA256(key = ts\nsecret, msg = "")).
        let fs = find("/open-apis/bot/v2/hook/hook-id");
        let body: Value = serde_json::from_str(&fs.body).expect("json");
        let ts: u64 = body["timestamp"].as_str().expect("ts").parse().expect("secs");
        let expect = base64::engine::general_purpose::STANDARD
            .encode(hmac(format!("{ts}\nfsSecret").as_bytes(), b""));
        assert_eq!(body["sign"], expect.as_str());
        assert_eq!(feishu_sign("fsSecret", ts), expect);
        assert_eq!(body["msg_type"], "text");
        let text = body["content"]["text"].as_str().expect("text");
        assert!(text.contains("a.gd1.lel:HH"), "{text}");
        // Feishu text mentions are `<at user_id>` elements.
        assert!(
            text.contains(r#"<at user_id="ou_7d8a6e6df7621556ce0d21922b676706"></at>"#),
            "no Feishu mention in {text}"
        );
        // WeCom: key as a query parameter, text message.
        let wc = find("/cgi-bin/webhook/send");
        assert!(wc.uri.contains("key=WK"), "{}", wc.uri);
        let body: Value = serde_json::from_str(&wc.body).expect("json");
        assert_eq!(body["msgtype"], "text");
        // SMS gateway: the body template.
        let sms = find("/sms");
        assert_eq!(sms.headers["content-type"], "text/plain");
        assert_eq!(
            sms.body,
            "s: a.gd1.lel:HH raised value 55 limit 50; call Wang 13800000000 [s-5-gas-sms]"
        );
    })
    .await
    .expect("test timed out");
}

/// Feishu robots cannot mention by mobile number: check-config says so instead of the mention
/// being silently dropped; user ids belong to Feishu only.
#[test]
fn feishu_mobile_mentions_are_rejected_by_check_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("hazgate.toml");
    std::fs::write(
        &p,
        "[site]\nid = \"s\"\n\
         [[receivers]]\nkind = \"feishu\"\nid = \"fs\"\nurl = \"http://127.0.0.1:9/hook\"\nmention_mobiles = [\"13800000000\"]\n\
         [[receivers]]\nkind = \"dingtalk\"\nid = \"ding\"\nurl = \"http://127.0.0.1:9/robot/send\"\nmention_user_ids = [\"ou_1\"]\n\
         [[notifications.routes]]\nid = \"r\"\nreceivers = [\"fs\", \"ding\"]\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["check-config", p.to_str().expect("utf-8 path")])
        .output()
        .expect("run hazgate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "errors expected:\n{text}");
    for want in [
        "receivers[0].mention_mobiles",
        "receivers[1].mention_user_ids",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}

/// Known answers of the robots' documented algorithms, computed independently of the gateway's
/// code (DingTalk and Feishu document HMAC-SHA256 + base64 over these exact strings).
#[test]
fn robot_signatures_known_answers() {
    // HMAC-SHA256 test case 2 of RFC 4231 pins the primitive.
    assert_eq!(
        hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let d = dingtalk_sign("Jefe", 0);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&d)
        .expect("base64");
    assert_eq!(raw, hmac(b"Jefe", b"0\nJefe"));
    let f = feishu_sign("Jefe", 0);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&f)
        .expect("base64");
    assert_eq!(raw, hmac(b"0\nJefe", b""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulator_feed_is_mapped_and_sm4_encrypted() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), "0123456789abcdeffedcba9876543210\n").expect("key");
        std::fs::write(dir.path().join("iv"), "000102030405060708090a0b0c0d0e0f\n").expect("iv");
        let d = dir.path().display();
        let r = start(&format!(
            "[site]\nid = \"s\"\n{GAS_CHANNEL}\
             [[receivers]]\nkind = \"regulator\"\nid = \"mem\"\nurl = \"{url}/dust/api\"\napp_id = \"APP1\"\n\
             sm4 = {{ key = {{ file = \"{d}/key\" }}, iv = {{ file = \"{d}/iv\" }} }}\n\
             fields = {{ tag = \"wh\", value = \"sz\", limit_name = \"bjlx\", alarm_time = \"bjsj\", indicator = \"zbbm\", idempotency_key = \"id\" }}\n\
             codes = {{ HH = \"4\" }}\nconstants = {{ qyxydm = \"91320000MA1XXXXXX\" }}\n\
             [[receivers.points]]\nchannel = \"a.gd1.lel\"\ntag = \"GT-101\"\nindicator = \"KRQT\"\n"
        ));
        r.tx.send(ev(9, Transition::Raised)).await.expect("send");
        let req = support::eventually(Duration::from_secs(20), "the regulator record", || {
            let a = h.accepted.lock().expect("lock").first().cloned();
            async move { a }
        })
        .await;
        assert_eq!(req.headers["appid"], "APP1");
        let env: Value = serde_json::from_str(&req.body).expect("envelope");
        assert_eq!(env["appId"], "APP1");
        let ct = base64::engine::general_purpose::STANDARD
            .decode(env["data"].as_str().expect("data"))
            .expect("base64");
        let key = parse_key("0123456789abcdeffedcba9876543210").expect("key");
        let iv = parse_key("000102030405060708090a0b0c0d0e0f").expect("iv");
        let plain = sm4_cbc_decrypt(&key, &iv, &ct).expect("decrypts with the configured key and IV");
        let rec: Value = serde_json::from_slice(&plain).expect("record");
        assert_eq!(rec["wh"], "GT-101");
        assert_eq!(rec["zbbm"], "KRQT");
        assert_eq!(rec["sz"], 55.0);
        assert_eq!(rec["bjlx"], "4");
        assert_eq!(rec["qyxydm"], "91320000MA1XXXXXX");
        assert_eq!(rec["id"], "s-9-default-mem");
        assert!(rec["bjsj"].as_str().is_some_and(|s| s.len() == 19), "{rec}");
        assert!(rec.get("channel").is_none(), "unmapped canonical fields are not sent");
    })
    .await
    .expect("test timed out");
}

/// Every record of an alarm episode keeps `alarm_time` the raise time; acknowledgement, reset
/// and clear records carry their own `event_time`, and every record its transition code (the
/// documented default mapping when the feed configures none, under `event_type` when `fields`
/// does not name it), so no record looks like a new alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulator_episode_records_keep_the_raise_time_and_say_what_happened() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let toml = format!(
            "[site]\nid = \"s\"\n{GAS_CHANNEL}\
             [[receivers]]\nkind = \"regulator\"\nid = \"mem\"\nurl = \"{url}/reg\"\n\
             fields = {{ tag = \"wh\", limit_name = \"bjlx\", alarm_time = \"bjsj\", event_time = \"czsj\" }}\n\
             codes = {{ HH = \"4\" }}\n\
             [[receivers.points]]\nchannel = \"a.gd1.lel\"\ntag = \"GT-101\"\nindicator = \"KRQT\"\n"
        );
        // An old configuration (no transition code, no transition field) is accepted as it is.
        let parsed = hazgate::config::parse(&toml, Path::new("t.toml")).expect("parse");
        let (_, warnings) = hazgate::config::validate(&parsed, Path::new(".")).expect("valid");
        assert!(warnings.iter().all(|w| !w.path.contains("codes")), "{warnings:?}");
        let r = start(&toml);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let mut raise = ev(1, Transition::Raised);
        raise.ts = t0;
        raise.raised_at = Some(t0);
        let mut steps = vec![raise];
        for (i, (t, secs)) in [
            (Transition::Acknowledged, 95),
            (Transition::Cleared, 300),
            (Transition::Reset, 420),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = ev(2 + i as u64, t);
            e.ts = t0 + Duration::from_secs(secs);
            e.raised_at = Some(t0);
            e.by = Some("li.wei".into());
            steps.push(e);
        }
        for e in steps {
            r.tx.send(e).await.expect("send");
        }
        let reqs = support::eventually(Duration::from_secs(20), "four records", || {
            let a = h.accepted.lock().expect("lock").clone();
            async move { (a.len() == 4).then_some(a) }
        })
        .await;
        let mut recs: Vec<Value> = reqs
            .iter()
            .map(|r| serde_json::from_str(&r.body).expect("record"))
            .collect();
        recs.sort_by_key(|r| r["czsj"].as_str().unwrap_or_default().to_owned());
        // 1_790_000_000 s is 2026-09-21 14:13:20 UTC, 22:13:20 in China Standard Time.
        let want = [
            ("1", "2026-09-21 22:13:20"),
            ("2", "2026-09-21 22:14:55"),
            ("3", "2026-09-21 22:18:20"),
            ("4", "2026-09-21 22:20:20"),
        ];
        for (rec, (code, at)) in recs.iter().zip(want) {
            assert_eq!(rec["bjsj"], "2026-09-21 22:13:20", "alarm_time is the raise time: {rec}");
            assert_eq!(rec["czsj"], at, "{rec}");
            assert_eq!(rec["event_type"], code, "{rec}");
            assert_eq!(rec["bjlx"], "4", "{rec}");
        }
        // A configured code replaces the default; one equal to the raise code is warned about.
        let clash = toml.replace("codes = { HH = \"4\" }", "codes = { HH = \"4\", raised = \"A\", acknowledged = \"A\" }");
        let parsed = hazgate::config::parse(&clash, Path::new("t.toml")).expect("parse");
        let (_, warnings) = hazgate::config::validate(&parsed, Path::new(".")).expect("valid");
        let w: Vec<String> = warnings.iter().map(|w| format!("{}: {}", w.path, w.message)).collect();
        assert!(
            w.iter().any(|w| w.contains("codes.acknowledged") && w.contains("new alarms")),
            "{w:?}"
        );
    })
    .await
    .expect("test timed out");
}

/// SM4-CBC decryption by an independent implementation: Python `cryptography` (which has SM4
/// since 35; `scripts/test` installs it). Fails, saying why, when Python or the library is
/// missing.
const PY_SM4: &str = r#"
import base64, sys
try:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    algorithms.SM4
except Exception as e:
    sys.stderr.write("python3 with cryptography>=35 (SM4) is required: %s\n" % e)
    sys.exit(3)
key, iv, enc = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3]
data = sys.stdin.read().strip()
ct = base64.b64decode(data, validate=True) if enc == "base64" else bytes.fromhex(data)
d = Cipher(algorithms.SM4(key), modes.CBC(iv)).decryptor()
u = padding.PKCS7(128).unpadder()
sys.stdout.write((u.update(d.update(ct) + d.finalize()) + u.finalize()).decode("utf-8"))
"#;

/// Decrypts `data` (base64 or hex, as `enc` says) with Python's SM4-CBC and parses the record.
fn python_sm4_decrypt(key: &str, iv: &str, enc: &str, data: &str) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", PY_SM4, key, iv, enc])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "python3 is required for the independent SM4 check (scripts/test installs it): {e}"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data.as_bytes())
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3 runs");
    assert!(
        out.status.success(),
        "Python SM4 decryption failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "Python's plaintext is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A received MQTT message: topic and payload.
type Published = (String, Vec<u8>);

/// The envelope signature recomputed by Python's `hmac` (`sha256`, or `sm3` from OpenSSL
/// through `hashlib`), independent of the gateway's code.
fn python_hmac(digest: &str, key: &str, msg: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib, hmac, sys\n\
             assert sys.argv[1] in hashlib.algorithms_available, 'hashlib has no ' + sys.argv[1]\n\
             print(hmac.new(sys.argv[2].encode(), sys.argv[3].encode(), lambda d=b'': hashlib.new(sys.argv[1], d)).hexdigest())",
            digest,
            key,
            msg,
        ])
        .output()
        .unwrap_or_else(|e| panic!("python3 is required for the signature check: {e}"));
    assert!(
        out.status.success(),
        "Python HMAC-{digest} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

const KEY_HEX: &str = "0123456789abcdeffedcba9876543210";
const IV_HEX: &str = "000102030405060708090a0b0c0d0e0f";

/// HTTP POST shape (base64 ciphertext in `{"appId","data"}`), decrypted by Python.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulator_http_sm4_payload_decrypts_with_python_cryptography() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), format!("{KEY_HEX}\n")).expect("key");
        std::fs::write(dir.path().join("iv"), format!("{IV_HEX}\n")).expect("iv");
        let d = dir.path().display();
        let r = start(&format!(
            "[site]\nid = \"s\"\n{GAS_CHANNEL}\
             [[receivers]]\nkind = \"regulator\"\nid = \"mem\"\nurl = \"{url}/api\"\napp_id = \"APP1\"\n\
             sm4 = {{ key = {{ file = \"{d}/key\" }}, iv = {{ file = \"{d}/iv\" }} }}\n\
             fields = {{ tag = \"wh\", value = \"sz\", limit_name = \"bjlx\", alarm_time = \"bjsj\", handled_by = \"czr\" }}\n\
             codes = {{ HH = \"4\" }}\nconstants = {{ qyxydm = \"91320000MA1XXXXXX\" }}\n\
             [[receivers.points]]\nchannel = \"a.gd1.lel\"\ntag = \"储罐区-GT-101\"\nindicator = \"KRQT\"\n"
        ));
        let mut e = ev(7, Transition::Acknowledged);
        e.by = Some("李伟".into());
        r.tx.send(e).await.expect("send");
        let req = support::eventually(Duration::from_secs(20), "the regulator record", || {
            let a = h.accepted.lock().expect("lock").first().cloned();
            async move { a }
        })
        .await;
        let env: Value = serde_json::from_str(&req.body).expect("envelope");
        assert_eq!(env["appId"], "APP1");
        let rec = python_sm4_decrypt(KEY_HEX, IV_HEX, "base64", env["data"].as_str().expect("data"));
        assert_eq!(rec["wh"], "储罐区-GT-101", "{rec}");
        assert_eq!(rec["sz"], 55.0, "{rec}");
        assert_eq!(rec["bjlx"], "4", "{rec}");
        assert_eq!(rec["czr"], "李伟", "{rec}");
        assert_eq!(rec["event_type"], "2", "{rec}");
        assert_eq!(rec["qyxydm"], "91320000MA1XXXXXX", "{rec}");
    })
    .await
    .expect("test timed out");
}

/// HTTP POST shape with a random IV per message (`iv_mode = "random"`, sent in `iv_field`) and
/// an HMAC-SM3 envelope signature: decrypted and verified by Python.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulator_random_iv_and_sm3_signature_check_out_in_python() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), format!("{KEY_HEX}\n")).expect("key");
        std::fs::write(dir.path().join("sign"), "签名-secret-1\n").expect("sign key");
        let d = dir.path().display();
        let r = start(&format!(
            "[site]\nid = \"s\"\n{GAS_CHANNEL}\
             [[receivers]]\nkind = \"regulator\"\nid = \"mem\"\nurl = \"{url}/api\"\napp_id = \"APP1\"\n\
             sm4 = {{ key = {{ file = \"{d}/key\" }}, iv_mode = \"random\", iv_field = \"xl\" }}\n\
             sign = {{ algorithm = \"hmac_sm3\", key = {{ file = \"{d}/sign\" }}, timestamp_field = \"sj\", sign_field = \"qm\" }}\n\
             fields = {{ tag = \"wh\", value = \"sz\" }}\n\
             [[receivers.points]]\nchannel = \"a.gd1.lel\"\ntag = \"GT-101\"\nindicator = \"KRQT\"\n"
        ));
        r.tx.send(ev(1, Transition::Raised)).await.expect("send");
        r.tx.send(ev(2, Transition::Raised)).await.expect("send");
        let reqs = support::eventually(Duration::from_secs(20), "two regulator records", || {
            let a = h.accepted.lock().expect("lock").clone();
            async move { (a.len() == 2).then_some(a) }
        })
        .await;
        let mut ivs = Vec::new();
        for req in &reqs {
            let env: Value = serde_json::from_str(&req.body).expect("envelope");
            let field = |k: &str| env[k].as_str().unwrap_or_else(|| panic!("{k} in {env}")).to_owned();
            let (iv_b64, data, ts, sign) = (field("xl"), field("data"), field("sj"), field("qm"));
            let iv = base64::engine::general_purpose::STANDARD.decode(&iv_b64).expect("iv base64");
            assert_eq!(iv.len(), 16, "{env}");
            let rec = python_sm4_decrypt(KEY_HEX, &hex(&iv), "base64", &data);
            assert_eq!(rec["wh"], "GT-101", "{rec}");
            let age = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("clock")
                .as_millis()
                .abs_diff(ts.parse::<u128>().expect("timestamp in ms"));
            assert!(age < 60_000, "timestamp {ts} is not now");
            let want = python_hmac("sm3", "签名-secret-1", &format!("APP1{ts}{iv_b64}{data}"));
            assert_eq!(sign, want, "HMAC-SM3 over appId + timestamp + iv + data");
            ivs.push(iv_b64);
        }
        assert_ne!(ivs[0], ivs[1], "the IV is fresh per message");
    })
    .await
    .expect("test timed out");
}

/// MQTT shape (hex ciphertext published to the feed's topic, HMAC-SHA256 signature), decrypted
/// and verified by Python.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulator_mqtt_sm4_payload_decrypts_with_python_cryptography() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let broker = support::mosquitto();
        let port = broker.port;
        let mut o = rumqttc::MqttOptions::new("sm4-sub", "127.0.0.1", port);
        o.set_clean_session(true);
        let (sub, mut el) = rumqttc::AsyncClient::new(o, 16);
        sub.subscribe("gov/#", rumqttc::QoS::AtLeastOnce).await.expect("subscribe");
        let got: Arc<Mutex<Vec<Published>>> = Arc::default();
        let g2 = got.clone();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        g2.lock().expect("lock").push((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        support::eventually(Duration::from_secs(10), "subscriber connected", || {
            let s = sub.clone();
            let g = got.clone();
            async move {
                let _ = s.try_publish("gov/ping", rumqttc::QoS::AtMostOnce, false, "{}");
                g.lock().expect("lock").iter().any(|(t, _)| t == "gov/ping").then_some(())
            }
        })
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), format!("{KEY_HEX}\n")).expect("key");
        std::fs::write(dir.path().join("iv"), format!("{IV_HEX}\n")).expect("iv");
        std::fs::write(dir.path().join("sign"), "mqtt-sign-key\n").expect("sign key");
        let d = dir.path().display();
        let r = start(&format!(
            "[site]\nid = \"s\"\n{GAS_CHANNEL}\
             [[receivers]]\nkind = \"regulator\"\nid = \"gov\"\napp_id = \"APP2\"\n\
             mqtt = {{ address = \"127.0.0.1:{port}\", topic = \"gov/{{site}}/alarm\" }}\n\
             sm4 = {{ key = {{ file = \"{d}/key\" }}, iv = {{ file = \"{d}/iv\" }}, encoding = \"hex\" }}\n\
             sign = {{ algorithm = \"hmac_sha256\", key = {{ file = \"{d}/sign\" }} }}\n\
             fields = {{ tag = \"wh\", value = \"sz\", limit_name = \"bjlx\", transition = \"sjlx\" }}\n\
             codes = {{ HH = \"4\" }}\n\
             [[receivers.points]]\nchannel = \"a.gd1.lel\"\ntag = \"GT-101\"\nindicator = \"KRQT\"\n"
        ));
        r.tx.send(ev(3, Transition::Raised)).await.expect("send");
        let (_, body) = support::eventually(Duration::from_secs(20), "the regulator record over MQTT", || {
            let g = got.lock().expect("lock").iter().find(|(t, _)| t == "gov/s/alarm").cloned();
            async move { g }
        })
        .await;
        let env: Value = serde_json::from_slice(&body).expect("envelope");
        assert_eq!(env["appId"], "APP2");
        let rec = python_sm4_decrypt(KEY_HEX, IV_HEX, "hex", env["data"].as_str().expect("data"));
        assert_eq!(rec["wh"], "GT-101", "{rec}");
        assert_eq!(rec["sz"], 55.0, "{rec}");
        assert_eq!(rec["bjlx"], "4", "{rec}");
        assert_eq!(rec["sjlx"], "1", "{rec}");
        let (ts, data) = (env["timestamp"].as_str().expect("timestamp"), env["data"].as_str().expect("data"));
        let want = python_hmac("sha256", "mqtt-sign-key", &format!("APP2{ts}{data}"));
        assert_eq!(env["sign"], want.as_str(), "HMAC-SHA256 over appId + timestamp + data");
        assert!(env.get("iv").is_none(), "a fixed IV is not sent");
        drop(r);
    })
    .await
    .expect("test timed out");
}

/// `sm4.encoding = "hex"`: the envelope's `data` is the ciphertext in lower-case hex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulator_ciphertext_can_be_hex() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), "0123456789abcdeffedcba9876543210\n").expect("key");
        std::fs::write(dir.path().join("iv"), "000102030405060708090a0b0c0d0e0f\n").expect("iv");
        let d = dir.path().display();
        let r = start(&format!(
            "[site]\nid = \"s\"\n{GAS_CHANNEL}\
             [[receivers]]\nkind = \"regulator\"\nid = \"mem\"\nurl = \"{url}/reg\"\napp_id = \"APP1\"\n\
             sm4 = {{ key = {{ file = \"{d}/key\" }}, iv = {{ file = \"{d}/iv\" }}, encoding = \"hex\" }}\n\
             fields = {{ tag = \"wh\", value = \"sz\" }}\n\
             [[receivers.points]]\nchannel = \"a.gd1.lel\"\ntag = \"GT-101\"\nindicator = \"KRQT\"\n"
        ));
        r.tx.send(ev(4, Transition::Raised)).await.expect("send");
        let req = support::eventually(Duration::from_secs(20), "the regulator record", || {
            let a = h.accepted.lock().expect("lock").first().cloned();
            async move { a }
        })
        .await;
        let env: Value = serde_json::from_str(&req.body).expect("envelope");
        let data = env["data"].as_str().expect("data");
        assert!(data.len() % 32 == 0 && data.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)), "{data}");
        let ct: Vec<u8> = (0..data.len()).step_by(2).map(|i| u8::from_str_radix(&data[i..i + 2], 16).expect("hex")).collect();
        let key = parse_key("0123456789abcdeffedcba9876543210").expect("key");
        let iv = parse_key("000102030405060708090a0b0c0d0e0f").expect("iv");
        let plain = sm4_cbc_decrypt(&key, &iv, &ct).expect("decrypts");
        let rec: Value = serde_json::from_slice(&plain).expect("record");
        assert_eq!(rec["wh"], "GT-101");
        assert_eq!(rec["sz"], 55.0);
    })
    .await
    .expect("test timed out");
}

/// Platforms reject `null` numbers: a field without a value is left out (the default) or sent as
/// an empty string, per feed; never `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulator_fields_without_a_value_are_omitted_or_empty_never_null() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let feed = |id: &str, policy: &str| {
            format!(
                "[[receivers]]\nkind = \"regulator\"\nid = \"{id}\"\nurl = \"{url}/{id}\"\n{policy}\
                 fields = {{ tag = \"wh\", value = \"sz\", hazard_source = \"wxybm\", handled_by = \"czr\" }}\n\
                 [[receivers.points]]\nchannel = \"a.gd1.lel\"\ntag = \"GT-101\"\nindicator = \"KRQT\"\n"
            )
        };
        let r = start(&format!(
            "[site]\nid = \"s\"\n{GAS_CHANNEL}{}{}",
            feed("omit", ""),
            feed("empty", "empty_fields = \"empty\"\n")
        ));
        let mut e = ev(3, Transition::Raised);
        e.value = None;
        r.tx.send(e).await.expect("send");
        let reqs = support::eventually(Duration::from_secs(20), "both records", || {
            let a = h.accepted.lock().expect("lock").clone();
            async move { (a.len() == 2).then_some(a) }
        })
        .await;
        let rec = |p: &str| -> Value {
            let r = reqs.iter().find(|r| r.uri.starts_with(p)).expect(p);
            serde_json::from_str(&r.body).expect("record")
        };
        let omit = rec("/omit");
        assert_eq!(omit["wh"], "GT-101");
        for k in ["sz", "wxybm", "czr"] {
            assert!(omit.get(k).is_none(), "{k} sent by an omit feed: {omit}");
        }
        let empty = rec("/empty");
        for k in ["sz", "wxybm", "czr"] {
            assert_eq!(empty[k], "", "{k} in {empty}");
        }
    })
    .await
    .expect("test timed out");
}

/// A regulator feed is sent only the channels registered in `[[receivers.points]]` (no record
/// with empty tag and indicator codes), and check-config names the unregistered ones a route
/// can bring to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulator_feed_gets_only_registered_channels_and_check_config_names_the_others() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let toml = format!(
            "[site]\nid = \"s\"\n{GAS_CHANNEL}\
             [[devices.registers]]\nname = \"co\"\ntable = \"input\"\naddress = 1\nunit = \"ppm\"\nspan = {{ raw = [4000, 20000], eng = [0, 500] }}\n\
             [[receivers]]\nkind = \"regulator\"\nid = \"mem\"\nurl = \"{url}/reg\"\n\
             fields = {{ tag = \"wh\", value = \"sz\" }}\n\
             [[receivers.points]]\nchannel = \"a.gd1.lel\"\ntag = \"GT-101\"\nindicator = \"KRQT\"\n"
        );
        let parsed = hazgate::config::parse(&toml, Path::new("t.toml")).expect("parse");
        let (_, warnings) = hazgate::config::validate(&parsed, Path::new(".")).expect("valid");
        let w: Vec<String> = warnings.iter().map(|w| format!("{}: {}", w.path, w.message)).collect();
        assert!(
            w.iter().any(|w| w.contains("`mem`") && w.contains("a.gd1.co") && !w.contains("a.gd1.lel")),
            "no warning naming the unregistered channel: {w:?}"
        );
        let r = start(&toml);
        let mut other = ev(1, Transition::Raised);
        other.channel = ChannelId::new("a.gd1.co");
        other.alarm = "a.gd1.co:HH".into();
        r.tx.send(other).await.expect("send");
        r.tx.send(ev(2, Transition::Raised)).await.expect("send");
        let first = support::eventually(Duration::from_secs(20), "the registered record", || {
            let a = h.accepted.lock().expect("lock").first().cloned();
            async move { a }
        })
        .await;
        let rec: Value = serde_json::from_str(&first.body).expect("record");
        assert_eq!(rec["wh"], "GT-101", "{rec}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = h.accepted.lock().expect("lock").len();
        assert_eq!(n, 1, "the unregistered channel's alarm reached the feed");
        assert!(
            all(&r.outbox).iter().all(|e| !e.alarms.iter().any(|a| a == "a.gd1.co:HH")),
            "a notification was made for the unregistered channel"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_receiver_publishes_with_qos1_and_survives_a_broker_restart() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut broker = support::mosquitto();
        let port = broker.port;
        // A subscriber that records what arrives.
        let mut o = rumqttc::MqttOptions::new("test-sub", "127.0.0.1", port);
        o.set_clean_session(false);
        let (sub, mut el) = rumqttc::AsyncClient::new(o, 16);
        sub.subscribe("park/#", rumqttc::QoS::AtLeastOnce).await.expect("subscribe");
        let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let g2 = got.clone();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        g2.lock().expect("lock").push((p.topic.clone(), v));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        support::eventually(Duration::from_secs(10), "subscriber connected", || {
            let s = sub.clone();
            async move { s.try_publish("park/ping", rumqttc::QoS::AtMostOnce, false, "{}").ok() }
        })
        .await;
        let r = start(&format!(
            "[site]\nid = \"s\"\n{GAS_CHANNEL}[[receivers]]\nkind = \"mqtt\"\nid = \"park\"\naddress = \"127.0.0.1:{port}\"\n\
             topic = \"park/{{site}}/{{priority}}/{{alarm}}\"\ntimeout = \"2s\"\nbackoff_max = \"1s\"\n\
             [[receivers]]\nkind = \"regulator\"\nid = \"gov\"\nmqtt = {{ address = \"127.0.0.1:{port}\", topic = \"park/gov/{{site}}\" }}\n\
             fields = {{ tag = \"wh\", value = \"sz\", limit_name = \"bjlx\" }}\ncodes = {{ HH = \"4\" }}\n\
             [[receivers.points]]\nchannel = \"a.gd1.lel\"\ntag = \"GT-101\"\nindicator = \"KRQT\"\n\
             [[notifications.routes]]\nid = \"all\"\nreceivers = [\"park\", \"gov\"]\n"
        ));
        r.tx.send(ev(1, Transition::Raised)).await.expect("send");
        let (topic, v) = support::eventually(Duration::from_secs(20), "the MQTT notification", || {
            let g = got.lock().expect("lock").iter().find(|(t, _)| t.starts_with("park/s/")).cloned();
            async move { g }
        })
        .await;
        assert_eq!(topic, "park/s/critical/a.gd1.lel:HH");
        assert_eq!(v["schema"], "hazgate.alarm.v2");
        assert_eq!(v["idempotency_key"], "s-1-all-park");
        // The regulator feed over MQTT: the mapped record.
        let (_, g) = support::eventually(Duration::from_secs(20), "the regulator record over MQTT", || {
            let g = got.lock().expect("lock").iter().find(|(t, _)| t == "park/gov/s").cloned();
            async move { g }
        })
        .await;
        assert_eq!((g["sz"].as_f64(), g["bjlx"].as_str()), (Some(55.0), Some("4")));
        // Broker outage: the next notification waits in the outbox and arrives after restart.
        broker.kill();
        r.tx.send(ev(2, Transition::Acknowledged)).await.expect("send");
        support::eventually(Duration::from_secs(20), "a failed attempt during the outage", || {
            let rows = all(&r.outbox);
            async move { rows.iter().any(|e| e.key == "s-2-all-park" && e.attempts >= 1).then_some(()) }
        })
        .await;
        broker.restart();
        support::eventually(Duration::from_secs(30), "delivery after the broker restart", || {
            let rows = all(&r.outbox);
            async move {
                rows.iter()
                    .any(|e| e.key == "s-2-all-park" && e.status == Status::Delivered)
                    .then_some(())
            }
        })
        .await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulator_reports_real_time_values_periodically() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let r = start(&format!(
            "[site]\nid = \"s\"\n{GAS_CHANNEL}\
             [[receivers]]\nkind = \"regulator\"\nid = \"gov\"\nurl = \"{url}/realtime\"\nreport_interval = \"1s\"\n\
             fields = {{ record_type = \"type\", tag = \"wh\", value = \"sz\", unit = \"dw\", state = \"zt\", time = \"sj\" }}\n\
             codes = {{ value = \"RT\", good = \"0\", bad = \"1\" }}\n\
             [[receivers.points]]\nchannel = \"a.gd1.lel\"\ntag = \"GT-101\"\n"
        ));
        r.state.record(
            &hazgate::model::Sample {
                channel: ChannelId::new("a.gd1.lel"),
                ts: SystemTime::now(),
                reading: hazgate::model::Reading::Good(12.5),
            },
            vec![],
        );
        let req = support::eventually(Duration::from_secs(20), "a real-time report", || {
            let a = h.accepted.lock().expect("lock").first().cloned();
            async move { a }
        })
        .await;
        assert!(req.uri.starts_with("/realtime"));
        let rec: Value = serde_json::from_str(&req.body).expect("json");
        assert_eq!(rec["type"], "RT");
        assert_eq!(rec["wh"], "GT-101");
        assert_eq!(rec["sz"], 12.5);
        assert_eq!(rec["dw"], "%LEL");
        assert_eq!(rec["zt"], "0");
        assert!(rec["sj"].as_str().is_some_and(|s| s.len() == 19), "{rec}");
        // The receiver answered; the worker marks the report delivered after the answer.
        support::eventually(Duration::from_secs(20), "the report marked delivered", || {
            let rows = all(&r.outbox);
            async move {
                rows.iter()
                    .any(|e| {
                        e.reason == hazgate::alerts::outbox::Reason::Report
                            && e.status == Status::Delivered
                    })
                    .then_some(())
            }
        })
        .await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_tokens_never_reach_the_ledger() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dead = support::free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("t"), "TOKEN-7f3a9c").expect("token");
        let r = start(&format!(
            "[site]\nid = \"s\"\n[[receivers]]\nkind = \"dingtalk\"\nid = \"ding\"\n\
             url = \"http://127.0.0.1:{dead}/robot/send\"\ntoken = {{ file = \"{}/t\" }}\n",
            dir.path().display()
        ));
        r.tx.send(ev(1, Transition::Raised)).await.expect("send");
        let err = support::eventually(Duration::from_secs(20), "a failed attempt", || {
            let e = all(&r.outbox).first().and_then(|e| e.last_error.clone());
            async move { e }
        })
        .await;
        assert!(
            !err.contains("TOKEN-7f3a9c"),
            "token leaked into the ledger: {err}"
        );
    })
    .await
    .expect("test timed out");
}

/// `[site] language = "zh-CN"` and `timezone = "Asia/Shanghai"`: robot texts, the SMS template
/// and the webhook `message` are in Chinese with local times and their offset; the webhook's
/// machine fields stay RFC 3339 UTC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_for_people_are_in_the_site_language_and_time_zone() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let r = start(&format!(
            "[site]\nid = \"s\"\nname = \"一号厂区\"\nlanguage = \"zh-CN\"\ntimezone = \"Asia/Shanghai\"\n\
             [[receivers]]\nkind = \"wecom\"\nid = \"wc\"\nurl = \"{url}/cgi-bin/webhook/send\"\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"sms\"\nurl = \"{url}/sms\"\ncontent_type = \"text/plain\"\n\
             body_template = \"{{site}} {{alarm}} {{transition}} {{state}} {{time}}\"\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"hook\"\nurl = \"{url}/hook\"\n\
             {GAS_CHANNEL}"
        ));
        let mut e = ev(7, Transition::Raised);
        // 2026-11-29T21:28:18Z is 2026-11-30 05:28:18 in Shanghai.
        e.ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_987_698);
        r.tx.send(e).await.expect("send");
        let reqs = support::eventually(Duration::from_secs(20), "robot, SMS and webhook", || {
            let a = h.accepted.lock().expect("lock").clone();
            async move { (a.len() == 3).then_some(a) }
        })
        .await;
        let find = |p: &str| reqs.iter().find(|r| r.uri.starts_with(p)).cloned().expect(p);
        let wc: Value = serde_json::from_str(&find("/cgi-bin/webhook/send").body).expect("json");
        let text = wc["text"]["content"].as_str().expect("text").to_owned();
        for want in ["【紧急】", "报警", "站点：一号厂区", "位置：", "数值：55 %LEL", "限值 50", "时间：2026-11-30 05:28:18 +08:00", "状态：未确认", "编号："] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
        assert!(!text.contains("21:28:18"), "no UTC time for people: {text}");
        assert_eq!(
            find("/sms").body,
            "s a.gd1.lel:HH 报警 未确认 2026-11-30 05:28:18 +08:00"
        );
        let hook: Value = serde_json::from_str(&find("/hook").body).expect("json");
        let msg = hook["message"].as_str().expect("message");
        assert!(msg.contains("时间：2026-11-30 05:28:18 +08:00"), "{msg}");
        assert_eq!(hook["event"]["ts"], "2026-11-29T21:28:18Z", "machine time stays UTC");
    })
    .await
    .expect("test timed out");
}

/// A composite alarm (no channel of its own) keeps its area in robot texts and webhook details;
/// every notification carries the rule's message and response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_say_what_where_and_what_to_do() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (h, url) = hook().await;
        let r = start(&format!(
            "[site]\nid = \"s\"\nlanguage = \"zh-CN\"\ntimezone = \"Asia/Shanghai\"\n\
             [[areas]]\nid = \"a\"\nname = \"储罐区\"\n\
             [[receivers]]\nkind = \"wecom\"\nid = \"wc\"\nurl = \"{url}/cgi-bin/webhook/send\"\n\
             [[receivers]]\nkind = \"webhook\"\nid = \"hook\"\nurl = \"{url}/hook\"\n\
             [[alarms.composite]]\nid = \"gas-2oo2\"\nexpr = \"2 of (a.gd1.lel >= 25, a.gd1.lel >= 30)\"\narea = \"a\"\n\
             message = \"两台探测器同时报警\"\nresponse = \"切断进料，疏散人员\"\n\
             {GAS_CHANNEL}"
        ));
        let mut e = ev(3, Transition::Raised);
        e.alarm = "gas-2oo2".into();
        e.channel = ChannelId::new("rule.gas-2oo2");
        e.condition = "gas-2oo2".into();
        e.message = "两台探测器同时报警".into();
        e.value = None;
        e.limit = None;
        r.tx.send(e).await.expect("send");
        let reqs = support::eventually(Duration::from_secs(20), "robot and webhook", || {
            let a = h.accepted.lock().expect("lock").clone();
            async move { (a.len() == 2).then_some(a) }
        })
        .await;
        let find = |p: &str| reqs.iter().find(|r| r.uri.starts_with(p)).cloned().expect(p);
        let wc: Value = serde_json::from_str(&find("/cgi-bin/webhook/send").body).expect("json");
        let text = wc["text"]["content"].as_str().expect("text").to_owned();
        for want in ["位置：两台探测器同时报警 — rule.gas-2oo2 (储罐区)", "两台探测器同时报警", "处置措施：切断进料，疏散人员"] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
        assert!(!text.contains("()"), "no empty area: {text}");
        let hook: Value = serde_json::from_str(&find("/hook").body).expect("json");
        let d = &hook["details"][0];
        assert_eq!(d["area"], "a", "{hook}");
        assert_eq!(d["area_name"], "储罐区");
        assert_eq!(d["message"], "两台探测器同时报警");
        assert_eq!(d["response"], "切断进料，疏散人员");
    })
    .await
    .expect("test timed out");
}

/// A DingTalk-like robot that takes at most `limit` messages per `window` (sliding, by
/// arrival) and answers `130101` (send too fast) beyond, as DingTalk does.
#[derive(Clone)]
struct Limited {
    limit: usize,
    window: Duration,
    arrivals: Arc<Mutex<Vec<std::time::Instant>>>,
    accepted: Arc<Mutex<Vec<String>>>,
    throttled: Arc<Mutex<usize>>,
}

async fn limited_robot(limit: usize, window: Duration) -> (Limited, String) {
    async fn take(State(l): State<Limited>, body: String) -> impl IntoResponse {
        let now = std::time::Instant::now();
        let mut a = l.arrivals.lock().expect("lock");
        a.push(now);
        let recent = a
            .iter()
            .filter(|t| now.duration_since(**t) < l.window)
            .count();
        if recent > l.limit {
            *l.throttled.lock().expect("lock") += 1;
            return r#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#;
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let text = v["text"]["content"].as_str().unwrap_or_default().to_owned();
        l.accepted.lock().expect("lock").push(text);
        r#"{"errcode":0,"errmsg":"ok"}"#
    }
    let l = Limited {
        limit,
        window,
        arrivals: Arc::default(),
        accepted: Arc::default(),
        throttled: Arc::default(),
    };
    let app = Router::new().fallback(post(take)).with_state(l.clone());
    let sock = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(sock, app).await });
    (l, format!("http://{addr}"))
}

/// A flood on a rate-limited robot: `n` alarms sent at once to a robot whose budget is
/// `budget` messages per 2 s, the server taking `server_limit` per 2 s. Returns the server.
async fn robot_flood(n: u64, budget: u32, server_limit: usize) -> (Limited, Running) {
    robot_flood_at("[site]\nid = \"s\"\n", n, budget, server_limit).await
}

/// [`robot_flood`] on a site whose `[site]` table is `site`.
async fn robot_flood_at(
    site: &str,
    n: u64,
    budget: u32,
    server_limit: usize,
) -> (Limited, Running) {
    let window = Duration::from_secs(2);
    let (l, url) = limited_robot(server_limit, window).await;
    let r = start(&format!(
        "{site}{GAS_CHANNEL}[[receivers]]\nkind = \"dingtalk\"\nid = \"ding\"\n\
         url = \"{url}/robot/send\"\nrate_limit = {budget}\nrate_window = \"2s\"\nbackoff_max = \"1s\"\n"
    ));
    for i in 0..n {
        let mut e = ev(100 + i, Transition::Raised);
        e.alarm = format!("a.gd1.lel:T{i:02}");
        r.tx.send(e).await.expect("send");
    }
    support::eventually(
        Duration::from_secs(40),
        "every notification delivered",
        || {
            let rows = all(&r.outbox);
            async move {
                (rows.len() == n as usize && rows.iter().all(|e| e.status == Status::Delivered))
                    .then_some(())
            }
        },
    )
    .await;
    (l, r)
}

/// Every alarm of a flood reaches the group, individual messages up to the budget and the
/// surplus merged into digests, and the robot never gets more than its limit per window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_floods_are_merged_into_digests_within_the_rate_limit() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let (l, _r) = robot_flood(12, 3, 3).await;
        let texts = l.accepted.lock().expect("lock").clone();
        for i in 0..12 {
            let a = format!("a.gd1.lel:T{i:02}");
            assert!(
                texts.iter().any(|t| t.contains(&a)),
                "{a} in no message: {texts:#?}"
            );
        }
        assert!(
            texts
                .iter()
                .any(|t| t.contains("另有") && t.contains("条报警")),
            "no digest message: {texts:#?}"
        );
        assert!(texts.len() < 12, "one message per alarm: {}", texts.len());
        assert_eq!(
            *l.throttled.lock().expect("lock"),
            0,
            "the robot was sent too fast"
        );
        let a = l.arrivals.lock().expect("lock").clone();
        for w in a.windows(4) {
            assert!(
                w[3].duration_since(w[0]) >= Duration::from_secs(2),
                "4 messages within 2 s"
            );
        }
    })
    .await
    .expect("test timed out");
}

/// On an English site the digest is in English, names the area and gives every merged
/// event's time in the site's time zone with its offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_digests_follow_the_site_language_and_time_zone() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let site = "[site]\nid = \"s\"\nlanguage = \"en\"\ntimezone = \"Asia/Shanghai\"\n";
        let (l, _r) = robot_flood_at(site, 6, 2, 2).await;
        let texts = l.accepted.lock().expect("lock").clone();
        let digest: Vec<&String> = texts
            .iter()
            .filter(|t| t.starts_with("[Digest] "))
            .collect();
        assert!(!digest.is_empty(), "no English digest: {texts:#?}");
        for t in &digest {
            assert!(
                t.contains(" more alarms in a (robot rate limit, merged)"),
                "{t}"
            );
            assert!(
                !t.contains("另有") && !t.contains("报警"),
                "Chinese in an English digest: {t}"
            );
            for line in t.lines().skip(1).filter(|x| x.contains("a.gd1.lel:T")) {
                assert!(
                    line.contains("+08:00"),
                    "no site-local time with offset: {line}"
                );
                assert!(line.contains("raised") || line.contains("Raised"), "{line}");
            }
        }
        for i in 0..6 {
            let a = format!("a.gd1.lel:T{i:02}");
            assert!(
                texts.iter().any(|t| t.contains(&a)),
                "{a} in no message: {texts:#?}"
            );
        }
    })
    .await
    .expect("test timed out");
}

/// A robot whose limit is lower than the budget answers 130101: retried after the window,
/// nothing lost, every merged notification delivered with its digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_throttle_answers_are_retried_after_the_window() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let (l, r) = robot_flood(8, 4, 2).await;
        assert!(
            *l.throttled.lock().expect("lock") > 0,
            "the robot never throttled: no test"
        );
        let texts = l.accepted.lock().expect("lock").clone();
        for i in 0..8 {
            let a = format!("a.gd1.lel:T{i:02}");
            assert!(
                texts.iter().any(|t| t.contains(&a)),
                "{a} in no message: {texts:#?}"
            );
        }
        let rows = all(&r.outbox);
        assert!(
            rows.iter().any(|e| e.attempts > 1
                && e.last_error
                    .as_deref()
                    .is_some_and(|x| x.contains("130101"))),
            "no notification was retried after a throttle answer: {rows:?}"
        );
    })
    .await
    .expect("test timed out");
}
