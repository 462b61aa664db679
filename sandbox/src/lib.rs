//! The sandbox bank: an HTTP server that plays a bank for demos and tests.
//! It serves the bank API of `connectors/api/bank-api.yaml` (bodies from
//! [`bankbot_connectors::wire`]) on a SQLite database, can inject faults, and
//! has admin routes under `/sandbox` to read one-time codes and audit the
//! ledger. `bankbot serve --sandbox` starts it in-process with [`start`];
//! the `sandbox-bank` binary runs it on its own.
//!
//! # Customers
//!
//! Any well-formed `x-customer-id` is enrolled on first use with the demo
//! data of `connectors/src/memory.rs`. Every table is keyed by
//! `(customer_id, id)`: all customers see the same ids (`acc-current`), and
//! another customer's resource is a 404, exactly like a missing one.
//!
//! # Ledger invariants
//!
//! - Money moves only as *entries* of two or more *postings* that sum to zero
//!   per currency; opening balances and the seeded history are entries
//!   against `bank:equity`, payments credit `bank:clearing`. So the sum of
//!   all postings is always zero.
//! - Balances are derived (`SUM` over an account's postings), never stored,
//!   so they cannot drift from the history the customer sees.
//! - A payment, its postings and the answer stored under its idempotency key
//!   commit in one SQLite transaction (WAL, `synchronous=FULL`): after a
//!   crash either all exist or none do.
//! - `GET /sandbox/audit` recomputes these from the tables.
//!
//! # Idempotency invariants
//!
//! - A keyed write's answer is stored with the hash of its canonical request:
//!   the same key and request replay it (same status, same body, same ids),
//!   whether it was a success or a business refusal (422); the same key with
//!   another request is 422 `UK.OBIE.Resource.ConsentMismatch`; the same key
//!   while the first request runs is 409 `BANKBOT.RequestInFlight`.
//! - At most one ledger entry exists per (customer, payment key): the schema
//!   has a UNIQUE constraint on it, whatever the code above it does.

mod admin;
mod api;
mod bank;
pub mod cli;
mod clock;
mod db;
mod error;
mod faults;
mod idempotency;
mod ids;
mod ledger;
mod seed;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bankbot_connectors::wire::BASE_PATH;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{FaultScope, Faults, FaultsError, MAX_DELAY_MS};

/// How long [`Sandbox::shutdown`] lets in-flight requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to run the sandbox bank.
#[derive(Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port (see [`Sandbox::local_addr`]).
    pub listen: SocketAddr,
    /// The SQLite file, created if missing.
    pub database: PathBuf,
    /// If set, every bank-API request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Faults to start with; `PUT /sandbox/faults` changes them live.
    pub faults: Faults,
    /// One-time codes are this (4 to 8 digits) instead of 6 random digits.
    pub fixed_code: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8787)),
            database: PathBuf::from("sandbox-bank.sqlite"),
            token: None,
            faults: Faults::default(),
            fixed_code: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database", &self.database)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("faults", &self.faults)
            .field("fixed_code", &self.fixed_code)
            .finish()
    }
}

impl Config {
    fn validate(&self) -> anyhow::Result<()> {
        self.faults.validate()?;
        if let Some(token) = &self.token {
            anyhow::ensure!(
                !token.is_empty() && token.bytes().all(|b| (0x21..=0x7e).contains(&b)),
                "the token must be non-empty visible ASCII (it travels in a header)"
            );
        }
        if let Some(code) = &self.fixed_code {
            anyhow::ensure!(
                (4..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()),
                "the fixed one-time code must be 4 to 8 digits"
            );
        }
        Ok(())
    }
}

/// A running sandbox bank. Dropping the handle stops it too (gracefully,
/// in the background); [`Sandbox::shutdown`] also waits for it.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    /// Sending (or dropping) stops the server; the serving task holds the
    /// receiver.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    store: db::Store,
}

impl Sandbox {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/open-banking/v3.1`: what a client of the bank API needs.
    pub fn base_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }

    /// Stops accepting connections, lets requests in flight finish (for at
    /// most a few seconds; an injected timeout is cut short), then closes
    /// the database.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may already be gone; then there is nothing to stop.
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
        self.store.close().await;
        tracing::info!(addr = %self.addr, "sandbox-bank: stopped");
    }
}

/// Opens (creating and migrating) the database, binds `config.listen` and
/// serves the bank in a spawned task until the [`Sandbox`] is shut down or
/// dropped.
pub async fn start(config: Config) -> anyhow::Result<Sandbox> {
    config.validate()?;
    let store = db::Store::open(&config.database).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let state = api::AppState {
        store: store.clone(),
        faults: faults::FaultSwitch::new(config.faults.clone()),
        token: config.token.as_deref().map(Arc::from),
        fixed_code: config.fixed_code.as_deref().map(Arc::from),
        inflight: idempotency::InFlight::default(),
    };
    let app = api::router(state);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // A send or a dropped handle: either way, stop.
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "sandbox-bank: the server failed");
        }
    });
    tracing::info!(
        %addr,
        database = %config.database.display(),
        auth = config.token.is_some(),
        "sandbox-bank: serving the bank API"
    );
    Ok(Sandbox {
        addr,
        stop: Some(stop),
        task: Some(task),
        store,
    })
}
