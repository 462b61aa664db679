//! Hand-overs to human agents: drafting tickets from the dialog's
//! escalations, the queue backends behind one trait, and the changes agents
//! watch.
//!
//! The database is the record of every ticket and of who holds it (see
//! `store::tickets`); a [`QueueBackend`] decides which waiting ticket an
//! agent is offered next and, for a broker, carries committed tickets to
//! it from the outbox. Whatever the backend, a claim is a conditional
//! UPDATE in the database, so a ticket is never held by two agents.

pub mod embedded;
pub mod nats;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bankbot_dialog::spec::Priority;
use bankbot_dialog::state::{EscalationReason, State as DialogState};
use tokio::sync::broadcast;

use crate::service::hub::Hub;
use crate::settings::{BotSettings, EscalationSettings, QueueBackendName};
use crate::store::{
    Agent, Event, NewTicket, Store, StoreError, Ticket, TicketResult, TicketState, now_ms,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Changes buffered for agents watching the queue.
const WATCH_CAPACITY: usize = 1024;
/// The backend's offers are audited every this many sweeps, for tickets
/// that have waited at least this long.
const AUDIT_EVERY: u32 = 5;
const AUDIT_AFTER_MS: i64 = 3_000;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the queue broker is unavailable: {0}")]
    Broker(String),
}

/// How waiting tickets reach agents. The embedded backend reads the
/// tickets table itself; a broker backend publishes committed tickets and
/// delivers them in its own order.
pub trait QueueBackend: Send + Sync + Debug {
    fn name(&self) -> &'static str;
    /// Makes a committed ticket claimable (a broker publishes it, with the
    /// ticket id as its deduplication id). Called after the turn commits
    /// and again by the relay for any outbox row left unpublished.
    fn publish<'a>(&'a self, ticket: &'a Ticket) -> BoxFuture<'a, Result<(), QueueError>>;
    /// Claims the most urgent waiting ticket the agent may take.
    fn claim_next<'a>(
        &'a self,
        agent: &'a Agent,
        lease_ms: i64,
        notice: &'a str,
    ) -> BoxFuture<'a, Result<Option<TicketResult>, QueueError>>;
    /// The ticket left the queue for good or came back to it (a broker
    /// acknowledges or re-offers its delivery).
    fn settled<'a>(&'a self, ticket: &'a Ticket) -> BoxFuture<'a, Result<(), QueueError>>;
    /// Re-offers waiting tickets the backend lost (a broker that crashed
    /// before writing an acknowledged offer); how many. The embedded queue
    /// cannot lose one.
    fn audit<'a>(&'a self, _waiting: &'a [Ticket]) -> BoxFuture<'a, Result<usize, QueueError>> {
        Box::pin(async { Ok(0) })
    }
    /// Tells the other replicas' watching agents (a broker fans it out;
    /// this replica's own watchers were told already).
    fn announce(&self, _change: &QueueChange) {}
    /// Carries this replica's live conversation events to the others and
    /// theirs to `hub` (a broker; one process needs nothing).
    fn attach_hub(&self, _hub: Arc<Hub>) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async { Ok(()) })
    }
    /// Stops background work (listeners).
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// What agents watching the queue are told.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum QueueChange {
    /// Waiting (new, or back after an abandoned claim).
    Queued(Box<Ticket>),
    /// No longer waiting: claimed, cancelled or dead-lettered.
    Gone {
        ticket_id: String,
        skill: String,
        state: TicketState,
    },
}

/// Tickets, their backend and their watchers.
#[derive(Debug)]
pub struct Escalations {
    store: Store,
    backend: Arc<dyn QueueBackend>,
    changes: broadcast::Sender<QueueChange>,
    sweeps: std::sync::atomic::AtomicU32,
    pub settings: EscalationSettings,
    pub texts: BotSettings,
}

/// The queue's priority for a hand-over: the flow's, raised for repeated
/// failures and failed or impossible protected actions (urgent flows such
/// as fraud and lost cards say so in their own policy).
pub fn effective_priority(reason: EscalationReason, flow: Priority) -> Priority {
    let floor = match reason {
        EscalationReason::CustomerAsked | EscalationReason::FlowPolicy => Priority::Normal,
        EscalationReason::RepeatedFailure
        | EscalationReason::StepUpFailed
        | EscalationReason::ConnectorUnavailable => Priority::High,
    };
    flow.max(floor)
}

pub fn reason_str(reason: EscalationReason) -> &'static str {
    match reason {
        EscalationReason::CustomerAsked => "customer_asked",
        EscalationReason::RepeatedFailure => "repeated_failure",
        EscalationReason::FlowPolicy => "flow_policy",
        EscalationReason::StepUpFailed => "step_up_failed",
        EscalationReason::ConnectorUnavailable => "connector_unavailable",
    }
}

/// The queue order of a ticket enqueued at `now_ms`: each priority step
/// is a head start of `aging`, so a ticket that has waited that much longer
/// than one of the next priority up goes first.
pub fn sort_key(priority: Priority, now_ms: i64, aging: Duration) -> i64 {
    let rank = match priority {
        Priority::Normal => 0,
        Priority::High => 1,
        Priority::Urgent => 2,
    };
    now_ms - rank * i64::try_from(aging.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Queue (skill) names: 1-32 lowercase letters, digits, '-' and '_', so
/// they are safe in broker subjects and metric labels.
pub fn valid_skill(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// "about 4 minutes", "less than a minute".
pub fn wait_text(secs: u32) -> String {
    match secs {
        0..=59 => "less than a minute".to_owned(),
        60..=119 => "about a minute".to_owned(),
        s => format!("about {} minutes", s.div_ceil(60)),
    }
}

impl Escalations {
    /// The escalations over the backend the settings name (connecting to
    /// the broker for `nats`).
    pub async fn connect(
        store: Store,
        settings: EscalationSettings,
        texts: BotSettings,
    ) -> anyhow::Result<Self> {
        let changes = broadcast::channel(WATCH_CAPACITY).0;
        let backend: Arc<dyn QueueBackend> = match settings.backend {
            QueueBackendName::Embedded => Arc::new(embedded::EmbeddedQueue::new(store.clone())),
            QueueBackendName::Nats => {
                nats::NatsQueue::connect(
                    &settings.nats_url,
                    &settings.nats_prefix,
                    store.clone(),
                    changes.clone(),
                )
                .await?
            }
        };
        Ok(Self {
            store,
            backend,
            changes,
            sweeps: std::sync::atomic::AtomicU32::new(0),
            settings,
            texts,
        })
    }

    pub async fn close(&self) {
        self.backend.close().await;
    }

    pub fn backend(&self) -> &dyn QueueBackend {
        &*self.backend
    }

    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.settings.claim_lease_ms).unwrap_or(60_000)
    }

    /// The queue's changes from now on.
    pub fn watch(&self) -> broadcast::Receiver<QueueChange> {
        self.changes.subscribe()
    }

    fn announce(&self, change: QueueChange) {
        self.backend.announce(&change);
        let _ = self.changes.send(change);
    }

    /// A ticket for the dialog's hand-over, with where it will stand in
    /// the queue and the customer's notice.
    pub async fn draft(
        &self,
        reason: EscalationReason,
        priority: Priority,
        skill: &str,
        dialog: &DialogState,
    ) -> Result<(NewTicket, String), QueueError> {
        let priority = effective_priority(reason, priority);
        let key = sort_key(
            priority,
            now_ms(),
            Duration::from_secs(self.settings.aging_secs),
        );
        let position = self.store.queue_standing(skill, key).await?;
        let agents = self.store.available_agents(skill).await?.max(1);
        let per = u32::try_from(self.settings.average_handle_secs).unwrap_or(u32::MAX);
        let wait_secs = position.saturating_mul(per) / agents;
        let slots: BTreeMap<String, String> = dialog
            .active
            .as_ref()
            .map(|a| {
                a.slots
                    .iter()
                    .map(|(k, v)| (k.clone(), bankbot_dialog::render::value(v)))
                    .collect()
            })
            .unwrap_or_default();
        let notice = self
            .texts
            .handoff_queued_notice
            .replace("{position}", &position.to_string())
            .replace("{wait}", &wait_text(wait_secs));
        Ok((
            NewTicket {
                id: uuid::Uuid::now_v7().to_string(),
                reason: reason_str(reason).to_owned(),
                priority,
                skill: skill.to_owned(),
                sort_key: key,
                auth_level: if dialog.stepped_up {
                    "step_up"
                } else {
                    "token"
                }
                .to_owned(),
                slots,
                position,
                wait_secs,
            },
            notice,
        ))
    }

    /// A turn committed this ticket: offer it.
    pub async fn committed(&self, ticket_id: &str) -> Result<(), QueueError> {
        let Some(t) = self.store.ticket(ticket_id).await? else {
            return Ok(());
        };
        self.backend.publish(&t).await?;
        // Watchers first: a crash before the outbox is marked only means
        // the sweeper offers (and announces) it again, which is harmless.
        let id = t.id.clone();
        if t.state == TicketState::Queued {
            self.announce(QueueChange::Queued(Box::new(t)));
        }
        self.store.mark_published(&id).await?;
        Ok(())
    }

    /// A turn cancelled this ticket.
    pub async fn cancelled(&self, ticket_id: &str) -> Result<(), QueueError> {
        if let Some(t) = self.store.ticket(ticket_id).await? {
            self.backend.settled(&t).await?;
            self.announce(QueueChange::Gone {
                ticket_id: t.id,
                skill: t.skill,
                state: t.state,
            });
        }
        Ok(())
    }

    pub async fn claim_next(&self, agent: &Agent) -> Result<Option<TicketResult>, QueueError> {
        let claimed = self
            .backend
            .claim_next(agent, self.lease_ms(), &self.texts.handoff_assigned_notice)
            .await?;
        if let Some(Ok((t, _))) = &claimed {
            self.gone(t);
        }
        Ok(claimed)
    }

    pub async fn claim(&self, ticket_id: &str, agent: &Agent) -> Result<TicketResult, QueueError> {
        let claimed = self
            .store
            .claim_ticket(
                ticket_id,
                agent,
                self.lease_ms(),
                &self.texts.handoff_assigned_notice,
                true,
            )
            .await?;
        if let Ok((t, events)) = &claimed
            && !events.is_empty()
        {
            self.gone(t);
        }
        Ok(claimed)
    }

    fn gone(&self, t: &Ticket) {
        self.announce(QueueChange::Gone {
            ticket_id: t.id.clone(),
            skill: t.skill.clone(),
            state: t.state,
        });
    }

    pub async fn resolve(
        &self,
        ticket_id: &str,
        agent: &str,
        outcome: &str,
        note: &str,
    ) -> Result<TicketResult, QueueError> {
        let done = self
            .store
            .resolve_ticket(
                ticket_id,
                agent,
                outcome,
                note,
                &self.texts.handoff_resolved_notice,
            )
            .await?;
        if let Ok((t, _)) = &done {
            self.backend.settled(t).await?;
        }
        Ok(done)
    }

    /// After the store handed a ticket back.
    pub async fn handed_back(&self, t: &Ticket) -> Result<(), QueueError> {
        self.backend.settled(t).await
    }

    /// One sweep: expired claims back to the queue (or dead-lettered), and
    /// outbox rows left unpublished by a crash offered again. Returns the
    /// conversation events stored.
    pub async fn sweep(&self) -> Result<Vec<Event>, QueueError> {
        let mut events = Vec::new();
        for (t, stored) in self
            .store
            .expire_claims(
                self.settings.max_deliveries,
                &self.texts.handoff_requeued_notice,
                &self.texts.handoff_failed_notice,
            )
            .await?
        {
            events.extend(stored);
            if let Err(e) = self.backend.settled(&t).await {
                tracing::warn!(error = %e, ticket_id = %t.id, "could not settle a lapsed claim's offer");
            }
            match t.state {
                // Re-offered (and announced) through the outbox below.
                TicketState::Queued => {}
                _ => {
                    tracing::error!(
                        ticket_id = %t.id,
                        conversation_id = %t.conversation_id,
                        deliveries = t.deliveries,
                        "ticket dead-lettered: abandoned too many times"
                    );
                    self.gone(&t);
                }
            }
        }
        // The events above are committed: they are returned (to be
        // published) even when the broker work below fails, which the next
        // sweep retries.
        if let Err(e) = self.offer_again().await {
            tracing::warn!(error = %e, "could not offer tickets to the queue; retrying");
        }
        Ok(events)
    }

    /// The outbox relay, and every AUDIT_EVERY sweeps the audit of waiting
    /// tickets whose offer the backend lost.
    async fn offer_again(&self) -> Result<(), QueueError> {
        let n = self
            .sweeps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % AUDIT_EVERY == AUDIT_EVERY - 1 {
            let waited = now_ms() - AUDIT_AFTER_MS;
            let waiting = self.store.waiting_since(waited, 100).await?;
            self.backend.audit(&waiting).await?;
        }
        for t in self.store.unpublished_tickets(100).await? {
            self.backend.publish(&t).await?;
            self.store.mark_published(&t.id).await?;
            if t.state == TicketState::Queued {
                self.announce(QueueChange::Queued(Box::new(t)));
            }
        }
        Ok(())
    }
}

/// Runs [`Escalations::sweep`] every `sweep_interval_ms` until `stop`,
/// publishing the events it stored and refreshing waiting customers'
/// positions on their live streams.
pub async fn run_sweeper(
    escalations: Arc<Escalations>,
    conversations: Arc<crate::service::Conversations>,
    stop: impl Future<Output = ()>,
) {
    let interval = Duration::from_millis(escalations.settings.sweep_interval_ms);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut positions = std::collections::HashMap::new();
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        match escalations.sweep().await {
            Ok(events) => conversations.publish(events),
            Err(e) => tracing::warn!(error = %e, "queue sweep failed; retrying"),
        }
        if let Err(e) = conversations.refresh_positions(&mut positions).await {
            tracing::warn!(error = %e, "could not refresh queue positions");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_floors_and_aging() {
        use EscalationReason as R;
        assert_eq!(
            effective_priority(R::RepeatedFailure, Priority::Normal),
            Priority::High
        );
        assert_eq!(
            effective_priority(R::CustomerAsked, Priority::Urgent),
            Priority::Urgent
        );
        assert_eq!(
            effective_priority(R::CustomerAsked, Priority::Normal),
            Priority::Normal
        );
        let aging = Duration::from_secs(600);
        // An urgent ticket goes before a normal one that came a little earlier…
        assert!(
            sort_key(Priority::Urgent, 1_000_000, aging)
                < sort_key(Priority::Normal, 900_000, aging)
        );
        // …but not before one that has waited more than two aging periods longer.
        assert!(
            sort_key(Priority::Normal, 1_000_000, aging)
                < sort_key(Priority::Urgent, 1_000_000 + 1_200_001, aging)
        );
    }

    #[test]
    fn waits_read_naturally() {
        assert_eq!(wait_text(10), "less than a minute");
        assert_eq!(wait_text(90), "about a minute");
        assert_eq!(wait_text(240), "about 4 minutes");
        assert_eq!(wait_text(241), "about 5 minutes");
    }
}
