//! The HTTP client of the bank API (`api/bank-api.yaml`): reqwest over
//! rustls, one [`HttpBank`] per bank connection.
//!
//! Every call:
//! - acts for one customer (`x-customer-id`) with the connector's bearer
//!   token, and carries one `x-fapi-interaction-id` across its retries;
//! - has a deadline (default 5 s, per operation configurable) covering all
//!   its attempts and waits;
//! - is retried (at most 3 attempts, jittered exponential backoff,
//!   `Retry-After` honoured) only when it is a read or carries an
//!   idempotency key;
//! - passes the connector's circuit breaker, which fails fast while open;
//! - reads at most `max_response_bytes` and follows no redirect.
//!
//! Answers are untrusted: bad JSON, wrong types, a missing `Data`, an
//! amount with too many decimals or a redirect are [`ConnectorError::Malformed`].
//! A transfer whose request may have reached the bank and whose answer is
//! not a clear verdict is [`TransferOutcome::Unknown`], never a failure.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::resilience::{
    BreakerConfig, BreakerState, CallResult, CircuitBreaker, RetryPolicy, Retryable,
    parse_retry_after,
};
use crate::wire::{self, codes};
use crate::{
    Account, Balance, Bank, BoxFuture, Card, CardChange, CardStatus, CodeCheck, ConnectorError,
    Contact, Day, DisputeRequest, Money, Payee, Result, Transaction, TransferOutcome,
    TransferRequest,
};

/// The operations, by the names per-operation deadlines use.
pub const OPERATIONS: &[&str] = &[
    "accounts",
    "balance",
    "transactions",
    "payees",
    "transfer",
    "transfer_status",
    "cards",
    "change_card",
    "replace_card",
    "open_dispute",
    "send_code",
    "verify_code",
    "update_contact",
];

/// Told about every call (for metrics): the operation, how it ended, and
/// how long it took with all its attempts; and the breaker's state after
/// each attempt.
pub trait CallObserver: Send + Sync + std::fmt::Debug {
    fn call(&self, operation: &'static str, outcome: &'static str, took: Duration);
    fn breaker(&self, open: bool);
}

/// How a call ended, as [`CallObserver::call`] names it.
fn outcome_name(result: &std::result::Result<(StatusCode, Vec<u8>), Failure>) -> &'static str {
    match result {
        Ok((status, _)) if status.is_success() => "ok",
        Ok((status, _)) if status.is_client_error() => "refused",
        Ok(_) => "unexpected_status",
        Err(f) => match f.error {
            ConnectorError::Timeout => "timeout",
            ConnectorError::Malformed(_) => "malformed",
            ConnectorError::CircuitOpen { .. } => "circuit_open",
            ConnectorError::Unavailable => "unavailable",
            ConnectorError::NotFound(_)
            | ConnectorError::Refused(_)
            | ConnectorError::Invalid(_) => "refused",
        },
    }
}

/// How to reach one bank and how patiently.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Up to and including the API prefix: `https://bank.example/open-banking/v3.1`.
    pub base_url: String,
    /// Bearer token the bank issued to bankbot.
    pub token: Option<String>,
    /// Deadline of one operation, all attempts included.
    pub deadline: Duration,
    /// Deadlines of named operations ([`OPERATIONS`]) that differ.
    pub deadlines: BTreeMap<String, Duration>,
    pub connect_timeout: Duration,
    /// Larger answers are refused as malformed.
    pub max_response_bytes: usize,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    /// PEM CA certificate(s) to trust besides the public roots (a bank's
    /// private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key for mutual TLS.
    pub identity_pem: Option<Vec<u8>>,
    /// Told about every call (metrics).
    pub observer: Option<std::sync::Arc<dyn CallObserver>>,
}

impl HttpConfig {
    pub fn new(base_url: impl Into<String>) -> HttpConfig {
        HttpConfig {
            base_url: base_url.into(),
            token: None,
            deadline: Duration::from_secs(5),
            deadlines: BTreeMap::new(),
            connect_timeout: Duration::from_secs(2),
            max_response_bytes: 1 << 20,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            ca_pem: None,
            identity_pem: None,
            observer: None,
        }
    }

    fn deadline_of(&self, op: &str) -> Duration {
        self.deadlines.get(op).copied().unwrap_or(self.deadline)
    }
}

/// A bank reached over its HTTP API.
#[derive(Debug)]
pub struct HttpBank {
    client: reqwest::Client,
    base: Url,
    config: HttpConfig,
    breaker: Mutex<CircuitBreaker>,
}

/// One request, before it is sent.
struct Request<'a> {
    op: &'static str,
    customer: &'a str,
    method: Method,
    path: Vec<&'a str>,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    key: Option<&'a str>,
}

/// A request that ended without an answer to interpret.
#[derive(Debug)]
struct Failure {
    error: ConnectorError,
    /// Whether any attempt may have reached the bank.
    maybe_sent: bool,
}

impl From<Failure> for ConnectorError {
    fn from(f: Failure) -> ConnectorError {
        f.error
    }
}

/// What one attempt came to.
enum Attempt {
    Answer(StatusCode, Vec<u8>),
    /// An answer that breaks the contract (too large): not retried, since
    /// the bank would say the same again, and not an outage for the breaker.
    Broken(ConnectorError),
    Retry {
        error: ConnectorError,
        retry_after: Option<Duration>,
        sent: bool,
        breaker: CallResult,
    },
}

/// An admitted call; recording it is mandatory, and a call dropped midway
/// (its caller went away) counts as a failure.
struct Permit<'a> {
    breaker: &'a Mutex<CircuitBreaker>,
    started: Instant,
    done: bool,
}

impl Permit<'_> {
    fn record(mut self, result: CallResult) {
        self.done = true;
        let now = Instant::now();
        lock(self.breaker).record(now, result, now - self.started);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            let now = Instant::now();
            lock(self.breaker).record(now, CallResult::Failure, now - self.started);
        }
    }
}

fn lock(m: &Mutex<CircuitBreaker>) -> std::sync::MutexGuard<'_, CircuitBreaker> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn malformed(what: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Malformed(what.to_string())
}

fn json<T: Serialize>(body: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| ConnectorError::Invalid(e.to_string()))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| malformed(format!("unexpected body: {e}")))
}

fn money(a: &wire::Amount, negative: bool) -> Result<Money> {
    let minor = wire::amount_to_minor(&a.amount, &a.currency).map_err(malformed)?;
    if minor < 0 {
        return Err(malformed(
            "a negative amount beside a credit/debit indicator",
        ));
    }
    Ok(Money {
        minor: if negative { -minor } else { minor },
        currency: a.currency.clone(),
    })
}

fn amount(m: &Money) -> Result<wire::Amount> {
    if wire::minor_digits(&m.currency).is_none() {
        return Err(ConnectorError::Invalid(format!(
            "`{}` is not a currency",
            m.currency
        )));
    }
    Ok(wire::Amount {
        amount: wire::minor_to_amount(m.minor, &m.currency),
        currency: m.currency.clone(),
    })
}

fn card(c: wire::Card) -> Result<Card> {
    if c.last4.len() != 4 || !c.last4.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("card last4 `{}`", c.last4)));
    }
    Ok(Card {
        id: c.card_id,
        name: c.name,
        last4: c.last4,
        status: match c.status {
            wire::CardStatus::Active => CardStatus::Active,
            wire::CardStatus::Frozen => CardStatus::Frozen,
            wire::CardStatus::Blocked => CardStatus::Blocked,
            wire::CardStatus::InTransit => CardStatus::InTransit,
        },
        dispatched: c
            .dispatched_on
            .map(|d| Day::parse(&d).map_err(|_| malformed(format!("date `{d}`"))))
            .transpose()?,
    })
}

fn payment_outcome(p: &wire::DomesticPayment) -> TransferOutcome {
    match p.status {
        wire::PaymentStatus::AcceptedSettlementCompleted => TransferOutcome::Settled {
            reference: p.domestic_payment_id.clone(),
        },
        wire::PaymentStatus::Pending | wire::PaymentStatus::AcceptedSettlementInProcess => {
            TransferOutcome::Accepted {
                reference: p.domestic_payment_id.clone(),
            }
        }
        wire::PaymentStatus::Rejected => TransferOutcome::Rejected {
            reason: p.status_reason.clone().unwrap_or_default(),
        },
    }
}

/// The first error code and message of an error body, if it is one.
fn error_of(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<wire::ErrorResponse>(body) {
        Ok(e) => {
            let first = e.errors.first();
            (
                first.map(|d| d.error_code.clone()).unwrap_or_default(),
                first.map_or(e.message, |d| d.message.clone()),
            )
        }
        Err(_) => (String::new(), String::new()),
    }
}

/// The error an answer that is not the expected success stands for.
fn status_error(status: StatusCode, body: &[u8], what: &str) -> ConnectorError {
    let (code, message) = error_of(body);
    match status.as_u16() {
        404 => ConnectorError::NotFound(what.to_owned()),
        400 => ConnectorError::Invalid(if message.is_empty() {
            "the bank refused the request as malformed".into()
        } else {
            message
        }),
        401 | 403 => {
            tracing::error!(
                status = status.as_u16(),
                "the bank refused bankbot's credentials"
            );
            ConnectorError::Unavailable
        }
        422 => ConnectorError::Refused(if message.is_empty() { code } else { message }),
        s if (200..300).contains(&s) => malformed(format!("status {s} where another was expected")),
        s if (300..400).contains(&s) => {
            malformed(format!("a redirect ({s}), which is not followed"))
        }
        _ => ConnectorError::Unavailable,
    }
}

impl HttpBank {
    pub fn new(config: HttpConfig) -> Result<HttpBank> {
        let mut base = Url::parse(&config.base_url)
            .map_err(|e| ConnectorError::Invalid(format!("bank URL `{}`: {e}", config.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ConnectorError::Invalid(format!(
                "bank URL `{}` is not http(s)",
                config.base_url
            )));
        }
        // Segments are appended: the prefix must not end with an empty one.
        if base.path().ends_with('/') {
            let trimmed = base.path().trim_end_matches('/').to_owned();
            base.set_path(&trimmed);
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("bankbot/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ConnectorError::Invalid(format!("bank CA certificate: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &config.identity_pem {
            builder =
                builder
                    .identity(reqwest::Identity::from_pem(pem).map_err(|e| {
                        ConnectorError::Invalid(format!("client certificate: {e}"))
                    })?);
        }
        let client = builder
            .build()
            .map_err(|e| ConnectorError::Invalid(format!("HTTP client: {e}")))?;
        Ok(HttpBank {
            client,
            base,
            breaker: Mutex::new(CircuitBreaker::new(config.breaker.clone())),
            config,
        })
    }

    /// The breaker's state now (for metrics and tests).
    pub fn breaker_state(&self) -> BreakerState {
        lock(&self.breaker).state()
    }

    fn admit(&self) -> std::result::Result<Permit<'_>, ConnectorError> {
        let now = Instant::now();
        lock(&self.breaker)
            .admit(now)
            .map_err(|r| ConnectorError::CircuitOpen {
                retry_after_ms: u64::try_from(r.retry_after.as_millis()).unwrap_or(u64::MAX),
            })?;
        Ok(Permit {
            breaker: &self.breaker,
            started: now,
            done: false,
        })
    }

    fn url(&self, r: &Request<'_>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(r.path.iter().copied());
        }
        if !r.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(r.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// [`Self::attempts`], observed.
    async fn exchange(
        &self,
        r: &Request<'_>,
    ) -> std::result::Result<(StatusCode, Vec<u8>), Failure> {
        let started = Instant::now();
        let result = self.attempts(r).await;
        if let Some(o) = &self.config.observer {
            o.call(r.op, outcome_name(&result), started.elapsed());
            o.breaker(matches!(self.breaker_state(), BreakerState::Open { .. }));
        }
        result
    }

    /// Sends `r` until it gets an answer to interpret, the retry schedule
    /// gives up, or the deadline passes.
    async fn attempts(
        &self,
        r: &Request<'_>,
    ) -> std::result::Result<(StatusCode, Vec<u8>), Failure> {
        let deadline = self.config.deadline_of(r.op);
        let started = Instant::now();
        let retryable = if r.method == Method::GET || r.key.is_some() {
            Retryable::Yes
        } else {
            Retryable::No
        };
        let interaction = uuid::Uuid::new_v4().to_string();
        let url = self.url(r);
        let mut maybe_sent = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(remaining) = deadline
                .checked_sub(started.elapsed())
                .filter(|d| !d.is_zero())
            else {
                return Err(Failure {
                    error: ConnectorError::Timeout,
                    maybe_sent,
                });
            };
            let permit = self
                .admit()
                .map_err(|error| Failure { error, maybe_sent })?;
            let outcome = self.attempt(r, &url, &interaction, remaining).await;
            let (error, retry_after) = match outcome {
                Attempt::Answer(status, body) => {
                    permit.record(CallResult::Success);
                    return Ok((status, body));
                }
                Attempt::Broken(error) => {
                    permit.record(CallResult::Success);
                    return Err(Failure {
                        error,
                        maybe_sent: true,
                    });
                }
                Attempt::Retry {
                    error,
                    retry_after,
                    sent,
                    breaker,
                } => {
                    permit.record(breaker);
                    maybe_sent |= sent;
                    (error, retry_after)
                }
            };
            let wait =
                self.config
                    .retry
                    .next_wait(attempt, retryable, retry_after, rand::random::<f64>());
            match wait {
                Some(w) if started.elapsed() + w < deadline => {
                    tracing::debug!(op = r.op, attempt, wait_ms = w.as_millis() as u64, error = %error, "retrying a bank call");
                    tokio::time::sleep(w).await;
                }
                _ => {
                    return Err(Failure { error, maybe_sent });
                }
            }
        }
    }

    async fn attempt(
        &self,
        r: &Request<'_>,
        url: &Url,
        interaction: &str,
        remaining: Duration,
    ) -> Attempt {
        let mut req = self
            .client
            .request(r.method.clone(), url.clone())
            .timeout(remaining)
            .header(wire::CUSTOMER_HEADER, r.customer)
            .header(wire::INTERACTION_HEADER, interaction)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = &self.config.token {
            req = req.bearer_auth(token);
        }
        if let Some(key) = r.key {
            req = req.header(wire::IDEMPOTENCY_HEADER, key);
        }
        if let Some(body) = &r.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                let connect = e.is_connect();
                let error = if e.is_timeout() {
                    ConnectorError::Timeout
                } else {
                    ConnectorError::Unavailable
                };
                return Attempt::Retry {
                    error,
                    retry_after: None,
                    sent: !connect,
                    breaker: CallResult::Failure,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match self.read_capped(response).await {
            Ok(b) => b,
            Err(ConnectorError::Timeout) => {
                return Attempt::Retry {
                    error: ConnectorError::Timeout,
                    retry_after: None,
                    sent: true,
                    breaker: CallResult::Failure,
                };
            }
            Err(error @ ConnectorError::Malformed(_)) => return Attempt::Broken(error),
            // The connection broke mid-answer: worth another attempt.
            Err(error) => {
                return Attempt::Retry {
                    error,
                    retry_after: None,
                    sent: true,
                    breaker: CallResult::Failure,
                };
            }
        };
        match status.as_u16() {
            429 | 503 | 502 | 504 | 500 => Attempt::Retry {
                error: ConnectorError::Unavailable,
                retry_after,
                sent: true,
                breaker: CallResult::Failure,
            },
            // Still being processed under this key: ask again later.
            409 if r.key.is_some() => Attempt::Retry {
                error: ConnectorError::Unavailable,
                retry_after,
                sent: true,
                breaker: CallResult::Success,
            },
            s if s >= 500 => Attempt::Retry {
                error: ConnectorError::Unavailable,
                retry_after,
                sent: true,
                breaker: CallResult::Failure,
            },
            _ => Attempt::Answer(status, body),
        }
    }

    /// The body, refusing more than the cap (announced or actual).
    async fn read_capped(&self, mut response: reqwest::Response) -> Result<Vec<u8>> {
        let cap = self.config.max_response_bytes;
        if response.content_length().is_some_and(|n| n > cap as u64) {
            return Err(malformed(format!("an answer larger than {cap} bytes")));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > cap {
                        return Err(malformed(format!("an answer larger than {cap} bytes")));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) if e.is_timeout() => return Err(ConnectorError::Timeout),
                Err(_) => return Err(ConnectorError::Unavailable),
            }
        }
    }

    /// A call whose success is `expect` with a `Data` body of type `T`.
    async fn fetch<T: DeserializeOwned>(
        &self,
        r: Request<'_>,
        expect: StatusCode,
        what: &str,
    ) -> Result<T> {
        let (status, body) = self.exchange(&r).await?;
        if status != expect {
            return Err(status_error(status, &body, what));
        }
        Ok(parse::<wire::Envelope<T>>(&body)?.data)
    }

    fn get<'a>(&self, op: &'static str, customer: &'a str, path: Vec<&'a str>) -> Request<'a> {
        Request {
            op,
            customer,
            method: Method::GET,
            path,
            query: Vec::new(),
            body: None,
            key: None,
        }
    }

    fn write<'a>(
        &self,
        op: &'static str,
        customer: &'a str,
        method: Method,
        path: Vec<&'a str>,
        body: Option<Vec<u8>>,
        key: &'a str,
    ) -> Request<'a> {
        Request {
            op,
            customer,
            method,
            path,
            query: Vec::new(),
            body,
            key: Some(key),
        }
    }

    async fn transfer_inner(&self, customer: &str, t: &TransferRequest) -> Result<TransferOutcome> {
        let body = json(&wire::Envelope {
            data: wire::PaymentRequest {
                initiation: wire::Initiation {
                    instruction_identification: short_id(&t.idempotency_key),
                    debtor_account: wire::DebtorAccount {
                        account_id: t.from_account.clone(),
                    },
                    payee_id: t.payee.clone(),
                    instructed_amount: amount(&t.amount)?,
                    reference: None,
                },
            },
        })?;
        let r = self.write(
            "transfer",
            customer,
            Method::POST,
            vec!["domestic-payments"],
            Some(body),
            &t.idempotency_key,
        );
        let (status, body) = match self.exchange(&r).await {
            Ok(answer) => answer,
            // Nothing reached the bank: a plain failure, safe to retry.
            Err(Failure {
                error,
                maybe_sent: false,
            }) => return Err(error),
            Err(Failure { error, .. }) => {
                tracing::warn!(error = %error, "transfer outcome unknown");
                return Ok(TransferOutcome::Unknown);
            }
        };
        match status.as_u16() {
            201 => match parse::<wire::Envelope<wire::DomesticPayment>>(&body) {
                Ok(p) => Ok(payment_outcome(&p.data)),
                // Accepted, but the answer is unreadable: money may have moved.
                Err(e) => {
                    tracing::warn!(error = %e, "transfer answer unreadable; outcome unknown");
                    Ok(TransferOutcome::Unknown)
                }
            },
            422 => {
                let (code, message) = error_of(&body);
                Ok(match code.as_str() {
                    codes::INSUFFICIENT_FUNDS => TransferOutcome::InsufficientFunds,
                    codes::LIMIT_EXCEEDED => TransferOutcome::LimitExceeded,
                    codes::CONSENT_MISMATCH => {
                        tracing::error!(
                            "the bank saw this idempotency key with another payment; not paid again"
                        );
                        TransferOutcome::Rejected {
                            reason: "idempotency key conflict".into(),
                        }
                    }
                    "" => {
                        tracing::warn!("422 without an error code; outcome unknown");
                        TransferOutcome::Unknown
                    }
                    _ => TransferOutcome::Rejected { reason: message },
                })
            }
            400 | 401 | 403 | 404 => Err(status_error(status, &body, "account")),
            // Anything else after the bank saw the request is not a verdict.
            _ => Ok(TransferOutcome::Unknown),
        }
    }
}

/// A payment's `InstructionIdentification` (≤ 35 characters) from its key.
fn short_id(key: &str) -> String {
    let skip = key.chars().count().saturating_sub(35);
    key.chars().skip(skip).collect()
}

impl Bank for HttpBank {
    fn accounts<'a>(&'a self, customer: &'a str) -> BoxFuture<'a, Result<Vec<Account>>> {
        Box::pin(async move {
            let data: wire::Accounts = self
                .fetch(
                    self.get("accounts", customer, vec!["accounts"]),
                    StatusCode::OK,
                    "accounts",
                )
                .await?;
            Ok(data
                .account
                .into_iter()
                .map(|a| Account {
                    id: a.account_id,
                    name: a.nickname,
                    nicknames: a.aliases,
                    currency: a.currency,
                })
                .collect())
        })
    }

    fn balance<'a>(
        &'a self,
        customer: &'a str,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Balance>> {
        Box::pin(async move {
            let data: wire::Balances = self
                .fetch(
                    self.get("balance", customer, vec!["accounts", account, "balances"]),
                    StatusCode::OK,
                    "account",
                )
                .await?;
            let pick = |kind: wire::BalanceType| -> Result<Money> {
                let b = data
                    .balance
                    .iter()
                    .find(|b| b.kind == kind)
                    .ok_or_else(|| malformed(format!("no {kind:?} balance")))?;
                money(
                    &b.amount,
                    b.credit_debit_indicator == wire::CreditDebit::Debit,
                )
            };
            let ledger = pick(wire::BalanceType::InterimBooked)?;
            let available = pick(wire::BalanceType::InterimAvailable)?;
            if ledger.currency != available.currency {
                return Err(malformed("balances in two currencies"));
            }
            Ok(Balance { ledger, available })
        })
    }

    fn transactions<'a>(
        &'a self,
        customer: &'a str,
        account: &'a str,
        from: &'a Day,
        to: &'a Day,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Transaction>>> {
        Box::pin(async move {
            const MAX_PAGES: usize = 20;
            let mut out = Vec::new();
            let mut page: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let mut r = self.get(
                    "transactions",
                    customer,
                    vec!["accounts", account, "transactions"],
                );
                r.query = vec![
                    ("fromBookingDate", from.as_str().to_owned()),
                    ("toBookingDate", to.as_str().to_owned()),
                    ("pageSize", limit.clamp(1, 100).to_string()),
                ];
                if let Some(p) = &page {
                    r.query.push(("page", p.clone()));
                }
                let (status, body) = self.exchange(&r).await?;
                if status != StatusCode::OK {
                    return Err(status_error(status, &body, "account"));
                }
                let p: wire::TransactionPage = parse(&body)?;
                for t in p.data.transaction {
                    let day = Day::parse(&t.booking_date)
                        .map_err(|_| malformed(format!("date `{}`", t.booking_date)))?;
                    if &day < from || &day > to {
                        return Err(malformed("a transaction outside the asked dates"));
                    }
                    out.push(Transaction {
                        id: t.transaction_id,
                        day,
                        description: t.transaction_information,
                        amount: money(
                            &t.amount,
                            t.credit_debit_indicator == wire::CreditDebit::Debit,
                        )?,
                    });
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
                match p.links.next {
                    Some(next) if !next.is_empty() => page = Some(next),
                    _ => return Ok(out),
                }
            }
            Ok(out)
        })
    }

    fn payees<'a>(&'a self, customer: &'a str) -> BoxFuture<'a, Result<Vec<Payee>>> {
        Box::pin(async move {
            let data: wire::Payees = self
                .fetch(
                    self.get("payees", customer, vec!["payees"]),
                    StatusCode::OK,
                    "payees",
                )
                .await?;
            Ok(data
                .payee
                .into_iter()
                .map(|p| Payee {
                    id: p.payee_id,
                    name: p.name,
                    nicknames: p.aliases,
                })
                .collect())
        })
    }

    fn transfer<'a>(
        &'a self,
        customer: &'a str,
        request: &'a TransferRequest,
    ) -> BoxFuture<'a, Result<TransferOutcome>> {
        Box::pin(self.transfer_inner(customer, request))
    }

    fn transfer_status<'a>(
        &'a self,
        customer: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<TransferOutcome>>> {
        Box::pin(async move {
            let r = self.get(
                "transfer_status",
                customer,
                vec!["domestic-payments", "by-idempotency-key", idempotency_key],
            );
            let (status, body) = self.exchange(&r).await?;
            match status.as_u16() {
                200 => Ok(Some(payment_outcome(
                    &parse::<wire::Envelope<wire::DomesticPayment>>(&body)?.data,
                ))),
                404 => Ok(None),
                _ => Err(status_error(status, &body, "payment")),
            }
        })
    }

    fn cards<'a>(&'a self, customer: &'a str) -> BoxFuture<'a, Result<Vec<Card>>> {
        Box::pin(async move {
            let data: wire::Cards = self
                .fetch(
                    self.get("cards", customer, vec!["cards"]),
                    StatusCode::OK,
                    "cards",
                )
                .await?;
            data.card.into_iter().map(card).collect()
        })
    }

    fn change_card<'a>(
        &'a self,
        customer: &'a str,
        card_id: &'a str,
        change: CardChange,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Card>> {
        Box::pin(async move {
            let status = match change {
                CardChange::Block => wire::CardStatus::Blocked,
                CardChange::Freeze => wire::CardStatus::Frozen,
                CardChange::Unfreeze => wire::CardStatus::Active,
            };
            let body = json(&wire::Envelope {
                data: wire::CardStatusChange { status },
            })?;
            let c: wire::Card = self
                .fetch(
                    self.write(
                        "change_card",
                        customer,
                        Method::PUT,
                        vec!["cards", card_id, "status"],
                        Some(body),
                        idempotency_key,
                    ),
                    StatusCode::OK,
                    "card",
                )
                .await?;
            card(c)
        })
    }

    fn replace_card<'a>(
        &'a self,
        customer: &'a str,
        card_id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Card>> {
        Box::pin(async move {
            let c: wire::Card = self
                .fetch(
                    self.write(
                        "replace_card",
                        customer,
                        Method::POST,
                        vec!["cards", card_id, "replacements"],
                        None,
                        idempotency_key,
                    ),
                    StatusCode::CREATED,
                    "card",
                )
                .await?;
            card(c)
        })
    }

    fn open_dispute<'a>(
        &'a self,
        customer: &'a str,
        dispute: &'a DisputeRequest,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let body = json(&wire::Envelope {
                data: wire::DisputeRequest {
                    amount: amount(&dispute.amount)?,
                    booking_date: dispute.day.as_str().to_owned(),
                    reason: dispute.reason.clone(),
                },
            })?;
            let d: wire::Dispute = self
                .fetch(
                    self.write(
                        "open_dispute",
                        customer,
                        Method::POST,
                        vec!["disputes"],
                        Some(body),
                        idempotency_key,
                    ),
                    StatusCode::CREATED,
                    "transaction",
                )
                .await?;
            Ok(d.dispute_id)
        })
    }

    fn send_code<'a>(
        &'a self,
        customer: &'a str,
        purpose: &'a str,
        binding: &'a str,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let body = json(&wire::Envelope {
                data: wire::CodeRequest {
                    purpose: purpose.to_owned(),
                    binding: binding.to_owned(),
                },
            })?;
            // Not keyed: a retried send could text the customer twice, so it
            // is sent once (the customer can ask for another code).
            let r = Request {
                op: "send_code",
                customer,
                method: Method::POST,
                path: vec!["one-time-codes"],
                query: Vec::new(),
                body: Some(body),
                key: None,
            };
            let sent: wire::CodeSent = self.fetch(r, StatusCode::CREATED, "customer").await?;
            if sent.code_id.is_empty() {
                return Err(malformed("an empty code id"));
            }
            Ok(sent.code_id)
        })
    }

    fn verify_code<'a>(
        &'a self,
        customer: &'a str,
        check: &'a CodeCheck,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let body = json(&wire::Envelope {
                data: wire::CodeCheck {
                    code: check.code.clone(),
                    binding: check.binding.clone(),
                },
            })?;
            let v: wire::CodeVerdict = self
                .fetch(
                    self.write(
                        "verify_code",
                        customer,
                        Method::POST,
                        vec!["one-time-codes", &check.code_id, "verification"],
                        Some(body),
                        idempotency_key,
                    ),
                    StatusCode::OK,
                    "code",
                )
                .await?;
            Ok(v.verified)
        })
    }

    fn update_contact<'a>(
        &'a self,
        customer: &'a str,
        contact: &'a Contact,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let change = match contact {
                Contact::Phone(p) => wire::ContactChange {
                    mobile_number: Some(p.clone()),
                    ..Default::default()
                },
                Contact::Email(e) => wire::ContactChange {
                    email_address: Some(e.clone()),
                    ..Default::default()
                },
            };
            let r = self.write(
                "update_contact",
                customer,
                Method::PUT,
                vec!["contact-details"],
                Some(json(&wire::Envelope { data: change })?),
                idempotency_key,
            );
            let (status, body) = self.exchange(&r).await?;
            if status != StatusCode::NO_CONTENT {
                return Err(status_error(status, &body, "customer"));
            }
            Ok(())
        })
    }
}
