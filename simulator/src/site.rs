//! The site spec: which Modbus TCP listeners to open, which devices (unit ids) answer behind
//! each, their device maps and the signal driving each point.
//!
//! ```toml
//! seed = 1            # default 0; all randomness derives from it
//! speed = 1.0         # simulated seconds per real second, default 1
//! start_time = "09:00"  # site time of day at t = 0 (for `daily` profiles), default 00:00
//! mqtt_url = "mqtt://127.0.0.1:1883"   # broker of the publishers; usually set at start
//!
//! [[listeners]]
//! id = "rs485-1"
//! listen = "127.0.0.1:5020"     # default "127.0.0.1:0" (any free port)
//!
//! [[listeners.devices]]
//! id = "gd101"                  # unique in the site; the SimHandle addresses devices by it
//! unit_id = 1                   # 1..=255, unique per listener
//! map = "../config/maps/gas-4-20ma.toml"   # relative to the spec file, or:
//! # map_id = "gas-4-20ma"       # a map supplied programmatically or built in
//! signals.lel = { sine = { base = 12, amplitude = 18, period = "90s" }, noise = 0.3 }
//! vars.inflow = { constant = 0 }  # hidden variables, read by `integral` signals
//!
//! [[publishers]]                # an MQTT data unit (4G DTU)
//! id = "dtu1"
//! style = "json"                # number | json | object (see crate::mqtt)
//! topic_prefix = "demo/dtu1/workshop"
//! interval = "1s"               # simulated time
//! [[publishers.devices]]        # same shape as listener devices; unit_id is not used
//! id = "gt201"
//! map_id = "gas-toxic"
//! signals.h2s = { random_walk = { start = 1, step = 0.1, min = 0, max = 3 } }
//! ```
//!
//! A listener speaks Modbus TCP by default; `protocol = "rtu_over_tcp"` serves RTU frames on the
//! TCP listener (a transparent serial-to-TCP converter), `protocol = "rtu_pty"` serves RTU on an
//! in-process pseudo-terminal pair (the other end's path is in [`crate::RunningSim::serial_ports`]),
//! and `protocol = "rtu"` with `serial = "/dev/..."` serves RTU on that serial device.
//!
//! Signal shapes are documented in [`crate::signal`]. Points without a signal hold engineering
//! 0 (clamped into their `range`/span), or the low end of `valid` if that raw value is invalid.
//!
//! Invariants checked by [`SiteSpec::validate`] (parsing runs it): at least one listener,
//! unique listener ids, unique device ids across the site, unique non-zero unit ids per
//! listener, exactly one of `map`/`map_id`, `speed` finite and > 0. Map references and signal
//! names are checked when the site is resolved against its maps (at start).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::devmap::{DeviceMap, MapError};
use crate::signal::{Signal, SignalKind};

/// Payload style of a publisher.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// A plain number per point.
    Number,
    /// A JSON object with `value`, `ts` and `status` per point.
    #[default]
    Json,
    /// One JSON object per device with a member per point.
    Object,
}

/// Errors from loading, validating or resolving a site spec.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// The spec file could not be read.
    #[error("reading site spec {path}: {source}")]
    Io {
        /// File that failed.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Malformed TOML or a wrongly typed/unknown field.
    #[error("parsing site spec: {0}")]
    Parse(#[from] toml::de::Error),
    /// A referenced device map failed to load.
    #[error(transparent)]
    Map(#[from] MapError),
    /// The spec violates an invariant (see the module docs).
    #[error("invalid site spec: {0}")]
    Invalid(String),
}

/// A simulated site.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Master seed for all random signals.
    #[serde(default)]
    pub seed: u64,
    /// Simulated seconds per real second.
    #[serde(default = "one")]
    pub speed: f64,
    /// Time of day at t = 0 (`"HH:MM"`), for day/night profiles.
    #[serde(default, deserialize_with = "crate::signal::de_time_of_day_opt")]
    pub start_time: Option<std::time::Duration>,
    /// `mqtt://host:port` (or `host:port`) of the broker the publishers publish to; publishers
    /// do not run without it.
    #[serde(default)]
    pub mqtt_url: Option<String>,
    /// Modbus listeners (e.g. one per serial-to-TCP converter).
    #[serde(default)]
    pub listeners: Vec<ListenerSpec>,
    /// MQTT publishers (data units).
    #[serde(default)]
    pub publishers: Vec<PublisherSpec>,
}

/// An MQTT data unit publishing the values of its devices.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PublisherSpec {
    /// Publisher id (also its MQTT client id, prefixed `hazgate-sim-`).
    pub id: String,
    /// Payload style.
    #[serde(default)]
    pub style: Style,
    /// Topics start with this (no trailing `/`).
    pub topic_prefix: String,
    /// Publication period in simulated time.
    #[serde(
        default = "one_second",
        deserialize_with = "crate::signal::de_duration"
    )]
    pub interval: std::time::Duration,
    /// The devices behind the data unit.
    pub devices: Vec<DeviceSpec>,
}

fn one_second() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

fn one() -> f64 {
    1.0
}

fn any_port() -> String {
    "127.0.0.1:0".into()
}

/// One Modbus TCP listener and the unit ids behind it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    /// Listener id, reported with the bound address.
    pub id: String,
    /// Address to bind, `host:port`; port 0 picks a free port.
    #[serde(default = "any_port")]
    pub listen: String,
    /// Devices answering on this listener.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    /// Framing and transport; Modbus TCP by default.
    #[serde(default)]
    pub protocol: Protocol,
    /// Serial device for `protocol = "rtu"`.
    #[serde(default)]
    pub serial: Option<String>,
}

/// How a listener talks to the gateway.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Modbus TCP (MBAP header) on `listen`.
    #[default]
    Tcp,
    /// RTU frames on the TCP listener `listen`.
    RtuOverTcp,
    /// RTU on an in-process pseudo-terminal pair.
    RtuPty,
    /// RTU on the serial device `serial`.
    Rtu,
}

/// One simulated device.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Device id, unique in the site.
    pub id: String,
    /// Modbus unit id (slave id); unused behind a publisher.
    #[serde(default)]
    pub unit_id: u8,
    /// Map file, relative to the spec file's directory.
    pub map: Option<PathBuf>,
    /// Id of a map supplied programmatically or built in.
    pub map_id: Option<String>,
    /// Signal per register name.
    #[serde(default)]
    pub signals: BTreeMap<String, Signal>,
    /// Hidden variables (not registers) that `integral` signals read and scenarios set.
    #[serde(default)]
    pub vars: BTreeMap<String, Signal>,
}

impl SiteSpec {
    /// Parses and validates a spec.
    pub fn from_toml_str(text: &str) -> Result<Self, SiteError> {
        let spec: SiteSpec = toml::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads, parses and validates a spec file. Relative `map` paths resolve against its
    /// directory (pass `path.parent()` as `base_dir` to [`crate::start`]).
    pub fn load(path: &Path) -> Result<Self, SiteError> {
        let text = std::fs::read_to_string(path).map_err(|source| SiteError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Checks the structural invariants (see the module docs). Call again after editing a
    /// spec in code; [`crate::start`] does.
    pub fn validate(&self) -> Result<(), SiteError> {
        let bad = |m: String| Err(SiteError::Invalid(m));
        if !self.speed.is_finite() || self.speed <= 0.0 {
            return bad(format!("speed must be > 0, got {}", self.speed));
        }
        if self.listeners.is_empty() && self.publishers.is_empty() {
            return bad("no listeners and no publishers".into());
        }
        let mut publisher_ids = HashSet::new();
        for p in &self.publishers {
            if !publisher_ids.insert(&p.id) {
                return bad(format!("duplicate publisher id {:?}", p.id));
            }
            if p.interval.is_zero() {
                return bad(format!("publisher {:?}: interval must be > 0", p.id));
            }
            if p.topic_prefix.is_empty() || p.topic_prefix.ends_with('/') {
                return bad(format!(
                    "publisher {:?}: topic_prefix must be non-empty without a trailing /",
                    p.id
                ));
            }
        }
        let mut listener_ids = HashSet::new();
        let mut device_ids = HashSet::new();
        for d in self.publishers.iter().flat_map(|p| &p.devices) {
            if !device_ids.insert(&d.id) {
                return bad(format!("duplicate device id {:?}", d.id));
            }
            if d.map.is_some() == d.map_id.is_some() {
                return bad(format!(
                    "device {:?}: set exactly one of `map` and `map_id`",
                    d.id
                ));
            }
        }
        for l in &self.listeners {
            if !listener_ids.insert(&l.id) {
                return bad(format!("duplicate listener id {:?}", l.id));
            }
            if (l.protocol == Protocol::Rtu) != l.serial.is_some() {
                return bad(format!(
                    "listener {:?}: `serial` is required with protocol \"rtu\" and only with it",
                    l.id
                ));
            }
            let mut units = HashSet::new();
            for d in &l.devices {
                if !device_ids.insert(&d.id) {
                    return bad(format!("duplicate device id {:?}", d.id));
                }
                if d.unit_id == 0 {
                    return bad(format!("device {:?}: unit_id 0 is broadcast", d.id));
                }
                if !units.insert(d.unit_id) {
                    return bad(format!(
                        "listener {:?}: unit_id {} used twice",
                        l.id, d.unit_id
                    ));
                }
                if d.map.is_some() == d.map_id.is_some() {
                    return bad(format!(
                        "device {:?}: set exactly one of `map` and `map_id`",
                        d.id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Resolves every device's map (files under `base_dir`, then `maps`, then `builtin` by id)
    /// and checks that every signal names a register or variable of it and that integrals read
    /// existing, non-integral points. Returns maps in listener/device order, then one row per
    /// publisher.
    pub(crate) fn resolve_maps(
        &self,
        base_dir: &Path,
        maps: &[DeviceMap],
        builtin: &[DeviceMap],
    ) -> Result<Vec<Vec<Arc<DeviceMap>>>, SiteError> {
        let mut files: HashMap<PathBuf, Arc<DeviceMap>> = HashMap::new();
        let rows = self
            .listeners
            .iter()
            .map(|l| &l.devices)
            .chain(self.publishers.iter().map(|p| &p.devices));
        let mut out = Vec::new();
        for devices in rows {
            let mut row = Vec::new();
            for d in devices {
                let map = match (&d.map, &d.map_id) {
                    (Some(path), _) => {
                        let path = base_dir.join(path);
                        match files.get(&path) {
                            Some(m) => m.clone(),
                            None => {
                                let m = Arc::new(DeviceMap::load(&path)?);
                                files.insert(path, m.clone());
                                m
                            }
                        }
                    }
                    (None, Some(id)) => maps
                        .iter()
                        .chain(builtin)
                        .find(|m| &m.id == id)
                        .map(|m| Arc::new(m.clone()))
                        .ok_or_else(|| {
                            SiteError::Invalid(format!("device {:?}: unknown map_id {id:?}", d.id))
                        })?,
                    (None, None) => {
                        return Err(SiteError::Invalid(format!("device {:?}: no map", d.id)));
                    }
                };
                check_points(d, &map)?;
                row.push(map);
            }
            out.push(row);
        }
        Ok(out)
    }
}

/// Signals name registers, variables do not shadow registers, integrals read existing
/// non-integral points.
fn check_points(d: &DeviceSpec, map: &DeviceMap) -> Result<(), SiteError> {
    let bad = |m: String| Err(SiteError::Invalid(format!("device {:?}: {m}", d.id)));
    if let Some(name) = d.signals.keys().find(|n| map.register(n).is_none()) {
        return bad(format!("map {:?} has no register {name:?}", map.id));
    }
    if let Some(name) = d.vars.keys().find(|n| map.register(n).is_some()) {
        return bad(format!("variable {name:?} has the name of a register"));
    }
    let is_integral = |n: &str| {
        d.signals
            .get(n)
            .or(d.vars.get(n))
            .is_some_and(|s| matches!(s.kind, SignalKind::Integral(_)))
    };
    for (name, sig) in d.signals.iter().chain(&d.vars) {
        if let SignalKind::Integral(i) = &sig.kind {
            for (of, _) in &i.of {
                if map.register(of).is_none() && !d.vars.contains_key(of) {
                    return bad(format!("integral {name:?} reads unknown point {of:?}"));
                }
                if is_integral(of) {
                    return bad(format!(
                        "integral {name:?} reads {of:?}, itself an integral"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const OK: &str = r#"
        [[listeners]]
        id = "a"
        [[listeners.devices]]
        id = "d1"
        unit_id = 1
        map_id = "m"
        signals.x = { constant = 3 }
    "#;

    fn map() -> DeviceMap {
        DeviceMap::from_toml_str("id='m'\n[[registers]]\nname='x'\ntable='input'\naddress=0")
            .unwrap()
    }

    #[test]
    fn defaults_and_resolution() {
        let s = SiteSpec::from_toml_str(OK).unwrap();
        assert_eq!((s.seed, s.speed), (0, 1.0));
        assert_eq!(s.listeners[0].listen, "127.0.0.1:0");
        let maps = s.resolve_maps(Path::new("."), &[map()], &[]).unwrap();
        assert_eq!(maps[0][0].id, "m");
        assert!(s.resolve_maps(Path::new("."), &[], &[]).is_err());
        let bad_signal = OK.replace("signals.x", "signals.y");
        let s = SiteSpec::from_toml_str(&bad_signal).unwrap();
        let err = s.resolve_maps(Path::new("."), &[], &[map()]).unwrap_err();
        assert!(err.to_string().contains("no register \"y\""), "{err}");
        let integral = format!(
            "{OK}vars.q = {{ constant = 1 }}\nvars.i = {{ integral = {{ of = {{ q = 1 }} }} }}\n"
        );
        let s = SiteSpec::from_toml_str(&integral).unwrap();
        s.resolve_maps(Path::new("."), &[map()], &[]).unwrap();
        for (text, needle) in [
            (integral.replace("of = { q", "of = { z"), "unknown point"),
            (
                integral.replace("of = { q", "of = { i"),
                "itself an integral",
            ),
            (integral.replace("vars.q", "vars.x"), "name of a register"),
        ] {
            let s = SiteSpec::from_toml_str(&text).unwrap();
            let err = s.resolve_maps(Path::new("."), &[map()], &[]).unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "{err} should contain {needle}"
            );
        }
    }

    #[test]
    fn map_paths_are_relative_to_base_dir() {
        let text = OK
            .replace("map_id = \"m\"", "map = \"../config/maps/gas-4-20ma.toml\"")
            .replace("signals.x", "signals.lel");
        let s = SiteSpec::from_toml_str(&text).unwrap();
        let maps = s
            .resolve_maps(Path::new(env!("CARGO_MANIFEST_DIR")), &[], &[])
            .unwrap();
        assert_eq!(maps[0][0].id, "gas-4-20ma");
    }

    #[test]
    fn rejects_invalid_specs() {
        let dup_unit = format!("{OK}\n[[listeners.devices]]\nid='d2'\nunit_id=1\nmap_id='m'\n");
        let dup_dev = format!(
            "{OK}\n[[listeners]]\nid='b'\n[[listeners.devices]]\nid='d1'\nunit_id=1\nmap_id='m'\n"
        );
        for (text, needle) in [
            (dup_unit.as_str(), "used twice"),
            (dup_dev.as_str(), "duplicate device"),
            ("listeners = []", "no listeners and no publishers"),
            (&format!("speed = 0\n{OK}"), "speed"),
            (&OK.replace("unit_id = 1", "unit_id = 0"), "broadcast"),
            (&OK.replace("map_id = \"m\"", ""), "exactly one"),
            (&OK.replace("map_id", "mapid"), "unknown field"),
        ] {
            let err = SiteSpec::from_toml_str(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }
}
