//! `hazgate-sim`: a simulated industrial site for hazgate: Modbus TCP devices whose points
//! follow deterministic signals, with fault primitives for tests, demos and scenarios.
//!
//! Module map:
//! - [`devmap`]: the shared device-map format (`config/maps/*.toml`), own parser.
//! - [`encode`]: engineering value → raw → register words/bits; exact inverse of the gateway's
//!   decoder, plus the raw path used to inject out-of-range values and fault codes.
//! - [`signal`]: seeded signal generators evaluated as `f(simulated time)`.
//! - [`site`]: the site spec (listeners, devices, maps, signals) and its validation.
//! - [`control`]: live state and [`SimHandle`] (overrides, ramps, silent/exception/delay/
//!   swapped-words faults, silent publishers).
//! - `modbus`: the Modbus TCP service (one listener, many unit ids).
//! - [`mqtt`]: MQTT publishers (data units) in the payload styles hazgate accepts.
//! - [`scenario`]: scenario files (events over simulated time, expected alarm timeline) and
//!   their runner.
//!
//! Entry point: [`start`] / [`start_with_maps`] bind every listener and return a
//! [`RunningSim`]. [`demo_spec`] is the built-in demo site (`sites/demo.toml`).
//! No global state: everything lives behind the [`SimHandle`] of one running simulation.

pub mod control;
pub mod devmap;
pub mod encode;
mod modbus;
pub mod mqtt;
pub mod scenario;
pub mod signal;
pub mod site;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use control::{ControlError, SimHandle};
pub use devmap::DeviceMap;
pub use scenario::{GatewayAction, Scenario};
pub use signal::{Signal, SignalKind};
pub use site::{DeviceSpec, ListenerSpec, Protocol, PublisherSpec, SiteError, SiteSpec};

use control::{Device, SimState};

/// The demo site spec, as TOML (`simulator/sites/demo.toml`).
pub const DEMO_SITE_TOML: &str = include_str!("../sites/demo.toml");

/// The shared device maps compiled into the simulator (`config/maps/*.toml`), as
/// `(file name, TOML text)`.
pub const BUILTIN_MAP_FILES: [(&str, &str); 9] = [
    (
        "dust-collector.toml",
        include_str!("../../config/maps/dust-collector.toml"),
    ),
    (
        "dust-collector-wet.toml",
        include_str!("../../config/maps/dust-collector-wet.toml"),
    ),
    (
        "gas-lel.toml",
        include_str!("../../config/maps/gas-lel.toml"),
    ),
    ("gas-o2.toml", include_str!("../../config/maps/gas-o2.toml")),
    (
        "gas-toxic-h2s.toml",
        include_str!("../../config/maps/gas-toxic-h2s.toml"),
    ),
    (
        "line-status.toml",
        include_str!("../../config/maps/line-status.toml"),
    ),
    (
        "gas-4-20ma.toml",
        include_str!("../../config/maps/gas-4-20ma.toml"),
    ),
    (
        "power-meter.toml",
        include_str!("../../config/maps/power-meter.toml"),
    ),
    (
        "tank-radar.toml",
        include_str!("../../config/maps/tank-radar.toml"),
    ),
];

/// The shipped scenarios (`simulator/scenarios/*.toml`), as `(name, TOML text)`, sorted.
pub const SCENARIO_FILES: [(&str, &str); 13] = [
    (
        "data-unit-silent",
        include_str!("../scenarios/data-unit-silent.toml"),
    ),
    ("demo", include_str!("../scenarios/demo.toml")),
    (
        "device-silent",
        include_str!("../scenarios/device-silent.toml"),
    ),
    ("device-slow", include_str!("../scenarios/device-slow.toml")),
    (
        "dust-collector-stops",
        include_str!("../scenarios/dust-collector-stops.toml"),
    ),
    ("exception", include_str!("../scenarios/exception.toml")),
    ("gas-leak", include_str!("../scenarios/gas-leak.toml")),
    ("line-break", include_str!("../scenarios/line-break.toml")),
    (
        "mqtt-incidents",
        include_str!("../scenarios/mqtt-incidents.toml"),
    ),
    (
        "night-power-suspended",
        include_str!("../scenarios/night-power-suspended.toml"),
    ),
    (
        "stuck-detector",
        include_str!("../scenarios/stuck-detector.toml"),
    ),
    (
        "swapped-words",
        include_str!("../scenarios/swapped-words.toml"),
    ),
    (
        "tank-overfill",
        include_str!("../scenarios/tank-overfill.toml"),
    ),
];

/// A shipped scenario by name.
pub fn builtin_scenario(name: &str) -> Option<Result<Scenario, scenario::ScenarioError>> {
    SCENARIO_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| Scenario::from_toml_str(text))
}

/// The scenario `hazgate demo` plays (`scenarios/demo.toml`).
///
/// # Panics
/// If the embedded file is invalid (compile-time data; covered by tests).
pub fn demo_scenario() -> Scenario {
    match builtin_scenario("demo") {
        Some(Ok(s)) => s,
        Some(Err(e)) => panic!("built-in demo scenario is invalid: {e}"),
        None => panic!("built-in demo scenario is missing"),
    }
}

/// The built-in device maps, parsed. `map_id` references fall back to these.
///
/// # Panics
/// If an embedded map is invalid (compile-time data; covered by this crate's tests).
pub fn builtin_maps() -> Vec<DeviceMap> {
    BUILTIN_MAP_FILES
        .iter()
        .map(|(file, text)| {
            DeviceMap::from_toml_str(text)
                .unwrap_or_else(|e| panic!("built-in map {file} is invalid: {e}"))
        })
        .collect()
}

/// The demo site: one listener (`rs485-1`, 127.0.0.1:5020) with units 1 `gd101`, 2 `gd102`
/// (gas-4-20ma), 3 `t101` (tank-radar), 4 `dc1` (dust-collector), 5 `pm1` (power-meter),
/// 6 `line1` (line-status); MQTT publishers `dtu1` (json: `gt201` H2S, `ox201` O2), `dtu2`
/// (object: `wc1` wet dust collector) and `dtu3` (number: `gd301` combustible gas).
/// Its maps are referenced by `map_id` and resolve to [`builtin_maps`].
///
/// # Panics
/// If the embedded `sites/demo.toml` is invalid (compile-time data; covered by tests).
pub fn demo_spec() -> SiteSpec {
    SiteSpec::from_toml_str(DEMO_SITE_TOML)
        .unwrap_or_else(|e| panic!("built-in demo site is invalid: {e}"))
}

/// A running simulation.
#[derive(Debug)]
pub struct RunningSim {
    /// Control handle.
    pub handle: SimHandle,
    /// `(listener id, bound address)` of the TCP listeners (`tcp`, `rtu_over_tcp`) in spec
    /// order.
    pub listeners: Vec<(String, SocketAddr)>,
    /// `(listener id, serial device the gateway opens)` of the `rtu_pty` and `rtu` listeners.
    pub serial_ports: Vec<(String, String)>,
    /// `(publisher id, counters)` of the MQTT publishers that run.
    pub publishers: Vec<(String, Arc<mqtt::PublisherStats>)>,
    cancel: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl RunningSim {
    /// Bound address of a listener.
    pub fn addr(&self, listener_id: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(id, _)| id == listener_id)
            .map(|(_, a)| *a)
    }

    /// The serial device path of an `rtu_pty` or `rtu` listener.
    pub fn serial_port(&self, listener_id: &str) -> Option<&str> {
        self.serial_ports
            .iter()
            .find(|(id, _)| id == listener_id)
            .map(|(_, p)| p.as_str())
    }

    /// Stops all listeners (the token passed to [`start`] is not cancelled).
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Waits until every listener has stopped (after cancellation, or on the first listener
    /// error, which stops the others and is returned).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = joined.context("listener task panicked").and_then(|r| r);
            if let Err(e) = outcome {
                self.cancel.cancel();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }
}

type BoxedServe = std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// Starts a site whose maps come from files (relative to `base_dir`) or the built-in maps.
/// See [`start_with_maps`].
pub async fn start(
    spec: SiteSpec,
    base_dir: &Path,
    cancel: CancellationToken,
) -> anyhow::Result<RunningSim> {
    start_with_maps(spec, base_dir, &[], cancel).await
}

/// Validates `spec`, resolves device maps (`map` files relative to `base_dir`; `map_id` against
/// `maps`, then the built-in maps), binds every listener and serves until `cancel` (or
/// [`RunningSim::shutdown`]). Fails if any listener cannot bind; none is left running then.
pub async fn start_with_maps(
    spec: SiteSpec,
    base_dir: &Path,
    maps: &[DeviceMap],
    cancel: CancellationToken,
) -> anyhow::Result<RunningSim> {
    spec.validate()?;
    let resolved = spec.resolve_maps(base_dir, maps, &builtin_maps())?;
    let day_offset = spec.start_time.unwrap_or_default();
    let mut rows: Vec<Vec<Arc<Device>>> = spec
        .listeners
        .iter()
        .map(|l| &l.devices)
        .chain(spec.publishers.iter().map(|p| &p.devices))
        .zip(&resolved)
        .map(|(devices, maps)| {
            devices
                .iter()
                .zip(maps)
                .map(|(d, map)| {
                    Arc::new(Device::new(
                        spec.seed, &d.id, d.unit_id, map, &d.signals, &d.vars, day_offset,
                    ))
                })
                .collect()
        })
        .collect();
    let per_publisher = rows.split_off(spec.listeners.len());
    let per_listener = rows;
    let mqtt_target = match (&spec.mqtt_url, spec.publishers.is_empty()) {
        (Some(url), false) => Some(mqtt::parse_url(url).map_err(anyhow::Error::msg)?),
        (None, false) => {
            tracing::warn!("the site has MQTT publishers but no mqtt_url; they do not run");
            None
        }
        _ => None,
    };
    let state = Arc::new(
        SimState::new(
            spec.speed,
            per_listener.iter().chain(&per_publisher).flatten().cloned(),
        )
        .with_publishers(spec.publishers.iter().map(|p| p.id.clone())),
    );
    let cancel = cancel.child_token();
    let mut tasks = JoinSet::new();
    let mut listeners = Vec::new();
    let mut serial_ports = Vec::new();
    for (l, devices) in spec.listeners.iter().zip(per_listener) {
        let service = modbus::SiteService::new(state.clone(), devices);
        if matches!(l.protocol, Protocol::RtuPty | Protocol::Rtu) {
            let opened = match (&l.protocol, &l.serial) {
                (Protocol::Rtu, Some(path)) => {
                    tokio_serial::SerialStream::open(&tokio_serial::new(path, 9600))
                        .map(|p| (p, None, path.clone()))
                        .with_context(|| format!("listener {:?}: opening {path}", l.id))
                }
                _ => tokio_serial::SerialStream::pair()
                    .context("creating a pseudo-terminal pair")
                    .and_then(|(master, slave)| {
                        use tokio_serial::SerialPort as _;
                        let path = slave.name().context("the pseudo-terminal has no path")?;
                        Ok((master, Some(slave), path))
                    })
                    .with_context(|| format!("listener {:?}", l.id)),
            };
            let (port, keep, path) = match opened {
                Ok(ok) => ok,
                Err(e) => {
                    cancel.cancel();
                    return Err(e);
                }
            };
            tracing::info!(listener = %l.id, %path, devices = l.devices.len(), "modbus rtu listener up");
            let id = l.id.clone();
            let c = cancel.clone();
            let p = path.clone();
            tasks.spawn(async move {
                modbus::serve_rtu(port, keep, service, c)
                    .await
                    .with_context(|| format!("listener {id:?} on {p}"))
            });
            serial_ports.push((l.id.clone(), path));
            continue;
        }
        let bound = if l.protocol == Protocol::RtuOverTcp {
            modbus::bind_rtu_over_tcp(&l.listen, service, cancel.clone())
                .await
                .map(|(a, f)| (a, Box::pin(f) as BoxedServe))
        } else {
            modbus::bind(&l.listen, service, cancel.clone())
                .await
                .map(|(a, f)| (a, Box::pin(f) as BoxedServe))
        };
        let (addr, serve) = match bound {
            Ok(ok) => ok,
            Err(e) => {
                cancel.cancel();
                return Err(e)
                    .with_context(|| format!("listener {:?}: binding {}", l.id, l.listen));
            }
        };
        tracing::info!(listener = %l.id, %addr, devices = l.devices.len(), "modbus listener up");
        let id = l.id.clone();
        tasks.spawn(async move {
            serve
                .await
                .with_context(|| format!("listener {id:?} on {addr}"))
        });
        listeners.push((l.id.clone(), addr));
    }
    let mut publishers = Vec::new();
    if let Some((host, port)) = mqtt_target {
        for (p, devices) in spec.publishers.iter().zip(per_publisher) {
            let stats = Arc::new(mqtt::PublisherStats::default());
            tracing::info!(publisher = %p.id, %host, port, style = ?p.style, "mqtt publisher up");
            let run = mqtt::run_publisher(
                p.clone(),
                devices,
                state.clone(),
                host.clone(),
                port,
                stats.clone(),
                cancel.clone(),
            );
            tasks.spawn(async move {
                run.await;
                Ok(())
            });
            publishers.push((p.id.clone(), stats));
        }
    }
    Ok(RunningSim {
        handle: SimHandle::new(state),
        listeners,
        serial_ports,
        publishers,
        cancel,
        tasks,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn demo_spec_matches_the_gateway_demo_ids() {
        let spec = demo_spec();
        let units: Vec<(&str, u8, &str)> = spec.listeners[0]
            .devices
            .iter()
            .map(|d| (d.id.as_str(), d.unit_id, d.map_id.as_deref().unwrap()))
            .collect();
        assert_eq!(
            units,
            [
                ("gd101", 1, "gas-4-20ma"),
                ("gd102", 2, "gas-4-20ma"),
                ("t101", 3, "tank-radar"),
                ("dc1", 4, "dust-collector"),
                ("pm1", 5, "power-meter"),
                ("line1", 6, "line-status"),
            ]
        );
        let maps = spec
            .resolve_maps(Path::new("."), &[], &builtin_maps())
            .unwrap();
        assert_eq!(maps[0].len(), 6);
        assert_eq!(maps.len(), 4, "one listener and three publishers");
    }

    #[test]
    fn builtin_scenarios_match_the_scenario_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let on_disk = Scenario::load_dir(&dir).unwrap();
        let names: Vec<&str> = on_disk.iter().map(|s| s.name.as_str()).collect();
        let builtin: Vec<&str> = SCENARIO_FILES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, builtin, "add new scenario files to SCENARIO_FILES");
        for (file, s) in std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter_map(|p| Scenario::load(&p).ok().map(|s| (p, s)))
        {
            assert_eq!(
                file.file_stem().unwrap().to_str().unwrap(),
                s.name,
                "a scenario's file is named after it"
            );
            assert!(builtin_scenario(&s.name).unwrap().is_ok());
        }
        assert!(demo_scenario().repeat);
    }

    #[test]
    fn builtin_maps_match_the_map_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/maps");
        let mut on_disk = DeviceMap::load_dir(&dir).unwrap();
        let mut builtin = builtin_maps();
        on_disk.sort_by(|a, b| a.id.cmp(&b.id));
        builtin.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            on_disk, builtin,
            "add new config/maps files to BUILTIN_MAP_FILES"
        );
    }
}
