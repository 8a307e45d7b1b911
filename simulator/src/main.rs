//! `hazgate-sim`: runs a simulated site (a site spec file, or the built-in demo site) and
//! optionally a scenario, until SIGINT or SIGTERM (or the end of a non-repeating scenario),
//! printing each listener's bound address and each publisher's broker.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Simulated hazgate site: Modbus TCP/RTU devices and MQTT data units driven by deterministic
/// signals, with scripted fault scenarios.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Site spec file (TOML); `map` paths resolve relative to it. Default: the scenario's site,
    /// else the built-in demo site.
    #[arg(long, conflicts_with = "demo")]
    site: Option<PathBuf>,
    /// Run the built-in demo site.
    #[arg(long)]
    demo: bool,
    /// Scenario to play: a file, or the name of a shipped scenario (see --list-scenarios).
    #[arg(long)]
    scenario: Option<String>,
    /// List the shipped scenarios and exit.
    #[arg(long)]
    list_scenarios: bool,
    /// Broker for the site's MQTT publishers, `mqtt://host:port`.
    #[arg(long)]
    mqtt_url: Option<String>,
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
    if cli.list_scenarios {
        for (name, text) in hazgate_sim::SCENARIO_FILES {
            let s = hazgate_sim::Scenario::from_toml_str(text)?;
            let repeat = if s.repeat { ", repeats" } else { "" };
            println!(
                "{name:<24} {:>6}{repeat}  {}",
                format!("{}s", s.duration.as_secs()),
                s.description
            );
        }
        return Ok(());
    }
    let scenario = match &cli.scenario {
        None => None,
        Some(arg) => Some(match hazgate_sim::builtin_scenario(arg) {
            Some(s) => s?,
            None => hazgate_sim::Scenario::load(std::path::Path::new(arg))
                .with_context(|| format!("{arg:?} is neither a file nor a shipped scenario"))?,
        }),
    };
    let site_path = cli
        .site
        .clone()
        .or_else(|| scenario.as_ref().and_then(|s| s.site_path()));
    let (mut spec, base_dir) = match (&site_path, cli.demo) {
        (Some(path), false) => (
            hazgate_sim::SiteSpec::load(path)?,
            path.parent().map(PathBuf::from).unwrap_or_default(),
        ),
        _ => (hazgate_sim::demo_spec(), PathBuf::from(".")),
    };
    if let Some(seed) = cli.seed {
        spec.seed = seed;
    }
    let speed = cli
        .speed
        .or(scenario.as_ref().map(|s| s.speed))
        .unwrap_or(spec.speed);
    spec.speed = speed;
    if let Some(t) = scenario.as_ref().and_then(|s| s.start_time) {
        spec.start_time = Some(t);
    }
    if let Some(url) = cli.mqtt_url {
        spec.mqtt_url = Some(url);
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
    for p in &spec.publishers {
        let devices: Vec<&str> = p.devices.iter().map(|d| d.id.as_str()).collect();
        match &spec.mqtt_url {
            Some(url) => println!(
                "publisher {} mqtt {url} topics {}/# style {:?} devices {}",
                p.id,
                p.topic_prefix,
                p.style,
                devices.join(" ")
            ),
            None => println!("publisher {} not running (no --mqtt-url)", p.id),
        }
    }
    let scenario_done = CancellationToken::new();
    if let Some(s) = scenario {
        hazgate_sim::scenario::check_against(&s, &sim.handle).map_err(anyhow::Error::msg)?;
        println!(
            "scenario {} ({}s{}, speed {speed}): {}",
            s.name,
            s.duration.as_secs(),
            if s.repeat { ", repeating" } else { "" },
            s.description
        );
        let (handle, c, done) = (sim.handle.clone(), cancel.clone(), scenario_done.clone());
        tokio::spawn(async move {
            let (end, repeat) = (s.duration, s.repeat);
            hazgate_sim::scenario::run(s, handle.clone(), None, speed, c.clone()).await;
            if !repeat {
                // Let the gateway see the end state, then stop.
                let left = end.saturating_sub(handle.sim_time()).div_f64(speed);
                tokio::select! {
                    () = c.cancelled() => {}
                    () = tokio::time::sleep(left) => {}
                }
                println!("scenario finished");
                done.cancel();
            }
        });
    }

    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                () = shutdown_signal() => {}
                () = scenario_done.cancelled() => {}
            }
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
