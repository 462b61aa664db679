//! The conversation service without its wire format: the turn loop (validate,
//! mask, classify, answer, commit, deliver), transcripts, event streams with
//! resume, and the live fan-out of events. The gRPC layer (`grpc`) converts
//! requests into calls here and `ServiceError`s into statuses; nothing here
//! knows about tonic or protobuf.

pub mod agents;
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

use crate::escalation::Escalations;
use crate::executor::Executor;
use crate::settings::BotSettings;
use crate::store::{
    self, Author, Conversation, ConversationState, Event, EventKind, Message, NewConversation,
    NewTurn, NluRecord, Store, StoreError, Ticket, TicketChange, TicketState, Turn, TurnOutcome,
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
    /// The ticket does not exist or the agent may not see it.
    #[error("ticket not found")]
    TicketNotFound,
    /// The operation does not fit where the ticket or agent stands.
    #[error("{message}")]
    Refused {
        reason: &'static str,
        message: String,
    },
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
            StoreError::IdReused => Self::IdReused,
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
    escalations: Arc<Escalations>,
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
        escalations: Arc<Escalations>,
    ) -> Self {
        Self {
            store,
            nlu,
            bank,
            escalations,
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

    pub fn hub(&self) -> &Arc<Hub> {
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
        let sha = text_sha(&masked.text);

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
            // The dialog state as stored with the last turn; a state this
            // version cannot read starts the dialog afresh (and says so in
            // the log) rather than refusing the customer.
            let mut dialog_state: DialogState = if conversation.dialog_state.is_empty() {
                DialogState::default()
            } else {
                serde_json::from_str(&conversation.dialog_state).unwrap_or_else(|e| {
                    tracing::warn!(conversation_id, error = %e, "unreadable dialog state; starting afresh");
                    DialogState::default()
                })
            };
            let ticket = if conversation.state == ConversationState::Handoff {
                self.store.open_ticket(conversation_id).await?
            } else {
                None
            };
            // The conversation's state is the record: one that no person
            // holds (the ticket was closed or dead-lettered) is the bot's.
            if ticket.is_none() && dialog_state.escalated {
                dialog_state = handed_back(&self.nlu.flows, &dialog_state);
            }
            let decided = match &ticket {
                Some(t) => self.with_person(t, &dialog_state, &masked.text).await?,
                None => {
                    self.with_bot(customer, conversation_id, &dialog_state, &masked.text)
                        .await?
                }
            };
            let mut replies = Vec::with_capacity(decided.replies.len() + 1);
            if cards_masked > 0 {
                replies.push(self.nlu.responder.card_warning());
            }
            replies.extend(decided.replies);
            let state_after = decided.state_after;
            let nlu = decided.nlu;
            let ticket_change = decided.ticket;
            let new_turn = NewTurn {
                conversation_id: conversation_id.to_owned(),
                customer_id: customer.to_owned(),
                client_message_id: client_message_id.to_owned(),
                text: masked.text.clone(),
                text_sha256: sha.clone(),
                nlu: nlu.clone(),
                replies,
                state_after,
                dialog_state: decided.dialog_json,
                expected_last_sequence: conversation.last_sequence,
                ticket: ticket_change.clone(),
            };
            // Commit and publish in a task of their own: a caller that goes
            // away mid-commit cannot leave a committed turn unpublished.
            let (store, hub) = (self.store.clone(), self.hub.clone());
            let escalations = self.escalations.clone();
            let change = ticket_change.clone();
            let outcome = tokio::spawn(async move {
                let outcome = store.commit_turn(new_turn).await;
                if let Ok(TurnOutcome::Stored(_, events)) = &outcome {
                    for e in events {
                        hub.publish(LiveEvent::Stored(e.clone()));
                    }
                    after_commit(&escalations, change.as_ref()).await;
                }
                outcome
            })
            .await
            .map_err(|e| ServiceError::Internal(format!("turn task failed: {e}")))??;
            match outcome {
                TurnOutcome::Stored(turn, _) => {
                    if let Some(nlu) = &nlu {
                        self.observer.turn(nlu, started.elapsed(), false);
                        let span = tracing::Span::current();
                        span.record("intent", nlu.intent.as_str());
                        span.record("confidence", nlu.confidence);
                    }
                    tracing::Span::current().record("replayed", false);
                    tracing::info!(
                        conversation_id,
                        intent = nlu.as_ref().map_or("", |n| n.intent.as_str()),
                        confidence = nlu.as_ref().map_or(0.0, |n| n.confidence),
                        out_of_scope = nlu.as_ref().is_some_and(|n| n.out_of_scope),
                        cards_masked,
                        handoff = ticket.is_some(),
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

    async fn classify(&self, text: &str) -> Result<bankbot_models::classifier::Prediction> {
        let classified = self.nlu.engine.classify(text).await.map_err(|e| match e {
            ModelError::Overloaded { .. } => ServiceError::Overloaded {
                what: "the classifier",
                retry_after: Duration::from_millis(200),
            },
            ModelError::EngineStopped => {
                ServiceError::Unavailable("the classifier is stopping".into())
            }
            other => ServiceError::Internal(other.to_string()),
        })?;
        Ok(classified.prediction)
    }

    /// The bot answers: classify, step the dialog (and the bank), and open
    /// a ticket when the dialog hands over.
    async fn with_bot(
        &self,
        customer: &str,
        conversation_id: &str,
        dialog_state: &DialogState,
        text: &str,
    ) -> Result<Decided> {
        let prediction = self.classify(text).await?;
        let executor = Executor {
            flows: self.nlu.flows.clone(),
            bank: self.bank.clone(),
            journal: Some(self.store.clone()),
        };
        let (dialog_after, report) = executor
            .handle(
                customer,
                conversation_id,
                dialog_state,
                text,
                &crate::executor::Nlu::from(&prediction),
                Date::today_utc(),
            )
            .await;
        let mut replies: Vec<store::Reply> = report
            .replies
            .iter()
            .map(|(text, quick)| self.reply(text, quick))
            .collect();
        let mut ticket = None;
        if let Some((reason, priority, skill)) = report.escalations.last() {
            let (new, notice) = self
                .escalations
                .draft(*reason, *priority, skill, &dialog_after)
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            replies.push(store::Reply {
                text: notice,
                quick_replies: vec![crate::catalogue::QuickReply {
                    title: STOP_WAITING.to_owned(),
                    payload: STOP_WAITING.to_lowercase(),
                }],
            });
            ticket = Some(TicketChange::Open(new));
        }
        let state_after = if dialog_after.escalated {
            ConversationState::Handoff
        } else {
            ConversationState::Active
        };
        Ok(Decided {
            nlu: Some(nlu_record(&prediction)),
            replies,
            state_after,
            dialog_json: dialog_json(&dialog_after)?,
            ticket,
        })
    }

    /// A person has (or is about to have) the conversation: the message is
    /// theirs. While the ticket waits, the customer may stop waiting.
    async fn with_person(
        &self,
        ticket: &Ticket,
        dialog_state: &DialogState,
        text: &str,
    ) -> Result<Decided> {
        let mut nlu = None;
        if ticket.state == TicketState::Queued {
            let prediction = self.classify(text).await?;
            let record = nlu_record(&prediction);
            let said = text.trim().trim_end_matches(['.', '!']).to_lowercase();
            let cancel = STOP_PHRASES.contains(&said.as_str())
                || (!record.out_of_scope
                    && record.intent == self.nlu.flows.policy.intents.cancel
                    && record.confidence >= CANCEL_CONFIDENCE);
            if cancel {
                let after = handed_back(&self.nlu.flows, dialog_state);
                return Ok(Decided {
                    nlu: Some(record),
                    replies: vec![self.reply(&self.bot.handoff_cancelled_notice, &[])],
                    state_after: ConversationState::Active,
                    dialog_json: dialog_json(&after)?,
                    ticket: Some(TicketChange::Cancel {
                        ticket_id: ticket.id.clone(),
                    }),
                });
            }
            nlu = Some(record);
        }
        Ok(Decided {
            nlu,
            replies: Vec::new(),
            state_after: ConversationState::Handoff,
            dialog_json: dialog_json(dialog_state)?,
            ticket: None,
        })
    }

    fn reply(&self, text: &str, quick: &[String]) -> store::Reply {
        store::Reply {
            text: text.to_owned(),
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
        let open = self.store.open_ticket(conversation_id).await?;
        let (last, event) = self
            .store
            .end_conversation(conversation_id, customer, reason)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if let Some(e) = event {
            self.hub.publish(LiveEvent::Stored(e));
        }
        // A ticket the ending closed leaves the agents' queue.
        if let Some(t) = open
            && t.customer_id == customer
            && let Err(e) = self.escalations.cancelled(&t.id).await
        {
            tracing::warn!(error = %e, "could not announce a closed ticket");
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

/// sha256 of a stored text, to tell a resend from a reused id.
fn text_sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
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
    // Agents' messages are stored under `agent:<ticket>:<id>`.
    if id.starts_with(AGENT_ID_PREFIX) {
        return Err(ServiceError::invalid(
            "client_message_id",
            "CLIENT_MESSAGE_ID_INVALID",
            format!("must not start with `{AGENT_ID_PREFIX}` (reserved for agents' messages)"),
        ));
    }
    Ok(())
}

/// The prefix of agents' stored client message ids.
pub const AGENT_ID_PREFIX: &str = "agent:";

/// What the customer can type (or tap) to stop waiting for a person.
const STOP_WAITING: &str = "Stop waiting";
const STOP_PHRASES: &[&str] = &["stop waiting", "cancel", "stop", "never mind", "nevermind"];
/// The classifier's confidence in `cancel` that stops waiting without one
/// of the phrases.
const CANCEL_CONFIDENCE: f32 = 0.6;

/// One turn's answer, before it is committed.
struct Decided {
    nlu: Option<NluRecord>,
    replies: Vec<store::Reply>,
    state_after: ConversationState,
    dialog_json: String,
    ticket: Option<TicketChange>,
}

fn nlu_record(p: &bankbot_models::classifier::Prediction) -> NluRecord {
    NluRecord {
        intent: p.intent.name.clone(),
        confidence: p.intent.confidence,
        out_of_scope: p.out_of_scope,
        ranking: p
            .ranking
            .iter()
            .map(|r| (r.name.clone(), r.confidence))
            .collect(),
    }
}

fn dialog_json(state: &DialogState) -> Result<String> {
    serde_json::to_string(state).map_err(|e| ServiceError::Internal(format!("dialog state: {e}")))
}

/// The dialog after a person let go of the conversation (no flow started).
pub fn handed_back(flows: &bankbot_dialog::Flows, state: &DialogState) -> DialogState {
    bankbot_dialog::step(
        flows,
        state,
        &bankbot_dialog::state::Event::HandedBack { intent: None },
    )
    .0
}

/// Offers a committed ticket to agents, or withdraws a cancelled one. A
/// failure here loses nothing: the sweeper relays the outbox.
async fn after_commit(escalations: &Escalations, change: Option<&TicketChange>) {
    let done = match change {
        None => return,
        Some(TicketChange::Open(t)) => escalations.committed(&t.id).await,
        Some(TicketChange::Cancel { ticket_id }) => escalations.cancelled(ticket_id).await,
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, "could not announce a ticket change; the sweeper will");
    }
}
