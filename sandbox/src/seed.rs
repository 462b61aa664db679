//! Enrolment: the first request naming a customer gives them the demo data
//! of `connectors/src/memory.rs` (same ids, names, aliases and amounts), with
//! the history dated relative to the enrolment day instead of 2024-03-13.
//!
//! Opening balances are chosen so that, after the seeded history, the
//! current account holds 1234.56 GBP and savings 5000.00 GBP, as in memory.rs.
//! Every amount enters the ledger as an entry against `bank:equity`.

use crate::clock::Day;
use crate::db::{Store, WriteTx};
use crate::error::ApiError;
use crate::ids::CustomerId;
use crate::ledger::{self, EQUITY, Entry, EntryKind, Leg};

/// The phone one-time codes go to, for every customer.
pub(crate) const REGISTERED_MOBILE: &str = "+447700900123";

const CURRENCY: &str = "GBP";

struct SeedAccount {
    id: &'static str,
    nickname: &'static str,
    sub_type: &'static str,
    aliases: &'static [&'static str],
    /// Balance after the seeded history, in pence.
    balance: i64,
}

const ACCOUNTS: &[SeedAccount] = &[
    SeedAccount {
        id: "acc-current",
        nickname: "Current account",
        sub_type: "CurrentAccount",
        aliases: &["current", "main", "everyday"],
        balance: 123_456,
    },
    SeedAccount {
        id: "acc-savings",
        nickname: "Savings account",
        sub_type: "Savings",
        aliases: &["savings", "saver", "savings account"],
        balance: 500_000,
    },
];

struct SeedTransaction {
    id: &'static str,
    account: &'static str,
    /// Days before the enrolment day (memory.rs's dates before 2024-03-13).
    days_before: i64,
    description: &'static str,
    amount: i64,
}

const TRANSACTIONS: &[SeedTransaction] = &[
    SeedTransaction {
        id: "t1",
        account: "acc-current",
        days_before: 28,
        description: "Bistro Nova",
        amount: -6_420,
    },
    SeedTransaction {
        id: "t2",
        account: "acc-current",
        days_before: 14,
        description: "Oakfield Lettings rent",
        amount: -92_500,
    },
    SeedTransaction {
        id: "s1",
        account: "acc-savings",
        days_before: 12,
        description: "Interest",
        amount: 1_250,
    },
    SeedTransaction {
        id: "t3",
        account: "acc-current",
        days_before: 8,
        description: "Green Grocer",
        amount: -1_875,
    },
    SeedTransaction {
        id: "t4",
        account: "acc-current",
        days_before: 5,
        description: "Salary ACME Ltd",
        amount: 210_000,
    },
    SeedTransaction {
        id: "t5",
        account: "acc-current",
        days_before: 2,
        description: "Metro Rail",
        amount: -2_340,
    },
    SeedTransaction {
        id: "t6",
        account: "acc-current",
        days_before: 1,
        description: "Corner Shop",
        amount: -450,
    },
];

/// Opening balances are booked this many days before enrolment, before the
/// oldest seeded transaction.
const OPENING_DAYS_BEFORE: i64 = 30;

struct SeedPayee {
    id: &'static str,
    name: &'static str,
    aliases: &'static [&'static str],
    sort_code: Option<&'static str>,
    account_number: Option<&'static str>,
    iban: Option<&'static str>,
}

const PAYEES: &[SeedPayee] = &[
    SeedPayee {
        id: "payee-mum",
        name: "Mum",
        aliases: &["mom", "mother"],
        sort_code: Some("400515"),
        account_number: Some("31926819"),
        iban: None,
    },
    SeedPayee {
        id: "payee-pierre",
        name: "Pierre Dubois",
        aliases: &["pierre"],
        sort_code: None,
        account_number: None,
        iban: Some("FR7630006000011234567890189"),
    },
    SeedPayee {
        id: "payee-landlord",
        name: "Oakfield Lettings",
        aliases: &["landlord", "rent"],
        sort_code: Some("200000"),
        account_number: Some("55779911"),
        iban: None,
    },
];

const CARDS: &[(&str, &str, &str)] = &[
    ("card-debit", "Visa debit ending 4471", "4471"),
    ("card-credit", "Mastercard credit ending 9921", "9921"),
];

/// Enrols `customer` unless already enrolled. Cheap when they are (one
/// indexed read); otherwise one write transaction, so a customer is either
/// fully seeded or not at all.
pub(crate) async fn ensure_enrolled(store: &Store, customer: &CustomerId) -> Result<(), ApiError> {
    let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM customers WHERE customer_id = ?")
        .bind(customer.as_str())
        .fetch_optional(&store.pool)
        .await?;
    if known.is_some() {
        return Ok(());
    }
    let mut w = store.write().await?;
    let today = Day::today();
    let inserted = sqlx::query(
        "INSERT OR IGNORE INTO customers (customer_id, enrolled_on, mobile_number) VALUES (?, ?, ?)",
    )
    .bind(customer.as_str())
    .bind(today.to_string())
    .bind(REGISTERED_MOBILE)
    .execute(&mut *w)
    .await?
    .rows_affected();
    if inserted == 1 {
        seed(&mut w, customer, today).await?;
        w.commit().await?;
        tracing::info!(
            customer = customer.as_str(),
            "sandbox-bank: enrolled a new customer"
        );
    }
    Ok(())
}

fn aliases_json(aliases: &[&str]) -> String {
    serde_json::Value::from(aliases.to_vec()).to_string()
}

async fn seed(w: &mut WriteTx, customer: &CustomerId, today: Day) -> Result<(), ApiError> {
    for (position, a) in (0_i64..).zip(ACCOUNTS) {
        sqlx::query(
            "INSERT INTO accounts (customer_id, account_id, position, nickname, sub_type, currency, aliases)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(customer.as_str())
        .bind(a.id)
        .bind(position)
        .bind(a.nickname)
        .bind(a.sub_type)
        .bind(CURRENCY)
        .bind(aliases_json(a.aliases))
        .execute(&mut **w)
        .await?;
        let history: i64 = TRANSACTIONS
            .iter()
            .filter(|t| t.account == a.id)
            .map(|t| t.amount)
            .sum();
        let opening = a.balance - history;
        let entry_id = format!("open-{}", a.id);
        two_legged(
            w,
            customer,
            SeedEntry {
                entry_id: &entry_id,
                kind: EntryKind::Opening,
                date: today.minus(OPENING_DAYS_BEFORE),
                posting_id: format!("open-{}", a.id),
                account: a.id,
                amount: opening,
                description: "Opening balance",
            },
        )
        .await?;
    }
    for t in TRANSACTIONS {
        two_legged(
            w,
            customer,
            SeedEntry {
                entry_id: &format!("seed-{}", t.id),
                kind: EntryKind::Seed,
                date: today.minus(t.days_before),
                posting_id: t.id.to_owned(),
                account: t.account,
                amount: t.amount,
                description: t.description,
            },
        )
        .await?;
    }
    for (position, p) in (0_i64..).zip(PAYEES) {
        sqlx::query(
            "INSERT INTO payees (customer_id, payee_id, position, name, aliases, sort_code, account_number, iban)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(customer.as_str())
        .bind(p.id)
        .bind(position)
        .bind(p.name)
        .bind(aliases_json(p.aliases))
        .bind(p.sort_code)
        .bind(p.account_number)
        .bind(p.iban)
        .execute(&mut **w)
        .await?;
    }
    for (position, (id, name, last4)) in (0_i64..).zip(CARDS) {
        sqlx::query(
            "INSERT INTO cards (customer_id, card_id, position, name, last4, status)
             VALUES (?, ?, ?, ?, ?, 'Active')",
        )
        .bind(customer.as_str())
        .bind(id)
        .bind(position)
        .bind(name)
        .bind(last4)
        .execute(&mut **w)
        .await?;
    }
    Ok(())
}

/// A seeded amount: `amount` on the customer's `account`, balanced against
/// `bank:equity`.
struct SeedEntry<'a> {
    entry_id: &'a str,
    kind: EntryKind,
    date: Day,
    /// The id the API shows; the bank side gets it with `/equity` appended.
    posting_id: String,
    account: &'a str,
    amount: i64,
    description: &'a str,
}

async fn two_legged(
    w: &mut WriteTx,
    customer: &CustomerId,
    e: SeedEntry<'_>,
) -> Result<(), ApiError> {
    let SeedEntry {
        entry_id,
        kind,
        date,
        posting_id,
        account,
        amount,
        description,
    } = e;
    let equity_id = format!("{posting_id}/equity");
    ledger::post_entry(
        w,
        customer,
        &Entry {
            entry_id,
            kind,
            idempotency_key: None,
            booking_date: date,
            legs: vec![
                Leg {
                    posting_id,
                    account_id: account,
                    amount_minor: amount,
                    currency: CURRENCY,
                    description,
                },
                Leg {
                    posting_id: equity_id,
                    account_id: EQUITY,
                    amount_minor: -amount,
                    currency: CURRENCY,
                    description,
                },
            ],
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_history_leaves_memory_rs_balances() {
        // Current: 1234.56 after the history, so the opening is positive.
        let current: i64 = TRANSACTIONS
            .iter()
            .filter(|t| t.account == "acc-current")
            .map(|t| t.amount)
            .sum();
        assert_eq!(123_456 - current, 17_041);
        assert!(
            TRANSACTIONS
                .iter()
                .all(|t| t.days_before < OPENING_DAYS_BEFORE)
        );
    }
}
