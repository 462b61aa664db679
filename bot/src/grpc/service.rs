//! `bankbot.v1.ConversationService` over tonic: admission (in-flight and
//! stream limits), request conversion, and event streams with resume. The
//! work itself is in `service::Conversations`.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bankbot_proto::v1 as pb;
use bankbot_proto::v1::conversation_service_server::ConversationService;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tonic_types::StatusExt;

use super::guard::{CustomerLimiter, principal};
use super::metrics::Metrics;
use super::{convert, status};
use crate::service::{Conversations, LiveEvent, ServiceError};
use crate::store::{self, Conversation, ConversationState, EventKind};

/// Messages per ListMessages page by default, and at most.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 1000;
/// How long Converse waits for its `open` event.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ConversationEvent, Status>> + Send>>;

/// State shared by every call.
#[derive(Debug)]
pub struct Shared {
    /// Set once the database is migrated and the model loaded; until then
    /// calls answer UNAVAILABLE.
    pub ready: OnceLock<Arc<Conversations>>,
    /// Flips to true on shutdown; open streams end with UNAVAILABLE.
    pub shutdown: watch::Receiver<bool>,
    /// Calls in flight; when none is free a call is shed, never queued.
    pub in_flight: Arc<Semaphore>,
    /// Open event streams.
    pub streams: Arc<Semaphore>,
    /// Open streams per customer; an entry goes when its count reaches zero.
    pub customer_streams: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    pub max_streams_per_customer: usize,
    pub limiter: Arc<CustomerLimiter>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, Clone)]
pub struct ConversationApi {
    shared: Arc<Shared>,
}

impl ConversationApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(super) fn shutdown(&self) -> watch::Receiver<bool> {
        self.shared.shutdown.clone()
    }

    pub(super) fn ready(&self) -> Result<Arc<Conversations>, Status> {
        self.shared
            .ready
            .get()
            .cloned()
            .ok_or_else(status::not_ready)
    }

    pub(super) fn admit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.shared
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.fail(status::shed("calls in flight")))
    }

    pub(super) fn fail(&self, s: Status) -> Status {
        self.shared.metrics.error(s.code());
        s
    }

    pub(super) fn service_error(&self, e: ServiceError) -> Status {
        self.fail(status::from_service(e))
    }

    /// Admits a stream for `customer`: the server-wide and the per-customer limits.
    pub(super) fn stream_ticket(&self, customer: &str) -> Result<StreamTicket, Status> {
        let permit = self
            .shared
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.fail(status::shed("open streams")))?;
        {
            let mut open = self
                .shared
                .customer_streams
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = open.entry(customer.to_owned()).or_insert(0);
            if *n >= self.shared.max_streams_per_customer {
                if *n == 0 {
                    open.remove(customer);
                }
                return Err(self.fail(status::status(
                    tonic::Code::ResourceExhausted,
                    format!(
                        "this customer already has {} open streams; close one first",
                        self.shared.max_streams_per_customer
                    ),
                    "TOO_MANY_STREAMS",
                    None,
                    Some(Duration::from_secs(1)),
                )));
            }
            *n += 1;
        }
        self.shared.metrics.stream_opened();
        Ok(StreamTicket {
            _permit: permit,
            customer: customer.to_owned(),
            shared: self.shared.clone(),
        })
    }

    pub(super) fn open_stream(
        &self,
        conv: Arc<Conversations>,
        conversation: &Conversation,
        after: u64,
        side: Option<mpsc::Receiver<pb::ConversationEvent>>,
        ticket: StreamTicket,
    ) -> Result<EventStream, Status> {
        if after > conversation.last_sequence {
            return Err(self.fail(status::status(
                tonic::Code::OutOfRange,
                format!(
                    "after_sequence {after} is beyond the conversation's last event ({})",
                    conversation.last_sequence
                ),
                "AFTER_SEQUENCE_AHEAD",
                Some((
                    "after_sequence",
                    "larger than any event of this conversation",
                )),
                None,
            )));
        }
        // An ended conversation has nothing more to say after its `ended` event.
        if conversation.state == ConversationState::Ended && after >= conversation.last_sequence {
            return Ok(Box::pin(tokio_stream::empty()));
        }
        Ok(Box::pin(events(
            conv,
            conversation.id.clone(),
            after,
            self.shared.shutdown.clone(),
            side,
            ticket,
        )))
    }
}

/// Held by an open stream: its admission permit, its place in the
/// customer's count, and the open-streams gauge.
pub(super) struct StreamTicket {
    _permit: OwnedSemaphorePermit,
    customer: String,
    shared: Arc<Shared>,
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        self.shared.metrics.stream_closed();
        let mut open = self
            .shared
            .customer_streams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.customer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.customer);
            }
        }
    }
}

#[tonic::async_trait]
impl ConversationService for ConversationApi {
    #[tracing::instrument(name = "StartConversation", skip_all, fields(conversation_id))]
    async fn start_conversation(
        &self,
        req: Request<pb::StartConversationRequest>,
    ) -> Result<Response<pb::StartConversationResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.ready()?;
        let _permit = self.admit()?;
        let r = req.into_inner();
        let metadata = r.metadata.into_iter().collect();
        let (c, greeting) = conv
            .start(&who.subject, &r.channel, &r.locale, metadata)
            .await
            .map_err(|e| self.service_error(e))?;
        tracing::Span::current().record("conversation_id", c.id.as_str());
        Ok(Response::new(pb::StartConversationResponse {
            conversation_id: c.id.clone(),
            state: convert::state(c.state).into(),
            create_time: Some(convert::timestamp(c.created_at)),
            messages: greeting.iter().map(convert::bot_message).collect(),
            last_sequence: c.last_sequence,
        }))
    }

    #[tracing::instrument(name = "SendMessage", skip_all, fields(conversation_id = %req.get_ref().conversation_id))]
    async fn send_message(
        &self,
        req: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.ready()?;
        let _permit = self.admit()?;
        let r = req.into_inner();
        let reply = conv
            .send(
                &who.subject,
                &r.conversation_id,
                &r.client_message_id,
                &r.text,
            )
            .await
            .map_err(|e| self.service_error(e))?;
        Ok(Response::new(pb::SendMessageResponse {
            messages: reply
                .turn
                .replies
                .iter()
                .map(convert::bot_message)
                .collect(),
            nlu: reply.turn.customer.nlu.as_ref().map(convert::nlu),
            state: convert::state(reply.state).into(),
            customer_message: Some(convert::message(&reply.turn.customer)),
            replayed: reply.replayed,
        }))
    }

    #[tracing::instrument(name = "ListMessages", skip_all, fields(conversation_id = %req.get_ref().conversation_id))]
    async fn list_messages(
        &self,
        req: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.ready()?;
        let _permit = self.admit()?;
        let r = req.into_inner();
        let size = match i64::from(r.page_size) {
            n if n < 0 => {
                return Err(self.fail(status::invalid(
                    "page_size",
                    "PAGE_SIZE_NEGATIVE",
                    "must not be negative",
                )));
            }
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = if r.page_token.is_empty() {
            0
        } else {
            convert::parse_page_token(&r.page_token, &r.conversation_id).ok_or_else(|| {
                self.fail(status::invalid(
                    "page_token",
                    "PAGE_TOKEN_INVALID",
                    "not a page token of this conversation's listing",
                ))
            })?
        };
        // One more than asked tells whether another page exists.
        let mut found = conv
            .messages(&who.subject, &r.conversation_id, after, size + 1)
            .await
            .map_err(|e| self.service_error(e))?;
        let more = found.len() as i64 > size;
        found.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next_page_token = match (more, found.last()) {
            (true, Some(last)) => convert::page_token(&r.conversation_id, last.sequence),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListMessagesResponse {
            messages: found.iter().map(convert::message).collect(),
            next_page_token,
        }))
    }

    type StreamEventsStream = EventStream;

    #[tracing::instrument(name = "StreamEvents", skip_all, fields(conversation_id = %req.get_ref().conversation_id))]
    async fn stream_events(
        &self,
        req: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let who = principal(&req)?;
        let conv = self.ready()?;
        let r = req.into_inner();
        let ticket = self.stream_ticket(&who.subject)?;
        let conversation = {
            let _permit = self.admit()?;
            conv.conversation(&who.subject, &r.conversation_id)
                .await
                .map_err(|e| self.service_error(e))?
        };
        let stream = self.open_stream(conv, &conversation, r.after_sequence, None, ticket)?;
        Ok(Response::new(stream))
    }

    type ConverseStream = EventStream;

    #[tracing::instrument(name = "Converse", skip_all, fields(conversation_id))]
    async fn converse(
        &self,
        req: Request<Streaming<pb::ClientEvent>>,
    ) -> Result<Response<Self::ConverseStream>, Status> {
        let who = principal(&req)?;
        let conv = self.ready()?;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(OPEN_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                self.fail(status::invalid(
                    "open",
                    "OPEN_MISSING",
                    "send `open` as the first event",
                ))
            })??;
        let Some(pb::ClientEvent {
            kind: Some(pb::client_event::Kind::Open(open)),
        }) = first
        else {
            return Err(self.fail(status::invalid(
                "open",
                "OPEN_MISSING",
                "the first event must be `open`",
            )));
        };
        tracing::Span::current().record("conversation_id", open.conversation_id.as_str());
        let ticket = self.stream_ticket(&who.subject)?;
        let conversation = {
            let _permit = self.admit()?;
            conv.conversation(&who.subject, &open.conversation_id)
                .await
                .map_err(|e| self.service_error(e))?
        };
        // Refusals of individual client events travel on this side channel
        // into the outgoing stream; replies arrive through the live hub like
        // every other event. Bounded: a client that floods refused events
        // while not reading waits on its own stream.
        let (side_tx, side_rx) = mpsc::channel(16);
        let stream = self.open_stream(
            conv.clone(),
            &conversation,
            open.after_sequence,
            Some(side_rx),
            ticket,
        )?;
        tokio::spawn(read_client_events(
            inbound,
            conv,
            who.subject,
            open.conversation_id,
            side_tx,
            self.shared.clone(),
        ));
        Ok(Response::new(stream))
    }

    #[tracing::instrument(name = "EndConversation", skip_all, fields(conversation_id = %req.get_ref().conversation_id))]
    async fn end_conversation(
        &self,
        req: Request<pb::EndConversationRequest>,
    ) -> Result<Response<pb::EndConversationResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.ready()?;
        let _permit = self.admit()?;
        let r = req.into_inner();
        let last = conv
            .end(&who.subject, &r.conversation_id, &r.reason)
            .await
            .map_err(|e| self.service_error(e))?;
        Ok(Response::new(pb::EndConversationResponse {
            state: pb::ConversationState::Ended.into(),
            last_sequence: last,
        }))
    }

    #[tracing::instrument(name = "SubmitFeedback", skip_all, fields(conversation_id = %req.get_ref().conversation_id))]
    async fn submit_feedback(
        &self,
        req: Request<pb::SubmitFeedbackRequest>,
    ) -> Result<Response<pb::SubmitFeedbackResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.ready()?;
        let _permit = self.admit()?;
        let r = req.into_inner();
        conv.feedback(&who.subject, &r.conversation_id, r.rating, &r.comment)
            .await
            .map_err(|e| self.service_error(e))?;
        Ok(Response::new(pb::SubmitFeedbackResponse {}))
    }
}

/// Reads a Converse client's events until it half-closes, errs, or the
/// outgoing stream is gone (the side channel's receiver dropped).
async fn read_client_events(
    mut inbound: Streaming<pb::ClientEvent>,
    conv: Arc<Conversations>,
    customer: String,
    conversation_id: String,
    side: mpsc::Sender<pb::ConversationEvent>,
    shared: Arc<Shared>,
) {
    use pb::client_event::Kind;
    loop {
        let next = tokio::select! {
            m = inbound.message() => m,
            () = side.closed() => return,
        };
        let event = match next {
            Ok(Some(e)) => e,
            Ok(None) | Err(_) => return,
        };
        let (client_message_id, result) = match event.kind {
            Some(Kind::Message(m)) => {
                let result = match admit_event(&shared, &customer) {
                    Ok(_permit) => {
                        // The message's conversation is the one opened.
                        if !m.conversation_id.is_empty() && m.conversation_id != conversation_id {
                            Err(status::invalid(
                                "conversation_id",
                                "CONVERSATION_MISMATCH",
                                "messages on Converse belong to the opened conversation",
                            ))
                        } else {
                            conv.send(&customer, &conversation_id, &m.client_message_id, &m.text)
                                .await
                                .map(|_| ())
                                .map_err(status::from_service)
                        }
                    }
                    Err(s) => Err(s),
                };
                (m.client_message_id, result)
            }
            Some(Kind::Typing(t)) => (
                String::new(),
                match admit_event(&shared, &customer) {
                    Ok(_p) => conv
                        .typing(&customer, &conversation_id, t.active)
                        .await
                        .map_err(status::from_service),
                    Err(s) => Err(s),
                },
            ),
            Some(Kind::ReadReceipt(r)) => (
                String::new(),
                match admit_event(&shared, &customer) {
                    Ok(_p) => conv
                        .read_receipt(&customer, &conversation_id, r.up_to_sequence)
                        .await
                        .map(|_| ())
                        .map_err(status::from_service),
                    Err(s) => Err(s),
                },
            ),
            Some(Kind::Open(_)) | None => (
                String::new(),
                Err(status::invalid(
                    "kind",
                    "EVENT_INVALID",
                    "send message, typing or read_receipt after open",
                )),
            ),
        };
        if let Err(s) = result {
            shared.metrics.error(s.code());
            let reason = s
                .get_details_error_info()
                .map(|i| i.reason)
                .unwrap_or_default();
            let rejected = pb::ConversationEvent {
                sequence: 0,
                create_time: Some(convert::timestamp(store::now_ms())),
                kind: Some(pb::conversation_event::Kind::Rejected(
                    pb::ClientEventRejected {
                        client_message_id,
                        code: s.code() as i32,
                        reason,
                        message: s.message().to_owned(),
                    },
                )),
            };
            if side.send(rejected).await.is_err() {
                return;
            }
        }
    }
}

/// Rate limit and in-flight admission for one event on an open stream.
fn admit_event(shared: &Shared, customer: &str) -> Result<OwnedSemaphorePermit, Status> {
    shared.limiter.check(customer)?;
    shared
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| status::shed("calls in flight"))
}

async fn recv_side(
    side: &mut Option<mpsc::Receiver<pb::ConversationEvent>>,
) -> Option<pb::ConversationEvent> {
    match side {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Stored events after `after` (from the database), then live ones, in
/// sequence order without gaps or repeats. A gap in the live feed (a lagging
/// subscriber, or an event committed elsewhere) is filled from the database.
/// Ends after the conversation's `ended` event, when the client goes away,
/// or with UNAVAILABLE on shutdown.
fn events(
    conv: Arc<Conversations>,
    conversation_id: String,
    after: u64,
    mut shutdown: watch::Receiver<bool>,
    mut side: Option<mpsc::Receiver<pb::ConversationEvent>>,
    ticket: StreamTicket,
) -> impl Stream<Item = Result<pb::ConversationEvent, Status>> + Send {
    async_stream::stream! {
        let _ticket = ticket;
        // Subscribe before reading the database, so nothing committed in
        // between is missed (duplicates are skipped by sequence).
        let mut sub = conv.hub().subscribe(&conversation_id);
        let mut cursor = after;
        let mut catch_up = true;
        loop {
            if catch_up {
                catch_up = false;
                loop {
                    let page = match conv.events_after(&conversation_id, cursor).await {
                        Ok(p) => p,
                        Err(e) => {
                            yield Err(status::from_service(e));
                            return;
                        }
                    };
                    let full = page.len() as i64 == store::EVENT_PAGE;
                    for e in page {
                        cursor = e.sequence;
                        let ended = matches!(e.kind, EventKind::Ended { .. });
                        yield Ok(convert::event(&e));
                        if ended {
                            return;
                        }
                    }
                    if !full {
                        break;
                    }
                }
            }
            if *shutdown.borrow() {
                yield Err(status::shutting_down());
                return;
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        yield Err(status::shutting_down());
                        return;
                    }
                }
                ev = recv_side(&mut side) => match ev {
                    // Not stored: it carries the last stored sequence, so a
                    // client resuming from it misses nothing.
                    Some(mut ev) => {
                        ev.sequence = cursor;
                        yield Ok(ev);
                    }
                    // The client half-closed its side; keep delivering.
                    None => side = None,
                },
                r = sub.recv() => match r {
                    Ok(ev) => match &*ev {
                        LiveEvent::Stored(e) if e.sequence <= cursor => {}
                        LiveEvent::Stored(e) if e.sequence == cursor + 1 => {
                            cursor = e.sequence;
                            let ended = matches!(e.kind, EventKind::Ended { .. });
                            yield Ok(convert::event(e));
                            if ended {
                                return;
                            }
                        }
                        LiveEvent::Stored(_) => catch_up = true,
                        LiveEvent::Typing { author, active, .. } => {
                            yield Ok(convert::typing(cursor, *author, *active));
                        }
                        LiveEvent::Elsewhere { sequence, .. } => {
                            if *sequence > cursor {
                                catch_up = true;
                            }
                        }
                        LiveEvent::Position { ticket_id, position, wait_secs, .. } => {
                            yield Ok(convert::handoff_update(cursor, ticket_id, *position, *wait_secs));
                        }
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => catch_up = true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}
