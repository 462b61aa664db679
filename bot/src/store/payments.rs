//! The payments journal: one row per transfer the bot sends, keyed by its
//! idempotency key, committed before the bank is called.
//!
//! States: `confirmed` (the customer confirmed and passed step-up; the row
//! is committed, nothing sent yet) → `submitted` (about to be sent, or
//! sent) → `settled` | `rejected` (final) | `accepted` (the bank took it and
//! is settling) | `unknown` (sent, no verdict). Earlier stages (drafted,
//! awaiting step-up) live in the conversation's dialog state, stored with
//! each turn. A final state never changes again; the reconciler moves
//! everything else to one.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{
    Author, ConversationState, Event, EventKind, Message, Result, Store, StoreError, now_ms, rows,
    seq,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PaymentState {
    Confirmed,
    Submitted,
    Accepted,
    Settled,
    Rejected,
    Unknown,
}

impl PaymentState {
    pub const ALL: [PaymentState; 6] = [
        PaymentState::Confirmed,
        PaymentState::Submitted,
        PaymentState::Accepted,
        PaymentState::Settled,
        PaymentState::Rejected,
        PaymentState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Confirmed => "confirmed",
            PaymentState::Submitted => "submitted",
            PaymentState::Accepted => "accepted",
            PaymentState::Settled => "settled",
            PaymentState::Rejected => "rejected",
            PaymentState::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Result<PaymentState> {
        PaymentState::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("payment state `{s}`")))
    }

    /// Settled or rejected: nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(self, PaymentState::Settled | PaymentState::Rejected)
    }
}

/// A payment about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub idempotency_key: String,
    pub conversation_id: String,
    pub customer_id: String,
    pub from_account: String,
    pub payee: String,
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub new: NewPayment,
    pub state: PaymentState,
    /// The bank's reference (accepted, settled) or reason (rejected).
    pub detail: Option<String>,
    /// Times the reconciler worked on it.
    pub attempts: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "idempotency_key, conversation_id, customer_id, from_account, payee, \
                       amount_minor, currency, state, detail, attempts, created_at, updated_at";

fn payment(row: &AnyRow) -> Result<Payment> {
    Ok(Payment {
        new: NewPayment {
            idempotency_key: row.try_get("idempotency_key")?,
            conversation_id: row.try_get("conversation_id")?,
            customer_id: row.try_get("customer_id")?,
            from_account: row.try_get("from_account")?,
            payee: row.try_get("payee")?,
            amount_minor: row.try_get("amount_minor")?,
            currency: row.try_get("currency")?,
        },
        state: PaymentState::parse(&row.try_get::<String, _>("state")?)?,
        detail: row.try_get("detail")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// `state IN ('a', 'b')` for fixed states (no customer text is spliced).
fn in_states(states: &[PaymentState]) -> String {
    let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("state IN ({})", list.join(", "))
}

/// The one state transition: `from` → `to`, keeping the detail unless a
/// new one is given, releasing any lease; whether the row moved.
async fn update_state(
    conn: &mut sqlx::AnyConnection,
    key: &str,
    from: &[PaymentState],
    to: PaymentState,
    detail: Option<&str>,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(&format!(
        "UPDATE payments SET state = $1, detail = COALESCE($2, detail), updated_at = $3, \
         lease_until = 0 WHERE idempotency_key = $4 AND {}",
        in_states(from)
    ))
    .bind(to.as_str())
    .bind(detail)
    .bind(now)
    .bind(key)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

impl Store {
    /// Commits the payment as `confirmed` unless its key is already
    /// journalled; returns the stored row either way (a retried turn finds
    /// the payment it started). The same key with other details is refused.
    pub async fn confirm_payment(&self, p: &NewPayment) -> Result<Payment> {
        let now = now_ms();
        {
            let _gate = self.gate().await;
            sqlx::query(
                "INSERT INTO payments (idempotency_key, conversation_id, customer_id, from_account, \
                 payee, amount_minor, currency, state, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'confirmed', $8, $8) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&p.idempotency_key)
            .bind(&p.conversation_id)
            .bind(&p.customer_id)
            .bind(&p.from_account)
            .bind(&p.payee)
            .bind(p.amount_minor)
            .bind(&p.currency)
            .bind(now)
            .execute(&self.pool)
            .await?;
        }
        let stored = self
            .payment(&p.idempotency_key)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a journalled payment vanished".into()))?;
        if stored.new != *p {
            return Err(StoreError::Corrupt(format!(
                "payment key {} was journalled with other details",
                p.idempotency_key
            )));
        }
        Ok(stored)
    }

    pub async fn payment(&self, key: &str) -> Result<Option<Payment>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE idempotency_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(payment).transpose()
    }

    /// Moves the payment to `to` if it is in one of `from`, releasing any
    /// reconciler's lease; whether it moved.
    pub async fn move_payment(
        &self,
        key: &str,
        from: &[PaymentState],
        to: PaymentState,
        detail: Option<&str>,
    ) -> Result<bool> {
        let _gate = self.gate().await;
        let mut conn = self.pool.acquire().await?;
        update_state(&mut conn, key, from, to, detail, now_ms()).await
    }

    /// Payments not final and not touched for `idle_ms`, oldest first, whose
    /// lease (if any) has run out.
    pub async fn open_payments(&self, idle_ms: i64, limit: i64) -> Result<Vec<Payment>> {
        let now = now_ms();
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE {} AND updated_at <= $1 AND lease_until <= $2 \
             ORDER BY updated_at LIMIT $3",
            in_states(&[
                PaymentState::Confirmed,
                PaymentState::Submitted,
                PaymentState::Accepted,
                PaymentState::Unknown,
            ])
        ))
        .bind(now - idle_ms)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(payment).collect()
    }

    /// Moves the payment like [`Store::move_payment`] and, in the same
    /// transaction, tells the customer in the payment's conversation (a bot
    /// message, unless the conversation has ended). Either both happen or
    /// neither: the customer is told once. Returns whether it moved and the
    /// stored events (to publish to live streams).
    pub async fn move_payment_and_tell(
        &self,
        key: &str,
        from: &[PaymentState],
        to: PaymentState,
        detail: Option<&str>,
        notice: &str,
    ) -> Result<(bool, Vec<Event>)> {
        let now = now_ms();
        let _gate = self.gate().await;
        let mut tx = self.pool.begin().await?;
        let moved = update_state(&mut tx, key, from, to, detail, now).await?;
        if !moved {
            tx.rollback().await?;
            return Ok((false, Vec::new()));
        }
        let row = sqlx::query(
            "SELECT conversation_id, customer_id FROM payments WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        let conversation: String = row.try_get("conversation_id")?;
        let customer: String = row.try_get("customer_id")?;
        let lock = rows::lock_conversation(&mut tx, &conversation, &customer, now).await?;
        let Some(lock) = lock.filter(|l| l.state != ConversationState::Ended) else {
            // Nobody to tell; the verdict still counts.
            tx.commit().await?;
            return Ok((true, Vec::new()));
        };
        let message = Message {
            id: uuid::Uuid::now_v7().to_string(),
            conversation_id: conversation.clone(),
            sequence: lock.last_sequence + 1,
            author: Author::Bot,
            text: notice.to_owned(),
            quick_replies: Vec::new(),
            client_message_id: None,
            reply_to: None,
            nlu: None,
            state_after: None,
            created_at: now,
        };
        rows::insert_messages(&mut tx, &[&message], None).await?;
        sqlx::query("UPDATE conversations SET last_sequence = $1 WHERE id = $2")
            .bind(seq(message.sequence))
            .bind(&conversation)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((
            true,
            vec![Event {
                conversation_id: conversation,
                sequence: message.sequence,
                created_at: now,
                kind: EventKind::Message(message),
            }],
        ))
    }

    /// Takes the payment for `lease_ms` (one reconciler at a time across
    /// replicas); whether it was free.
    pub async fn lease_payment(&self, key: &str, lease_ms: i64) -> Result<bool> {
        let now = now_ms();
        let _gate = self.gate().await;
        let done = sqlx::query(
            "UPDATE payments SET lease_until = $1, attempts = attempts + 1 \
             WHERE idempotency_key = $2 AND lease_until <= $3",
        )
        .bind(now + lease_ms)
        .bind(key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a leased payment back, to be taken again after `retry_in_ms`.
    pub async fn release_payment(&self, key: &str, retry_in_ms: i64) -> Result<()> {
        let _gate = self.gate().await;
        sqlx::query("UPDATE payments SET lease_until = $1 WHERE idempotency_key = $2")
            .bind(now_ms() + retry_in_ms)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Payments per state (for metrics and the crash test).
    pub async fn payment_counts(&self) -> Result<Vec<(PaymentState, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM payments GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    PaymentState::parse(&r.try_get::<String, _>("state")?)?,
                    r.try_get::<i64, _>("n")?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::settings::Settings;

    async fn store(dir: &std::path::Path) -> Store {
        let settings = Settings {
            data_dir: dir.to_path_buf(),
            ..Settings::default()
        };
        let s = Store::connect(&settings).await.unwrap();
        s.migrate().await.unwrap();
        s
    }

    fn payment(key: &str) -> NewPayment {
        NewPayment {
            idempotency_key: key.into(),
            conversation_id: "conv-1".into(),
            customer_id: "cust-1".into(),
            from_account: "acc-current".into(),
            payee: "payee-mum".into(),
            amount_minor: 5_000,
            currency: "GBP".into(),
        }
    }

    #[tokio::test]
    async fn the_journal_keeps_one_row_per_key_and_final_states_stay_final() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let first = s.confirm_payment(&payment("k1")).await.unwrap();
        assert_eq!(first.state, PaymentState::Confirmed);
        // A retried turn finds the payment it started.
        let again = s.confirm_payment(&payment("k1")).await.unwrap();
        assert_eq!(again.created_at, first.created_at);
        // The same key with other details is refused, not overwritten.
        let mut other = payment("k1");
        other.amount_minor = 6_000;
        assert!(s.confirm_payment(&other).await.is_err());
        assert_eq!(
            s.payment("k1").await.unwrap().unwrap().new.amount_minor,
            5_000
        );

        let to_submitted = [PaymentState::Confirmed, PaymentState::Unknown];
        assert!(
            s.move_payment("k1", &to_submitted, PaymentState::Submitted, None)
                .await
                .unwrap()
        );
        assert!(
            s.move_payment(
                "k1",
                &[PaymentState::Submitted],
                PaymentState::Settled,
                Some("PAY-1")
            )
            .await
            .unwrap()
        );
        // Settled is final: nothing moves it back.
        assert!(
            !s.move_payment("k1", &to_submitted, PaymentState::Submitted, None)
                .await
                .unwrap()
        );
        let p = s.payment("k1").await.unwrap().unwrap();
        assert_eq!(
            (p.state, p.detail.as_deref()),
            (PaymentState::Settled, Some("PAY-1"))
        );
        assert_eq!(
            s.payment_counts().await.unwrap(),
            vec![(PaymentState::Settled, 1)]
        );
        s.close().await;
    }

    #[tokio::test]
    async fn the_reconciler_sees_open_payments_once_idle_and_leases_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        s.confirm_payment(&payment("open")).await.unwrap();
        s.confirm_payment(&payment("done")).await.unwrap();
        s.move_payment(
            "done",
            &[PaymentState::Confirmed],
            PaymentState::Rejected,
            Some("x"),
        )
        .await
        .unwrap();
        // Not idle long enough yet.
        assert!(s.open_payments(60_000, 10).await.unwrap().is_empty());
        let open = s.open_payments(0, 10).await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].new.idempotency_key, "open");
        assert!(s.lease_payment("open", 60_000).await.unwrap());
        assert!(
            !s.lease_payment("open", 60_000).await.unwrap(),
            "one holder at a time"
        );
        assert!(s.open_payments(0, 10).await.unwrap().is_empty(), "leased");
        s.release_payment("open", 0).await.unwrap();
        let again = s.open_payments(0, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        s.close().await;
    }
}
