//! An in-process bank: every customer gets the same seeded demo data on
//! first use. Transfers debit the account and are deduplicated by
//! idempotency key; faults can be injected per operation. It serves
//! `bankbot chat`, `bankbot test` and the service until the sandbox bank
//! (issue 5) replaces it. Its one-time code is always [`DEMO_CODE`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use crate::{
    Account, Balance, Bank, BoxFuture, Card, CardChange, CardStatus, CodeCheck, ConnectorError,
    Contact, Day, DisputeRequest, Money, Payee, Result, Transaction, TransferOutcome,
    TransferRequest,
};

/// The one-time code the in-process bank accepts.
pub const DEMO_CODE: &str = "123456";

/// What an injected fault makes an operation return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Error(ConnectorError),
    /// For `transfer`: this outcome, without touching the ledger (except
    /// `Unknown`, which applies the transfer and hides the result, as a
    /// timeout after the bank applied it would).
    Transfer(TransferOutcome),
}

#[derive(Debug, Default)]
struct Customer {
    accounts: Vec<(Account, i64)>,
    transactions: BTreeMap<String, Vec<Transaction>>,
    payees: Vec<Payee>,
    cards: Vec<Card>,
    /// The code last sent: (id, binding), until used.
    code: Option<(String, String)>,
    /// Verdicts given, by idempotency key.
    verdicts: HashMap<String, bool>,
    next_code: u64,
    contact: Vec<Contact>,
    disputes: u32,
}

#[derive(Debug, Default)]
struct Inner {
    customers: HashMap<String, Customer>,
    /// Idempotency key -> (request, outcome): a repeat gets the original.
    transfers: HashMap<String, (TransferRequest, TransferOutcome)>,
    next_ref: u64,
    faults: HashMap<String, Fault>,
    /// Calls made, per operation (for tests).
    calls: BTreeMap<String, u32>,
}

#[derive(Debug, Default)]
pub struct MemoryBank {
    inner: Mutex<Inner>,
}

fn gbp(minor: i64) -> Money {
    Money {
        minor,
        currency: "GBP".into(),
    }
}

fn day(s: &str) -> Day {
    // Seed data: fixed, well-formed dates.
    Day::parse(s).unwrap_or_else(|e| panic!("seed date: {e}"))
}

fn seed() -> Customer {
    let account = |id: &str, name: &str, nicks: &[&str]| Account {
        id: id.into(),
        name: name.into(),
        nicknames: nicks.iter().map(|n| (*n).to_owned()).collect(),
        currency: "GBP".into(),
    };
    let tx = |id: &str, d: &str, desc: &str, minor: i64| Transaction {
        id: id.into(),
        day: day(d),
        description: desc.into(),
        amount: gbp(minor),
    };
    let payee = |id: &str, name: &str, nicks: &[&str]| Payee {
        id: id.into(),
        name: name.into(),
        nicknames: nicks.iter().map(|n| (*n).to_owned()).collect(),
    };
    let mut transactions = BTreeMap::new();
    transactions.insert(
        "acc-current".to_owned(),
        vec![
            tx("t6", "2024-03-12", "Corner Shop", -450),
            tx("t5", "2024-03-11", "Metro Rail", -2_340),
            tx("t4", "2024-03-08", "Salary ACME Ltd", 210_000),
            tx("t3", "2024-03-05", "Green Grocer", -1_875),
            tx("t2", "2024-02-28", "Oakfield Lettings rent", -92_500),
            tx("t1", "2024-02-14", "Bistro Nova", -6_420),
        ],
    );
    transactions.insert(
        "acc-savings".to_owned(),
        vec![tx("s1", "2024-03-01", "Interest", 1_250)],
    );
    Customer {
        accounts: vec![
            (
                account(
                    "acc-current",
                    "Current account",
                    &["current", "main", "everyday"],
                ),
                123_456,
            ),
            (
                account(
                    "acc-savings",
                    "Savings account",
                    &["savings", "saver", "savings account"],
                ),
                500_000,
            ),
        ],
        transactions,
        payees: vec![
            payee("payee-mum", "Mum", &["mom", "mother"]),
            payee("payee-pierre", "Pierre Dubois", &["pierre"]),
            payee("payee-landlord", "Oakfield Lettings", &["landlord", "rent"]),
        ],
        cards: vec![
            Card {
                id: "card-debit".into(),
                name: "Visa debit ending 4471".into(),
                last4: "4471".into(),
                status: CardStatus::Active,
                dispatched: None,
            },
            Card {
                id: "card-credit".into(),
                name: "Mastercard credit ending 9921".into(),
                last4: "9921".into(),
                status: CardStatus::Active,
                dispatched: None,
            },
        ],
        code: None,
        verdicts: HashMap::new(),
        next_code: 0,
        contact: Vec::new(),
        disputes: 0,
    }
}

impl MemoryBank {
    pub fn new() -> MemoryBank {
        MemoryBank::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes every later call of `operation` (a [`Bank`] method name) fail
    /// or end as given, until [`MemoryBank::clear_faults`].
    pub fn inject(&self, operation: &str, fault: Fault) {
        self.lock().faults.insert(operation.to_owned(), fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// How many times `operation` was called.
    pub fn calls(&self, operation: &str) -> u32 {
        self.lock().calls.get(operation).copied().unwrap_or(0)
    }

    /// Ledger balance of an account, in minor units.
    pub fn ledger(&self, customer: &str, account: &str) -> Option<i64> {
        let mut g = self.lock();
        let c = g.customers.entry(customer.to_owned()).or_insert_with(seed);
        c.accounts
            .iter()
            .find(|(a, _)| a.id == account)
            .map(|(_, b)| *b)
    }

    /// Runs `f` on the customer's data after counting the call and applying
    /// an injected error fault.
    fn with<T>(
        &self,
        op: &str,
        customer: &str,
        f: impl FnOnce(&mut Inner) -> Result<T>,
    ) -> Result<T> {
        let mut g = self.lock();
        *g.calls.entry(op.to_owned()).or_default() += 1;
        if let Some(Fault::Error(e)) = g.faults.get(op) {
            return Err(e.clone());
        }
        g.customers.entry(customer.to_owned()).or_insert_with(seed);
        f(&mut g)
    }
}

fn customer<'a>(g: &'a mut Inner, id: &str) -> Result<&'a mut Customer> {
    g.customers
        .get_mut(id)
        .ok_or_else(|| ConnectorError::NotFound("customer".into()))
}

fn ready<'a, T: Send + 'a>(r: Result<T>) -> BoxFuture<'a, Result<T>> {
    Box::pin(std::future::ready(r))
}

impl Bank for MemoryBank {
    fn accounts<'a>(&'a self, c: &'a str) -> BoxFuture<'a, Result<Vec<Account>>> {
        ready(self.with("accounts", c, |g| {
            Ok(customer(g, c)?
                .accounts
                .iter()
                .map(|(a, _)| a.clone())
                .collect())
        }))
    }

    fn balance<'a>(&'a self, c: &'a str, account: &'a str) -> BoxFuture<'a, Result<Balance>> {
        ready(self.with("balance", c, |g| {
            let (a, b) = customer(g, c)?
                .accounts
                .iter()
                .find(|(a, _)| a.id == account)
                .ok_or_else(|| ConnectorError::NotFound("account".into()))?;
            let m = Money {
                minor: *b,
                currency: a.currency.clone(),
            };
            Ok(Balance {
                ledger: m.clone(),
                available: m,
            })
        }))
    }

    fn transactions<'a>(
        &'a self,
        c: &'a str,
        account: &'a str,
        from: &'a Day,
        to: &'a Day,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Transaction>>> {
        ready(self.with("transactions", c, |g| {
            let cust = customer(g, c)?;
            if !cust.accounts.iter().any(|(a, _)| a.id == account) {
                return Err(ConnectorError::NotFound("account".into()));
            }
            let all = cust.transactions.get(account).cloned().unwrap_or_default();
            Ok(all
                .into_iter()
                .filter(|t| &t.day >= from && &t.day <= to)
                .take(limit)
                .collect())
        }))
    }

    fn payees<'a>(&'a self, c: &'a str) -> BoxFuture<'a, Result<Vec<Payee>>> {
        ready(self.with("payees", c, |g| Ok(customer(g, c)?.payees.clone())))
    }

    fn transfer<'a>(
        &'a self,
        c: &'a str,
        req: &'a TransferRequest,
    ) -> BoxFuture<'a, Result<TransferOutcome>> {
        ready(self.with("transfer", c, |g| {
            if let Some((first, outcome)) = g.transfers.get(&req.idempotency_key) {
                if first != req {
                    return Err(ConnectorError::Invalid(
                        "idempotency key reused with another request".into(),
                    ));
                }
                return Ok(outcome.clone());
            }
            let forced = match g.faults.get("transfer") {
                Some(Fault::Transfer(o)) => Some(o.clone()),
                Some(Fault::Error(_)) | None => None,
            };
            if let Some(o) = forced.clone().filter(|o| *o != TransferOutcome::Unknown) {
                g.transfers
                    .insert(req.idempotency_key.clone(), (req.clone(), o.clone()));
                return Ok(o);
            }
            g.next_ref += 1;
            let reference = format!("TX-{:06}", g.next_ref);
            let cust = customer(g, c)?;
            if !cust.payees.iter().any(|p| p.id == req.payee) {
                return Err(ConnectorError::NotFound("payee".into()));
            }
            let (acct, bal) = cust
                .accounts
                .iter_mut()
                .find(|(a, _)| a.id == req.from_account)
                .ok_or_else(|| ConnectorError::NotFound("account".into()))?;
            if acct.currency != req.amount.currency || req.amount.minor <= 0 {
                return Err(ConnectorError::Invalid("amount".into()));
            }
            let outcome = if *bal < req.amount.minor {
                TransferOutcome::InsufficientFunds
            } else {
                *bal -= req.amount.minor;
                TransferOutcome::Settled { reference }
            };
            g.transfers
                .insert(req.idempotency_key.clone(), (req.clone(), outcome.clone()));
            // An injected `Unknown` applies the transfer but hides the answer.
            Ok(if forced == Some(TransferOutcome::Unknown) {
                TransferOutcome::Unknown
            } else {
                outcome
            })
        }))
    }

    fn transfer_status<'a>(
        &'a self,
        c: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<TransferOutcome>>> {
        ready(self.with("transfer_status", c, |g| {
            Ok(g.transfers.get(key).map(|(_, o)| o.clone()))
        }))
    }

    fn cards<'a>(&'a self, c: &'a str) -> BoxFuture<'a, Result<Vec<Card>>> {
        ready(self.with("cards", c, |g| Ok(customer(g, c)?.cards.clone())))
    }

    fn change_card<'a>(
        &'a self,
        c: &'a str,
        card: &'a str,
        change: CardChange,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Card>> {
        ready(self.with("change_card", c, |g| {
            let k = customer(g, c)?
                .cards
                .iter_mut()
                .find(|k| k.id == card)
                .ok_or_else(|| ConnectorError::NotFound("card".into()))?;
            k.status = match (change, k.status) {
                (CardChange::Block, _) => CardStatus::Blocked,
                (CardChange::Freeze | CardChange::Unfreeze, CardStatus::Blocked) => {
                    return Err(ConnectorError::Refused("the card is blocked".into()));
                }
                (CardChange::Freeze, _) => CardStatus::Frozen,
                (CardChange::Unfreeze, _) => CardStatus::Active,
            };
            Ok(k.clone())
        }))
    }

    fn replace_card<'a>(
        &'a self,
        c: &'a str,
        card: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Card>> {
        ready(self.with("replace_card", c, |g| {
            let cust = customer(g, c)?;
            let old = cust
                .cards
                .iter()
                .find(|k| k.id == card)
                .cloned()
                .ok_or_else(|| ConnectorError::NotFound("card".into()))?;
            let new = Card {
                id: format!("{}-r{}", old.id, cust.cards.len()),
                name: format!("{} (replacement)", old.name),
                last4: old.last4.clone(),
                status: CardStatus::InTransit,
                dispatched: None,
            };
            cust.cards.push(new.clone());
            Ok(new)
        }))
    }

    fn open_dispute<'a>(
        &'a self,
        c: &'a str,
        d: &'a DisputeRequest,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<String>> {
        ready(self.with("open_dispute", c, |g| {
            let cust = customer(g, c)?;
            let found = cust
                .transactions
                .values()
                .flatten()
                .any(|t| t.day == d.day && t.amount.minor.abs() == d.amount.minor);
            if !found || d.reason.is_empty() {
                return Err(ConnectorError::Refused("no such transaction".into()));
            }
            cust.disputes += 1;
            Ok(format!("DSP-{:04}", cust.disputes))
        }))
    }

    fn send_code<'a>(
        &'a self,
        c: &'a str,
        _purpose: &'a str,
        binding: &'a str,
    ) -> BoxFuture<'a, Result<String>> {
        ready(self.with("send_code", c, |g| {
            let cust = customer(g, c)?;
            cust.next_code += 1;
            let id = format!("code-{}", cust.next_code);
            cust.code = Some((id.clone(), binding.to_owned()));
            Ok(id)
        }))
    }

    fn verify_code<'a>(
        &'a self,
        c: &'a str,
        check: &'a CodeCheck,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        ready(self.with("verify_code", c, |g| {
            let cust = customer(g, c)?;
            if let Some(v) = cust.verdicts.get(key) {
                return Ok(*v);
            }
            let ok = cust.code.as_ref().is_some_and(|(id, binding)| {
                *id == check.code_id && *binding == check.binding && check.code.trim() == DEMO_CODE
            });
            if ok {
                cust.code = None;
            }
            cust.verdicts.insert(key.to_owned(), ok);
            Ok(ok)
        }))
    }

    fn update_contact<'a>(
        &'a self,
        c: &'a str,
        contact: &'a Contact,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        ready(self.with("update_contact", c, |g| {
            customer(g, c)?.contact.push(contact.clone());
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, minor: i64) -> TransferRequest {
        TransferRequest {
            idempotency_key: key.into(),
            from_account: "acc-current".into(),
            payee: "payee-mum".into(),
            amount: gbp(minor),
        }
    }

    #[tokio::test]
    async fn a_transfer_happens_once_per_key() {
        let bank = MemoryBank::new();
        let first = bank.transfer("c1", &req("k1", 5_000)).await;
        assert!(matches!(first, Ok(TransferOutcome::Settled { .. })));
        assert_eq!(bank.transfer("c1", &req("k1", 5_000)).await, first);
        assert_eq!(bank.ledger("c1", "acc-current"), Some(123_456 - 5_000));
        assert!(bank.transfer("c1", &req("k1", 6_000)).await.is_err());
        assert_eq!(
            bank.transfer("c1", &req("k2", 10_000_000)).await,
            Ok(TransferOutcome::InsufficientFunds)
        );
        assert_eq!(bank.ledger("c1", "acc-current"), Some(123_456 - 5_000));
    }

    #[tokio::test]
    async fn faults_codes_and_cards() {
        let bank = MemoryBank::new();
        bank.inject("balance", Fault::Error(ConnectorError::Unavailable));
        assert_eq!(
            bank.balance("c", "acc-current").await,
            Err(ConnectorError::Unavailable)
        );
        bank.clear_faults();
        assert!(bank.balance("c", "acc-current").await.is_ok());
        let check = |id: &str, code: &str, binding: &str| CodeCheck {
            code_id: id.into(),
            code: code.into(),
            binding: binding.into(),
        };
        assert_eq!(
            bank.verify_code("c", &check("code-1", DEMO_CODE, "b"), "v0")
                .await,
            Ok(false),
            "no code was sent"
        );
        let id = bank.send_code("c", "transfer", "b").await.expect("sent");
        assert_eq!(
            bank.verify_code("c", &check(&id, "000000", "b"), "v1")
                .await,
            Ok(false)
        );
        assert_eq!(
            bank.verify_code("c", &check(&id, DEMO_CODE, "other"), "v2")
                .await,
            Ok(false),
            "bound to what it authorises"
        );
        assert_eq!(
            bank.verify_code("c", &check(&id, DEMO_CODE, "b"), "v3")
                .await,
            Ok(true)
        );
        assert_eq!(
            bank.verify_code("c", &check(&id, DEMO_CODE, "b"), "v3")
                .await,
            Ok(true),
            "the same key gets the same verdict"
        );
        assert_eq!(
            bank.verify_code("c", &check(&id, DEMO_CODE, "b"), "v4")
                .await,
            Ok(false),
            "a code works once"
        );
        let k = bank
            .change_card("c", "card-debit", CardChange::Block, "k-b")
            .await
            .expect("blocked");
        assert_eq!(k.status, CardStatus::Blocked);
        assert!(
            bank.change_card("c", "card-debit", CardChange::Unfreeze, "k-u")
                .await
                .is_err()
        );
        bank.inject("transfer", Fault::Transfer(TransferOutcome::Unknown));
        assert_eq!(
            bank.transfer("c", &req("k9", 100)).await,
            Ok(TransferOutcome::Unknown)
        );
        assert_eq!(
            bank.ledger("c", "acc-current"),
            Some(123_456 - 100),
            "applied, answer lost"
        );
        assert_eq!(bank.calls("transfer"), 1);
        assert_eq!(
            bank.transfer_status("c", "k9").await,
            Ok(Some(TransferOutcome::Settled {
                reference: "TX-000001".into()
            })),
            "the status query finds what the lost answer hid"
        );
        assert_eq!(bank.transfer_status("c", "never-sent").await, Ok(None));
    }
}
