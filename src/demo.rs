//! `hazgate demo`: the gateway against the built-in simulated site, in one process.
//!
//! The simulator (`hazgate-sim`'s demo site) listens on a free loopback port and its data units
//! publish to the gateway's embedded MQTT broker (on another free port); the gateway runs
//! `config/demo.toml` (embedded, with its device maps) pointed at both, the API on `--listen`,
//! and optionally an InfluxDB v1 output. The default scenario (`simulator/scenarios/demo.toml`)
//! cycles through normal operation and the incidents the simulator can stage; its site-mode
//! requests go to the alarm engine through [`forward_gateway_actions`].
//!
//! [`time_scaled`] rewrites the demo configuration for a simulation running `speed` times faster
//! than real time (the scenario tests): rule delays, maximum ages, poll intervals and the
//! durations inside composite expressions are divided by `speed`, rates per minute multiplied.
//! Network timeouts are kept: they act on the wire, in real time.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{
    self, Batching, DeviceMap, DeviceMapEntry, InfluxV1Output, Output, Resolved, Source,
};

/// The demo's gateway configuration.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// Device maps referenced by `config/demo.toml`, embedded so the demo runs from any directory.
const MAPS: &[(&str, &str)] = &[
    (
        "maps/gas-4-20ma.toml",
        include_str!("../config/maps/gas-4-20ma.toml"),
    ),
    (
        "maps/tank-radar.toml",
        include_str!("../config/maps/tank-radar.toml"),
    ),
    (
        "maps/dust-collector.toml",
        include_str!("../config/maps/dust-collector.toml"),
    ),
    (
        "maps/power-meter.toml",
        include_str!("../config/maps/power-meter.toml"),
    ),
    (
        "maps/line-status.toml",
        include_str!("../config/maps/line-status.toml"),
    ),
];

/// Options of `hazgate demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// API address.
    pub listen: SocketAddr,
    /// Optional InfluxDB v1 base URL.
    pub influx_url: Option<String>,
    /// Database for the InfluxDB output.
    pub influx_db: String,
    /// An operator token for acknowledging alarms on the status page (`demo-operator`).
    pub operator_token: Option<String>,
}

/// A fresh random operator token for one demo run.
pub fn random_token() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Builds the demo configuration for a simulator at `sim` (its embedded broker on a free port:
/// the MQTT publishers' address is `cfg.mqtt_broker.listen`).
pub fn demo_config(sim: SocketAddr, o: &DemoOptions) -> Result<Resolved, String> {
    demo_config_scaled(sim, o, 1.0)
}

/// [`demo_config`] for a simulation running `speed` times faster than real time
/// (see [`time_scaled`]).
pub fn demo_config_scaled(
    sim: SocketAddr,
    o: &DemoOptions,
    speed: f64,
) -> Result<Resolved, String> {
    let broker = free_loopback_port().map_err(|e| format!("no free port for the broker: {e}"))?;
    build_config(sim, broker, o, speed)
}

/// The demo configuration with the simulator at `sim` and the embedded broker on `broker`.
fn build_config(
    sim: SocketAddr,
    broker: SocketAddr,
    o: &DemoOptions,
    speed: f64,
) -> Result<Resolved, String> {
    let text = time_scaled(DEMO_CONFIG, speed)?;
    let mut cfg = config::parse(&text, Path::new("config/demo.toml")).map_err(|e| e.to_string())?;
    if let Some(b) = &mut cfg.mqtt_broker {
        b.listen = broker;
    }
    for entry in &mut cfg.device_maps {
        if let DeviceMapEntry::File { file } = entry {
            let name = file.to_string_lossy().into_owned();
            let text = MAPS
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, t)| *t)
                .ok_or_else(|| format!("demo map {name} is not embedded"))?;
            let map: DeviceMap = toml::from_str(text).map_err(|e| format!("{name}: {e}"))?;
            *entry = DeviceMapEntry::Inline(map);
        }
    }
    for s in &mut cfg.sources {
        match s {
            Source::ModbusTcp(t) => t.address = sim.to_string(),
            Source::Mqtt(m) => m.address = broker.to_string(),
            _ => {}
        }
    }
    cfg.api.listen = o.listen;
    if let Some(token) = &o.operator_token {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(token.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        cfg.alarms.tokens.push(config::alarms::ApiToken {
            name: "demo-operator".into(),
            role: config::alarms::Role::Operator,
            sha256: Some(hex),
            token: None,
        });
    }
    if let Some(url) = &o.influx_url {
        cfg.outputs.push(Output::InfluxdbV1(InfluxV1Output {
            id: "demo-influx".into(),
            url: url.clone(),
            database: o.influx_db.clone(),
            retention_policy: None,
            username: None,
            password: None,
            batching: toml::from_str::<Batching>("").map_err(|e| e.to_string())?,
        }));
    }
    config::validate(&cfg, Path::new("."))
        .map(|(r, _)| r)
        .map_err(|problems| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
}

/// A free loopback address (bound and released: another process could take it meanwhile,
/// in which case the broker fails to start with that address).
fn free_loopback_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Rewrites a configuration for a simulation running `speed` times faster than real time:
/// `on_delay`, `off_delay`, `max_age`, `poll_interval`, `window`, `flood_window`,
/// `chatter_window` and `for …` durations in `expr` are divided by `speed` (devices without a
/// `poll_interval` get the default 1 s divided); `rise_per_min`/`fall_per_min` are multiplied.
/// Returns the text unchanged when `speed` is 1.
pub fn time_scaled(text: &str, speed: f64) -> Result<String, String> {
    if speed == 1.0 {
        return Ok(text.to_owned());
    }
    if !speed.is_finite() || speed <= 0.0 {
        return Err(format!("speed must be > 0, got {speed}"));
    }
    let mut table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
    if let Some(toml::Value::Array(devices)) = table.get_mut("devices") {
        for d in devices.iter_mut().filter_map(toml::Value::as_table_mut) {
            d.entry("poll_interval")
                .or_insert_with(|| toml::Value::String("1s".into()));
        }
    }
    let mut root = toml::Value::Table(table);
    scale_value(&mut root, speed)?;
    toml::to_string(&root).map_err(|e| e.to_string())
}

const SCALED_DURATIONS: [&str; 9] = [
    "after",
    "backoff_max",
    "on_delay",
    "off_delay",
    "max_age",
    "poll_interval",
    "window",
    "flood_window",
    "chatter_window",
];

fn scaled_duration(text: &str, speed: f64) -> Result<String, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    let ms = (d.as_secs_f64() * 1000.0 / speed).round().max(1.0);
    Ok(format!("{ms}ms"))
}

fn scale_value(v: &mut toml::Value, speed: f64) -> Result<(), String> {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                match (k.as_str(), &mut *v) {
                    (k, toml::Value::String(s)) if SCALED_DURATIONS.contains(&k) => {
                        *s = scaled_duration(s, speed)?;
                    }
                    ("rise_per_min" | "fall_per_min", toml::Value::Float(f)) => *f *= speed,
                    ("rise_per_min" | "fall_per_min", toml::Value::Integer(i)) => {
                        *v = toml::Value::Float(*i as f64 * speed);
                    }
                    ("expr", toml::Value::String(s)) => *s = scale_expr(s, speed)?,
                    _ => scale_value(v, speed)?,
                }
            }
        }
        toml::Value::Array(a) => {
            for v in a {
                scale_value(v, speed)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Scales the duration after each `for` keyword of an expression.
fn scale_expr(expr: &str, speed: f64) -> Result<String, String> {
    let mut out = Vec::new();
    let mut after_for = false;
    for word in expr.split(' ') {
        if after_for {
            let end = word
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                .unwrap_or(word.len());
            out.push(format!(
                "{}{}",
                scaled_duration(&word[..end], speed)?,
                &word[end..]
            ));
        } else {
            out.push(word.to_owned());
        }
        after_for = word == "for";
    }
    Ok(out.join(" "))
}

/// Carries out a scenario's requests to the gateway (site mode) through the alarm engine,
/// recorded as done by `demo-scenario`, until the scenario's sender is dropped.
pub async fn forward_gateway_actions(
    mut rx: tokio::sync::mpsc::Receiver<hazgate_sim::GatewayAction>,
    alarms: crate::rules::AlarmsHandle,
) {
    while let Some(a) = rx.recv().await {
        let hazgate_sim::GatewayAction::SiteMode { mode, reason } = a;
        let mode = match mode.as_str() {
            "suspended" => crate::model::SiteMode::Suspended,
            "maintenance" => crate::model::SiteMode::Maintenance,
            _ => crate::model::SiteMode::Normal,
        };
        let cmd = crate::rules::Command::SetMode {
            mode,
            by: "demo-scenario".into(),
            reason,
        };
        match alarms.send(cmd).await {
            Ok(Ok(_)) => info!(?mode, "scenario set the site mode"),
            Ok(Err(e)) => warn!(error = %e, "the alarm engine refused the scenario's site mode"),
            Err(e) => warn!(error = e, "scenario site mode not set"),
        }
    }
}

/// A running demo: the simulator, its scenario and the gateway.
#[derive(Debug)]
pub struct Demo {
    /// The gateway.
    pub gateway: crate::app::Running,
    /// The simulator.
    pub sim: hazgate_sim::RunningSim,
    /// The Modbus listener of the simulated site.
    pub sim_addr: SocketAddr,
    /// The embedded broker the data units publish to.
    pub broker_addr: SocketAddr,
    /// The scenario being played.
    pub scenario: hazgate_sim::Scenario,
    cancel: CancellationToken,
}

/// Starts the simulator (running `scenario` at `speed`), the embedded broker and the gateway.
/// Errors carry the exit status.
pub async fn start(
    o: &DemoOptions,
    scenario: hazgate_sim::Scenario,
    speed: f64,
) -> Result<Demo, (u8, String)> {
    let cancel = CancellationToken::new();
    let mut spec = hazgate_sim::demo_spec();
    for l in &mut spec.listeners {
        l.listen = "127.0.0.1:0".into();
    }
    spec.speed = speed;
    // The site clock starts at the local time of day, so the power profile matches the clock.
    spec.start_time = Some(scenario.start_time.unwrap_or_else(|| {
        use chrono::Timelike as _;
        std::time::Duration::from_secs(u64::from(chrono::Local::now().num_seconds_from_midnight()))
    }));
    // The publishers retry until the broker is up, so the simulator can start first and its
    // Modbus address go into the gateway's configuration.
    let broker_addr =
        free_loopback_port().map_err(|e| (3, format!("no free port for the broker: {e}")))?;
    spec.mqtt_url = Some(format!("mqtt://{broker_addr}"));
    let sim = hazgate_sim::start(spec, Path::new("."), cancel.clone())
        .await
        .map_err(|e| (3, format!("cannot start the simulator: {e:#}")))?;
    let sim_addr = sim
        .listeners
        .first()
        .map(|(_, a)| *a)
        .ok_or((3, "the demo site has no listener".to_owned()))?;
    hazgate_sim::scenario::check_against(&scenario, &sim.handle).map_err(|e| (3, e))?;
    let cfg = build_config(sim_addr, broker_addr, o, speed).map_err(|e| (3, e))?;
    if let Some(url) = &o.influx_url {
        create_database(url, &o.influx_db).await;
    }
    let gateway = match crate::app::start(cfg).await {
        Ok(g) => g,
        Err(e) => {
            cancel.cancel();
            return Err((3, e.to_string()));
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(forward_gateway_actions(rx, gateway.alarms.clone()));
    tokio::spawn(hazgate_sim::scenario::run(
        scenario.clone(),
        sim.handle.clone(),
        Some(tx),
        speed,
        cancel.clone(),
    ));
    Ok(Demo {
        gateway,
        sim,
        sim_addr,
        broker_addr,
        scenario,
        cancel,
    })
}

impl Demo {
    /// Stops the scenario, the gateway and the simulator.
    pub async fn stop(self) -> Result<(), crate::app::RunError> {
        self.cancel.cancel();
        let r = self.gateway.stop().await;
        let _ = self.sim.wait().await;
        r
    }
}

/// Runs the demo until `shutdown`; errors carry the exit status.
pub async fn run(
    mut o: DemoOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), (u8, String)> {
    let token = o.operator_token.get_or_insert_with(random_token).clone();
    let demo = start(&o, hazgate_sim::demo_scenario(), 1.0).await?;
    let base = format!("http://{}", demo.gateway.api_addr);
    info!(simulator = %demo.sim_addr, broker = %demo.broker_addr, api = %base, "demo running");
    let mut banner = String::from("hazgate demo is running (Ctrl-C to stop)\n");
    let _ = writeln!(banner, "  status page:  {base}/");
    let _ = writeln!(banner, "  live values:  {base}/api/v1/channels");
    let _ = writeln!(banner, "  alarms:       {base}/api/v1/alarms");
    let _ = writeln!(banner, "  devices:      {base}/api/v1/devices");
    let _ = writeln!(banner, "  readiness:    {base}/readyz");
    let _ = writeln!(banner, "  metrics:      {base}/metrics");
    let _ = writeln!(
        banner,
        "  operator token for acknowledging alarms (this run only): {token}"
    );
    let _ = writeln!(
        banner,
        "  simulated site: Modbus TCP {} (units 1-6), MQTT broker mqtt://{} (topics demo/#)",
        demo.sim_addr, demo.broker_addr
    );
    let _ = writeln!(
        banner,
        "  scenario `{}`: {} (repeats every {})",
        demo.scenario.name,
        demo.scenario.description,
        humantime::format_duration(demo.scenario.duration)
    );
    if let Some(url) = &o.influx_url {
        let _ = writeln!(
            banner,
            "  time series:  {url} database `{}` (measurements `reading`, `alarm_event`)",
            o.influx_db
        );
    }
    // The banner is for whoever started the demo; a closed or broken standard output (a pager
    // quit, a pipe whose reader ended) must not stop the demo, as println! would (panic).
    if let Err(e) = std::io::Write::write_all(&mut std::io::stdout().lock(), banner.as_bytes()) {
        warn!(error = %e, "cannot print the demo banner to standard output; the demo runs on");
    }
    let cancel = demo.cancel.clone();
    let r = demo.gateway.run_until(shutdown).await;
    cancel.cancel();
    let _ = demo.sim.wait().await;
    r.map_err(|e| (4, e.to_string()))
}

/// Best effort `CREATE DATABASE` so a new user's InfluxDB 1.x works at once.
async fn create_database(url: &str, db: &str) {
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let q = format!("CREATE DATABASE \"{}\"", db.replace('"', ""));
    match client
        .post(format!("{}/query", url.trim_end_matches('/')))
        .query(&[("q", q.as_str())])
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => info!(%url, db, "database ready"),
        Ok(r) => {
            warn!(%url, db, status = %r.status(), "could not create the database; writes will be retried")
        }
        Err(e) => warn!(%url, db, error = %e, "InfluxDB not reachable yet; writes will be retried"),
    }
}
