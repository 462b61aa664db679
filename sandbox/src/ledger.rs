//! The double-entry ledger. Money only moves by [`post_entry`], which writes
//! an entry and postings that sum to zero per currency; balances are always
//! `SUM(amount_minor)` over an account's postings. The audit recomputes the
//! invariants from the tables, so a bug elsewhere shows up there.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;

use crate::clock::{self, Day};
use crate::error::ApiError;
use crate::ids::{CustomerId, IdempotencyKey};

/// The bank's side of opening balances and the seeded history.
pub(crate) const EQUITY: &str = "bank:equity";
/// Where payments to external payees go.
pub(crate) const CLEARING: &str = "bank:clearing";

/// What kind of business event an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Opening,
    Seed,
    /// A payment, with the idempotency key it was made under: the schema
    /// allows one payment entry per (customer, key).
    Payment,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            EntryKind::Opening => "opening",
            EntryKind::Seed => "seed",
            EntryKind::Payment => "payment",
        }
    }
}

/// One leg of an entry. Negative amounts leave the account.
#[derive(Debug, Clone)]
pub(crate) struct Leg<'a> {
    pub(crate) posting_id: String,
    pub(crate) account_id: &'a str,
    pub(crate) amount_minor: i64,
    pub(crate) currency: &'a str,
    pub(crate) description: &'a str,
}

/// An entry to post.
#[derive(Debug, Clone)]
pub(crate) struct Entry<'a> {
    pub(crate) entry_id: &'a str,
    pub(crate) kind: EntryKind,
    pub(crate) idempotency_key: Option<&'a IdempotencyKey>,
    pub(crate) booking_date: Day,
    pub(crate) legs: Vec<Leg<'a>>,
}

/// Writes an entry and its postings, refusing (before writing anything) an
/// entry that does not balance per currency or has a zero leg. Runs inside
/// the caller's transaction.
pub(crate) async fn post_entry(
    conn: &mut SqliteConnection,
    customer: &CustomerId,
    entry: &Entry<'_>,
) -> Result<(), ApiError> {
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for leg in &entry.legs {
        let sum = sums.entry(leg.currency).or_insert(0);
        *sum = sum
            .checked_add(leg.amount_minor)
            .ok_or_else(|| ApiError::internal("ledger entry overflows"))?;
        if leg.amount_minor == 0 {
            return Err(ApiError::internal("ledger entry has a zero posting"));
        }
    }
    if entry.legs.len() < 2 || sums.values().any(|s| *s != 0) {
        return Err(ApiError::internal(format!(
            "ledger entry {} does not balance",
            entry.entry_id
        )));
    }
    sqlx::query(
        "INSERT INTO entries (customer_id, entry_id, kind, idempotency_key, created_at)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(customer.as_str())
    .bind(entry.entry_id)
    .bind(entry.kind.as_str())
    .bind(entry.idempotency_key.map(IdempotencyKey::as_str))
    .bind(clock::rfc3339(clock::now_unix()))
    .execute(&mut *conn)
    .await?;
    let date = entry.booking_date.to_string();
    for leg in &entry.legs {
        sqlx::query(
            "INSERT INTO postings (customer_id, posting_id, entry_id, account_id, amount_minor,
                                   currency, booking_date, description)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(customer.as_str())
        .bind(&leg.posting_id)
        .bind(entry.entry_id)
        .bind(leg.account_id)
        .bind(leg.amount_minor)
        .bind(leg.currency)
        .bind(&date)
        .bind(leg.description)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The balance of an account in minor units: the sum of its postings.
pub(crate) async fn balance(
    conn: &mut SqliteConnection,
    customer: &CustomerId,
    account_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(amount_minor), 0) FROM postings
         WHERE customer_id = ? AND account_id = ?",
    )
    .bind(customer.as_str())
    .bind(account_id)
    .fetch_one(conn)
    .await
}

/// A posting as the transactions listing shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PostingRow {
    pub(crate) seq: i64,
    pub(crate) posting_id: String,
    pub(crate) amount_minor: i64,
    pub(crate) currency: String,
    pub(crate) booking_date: String,
    pub(crate) description: String,
}

/// Where a page of postings starts: strictly after this (date, seq) in
/// newest-first order. Keyset paging keeps pages stable while payments are
/// being booked (new postings land on page one, not in the middle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) booking_date: Day,
    pub(crate) seq: i64,
}

impl Cursor {
    /// The opaque `Links.Next` token.
    pub(crate) fn token(&self) -> String {
        hex::encode(format!("v1:{}:{}", self.booking_date, self.seq))
    }

    pub(crate) fn parse(token: &str) -> Option<Cursor> {
        let raw = String::from_utf8(hex::decode(token).ok()?).ok()?;
        let rest = raw.strip_prefix("v1:")?;
        let (date, seq) = rest.split_once(':')?;
        Some(Cursor {
            booking_date: Day::parse(date)?,
            seq: seq.parse().ok()?,
        })
    }
}

/// Up to `limit` postings of an account booked between `from` and `to`
/// (both included), newest first, after `cursor`.
pub(crate) async fn postings(
    pool: &SqlitePool,
    customer: &CustomerId,
    account_id: &str,
    from: Day,
    to: Day,
    cursor: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<PostingRow>, sqlx::Error> {
    // Without a cursor, start after the largest possible key of `to`.
    let (after_date, after_seq) = match cursor {
        Some(c) => (c.booking_date.to_string(), c.seq),
        None => (to.to_string(), i64::MAX),
    };
    sqlx::query_as(
        "SELECT seq, posting_id, amount_minor, currency, booking_date, description
         FROM postings
         WHERE customer_id = ? AND account_id = ?
           AND booking_date >= ? AND booking_date <= ?
           AND (booking_date < ? OR (booking_date = ? AND seq < ?))
         ORDER BY booking_date DESC, seq DESC
         LIMIT ?",
    )
    .bind(customer.as_str())
    .bind(account_id)
    .bind(from.to_string())
    .bind(to.to_string())
    .bind(&after_date)
    .bind(&after_date)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The ledger's health, recomputed from the tables (`GET /sandbox/audit`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Audit {
    /// Sum of every posting, all customers and currencies: must be 0.
    pub(crate) postings_sum_minor: i64,
    /// Entries whose postings do not sum to zero in some currency: must be 0.
    pub(crate) unbalanced_entries: i64,
    /// Payments made, all customers.
    pub(crate) payments: i64,
    /// The most payment entries booked under one (customer, key): must be ≤ 1.
    pub(crate) ledger_entries_per_key_max: i64,
    /// (customer, key) pairs with more than one payment entry: must be 0.
    pub(crate) duplicate_keys: i64,
    /// Derived balance of every customer account, as `customer/account`.
    pub(crate) balances: BTreeMap<String, i64>,
}

/// Computes the [`Audit`] with a handful of aggregate queries.
pub(crate) async fn audit(pool: &SqlitePool) -> Result<Audit, sqlx::Error> {
    let postings_sum_minor: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(amount_minor), 0) FROM postings")
            .fetch_one(pool)
            .await?;
    let unbalanced_entries: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT customer_id || char(0) || entry_id) FROM (
             SELECT customer_id, entry_id FROM postings
             GROUP BY customer_id, entry_id, currency
             HAVING SUM(amount_minor) <> 0)",
    )
    .fetch_one(pool)
    .await?;
    let payments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments")
        .fetch_one(pool)
        .await?;
    let (ledger_entries_per_key_max, duplicate_keys): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(MAX(n), 0), COALESCE(SUM(n > 1), 0) FROM (
             SELECT COUNT(*) AS n FROM entries WHERE kind = 'payment'
             GROUP BY customer_id, idempotency_key)",
    )
    .fetch_one(pool)
    .await?;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT a.customer_id, a.account_id, COALESCE(SUM(p.amount_minor), 0)
         FROM accounts a
         LEFT JOIN postings p ON p.customer_id = a.customer_id AND p.account_id = a.account_id
         GROUP BY a.customer_id, a.account_id",
    )
    .fetch_all(pool)
    .await?;
    let balances = rows
        .into_iter()
        .map(|(c, a, b)| (format!("{c}/{a}"), b))
        .collect();
    Ok(Audit {
        postings_sum_minor,
        unbalanced_entries,
        payments,
        ledger_entries_per_key_max,
        duplicate_keys,
        balances,
    })
}

/// Finds a posting of the customer's own accounts booked on `date` for
/// `abs_minor` in either direction (what a dispute names).
pub(crate) async fn find_posting(
    conn: &mut SqliteConnection,
    customer: &CustomerId,
    date: Day,
    abs_minor: i64,
    currency: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT p.posting_id FROM postings p
         JOIN accounts a ON a.customer_id = p.customer_id AND a.account_id = p.account_id
         WHERE p.customer_id = ? AND p.booking_date = ? AND p.currency = ?
           AND (p.amount_minor = ? OR p.amount_minor = -?)
         ORDER BY p.seq DESC LIMIT 1",
    )
    .bind(customer.as_str())
    .bind(date.to_string())
    .bind(currency)
    .bind(abs_minor)
    .bind(abs_minor)
    .fetch_optional(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_tokens_round_trip_and_reject_garbage() {
        let c = Cursor {
            booking_date: Day::parse("2024-03-12").expect("valid"),
            seq: 42,
        };
        assert_eq!(Cursor::parse(&c.token()), Some(c));
        for bad in ["", "zz", "deadbeef", &hex::encode("v1:2024-02-30:1")] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
