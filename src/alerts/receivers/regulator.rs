//! A regulator's platform: configurable JSON records over HTTP POST or MQTT, optionally SM4-CBC
//! encrypted. The records themselves are built in `alerts::regulator`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::common::Delivery;
use super::mqtt::MqttTarget;
use crate::check::Problems;
use crate::secret::{Secret, SecretRef};

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
    /// What a mapped field with no value (`null`) or an empty string becomes: left out (`omit`,
    /// the default) or sent as `""` (`empty`). Never `null`: platforms reject null numbers.
    #[serde(default)]
    pub empty_fields: EmptyFields,
    /// Delivery settings.
    #[serde(flatten)]
    pub delivery: Delivery,
}

/// A regulator feed's policy for fields without a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyFields {
    /// The field is not sent.
    #[default]
    Omit,
    /// The field is sent as an empty string.
    Empty,
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
    /// How the ciphertext is written in the envelope's `data`: `base64` (the default) or `hex`
    /// (lower case).
    #[serde(default)]
    pub encoding: CipherEncoding,
}

/// Text form of the SM4 ciphertext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CipherEncoding {
    /// Standard base64 with padding.
    #[default]
    Base64,
    /// Lower-case hexadecimal.
    Hex,
}

/// The transition (event type) codes sent when a feed's `codes` gives none for a transition:
/// every record says what happened, so an acknowledgement or a clear never looks like a new
/// alarm. A code in `codes` (`"acknowledged" = "0"`) replaces the default of that transition.
pub const DEFAULT_TRANSITION_CODES: &[(&str, &str)] = &[
    ("raised", "1"),
    ("acknowledged", "2"),
    ("cleared", "3"),
    ("reset", "4"),
    ("fault", "5"),
    ("fault_cleared", "6"),
    ("shelved", "7"),
    ("unshelved", "8"),
    ("out_of_service", "9"),
    ("returned_to_service", "10"),
    ("suppressed", "11"),
    ("unsuppressed", "12"),
    ("removed", "13"),
    ("site_mode", "14"),
    ("flood", "15"),
    ("flood_ended", "16"),
    ("chattering", "17"),
    ("config_changed", "18"),
];

/// The output name of the `transition` field when `fields` does not name it: every record
/// carries its event type.
pub const DEFAULT_TRANSITION_FIELD: &str = "event_type";

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
    "event_time",
    "handled_by",
    "handling_result",
    "idempotency_key",
];

/// The regulator feed's secrets, read.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Broker password of the MQTT target.
    pub mqtt_password: Option<Secret>,
    /// SM4 key and IV (as written: 32 hex digits each).
    pub sm4: Option<(Secret, Secret)>,
}

/// Parses 32 hex digits (surrounding white space ignored) into 16 bytes.
pub fn parse_key(hex: &str) -> Option<[u8; 16]> {
    let hex = hex.trim();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl RegulatorReceiver {
    /// The code sent for a transition: the one in `codes`, else the documented default.
    pub fn transition_code(&self, t: &str) -> String {
        if let Some(c) = self.codes.get(t) {
            return c.clone();
        }
        DEFAULT_TRANSITION_CODES
            .iter()
            .find(|(n, _)| *n == t)
            .map_or_else(|| t.to_owned(), |(_, c)| (*c).to_owned())
    }

    /// The output name of the `transition` field (`fields.transition`, else `event_type`).
    pub fn transition_field(&self) -> &str {
        self.fields
            .get("transition")
            .map_or(DEFAULT_TRANSITION_FIELD, String::as_str)
    }

    /// Reads the secrets (`path` is `receivers[i]`); every unreadable one is reported in `p`.
    pub fn resolve(&self, path: &str, p: &mut Problems) -> Option<Secrets> {
        let pw = self.mqtt.as_ref().and_then(|m| m.password.as_ref());
        let mqtt_password = super::common::read(pw, format!("{path}.mqtt.password"), p);
        let sm4 = match &self.sm4 {
            None => Some(None),
            Some(k) => {
                let key = k.key.resolve_at(&format!("{path}.sm4.key"), p);
                let iv = k.iv.resolve_at(&format!("{path}.sm4.iv"), p);
                key.zip(iv).map(Some)
            }
        };
        Some(Secrets {
            mqtt_password: mqtt_password?,
            sm4: sm4?,
        })
    }

    /// Secret references, as `(field path, reference)`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut v = Vec::new();
        let m = self.mqtt.as_ref().and_then(|m| m.password.as_ref());
        v.extend(m.map(|s| ("mqtt.password", s)));
        if let Some(k) = &self.sm4 {
            v.push(("sm4.key", &k.key));
            v.push(("sm4.iv", &k.iv));
        }
        v
    }

    /// The regulator feed's own checks (`path` is `receivers[i]`). `channel_exists` tells
    /// whether a channel id is configured.
    pub fn check(&self, path: &str, channel_exists: &dyn Fn(&str) -> bool, p: &mut Problems) {
        match (&self.url, &self.mqtt) {
            (Some(_), None) => {}
            (None, Some(m)) => m.check(&format!("{path}.mqtt"), p),
            _ => p.err(path, "give exactly one of `url` and `mqtt`"),
        }
        for k in self.fields.keys() {
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
        if self.fields.is_empty() {
            p.err(
                format!("{path}.fields"),
                "map at least one canonical field to the platform's name",
            );
        }
        for (j, pt) in self.points.iter().enumerate() {
            if !channel_exists(&pt.channel) {
                p.err(
                    format!("{path}.points[{j}].channel"),
                    format!("unknown channel `{}`", pt.channel),
                );
            }
        }
        if let Some(k) = &self.sm4 {
            // Readable now (check-config on the gateway, or start-up): the key and IV must be
            // what the gateway accepts at start. Unreadable ones are not required here; start-up
            // reports them with their paths.
            for (field, s) in [("key", &k.key), ("iv", &k.iv)] {
                if let Ok(v) = s.resolve() {
                    if parse_key(v.expose()).is_none() {
                        p.err(
                            format!("{path}.sm4.{field}"),
                            format!(
                                "expected 32 hex digits (16 bytes); the secret has {} characters",
                                v.expose().trim().chars().count()
                            ),
                        );
                    }
                }
            }
        }
        // A transition whose code is that of a raise would look like a new alarm.
        for new_alarm in ["raised", "fault"] {
            let code = self.transition_code(new_alarm);
            for (t, _) in DEFAULT_TRANSITION_CODES {
                if ["raised", "fault"].contains(t) || self.transition_code(t) != code {
                    continue;
                }
                p.warn(
                    format!("{path}.codes.{t}"),
                    format!(
                        "`{t}` is sent with code `{code}`, the code of `{new_alarm}`: the platform \
                         would take these records for new alarms"
                    ),
                );
            }
        }
        if self
            .report_interval
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            p.err(format!("{path}.report_interval"), "must be at least 1s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(key: &std::path::Path, iv: &std::path::Path) -> RegulatorReceiver {
        toml::from_str(&format!(
            r#"
id = "g"
url = "http://127.0.0.1:1/"
fields = {{ value = "v" }}
[sm4]
key = {{ file = "{}" }}
iv = {{ file = "{}" }}
"#,
            key.display(),
            iv.display()
        ))
        .expect("regulator")
    }

    #[test]
    fn readable_sm4_key_and_iv_files_are_checked_for_32_hex_digits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let short = dir.path().join("short");
        std::fs::write(&short, "0123456789abcdef\n").expect("write");
        let good = dir.path().join("good");
        std::fs::write(&good, "000102030405060708090a0b0c0d0e0f\n").expect("write");
        let signed = dir.path().join("signed");
        std::fs::write(&signed, "+0+1+2+3+4+5+6+7+8+9+a+b+c+d+e+f").expect("write");
        let missing = dir.path().join("missing");
        let errors = |g: &RegulatorReceiver| {
            let mut p = Problems::default();
            g.check("receivers[0]", &|_| true, &mut p);
            p.0.into_iter()
                .map(|x| format!("{}: {}", x.path, x.message))
                .collect::<Vec<_>>()
        };

        let e = errors(&feed(&short, &good));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("receivers[0].sm4.key: expected 32 hex digits"),
            "{e:?}"
        );
        assert!(
            !e[0].contains("0123456789abcdef"),
            "never quotes the key: {e:?}"
        );
        let e = errors(&feed(&good, &signed));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("receivers[0].sm4.iv:"), "{e:?}");
        assert!(errors(&feed(&good, &good)).is_empty());
        // Not readable here: not required (start-up reports it with its path).
        assert!(errors(&feed(&missing, &missing)).is_empty());
    }
}
