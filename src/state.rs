//! Snapshots the API reads: channel values (written only by the rule engine), device health
//! (written by pollers) and component health. Locks are std mutexes held only for copies, never
//! across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::Serialize;

use crate::config::Resolved;
use crate::model::{ChannelId, DeviceId, Reading, Sample};
use crate::telemetry::Health;

/// Latest state of one channel. Its texts are shared: equal ones (a kind, a unit, an area) are
/// one allocation, and a copy of the snapshot copies no text.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelSnapshot {
    /// Channel id.
    pub id: ChannelId,
    /// Kind.
    pub kind: Arc<str>,
    /// Unit.
    pub unit: Arc<str>,
    /// Area.
    pub area: Arc<str>,
    /// The area's display name (`[[areas]]`), else its id.
    pub area_name: Arc<str>,
    /// Device.
    pub device: DeviceId,
    /// The device's display name, empty when none is configured.
    pub device_name: Arc<str>,
    /// Label.
    pub label: Arc<str>,
    /// Last good value; `null` when the last reading was bad.
    pub value: Option<f64>,
    /// Time of the last reading.
    #[serde(with = "humantime_serde")]
    pub ts: Option<SystemTime>,
    /// `good`, `bad`, or `unknown` before the first reading.
    pub quality: &'static str,
    /// Why the reading is bad.
    pub reason: Option<String>,
    /// The short reason (`comm`, `stale`, `out_of_range`, …), for translated texts.
    pub reason_kind: Option<&'static str>,
    /// Active alarm conditions (`H`, `HH`, `fault`, …).
    pub alarms: Vec<String>,
    /// The channel's maximum age in milliseconds: a reading older than this is stale, and the
    /// status page greys it out even before the engine's stale fault arrives.
    pub max_age_ms: u64,
    /// Words for the channel's values (`"0": "停止"`); left out when none are configured.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub states: BTreeMap<i64, String>,
}

/// The engine's pulse: written on every engine tick, so a stalled engine stops it. The live
/// stream forwards it as a `heartbeat` event, and the status page declares communication lost
/// when none arrives within [`HEARTBEAT_DEADLINE`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    /// Ticks so far (0: the engine has not ticked yet).
    pub seq: u64,
    /// Wall time of the tick (RFC 3339 UTC).
    #[serde(with = "humantime_serde")]
    pub ts: Option<SystemTime>,
}

/// How long the status page waits for the next heartbeat before it declares communication
/// lost (the engine ticks every 500 ms and the stream forwards at most one beat a second).
pub const HEARTBEAT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Who the site is, for people: display name, time zone and alert language.
#[derive(Clone, Debug, Serialize)]
pub struct SiteInfo {
    /// Site id.
    pub id: String,
    /// Display name (the id when none is configured).
    pub name: String,
    /// IANA time zone every time shown to people is in.
    pub timezone: String,
    /// Language of alert texts.
    pub language: crate::i18n::Language,
}

/// Health of one polled device.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeviceHealth {
    /// Source it hangs on.
    pub source: String,
    /// Unit id.
    pub unit_id: u8,
    /// Last poll with at least one answer.
    #[serde(with = "humantime_serde")]
    pub last_success: Option<SystemTime>,
    /// Polls without any answer in a row.
    pub consecutive_failures: u32,
    /// Latency of the last successful poll.
    pub latency_ms: Option<f64>,
    /// Requests answered with an exception (one per request, whatever it served).
    pub exceptions: u64,
    /// The last error, if the last poll had one.
    pub last_error: Option<String>,
}

/// State shared between the pipeline and the API.
#[derive(Debug)]
pub struct SharedState {
    /// Site id.
    pub site: String,
    /// Display name, time zone and language.
    pub site_info: SiteInfo,
    /// The engine's heartbeat ([`SharedState::beat`]).
    heartbeat: tokio::sync::watch::Sender<Heartbeat>,
    /// Component readiness.
    pub health: Health,
    channels: RwLock<Table>,
    devices: Mutex<BTreeMap<DeviceId, DeviceHealth>>,
}

impl SharedState {
    /// Creates the snapshot table for every configured channel.
    pub fn new(cfg: &Resolved) -> Self {
        let table = Table::of(rows(cfg));
        let site_info = SiteInfo {
            id: cfg.site.id.clone(),
            name: if cfg.site.name.is_empty() {
                cfg.site.id.clone()
            } else {
                cfg.site.name.clone()
            },
            timezone: cfg.site_zone().name().to_owned(),
            language: cfg.site.language,
        };
        Self {
            site: cfg.site.id.clone(),
            site_info,
            heartbeat: tokio::sync::watch::Sender::new(Heartbeat::default()),
            health: Health::default(),
            channels: RwLock::new(table),
            devices: Mutex::new(BTreeMap::new()),
        }
    }

    /// The device of a channel and its display name (empty when none is configured).
    pub fn device_of(&self, channel: &ChannelId) -> Option<(DeviceId, String)> {
        let t = self
            .channels
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let i = *t.index.get(channel)?;
        t.rows
            .get(i)
            .map(|c| (c.device.clone(), c.device_name.to_string()))
    }

    /// Records a sample (called by the rule engine only).
    pub fn record(&self, s: &Sample, alarms: Vec<String>) {
        let mut t = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let Some(&i) = t.index.get(&s.channel) else {
            return;
        };
        set_reading(&mut t.rows[i], s, alarms);
    }

    /// [`SharedState::record`] for every sample of an engine step, under one lock; `alarms`
    /// gives a channel's active conditions after the step.
    pub fn record_all(&self, samples: &[Sample], alarms: impl Fn(&ChannelId) -> Vec<String>) {
        if samples.is_empty() {
            return;
        }
        let mut t = self.channels.write().unwrap_or_else(|e| e.into_inner());
        for s in samples {
            let Some(&i) = t.index.get(&s.channel) else {
                continue;
            };
            set_reading(&mut t.rows[i], s, alarms(&s.channel));
        }
    }

    /// A copy of every channel.
    pub fn channels(&self) -> Vec<ChannelSnapshot> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .rows
            .clone()
    }

    /// After a configuration reload (engine only): the table holds the new configuration's
    /// channels with their new metadata; a channel that still exists keeps its latest reading
    /// and alarms. Devices that no channel names any more leave the device health list.
    pub fn retable(&self, cfg: &Resolved) {
        let mut rows = rows(cfg);
        {
            let t = self.channels.read().unwrap_or_else(|e| e.into_inner());
            for r in &mut rows {
                if let Some(&i) = t.index.get(&r.id) {
                    let o = &t.rows[i];
                    r.value = o.value;
                    r.ts = o.ts;
                    r.quality = o.quality;
                    r.reason = o.reason.clone();
                    r.reason_kind = o.reason_kind;
                    r.alarms = o.alarms.clone();
                }
            }
        }
        let devices: std::collections::HashSet<&DeviceId> =
            rows.iter().map(|r| &r.device).collect();
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| devices.contains(id));
        *self.channels.write().unwrap_or_else(|e| e.into_inner()) = Table::of(rows);
    }

    /// Updates one device's health.
    pub fn update_device(&self, id: &DeviceId, f: impl FnOnce(&mut DeviceHealth)) {
        let mut d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        f(d.entry(id.clone()).or_default());
    }

    /// A copy of every device's health.
    pub fn devices(&self) -> BTreeMap<DeviceId, DeviceHealth> {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl SharedState {
    /// The engine's tick (engine only): one more heartbeat.
    pub fn beat(&self, at: SystemTime) {
        self.heartbeat.send_modify(|h| {
            h.seq += 1;
            h.ts = Some(at);
        });
    }

    /// The latest heartbeat.
    pub fn heartbeat(&self) -> Heartbeat {
        *self.heartbeat.borrow()
    }

    /// Updates only the active alarm list of a channel.
    pub fn record_alarms(&self, id: &ChannelId, alarms: Vec<String>) {
        let mut t = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let Some(&i) = t.index.get(id) else {
            return;
        };
        t.rows[i].alarms = alarms;
    }
}

/// The channel snapshots and their index by id (replaced whole on a reload).
#[derive(Debug)]
struct Table {
    index: HashMap<ChannelId, usize>,
    rows: Vec<ChannelSnapshot>,
}

impl Table {
    fn of(rows: Vec<ChannelSnapshot>) -> Self {
        let index = rows
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        Self { index, rows }
    }
}

/// A fresh snapshot row for every configured channel ("unknown" before its first reading).
fn rows(cfg: &Resolved) -> Vec<ChannelSnapshot> {
    let mut pool = crate::model::TextPool::default();
    let mut text = |s: &str| pool.get(s);
    cfg.channels
        .iter()
        .map(|c| ChannelSnapshot {
            id: c.id.clone(),
            kind: text(&c.kind),
            unit: text(&c.unit),
            area: text(&c.area),
            area_name: text(cfg.area_name(&c.area)),
            device: c.device.clone(),
            device_name: text(&c.device_name),
            label: text(&c.label),
            value: None,
            ts: None,
            quality: "unknown",
            reason: None,
            reason_kind: None,
            alarms: Vec::new(),
            max_age_ms: u64::try_from(c.max_age.as_millis()).unwrap_or(u64::MAX),
            states: c.states.clone(),
        })
        .collect()
}

fn set_reading(c: &mut ChannelSnapshot, s: &Sample, alarms: Vec<String>) {
    c.ts = Some(s.ts);
    match &s.reading {
        Reading::Good(v) => {
            c.value = Some(*v);
            c.quality = "good";
            c.reason = None;
            c.reason_kind = None;
        }
        Reading::Bad(r) => {
            c.value = None;
            c.quality = "bad";
            c.reason = Some(r.to_string());
            c.reason_kind = Some(r.kind());
        }
    }
    c.alarms = alarms;
}
