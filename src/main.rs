//! The `stomphub` binary: CLI, logging, config, run until SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use clap::Parser;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use stomphub::config::{Config, LogFormat, DEFAULT_CONFIG};
use stomphub::Broker;
use tokio::signal::unix::{signal, SignalKind};
use tracing::Level;
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Crates that see frame bytes, TLS records or stored messages: logged at
/// info and above only, whatever the filter says.
const CAPPED: [&str; 6] = [
    "tungstenite",
    "tokio_tungstenite",
    "rustls",
    "tokio_rustls",
    "sled",
    "log",
];

/// Whether `target` belongs to a capped crate (`tungstenite` and
/// `tungstenite::protocol`, not `tungstenite_extra`).
fn sees_secrets(target: &str) -> bool {
    CAPPED.iter().any(|krate| {
        target
            .strip_prefix(krate)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The user's filter ANDed with the cap on the crates that see secrets.
///
/// At debug and trace these crates log wire payloads (CONNECT's passcode,
/// tokens in frames) and stored records. The cap is a separate filter,
/// ANDed after the user's: no directive can lift it, whether it names a
/// module (`tungstenite::protocol=trace`), comes later, or matches a span.
///
/// The cap states its level hint (TRACE: it passes everything else), so
/// that the pair's hint is the user's filter's. Without one the pair has
/// none, `log`'s max level stays at TRACE, and every `log::trace!` of
/// tungstenite (several per WebSocket frame) is bridged into tracing and
/// filtered there, at a measurable share of the broker's CPU; with it,
/// `log` drops records below the filter's level at one atomic load.
fn log_filter<S>(filter: EnvFilter) -> impl Filter<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let cap =
        filter_fn(|metadata| *metadata.level() <= Level::INFO || !sees_secrets(metadata.target()))
            .with_max_level_hint(LevelFilter::TRACE);
    filter.and(cap)
}

/// A STOMP 1.0/1.1/1.2 broker over WebSocket and plain TCP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file; without it the embedded default (broker.toml) is used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides the first `[[listeners]]` entry's address (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Overrides `storage.data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides `admin.address` (port 0 picks a free port).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Prints the effective configuration (the file, or the embedded
    /// default, with the flags above applied and every key written out) and exits.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Tool>,
}

#[derive(Debug, clap::Subcommand)]
enum Tool {
    /// Reads a password from standard input and prints its argon2 hash, for
    /// `[[auth.users]] password_hash` (not from the command line, where `ps`
    /// would show it).
    HashPassword,
    /// Checks a configuration file as a start would (syntax, values, key
    /// and certificate files) without binding anything; exits 1 with the
    /// reason on one line if it is unusable.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line, as the error says it (a config error names the key).
            eprintln!("stomphub: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    if let Some(Tool::CheckConfig { file }) = &cli.command {
        let config = Config::load(file)?;
        Broker::check(&config).map_err(|e| format!("{}: {e}", file.display()))?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    if let Some(Tool::HashPassword) = cli.command {
        let mut password = String::new();
        std::io::stdin().read_line(&mut password)?;
        let password = password.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err("no password on standard input".into());
        }
        println!("{}", stomphub::auth::password::hash(password)?);
        return Ok(());
    }
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::from_toml(DEFAULT_CONFIG, "embedded broker.toml")?,
    };
    if let Some(address) = cli.listen {
        if let Some(first) = config.listeners.first_mut() {
            first.address = address;
        }
    }
    if let Some(dir) = cli.data_dir {
        config.storage.data_dir = dir;
    }
    if let Some(address) = cli.admin_listen {
        config.admin.address = address;
    }
    if cli.print_config {
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .map_err(|e| format!("log.level '{}': {e}", config.log.level))?;
    // Colours only for a person at a terminal: a log file or journald gets
    // plain text.
    let colours = std::io::stderr().is_terminal();
    let format = match config.log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colours)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // `init` also routes the `log` crate into tracing, with `log`'s max
    // level set from this filter's level hint.
    tracing_subscriber::registry()
        .with(format.with_filter(log_filter(filter)))
        .init();

    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let from_env = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|value| match value.trim().parse() {
            Ok(threads) => Some(threads),
            Err(_) => {
                tracing::warn!(%value, "TOKIO_WORKER_THREADS is not a count of threads: ignored");
                None
            }
        });
    let threads = config.runtime.threads(cpus, from_env);
    // One thread: tokio's single-threaded scheduler, whose wake-ups need no
    // cross-thread queue or atomics (the measured gain at low rates).
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        // Installed before anything is served: from then on SIGHUP reloads
        // instead of ending the process.
        let mut hangup = signal(SignalKind::hangup())?;
        tracing::info!(threads, cpus, "runtime worker threads");
        let broker = Broker::start(config).await?;
        if let Some(path) = &cli.config {
            broker.set_config_file(path.clone());
        }
        // Scripts and tests read the URL from these lines (the first
        // listener's comes first).
        for url in broker.urls() {
            println!("stomphub listening on {url}");
        }
        if let Some(address) = broker.admin_addr() {
            println!("stomphub admin on http://{address}/");
        }
        std::io::stdout().flush()?;
        loop {
            tokio::select! {
                stop = wait_for_signal() => {
                    stop?;
                    break;
                }
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // Logged by the broker either way.
                    let _ = broker.reload().await;
                }
            }
        }
        tracing::info!("shutting down");
        broker.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::Registry;

    #[test]
    fn the_log_filter_keeps_the_users_level_hint() {
        let hint = |directives: &str| {
            Filter::<Registry>::max_level_hint(&log_filter::<Registry>(EnvFilter::new(directives)))
        };
        assert_eq!(hint("info"), Some(LevelFilter::INFO));
        assert_eq!(hint("warn,stomphub=debug"), Some(LevelFilter::DEBUG));
        assert_eq!(hint("trace"), Some(LevelFilter::TRACE));
    }

    #[test]
    fn capped_crates_are_told_by_their_whole_name() {
        assert!(sees_secrets("tungstenite"));
        assert!(sees_secrets("tungstenite::protocol"));
        assert!(!sees_secrets("tungstenite_extra"));
        assert!(!sees_secrets("stomphub::session"));
    }
}
