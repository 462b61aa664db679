//! `sandbox-bank`: runs the sandbox bank on its own. Parses flags, starts
//! logging (to stderr), calls [`bankbot_sandbox::start`], prints one
//! `sandbox-bank: listening on http://ADDR` line to stdout for scripts to
//! wait on, and stops gracefully on SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "sandbox-bank",
    version,
    about = "A bank for demos and tests: serves bankbot's bank API on a SQLite ledger"
)]
struct Cli {
    #[command(flatten)]
    args: bankbot_sandbox::cli::Args,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Parse errors exit with status 2 (clap's usage-error code).
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    bankbot_sandbox::cli::run(cli.args).await
}
