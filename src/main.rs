//! The `hazgate` command line. Parses arguments, sets up logging, calls into the library and maps
//! errors to exit codes:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success (including a clean drain after SIGTERM/SIGINT) |
//! | 1 | the configuration has errors (all are printed with their paths) |
//! | 2 | bad command-line usage |
//! | 3 | start-up failed (address in use, secret unreadable, simulator could not start) |
//! | 4 | a task that cannot be restarted died; the gateway drained and stopped |
//! | 5 | `probe`: the device could not be reached or refused the read |

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hazgate::config::{self, LoadError, Severity};
use hazgate::i18n::{self, Language};

#[derive(Parser, Debug)]
#[command(
    name = "hazgate",
    version,
    about = "Edge gateway for industrial safety monitoring"
)]
struct Cli {
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "HAZGATE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter: a level (`info`) or a tracing filter (`hazgate=debug,warn`). The embedded
    /// broker (rumqttd) logs every client connection at INFO and every dropped client (a data
    /// unit on a flapping 4G link) at ERROR, so it is silent by default: add `rumqttd=warn` to
    /// see it. What matters (the gateway's own MQTT source, the broker failing) is logged by
    /// hazgate itself.
    #[arg(
        long,
        default_value = "info,rumqttd=off",
        global = true,
        env = "HAZGATE_LOG_LEVEL"
    )]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate configuration files and print every problem with its path.
    CheckConfig {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a commented example configuration.
    PrintDefaultConfig,
    /// Print the JSON Schema of the configuration file, for editors (Taplo, VS Code "Even
    /// Better TOML"): completion, descriptions and validation while writing it.
    ConfigSchema {
        /// The schema of a file named by `include` (`[site]` optional, no `include`).
        #[arg(long)]
        included: bool,
    },
    /// Print the Modbus request plan (coalesced reads) of a configuration.
    Plan {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print every alarm of a configuration with its effective limit, deadband, delays and
    /// latching, and where each was configured (a `[[rules]]` entry or a kind's
    /// `[rule_defaults]`); then the opted-out channels and any gas channel left without limits.
    Rules {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write Grafana dashboards and provisioning files for a configuration's site: its
    /// equipment, its channels' alarm limits, its language.
    Dashboards {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Directory to write into (created when missing; files of the same name replaced).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Read a register range from one Modbus device and show it in every type, word order and
    /// address base, marking the interpretations that match the detector's display (`--expect`).
    Probe(ProbeArgs),
    /// Run the gateway against the built-in simulated site.
    Demo {
        /// Where the API and status page listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Also write to this InfluxDB (v1 API), e.g. http://127.0.0.1:8086.
        #[arg(long, env = "HAZGATE_INFLUX_URL")]
        influx_url: Option<String>,
        /// Database for --influx-url.
        #[arg(long, default_value = "hazgate", env = "HAZGATE_INFLUX_DB")]
        influx_db: String,
    },
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("link").required(true).args(["tcp", "rtu_over_tcp", "serial"])))]
struct ProbeArgs {
    /// Modbus TCP device or gateway, `host:port`.
    #[arg(long)]
    tcp: Option<String>,
    /// RTU frames through a transparent serial-to-TCP converter, `host:port`.
    #[arg(long)]
    rtu_over_tcp: Option<String>,
    /// Modbus RTU on this serial port, e.g. /dev/ttyUSB0.
    #[arg(long)]
    serial: Option<String>,
    /// Serial baud rate.
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// Serial parity.
    #[arg(long, value_enum, default_value_t = ParityArg::None)]
    parity: ParityArg,
    /// Serial data bits (7 or 8).
    #[arg(long, default_value_t = 8)]
    data_bits: u8,
    /// Serial stop bits (1 or 2).
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
    /// Unit id (slave address).
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// Table: holding, input, coil or discrete.
    #[arg(long, value_enum, default_value_t = TableArg::Holding)]
    table: TableArg,
    /// First address as printed in the device manual.
    #[arg(long)]
    address: u16,
    /// Number of addresses to show.
    #[arg(long, default_value_t = 10)]
    count: u16,
    /// The value shown on the detector's display; matching interpretations are marked.
    #[arg(long, allow_hyphen_values = true)]
    expect: Option<String>,
    /// Absolute tolerance for --expect (default: half a unit of its last digit, 0.005 for 7.31).
    #[arg(long)]
    tolerance: Option<f64>,
    /// Scale factors tried on integer types, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,0.1,0.01,0.001")]
    scales: Vec<f64>,
    /// Per-request timeout.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ParityArg {
    None,
    Even,
    Odd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TableArg {
    Holding,
    Input,
    Coil,
    Discrete,
}

fn probe(a: ProbeArgs) -> ExitCode {
    use hazgate::config::{ModbusLink, ModbusTiming, Parity, SerialLine, Table};
    use std::time::Duration;
    let connect_timeout = a.timeout.max(Duration::from_secs(1));
    let link = match (a.tcp, a.rtu_over_tcp, a.serial) {
        (Some(address), _, _) => ModbusLink::Tcp {
            address,
            connect_timeout,
        },
        (_, Some(address), _) => ModbusLink::RtuOverTcp {
            address,
            connect_timeout,
        },
        (_, _, Some(port)) => {
            if !matches!(a.data_bits, 7 | 8) || !matches!(a.stop_bits, 1 | 2) {
                eprintln!("hazgate probe: --data-bits must be 7 or 8 and --stop-bits 1 or 2");
                return ExitCode::from(2);
            }
            ModbusLink::Rtu(SerialLine {
                port,
                baud_rate: a.baud,
                parity: match a.parity {
                    ParityArg::None => Parity::None,
                    ParityArg::Even => Parity::Even,
                    ParityArg::Odd => Parity::Odd,
                },
                data_bits: a.data_bits,
                stop_bits: a.stop_bits,
            })
        }
        (None, None, None) => unreachable!("clap requires one link argument"),
    };
    let expect = match a.expect.as_deref().map(str::parse::<f64>) {
        None => None,
        Some(Ok(v)) if v.is_finite() => Some(v),
        Some(_) => {
            eprintln!("hazgate probe: --expect must be a number");
            return ExitCode::from(2);
        }
    };
    let tolerance = a.tolerance.or_else(|| {
        a.expect
            .as_deref()
            .map(hazgate::sources::modbus::probe::display_tolerance)
    });
    let req = hazgate::sources::modbus::probe::ProbeRequest {
        link,
        timing: ModbusTiming {
            timeout: a.timeout,
            pause: Duration::ZERO,
            max_gap: 0,
            backoff_max: Duration::from_secs(1),
            drain: Duration::ZERO,
        },
        unit: a.unit,
        table: match a.table {
            TableArg::Holding => Table::Holding,
            TableArg::Input => Table::Input,
            TableArg::Coil => Table::Coil,
            TableArg::Discrete => Table::Discrete,
        },
        address: a.address,
        count: a.count,
        expect,
        tolerance,
        scales: a.scales,
    };
    runtime(async move {
        let out = hazgate::sources::modbus::probe::run(&req)
            .await
            .map_err(|e| (5, format!("probe: {e}")))?;
        write_out(&out).map_err(|e| (3, format!("probe: cannot write to standard output: {e}")))
    })
}

/// Writes a command's text to standard output. A reader that went away (`| head`) ends the
/// command quietly, as it ends `cat`; any other write error is reported. (`print!` panics on
/// both.)
fn write_out(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// [`write_out`] as the exit status of a command.
fn exit_with_out(command: &str, text: &str) -> ExitCode {
    match write_out(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hazgate {command}: cannot write to standard output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // Under systemd: `<N>` priority prefixes so journald keeps each line's level; no time
    // stamp in text (journald records it).
    let journal = hazgate::journald::stderr_is_journal();
    use hazgate::journald::PriorityPrefix;
    match (format, journal) {
        (LogFormat::Text, false) => b.init(),
        (LogFormat::Json, false) => b.json().flatten_event(true).init(),
        (LogFormat::Text, true) => b.without_time().map_event_format(PriorityPrefix).init(),
        (LogFormat::Json, true) => b
            .json()
            .flatten_event(true)
            .map_event_format(PriorityPrefix)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::CheckConfig { files } => check_config(&files),
        Command::PrintDefaultConfig => {
            exit_with_out("print-default-config", hazgate::EXAMPLE_CONFIG)
        }
        Command::ConfigSchema { included } => {
            let schema = if included {
                config::json_schema_of_included()
            } else {
                config::json_schema()
            };
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => exit_with_out("config-schema", &(text + "\n")),
                Err(e) => {
                    eprintln!("hazgate config-schema: cannot write the schema: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plan { config } => match config::load(&config) {
            Ok((cfg, _)) => exit_with_out("plan", &hazgate::sources::modbus::plan::describe(&cfg)),
            Err(e) => report_load_error(&e),
        },
        Command::Rules { config } => match config::load(&config) {
            Ok((cfg, _)) => exit_with_out(
                "rules",
                &config::plan::describe(&cfg.plan, &cfg.channels, cfg.site.language),
            ),
            Err(e) => report_load_error(&e),
        },
        Command::Dashboards { config, out } => match config::load(&config) {
            Ok((cfg, _)) => match hazgate::dashboards::write(&cfg, &out) {
                Ok(files) => {
                    let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
                    exit_with_out("dashboards", &list)
                }
                Err(e) => {
                    eprintln!("{}: cannot write: {e}", out.display());
                    ExitCode::from(3)
                }
            },
            Err(e) => report_load_error(&e),
        },
        Command::Run { config } => {
            let cfg = match config::load(&config) {
                Ok((cfg, warnings)) => {
                    for w in warnings {
                        tracing::warn!("{}: {w}", config.display());
                    }
                    cfg
                }
                Err(e) => {
                    // Also as a log event: under systemd it is what `journalctl -p err` shows.
                    tracing::error!(config = %config.display(), "configuration is invalid; `hazgate check-config` lists every problem");
                    return report_load_error(&e);
                }
            };
            let path = std::path::absolute(&config).unwrap_or(config);
            runtime(async move {
                // SIGHUP is caught from the start (its default action would end the process).
                let hangups = hangup_signals();
                let running = hazgate::app::start_with(cfg, Some(path))
                    .await
                    .map_err(|e| (3, e.to_string()))?;
                if let Some(h) = hangups {
                    tokio::spawn(reload_on_hangup(h, running.reloader()));
                }
                running
                    .run_until(shutdown_signal())
                    .await
                    .map_err(|e| (4, e.to_string()))
            })
        }
        Command::Probe(args) => probe(args),
        Command::Demo {
            listen,
            influx_url,
            influx_db,
        } => runtime(async move {
            hazgate::demo::run(
                hazgate::demo::DemoOptions {
                    listen,
                    influx_url,
                    influx_db,
                    operator_token: None,
                },
                shutdown_signal(),
            )
            .await
        }),
    }
}

fn runtime(fut: impl Future<Output = Result<(), (u8, String)>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hazgate: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            tracing::error!("{msg}");
            eprintln!("hazgate: {msg}");
            ExitCode::from(code)
        }
    }
}

/// The `[site] language` a configuration file asks for, read without validating it (also for a
/// file that fails validation); the default (zh-CN) when it cannot be read.
fn file_language(path: &std::path::Path) -> Language {
    let site = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("site")?.get("language")?.as_str().map(str::to_owned));
    match site.as_deref() {
        Some("en") => Language::En,
        _ => Language::ZhCn,
    }
}

/// Problems are printed as they are (severity, field path, message); the summary line of each
/// file is in the file's `[site] language`.
fn check_config(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        match config::load_files(f) {
            Ok((cfg, warnings, read)) => {
                for w in &warnings {
                    println!("{}: {w}", f.display());
                }
                if read.len() > 1 {
                    let names: Vec<String> = read.iter().map(|r| r.display().to_string()).collect();
                    let line = i18n::config_files_read(cfg.site.language, &names);
                    println!("{}: {line}", f.display());
                }
                let line = i18n::config_ok(cfg.site.language, warnings.len());
                println!("{}: {line}", f.display());
            }
            Err(e) => {
                failed = true;
                let lang = file_language(f);
                print_load_error(&e, lang);
                let unreadable = match &e {
                    LoadError::Io { .. } => i18n::config_unreadable(lang, false),
                    LoadError::Parse { .. } => i18n::config_unreadable(lang, true),
                    _ => None,
                };
                if let Some(line) = unreadable {
                    println!("{}: {line}", f.display());
                }
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_load_error(e: &LoadError, lang: Language) {
    match e {
        LoadError::Invalid { path, problems } => {
            for p in problems {
                println!("{}: {p}", path.display());
            }
            let errors = problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .count();
            let line = i18n::config_invalid(lang, errors, problems.len() - errors);
            println!("{}: {line}", path.display());
        }
        other => println!("{other}"),
    }
}

fn report_load_error(e: &LoadError) -> ExitCode {
    print_load_error(e, Language::En);
    ExitCode::from(1)
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = ();

/// SIGHUP (`systemctl reload hazgate`), when the platform has it.
fn hangup_signals() -> Option<Hangups> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot catch SIGHUP: reload with POST /api/v1/config/reload");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// Every SIGHUP reloads the configuration; the outcome is logged (a refusal at error level,
/// with every problem, so `journalctl -p err -u hazgate` shows why).
#[cfg(unix)]
async fn reload_on_hangup(
    mut h: Hangups,
    tx: tokio::sync::mpsc::Sender<hazgate::control::ReloadAsk>,
) {
    while h.recv().await.is_some() {
        let r = hazgate::control::ask(&tx, "SIGHUP").await;
        if r.applied {
            tracing::info!(file = %r.file, "SIGHUP: {}", r.summary);
        } else {
            for p in &r.problems {
                tracing::error!(file = %r.file, path = %p.path, "configuration reload refused: {}", p.message);
            }
            tracing::error!(file = %r.file, "SIGHUP: {}", r.summary);
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_hangup(
    _h: Hangups,
    _tx: tokio::sync::mpsc::Sender<hazgate::control::ReloadAsk>,
) {
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
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
