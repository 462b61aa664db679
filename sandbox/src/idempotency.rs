//! Idempotent writes. A keyed write is identified by (customer, operation,
//! key) and described by the hash of its canonical request. Its settled
//! answer is stored in the same SQLite transaction as its effects, so either
//! both exist or neither does:
//!
//! - same key, same hash: the stored answer again, byte for byte;
//! - same key, another hash: 422 `UK.OBIE.Resource.ConsentMismatch`;
//! - same key while the first request is still running: 409
//!   `BANKBOT.RequestInFlight` (tracked in memory by [`InFlight`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::StatusCode;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::SqliteConnection;

use crate::clock;
use crate::error::{ApiError, Reply};
use crate::ids::{CustomerId, IdempotencyKey};

/// Which endpoint a key belongs to: keys are scoped per operation, so a
/// client may reuse one turn's key for, say, a code check and a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Operation {
    Payment,
    CardStatus,
    CardReplacement,
    Dispute,
    CodeVerification,
    Contact,
}

impl Operation {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Payment => "payment",
            Operation::CardStatus => "card-status",
            Operation::CardReplacement => "card-replacement",
            Operation::Dispute => "dispute",
            Operation::CodeVerification => "code-verification",
            Operation::Contact => "contact",
        }
    }
}

/// Everything that identifies one keyed request.
#[derive(Debug, Clone)]
pub(crate) struct Keyed {
    pub(crate) customer: CustomerId,
    pub(crate) operation: Operation,
    pub(crate) key: IdempotencyKey,
    /// [`canonical_hash`] of the request.
    pub(crate) hash: String,
}

/// SHA-256 (hex) of the re-serialised parsed request: insensitive to
/// whitespace, key order and unknown fields, sensitive to every value the
/// bank acts on. Path parameters are part of the request, so callers hash
/// a tuple such as `(card_id, body)`.
pub(crate) fn canonical_hash<T: Serialize>(request: &T) -> String {
    // Serialising plain data structs cannot fail; an empty input would only
    // make every such request look alike, never wrongly different.
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// The stored answer for this key, if there is one: `Ok(Some)` to replay,
/// `Err` (ConsentMismatch) when the key was used for another request.
pub(crate) async fn prior(
    conn: &mut SqliteConnection,
    k: &Keyed,
) -> Result<Option<Reply>, ApiError> {
    let row: Option<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT request_hash, status, body FROM idempotency
         WHERE customer_id = ? AND operation = ? AND idempotency_key = ?",
    )
    .bind(k.customer.as_str())
    .bind(k.operation.as_str())
    .bind(k.key.as_str())
    .fetch_optional(conn)
    .await?;
    let Some((hash, status, body)) = row else {
        return Ok(None);
    };
    if hash != k.hash {
        return Err(ApiError::consent_mismatch());
    }
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| ApiError::internal("a stored answer has an impossible status"))?;
    Ok(Some(Reply { status, body }))
}

/// Turns the outcome of a keyed write into its answer, storing it under the
/// key when it is final (a success or a business 422). A non-final error is
/// returned as `Err` so the caller rolls the transaction back.
pub(crate) async fn settle(
    conn: &mut SqliteConnection,
    k: &Keyed,
    outcome: Result<Reply, ApiError>,
) -> Result<Reply, ApiError> {
    let reply = match outcome {
        Ok(reply) => reply,
        Err(e) if e.is_final() => Reply::from(e),
        Err(e) => return Err(e),
    };
    sqlx::query(
        "INSERT INTO idempotency (customer_id, operation, idempotency_key, request_hash, status, body, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(k.customer.as_str())
    .bind(k.operation.as_str())
    .bind(k.key.as_str())
    .bind(&k.hash)
    .bind(i64::from(reply.status.as_u16()))
    .bind(reply.body.as_deref())
    .bind(clock::rfc3339(clock::now_unix()))
    .execute(conn)
    .await?;
    Ok(reply)
}

type Slot = (CustomerId, Operation, IdempotencyKey);

/// Keys whose first request is being processed right now. In memory only:
/// after a restart nothing is in flight, and the database alone decides.
#[derive(Debug, Clone, Default)]
pub(crate) struct InFlight {
    keys: Arc<Mutex<HashSet<Slot>>>,
}

/// Holds a key in flight; dropping it (the request finished, or its task
/// ended) frees the key.
#[derive(Debug)]
pub(crate) struct Claim {
    keys: Arc<Mutex<HashSet<Slot>>>,
    slot: Slot,
}

impl InFlight {
    /// Claims the key, or `None` if another request holds it.
    pub(crate) fn claim(&self, k: &Keyed) -> Option<Claim> {
        let slot = (k.customer.clone(), k.operation, k.key.clone());
        // The set is only inserted into and removed from: a panic elsewhere
        // cannot leave it inconsistent, so a poisoned lock is still usable.
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.insert(slot.clone()).then(|| Claim {
            keys: Arc::clone(&self.keys),
            slot,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(key: &str) -> Keyed {
        Keyed {
            customer: CustomerId::parse("alice").expect("valid"),
            operation: Operation::Payment,
            key: IdempotencyKey::parse(key).expect("valid"),
            hash: String::new(),
        }
    }

    #[test]
    fn a_key_is_claimed_once_until_released() {
        let inflight = InFlight::default();
        let first = inflight.claim(&keyed("k1"));
        assert!(first.is_some());
        assert!(inflight.claim(&keyed("k1")).is_none());
        assert!(inflight.claim(&keyed("k2")).is_some());
        drop(first);
        assert!(inflight.claim(&keyed("k1")).is_some());
    }

    #[test]
    fn the_hash_ignores_formatting_not_values() {
        use bankbot_connectors::wire::CodeCheck;
        let parse = |s: &str| serde_json::from_str::<CodeCheck>(s).expect("json");
        let a = parse(r#"{"Code": "123456", "Binding": "b"}"#);
        let b = parse(r#"{ "Binding":"b","Code":"123456", "Extra": 1 }"#);
        let c = parse(r#"{"Code": "123457", "Binding": "b"}"#);
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        assert_ne!(canonical_hash(&a), canonical_hash(&c));
    }
}
