//! Regulator feeds: alarm records and periodic real-time values in a configurable JSON shape,
//! over HTTP POST or MQTT, optionally SM4-CBC encrypted.
//!
//! A record is built from canonical fields (`tag`, `indicator`, `hazard_source`, `value`,
//! `unit`, `limit`, `limit_name`, `alarm_type`, `time`, `handled_by`, …, see
//! [`super::config::REGULATOR_FIELDS`]); `fields` renames the ones the platform wants (the others
//! are not sent), `codes` translates values (`HH` → `4`), `constants` adds fixed fields (the
//! enterprise credit code). Times are `%Y-%m-%d %H:%M:%S` in China Standard Time (UTC+8).
//!
//! Payload: one record as a JSON object, several (a group, a report) as an array. With `sm4`,
//! the payload is encrypted with SM4-CBC and PKCS#7 padding (= PKCS#5 for 16-byte blocks), key
//! and IV from files (32 hex digits each), and sent as `{"appId": …, "data": base64}`; the appId
//! also goes in the `app_id_header` header.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::config::{RegulatorPoint, RegulatorReceiver};
use super::context::Context;
use super::outbox::{Notification, Outbox, Reason, ReportValue};
use super::receivers::regulator::{CipherEncoding, EmptyFields, Secrets, SignAlgorithm};
use super::transport::{MqttPub, http_error};
use crate::model::{AlarmClass, Priority, Transition};
use crate::state::SharedState;

/// SM4-CBC encryption with PKCS#7 padding.
pub fn sm4_cbc_encrypt(key: &[u8; 16], iv: &[u8; 16], plain: &[u8]) -> Vec<u8> {
    cbc::Encryptor::<sm4::Sm4>::new(key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plain)
}

/// SM4-CBC decryption with PKCS#7 padding (for tests and platform simulators).
pub fn sm4_cbc_decrypt(key: &[u8; 16], iv: &[u8; 16], cipher: &[u8]) -> Option<Vec<u8>> {
    cbc::Decryptor::<sm4::Sm4>::new(key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(cipher)
        .ok()
}

pub use super::receivers::regulator::parse_key;

/// SM4 key and fixed IV (none in random mode); `Debug` never shows them.
struct Sm4Key([u8; 16], Option<[u8; 16]>);

impl std::fmt::Debug for Sm4Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sm4Key(<redacted>)")
    }
}

/// The envelope signing key; `Debug` never shows it.
struct SignKey(Vec<u8>);

impl std::fmt::Debug for SignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignKey(<redacted>)")
    }
}

/// HMAC of `msg` with `key`, SHA-256 or SM3, as lower-case hex.
pub fn envelope_sign(alg: SignAlgorithm, key: &[u8], msg: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let tag = match alg {
        SignAlgorithm::HmacSha256 => {
            let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        SignAlgorithm::HmacSm3 => {
            let mut m = <Hmac<sm3::Sm3> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
    };
    lower_hex(&tag)
}

/// A configured regulator feed.
#[derive(Debug)]
pub struct Regulator {
    cfg: RegulatorReceiver,
    sm4: Option<Sm4Key>,
    sign: Option<SignKey>,
    mqtt: Option<MqttPub>,
    points: HashMap<String, RegulatorPoint>,
    ctx: Context,
}

impl Regulator {
    /// Builds the feed; fails when the SM4 key or IV is not 32 hex digits.
    pub fn new(cfg: &RegulatorReceiver, secrets: &Secrets, ctx: &Context) -> Result<Self, String> {
        let sm4 = match &secrets.sm4 {
            Some((k, iv)) => Some(Sm4Key(
                parse_key(k.expose()).ok_or("sm4.key: expected 32 hex digits (16 bytes)")?,
                match iv {
                    Some(iv) => Some(
                        parse_key(iv.expose())
                            .ok_or("sm4.iv: expected 32 hex digits (16 bytes)")?,
                    ),
                    None => None,
                },
            )),
            None => None,
        };
        let sign = secrets
            .sign_key
            .as_ref()
            .map(|k| SignKey(k.expose().as_bytes().to_vec()));
        let mqtt = match &cfg.mqtt {
            Some(m) => Some(MqttPub::new(
                m,
                &cfg.id,
                &ctx.site,
                secrets.mqtt_password.as_ref(),
            )?),
            None => None,
        };
        Ok(Self {
            points: cfg
                .points
                .iter()
                .map(|p| (p.channel.clone(), p.clone()))
                .collect(),
            cfg: cfg.clone(),
            sm4,
            sign,
            mqtt,
            ctx: ctx.clone(),
        })
    }

    fn code(&self, v: &str) -> Value {
        Value::String(
            self.cfg
                .codes
                .get(v)
                .cloned()
                .unwrap_or_else(|| v.to_owned()),
        )
    }

    fn record(&self, canonical: Vec<(&str, Value)>) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.cfg.constants {
            m.insert(k.clone(), Value::String(v.clone()));
        }
        for (k, v) in canonical {
            let name = match self.cfg.fields.get(k) {
                Some(n) => n.as_str(),
                // Every alarm record says what happened (event type), mapped or not.
                None if k == "transition" => self.cfg.transition_field(),
                None => continue,
            };
            let blank = v.is_null() || v.as_str().is_some_and(str::is_empty);
            match (blank, self.cfg.empty_fields) {
                (false, _) => {
                    m.insert(name.to_owned(), v);
                }
                (true, EmptyFields::Empty) => {
                    m.insert(name.to_owned(), Value::String(String::new()));
                }
                (true, EmptyFields::Omit) => {}
            }
        }
        Value::Object(m)
    }

    /// The records of a notification, with canonical names mapped.
    pub fn records(&self, n: &Notification) -> Vec<Value> {
        let mut out = Vec::new();
        for e in &n.events {
            let p = self.points.get(e.channel.as_str());
            let unit = self
                .ctx
                .channels
                .load()
                .get(&e.channel)
                .map(|c| c.unit.to_string())
                .unwrap_or_default();
            // The raise time of the episode on every record of it; a transition outside an
            // episode has none (left out or empty, by `empty_fields`).
            let alarm_time = match e.transition {
                Transition::Raised | Transition::Fault => Some(e.raised_at.unwrap_or(e.ts)),
                _ => e.raised_at,
            };
            let alarm_type = match e.class {
                AlarmClass::Fault => "fault",
                AlarmClass::System => "system",
                AlarmClass::Process => e.condition.as_str(),
            };
            out.push(self.record(vec![
                ("record_type", self.code("alarm")),
                ("site", json!(self.ctx.site)),
                ("tag", json!(p.map_or("", |p| p.tag.as_str()))),
                ("indicator", json!(p.map_or("", |p| p.indicator.as_str()))),
                (
                    "hazard_source",
                    json!(p.map_or("", |p| p.hazard_source.as_str())),
                ),
                ("channel", json!(e.channel)),
                ("value", json!(e.value)),
                ("unit", json!(unit)),
                ("limit", json!(e.limit)),
                ("limit_name", self.code(&e.condition)),
                ("alarm_type", self.code(alarm_type)),
                (
                    "transition",
                    json!(self.cfg.transition_code(e.transition.as_str())),
                ),
                (
                    "priority",
                    self.code(&format!("{:?}", e.priority).to_lowercase()),
                ),
                ("state", self.code(e.state.as_str())),
                ("time", json!(cst(e.ts))),
                ("alarm_time", json!(alarm_time.map(cst))),
                ("event_time", json!(cst(e.ts))),
                ("handled_by", json!(e.by)),
                ("handling_result", json!(e.comment)),
                ("idempotency_key", json!(n.key)),
            ]));
        }
        for v in &n.values {
            let p = self.points.get(&v.channel);
            out.push(self.record(vec![
                ("record_type", self.code("value")),
                ("site", json!(self.ctx.site)),
                ("tag", json!(p.map_or("", |p| p.tag.as_str()))),
                ("indicator", json!(p.map_or("", |p| p.indicator.as_str()))),
                (
                    "hazard_source",
                    json!(p.map_or("", |p| p.hazard_source.as_str())),
                ),
                ("channel", json!(v.channel)),
                ("value", json!(v.value)),
                ("unit", json!(v.unit)),
                ("state", self.code(&v.quality)),
                ("time", json!(v.ts.map(cst))),
                ("idempotency_key", json!(n.key)),
            ]));
        }
        out
    }

    /// The bytes sent: the records, encrypted and wrapped when SM4 is configured (signed with
    /// the current time when `sign` is).
    pub fn payload(&self, n: &Notification) -> Result<Vec<u8>, String> {
        self.payload_at(n, SystemTime::now())
    }

    /// [`Self::payload`] with the signature's timestamp given.
    pub fn payload_at(&self, n: &Notification, now: SystemTime) -> Result<Vec<u8>, String> {
        let mut recs = self.records(n);
        let plain = if recs.len() == 1 {
            recs.remove(0)
        } else {
            Value::Array(recs)
        };
        let plain = serde_json::to_vec(&plain).map_err(|e| e.to_string())?;
        match &self.sm4 {
            None => Ok(plain),
            Some(Sm4Key(k, fixed)) => {
                let Some(c) = self.cfg.sm4.as_ref() else {
                    return Err("sm4 keys without sm4 settings".into());
                };
                // A fresh IV per message in random mode (sent with it), else the fixed one.
                let (iv, sent_iv) = match fixed {
                    Some(iv) => (*iv, None),
                    None => {
                        let iv: [u8; 16] = rand::random();
                        (iv, Some(iv))
                    }
                };
                let ct = sm4_cbc_encrypt(k, &iv, &plain);
                let text = |b: &[u8]| match c.encoding {
                    CipherEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(b),
                    CipherEncoding::Hex => lower_hex(b),
                };
                let data = text(&ct);
                let mut env = Map::new();
                env.insert("appId".into(), json!(self.cfg.app_id));
                env.insert("data".into(), json!(data));
                let iv_text = sent_iv.map(|iv| text(&iv));
                if let Some(t) = &iv_text {
                    env.insert(c.iv_field.clone(), json!(t));
                }
                if let (Some(key), Some(s)) = (&self.sign, &self.cfg.sign) {
                    let ts = now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or(0)
                        .to_string();
                    let msg = format!(
                        "{}{ts}{}{data}",
                        self.cfg.app_id.as_deref().unwrap_or(""),
                        iv_text.as_deref().unwrap_or("")
                    );
                    env.insert(s.timestamp_field.clone(), json!(ts));
                    env.insert(
                        s.sign_field.clone(),
                        json!(envelope_sign(s.algorithm, &key.0, msg.as_bytes())),
                    );
                }
                serde_json::to_vec(&Value::Object(env)).map_err(|e| e.to_string())
            }
        }
    }

    /// One delivery attempt.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        n: &Notification,
        timeout: Duration,
    ) -> Result<(), String> {
        let body = self.payload(n)?;
        if let Some(m) = &self.mqtt {
            let topic = m.topic.replace("{site}", &self.ctx.site);
            return m.publish(&topic, body, timeout).await;
        }
        let Some(url) = &self.cfg.url else {
            return Err("no url".into());
        };
        let mut req = client
            .post(url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &n.key);
        if let Some(a) = &self.cfg.app_id {
            req = req.header(&self.cfg.app_id_header, a);
        }
        let resp = req.body(body).send().await.map_err(http_error)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", resp.status()))
        }
    }
}

/// Lower-case hexadecimal.
fn lower_hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// `%Y-%m-%d %H:%M:%S` in China Standard Time (UTC+8, no daylight saving).
pub fn cst(t: SystemTime) -> String {
    let off = chrono::FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!());
    chrono::DateTime::<chrono::Utc>::from(t)
        .with_timezone(&off)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Every `interval`, a report of the registered points' current values goes into the outbox.
pub async fn report_loop(
    cfg: RegulatorReceiver,
    interval: Duration,
    site: String,
    state: Arc<SharedState>,
    outbox: Arc<Outbox>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let wanted: HashMap<&str, ()> = cfg
            .points
            .iter()
            .map(|p| (p.channel.as_str(), ()))
            .collect();
        let values: Vec<ReportValue> = state
            .channels()
            .into_iter()
            .filter(|c| wanted.contains_key(c.id.as_str()))
            .map(|c| ReportValue {
                channel: c.id.to_string(),
                value: c.value,
                unit: c.unit.to_string(),
                quality: c.quality.to_owned(),
                ts: c.ts,
            })
            .collect();
        if values.is_empty() {
            continue;
        }
        let wall = SystemTime::now();
        let secs = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let n = Notification {
            key: format!("{site}-report-{}-{secs}", cfg.id),
            receiver: cfg.id.clone(),
            route: "report".into(),
            reason: Reason::Report,
            tier: 1,
            call: vec![],
            events: vec![],
            values,
            priority: Priority::Low,
            created: wall,
            expires: wall + cfg.delivery.expire_after,
        };
        super::dispatch::store(&outbox, vec![n], None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm4_matches_the_gbt_32907_test_vector() {
        let key = parse_key("0123456789abcdeffedcba9876543210").expect("key");
        let plain = key;
        // CBC with a zero IV encrypts the first block exactly as the block cipher does.
        let ct = sm4_cbc_encrypt(&key, &[0; 16], &plain);
        assert_eq!(ct.len(), 32, "a full block of PKCS#7 padding follows");
        assert_eq!(
            super::super::deliver::hex(&ct[..16]),
            "681edf34d206965e86b3e94f536e4246"
        );
        assert_eq!(
            sm4_cbc_decrypt(&key, &[0; 16], &ct).as_deref(),
            Some(&plain[..])
        );
    }

    #[test]
    fn sm4_cbc_pads_and_chains() {
        let key = parse_key("0123456789abcdeffedcba9876543210").expect("key");
        let iv = parse_key("000102030405060708090a0b0c0d0e0f").expect("iv");
        let msg = br#"{"tag":"LT-101","value":3.2}"#;
        let ct = sm4_cbc_encrypt(&key, &iv, msg);
        assert_eq!(ct.len(), 32);
        assert_ne!(ct, sm4_cbc_encrypt(&key, &[0; 16], msg), "the IV matters");
        assert_eq!(sm4_cbc_decrypt(&key, &iv, &ct).as_deref(), Some(&msg[..]));
        assert!(parse_key("0123").is_none());
        assert!(parse_key("zz23456789abcdeffedcba9876543210").is_none());
    }

    #[test]
    fn envelope_signatures_match_known_answers() {
        // RFC 4231 test case 2 (HMAC-SHA256).
        assert_eq!(
            envelope_sign(
                SignAlgorithm::HmacSha256,
                b"Jefe",
                b"what do ya want for nothing?"
            ),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // SM3 (GB/T 32905-2016, example 1: "abc") through HMAC's own definition:
        // HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)), here recomputed with the sm3 crate's
        // plain hash, whose "abc" digest is the standard's.
        use sm3::Digest;
        assert_eq!(
            super::super::deliver::hex(&sm3::Sm3::digest(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        let key = b"k";
        let mut block = [0u8; 64];
        block[..key.len()].copy_from_slice(key);
        let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let inner = sm3::Sm3::digest([&ipad[..], b"m"].concat());
        let outer = sm3::Sm3::digest([&opad[..], &inner[..]].concat());
        assert_eq!(
            envelope_sign(SignAlgorithm::HmacSm3, key, b"m"),
            super::super::deliver::hex(&outer)
        );
    }

    #[test]
    fn china_standard_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(cst(t), "2023-11-15 06:13:20");
    }
}
