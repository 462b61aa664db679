//! The NATS JetStream queue, for deployments with many replicas.
//!
//! - Committed tickets are published from the outbox (by the turn's task,
//!   and by the sweeper for anything left unpublished) to the work-queue
//!   stream `BANKBOT_TICKETS` on `bankbot.tickets.<skill>.p<rank>` (rank 0 =
//!   urgent), with `Nats-Msg-Id` = `<ticket>:<deliveries>`: the stream's
//!   duplicate window drops a second publication of the same offer.
//! - One durable pull consumer per skill and priority (explicit acks,
//!   `ack_wait`, at most [`MAX_DELIVER`] deliveries). `ClaimNext` fetches
//!   from the agent's consumers, most urgent first, and claims the ticket
//!   in the database (the conditional UPDATE that makes a claim); the
//!   message is acknowledged only after the claim committed, so a replica
//!   that dies in between leaves it to be redelivered. An offer whose
//!   ticket is no longer waiting is acknowledged and dropped.
//! - A lapsed claim is re-offered by the sweeper through the outbox (a new
//!   message id). A message delivered [`MAX_DELIVER`] times without a claim
//!   is copied to the dead-letter stream `BANKBOT_TICKETS_DLQ` (a record
//!   for operators) and removed; its ticket still waits in the database,
//!   claimable by id, and the audit offers it again.
//! - Queue changes for watching agents go to every replica on
//!   `bankbot.queue.changes`, and live conversation events (a stored
//!   event's sequence, typing) on `bankbot.live.<id>`, so
//!   an agent's message reaches the customer's stream on whichever replica
//!   holds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use super::{BoxFuture, QueueBackend, QueueChange, QueueError};
use crate::service::hub::{Hub, LiveEvent, Relay};
use crate::store::{Agent, Author, Store, Ticket, TicketRefusal, TicketResult, TicketState};
use bankbot_dialog::spec::Priority;

/// Stream and subject names under one prefix (`escalation.nats_prefix`,
/// `bankbot` by default), so deployments can share a NATS server.
#[derive(Debug, Clone)]
pub struct Names {
    pub stream: String,
    pub dead_letter_stream: String,
    tickets: String,
    dead_letter: String,
    changes: String,
    live: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        let upper = prefix.to_uppercase();
        Names {
            stream: format!("{upper}_TICKETS"),
            dead_letter_stream: format!("{upper}_TICKETS_DLQ"),
            tickets: format!("{prefix}.tickets"),
            dead_letter: format!("{prefix}.deadletter.tickets"),
            changes: format!("{prefix}.queue.changes"),
            live: format!("{prefix}.live"),
        }
    }

    /// Where a ticket's offer is published: one subject per ticket, so the
    /// audit can tell whether the stream still holds it.
    pub fn subject(&self, t: &Ticket) -> String {
        format!(
            "{}.{}.p{}.{}",
            self.tickets,
            t.skill,
            rank(t.priority),
            t.id
        )
    }

    pub fn consumer_name(skill: &str, rank: u8) -> String {
        format!("tickets-{skill}-p{rank}")
    }

    /// The durable pull consumer of one skill and priority rank (0 = urgent).
    pub fn consumer(&self, skill: &str, rank: u8) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(Names::consumer_name(skill, rank)),
            filter_subject: format!("{}.{skill}.p{rank}.*", self.tickets),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_deliver: MAX_DELIVER,
            ..Default::default()
        }
    }
}
/// Deliveries of one offer without a claim before it is dead-lettered.
pub const MAX_DELIVER: i64 = 10;
/// Between a fetch and its acknowledgement there is one database claim.
pub const ACK_WAIT: Duration = Duration::from_secs(10);
/// Live events waiting for the publisher; beyond it they are dropped (a
/// stream still catches up at the next event or on reconnect).
const LIVE_BACKLOG: usize = 4096;

fn broker(e: impl std::fmt::Display) -> QueueError {
    QueueError::Broker(e.to_string())
}

fn rank(p: Priority) -> u8 {
    match p {
        Priority::Urgent => 0,
        Priority::High => 1,
        Priority::Normal => 2,
    }
}

/// What an offer carries; the ticket itself is read from the database.
#[derive(Debug, Serialize, Deserialize)]
struct Offer {
    ticket_id: String,
    deliveries: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChangeEnvelope {
    origin: String,
    change: QueueChange,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LiveKind {
    Stored { sequence: u64 },
    Typing { author: Author, active: bool },
}

#[derive(Debug, Serialize, Deserialize)]
struct LiveEnvelope {
    origin: String,
    conversation_id: String,
    #[serde(flatten)]
    kind: LiveKind,
}

#[derive(Debug)]
pub struct NatsQueue {
    names: Names,
    store: Store,
    client: async_nats::Client,
    js: jetstream::Context,
    /// This replica, so it skips its own fan-out.
    origin: String,
    changes: broadcast::Sender<QueueChange>,
    consumers: tokio::sync::Mutex<HashMap<String, consumer::PullConsumer>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl NatsQueue {
    /// Connects, creates the streams if needed, and starts the fan-out
    /// and dead-letter listeners.
    pub async fn connect(
        url: &str,
        prefix: &str,
        store: Store,
        changes: broadcast::Sender<QueueChange>,
    ) -> anyhow::Result<Arc<Self>> {
        let names = Names::new(prefix);
        let client = async_nats::ConnectOptions::new()
            .name("bankbot")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {url}: {e}"))?;
        let js = jetstream::new(client.clone());
        js.get_or_create_stream(stream::Config {
            name: names.stream.clone(),
            description: Some("bankbot hand-over tickets waiting for an agent".into()),
            subjects: vec![format!("{}.>", names.tickets)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the JetStream stream {}: {e}", names.stream))?;
        js.get_or_create_stream(stream::Config {
            name: names.dead_letter_stream.clone(),
            description: Some("bankbot ticket offers no replica could claim".into()),
            subjects: vec![names.dead_letter.clone()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(30 * 24 * 3600),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "creating the JetStream stream {}: {e}",
                names.dead_letter_stream
            )
        })?;
        let q = Arc::new(Self {
            names,
            store,
            client,
            js,
            origin: uuid::Uuid::new_v4().simple().to_string(),
            changes,
            consumers: tokio::sync::Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let changes_task = {
            let mut sub = q
                .client
                .subscribe(q.names.changes.clone())
                .await
                .map_err(broker)?;
            let (origin, tx) = (q.origin.clone(), q.changes.clone());
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    match serde_json::from_slice::<ChangeEnvelope>(&m.payload) {
                        Ok(e) if e.origin != origin => {
                            let _ = tx.send(e.change);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "unreadable queue change"),
                    }
                }
            })
        };
        let dead_letter_task = {
            let mut sub = q
                .client
                .subscribe(format!(
                    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
                    q.names.stream
                ))
                .await
                .map_err(broker)?;
            let (js, names) = (q.js.clone(), q.names.clone());
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if let Err(e) = dead_letter(&js, &names, &m.payload).await {
                        tracing::error!(error = %e, "could not dead-letter a ticket offer");
                    }
                }
            })
        };
        q.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([changes_task, dead_letter_task]);
        Ok(q)
    }

    async fn consumer(&self, skill: &str, rank: u8) -> Result<consumer::PullConsumer, QueueError> {
        let name = Names::consumer_name(skill, rank);
        let mut cache = self.consumers.lock().await;
        if let Some(c) = cache.get(&name) {
            return Ok(c.clone());
        }
        let stream = self
            .js
            .get_stream(&self.names.stream)
            .await
            .map_err(broker)?;
        let c = stream
            .get_or_create_consumer(&name, self.names.consumer(skill, rank))
            .await
            .map_err(broker)?;
        cache.insert(name, c.clone());
        Ok(c)
    }

    /// Offers from one consumer until one is claimed or none is left.
    async fn claim_from(
        &self,
        consumer: &consumer::PullConsumer,
        agent: &Agent,
        lease_ms: i64,
        notice: &str,
    ) -> Result<Option<TicketResult>, QueueError> {
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .messages()
                .await
                .map_err(broker)?;
            let Some(msg) = batch.next().await else {
                return Ok(None);
            };
            let msg = msg.map_err(broker)?;
            let Ok(offer) = serde_json::from_slice::<Offer>(&msg.payload) else {
                tracing::error!(subject = %msg.subject, "unreadable ticket offer; terminated");
                msg.ack_with(jetstream::AckKind::Term)
                    .await
                    .map_err(broker)?;
                continue;
            };
            match self
                .store
                .claim_ticket(&offer.ticket_id, agent, lease_ms, notice, false)
                .await
            {
                Ok(Ok(done)) => {
                    // The claim stands whatever happens to this ack: a
                    // redelivered offer finds the ticket taken and is dropped.
                    if let Err(e) = msg.double_ack().await {
                        tracing::warn!(error = %e, ticket_id = %offer.ticket_id, "ack of a claimed offer failed");
                    }
                    return Ok(Some(Ok(done)));
                }
                Ok(Err(TicketRefusal::AtCapacity)) => {
                    msg.ack_with(jetstream::AckKind::Nak(None))
                        .await
                        .map_err(broker)?;
                    return Ok(Some(Err(TicketRefusal::AtCapacity)));
                }
                // Held by someone, or closed: this offer is spent.
                Ok(Err(_)) => msg.ack().await.map_err(broker)?,
                Err(e) => {
                    let _ = msg
                        .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                    return Err(e.into());
                }
            }
        }
    }

    async fn offer(&self, t: &Ticket, payload: Vec<u8>, id: String) -> Result<(), QueueError> {
        self.js
            .send_publish(
                self.names.subject(t),
                jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(id),
            )
            .await
            .map_err(broker)?
            .await
            .map_err(broker)?;
        Ok(())
    }

    fn spawn(&self, task: JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
}

/// Copies an offer that reached its delivery limit to the dead-letter
/// stream and removes it from the work queue.
async fn dead_letter(
    js: &jetstream::Context,
    names: &Names,
    advisory: &[u8],
) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct MaxDeliveries {
        stream_seq: u64,
    }
    let a: MaxDeliveries = serde_json::from_slice(advisory)?;
    let stream = js.get_stream(&names.stream).await?;
    let original = stream.get_raw_message(a.stream_seq).await?;
    js.publish(names.dead_letter.clone(), original.payload.clone())
        .await?
        .await?;
    stream.delete_message(a.stream_seq).await?;
    tracing::error!(
        stream_seq = a.stream_seq,
        "a ticket offer was never claimed after {MAX_DELIVER} deliveries; moved to {} (the ticket stays claimable by id)",
        names.dead_letter_stream
    );
    Ok(())
}

impl QueueBackend for NatsQueue {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn publish<'a>(&'a self, ticket: &'a Ticket) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            if ticket.state != TicketState::Queued {
                return Ok(());
            }
            let offer = serde_json::to_vec(&Offer {
                ticket_id: ticket.id.clone(),
                deliveries: ticket.deliveries,
            })
            .map_err(broker)?;
            self.offer(
                ticket,
                offer,
                format!("{}:{}", ticket.id, ticket.deliveries),
            )
            .await
        })
    }

    fn audit<'a>(&'a self, waiting: &'a [Ticket]) -> BoxFuture<'a, Result<usize, QueueError>> {
        Box::pin(async move {
            let stream = self
                .js
                .get_stream(&self.names.stream)
                .await
                .map_err(broker)?;
            let mut offered = 0;
            for t in waiting {
                match stream
                    .get_last_raw_message_by_subject(&self.names.subject(t))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                        // Lost by the broker (a crash before it wrote the
                        // offer): offer it again under a new id.
                        let offer = serde_json::to_vec(&Offer {
                            ticket_id: t.id.clone(),
                            deliveries: t.deliveries,
                        })
                        .map_err(broker)?;
                        let id = format!("{}:{}:{}", t.id, t.deliveries, crate::store::now_ms());
                        self.offer(t, offer, id).await?;
                        tracing::warn!(ticket_id = %t.id, "a waiting ticket had no offer in the stream; offered again");
                        offered += 1;
                    }
                    Err(e) => return Err(broker(e)),
                }
            }
            Ok(offered)
        })
    }

    fn claim_next<'a>(
        &'a self,
        agent: &'a Agent,
        lease_ms: i64,
        notice: &'a str,
    ) -> BoxFuture<'a, Result<Option<TicketResult>, QueueError>> {
        Box::pin(async move {
            if self.store.held_tickets(&agent.id).await?.len()
                >= usize::try_from(agent.max_concurrent).unwrap_or(usize::MAX)
            {
                return Ok(Some(Err(TicketRefusal::AtCapacity)));
            }
            for rank in 0..3u8 {
                for skill in &agent.skills {
                    let consumer = self.consumer(skill, rank).await?;
                    if let Some(done) = self.claim_from(&consumer, agent, lease_ms, notice).await? {
                        return Ok(Some(done));
                    }
                }
            }
            Ok(None)
        })
    }

    fn settled<'a>(&'a self, _ticket: &'a Ticket) -> BoxFuture<'a, Result<(), QueueError>> {
        // Offers are acknowledged when claimed; re-offers go through the outbox.
        Box::pin(async { Ok(()) })
    }

    fn announce(&self, change: &QueueChange) {
        let Ok(payload) = serde_json::to_vec(&ChangeEnvelope {
            origin: self.origin.clone(),
            change: change.clone(),
        }) else {
            return;
        };
        let (client, subject) = (self.client.clone(), self.names.changes.clone());
        tokio::spawn(async move {
            if let Err(e) = client.publish(subject, payload.into()).await {
                tracing::warn!(error = %e, "could not fan a queue change out");
            }
        });
    }

    fn attach_hub(&self, hub: Arc<Hub>) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>)>(LIVE_BACKLOG);
            let client = self.client.clone();
            self.spawn(tokio::spawn(async move {
                while let Some((subject, payload)) = rx.recv().await {
                    if let Err(e) = client.publish(subject, payload.into()).await {
                        tracing::warn!(error = %e, "could not relay a live event");
                    }
                }
            }));
            let mut sub = self
                .client
                .subscribe(format!("{}.>", self.names.live))
                .await
                .map_err(broker)?;
            let origin = self.origin.clone();
            let local = hub.clone();
            self.spawn(tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    let Ok(e) = serde_json::from_slice::<LiveEnvelope>(&m.payload) else {
                        continue;
                    };
                    if e.origin == origin {
                        continue;
                    }
                    let conversation_id = e.conversation_id;
                    local.deliver(match e.kind {
                        LiveKind::Stored { sequence } => LiveEvent::Elsewhere {
                            conversation_id,
                            sequence,
                        },
                        LiveKind::Typing { author, active } => LiveEvent::Typing {
                            conversation_id,
                            author,
                            active,
                        },
                    });
                }
            }));
            hub.set_relay(Arc::new(NatsRelay {
                tx,
                origin: self.origin.clone(),
                live: self.names.live.clone(),
            }));
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
            for t in tasks {
                t.abort();
            }
            let _ = self.client.flush().await;
        })
    }
}

/// Forwards this replica's live events to `bankbot.live.<conversation>`.
#[derive(Debug)]
struct NatsRelay {
    tx: mpsc::Sender<(String, Vec<u8>)>,
    origin: String,
    live: String,
}

impl Relay for NatsRelay {
    fn forward(&self, event: &LiveEvent) {
        let (conversation_id, kind) = match event {
            LiveEvent::Stored(e) => (
                e.conversation_id.clone(),
                LiveKind::Stored {
                    sequence: e.sequence,
                },
            ),
            LiveEvent::Typing {
                conversation_id,
                author,
                active,
            } => (
                conversation_id.clone(),
                LiveKind::Typing {
                    author: *author,
                    active: *active,
                },
            ),
            // Every replica's sweeper works positions out from the store.
            LiveEvent::Position { .. } => return,
            // Already from another replica.
            LiveEvent::Elsewhere { .. } => return,
        };
        let subject = format!("{}.{conversation_id}", self.live);
        let Ok(payload) = serde_json::to_vec(&LiveEnvelope {
            origin: self.origin.clone(),
            conversation_id,
            kind,
        }) else {
            return;
        };
        if self.tx.try_send((subject, payload)).is_err() {
            tracing::warn!("live relay backlog full; an event reaches other replicas late");
        }
    }
}
