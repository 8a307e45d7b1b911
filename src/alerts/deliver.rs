//! Receivers: one worker per receiver takes due notifications from the outbox and delivers them
//! with the receiver's timeout, retrying with jittered exponential backoff until delivered or
//! expired.
//!
//! Formats:
//! - `webhook`: the `hazgate.alarm.v2` JSON body (docs/ARCHITECTURE.md), `Idempotency-Key`
//!   header, optional bearer token, optional `X-Hazgate-Signature: sha256=HEX` (HMAC-SHA256 over
//!   `{X-Hazgate-Timestamp}.{body}`), custom headers; or a body template (SMS, voice gateways).
//! - `wecom`, `dingtalk`, `feishu`: the robots' text messages with site, location, value and
//!   limit, time, state and whom to call. DingTalk signing: `sign = urlencode(base64(
//!   HMAC-SHA256(key = secret, msg = timestamp_ms + "\n" + secret)))` as query parameters
//!   `timestamp` and `sign`; Feishu: `sign = base64(HMAC-SHA256(key = timestamp_s + "\n" +
//!   secret, msg = ""))` in the body.
//! - `mqtt`: the webhook JSON published with QoS 1 to a topic template; delivered = PUBACK.
//! - `regulator`: see [`super::regulator`].
//!
//! A receiver's success criterion: HTTP 2xx (and for robots `errcode`/`code` 0), or a PUBACK.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::config::Delivery;
pub use super::context::{AlarmInfo, ChannelInfo, Context};
use super::outbox::{Next, Notification, Outbox};
pub use super::receivers::mqtt::split_host_port;
use super::receivers::{self, Flavor, Ready, RobotReceiver, WebhookReceiver};
use super::regulator::Regulator;
pub use super::transport::{MqttPub, http_error};
use crate::state::SharedState;
use crate::telemetry::Component;

#[derive(Debug)]
enum Kind {
    Webhook(WebhookReceiver, receivers::webhook::Secrets),
    Robot(Flavor, RobotReceiver, receivers::robot::Secrets),
    Mqtt(MqttPub),
    Regulator(Box<Regulator>),
}

/// A receiver: its sender and worker loop.
#[derive(Debug)]
pub struct Worker {
    id: String,
    kind: Kind,
    delivery: Delivery,
    client: reqwest::Client,
    ctx: Context,
}

impl Worker {
    /// Builds the receiver's worker from the receiver with its secrets read (no I/O yet).
    pub fn new(r: Ready, ctx: Context) -> Result<Self, String> {
        let delivery = r.delivery().clone();
        let client = reqwest::Client::builder()
            .timeout(delivery.timeout)
            .connect_timeout(delivery.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let id = r.id().to_owned();
        let kind = match r {
            Ready::Webhook(w, s) => Kind::Webhook(w, s),
            Ready::Robot(f, x, s) => Kind::Robot(f, x, s),
            Ready::Mqtt(m, pw) => {
                Kind::Mqtt(MqttPub::new(&m.target, &m.id, &ctx.site, pw.as_ref())?)
            }
            Ready::Regulator(g, s) => Kind::Regulator(Box::new(Regulator::new(&g, &s, &ctx)?)),
        };
        Ok(Self {
            id,
            kind,
            delivery,
            client,
            ctx,
        })
    }

    /// The receiver id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Delivers until `closed` (no more notifications will come) and nothing is due, or until
    /// `deadline`. Notifications still pending stay in the outbox.
    pub async fn run(
        self,
        outbox: Arc<Outbox>,
        state: Arc<SharedState>,
        closed: CancellationToken,
        deadline: CancellationToken,
    ) {
        let wake = outbox.waker(&self.id);
        let component = Component::Receiver(self.id.clone());
        // Start of the current run of failed attempts, and whether it is a gateway fault yet.
        let mut failing_since: Option<Instant> = None;
        let mut faulted = false;
        // A robot's budget: when its recent messages were answered (the platform counts
        // requests it received, which is before the answer came).
        let rate = match &self.kind {
            Kind::Robot(f, r, _) => Some(r.rate(*f)),
            _ => None,
        };
        let mut sent: VecDeque<Instant> = VecDeque::new();
        loop {
            let mut room = usize::MAX;
            if let Some((limit, window)) = rate {
                let now = Instant::now();
                while sent.front().is_some_and(|t| *t + window <= now) {
                    sent.pop_front();
                }
                room = (limit as usize).saturating_sub(sent.len());
                if room == 0 {
                    // The window is used up: wait until its oldest message leaves it.
                    let until = sent.front().map(|t| *t + window);
                    tokio::select! {
                        () = sleep_until(until) => {}
                        () = deadline.cancelled() => {
                            self.left_behind(&outbox);
                            return;
                        }
                    }
                    continue;
                }
            }
            let next = {
                let id = self.id.clone();
                outbox
                    .blocking("receiver", move |ob| {
                        ob.next(&id, Instant::now(), SystemTime::now())
                    })
                    .await
                    // Counted and logged; look again in a second rather than never.
                    .unwrap_or_else(|| Next::Wait(Some(Instant::now() + Duration::from_secs(1))))
            };
            match next {
                Next::Due(nid, n, attempts) => {
                    if deadline.is_cancelled() {
                        self.left_behind(&outbox);
                        return;
                    }
                    // The last message the robot's budget allows this window: when more are
                    // due, it is one digest of them all (up to DIGEST_MAX).
                    let mut batch = vec![(nid, n, attempts)];
                    if room == 1 {
                        let id = self.id.clone();
                        let more = outbox
                            .blocking("receiver", move |ob| {
                                ob.due(
                                    &id,
                                    Instant::now(),
                                    SystemTime::now(),
                                    receivers::robot::DIGEST_MAX,
                                )
                            })
                            .await
                            .unwrap_or_default();
                        if more.len() > 1 {
                            batch = more;
                        }
                    }
                    let res = tokio::select! {
                        r = tokio::time::timeout(self.delivery.timeout, self.attempt(&batch)) => {
                            r.unwrap_or_else(|_| Err(Failure::from("timed out".to_owned())))
                        }
                        // The grace period is over: the attempt is abandoned; the notification
                        // stays pending in the outbox.
                        () = deadline.cancelled() => {
                            self.left_behind(&outbox);
                            return;
                        }
                    };
                    if rate.is_some() {
                        sent.push_back(Instant::now());
                    }
                    let ids: Vec<(u64, u32)> = batch.iter().map(|(i, _, a)| (*i, *a)).collect();
                    let key = &batch[0].1.key;
                    match res {
                        Ok(()) => {
                            if ids.len() > 1 {
                                info!(receiver = %self.id, first = %key, notifications = ids.len(), "digest of notifications delivered (robot rate limit)");
                            } else {
                                info!(receiver = %self.id, key = %key, attempts = attempts + 1, "notification delivered");
                            }
                            let back = failing_since.take().is_some();
                            let id = self.id.clone();
                            let done = ids.clone();
                            outbox
                                .blocking("receiver", move |ob| {
                                    // Every merged notification is delivered only now, with
                                    // the digest accepted.
                                    for (nid, _) in done {
                                        ob.delivered(nid, SystemTime::now());
                                    }
                                    if back {
                                        // It answers again: the rest need not wait out their backoff.
                                        ob.due_now(&id);
                                    }
                                })
                                .await;
                            if faulted {
                                faulted = false;
                                state.health.ok(&component);
                                info!(receiver = %self.id, "receiver delivers again");
                            }
                        }
                        Err(Failure { msg: e, throttled }) => {
                            let mut wait = crate::backoff::backoff(
                                attempts,
                                Duration::from_secs(1),
                                self.delivery.backoff_max,
                            );
                            if let (true, Some((limit, window))) = (throttled, rate) {
                                // The platform's own limit is lower than the budget: the window
                                // counts as used up, and these wait for a fresh one.
                                let now = Instant::now();
                                sent.clear();
                                sent.extend(std::iter::repeat_n(now, limit as usize));
                                wait = wait.max(window);
                            }
                            warn!(receiver = %self.id, key = %key, notifications = ids.len(), attempt = attempts + 1, error = %e, throttled, retry_in = ?wait, "notification not delivered; will retry");
                            let now = Instant::now();
                            let since = *failing_since.get_or_insert(now);
                            if now - since >= self.delivery.fault_after {
                                if !faulted {
                                    error!(receiver = %self.id, failing_for = ?(now - since), error = %e, "every delivery attempt of this receiver fails: gateway fault");
                                }
                                faulted = true;
                                state.health.fail(
                                    &component,
                                    format!(
                                        "every delivery attempt failed for {}s: {e}",
                                        (now - since).as_secs()
                                    ),
                                );
                            }
                            let retry = now + wait;
                            outbox
                                .blocking("receiver", move |ob| {
                                    for (nid, _) in ids {
                                        ob.failed(nid, &e, retry);
                                    }
                                })
                                .await;
                        }
                    }
                }
                Next::Wait(until) => {
                    if closed.is_cancelled() || deadline.is_cancelled() {
                        self.left_behind(&outbox);
                        return;
                    }
                    tokio::select! {
                        () = wake.notified() => {}
                        () = closed.cancelled() => {}
                        () = deadline.cancelled() => {}
                        () = sleep_until(until) => {}
                    }
                }
            }
        }
    }

    fn left_behind(&self, outbox: &Outbox) {
        let left = outbox.backlog().get(&self.id).copied().unwrap_or(0);
        if left == 0 {
            info!(receiver = %self.id, "receiver drained");
        } else if outbox.durable() {
            info!(receiver = %self.id, pending = left, "receiver stopped; pending notifications stay in the outbox for the next start");
        } else {
            error!(receiver = %self.id, lost = left, "receiver stopped with notifications pending and no outbox directory: they are lost");
        }
    }

    /// One attempt of a notification, or of a robot's digest of several.
    async fn attempt(&self, batch: &[(u64, Box<Notification>, u32)]) -> Result<(), Failure> {
        match (&self.kind, batch) {
            (Kind::Robot(f, r, s), [(_, n, _)]) => {
                self.robot(*f, r, s, &message_text(&self.ctx, n), &n.key)
                    .await
            }
            (Kind::Robot(f, r, s), _) => {
                let ns: Vec<&Notification> = batch.iter().map(|(_, n, _)| &**n).collect();
                let key = format!("{}+{}", ns.first().map_or("", |n| n.key.as_str()), ns.len());
                self.robot(*f, r, s, &digest_text(&self.ctx, &ns), &key)
                    .await
            }
            (_, [(_, n, _)]) => self.send(n).await.map_err(Failure::from),
            _ => Err(Failure::from("a digest is only sent to robots".to_owned())),
        }
    }

    /// One delivery attempt.
    pub async fn send(&self, n: &Notification) -> Result<(), String> {
        match &self.kind {
            Kind::Webhook(w, s) => self.webhook(w, s, n).await,
            Kind::Robot(f, r, s) => self
                .robot(*f, r, s, &message_text(&self.ctx, n), &n.key)
                .await
                .map_err(|f| f.msg),
            Kind::Mqtt(m) => {
                let body = serde_json::to_vec(&body_v2(&self.ctx, n)).map_err(|e| e.to_string())?;
                m.publish(
                    &topic(&m.topic, &self.ctx.site, n),
                    body,
                    self.delivery.timeout,
                )
                .await
            }
            Kind::Regulator(g) => g.send(&self.client, n, self.delivery.timeout).await,
        }
    }

    async fn webhook(
        &self,
        w: &WebhookReceiver,
        secrets: &receivers::webhook::Secrets,
        n: &Notification,
    ) -> Result<(), String> {
        let (body, ctype) = match &w.body_template {
            Some(t) => (
                render(t, &self.ctx, n).into_bytes(),
                w.content_type.as_str(),
            ),
            None => (
                serde_json::to_vec(&body_v2(&self.ctx, n)).map_err(|e| e.to_string())?,
                "application/json",
            ),
        };
        let mut req = self
            .client
            .post(&w.url)
            .header("Idempotency-Key", &n.key)
            .header("Content-Type", ctype);
        for (k, v) in &w.headers {
            req = req.header(k, v);
        }
        if let Some(t) = &secrets.token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(s) = &secrets.hmac_secret {
            let ts = unix_secs(SystemTime::now()).to_string();
            let mut msg = format!("{ts}.").into_bytes();
            msg.extend_from_slice(&body);
            req = req.header("X-Hazgate-Timestamp", ts).header(
                "X-Hazgate-Signature",
                format!("sha256={}", hex(&hmac(s.expose().as_bytes(), &msg))),
            );
        }
        let resp = req.body(body).send().await.map_err(http_error)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", resp.status()))
        }
    }

    async fn robot(
        &self,
        f: Flavor,
        r: &RobotReceiver,
        secrets: &receivers::robot::Secrets,
        text: &str,
        key: &str,
    ) -> Result<(), Failure> {
        let text = text.to_owned();
        let token = secrets.token.as_ref().map(|t| t.expose().to_owned());
        let secret = secrets.secret.as_ref();
        let now = SystemTime::now();
        let req = match f {
            Flavor::Wecom => {
                let body = json!({"msgtype": "text", "text": {"content": text, "mentioned_mobile_list": r.mention_mobiles}});
                let mut q = Vec::new();
                q.extend(token.map(|t| ("key", t)));
                self.client.post(&r.url).query(&q).json(&body)
            }
            Flavor::Dingtalk => {
                // DingTalk shows a mention only when the content also names the number.
                let text = with_mentions(text, r.mention_mobiles.iter().map(|m| format!("@{m}")));
                let body = json!({"msgtype": "text", "text": {"content": text}, "at": {"atMobiles": r.mention_mobiles, "isAtAll": false}});
                let mut q = Vec::new();
                q.extend(token.map(|t| ("access_token", t)));
                if let Some(s) = secret {
                    let ts = unix_millis(now);
                    q.push(("timestamp", ts.to_string()));
                    q.push(("sign", dingtalk_sign(s.expose(), ts)));
                }
                self.client.post(&r.url).query(&q).json(&body)
            }
            Flavor::Feishu => {
                // Feishu text mentions are `<at>` elements in the content.
                let text = with_mentions(
                    text,
                    r.mention_user_ids
                        .iter()
                        .map(|u| format!("<at user_id=\"{u}\"></at>")),
                );
                let mut body = json!({"msg_type": "text", "content": {"text": text}});
                if let Some(s) = secret {
                    let ts = unix_secs(now);
                    body["timestamp"] = json!(ts.to_string());
                    body["sign"] = json!(feishu_sign(s.expose(), ts));
                }
                let url = match token {
                    Some(t) => format!("{}/{t}", r.url.trim_end_matches('/')),
                    None => r.url.clone(),
                };
                self.client.post(url).json(&body)
            }
        };
        let resp = req
            .header("Idempotency-Key", key)
            .send()
            .await
            .map_err(|e| Failure::from(http_error(e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Failure {
                msg: format!("HTTP {status}"),
                throttled: status == reqwest::StatusCode::TOO_MANY_REQUESTS,
            });
        }
        let body = read_capped(resp, MAX_ANSWER).await?;
        robot_answer(&body).map_err(|msg| Failure {
            msg,
            throttled: robot_throttled(&body),
        })
    }
}

/// A failed attempt; `throttled` when the receiver refused it for its rate limit.
#[derive(Debug)]
struct Failure {
    msg: String,
    throttled: bool,
}

impl From<String> for Failure {
    fn from(msg: String) -> Self {
        Self {
            msg,
            throttled: false,
        }
    }
}

/// The robots' "too many messages" answers: DingTalk `130101` (send too fast), WeCom `45009`
/// (API freq out of limit), Feishu `9499` (too many requests) and `11232` (flow control).
/// Retried after the window.
pub const THROTTLE_CODES: &[i64] = &[130_101, 45_009, 9_499, 11_232];

/// Whether a robot's answer says it was throttled.
pub fn robot_throttled(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| {
        v.get("errcode")
            .or_else(|| v.get("code"))
            .and_then(Value::as_i64)
            .is_some_and(|c| THROTTLE_CODES.contains(&c))
    })
}

/// One message for several notifications of a robot whose rate budget is used up: a header
/// with how many and where, then one line per event (priority, alarm, transition, location,
/// value, site-local time).
pub fn digest_text(ctx: &Context, ns: &[&Notification]) -> String {
    use crate::i18n;
    let l = ctx.language;
    let w = i18n::labels(l);
    let zh = l == i18n::Language::ZhCn;
    let events: Vec<&crate::model::AlarmEvent> = ns.iter().flat_map(|n| &n.events).collect();
    let channels = ctx.channels.load();
    let alarms = ctx.alarms.load();
    let area = |e: &crate::model::AlarmEvent| {
        channels
            .get(&e.channel)
            .map(|c| c.area.to_string())
            .filter(|a| !a.is_empty())
            .or_else(|| {
                alarms
                    .get(e.alarm.as_str())
                    .map(|a| a.area_name.to_string())
            })
            .unwrap_or_default()
    };
    let mut areas: Vec<String> = Vec::new();
    for e in &events {
        let a = area(e);
        if !a.is_empty() && !areas.contains(&a) {
            areas.push(a);
        }
    }
    let n = events.len().max(ns.len()).to_string();
    let mut s = if areas.is_empty() {
        w.digest_no_area.replace("{n}", &n)
    } else {
        w.digest
            .replace("{n}", &n)
            .replace("{areas}", &areas.join(if zh { "、" } else { ", " }))
    };
    s.push('\n');
    let (open, close) = if zh { ("【", "】") } else { ("[", "]") };
    for e in &events {
        let unit = channels
            .get(&e.channel)
            .map(|c| c.unit.to_string())
            .unwrap_or_default();
        let value = match e.value {
            Some(v) if unit.is_empty() => format!(" {v}"),
            Some(v) => format!(" {v} {unit}"),
            None => String::new(),
        };
        let a = area(e);
        let place = if a.is_empty() {
            String::new()
        } else {
            format!(" ({a})")
        };
        s.push_str(&format!(
            "{open}{}{close} {}{place} {}{value} {}\n",
            i18n::priority(l, e.priority),
            e.alarm,
            i18n::transition(l, e.transition),
            i18n::local_time(e.ts, ctx.tz),
        ));
    }
    let mut call: Vec<&str> = Vec::new();
    for c in ns.iter().flat_map(|n| &n.call) {
        if !call.contains(&c.as_str()) {
            call.push(c);
        }
    }
    if !call.is_empty() {
        let colon = if zh { "：" } else { ": " };
        s.push_str(&format!("{}{colon}{}\n", w.call, call.join(", ")));
    }
    s
}

/// The text with one line of mentions appended (unchanged when there are none).
fn with_mentions(text: String, mentions: impl Iterator<Item = String>) -> String {
    let line: Vec<String> = mentions.collect();
    if line.is_empty() {
        text
    } else {
        format!("{text}\n{}", line.join(" "))
    }
}

/// Most bytes of a receiver's answer that are read; a longer answer is refused (a hostile or
/// broken receiver cannot grow the gateway's memory).
pub const MAX_ANSWER: usize = 64 * 1024;

/// Reads a response body up to `max` bytes.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http_error)? {
        if body.len() + chunk.len() > max {
            return Err(format!("answer longer than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Judges an IM robot's answer body (WeCom/DingTalk `errcode`, Feishu `code`/`StatusCode`):
/// delivered only when the code is 0. Any bytes give `Ok` or an error, never a panic.
pub fn robot_answer(body: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    let code = v
        .get("errcode")
        .or_else(|| v.get("code"))
        .or_else(|| v.get("StatusCode"))
        .and_then(Value::as_i64);
    match code {
        Some(0) => Ok(()),
        Some(c) => {
            let msg = v
                .get("errmsg")
                .or_else(|| v.get("msg"))
                .and_then(Value::as_str)
                .unwrap_or("");
            Err(format!(
                "robot answered code {c}: {}",
                crate::sources::mqtt::mapping::excerpt(msg.as_bytes())
            ))
        }
        None => Err("robot answer has no errcode/code".into()),
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The `hazgate.alarm.v2` body. `message` is the text for people (as the robots send it: in
/// the site's language, times in the site's zone with offset); machine fields stay RFC 3339 UTC.
pub fn body_v2(ctx: &Context, n: &Notification) -> Value {
    json!({
        "schema": "hazgate.alarm.v2",
        "site": ctx.site,
        "idempotency_key": n.key,
        "receiver": n.receiver,
        "route": n.route,
        "reason": n.reason,
        "tier": n.tier,
        "call": n.call,
        "created": humantime::format_rfc3339_millis(n.created).to_string(),
        "message": message_text(ctx, n),
        "details": n.events.iter().map(|e| ctx.alarms.load().get(e.alarm.as_str()).cloned().unwrap_or_default()).collect::<Vec<_>>(),
        "event": n.events.first(),
        "events": n.events,
    })
}

fn fmt_num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v}"))
}

/// Human-readable text for robots, templates and the webhook `message`: the essentials of each
/// event in the site's language, times in the site's zone with offset.
pub fn message_text(ctx: &Context, n: &Notification) -> String {
    use crate::i18n;
    let l = ctx.language;
    let w = i18n::labels(l);
    let zh = l == i18n::Language::ZhCn;
    let site = if ctx.site_name.is_empty() {
        &ctx.site
    } else {
        &ctx.site_name
    };
    let colon = if zh { "：" } else { ": " };
    let mut s = String::new();
    match n.reason {
        super::outbox::Reason::Escalation => {
            s.push_str(&w.escalation.replace("{tier}", &n.tier.to_string()));
            s.push('\n');
        }
        super::outbox::Reason::Reminder => {
            s.push_str(w.reminder);
            s.push('\n');
        }
        super::outbox::Reason::Summary => s.push_str(
            "【振荡汇总 chattering summary】Repeated activations, summarised / 反复激活，汇总通知\n",
        ),
        _ => {}
    }
    for e in &n.events {
        let info = ctx
            .alarms
            .load()
            .get(e.alarm.as_str())
            .cloned()
            .unwrap_or_default();
        let mut ch = ctx
            .channels
            .load()
            .get(&e.channel)
            .cloned()
            .unwrap_or_default();
        // Alarms over several channels (composites) have no channel: their rule's area.
        if ch.area.is_empty() {
            ch.area = info.area_name.clone();
        }
        if ch.unit.is_empty() {
            ch.unit = info.unit.clone();
        }
        if ch.label.is_empty() {
            ch.label = info.label.clone();
        }
        let location = match (ch.label.is_empty(), ch.area.is_empty()) {
            (true, true) => e.channel.to_string(),
            (true, false) => format!("{} ({})", e.channel, ch.area),
            (false, _) => format!("{} — {} ({})", ch.label, e.channel, ch.area),
        };
        let (open, close) = if zh { ("【", "】") } else { ("[", "]") };
        s.push_str(&format!(
            "{open}{}{close} {} {}\n",
            i18n::priority(l, e.priority),
            e.alarm,
            i18n::transition(l, e.transition),
        ));
        s.push_str(&format!("{}{colon}{site}\n", w.site));
        s.push_str(&format!("{}{colon}{location}\n", w.location));
        if e.value.is_some() || e.limit.is_some() {
            let unit = if ch.unit.is_empty() {
                String::new()
            } else {
                format!(" {}", ch.unit)
            };
            s.push_str(&format!(
                "{}{colon}{}{unit} ({} {})\n",
                w.value,
                fmt_num(e.value),
                w.limit,
                fmt_num(e.limit)
            ));
        }
        s.push_str(&format!(
            "{}{colon}{}\n",
            w.time,
            i18n::local_time(e.ts, ctx.tz)
        ));
        s.push_str(&format!("{}{colon}{}\n", w.state, i18n::state(l, e.state)));
        if !zh || !e.message.is_ascii() {
            // The engine's own description is English; a configured (Chinese) message is shown.
            s.push_str(&e.message);
            s.push('\n');
        }
        if let Some(r) = info.response.as_deref().filter(|r| !r.is_empty()) {
            if matches!(
                e.transition,
                crate::model::Transition::Raised | crate::model::Transition::Fault
            ) || n.reason != super::outbox::Reason::Event
            {
                s.push_str(&format!("{}{colon}{r}\n", w.response));
            }
        }
        if let Some(by) = &e.by {
            s.push_str(&format!("{}{colon}{by}\n", w.by));
        }
        if let Some(c) = e.comment.as_deref().filter(|c| !c.is_empty()) {
            s.push_str(&format!("{}{colon}{c}\n", w.comment));
        }
    }
    if !n.call.is_empty() {
        s.push_str(&format!("{}{colon}{}\n", w.call, n.call.join(", ")));
    }
    s.push_str(&format!("{}{colon}{}", w.key, n.key));
    s
}

/// Renders a body template. `{time}` is the site's local time with offset; `{text}` is the
/// full text the robots send.
pub fn render(t: &str, ctx: &Context, n: &Notification) -> String {
    let e = n.events.first();
    let l = ctx.language;
    let time = e.map(|e| crate::i18n::local_time(e.ts, ctx.tz));
    let vars = [
        ("{site}", ctx.site.clone()),
        ("{alarm}", e.map(|e| e.alarm.clone()).unwrap_or_default()),
        (
            "{message}",
            e.map(|e| e.message.clone()).unwrap_or_default(),
        ),
        ("{value}", fmt_num(e.and_then(|e| e.value))),
        ("{limit}", fmt_num(e.and_then(|e| e.limit))),
        (
            "{state}",
            e.map(|e| crate::i18n::state(l, e.state).to_owned())
                .unwrap_or_default(),
        ),
        (
            "{transition}",
            e.map(|e| crate::i18n::transition(l, e.transition).to_owned())
                .unwrap_or_default(),
        ),
        ("{time}", time.unwrap_or_default()),
        ("{call}", n.call.join(", ")),
        ("{key}", n.key.clone()),
        ("{text}", message_text(ctx, n)),
    ];
    let mut s = t.to_owned();
    for (k, v) in vars {
        s = s.replace(k, &v);
    }
    s
}

fn topic(tpl: &str, site: &str, n: &Notification) -> String {
    let e = n.events.first();
    let clean = |s: &str| s.replace(['/', '+', '#'], "_");
    tpl.replace("{site}", &clean(site))
        .replace("{receiver}", &clean(&n.receiver))
        .replace(
            "{alarm}",
            &clean(&e.map(|e| e.alarm.clone()).unwrap_or_default()),
        )
        .replace("{channel}", &clean(e.map_or("", |e| e.channel.as_str())))
        .replace("{priority}", &format!("{:?}", n.priority).to_lowercase())
        .replace("{transition}", e.map_or("", |e| e.transition.as_str()))
}

/// HMAC-SHA256.
pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// DingTalk's robot signature (before URL encoding): base64(HMAC-SHA256(secret,
/// `{timestamp_ms}\n{secret}`)).
pub fn dingtalk_sign(secret: &str, timestamp_ms: u128) -> String {
    let msg = format!("{timestamp_ms}\n{secret}");
    base64::engine::general_purpose::STANDARD.encode(hmac(secret.as_bytes(), msg.as_bytes()))
}

/// Feishu's robot signature: base64(HMAC-SHA256(key = `{timestamp_s}\n{secret}`, msg = "")).
pub fn feishu_sign(secret: &str, timestamp_s: u64) -> String {
    let key = format!("{timestamp_s}\n{secret}");
    base64::engine::general_purpose::STANDARD.encode(hmac(key.as_bytes(), b""))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_millis(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::MqttTarget;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Reads one MQTT packet: (first header byte, body).
    async fn packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let h = s.read_u8().await.ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = s.read_u8().await.ok()?;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).await.ok()?;
        Some((h, body))
    }

    /// A tiny MQTT 3.1.1 broker: on its first connection it holds the CONNACK until `release`;
    /// it acknowledges only PUBLISHes whose payload is `A`.
    async fn broker(release: Arc<tokio::sync::Notify>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let conns = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let (release, n) = (release.clone(), conns.fetch_add(1, Ordering::SeqCst));
                tokio::spawn(async move {
                    while let Some((h, body)) = packet(&mut s).await {
                        let reply: Vec<u8> = match h >> 4 {
                            1 => {
                                if n == 0 {
                                    release.notified().await;
                                }
                                vec![0x20, 2, 0, 0]
                            }
                            3 => {
                                let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
                                let (pk, payload) = body[2 + tl..].split_at(2);
                                if payload == b"A" {
                                    vec![0x40, 2, pk[0], pk[1]]
                                } else {
                                    continue;
                                }
                            }
                            12 => vec![0xd0, 0],
                            _ => continue,
                        };
                        if s.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_attempts_late_publish_and_puback_never_deliver_a_later_notification() {
        tokio::time::timeout(Duration::from_secs(60), async {
            let release = Arc::new(tokio::sync::Notify::new());
            let addr = broker(release.clone()).await;
            let target = MqttTarget {
                address: addr,
                topic: "t".into(),
                client_id: None,
                username: None,
                password: None,
            };
            let p = Arc::new(MqttPub::new(&target, "m", "s", None).expect("client"));
            // Notification A: the broker does not answer the CONNECT yet, the attempt times out
            // with A's PUBLISH still queued in the client.
            let a = p.publish("t", b"A".to_vec(), Duration::from_millis(300)).await;
            assert!(a.is_err(), "{a:?}");
            // Notification B: its request is queued, then the first connection comes alive.
            let p2 = p.clone();
            let b = tokio::spawn(async move {
                p2.publish("t", b"B".to_vec(), Duration::from_secs(3)).await
            });
            // (Only for the old client: give B's request time to queue behind A's.)
            tokio::time::sleep(Duration::from_millis(300)).await;
            release.notify_one();
            let b = b.await.expect("task");
            assert!(
                b.is_err(),
                "B was never acknowledged by the broker, yet reported delivered: A's PUBACK taken for B's"
            );
            // A fresh attempt still works.
            p.publish("t", b"A".to_vec(), Duration::from_secs(10))
                .await
                .expect("A delivered and acknowledged");
        })
        .await
        .expect("test timed out");
    }
}
