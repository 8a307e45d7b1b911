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
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
    /// A timestamp and signature added to the SM4 envelope.
    pub sign: Option<SignConfig>,
    /// The platform's appId, sent in the `app_id_header` header and the envelope.
    pub app_id: Option<String>,
    /// Header carrying the appId.
    #[serde(default = "default_app_id_header")]
    pub app_id_header: String,
    /// Send real-time values of the registered points at this interval, besides alarms.
    #[schemars(with = "Option<crate::schema::HumanDuration>")]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
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
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sm4Config {
    /// Key (32 hex digits).
    pub key: SecretRef,
    /// IV (32 hex digits); required with `iv_mode = "fixed"`, refused with `"random"`.
    pub iv: Option<SecretRef>,
    /// `fixed` (the default: the IV file's, as most platforms prescribe) or `random` (a fresh
    /// IV per message, sent in the envelope's `iv_field`, where the platform allows it).
    #[serde(default)]
    pub iv_mode: IvMode,
    /// Envelope field carrying a random IV (written like the ciphertext, see `encoding`).
    #[serde(default = "default_iv_field")]
    pub iv_field: String,
    /// How the ciphertext is written in the envelope's `data`: `base64` (the default) or `hex`
    /// (lower case).
    #[serde(default)]
    pub encoding: CipherEncoding,
}

fn default_iv_field() -> String {
    "iv".into()
}

/// Where the SM4-CBC IV comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IvMode {
    /// The configured IV for every message.
    #[default]
    Fixed,
    /// A fresh random IV per message, sent with it.
    Random,
}

/// The envelope signature: `sign_field` = lower-case hex of HMAC(`key`, appId + timestamp +
/// IV (random mode; as sent) + data (as sent)), `timestamp_field` = Unix milliseconds.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignConfig {
    /// `hmac_sha256` or `hmac_sm3` (HMAC over SM3, GB/T 32905).
    pub algorithm: SignAlgorithm,
    /// Signing key (the secret's text, as bytes).
    pub key: SecretRef,
    /// Envelope field of the timestamp.
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
    /// Envelope field of the signature.
    #[serde(default = "default_sign_field")]
    pub sign_field: String,
}

fn default_timestamp_field() -> String {
    "timestamp".into()
}

fn default_sign_field() -> String {
    "sign".into()
}

/// The envelope signature's HMAC hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignAlgorithm {
    /// HMAC-SHA256.
    HmacSha256,
    /// HMAC-SM3.
    HmacSm3,
}

/// Text form of the SM4 ciphertext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
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
    /// SM4 key and IV (as written: 32 hex digits each; no IV in random mode).
    pub sm4: Option<(Secret, Option<Secret>)>,
    /// The envelope signing key.
    pub sign_key: Option<Secret>,
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
                let iv = super::common::read(k.iv.as_ref(), format!("{path}.sm4.iv"), p);
                key.zip(iv).map(Some)
            }
        };
        let sign_key = match &self.sign {
            None => Some(None),
            Some(s) => s.key.resolve_at(&format!("{path}.sign.key"), p).map(Some),
        };
        Some(Secrets {
            mqtt_password: mqtt_password?,
            sm4: sm4?,
            sign_key: sign_key?,
        })
    }

    /// Secret references, as `(field path, reference)`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut v = Vec::new();
        let m = self.mqtt.as_ref().and_then(|m| m.password.as_ref());
        v.extend(m.map(|s| ("mqtt.password", s)));
        if let Some(k) = &self.sm4 {
            v.push(("sm4.key", &k.key));
            v.extend(k.iv.as_ref().map(|iv| ("sm4.iv", iv)));
        }
        v.extend(self.sign.as_ref().map(|s| ("sign.key", &s.key)));
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
            match (k.iv_mode, &k.iv) {
                (IvMode::Fixed, None) => p.err(
                    format!("{path}.sm4.iv"),
                    "give the IV file (or iv_mode = \"random\" where the platform takes an IV per message)",
                ),
                (IvMode::Random, Some(_)) => p.err(
                    format!("{path}.sm4.iv"),
                    "iv_mode = \"random\" makes a fresh IV per message; remove `iv`",
                ),
                _ => {}
            }
            let keys = std::iter::once(("key", &k.key)).chain(k.iv.as_ref().map(|iv| ("iv", iv)));
            for (field, s) in keys {
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
        if self.sign.is_some() && self.sm4.is_none() {
            p.err(
                format!("{path}.sign"),
                "the signature is over the SM4 envelope: configure `sm4` too",
            );
        }
        if let Some(k) = &self.sm4 {
            let mut names = vec!["appId", "data"];
            if k.iv_mode == IvMode::Random {
                names.push(k.iv_field.as_str());
            }
            if let Some(s) = &self.sign {
                names.push(s.timestamp_field.as_str());
                names.push(s.sign_field.as_str());
            }
            let distinct: std::collections::BTreeSet<&str> = names.iter().copied().collect();
            if distinct.len() != names.len() {
                p.err(
                    format!("{path}.sm4"),
                    format!(
                        "the envelope's field names must differ: {}",
                        names.join(", ")
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
    fn iv_mode_and_signature_settings_are_checked() {
        let errors = |extra: &str| {
            let g: RegulatorReceiver = toml::from_str(&format!(
                "id = \"g\"\nurl = \"http://127.0.0.1:1/\"\nfields = {{ value = \"v\" }}\n{extra}"
            ))
            .expect("regulator");
            let mut p = Problems::default();
            g.check("receivers[0]", &|_| true, &mut p);
            p.0.into_iter().map(|x| x.path).collect::<Vec<_>>()
        };
        let k = "key = { file = \"/nonexistent/k\" }";
        assert_eq!(errors(&format!("sm4 = {{ {k} }}")), ["receivers[0].sm4.iv"]);
        assert_eq!(
            errors(&format!(
                "sm4 = {{ {k}, iv = {{ file = \"/x\" }}, iv_mode = \"random\" }}"
            )),
            ["receivers[0].sm4.iv"]
        );
        assert!(errors(&format!("sm4 = {{ {k}, iv_mode = \"random\" }}")).is_empty());
        assert_eq!(
            errors(&format!("sign = {{ algorithm = \"hmac_sm3\", {k} }}")),
            ["receivers[0].sign"]
        );
        assert_eq!(
            errors(&format!(
                "sm4 = {{ {k}, iv_mode = \"random\", iv_field = \"sign\" }}\n\
                 sign = {{ algorithm = \"hmac_sha256\", {k} }}"
            )),
            ["receivers[0].sm4"]
        );
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
