//! Group robots: WeCom (企业微信), DingTalk (钉钉), Feishu (飞书).

use std::time::Duration;

use serde::Deserialize;

use super::common::Delivery;
use crate::check::Problems;
use crate::secret::{Secret, SecretRef};

/// Which robot platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// WeCom (企业微信).
    Wecom,
    /// DingTalk (钉钉).
    Dingtalk,
    /// Feishu (飞书).
    Feishu,
}

/// A WeCom, DingTalk or Feishu group robot.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
    /// Mobile numbers to @-mention (WeCom, DingTalk; Feishu robots cannot mention by mobile).
    #[serde(default)]
    pub mention_mobiles: Vec<String>,
    /// Feishu user ids or open ids (`ou_…`) to @-mention, sent as `<at user_id="…"></at>`.
    #[serde(default)]
    pub mention_user_ids: Vec<String>,
    /// Most messages sent to the robot per `rate_window`; default 20 for WeCom and DingTalk
    /// (their documented limit per group robot and minute), 100 for Feishu. When more
    /// notifications are due than the rest of the budget allows, the last message of the window
    /// is one digest of all of them.
    pub rate_limit: Option<u32>,
    /// The window of `rate_limit` (default one minute).
    #[schemars(with = "crate::schema::HumanDuration")]
    #[serde(with = "humantime_serde", default = "default_rate_window")]
    pub rate_window: Duration,
    /// Delivery settings.
    #[serde(flatten)]
    pub delivery: Delivery,
}

fn default_rate_window() -> Duration {
    Duration::from_secs(60)
}

/// Notifications merged into one digest message at most (the rest wait for the next one),
/// which keeps a digest far below the platforms' message size limits (DingTalk 20 000 bytes).
pub const DIGEST_MAX: usize = 40;

/// The robot's secrets, read.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Token (WeCom `key`, DingTalk `access_token`, Feishu hook id).
    pub token: Option<Secret>,
    /// Signing secret.
    pub secret: Option<Secret>,
}

impl RobotReceiver {
    /// Messages per window, as `(messages, window)`: the configured budget or the platform's.
    pub fn rate(&self, flavor: Flavor) -> (u32, Duration) {
        let default = match flavor {
            Flavor::Wecom | Flavor::Dingtalk => 20,
            Flavor::Feishu => 100,
        };
        (self.rate_limit.unwrap_or(default), self.rate_window)
    }

    /// Reads the secrets (`path` is `receivers[i]`); every unreadable one is reported in `p`.
    pub fn resolve(&self, path: &str, p: &mut Problems) -> Option<Secrets> {
        let token = super::common::read(self.token.as_ref(), format!("{path}.token"), p);
        let secret = super::common::read(self.secret.as_ref(), format!("{path}.secret"), p);
        Some(Secrets {
            token: token?,
            secret: secret?,
        })
    }

    /// Secret references, as `(field, reference)`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut v: Vec<_> = self.token.iter().map(|s| ("token", s)).collect();
        v.extend(self.secret.iter().map(|s| ("secret", s)));
        v
    }

    /// The robot's own checks (`path` is `receivers[i]`).
    pub fn check(&self, flavor: Flavor, path: &str, p: &mut Problems) {
        if flavor == Flavor::Wecom && self.secret.is_some() {
            p.err(
                format!("{path}.secret"),
                "WeCom robots are not signed; remove `secret`",
            );
        }
        if flavor == Flavor::Feishu && !self.mention_mobiles.is_empty() {
            p.err(
                format!("{path}.mention_mobiles"),
                "Feishu robots cannot mention by mobile number (the mention would be silently \
                 dropped); list the people's user ids or open ids in `mention_user_ids`",
            );
        }
        if flavor != Flavor::Feishu && !self.mention_user_ids.is_empty() {
            p.err(
                format!("{path}.mention_user_ids"),
                "only Feishu robots mention by user id; use `mention_mobiles`",
            );
        }
        if self.rate_limit == Some(0) {
            p.err(
                format!("{path}.rate_limit"),
                "must be at least 1 message per window",
            );
        }
        if self.rate_window < Duration::from_secs(1) {
            p.err(format!("{path}.rate_window"), "must be at least 1s");
        }
        for (i, id) in self.mention_user_ids.iter().enumerate() {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                p.err(
                    format!("{path}.mention_user_ids[{i}]"),
                    "expected a Feishu user id or open id (letters, digits, `_`, `-`)",
                );
            }
        }
    }
}
