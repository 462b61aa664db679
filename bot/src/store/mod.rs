//! Conversation storage through sqlx: SQLite (one file, WAL) by default,
//! PostgreSQL when a `postgres://` URL is configured. Both run the same SQL
//! through sqlx's `Any` driver; each has its own migrations.
//!
//! Invariants:
//! - A turn is one transaction: the customer message, the bot's replies, their
//!   events with consecutive sequence numbers, and the conversation's new
//!   state. A crash leaves either all of it or none.
//! - Every write transaction starts by updating the conversation row, which
//!   takes the row lock on PostgreSQL (so two replicas never interleave turns
//!   of one conversation) and the database write lock on SQLite. On SQLite the
//!   process additionally admits one writer at a time, so writers queue in
//!   order instead of polling SQLite's busy handler.
//! - A customer message is stored once per (conversation, client_message_id):
//!   callers check before classifying, and a unique index refuses a copy that
//!   another replica committed in between (answered as a replay).
//! - Every query is scoped by customer id as well as conversation id.

mod payments;
mod rows;
mod tickets;

pub use payments::{NewPayment, Payment, PaymentState};
pub use tickets::{
    Agent, Availability, HandoffStatus, NewTicket, Ticket, TicketChange, TicketRefusal,
    TicketResult, TicketState, priority_str,
};

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::catalogue::QuickReply;
use crate::settings::{Settings, SqliteSync};

/// Most events read from the database in one page.
pub const EVENT_PAGE: i64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("stored data is not what this version expects: {0}")]
    Corrupt(String),
    #[error("the conversation has ended")]
    Ended,
    #[error("sequence {given} is beyond the conversation's last event ({last})")]
    SequenceAhead { given: u64, last: u64 },
    #[error("client_message_id was already used for a different message")]
    IdReused,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    Active,
    Handoff,
    Ended,
}

impl ConversationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Handoff => "handoff",
            Self::Ended => "ended",
        }
    }
}

impl FromStr for ConversationState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(Self::Active),
            "handoff" => Ok(Self::Handoff),
            "ended" => Ok(Self::Ended),
            other => Err(StoreError::Corrupt(format!("conversation state `{other}`"))),
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    Customer,
    Bot,
    Agent,
    System,
}

impl Author {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Bot => "bot",
            Self::Agent => "agent",
            Self::System => "system",
        }
    }
}

impl FromStr for Author {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "customer" => Ok(Self::Customer),
            "bot" => Ok(Self::Bot),
            "agent" => Ok(Self::Agent),
            "system" => Ok(Self::System),
            other => Err(StoreError::Corrupt(format!("author `{other}`"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub customer_id: String,
    pub channel: String,
    pub locale: String,
    pub metadata: BTreeMap<String, String>,
    pub state: ConversationState,
    pub dialog_state: String,
    pub last_sequence: u64,
    pub turns: u64,
    pub end_reason: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// What the NLU decided for a customer message, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NluRecord {
    pub intent: String,
    pub confidence: f32,
    pub out_of_scope: bool,
    pub ranking: Vec<(String, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub sequence: u64,
    pub author: Author,
    pub text: String,
    pub quick_replies: Vec<QuickReply>,
    pub client_message_id: Option<String>,
    pub reply_to: Option<String>,
    pub nlu: Option<NluRecord>,
    pub state_after: Option<ConversationState>,
    pub created_at: i64,
}

/// Something that happened in a conversation, in sequence order.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub conversation_id: String,
    pub sequence: u64,
    pub created_at: i64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// Stored with its message; the payload column holds nothing.
    #[serde(skip)]
    Message(Message),
    ReadReceipt {
        reader: Author,
        up_to_sequence: u64,
    },
    StateChange {
        state: ConversationState,
        dialog_state: String,
    },
    Ended {
        reason: String,
    },
    /// Where the conversation's hand-over to a person stands.
    Handoff {
        ticket_id: String,
        status: HandoffStatus,
        /// In the queue (1 = next); 0 when not waiting.
        position: u32,
        wait_secs: u32,
    },
}

impl EventKind {
    fn name(&self) -> &'static str {
        match self {
            Self::Message(_) => "message",
            Self::ReadReceipt { .. } => "read_receipt",
            Self::StateChange { .. } => "state_change",
            Self::Ended { .. } => "ended",
            Self::Handoff { .. } => "handoff",
        }
    }
}

/// A bot reply to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub quick_replies: Vec<QuickReply>,
}

/// A conversation to open.
#[derive(Debug, Clone)]
pub struct NewConversation {
    pub customer_id: String,
    pub channel: String,
    pub locale: String,
    pub metadata: BTreeMap<String, String>,
    pub greeting: Vec<Reply>,
}

/// A customer turn to commit.
#[derive(Debug, Clone)]
pub struct NewTurn {
    pub conversation_id: String,
    pub customer_id: String,
    pub client_message_id: String,
    /// The customer's text, already masked.
    pub text: String,
    /// sha256 of `text`, to tell a resend from a reused id.
    pub text_sha256: String,
    /// `None` while a person has the conversation (the NLU is not asked).
    pub nlu: Option<NluRecord>,
    pub replies: Vec<Reply>,
    pub state_after: ConversationState,
    /// The dialog engine's state after the turn (JSON), stored with it.
    pub dialog_state: String,
    /// The conversation's `last_sequence` when the answer was decided.
    pub expected_last_sequence: u64,
    /// A hand-over opened or cancelled by this turn, stored with it.
    pub ticket: Option<TicketChange>,
}

/// A stored turn: the customer message and the replies to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub customer: Message,
    pub replies: Vec<Message>,
}

#[derive(Debug)]
pub enum TurnOutcome {
    /// Committed now; the events to deliver live.
    Stored(Turn, Vec<Event>),
    /// The same client message was stored before: its turn, unchanged.
    Replayed(Turn),
    /// The client message id was used before for a different text.
    IdReused,
    NotFound,
    Ended,
    /// The conversation moved on (another replica's turn) since the caller
    /// read it; decide the answer again.
    Stale,
}

/// Storage handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: admits one writing transaction at a time in this process.
    write_gate: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Connects to PostgreSQL when `database_url` is set, else opens (and
    /// creates) the SQLite file in the data directory. Does not migrate.
    pub async fn connect(settings: &Settings) -> Result<Self> {
        sqlx::any::install_default_drivers();
        if !settings.database_url.is_empty() {
            let pool = AnyPoolOptions::new()
                .max_connections(settings.storage.max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect(&settings.database_url.0)
                .await?;
            return Ok(Self {
                pool,
                backend: Backend::Postgres,
                write_gate: None,
            });
        }
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| StoreError::DataDir {
            path: settings.data_dir.clone(),
            source,
        })?;
        let path = settings.sqlite_path();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let sync = match settings.storage.sqlite_synchronous {
            SqliteSync::Full => "PRAGMA synchronous = FULL",
            SqliteSync::Normal => "PRAGMA synchronous = NORMAL",
        };
        let pool = AnyPoolOptions::new()
            .max_connections(settings.storage.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute(sync).await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            write_gate: Some(std::sync::Arc::new(tokio::sync::Mutex::new(()))),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn gate(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_gate {
            Some(g) => Some(g.lock().await),
            None => None,
        }
    }

    /// Opens a conversation with its greeting.
    pub async fn create_conversation(
        &self,
        new: NewConversation,
    ) -> Result<(Conversation, Vec<Message>)> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let metadata =
            serde_json::to_string(&new.metadata).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _gate = self.gate().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO conversations (id, customer_id, channel, locale, metadata, state, \
             dialog_state, last_sequence, turns, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, '', $7, 0, $8, $8)",
        )
        .bind(&id)
        .bind(&new.customer_id)
        .bind(&new.channel)
        .bind(&new.locale)
        .bind(&metadata)
        .bind(ConversationState::Active.as_str())
        .bind(seq(new.greeting.len() as u64))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut messages = Vec::with_capacity(new.greeting.len());
        for (i, reply) in new.greeting.iter().enumerate() {
            let m = Message {
                id: uuid::Uuid::now_v7().to_string(),
                conversation_id: id.clone(),
                sequence: i as u64 + 1,
                author: Author::Bot,
                text: reply.text.clone(),
                quick_replies: reply.quick_replies.clone(),
                client_message_id: None,
                reply_to: None,
                nlu: None,
                state_after: None,
                created_at: now,
            };
            messages.push(m);
        }
        let all: Vec<&Message> = messages.iter().collect();
        rows::insert_messages(&mut tx, &all, None).await?;
        tx.commit().await?;
        Ok((
            Conversation {
                id,
                customer_id: new.customer_id,
                channel: new.channel,
                locale: new.locale,
                metadata: new.metadata,
                state: ConversationState::Active,
                dialog_state: String::new(),
                last_sequence: messages.len() as u64,
                turns: 0,
                end_reason: None,
                created_at: now,
            },
            messages,
        ))
    }

    /// The customer's conversation; `None` when it does not exist or belongs
    /// to someone else (callers cannot tell the two apart).
    pub async fn conversation(&self, id: &str, customer_id: &str) -> Result<Option<Conversation>> {
        let row = sqlx::query(
            "SELECT id, customer_id, channel, locale, metadata, state, dialog_state, \
             last_sequence, turns, end_reason, created_at FROM conversations \
             WHERE id = $1 AND customer_id = $2",
        )
        .bind(id)
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| rows::conversation(&r)).transpose()
    }

    /// The stored turn for a client message id, if any.
    pub async fn find_turn(
        &self,
        conversation_id: &str,
        customer_id: &str,
        client_message_id: &str,
    ) -> Result<Option<(Turn, String)>> {
        let mut conn = self.pool.acquire().await?;
        rows::find_turn(&mut conn, conversation_id, customer_id, client_message_id).await
    }

    /// The customer's conversation and, when `client_message_id` was stored
    /// before, its turn and text hash (one query when it was not).
    pub async fn conversation_and_turn(
        &self,
        conversation_id: &str,
        customer_id: &str,
        client_message_id: &str,
    ) -> Result<Option<(Conversation, Option<(Turn, String)>)>> {
        let mut conn = self.pool.acquire().await?;
        let Some((conversation, stored)) = rows::conversation_with_message(
            &mut conn,
            conversation_id,
            customer_id,
            client_message_id,
        )
        .await?
        else {
            return Ok(None);
        };
        let turn = if stored {
            rows::find_turn(&mut conn, conversation_id, customer_id, client_message_id).await?
        } else {
            None
        };
        Ok(Some((conversation, turn)))
    }

    /// Commits one customer turn (see the module invariants): lock the
    /// conversation, insert the messages and their events (one statement
    /// each), update the conversation. A client message id stored in the
    /// meantime (another replica) trips the unique index; the stored turn is
    /// returned instead.
    pub async fn commit_turn(&self, turn: NewTurn) -> Result<TurnOutcome> {
        let now = now_ms();
        let outcome = {
            let _gate = self.gate().await;
            let mut tx = self.pool.begin().await?;
            let Some(lock) =
                rows::lock_conversation(&mut tx, &turn.conversation_id, &turn.customer_id, now)
                    .await?
            else {
                tx.rollback().await?;
                return Ok(TurnOutcome::NotFound);
            };
            if lock.state == ConversationState::Ended {
                tx.rollback().await?;
                return Ok(TurnOutcome::Ended);
            }
            // Another replica committed a turn since the caller read the
            // conversation: its answer was decided on stale state.
            if lock.last_sequence != turn.expected_last_sequence {
                tx.rollback().await?;
                return Ok(TurnOutcome::Stale);
            }
            let mut next = lock.last_sequence + 1;
            let customer = Message {
                id: uuid::Uuid::now_v7().to_string(),
                conversation_id: turn.conversation_id.clone(),
                sequence: next,
                author: Author::Customer,
                text: turn.text.clone(),
                quick_replies: Vec::new(),
                client_message_id: Some(turn.client_message_id.clone()),
                reply_to: None,
                nlu: turn.nlu.clone(),
                state_after: Some(turn.state_after),
                created_at: now,
            };
            let mut replies = Vec::with_capacity(turn.replies.len());
            for reply in &turn.replies {
                next += 1;
                replies.push(Message {
                    id: uuid::Uuid::now_v7().to_string(),
                    conversation_id: turn.conversation_id.clone(),
                    sequence: next,
                    author: Author::Bot,
                    text: reply.text.clone(),
                    quick_replies: reply.quick_replies.clone(),
                    client_message_id: None,
                    reply_to: Some(customer.id.clone()),
                    nlu: None,
                    state_after: None,
                    created_at: now,
                });
            }
            let all: Vec<&Message> = std::iter::once(&customer).chain(&replies).collect();
            match rows::insert_messages(&mut tx, &all, Some(&turn.text_sha256)).await {
                Ok(()) => {}
                Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                    tx.rollback().await?;
                    drop(_gate);
                    let stored = self
                        .find_turn(
                            &turn.conversation_id,
                            &turn.customer_id,
                            &turn.client_message_id,
                        )
                        .await?;
                    return match stored {
                        Some((t, sha)) if sha == turn.text_sha256 => Ok(TurnOutcome::Replayed(t)),
                        Some(_) => Ok(TurnOutcome::IdReused),
                        None => Err(StoreError::Database(sqlx::Error::Database(e))),
                    };
                }
                Err(e) => return Err(e),
            }
            let mut events: Vec<Event> = all.iter().map(|m| message_event(m)).collect();
            let handoff = match &turn.ticket {
                None => None,
                Some(TicketChange::Open(t)) => {
                    match tickets::insert_ticket(
                        &mut tx,
                        t,
                        &turn.conversation_id,
                        &turn.customer_id,
                        now,
                    )
                    .await
                    {
                        Ok(()) => {}
                        // The conversation already has an open ticket
                        // (another replica's turn): decide again.
                        Err(StoreError::Database(sqlx::Error::Database(e)))
                            if e.is_unique_violation() =>
                        {
                            tx.rollback().await?;
                            return Ok(TurnOutcome::Stale);
                        }
                        Err(e) => return Err(e),
                    }
                    Some(EventKind::Handoff {
                        ticket_id: t.id.clone(),
                        status: HandoffStatus::Queued,
                        position: t.position,
                        wait_secs: t.wait_secs,
                    })
                }
                Some(TicketChange::Cancel { ticket_id }) => {
                    if !tickets::cancel_ticket(&mut tx, ticket_id, &turn.conversation_id, now)
                        .await?
                    {
                        // An agent took it meanwhile: the message is theirs.
                        tx.rollback().await?;
                        return Ok(TurnOutcome::Stale);
                    }
                    Some(EventKind::Handoff {
                        ticket_id: ticket_id.clone(),
                        status: HandoffStatus::Cancelled,
                        position: 0,
                        wait_secs: 0,
                    })
                }
            };
            if let Some(kind) = handoff {
                next += 1;
                let e = Event {
                    conversation_id: turn.conversation_id.clone(),
                    sequence: next,
                    created_at: now,
                    kind,
                };
                rows::insert_event(&mut tx, &e).await?;
                events.push(e);
            }
            if turn.state_after != lock.state {
                next += 1;
                let e = Event {
                    conversation_id: turn.conversation_id.clone(),
                    sequence: next,
                    created_at: now,
                    kind: EventKind::StateChange {
                        state: turn.state_after,
                        dialog_state: String::new(),
                    },
                };
                rows::insert_event(&mut tx, &e).await?;
                events.push(e);
            }
            sqlx::query(
                "UPDATE conversations SET last_sequence = $1, state = $2, dialog_state = $3, \
                 turns = turns + 1 WHERE id = $4",
            )
            .bind(seq(next))
            .bind(turn.state_after.as_str())
            .bind(&turn.dialog_state)
            .bind(&turn.conversation_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            TurnOutcome::Stored(Turn { customer, replies }, events)
        };
        Ok(outcome)
    }

    /// Messages after `after_sequence`, oldest first, at most `limit`.
    pub async fn messages_after(
        &self,
        conversation_id: &str,
        after_sequence: u64,
        limit: i64,
    ) -> Result<Vec<Message>> {
        let found = sqlx::query(&format!(
            "SELECT {} FROM messages m WHERE m.conversation_id = $1 AND m.sequence > $2 \
             ORDER BY m.sequence LIMIT $3",
            rows::MESSAGE_COLUMNS
        ))
        .bind(conversation_id)
        .bind(seq(after_sequence))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::message).collect()
    }

    /// Stored events after `after_sequence`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        conversation_id: &str,
        after_sequence: u64,
        limit: i64,
    ) -> Result<Vec<Event>> {
        let found = sqlx::query(&format!(
            "SELECT e.sequence AS e_sequence, e.kind AS e_kind, e.payload AS e_payload, \
             e.created_at AS e_created_at, {} FROM events e LEFT JOIN messages m \
             ON m.id = e.message_id WHERE e.conversation_id = $1 AND e.sequence > $2 \
             ORDER BY e.sequence LIMIT $3",
            rows::MESSAGE_COLUMNS
        ))
        .bind(conversation_id)
        .bind(seq(after_sequence))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|r| rows::event(conversation_id, r))
            .collect()
    }

    /// Appends one non-message event (a read receipt, say); `None` when the
    /// conversation is not the customer's.
    pub async fn append_event(
        &self,
        conversation_id: &str,
        customer_id: &str,
        kind: EventKind,
    ) -> Result<Option<Event>> {
        let now = now_ms();
        let _gate = self.gate().await;
        let mut tx = self.pool.begin().await?;
        let Some(lock) =
            rows::lock_conversation(&mut tx, conversation_id, customer_id, now).await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        if lock.state == ConversationState::Ended {
            tx.rollback().await?;
            return Err(StoreError::Ended);
        }
        if let EventKind::ReadReceipt { up_to_sequence, .. } = &kind
            && *up_to_sequence > lock.last_sequence
        {
            tx.rollback().await?;
            return Err(StoreError::SequenceAhead {
                given: *up_to_sequence,
                last: lock.last_sequence,
            });
        }
        let e = Event {
            conversation_id: conversation_id.to_owned(),
            sequence: lock.last_sequence + 1,
            created_at: now,
            kind,
        };
        rows::insert_event(&mut tx, &e).await?;
        sqlx::query("UPDATE conversations SET last_sequence = $1 WHERE id = $2")
            .bind(seq(e.sequence))
            .bind(conversation_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(e))
    }

    /// Ends a conversation. Ending an ended one changes nothing and returns
    /// no event. `None` when the conversation is not the customer's.
    pub async fn end_conversation(
        &self,
        conversation_id: &str,
        customer_id: &str,
        reason: &str,
    ) -> Result<Option<(u64, Option<Event>)>> {
        let now = now_ms();
        let _gate = self.gate().await;
        let mut tx = self.pool.begin().await?;
        let Some(lock) =
            rows::lock_conversation(&mut tx, conversation_id, customer_id, now).await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        if lock.state == ConversationState::Ended {
            tx.rollback().await?;
            return Ok(Some((lock.last_sequence, None)));
        }
        let e = Event {
            conversation_id: conversation_id.to_owned(),
            sequence: lock.last_sequence + 1,
            created_at: now,
            kind: EventKind::Ended {
                reason: reason.to_owned(),
            },
        };
        rows::insert_event(&mut tx, &e).await?;
        // Nobody is waiting any more: an open hand-over closes with it.
        sqlx::query(
            "UPDATE tickets SET state = 'cancelled', closed_at = $1, updated_at = $1, \
             lease_until = 0 WHERE conversation_id = $2 AND state IN ('queued', 'claimed')",
        )
        .bind(now)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE conversations SET last_sequence = $1, state = $2, end_reason = $3 WHERE id = $4",
        )
        .bind(seq(e.sequence))
        .bind(ConversationState::Ended.as_str())
        .bind(reason)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((e.sequence, Some(e))))
    }

    /// Records (or replaces) the customer's rating; `false` when the
    /// conversation is not the customer's.
    pub async fn submit_feedback(
        &self,
        conversation_id: &str,
        customer_id: &str,
        rating: u8,
        comment: &str,
    ) -> Result<bool> {
        let now = now_ms();
        let _gate = self.gate().await;
        let mut tx = self.pool.begin().await?;
        if rows::lock_conversation(&mut tx, conversation_id, customer_id, now)
            .await?
            .is_none()
        {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO feedback (conversation_id, rating, comment, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (conversation_id) DO UPDATE \
             SET rating = excluded.rating, comment = excluded.comment, updated_at = excluded.updated_at",
        )
        .bind(conversation_id)
        .bind(i64::from(rating))
        .bind(comment)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The stored rating and comment, for operators and tests.
    pub async fn feedback(&self, conversation_id: &str) -> Result<Option<(u8, String)>> {
        let row = sqlx::query("SELECT rating, comment FROM feedback WHERE conversation_id = $1")
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r: AnyRow| {
            let rating: i64 = r.try_get("rating")?;
            let comment: String = r.try_get("comment")?;
            Ok((u8::try_from(rating).unwrap_or(0), comment))
        })
        .transpose()
    }

    /// Conversations a customer has (for tests and audits).
    pub async fn customer_conversation_count(&self, customer_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM conversations WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Customer messages stored with this client id (0 or 1; for tests and audits).
    pub async fn count_client_messages(
        &self,
        conversation_id: &str,
        client_message_id: &str,
    ) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM messages WHERE conversation_id = $1 AND client_message_id = $2",
        )
        .bind(conversation_id)
        .bind(client_message_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}

fn message_event(m: &Message) -> Event {
    Event {
        conversation_id: m.conversation_id.clone(),
        sequence: m.sequence,
        created_at: m.created_at,
        kind: EventKind::Message(m.clone()),
    }
}
