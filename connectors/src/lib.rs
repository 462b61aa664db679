//! bankbot's integration layer: the operations the bot may ask of a bank's
//! systems ([`Bank`]), with domain types that use exact money (integer
//! minor units and an ISO 4217 code). Every call acts for one customer.
//!
//! This crate knows nothing of gRPC, storage, the NLU or the dialog. Two
//! implementations sit behind [`Bank`]: the HTTP client of the documented
//! bank API ([`http::HttpBank`], `api/bank-api.yaml`), which the sandbox
//! bank also serves, and an in-process bank ([`memory::MemoryBank`]) for
//! conversation tests and offline demos. [`wire`] holds the API's bodies.

#[cfg(feature = "http")]
pub mod http;
pub mod memory;
pub mod resilience;
pub mod wire;

use std::future::Future;
use std::pin::Pin;

/// What connector calls return: boxed so `Bank` can be used as `dyn Bank`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Exact money. `minor` is in the currency's minor units (pence, cents).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Money {
    pub minor: i64,
    pub currency: String,
}

/// A calendar day as `YYYY-MM-DD`; ordering is chronological.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(String);

impl Day {
    /// Checks the shape (`YYYY-MM-DD` with a month 01–12 and day 01–31).
    pub fn parse(s: &str) -> Result<Day> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && digits(0..4)
            && digits(5..7)
            && digits(8..10);
        let month = s.get(5..7).and_then(|m| m.parse::<u8>().ok()).unwrap_or(0);
        let day = s.get(8..10).and_then(|d| d.parse::<u8>().ok()).unwrap_or(0);
        if ok && (1..=12).contains(&month) && (1..=31).contains(&day) {
            Ok(Day(s.to_owned()))
        } else {
            Err(ConnectorError::Invalid(format!(
                "`{s}` is not a YYYY-MM-DD date"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    /// As the customer sees it: "Current account", "Savings".
    pub name: String,
    /// Words the customer may call it by: "current", "savings", "isa".
    pub nicknames: Vec<String>,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub ledger: Money,
    pub available: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub id: String,
    pub day: Day,
    pub description: String,
    /// Negative for money out.
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payee {
    pub id: String,
    pub name: String,
    pub nicknames: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardStatus {
    Active,
    Frozen,
    /// Reported lost or stolen: permanent.
    Blocked,
    /// Ordered and not yet activated.
    InTransit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub id: String,
    /// "Visa debit ending 4471".
    pub name: String,
    pub last4: String,
    pub status: CardStatus,
    /// When a card in transit was posted.
    pub dispatched: Option<Day>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    /// Derived from the confirming turn and stored before the call; the
    /// same key on every retry and status query.
    pub idempotency_key: String,
    pub from_account: String,
    pub payee: String,
    pub amount: Money,
}

/// How a transfer ended. `Unknown` means money may have moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    Settled {
        reference: String,
    },
    /// Accepted by the bank and settling: the money will move.
    Accepted {
        reference: String,
    },
    InsufficientFunds,
    LimitExceeded,
    Rejected {
        reason: String,
    },
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardChange {
    Block,
    Freeze,
    Unfreeze,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeRequest {
    pub amount: Money,
    pub day: Day,
    pub reason: String,
}

/// A one-time code the customer typed, for the code `code_id`, checked
/// against what it was sent to authorise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeCheck {
    pub code_id: String,
    pub code: String,
    pub binding: String,
}

/// A new phone number or e-mail address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    Phone(String),
    Email(String),
}

/// Why a call did not give an answer. For a transfer, `Timeout` and
/// `Malformed` after sending mean money may have moved: the caller treats
/// them as `TransferOutcome::Unknown`, never as a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    #[error("the bank's system is unavailable")]
    Unavailable,
    #[error("the bank's system did not answer in time")]
    Timeout,
    #[error("{0} not found")]
    NotFound(String),
    #[error("refused by the bank: {0}")]
    Refused(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The answer broke the API's contract (bad JSON, wrong types, an
    /// error inside a 200, too large).
    #[error("the bank's answer could not be understood: {0}")]
    Malformed(String),
    /// Failing fast: the circuit breaker is open after repeated failures.
    #[error("the bank's system is failing; not calling it for {retry_after_ms} ms")]
    CircuitOpen { retry_after_ms: u64 },
}

pub type Result<T> = std::result::Result<T, ConnectorError>;

/// Everything the bot may ask of the bank, for the customer `customer`.
///
/// Calls that change something take an idempotency key: the same key with
/// the same arguments gives the original result, however often it is sent.
pub trait Bank: Send + Sync + std::fmt::Debug {
    fn accounts<'a>(&'a self, customer: &'a str) -> BoxFuture<'a, Result<Vec<Account>>>;
    fn balance<'a>(&'a self, customer: &'a str, account: &'a str)
    -> BoxFuture<'a, Result<Balance>>;
    /// Transactions with `from <= day <= to`, newest first, at most `limit`.
    fn transactions<'a>(
        &'a self,
        customer: &'a str,
        account: &'a str,
        from: &'a Day,
        to: &'a Day,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Transaction>>>;
    fn payees<'a>(&'a self, customer: &'a str) -> BoxFuture<'a, Result<Vec<Payee>>>;
    /// Submits a transfer; `Unknown` (or an error after sending) means money
    /// may have moved, and [`Bank::transfer_status`] tells.
    fn transfer<'a>(
        &'a self,
        customer: &'a str,
        request: &'a TransferRequest,
    ) -> BoxFuture<'a, Result<TransferOutcome>>;
    /// What became of the transfer sent with `idempotency_key`: `None` when
    /// the bank never received it (sending it again is then safe).
    fn transfer_status<'a>(
        &'a self,
        customer: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<TransferOutcome>>>;
    fn cards<'a>(&'a self, customer: &'a str) -> BoxFuture<'a, Result<Vec<Card>>>;
    fn change_card<'a>(
        &'a self,
        customer: &'a str,
        card: &'a str,
        change: CardChange,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Card>>;
    /// Orders a replacement; returns the new card.
    fn replace_card<'a>(
        &'a self,
        customer: &'a str,
        card: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Card>>;
    /// Opens a dispute; returns its reference.
    fn open_dispute<'a>(
        &'a self,
        customer: &'a str,
        dispute: &'a DisputeRequest,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<String>>;
    /// Sends a one-time code to the customer's registered phone, bound to
    /// `binding` (a digest of what it authorises); returns the code's id.
    fn send_code<'a>(
        &'a self,
        customer: &'a str,
        purpose: &'a str,
        binding: &'a str,
    ) -> BoxFuture<'a, Result<String>>;
    /// Whether `code` is the code `code_id` and `binding` is what it was
    /// sent for. A code works once; the same `idempotency_key` gets the same
    /// verdict again (a turn retried after a crash).
    fn verify_code<'a>(
        &'a self,
        customer: &'a str,
        check: &'a CodeCheck,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;
    fn update_contact<'a>(
        &'a self,
        customer: &'a str,
        contact: &'a Contact,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
}
