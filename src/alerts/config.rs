//! Configuration of alert delivery: the `[notifications]` section (outbox, routes, escalation
//! tiers) and the receiver kinds beyond the plain webhook (IM robots, MQTT, regulator feeds).
//!
//! Everything here is plain serde with `deny_unknown_fields`; [`check`] reports every problem
//! with its path. Secrets (tokens, signing secrets, SM4 key and IV) are only [`SecretRef`]s.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::check::Problem;
use crate::check::Problems;
use crate::model::{AlarmClass, Priority, Transition, check_id};
use crate::secret::SecretRef;

/// Where alarm events go.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Receiver {
    /// HTTP POST of the notification as JSON (or a body template: SMS and voice gateways).
    Webhook(WebhookReceiver),
    /// WeCom (企业微信) group robot.
    Wecom(RobotReceiver),
    /// DingTalk (钉钉) group robot, optionally signed.
    Dingtalk(RobotReceiver),
    /// Feishu (飞书) group robot, optionally signed.
    Feishu(RobotReceiver),
    /// MQTT publish (QoS 1) of the notification JSON.
    Mqtt(MqttReceiver),
    /// A regulator's platform (configurable records, optional SM4).
    Regulator(Box<RegulatorReceiver>),
}

impl Receiver {
    /// The receiver's id.
    pub fn id(&self) -> &str {
        match self {
            Receiver::Webhook(w) => &w.id,
            Receiver::Wecom(r) | Receiver::Dingtalk(r) | Receiver::Feishu(r) => &r.id,
            Receiver::Mqtt(m) => &m.id,
            Receiver::Regulator(g) => &g.id,
        }
    }

    /// Delivery settings (timeout, expiry, backoff, clear notifications, capacity).
    pub fn delivery(&self) -> &Delivery {
        match self {
            Receiver::Webhook(w) => &w.delivery,
            Receiver::Wecom(r) | Receiver::Dingtalk(r) | Receiver::Feishu(r) => &r.delivery,
            Receiver::Mqtt(m) => &m.delivery,
            Receiver::Regulator(g) => &g.delivery,
        }
    }

    /// HTTP URLs of the receiver, as `(field, url)`.
    pub fn urls(&self) -> Vec<(&'static str, &str)> {
        match self {
            Receiver::Webhook(w) => vec![("url", &w.url)],
            Receiver::Wecom(r) | Receiver::Dingtalk(r) | Receiver::Feishu(r) => {
                vec![("url", &r.url)]
            }
            Receiver::Mqtt(_) => vec![],
            Receiver::Regulator(g) => g.url.iter().map(|u| ("url", u.as_str())).collect(),
        }
    }

    /// Secrets of the receiver, as `(field path, reference)`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut v = Vec::new();
        match self {
            Receiver::Webhook(w) => {
                v.extend(w.token.iter().map(|s| ("token", s)));
                v.extend(w.hmac_secret.iter().map(|s| ("hmac_secret", s)));
            }
            Receiver::Wecom(r) | Receiver::Dingtalk(r) | Receiver::Feishu(r) => {
                v.extend(r.token.iter().map(|s| ("token", s)));
                v.extend(r.secret.iter().map(|s| ("secret", s)));
            }
            Receiver::Mqtt(m) => v.extend(m.target.password.iter().map(|s| ("password", s))),
            Receiver::Regulator(g) => {
                let m = g.mqtt.as_ref().and_then(|m| m.password.as_ref());
                v.extend(m.map(|s| ("mqtt.password", s)));
                if let Some(k) = &g.sm4 {
                    v.push(("sm4.key", &k.key));
                    v.push(("sm4.iv", &k.iv));
                }
            }
        }
        v
    }
}

/// Generic webhook.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceiver {
    /// Receiver id.
    pub id: String,
    /// Target URL.
    pub url: String,
    /// Bearer token sent as `Authorization`.
    pub token: Option<SecretRef>,
    /// HMAC-SHA256 key: the body is signed in `X-Hazgate-Signature`.
    pub hmac_secret: Option<SecretRef>,
    /// Extra headers (not secrets: use `token` for those).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// A body template instead of the JSON schema (SMS and voice gateways): `{site}`,
    /// `{alarm}`, `{message}`, `{value}`, `{limit}`, `{state}`, `{transition}`, `{time}`,
    /// `{call}`, `{key}` are replaced.
    pub body_template: Option<String>,
    /// Content type of a templated body.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Delivery settings.
    #[serde(flatten)]
    pub delivery: Delivery,
}

fn default_content_type() -> String {
    "application/json".into()
}

/// `[notifications]`: the durable outbox and the routes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// The durable outbox.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Routes, all evaluated for every event (no first-match stop). When there are none, every
    /// event goes to every receiver (one implicit route `default`).
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// `[notifications.outbox]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Directory of the outbox file. Without it notifications live in memory only (a warning:
    /// a restart loses what is pending).
    pub dir: Option<PathBuf>,
    /// Disk budget of the outbox file, separate from any time-series spool. Over it, finished
    /// (delivered, expired) records are dropped first, oldest first; pending notifications are
    /// evicted only when they alone exceed it (lowest priority, then oldest).
    #[serde(default = "default_outbox_bytes")]
    pub max_bytes: u64,
    /// Finished notifications kept in the ledger (`/api/v1/notifications`).
    #[serde(default = "default_ledger")]
    pub ledger_entries: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: default_outbox_bytes(),
            ledger_entries: default_ledger(),
        }
    }
}

fn default_outbox_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_ledger() -> usize {
    10_000
}

/// One route: which events, to whom, and what happens when nobody answers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Route id (in the ledger and idempotency keys).
    pub id: String,
    /// Site ids matched (empty = any).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Areas matched (the channel's area; empty = any).
    #[serde(default)]
    pub areas: Vec<String>,
    /// Channel kinds matched (`combustible_gas`, `tank`, …; empty = any).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Priorities matched (empty = any).
    #[serde(default)]
    pub priorities: Vec<Priority>,
    /// Transitions matched (empty = any).
    #[serde(default)]
    pub transitions: Vec<Transition>,
    /// Alarm classes matched (empty = any).
    #[serde(default)]
    pub classes: Vec<AlarmClass>,
    /// Tier-1 receivers.
    pub receivers: Vec<String>,
    /// Whom tier 1 is asking to answer (names, phone numbers): shown in messages.
    #[serde(default)]
    pub call: Vec<String>,
    /// Low and medium priority events are gathered this long into one notification per
    /// receiver. High and critical events are never held back.
    #[serde(with = "humantime_serde", default)]
    pub group_window: Option<Duration>,
    /// Still active, unacknowledged alarms are notified again at this interval.
    #[serde(with = "humantime_serde", default)]
    pub renotify: Option<Duration>,
    /// Escalation tiers (tier 2, 3, …): each fires when the alarm is still unacknowledged
    /// `after` its raise.
    #[serde(default)]
    pub escalation: Vec<Tier>,
}

/// An escalation tier.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Time since the alarm was raised (increasing from tier to tier).
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Receivers of this tier.
    pub receivers: Vec<String>,
    /// Whom this tier asks to answer.
    #[serde(default)]
    pub call: Vec<String>,
}

/// Delivery settings every receiver has.
#[derive(Clone, Debug, Deserialize)]
pub struct Delivery {
    /// Per-attempt timeout.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// A notification not delivered this long after it was created expires (reported).
    #[serde(with = "humantime_serde", default = "default_expire")]
    pub expire_after: Duration,
    /// Cap of the jittered exponential retry backoff (30 s: a receiver that comes back gets its
    /// pending notifications within about this long).
    #[serde(with = "humantime_serde", default = "default_backoff_max")]
    pub backoff_max: Duration,
    /// Every attempt failing for this long (no success in between) makes the receiver a gateway
    /// fault: `/readyz` names it and `gateway:receiver {id}` goes to the other receivers.
    #[serde(with = "humantime_serde", default = "default_fault_after")]
    pub fault_after: Duration,
    /// Send cleared / fault-cleared / reset notifications to this receiver.
    #[serde(default = "default_true")]
    pub send_clear: bool,
    /// Pending notifications for this receiver; when full the lowest-priority, oldest one is
    /// evicted (counted, logged at ERROR).
    #[serde(default = "default_capacity")]
    pub queue_capacity: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            expire_after: default_expire(),
            backoff_max: default_backoff_max(),
            fault_after: default_fault_after(),
            send_clear: true,
            queue_capacity: default_capacity(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_expire() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
fn default_fault_after() -> Duration {
    Duration::from_secs(60)
}
fn default_true() -> bool {
    true
}
fn default_capacity() -> usize {
    10_000
}

/// A WeCom, DingTalk or Feishu group robot.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotReceiver {
    /// Receiver id.
    pub id: String,
    /// Robot endpoint without its token, e.g. `https://oapi.dingtalk.com/robot/send`,
    /// `https://qyapi.weixin.qq.com/cgi-bin/webhook/send`,
    /// `https://open.feishu.cn/open-apis/bot/v2/hook`.
    pub url: String,
    /// The robot's token: WeCom `key`, DingTalk `access_token` (query parameters), Feishu hook id
    /// (last path segment).
    pub token: Option<SecretRef>,
    /// Signing secret (DingTalk "加签", Feishu "签名校验").
    pub secret: Option<SecretRef>,
    /// Mobile numbers to @-mention.
    #[serde(default)]
    pub mention_mobiles: Vec<String>,
    /// Delivery settings.
    #[serde(flatten)]
    pub delivery: Delivery,
}

/// An MQTT broker to publish to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTarget {
    /// `host:port`.
    pub address: String,
    /// Topic template: `{site}`, `{receiver}`, `{alarm}`, `{channel}`, `{priority}`,
    /// `{transition}` are replaced (`/`, `+`, `#` in values become `_`).
    pub topic: String,
    /// Client id; `hazgate-{site}-{receiver}` by default.
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<SecretRef>,
}

/// MQTT publish of the notification JSON (QoS 1).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttReceiver {
    /// Receiver id.
    pub id: String,
    /// Broker, topic, credentials.
    #[serde(flatten)]
    pub target: MqttTarget,
    /// Delivery settings.
    #[serde(flatten)]
    pub delivery: Delivery,
}

/// A regulator's platform: configurable JSON records over HTTP POST or MQTT, optionally SM4-CBC
/// encrypted.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegulatorReceiver {
    /// Receiver id.
    pub id: String,
    /// HTTP POST target (exactly one of `url` and `mqtt`).
    pub url: Option<String>,
    /// MQTT target.
    pub mqtt: Option<MqttTarget>,
    /// Output field name for each canonical field (see docs/ARCHITECTURE.md); a canonical
    /// field without a name here is not sent.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Value codes: `"HH" = "4"`, `"raised" = "1"`, `"fault" = "9"`; values without a code
    /// are sent as they are.
    #[serde(default)]
    pub codes: BTreeMap<String, String>,
    /// Constant fields added to every record (`"qyxydm" = "91320000…"`: the enterprise credit
    /// code, platform codes).
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
    /// Per-channel registration at the platform (tag number, indicator code, hazard source).
    #[serde(default)]
    pub points: Vec<RegulatorPoint>,
    /// SM4-CBC encryption of the payload.
    pub sm4: Option<Sm4Config>,
    /// The platform's appId, sent in the `app_id_header` header and the envelope.
    pub app_id: Option<String>,
    /// Header carrying the appId.
    #[serde(default = "default_app_id_header")]
    pub app_id_header: String,
    /// Send real-time values of the registered points at this interval, besides alarms.
    #[serde(with = "humantime_serde", default)]
    pub report_interval: Option<Duration>,
    /// Delivery settings.
    #[serde(flatten)]
    pub delivery: Delivery,
}

fn default_app_id_header() -> String {
    "appId".into()
}

/// One channel registered at the regulator.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegulatorPoint {
    /// Channel id.
    pub channel: String,
    /// Tag number (位号).
    pub tag: String,
    /// Indicator code (指标编码).
    #[serde(default)]
    pub indicator: String,
    /// Hazard-source code (重大危险源编码).
    #[serde(default)]
    pub hazard_source: String,
}

/// SM4-CBC (PKCS#7/#5 padding). Key and IV are 16 bytes each, written as 32 hex digits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sm4Config {
    /// Key (32 hex digits).
    pub key: SecretRef,
    /// IV (32 hex digits).
    pub iv: SecretRef,
}

/// The canonical regulator fields a mapping may name.
pub const REGULATOR_FIELDS: &[&str] = &[
    "record_type",
    "site",
    "tag",
    "indicator",
    "hazard_source",
    "channel",
    "value",
    "unit",
    "limit",
    "limit_name",
    "alarm_type",
    "transition",
    "priority",
    "state",
    "time",
    "alarm_time",
    "handled_by",
    "handling_result",
    "idempotency_key",
];

/// Checks the receiver kinds of this module and the `[notifications]` section.
/// `channel_exists` tells whether a channel id is configured.
pub fn check(
    n: &Notifications,
    receivers: &[Receiver],
    site: &str,
    channel_exists: &dyn Fn(&str) -> bool,
) -> Vec<Problem> {
    let mut p = Problems::default();
    for (i, r) in receivers.iter().enumerate() {
        let path = format!("receivers[{i}]");
        let d = r.delivery();
        if d.queue_capacity == 0 {
            p.err(format!("{path}.queue_capacity"), "must be at least 1");
        }
        if d.timeout.is_zero() {
            p.err(format!("{path}.timeout"), "must be positive");
        }
        if d.expire_after < d.timeout {
            p.err(
                format!("{path}.expire_after"),
                "must be at least the per-attempt timeout",
            );
        }
        match r {
            Receiver::Wecom(x) => {
                if x.secret.is_some() {
                    p.err(
                        format!("{path}.secret"),
                        "WeCom robots are not signed; remove `secret`",
                    );
                }
            }
            Receiver::Dingtalk(_) | Receiver::Feishu(_) => {}
            Receiver::Mqtt(m) => mqtt_target(&m.target, &path, &mut p),
            Receiver::Regulator(g) => {
                match (&g.url, &g.mqtt) {
                    (Some(_), None) => {}
                    (None, Some(m)) => mqtt_target(m, &format!("{path}.mqtt"), &mut p),
                    _ => p.err(path.clone(), "give exactly one of `url` and `mqtt`"),
                }
                for k in g.fields.keys() {
                    if !REGULATOR_FIELDS.contains(&k.as_str()) {
                        p.err(
                            format!("{path}.fields.{k}"),
                            format!(
                                "unknown canonical field; known: {}",
                                REGULATOR_FIELDS.join(", ")
                            ),
                        );
                    }
                }
                if g.fields.is_empty() {
                    p.err(
                        format!("{path}.fields"),
                        "map at least one canonical field to the platform's name",
                    );
                }
                for (j, pt) in g.points.iter().enumerate() {
                    if !channel_exists(&pt.channel) {
                        p.err(
                            format!("{path}.points[{j}].channel"),
                            format!("unknown channel `{}`", pt.channel),
                        );
                    }
                }
                if g.report_interval
                    .is_some_and(|d| d < Duration::from_secs(1))
                {
                    p.err(format!("{path}.report_interval"), "must be at least 1s");
                }
            }
            Receiver::Webhook(w) => {
                for h in w.headers.keys() {
                    if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        p.err(format!("{path}.headers.{h}"), "not a valid header name");
                    }
                }
            }
        }
    }
    let known: HashSet<&str> = receivers.iter().map(Receiver::id).collect();
    if n.outbox.max_bytes < 64 * 1024 {
        p.err("notifications.outbox.max_bytes", "must be at least 65536");
    }
    if n.outbox.dir.is_none() && !receivers.is_empty() {
        p.warn(
            "notifications.outbox.dir",
            "not set: pending notifications are kept in memory only and a restart loses them",
        );
    }
    let mut ids = HashSet::new();
    for (i, r) in n.routes.iter().enumerate() {
        let path = format!("notifications.routes[{i}]");
        if let Err(e) = check_id(&r.id, false) {
            p.err(format!("{path}.id"), e);
        }
        if !ids.insert(r.id.as_str()) {
            p.err(
                format!("{path}.id"),
                format!("duplicate route id `{}`", r.id),
            );
        }
        if !r.sites.is_empty() && !r.sites.iter().any(|s| s == site) {
            p.warn(
                format!("{path}.sites"),
                format!("does not name this site `{site}`: the route never matches"),
            );
        }
        if r.receivers.is_empty() {
            p.err(format!("{path}.receivers"), "name at least one receiver");
        }
        let mut tiers = vec![(format!("{path}.receivers"), &r.receivers)];
        let mut last = Duration::ZERO;
        for (j, t) in r.escalation.iter().enumerate() {
            let tp = format!("{path}.escalation[{j}]");
            if t.after <= last {
                p.err(
                    format!("{tp}.after"),
                    "must be positive and later than the previous tier",
                );
            }
            last = t.after;
            if t.receivers.is_empty() {
                p.err(format!("{tp}.receivers"), "name at least one receiver");
            }
            tiers.push((format!("{tp}.receivers"), &t.receivers));
        }
        for (tp, list) in tiers {
            for (k, name) in list.iter().enumerate() {
                if !known.contains(name.as_str()) {
                    p.err(format!("{tp}[{k}]"), format!("unknown receiver `{name}`"));
                }
            }
        }
        if r.renotify.is_some_and(|d| d < Duration::from_secs(1)) {
            p.err(format!("{path}.renotify"), "must be at least 1s");
        }
        if r.group_window.is_some_and(|d| d > Duration::from_secs(600)) {
            p.err(
                format!("{path}.group_window"),
                "at most 10m: grouping delays notifications",
            );
        }
    }
    p.0
}

fn mqtt_target(m: &MqttTarget, path: &str, p: &mut Problems) {
    if split_host_port(&m.address).is_none() {
        p.err(format!("{path}.address"), "expected `host:port`");
    }
    if m.topic.is_empty() || m.topic.contains(['+', '#']) {
        p.err(
            format!("{path}.topic"),
            "must be a non-empty topic without wildcards",
        );
    }
}

/// `host:port` split.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port = p.parse().ok()?;
    (!h.is_empty()).then(|| (h.trim_matches(['[', ']']).to_owned(), port))
}
