//! The generic webhook: HTTP POST of the notification JSON or of a body template.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::Delivery;
use crate::check::Problems;
use crate::secret::{Secret, SecretRef};

/// Generic webhook.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
    pub headers: BTreeMap<String, String>,
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

/// The webhook's secrets, read.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Bearer token.
    pub token: Option<Secret>,
    /// HMAC-SHA256 key.
    pub hmac_secret: Option<Secret>,
}

impl WebhookReceiver {
    /// Reads the secrets (`path` is `receivers[i]`); every unreadable one is reported in `p`.
    pub fn resolve(&self, path: &str, p: &mut Problems) -> Option<Secrets> {
        let token = super::common::read(self.token.as_ref(), format!("{path}.token"), p);
        let hmac = super::common::read(self.hmac_secret.as_ref(), format!("{path}.hmac_secret"), p);
        Some(Secrets {
            token: token?,
            hmac_secret: hmac?,
        })
    }

    /// Secret references, as `(field, reference)`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut v: Vec<_> = self.token.iter().map(|s| ("token", s)).collect();
        v.extend(self.hmac_secret.iter().map(|s| ("hmac_secret", s)));
        v
    }

    /// The webhook's own checks (`path` is `receivers[i]`).
    pub fn check(&self, path: &str, p: &mut Problems) {
        for h in self.headers.keys() {
            if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                p.err(format!("{path}.headers.{h}"), "not a valid header name");
            }
        }
    }
}
