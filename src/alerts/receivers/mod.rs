//! The receiver kinds: one [`Receiver`] enum whose variants each live in their own file with
//! their configuration (serde) and checks: [`webhook`], [`robot`] (WeCom, DingTalk, Feishu),
//! [`mqtt`] and [`regulator`]. `config::Config.receivers` holds this enum; the matches over it
//! are in this file only.
//!
//! Adding a receiver kind: a new file here with its struct and `check`, one variant in
//! [`Receiver`] and its arms below (see docs/ARCHITECTURE.md, "How to add a receiver kind").

pub mod common;
pub mod mqtt;
pub mod regulator;
pub mod robot;
pub mod webhook;

use std::collections::HashSet;

use serde::Deserialize;

use crate::check::Problems;
use crate::model::check_id;
use crate::secret::{Secret, SecretRef};
use common::Delivery;

pub use mqtt::{MqttReceiver, MqttTarget};
pub use regulator::{REGULATOR_FIELDS, RegulatorPoint, RegulatorReceiver, Sm4Config};
pub use robot::{Flavor, RobotReceiver};
pub use webhook::WebhookReceiver;

/// Where alarm events go.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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

    /// Reads the receiver's secrets (`path` is `receivers[i]`): every unreadable one is an
    /// error at its path in `p`, and then there is no ready form.
    pub fn resolve(&self, path: &str, p: &mut Problems) -> Option<Ready> {
        Some(match self {
            Receiver::Webhook(w) => Ready::Webhook(w.clone(), w.resolve(path, p)?),
            Receiver::Wecom(r) => Ready::Robot(Flavor::Wecom, r.clone(), r.resolve(path, p)?),
            Receiver::Dingtalk(r) => Ready::Robot(Flavor::Dingtalk, r.clone(), r.resolve(path, p)?),
            Receiver::Feishu(r) => Ready::Robot(Flavor::Feishu, r.clone(), r.resolve(path, p)?),
            Receiver::Mqtt(m) => Ready::Mqtt(m.clone(), m.resolve(path, p)?),
            Receiver::Regulator(g) => Ready::Regulator(g.clone(), g.resolve(path, p)?),
        })
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

/// A receiver with its secrets read (typed, per kind): what a delivery worker is built from.
#[derive(Debug)]
pub enum Ready {
    /// A webhook with its token and HMAC key.
    Webhook(WebhookReceiver, webhook::Secrets),
    /// A group robot with its token and signing secret.
    Robot(Flavor, RobotReceiver, robot::Secrets),
    /// An MQTT receiver with its broker password.
    Mqtt(MqttReceiver, Option<Secret>),
    /// A regulator feed with its broker password and SM4 key and IV.
    Regulator(Box<RegulatorReceiver>, regulator::Secrets),
}

impl Ready {
    /// The receiver's id.
    pub fn id(&self) -> &str {
        match self {
            Ready::Webhook(w, _) => &w.id,
            Ready::Robot(_, r, _) => &r.id,
            Ready::Mqtt(m, _) => &m.id,
            Ready::Regulator(g, _) => &g.id,
        }
    }

    /// Delivery settings.
    pub fn delivery(&self) -> &Delivery {
        match self {
            Ready::Webhook(w, _) => &w.delivery,
            Ready::Robot(_, r, _) => &r.delivery,
            Ready::Mqtt(m, _) => &m.delivery,
            Ready::Regulator(g, _) => &g.delivery,
        }
    }
}

/// Reads every receiver's secrets in one pass: each unreadable one is an error at its path
/// (`receivers[i].token`, …) in `p`, all reported together. The list is complete only when
/// `p` gained no error.
pub fn resolve(receivers: &[Receiver], p: &mut Problems) -> Vec<Ready> {
    receivers
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.resolve(&format!("receivers[{i}]"), p))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        receivers: Vec<Receiver>,
    }

    fn receivers(text: &str) -> Vec<Receiver> {
        toml::from_str::<File>(text).expect("receivers").receivers
    }

    #[test]
    fn every_unreadable_secret_is_reported_together_with_its_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = dir.path().join("good");
        std::fs::write(&good, "s3cret\n").expect("write");
        let missing = dir.path().join("missing");
        let text = format!(
            r#"
[[receivers]]
kind = "webhook"
id = "w"
url = "http://127.0.0.1:1/"
token = {{ file = "{good}" }}
hmac_secret = {{ file = "{missing}" }}

[[receivers]]
kind = "dingtalk"
id = "d"
url = "http://127.0.0.1:1/"
token = {{ file = "{missing}" }}

[[receivers]]
kind = "regulator"
id = "g"
url = "http://127.0.0.1:1/"
fields = {{ value = "v" }}
[receivers.sm4]
key = {{ file = "{good}" }}
iv = {{ file = "{missing}" }}
"#,
            good = good.display(),
            missing = missing.display()
        );
        let rs = receivers(&text);
        let mut p = Problems::default();
        let ready = resolve(&rs, &mut p);
        let paths: Vec<&str> = p.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "receivers[0].hmac_secret",
                "receivers[1].token",
                "receivers[2].sm4.iv"
            ]
        );
        assert!(
            ready.is_empty(),
            "no receiver with an unreadable secret is ready"
        );

        // Readable: each kind gets its own typed secrets.
        std::fs::write(&missing, "k\n").expect("write");
        let mut p = Problems::default();
        let ready = resolve(&rs, &mut p);
        assert!(p.0.is_empty(), "{:?}", p.0);
        match &ready[0] {
            Ready::Webhook(_, s) => {
                assert_eq!(s.token.as_ref().map(Secret::expose), Some("s3cret"));
                assert_eq!(s.hmac_secret.as_ref().map(Secret::expose), Some("k"));
            }
            other => panic!("expected a webhook, got {other:?}"),
        }
        match &ready[1] {
            Ready::Robot(Flavor::Dingtalk, _, s) => {
                assert_eq!(s.token.as_ref().map(Secret::expose), Some("k"));
                assert!(s.secret.is_none());
            }
            other => panic!("expected a DingTalk robot, got {other:?}"),
        }
        match &ready[2] {
            Ready::Regulator(_, s) => {
                let (k, iv) = s.sm4.as_ref().expect("sm4");
                let iv = iv.as_ref().map(Secret::expose);
                assert_eq!((k.expose(), iv), ("s3cret", Some("k")));
            }
            other => panic!("expected a regulator, got {other:?}"),
        }
    }
}
