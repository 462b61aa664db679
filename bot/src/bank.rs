//! The bank as the service uses it: the connector chosen by the settings,
//! and the reconciler that gives every journalled payment a final outcome.
//!
//! The reconciler runs in every replica. Each round it takes payments that
//! are not final and were not touched for `reconcile_after_ms` (longer than
//! a turn's bank call may take), leases each one (so replicas do not work
//! on the same payment at once), and asks the bank what became of its key:
//! a verdict is recorded; a key the bank never received is sent again with
//! the same key (the bank applies a key once, so this cannot pay twice).
//! Nothing it does depends on which process started the payment, so a
//! payment left behind by a killed replica is finished by any other, or by
//! the same one after its restart.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bankbot_connectors::http::{CallObserver, HttpBank, HttpConfig};
use bankbot_connectors::memory::MemoryBank;
use bankbot_connectors::resilience::BreakerConfig;
use bankbot_connectors::{Bank, ConnectorError, Money, TransferOutcome, TransferRequest};

use crate::settings::{BankSettings, BotSettings};
use crate::store::{Event, Payment, PaymentState, Store};

/// Where the reconciler's messages to customers go once stored (the live
/// streams of this replica).
pub type Notify = dyn Fn(Vec<Event>) + Send + Sync;

/// The connector the settings name: the bank API over HTTP when
/// `bank.url` is set (the sandbox bank's URL with `--sandbox`), else the
/// in-process demo bank.
pub fn connect(
    settings: &BankSettings,
    observer: Option<Arc<dyn CallObserver>>,
) -> anyhow::Result<Arc<dyn Bank>> {
    if settings.url.is_empty() {
        tracing::warn!(
            "no bank configured (bank.url, --sandbox): the in-process demo bank answers; nothing is real"
        );
        return Ok(Arc::new(MemoryBank::new()));
    }
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).with_context(|| format!("reading the bank {what} {}", p.display()))
    };
    let mut c = HttpConfig::new(settings.url.clone());
    if let Some(p) = &settings.token_file {
        let token = String::from_utf8(read(p, "token file")?)
            .with_context(|| format!("{} is not text", p.display()))?;
        let token = token.trim();
        // It travels in a header: an empty or unprintable token would only
        // show up later as every call refused.
        anyhow::ensure!(
            !token.is_empty() && token.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "the bank token file {} must hold one token of visible ASCII characters",
            p.display()
        );
        c.token = Some(token.to_owned());
    }
    c.deadline = Duration::from_millis(settings.deadline_ms);
    c.deadlines = settings
        .deadlines_ms
        .iter()
        .map(|(op, ms)| (op.clone(), Duration::from_millis(*ms)))
        .collect();
    c.max_response_bytes =
        usize::try_from(settings.max_response_kib.saturating_mul(1024)).unwrap_or(usize::MAX);
    if let Some(p) = &settings.ca_file {
        c.ca_pem = Some(read(p, "CA file")?);
    }
    if let Some(p) = &settings.client_identity_file {
        c.identity_pem = Some(read(p, "client identity file")?);
    }
    let b = &settings.breaker;
    c.breaker = BreakerConfig {
        window: b.window,
        min_calls: b.min_calls,
        failure_ratio: f64::from(b.failure_percent) / 100.0,
        slow_ratio: f64::from(b.slow_percent) / 100.0,
        slow_call: Duration::from_millis(b.slow_call_ms),
        open_for: Duration::from_millis(b.open_ms),
        probes: b.probes,
    };
    c.observer = observer;
    let bank = HttpBank::new(c).map_err(|e| anyhow::anyhow!("bank connector: {e}"))?;
    tracing::info!(url = %settings.url, "bank connector ready");
    Ok(Arc::new(bank))
}

/// How the journal records a transfer's outcome: its state and detail
/// (the bank's reference, or why it was refused).
pub fn journal_entry(outcome: &TransferOutcome) -> (PaymentState, Option<String>) {
    match outcome {
        TransferOutcome::Settled { reference } => (PaymentState::Settled, Some(reference.clone())),
        TransferOutcome::Accepted { reference } => {
            (PaymentState::Accepted, Some(reference.clone()))
        }
        TransferOutcome::InsufficientFunds => {
            (PaymentState::Rejected, Some("insufficient funds".into()))
        }
        TransferOutcome::LimitExceeded => (PaymentState::Rejected, Some("limit exceeded".into())),
        TransferOutcome::Rejected { reason } => (PaymentState::Rejected, Some(reason.clone())),
        TransferOutcome::Unknown => (PaymentState::Unknown, None),
    }
}

/// What one reconciliation round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub examined: usize,
    pub finished: usize,
    /// Sent again under the same key because the bank never received them.
    pub resent: usize,
    /// Still without a final outcome (the bank could not say).
    pub open: usize,
}

/// How long a payment is leased to one reconciler.
const LEASE_MS: i64 = 30_000;
/// How soon a payment the bank could not answer for is tried again.
const RETRY_MS: i64 = 1_000;
/// Payments taken per round.
const BATCH: i64 = 64;

/// One pass over the open payments.
pub async fn reconcile(
    store: &Store,
    bank: &dyn Bank,
    idle: Duration,
    texts: &BotSettings,
    notify: &Notify,
) -> anyhow::Result<Round> {
    let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
    let mut round = Round::default();
    for p in store.open_payments(idle_ms, BATCH).await? {
        if !store
            .lease_payment(&p.new.idempotency_key, LEASE_MS)
            .await?
        {
            continue;
        }
        round.examined += 1;
        match resolve(store, bank, &p, texts, notify).await {
            Ok(Resolution::Final) => round.finished += 1,
            Ok(Resolution::Resent(true)) => {
                round.resent += 1;
                round.finished += 1;
            }
            Ok(Resolution::Resent(false)) => {
                round.resent += 1;
                round.open += 1;
            }
            Ok(Resolution::Open) => round.open += 1,
            Err(e) => {
                round.open += 1;
                tracing::warn!(key = %p.new.idempotency_key, error = %e, "payment not reconciled yet");
                store
                    .release_payment(&p.new.idempotency_key, RETRY_MS)
                    .await?;
            }
        }
    }
    Ok(round)
}

enum Resolution {
    Final,
    /// Sent again; whether that gave a final outcome.
    Resent(bool),
    Open,
}

async fn resolve(
    store: &Store,
    bank: &dyn Bank,
    p: &Payment,
    texts: &BotSettings,
    notify: &Notify,
) -> Result<Resolution, anyhow::Error> {
    let key = &p.new.idempotency_key;
    let customer = &p.new.customer_id;
    let status = bank
        .transfer_status(customer, key)
        .await
        .map_err(|e| anyhow::anyhow!("status query: {e}"))?;
    let (outcome, resent) = match status {
        Some(o) => (o, false),
        None => {
            let request = TransferRequest {
                idempotency_key: key.clone(),
                from_account: p.new.from_account.clone(),
                payee: p.new.payee.clone(),
                amount: Money {
                    minor: p.new.amount_minor,
                    currency: p.new.currency.clone(),
                },
            };
            match bank.transfer(customer, &request).await {
                Ok(o) => (o, true),
                // Still not sent; the next round tries again.
                Err(
                    e @ (ConnectorError::Unavailable
                    | ConnectorError::CircuitOpen { .. }
                    | ConnectorError::Timeout
                    | ConnectorError::Malformed(_)),
                ) => return Err(anyhow::anyhow!("resend: {e}")),
                Err(e) => (
                    TransferOutcome::Rejected {
                        reason: e.to_string(),
                    },
                    true,
                ),
            }
        }
    };
    let (state, detail) = journal_entry(&outcome);
    let from = [
        PaymentState::Confirmed,
        PaymentState::Submitted,
        PaymentState::Accepted,
        PaymentState::Unknown,
    ];
    // The customer has not heard a verdict unless the payment was already
    // accepted (told "done"): tell them now, in the same transaction.
    let untold = p.state != PaymentState::Accepted;
    let notice = match (&state, untold) {
        (PaymentState::Settled | PaymentState::Accepted, true) => Some(
            texts
                .payment_done_notice
                .replace("{amount}", &amount_text(p))
                .replace("{reference}", detail.as_deref().unwrap_or("")),
        ),
        (PaymentState::Rejected, true) => Some(
            texts
                .payment_failed_notice
                .replace("{amount}", &amount_text(p))
                .replace(
                    "{reason}",
                    detail.as_deref().unwrap_or("refused by the bank"),
                ),
        ),
        _ => None,
    };
    match notice {
        Some(text) => {
            let (_, events) = store
                .move_payment_and_tell(key, &from, state, detail.as_deref(), &text)
                .await?;
            if !events.is_empty() {
                notify(events);
            }
        }
        None => {
            store
                .move_payment(key, &from, state, detail.as_deref())
                .await?;
        }
    }
    if state.is_final() {
        tracing::info!(key = %key, state = state.as_str(), resent, "payment reconciled");
    }
    Ok(match (state.is_final(), resent) {
        (f, true) => Resolution::Resent(f),
        (true, false) => Resolution::Final,
        (false, false) => Resolution::Open,
    })
}

fn amount_text(p: &Payment) -> String {
    bankbot_dialog::render::money(&bankbot_dialog::state::Money {
        minor: p.new.amount_minor,
        currency: p.new.currency.clone(),
    })
}

/// The reconciler's schedule and texts.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub interval: Duration,
    /// A payment untouched this long is the reconciler's.
    pub idle: Duration,
    pub texts: BotSettings,
}

/// Reconciles every `interval` until `stop` resolves; a first round runs at
/// once (a restart finishes what the previous process left).
pub async fn run_reconciler(
    store: Store,
    bank: Arc<dyn Bank>,
    config: ReconcilerConfig,
    notify: Arc<Notify>,
    stop: impl Future<Output = ()>,
) {
    let ReconcilerConfig {
        interval,
        idle,
        texts,
    } = config;
    let mut stop = std::pin::pin!(stop);
    loop {
        match reconcile(&store, bank.as_ref(), idle, &texts, notify.as_ref()).await {
            Ok(r) if r.examined > 0 => tracing::info!(
                examined = r.examined,
                finished = r.finished,
                resent = r.resent,
                open = r.open,
                "reconciliation round"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reconciliation round failed"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bank_token_file_must_hold_a_usable_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        let settings = BankSettings {
            url: "http://127.0.0.1:1/open-banking/v3.1".into(),
            token_file: Some(file.clone()),
            ..BankSettings::default()
        };
        for bad in ["", "  \n", "two words"] {
            std::fs::write(&file, bad).expect("write");
            let e = connect(&settings, None).expect_err(bad).to_string();
            assert!(e.contains("visible ASCII"), "{bad:?}: {e}");
        }
        std::fs::write(&file, "s3cr3t-token\n").expect("write");
        assert!(connect(&settings, None).is_ok());
    }
}
