//! Row-level SQL shared by the store's operations, and decoding of rows into
//! domain values. Nothing here commits: callers own the transactions.

use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{
    Author, Conversation, ConversationState, Event, EventKind, Message, NluRecord, Result,
    StoreError, Turn, seq,
};
use crate::catalogue::QuickReply;

/// The message columns, as selected from `messages m`.
pub const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.sequence, m.author, m.text, \
     m.quick_replies, m.client_message_id, m.text_sha256, m.reply_to, m.nlu, m.state_after, \
     m.created_at";

/// Replies are stored right after the message they answer; this bounds the
/// range searched for them.
const MAX_REPLIES_PER_TURN: u64 = 64;

/// The locked conversation's counters.
#[derive(Debug)]
pub struct Locked {
    pub last_sequence: u64,
    pub state: ConversationState,
}

/// Takes the conversation's write lock (row lock on PostgreSQL, the database
/// write lock on SQLite) by touching its row. `None` when it is not the customer's.
pub async fn lock_conversation(
    conn: &mut AnyConnection,
    conversation_id: &str,
    customer_id: &str,
    now: i64,
) -> Result<Option<Locked>> {
    let row = sqlx::query(
        "UPDATE conversations SET updated_at = $1 WHERE id = $2 AND customer_id = $3 \
         RETURNING last_sequence, state",
    )
    .bind(now)
    .bind(conversation_id)
    .bind(customer_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(Locked {
            last_sequence: u64_col(&r, "last_sequence")?,
            state: ConversationState::from_str(&r.try_get::<String, _>("state")?)?,
        })
    })
    .transpose()
}

/// Stores messages and their `message` events: one statement per table,
/// whatever the number of messages. `text_sha256` applies to the first.
pub async fn insert_messages(
    conn: &mut AnyConnection,
    messages: &[&Message],
    first_sha256: Option<&str>,
) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut sql = String::from(
        "INSERT INTO messages (id, conversation_id, sequence, author, text, quick_replies, \
         client_message_id, text_sha256, reply_to, nlu, state_after, created_at) VALUES ",
    );
    for i in 0..messages.len() {
        let b = i * 12;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 1..=12 {
            if c > 1 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", b + c));
        }
        sql.push(')');
    }
    let mut q = sqlx::query(&sql);
    for (i, m) in messages.iter().enumerate() {
        let quick = serde_json::to_string(&m.quick_replies).map_err(corrupt)?;
        let nlu = m
            .nlu
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(corrupt)?;
        q = q
            .bind(m.id.clone())
            .bind(m.conversation_id.clone())
            .bind(seq(m.sequence))
            .bind(m.author.as_str())
            .bind(m.text.clone())
            .bind(quick)
            .bind(m.client_message_id.clone())
            .bind(if i == 0 {
                first_sha256.map(str::to_owned)
            } else {
                None
            })
            .bind(m.reply_to.clone())
            .bind(nlu)
            .bind(m.state_after.map(ConversationState::as_str))
            .bind(m.created_at);
    }
    q.execute(&mut *conn).await?;
    let mut sql = String::from(
        "INSERT INTO events (conversation_id, sequence, kind, message_id, payload, created_at) VALUES ",
    );
    for i in 0..messages.len() {
        let b = i * 4;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, 'message', ${}, '{{}}', ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4
        ));
    }
    let mut q = sqlx::query(&sql);
    for m in messages {
        q = q
            .bind(m.conversation_id.clone())
            .bind(seq(m.sequence))
            .bind(m.id.clone())
            .bind(m.created_at);
    }
    q.execute(conn).await?;
    Ok(())
}

/// Stores a non-message event.
pub async fn insert_event(conn: &mut AnyConnection, e: &Event) -> Result<()> {
    let payload = serde_json::to_string(&e.kind).map_err(corrupt)?;
    sqlx::query(
        "INSERT INTO events (conversation_id, sequence, kind, message_id, payload, created_at) \
         VALUES ($1, $2, $3, NULL, $4, $5)",
    )
    .bind(&e.conversation_id)
    .bind(seq(e.sequence))
    .bind(e.kind.name())
    .bind(payload)
    .bind(e.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The turn stored for a client message id, and the hash of its text.
pub async fn find_turn(
    conn: &mut AnyConnection,
    conversation_id: &str,
    customer_id: &str,
    client_message_id: &str,
) -> Result<Option<(Turn, String)>> {
    let row = sqlx::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN conversations c ON c.id = m.conversation_id \
         WHERE m.conversation_id = $1 AND c.customer_id = $2 AND m.client_message_id = $3"
    ))
    .bind(conversation_id)
    .bind(customer_id)
    .bind(client_message_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let customer = message(&row)?;
    let sha: Option<String> = row.try_get("text_sha256")?;
    let replies = sqlx::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1 \
         AND m.sequence > $2 AND m.sequence <= $3 AND m.reply_to = $4 ORDER BY m.sequence"
    ))
    .bind(conversation_id)
    .bind(seq(customer.sequence))
    .bind(seq(customer.sequence + MAX_REPLIES_PER_TURN))
    .bind(&customer.id)
    .fetch_all(conn)
    .await?;
    let replies = replies.iter().map(message).collect::<Result<Vec<_>>>()?;
    Ok(Some((Turn { customer, replies }, sha.unwrap_or_default())))
}

/// The conversation (if the customer's) and whether `client_message_id` is
/// already stored in it, in one query.
pub async fn conversation_with_message(
    conn: &mut AnyConnection,
    conversation_id: &str,
    customer_id: &str,
    client_message_id: &str,
) -> Result<Option<(Conversation, bool)>> {
    let row = sqlx::query(
        "SELECT c.id, c.customer_id, c.channel, c.locale, c.metadata, c.state, c.dialog_state, \
         c.last_sequence, c.turns, c.end_reason, c.created_at, \
         (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id \
          AND m.client_message_id = $3) AS stored \
         FROM conversations c WHERE c.id = $1 AND c.customer_id = $2",
    )
    .bind(conversation_id)
    .bind(customer_id)
    .bind(client_message_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        let stored: i64 = r.try_get("stored")?;
        Ok((conversation(&r)?, stored > 0))
    })
    .transpose()
}

pub fn conversation(r: &AnyRow) -> Result<Conversation> {
    let metadata: String = r.try_get("metadata")?;
    Ok(Conversation {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        channel: r.try_get("channel")?,
        locale: r.try_get("locale")?,
        metadata: serde_json::from_str(&metadata).map_err(corrupt)?,
        state: ConversationState::from_str(&r.try_get::<String, _>("state")?)?,
        dialog_state: r.try_get("dialog_state")?,
        last_sequence: u64_col(r, "last_sequence")?,
        turns: u64_col(r, "turns")?,
        end_reason: r.try_get("end_reason")?,
        created_at: r.try_get("created_at")?,
    })
}

pub fn message(r: &AnyRow) -> Result<Message> {
    let quick: String = r.try_get("quick_replies")?;
    let quick_replies: Vec<QuickReply> = serde_json::from_str(&quick).map_err(corrupt)?;
    let nlu: Option<String> = r.try_get("nlu")?;
    let nlu: Option<NluRecord> = nlu
        .map(|n| serde_json::from_str(&n))
        .transpose()
        .map_err(corrupt)?;
    let state_after: Option<String> = r.try_get("state_after")?;
    Ok(Message {
        id: r.try_get("id")?,
        conversation_id: r.try_get("conversation_id")?,
        sequence: u64_col(r, "sequence")?,
        author: Author::from_str(&r.try_get::<String, _>("author")?)?,
        text: r.try_get("text")?,
        quick_replies,
        client_message_id: r.try_get("client_message_id")?,
        reply_to: r.try_get("reply_to")?,
        nlu,
        state_after: state_after
            .map(|s| ConversationState::from_str(&s))
            .transpose()?,
        created_at: r.try_get("created_at")?,
    })
}

/// An event row joined with its message (if any).
pub fn event(conversation_id: &str, r: &AnyRow) -> Result<Event> {
    let kind: String = r.try_get("e_kind")?;
    let kind = if kind == "message" {
        EventKind::Message(message(r)?)
    } else {
        let payload: String = r.try_get("e_payload")?;
        serde_json::from_str(&payload).map_err(corrupt)?
    };
    Ok(Event {
        conversation_id: conversation_id.to_owned(),
        sequence: u64_col(r, "e_sequence")?,
        created_at: r.try_get("e_created_at")?,
        kind,
    })
}

fn u64_col(r: &AnyRow, name: &str) -> Result<u64> {
    let v: i64 = r.try_get(name)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {name}")))
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}
