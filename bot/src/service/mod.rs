//! The conversation service without its wire format: the turn loop (validate,
//! mask, classify, answer, commit, deliver), transcripts, event streams with
//! resume, and the live fan-out of events. The gRPC layer (`grpc`) converts
//! requests into calls here and `ServiceError`s into statuses; nothing here
//! knows about tonic or protobuf.

pub mod hub;
pub mod locks;
pub mod responder;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bankbot_dialog::State as DialogState;
use bankbot_models::ModelError;
use bankbot_models::engine::Engine;
use bankbot_models::entities::Date;
use sha2::{Digest, Sha256};

use crate::executor::Executor;
use crate::settings::BotSettings;
use crate::store::{
    self, Author, Conversation, ConversationState, Event, EventKind, Message, NewConversation,
    NewTurn, NluRecord, Store, StoreError, Turn, TurnOutcome,
};
use crate::text;
use bankbot_connectors::Bank;
pub use hub::{Hub, LiveEvent};
pub use responder::Responder;

/// Longest client message id, conversation end reason and channel name.
pub const MAX_ID_CHARS: usize = 128;
pub const MAX_REASON_CHARS: usize = 64;
pub const MAX_METADATA_ENTRIES: usize = 32;
pub const MAX_COMMENT_BYTES: usize = 2048;
/// Times a turn is decided again when another replica moved the
/// conversation on in the meantime.
const MAX_TURN_ATTEMPTS: usize = 10;

/// The loaded NLU and dialog: the inference engine, the bot's own texts,
/// and the catalogue's flows.
#[derive(Debug)]
pub struct Nlu {
    pub engine: Engine,
    pub responder: Responder,
    pub flows: Arc<bankbot_dialog::Flows>,
}

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        reason: &'static str,
        message: String,
    },
    /// The conversation does not exist or is not the caller's.
    #[error("conversation not found")]
    NotFound,
    #[error("the conversation has ended")]
    Ended,
    #[error("client_message_id was already used for a different message in this conversation")]
    IdReused,
    #[error("{what} is busy; retry shortly")]
    Overloaded {
        what: &'static str,
        retry_after: Duration,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Database(sqlx::Error::PoolTimedOut)
            | StoreError::Database(sqlx::Error::Io(_))
            | StoreError::Database(sqlx::Error::PoolClosed) => {
                Self::Unavailable("the database is unavailable; retry shortly".into())
            }
            StoreError::Ended => Self::Ended,
            StoreError::SequenceAhead { .. } => {
                Self::invalid("up_to_sequence", "SEQUENCE_AHEAD", e.to_string())
            }
            _ => Self::Internal(e.to_string()),
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The reply to one customer turn.
#[derive(Debug, Clone)]
pub struct TurnReply {
    pub turn: Turn,
    pub state: ConversationState,
    /// True when this is the stored reply to an earlier identical request.
    pub replayed: bool,
}

/// Observes turns for metrics without this module knowing the exporter.
pub trait TurnObserver: Send + Sync + std::fmt::Debug {
    fn turn(&self, nlu: &NluRecord, latency: Duration, replayed: bool);
}

/// The conversation service.
#[derive(Debug)]
pub struct Conversations {
    store: Store,
    nlu: Arc<Nlu>,
    bank: Arc<dyn Bank>,
    hub: Arc<Hub>,
    locks: locks::KeyedLocks,
    bot: BotSettings,
    max_text_bytes: usize,
    observer: Arc<dyn TurnObserver>,
}

impl Conversations {
    pub fn new(
        store: Store,
        nlu: Arc<Nlu>,
        bank: Arc<dyn Bank>,
        bot: BotSettings,
        max_text_bytes: usize,
        observer: Arc<dyn TurnObserver>,
    ) -> Self {
        Self {
            store,
            nlu,
            bank,
            hub: Arc::new(Hub::default()),
            locks: locks::KeyedLocks::default(),
            bot,
            max_text_bytes,
            observer,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Publishes events stored outside a turn (the reconciler's messages)
    /// to this replica's live streams. A stream that sees them out of
    /// order with a concurrent turn's notices the gap and reads the store.
    pub fn publish(&self, events: Vec<Event>) {
        for e in events {
            self.hub.publish(LiveEvent::Stored(e));
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.nlu.engine
    }

    /// Opens a conversation for `customer`.
    pub async fn start(
        &self,
        customer: &str,
        channel: &str,
        locale: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<(Conversation, Vec<Message>)> {
        let channel = channel.trim();
        if channel.is_empty()
            || channel.len() > MAX_REASON_CHARS
            || !channel
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            return Err(ServiceError::invalid(
                "channel",
                "CHANNEL_INVALID",
                "must be 1-64 characters of lowercase letters, digits, '-', '_' or '.'",
            ));
        }
        let locale = match locale.trim() {
            "" => "en",
            l if l.len() <= 35 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => l,
            _ => {
                return Err(ServiceError::invalid(
                    "locale",
                    "LOCALE_INVALID",
                    "must be a BCP 47 language tag such as en-GB",
                ));
            }
        };
        if metadata.len() > MAX_METADATA_ENTRIES {
            return Err(ServiceError::invalid(
                "metadata",
                "METADATA_TOO_LARGE",
                format!("at most {MAX_METADATA_ENTRIES} entries"),
            ));
        }
        for (k, v) in &metadata {
            if k.is_empty() || k.len() > 64 || v.len() > 512 || has_control(k) || has_control(v) {
                return Err(ServiceError::invalid(
                    "metadata",
                    "METADATA_INVALID",
                    "keys must be 1-64 bytes and values at most 512 bytes, without control characters",
                ));
            }
        }
        let greeting = store::Reply {
            text: self.bot.greeting.clone(),
            quick_replies: Vec::new(),
        };
        Ok(self
            .store
            .create_conversation(NewConversation {
                customer_id: customer.to_owned(),
                channel: channel.to_owned(),
                locale: locale.to_owned(),
                metadata,
                greeting: vec![greeting],
            })
            .await?)
    }

    /// One customer turn: idempotent per (conversation, client_message_id).
    /// Traced as a `turn` span with the conversation, intent and confidence
    /// (never the text).
    #[tracing::instrument(
        name = "turn",
        skip_all,
        fields(conversation_id = %conversation_id, intent, confidence, replayed)
    )]
    pub async fn send(
        &self,
        customer: &str,
        conversation_id: &str,
        client_message_id: &str,
        raw_text: &str,
    ) -> Result<TurnReply> {
        let started = Instant::now();
        check_conversation_id(conversation_id)?;
        check_client_message_id(client_message_id)?;
        let text = text::validate(raw_text, self.max_text_bytes)
            .map_err(|e| ServiceError::invalid("text", e.reason(), e.to_string()))?;
        // Masked before anything else sees it: storage, logs and the classifier.
        let masked = text::mask_card_numbers(text);
        let cards_masked = masked.cards;
        let sha = hex::encode(Sha256::digest(masked.text.as_bytes()));

        // One turn per conversation at a time in this process; the store's
        // row lock does the same across replicas.
        let _turn = self.locks.lock(conversation_id).await;
        for _attempt in 0..MAX_TURN_ATTEMPTS {
            let (conversation, stored) = self
                .store
                .conversation_and_turn(conversation_id, customer, client_message_id)
                .await?
                .ok_or(ServiceError::NotFound)?;
            if let Some((turn, stored_sha)) = stored {
                return self.replay(turn, &stored_sha, &sha, started);
            }
            if conversation.state == ConversationState::Ended {
                return Err(ServiceError::Ended);
            }
            let classified = self
                .nlu
                .engine
                .classify(&masked.text)
                .await
                .map_err(|e| match e {
                    ModelError::Overloaded { .. } => ServiceError::Overloaded {
                        what: "the classifier",
                        retry_after: Duration::from_millis(200),
                    },
                    ModelError::EngineStopped => {
                        ServiceError::Unavailable("the classifier is stopping".into())
                    }
                    other => ServiceError::Internal(other.to_string()),
                })?;
            let prediction = classified.prediction;
            // The dialog state as stored with the last turn; a state this
            // version cannot read starts the dialog afresh (and says so in
            // the log) rather than refusing the customer.
            let dialog_state: DialogState = if conversation.dialog_state.is_empty() {
                DialogState::default()
            } else {
                serde_json::from_str(&conversation.dialog_state).unwrap_or_else(|e| {
                    tracing::warn!(conversation_id, error = %e, "unreadable dialog state; starting afresh");
                    DialogState::default()
                })
            };
            let dialog_nlu = crate::executor::Nlu::from(&prediction);
            let executor = Executor {
                flows: self.nlu.flows.clone(),
                bank: self.bank.clone(),
                journal: Some(self.store.clone()),
            };
            let (dialog_after, report) = executor
                .handle(
                    customer,
                    conversation_id,
                    &dialog_state,
                    &masked.text,
                    &dialog_nlu,
                    Date::today_utc(),
                )
                .await;
            let mut replies = Vec::with_capacity(report.replies.len() + 1);
            if cards_masked > 0 {
                replies.push(self.nlu.responder.card_warning());
            }
            replies.extend(report.replies.iter().map(|(text, quick)| {
                store::Reply {
                    text: text.clone(),
                    quick_replies: quick
                        .iter()
                        .map(|q| crate::catalogue::QuickReply {
                            title: self
                                .nlu
                                .flows
                                .quick_reply_titles
                                .get(q)
                                .unwrap_or(q)
                                .clone(),
                            payload: q.clone(),
                        })
                        .collect(),
                }
            }));
            let state_after = if dialog_after.escalated {
                ConversationState::Handoff
            } else {
                ConversationState::Active
            };
            let dialog_json = serde_json::to_string(&dialog_after)
                .map_err(|e| ServiceError::Internal(format!("dialog state: {e}")))?;
            let nlu = NluRecord {
                intent: prediction.intent.name.clone(),
                confidence: prediction.intent.confidence,
                out_of_scope: prediction.out_of_scope,
                ranking: prediction
                    .ranking
                    .iter()
                    .map(|r| (r.name.clone(), r.confidence))
                    .collect(),
            };
            let new_turn = NewTurn {
                conversation_id: conversation_id.to_owned(),
                customer_id: customer.to_owned(),
                client_message_id: client_message_id.to_owned(),
                text: masked.text.clone(),
                text_sha256: sha.clone(),
                nlu: nlu.clone(),
                replies,
                state_after,
                dialog_state: dialog_json,
                expected_last_sequence: conversation.last_sequence,
            };
            // Commit and publish in a task of their own: a caller that goes
            // away mid-commit cannot leave a committed turn unpublished.
            let (store, hub) = (self.store.clone(), self.hub.clone());
            let outcome = tokio::spawn(async move {
                let outcome = store.commit_turn(new_turn).await;
                if let Ok(TurnOutcome::Stored(_, events)) = &outcome {
                    for e in events {
                        hub.publish(LiveEvent::Stored(e.clone()));
                    }
                }
                outcome
            })
            .await
            .map_err(|e| ServiceError::Internal(format!("turn task failed: {e}")))??;
            match outcome {
                TurnOutcome::Stored(turn, _) => {
                    self.observer.turn(&nlu, started.elapsed(), false);
                    let span = tracing::Span::current();
                    span.record("intent", nlu.intent.as_str());
                    span.record("confidence", nlu.confidence);
                    span.record("replayed", false);
                    tracing::info!(
                        conversation_id,
                        intent = %nlu.intent,
                        confidence = nlu.confidence,
                        out_of_scope = nlu.out_of_scope,
                        cards_masked,
                        "turn"
                    );
                    return Ok(TurnReply {
                        turn,
                        state: state_after,
                        replayed: false,
                    });
                }
                // Another replica stored the same message between our check and commit.
                TurnOutcome::Replayed(turn) => return self.replay(turn, &sha, &sha, started),
                TurnOutcome::IdReused => return Err(ServiceError::IdReused),
                TurnOutcome::NotFound => return Err(ServiceError::NotFound),
                TurnOutcome::Ended => return Err(ServiceError::Ended),
                TurnOutcome::Stale => {
                    // Out of step with the other replica, not in lockstep.
                    let pause = 1 + u64::from(rand::random::<u8>() % 8);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
        Err(ServiceError::Overloaded {
            what: "this conversation",
            retry_after: Duration::from_millis(100),
        })
    }

    fn replay(
        &self,
        turn: Turn,
        stored_sha: &str,
        sha: &str,
        started: Instant,
    ) -> Result<TurnReply> {
        if stored_sha != sha {
            return Err(ServiceError::IdReused);
        }
        let state = turn
            .customer
            .state_after
            .unwrap_or(ConversationState::Active);
        if let Some(nlu) = &turn.customer.nlu {
            self.observer.turn(nlu, started.elapsed(), true);
            let span = tracing::Span::current();
            span.record("intent", nlu.intent.as_str());
            span.record("replayed", true);
        }
        Ok(TurnReply {
            turn,
            state,
            replayed: true,
        })
    }

    /// The caller's conversation, or `NotFound`.
    pub async fn conversation(
        &self,
        customer: &str,
        conversation_id: &str,
    ) -> Result<Conversation> {
        check_conversation_id(conversation_id)?;
        self.store
            .conversation(conversation_id, customer)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// Messages after `after_sequence`, oldest first.
    pub async fn messages(
        &self,
        customer: &str,
        conversation_id: &str,
        after_sequence: u64,
        limit: i64,
    ) -> Result<Vec<Message>> {
        self.conversation(customer, conversation_id).await?;
        Ok(self
            .store
            .messages_after(conversation_id, after_sequence, limit)
            .await?)
    }

    /// Stored events after `after_sequence` (ownership checked by the caller).
    pub async fn events_after(
        &self,
        conversation_id: &str,
        after_sequence: u64,
    ) -> Result<Vec<Event>> {
        Ok(self
            .store
            .events_after(conversation_id, after_sequence, store::EVENT_PAGE)
            .await?)
    }

    /// A typing indicator: delivered live, never stored.
    pub async fn typing(&self, customer: &str, conversation_id: &str, active: bool) -> Result<()> {
        self.conversation(customer, conversation_id).await?;
        self.hub.publish(LiveEvent::Typing {
            conversation_id: conversation_id.to_owned(),
            author: Author::Customer,
            active,
        });
        Ok(())
    }

    /// Records that the customer has read up to `up_to_sequence`.
    pub async fn read_receipt(
        &self,
        customer: &str,
        conversation_id: &str,
        up_to_sequence: u64,
    ) -> Result<Event> {
        check_conversation_id(conversation_id)?;
        let _turn = self.locks.lock(conversation_id).await;
        let e = self
            .store
            .append_event(
                conversation_id,
                customer,
                EventKind::ReadReceipt {
                    reader: Author::Customer,
                    up_to_sequence,
                },
            )
            .await?
            .ok_or(ServiceError::NotFound)?;
        self.hub.publish(LiveEvent::Stored(e.clone()));
        Ok(e)
    }

    /// Ends the conversation; ending it twice is not an error.
    pub async fn end(&self, customer: &str, conversation_id: &str, reason: &str) -> Result<u64> {
        check_conversation_id(conversation_id)?;
        let reason = match reason.trim() {
            "" => "customer_ended",
            r if r.len() <= MAX_REASON_CHARS && !has_control(r) => r,
            _ => {
                return Err(ServiceError::invalid(
                    "reason",
                    "REASON_INVALID",
                    format!("at most {MAX_REASON_CHARS} bytes without control characters"),
                ));
            }
        };
        let _turn = self.locks.lock(conversation_id).await;
        let (last, event) = self
            .store
            .end_conversation(conversation_id, customer, reason)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if let Some(e) = event {
            self.hub.publish(LiveEvent::Stored(e));
        }
        Ok(last)
    }

    /// Stores customer satisfaction (1-5) and an optional comment (masked).
    pub async fn feedback(
        &self,
        customer: &str,
        conversation_id: &str,
        rating: i32,
        comment: &str,
    ) -> Result<()> {
        check_conversation_id(conversation_id)?;
        let rating = u8::try_from(rating)
            .ok()
            .filter(|r| (1..=5).contains(r))
            .ok_or_else(|| {
                ServiceError::invalid("rating", "RATING_OUT_OF_RANGE", "must be 1 to 5")
            })?;
        let comment = match comment.trim() {
            "" => String::new(),
            c => {
                text::validate(c, MAX_COMMENT_BYTES)
                    .map_err(|e| ServiceError::invalid("comment", e.reason(), e.to_string()))?;
                text::mask_card_numbers(c).text
            }
        };
        if self
            .store
            .submit_feedback(conversation_id, customer, rating, &comment)
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::NotFound)
        }
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Conversation ids are UUIDs; anything else cannot exist.
pub fn check_conversation_id(id: &str) -> Result<()> {
    match uuid::Uuid::try_parse(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(ServiceError::invalid(
            "conversation_id",
            "CONVERSATION_ID_INVALID",
            "must be the id StartConversation returned",
        )),
    }
}

fn check_client_message_id(id: &str) -> Result<()> {
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS || has_control(id) || id.trim() != id {
        return Err(ServiceError::invalid(
            "client_message_id",
            "CLIENT_MESSAGE_ID_INVALID",
            format!(
                "must be 1-{MAX_ID_CHARS} characters without control characters or surrounding spaces (a UUID is a good choice)"
            ),
        ));
    }
    Ok(())
}
