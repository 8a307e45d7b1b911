//! `hazgate-sim`: runs a simulated site (a site spec file or the built-in demo) until SIGINT or
//! SIGTERM, printing each listener's bound address.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Simulated hazgate site: Modbus TCP/RTU devices driven by deterministic signals.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Site spec file (TOML); `map` paths resolve relative to it.
    #[arg(long, required_unless_present = "demo", conflicts_with = "demo")]
    site: Option<PathBuf>,
    /// Run the built-in demo site.
    #[arg(long)]
    demo: bool,
    /// Override the spec's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the spec's speed (simulated seconds per real second).
    #[arg(long)]
    speed: Option<f64>,
    /// Override the first listener's address (e.g. 127.0.0.1:0 for any free port).
    #[arg(long)]
    modbus_listen: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (mut spec, base_dir) = match &cli.site {
        Some(path) => (
            hazgate_sim::SiteSpec::load(path)?,
            path.parent().map(PathBuf::from).unwrap_or_default(),
        ),
        None => (hazgate_sim::demo_spec(), PathBuf::from(".")),
    };
    if let Some(seed) = cli.seed {
        spec.seed = seed;
    }
    if let Some(speed) = cli.speed {
        spec.speed = speed;
    }
    if let Some(listen) = cli.modbus_listen {
        let first = spec
            .listeners
            .first_mut()
            .context("the site has no listener to override")?;
        first.listen = listen;
    }

    let cancel = CancellationToken::new();
    let sim = hazgate_sim::start(spec.clone(), &base_dir, cancel.clone()).await?;
    for l in &spec.listeners {
        let units: Vec<String> = l
            .devices
            .iter()
            .map(|d| format!("{}={}", d.unit_id, d.id))
            .collect();
        let at = match (sim.addr(&l.id), sim.serial_port(&l.id)) {
            (Some(addr), _) => addr.to_string(),
            (None, Some(path)) => path.to_owned(),
            (None, None) => "?".to_owned(),
        };
        let proto = match l.protocol {
            hazgate_sim::Protocol::Tcp => "modbus tcp",
            hazgate_sim::Protocol::RtuOverTcp => "modbus rtu-over-tcp",
            hazgate_sim::Protocol::RtuPty | hazgate_sim::Protocol::Rtu => "modbus rtu",
        };
        println!("listener {} {proto} {at} units {}", l.id, units.join(" "));
    }

    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            cancel.cancel();
        }
    });
    sim.wait().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(%e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
