//! MQTT publish of the notification JSON; [`MqttTarget`] is also the regulator's MQTT target.

use serde::Deserialize;

use super::common::Delivery;
use crate::check::Problems;
use crate::secret::{Secret, SecretRef};

/// An MQTT broker to publish to.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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

impl MqttTarget {
    /// Checks the address and topic (`path` is the table holding them).
    pub fn check(&self, path: &str, p: &mut Problems) {
        if split_host_port(&self.address).is_none() {
            p.err(format!("{path}.address"), "expected `host:port`");
        }
        if self.topic.is_empty() || self.topic.contains(['+', '#']) {
            p.err(
                format!("{path}.topic"),
                "must be a non-empty topic without wildcards",
            );
        }
    }
}

/// MQTT publish of the notification JSON (QoS 1).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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

impl MqttReceiver {
    /// Reads the broker password (`path` is `receivers[i]`); unreadable is reported in `p`.
    pub fn resolve(&self, path: &str, p: &mut Problems) -> Option<Option<Secret>> {
        super::common::read(self.target.password.as_ref(), format!("{path}.password"), p)
    }

    /// The receiver's own checks (`path` is `receivers[i]`).
    pub fn check(&self, path: &str, p: &mut Problems) {
        self.target.check(path, p);
    }
}

/// `host:port` split.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port = p.parse().ok()?;
    (!h.is_empty()).then(|| (h.trim_matches(['[', ']']).to_owned(), port))
}
