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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hazgate::config::{self, LoadError, Severity};

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
    /// Log filter: a level (`info`) or a tracing filter (`hazgate=debug,warn`).
    #[arg(long, default_value = "info", global = true, env = "HAZGATE_LOG_LEVEL")]
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
    /// Print the Modbus request plan (coalesced reads) of a configuration.
    Plan {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
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

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::CheckConfig { files } => check_config(&files),
        Command::PrintDefaultConfig => {
            print!("{}", hazgate::EXAMPLE_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Plan { config } => match config::load(&config) {
            Ok((cfg, _)) => {
                print!("{}", hazgate::sources::modbus::plan::describe(&cfg));
                ExitCode::SUCCESS
            }
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
                Err(e) => return report_load_error(&e),
            };
            runtime(async move {
                let running = hazgate::app::start(cfg)
                    .await
                    .map_err(|e| (3, e.to_string()))?;
                running
                    .run_until(shutdown_signal())
                    .await
                    .map_err(|e| (4, e.to_string()))
            })
        }
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

fn check_config(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        match config::load(f) {
            Ok((_, warnings)) => {
                for w in &warnings {
                    println!("{}: {w}", f.display());
                }
                println!("{}: ok ({} warning(s))", f.display(), warnings.len());
            }
            Err(e) => {
                failed = true;
                print_load_error(&e);
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_load_error(e: &LoadError) {
    match e {
        LoadError::Invalid { path, problems } => {
            for p in problems {
                println!("{}: {p}", path.display());
            }
            let errors = problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .count();
            println!("{}: {errors} error(s)", path.display());
        }
        other => println!("{other}"),
    }
}

fn report_load_error(e: &LoadError) -> ExitCode {
    print_load_error(e);
    ExitCode::from(1)
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
