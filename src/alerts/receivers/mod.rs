//! The receiver kinds: one [`Receiver`] enum whose variants each live in their own file with
//! their configuration (serde) and checks: [`webhook`], [`robot`] (WeCom, DingTalk, Feishu),
//! [`mqtt`] and [`regulator`]. `config::Config.receivers` holds this enum; the matches over it
//! are in this file only.
//!
//! Adding a receiver kind: a new file here with its struct and `check`, one variant in
//! [`Receiver`] and its arms below (see docs/ARCHITECTURE.md, "How to add a receiver kind").

pub mod mqtt;
pub mod regulator;
pub mod robot;
pub mod webhook;

use std::collections::HashSet;

use serde::Deserialize;

use super::config::Delivery;
use crate::check::Problems;
use crate::model::check_id;
use crate::secret::SecretRef;

pub use mqtt::{MqttReceiver, MqttTarget};
pub use regulator::{REGULATOR_FIELDS, RegulatorPoint, RegulatorReceiver, Sm4Config};
pub use robot::{Flavor, RobotReceiver};
pub use webhook::WebhookReceiver;

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
        match self {
            Receiver::Webhook(w) => w.secrets(),
            Receiver::Wecom(r) | Receiver::Dingtalk(r) | Receiver::Feishu(r) => r.secrets(),
            Receiver::Mqtt(m) => m.target.password.iter().map(|s| ("password", s)).collect(),
            Receiver::Regulator(g) => g.secrets(),
        }
    }

    /// The kind's own checks (besides id, URLs, secret shape and delivery settings, which
    /// [`check`] does for every kind).
    fn check_kind(&self, path: &str, channel_exists: &dyn Fn(&str) -> bool, p: &mut Problems) {
        match self {
            Receiver::Webhook(w) => w.check(path, p),
            Receiver::Wecom(r) => r.check(Flavor::Wecom, path, p),
            Receiver::Dingtalk(r) => r.check(Flavor::Dingtalk, path, p),
            Receiver::Feishu(r) => r.check(Flavor::Feishu, path, p),
            Receiver::Mqtt(m) => m.check(path, p),
            Receiver::Regulator(g) => g.check(path, channel_exists, p),
        }
    }
}

/// Checks every receiver (`receivers[i]…` paths): ids (well-formed, unique), URLs, the shape
/// of secret references, delivery settings and each kind's own settings. `channel_exists`
/// tells whether a channel id is configured.
pub fn check(receivers: &[Receiver], channel_exists: &dyn Fn(&str) -> bool, p: &mut Problems) {
    let mut ids = HashSet::new();
    for (i, r) in receivers.iter().enumerate() {
        let path = format!("receivers[{i}]");
        if let Err(e) = check_id(r.id(), false) {
            p.err(format!("{path}.id"), e);
        }
        if !ids.insert(r.id()) {
            p.err(
                format!("{path}.id"),
                format!("duplicate receiver id `{}`", r.id()),
            );
        }
        for (field, url) in r.urls() {
            check_http_url(url, &format!("{path}.{field}"), p);
        }
        for (field, s) in r.secrets() {
            check_secret_shape(s, &format!("{path}.{field}"), p);
        }
    }
    for (i, r) in receivers.iter().enumerate() {
        let path = format!("receivers[{i}]");
        r.delivery().check(&path, p);
        r.check_kind(&path, channel_exists, p);
    }
}

fn check_http_url(url: &str, path: &str, p: &mut Problems) {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        p.err(path, format!("`{url}` is not an http:// or https:// URL"));
    }
}

fn check_secret_shape(s: &SecretRef, path: &str, p: &mut Problems) {
    if s.env.is_some() == s.file.is_some() {
        p.err(
            path,
            "give exactly one of `env` or `file` (secrets are never inline)",
        );
    }
}
