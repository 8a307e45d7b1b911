//! Group robots: WeCom (企业微信), DingTalk (钉钉), Feishu (飞书).

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
    /// Mobile numbers to @-mention (WeCom, DingTalk; Feishu robots cannot mention by mobile).
    #[serde(default)]
    pub mention_mobiles: Vec<String>,
    /// Feishu user ids or open ids (`ou_…`) to @-mention, sent as `<at user_id="…"></at>`.
    #[serde(default)]
    pub mention_user_ids: Vec<String>,
    /// Delivery settings.
    #[serde(flatten)]
    pub delivery: Delivery,
}

/// The robot's secrets, read.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Token (WeCom `key`, DingTalk `access_token`, Feishu hook id).
    pub token: Option<Secret>,
    /// Signing secret.
    pub secret: Option<Secret>,
}

impl RobotReceiver {
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
