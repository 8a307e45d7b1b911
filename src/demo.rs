//! `hazgate demo`: the gateway against the built-in simulated site, in one process.
//!
//! The simulator (`hazgate-sim`'s demo site) listens on a free loopback port; the gateway runs
//! `config/demo.toml` (embedded, with its device maps) pointed at it, the API on `--listen`, and
//! optionally an InfluxDB v1 output.

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

/// Builds the demo configuration for a simulator at `sim`.
pub fn demo_config(sim: SocketAddr, o: &DemoOptions) -> Result<Resolved, String> {
    let mut cfg =
        config::parse(DEMO_CONFIG, Path::new("config/demo.toml")).map_err(|e| e.to_string())?;
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
        if let Source::ModbusTcp(t) = s {
            t.address = sim.to_string();
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

/// Runs the demo until `shutdown`; errors carry the exit status.
pub async fn run(
    mut o: DemoOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), (u8, String)> {
    let token = o.operator_token.get_or_insert_with(random_token).clone();
    let cancel = CancellationToken::new();
    let mut spec = hazgate_sim::demo_spec();
    for l in &mut spec.listeners {
        l.listen = "127.0.0.1:0".into();
    }
    let sim = hazgate_sim::start(spec, Path::new("."), cancel.clone())
        .await
        .map_err(|e| (3, format!("cannot start the simulator: {e:#}")))?;
    let sim_addr = sim
        .listeners
        .first()
        .map(|(_, a)| *a)
        .ok_or((3, "the demo site has no listener".to_owned()))?;
    let cfg = demo_config(sim_addr, &o).map_err(|e| (3, e))?;
    if let Some(url) = &o.influx_url {
        create_database(url, &o.influx_db).await;
    }
    let running = crate::app::start(cfg)
        .await
        .map_err(|e| (3, e.to_string()))?;
    let base = format!("http://{}", running.api_addr);
    info!(simulator = %sim_addr, api = %base, "demo running");
    println!("hazgate demo is running (Ctrl-C to stop)");
    println!("  status page:  {base}/");
    println!("  live values:  {base}/api/v1/channels");
    println!("  devices:      {base}/api/v1/devices");
    println!("  readiness:    {base}/readyz");
    println!("  metrics:      {base}/metrics");
    println!("  operator token for acknowledging alarms (this run only): {token}");
    if let Some(url) = &o.influx_url {
        println!(
            "  time series:  {url} database `{}` (measurements `reading`, `alarm_event`)",
            o.influx_db
        );
    }
    let r = running.run_until(shutdown).await;
    cancel.cancel();
    let _ = sim.wait().await;
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
