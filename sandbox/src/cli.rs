//! The sandbox bank as a command: its flags ([`Args`]) and [`run`], shared
//! by the `sandbox-bank` binary and `bankbot sandbox-bank`. Parses flags,
//! starts the bank, prints one `sandbox-bank: listening on http://ADDR`
//! line to stdout for scripts to wait on, and stops gracefully on SIGINT or
//! SIGTERM. Logging is the caller's.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::{Config, FaultScope, Faults, MAX_DELAY_MS};

/// The sandbox bank's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// SQLite database file, created if missing.
    #[arg(
        long = "db",
        value_name = "PATH",
        default_value = "sandbox-bank.sqlite"
    )]
    pub database: PathBuf,
    /// Require `Authorization: Bearer TOKEN` on the bank API.
    #[arg(long, env = "SANDBOX_BANK_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub token: Option<String>,
    /// Milliseconds added to every request in scope.
    #[arg(long, default_value_t = 0, value_parser = parse_delay)]
    pub latency_ms: u64,
    /// Share of requests answered 503 (Retry-After: 1), 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, allow_negative_numbers = true)]
    pub error_rate: f64,
    /// Share of requests answered only after --timeout-ms, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, allow_negative_numbers = true)]
    pub timeout_rate: f64,
    /// How long a timeout fault holds the answer.
    #[arg(long, default_value_t = 30_000, value_parser = parse_delay)]
    pub timeout_ms: u64,
    /// Share of payments after whose commit the process aborts, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, allow_negative_numbers = true)]
    pub crash_after_apply_rate: f64,
    /// Which requests faults apply to: all, writes or payments.
    #[arg(long, default_value_t = FaultScope::All)]
    pub fault_scope: FaultScope,
    /// Send this code (4 to 8 digits) instead of random one-time codes.
    #[arg(long, value_parser = parse_code)]
    pub fixed_code: Option<String>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("must be from 0 to 1, got {s}"))
    }
}

fn parse_delay(s: &str) -> Result<u64, String> {
    let ms: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of milliseconds"))?;
    if ms <= MAX_DELAY_MS {
        Ok(ms)
    } else {
        Err(format!("must be at most {MAX_DELAY_MS} ms, got {s}"))
    }
}

fn parse_token(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Ok(s.to_owned())
    } else {
        Err("must be non-empty visible ASCII (it travels in a header)".to_owned())
    }
}

fn parse_code(s: &str) -> Result<String, String> {
    if (4..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err(format!("must be 4 to 8 digits, got `{s}`"))
    }
}

impl Args {
    pub fn into_config(self) -> Config {
        Config {
            listen: self.listen,
            database: self.database,
            token: self.token,
            faults: Faults {
                latency_ms: self.latency_ms,
                error_rate: self.error_rate,
                timeout_rate: self.timeout_rate,
                timeout_ms: self.timeout_ms,
                crash_after_apply_rate: self.crash_after_apply_rate,
                scope: self.fault_scope,
            },
            fixed_code: self.fixed_code,
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "sandbox-bank: cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "sandbox-bank: cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Runs the bank until SIGINT or SIGTERM.
pub async fn run(args: Args) -> ExitCode {
    let sandbox = match crate::start(args.into_config()).await {
        Ok(sandbox) => sandbox,
        Err(e) => {
            eprintln!("sandbox-bank: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let announced = writeln!(
        stdout,
        "sandbox-bank: listening on http://{}",
        sandbox.local_addr()
    )
    .and_then(|()| stdout.flush());
    drop(stdout);
    if let Err(e) = announced {
        eprintln!("sandbox-bank: cannot write to stdout: {e}");
    }
    shutdown_signal().await;
    tracing::info!("sandbox-bank: shutting down");
    sandbox.shutdown().await;
    ExitCode::SUCCESS
}
