//! Hand-over tickets and agents. The database is the record of who holds
//! which ticket; queue backends decide only the order in which tickets are
//! offered (`escalation`).
//!
//! Invariants:
//! - A ticket is inserted in the transaction of the turn that escalates
//!   (with its outbox row), so a stored escalation always has its ticket.
//! - At most one open (queued or claimed) ticket per conversation: a unique
//!   partial index, so a second publication cannot make a second ticket.
//! - Every ticket transition that the customer sees (claimed, returned,
//!   handed back, cancelled, resolved) is written in one transaction with
//!   its conversation events, under the conversation's row lock. Claims and
//!   their conditions (`state`, `agent_id`) are checked in the same UPDATE
//!   that makes them, so two agents can never both hold a ticket.

use bankbot_dialog::spec::Priority;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

use super::{
    Author, ConversationState, Event, EventKind, Message, Result, Store, StoreError, now_ms, rows,
    seq,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    Queued,
    Claimed,
    Resolved,
    HandedBack,
    Cancelled,
    DeadLetter,
}

impl TicketState {
    pub const ALL: [TicketState; 6] = [
        TicketState::Queued,
        TicketState::Claimed,
        TicketState::Resolved,
        TicketState::HandedBack,
        TicketState::Cancelled,
        TicketState::DeadLetter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Queued => "queued",
            TicketState::Claimed => "claimed",
            TicketState::Resolved => "resolved",
            TicketState::HandedBack => "handed_back",
            TicketState::Cancelled => "cancelled",
            TicketState::DeadLetter => "dead_letter",
        }
    }

    fn parse(s: &str) -> Result<TicketState> {
        TicketState::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("ticket state `{s}`")))
    }

    pub fn is_open(self) -> bool {
        matches!(self, TicketState::Queued | TicketState::Claimed)
    }
}

pub fn priority_str(p: Priority) -> &'static str {
    match p {
        Priority::Normal => "normal",
        Priority::High => "high",
        Priority::Urgent => "urgent",
    }
}

fn parse_priority(s: &str) -> Result<Priority> {
    match s {
        "normal" => Ok(Priority::Normal),
        "high" => Ok(Priority::High),
        "urgent" => Ok(Priority::Urgent),
        other => Err(StoreError::Corrupt(format!("ticket priority `{other}`"))),
    }
}

/// What the customer's stream is told about the hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffStatus {
    Queued,
    Assigned,
    ReturnedToBot,
    Cancelled,
}

/// A ticket to open with a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTicket {
    pub id: String,
    pub reason: String,
    pub priority: Priority,
    pub skill: String,
    /// Queue order (smallest first).
    pub sort_key: i64,
    pub auth_level: String,
    pub slots: BTreeMap<String, String>,
    /// For the customer's `handoff` event.
    pub position: u32,
    pub wait_secs: u32,
}

/// What a turn does to the conversation's ticket.
#[derive(Debug, Clone, PartialEq)]
pub enum TicketChange {
    Open(NewTicket),
    /// The customer stopped waiting (only while queued).
    Cancel {
        ticket_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: String,
    pub conversation_id: String,
    pub customer_id: String,
    pub reason: String,
    pub priority: Priority,
    pub skill: String,
    pub sort_key: i64,
    pub auth_level: String,
    pub slots: BTreeMap<String, String>,
    pub state: TicketState,
    pub agent_id: Option<String>,
    /// Unix milliseconds; 0 when not claimed.
    pub lease_until: i64,
    pub deliveries: u32,
    pub outcome: Option<String>,
    pub note: Option<String>,
    pub created_at: i64,
    pub claimed_at: Option<i64>,
    pub closed_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Available,
    Busy,
    Offline,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Available => "available",
            Availability::Busy => "busy",
            Availability::Offline => "offline",
        }
    }

    fn parse(s: &str) -> Result<Availability> {
        match s {
            "available" => Ok(Availability::Available),
            "busy" => Ok(Availability::Busy),
            "offline" => Ok(Availability::Offline),
            other => Err(StoreError::Corrupt(format!("availability `{other}`"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub availability: Availability,
    pub skills: Vec<String>,
    pub max_concurrent: u32,
}

/// Why a ticket operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketRefusal {
    NotFound,
    /// Another agent holds it, or it is no longer waiting.
    Taken,
    /// The caller does not hold it (never did, or its lease was lost).
    NotHeld,
    /// The agent holds as many as it may.
    AtCapacity,
    /// The conversation has ended.
    Ended,
}

/// A ticket operation's result: the ticket as it now is and the
/// conversation events it stored (to publish to live streams).
pub type TicketResult = std::result::Result<(Ticket, Vec<Event>), TicketRefusal>;

const COLUMNS: &str = "id, conversation_id, customer_id, reason, priority, skill, sort_key, \
    auth_level, slots, state, agent_id, lease_until, deliveries, outcome, note, created_at, \
    claimed_at, closed_at";

fn ticket(r: &AnyRow) -> Result<Ticket> {
    let slots: String = r.try_get("slots")?;
    let deliveries: i64 = r.try_get("deliveries")?;
    Ok(Ticket {
        id: r.try_get("id")?,
        conversation_id: r.try_get("conversation_id")?,
        customer_id: r.try_get("customer_id")?,
        reason: r.try_get("reason")?,
        priority: parse_priority(&r.try_get::<String, _>("priority")?)?,
        skill: r.try_get("skill")?,
        sort_key: r.try_get("sort_key")?,
        auth_level: r.try_get("auth_level")?,
        slots: serde_json::from_str(&slots).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        state: TicketState::parse(&r.try_get::<String, _>("state")?)?,
        agent_id: r.try_get("agent_id")?,
        lease_until: r.try_get("lease_until")?,
        deliveries: u32::try_from(deliveries).unwrap_or(u32::MAX),
        outcome: r.try_get("outcome")?,
        note: r.try_get("note")?,
        created_at: r.try_get("created_at")?,
        claimed_at: r.try_get("claimed_at")?,
        closed_at: r.try_get("closed_at")?,
    })
}

/// `skill IN ($n, …)` with placeholders from `first`.
fn skills_in(first: usize, n: usize) -> String {
    let list: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    format!("skill IN ({})", list.join(", "))
}

/// Appends messages and events to a locked conversation, then moves its
/// counters: the one way ticket operations write to a conversation.
pub(super) struct Append {
    conversation_id: String,
    next: u64,
    now: i64,
    events: Vec<Event>,
}

impl Append {
    pub(super) fn new(conversation_id: &str, last_sequence: u64, now: i64) -> Append {
        Append {
            conversation_id: conversation_id.to_owned(),
            next: last_sequence,
            now,
            events: Vec::new(),
        }
    }

    pub(super) async fn message(
        &mut self,
        conn: &mut sqlx::AnyConnection,
        author: Author,
        text: &str,
        client: Option<(&str, &str)>,
    ) -> Result<Message> {
        self.next += 1;
        let m = Message {
            id: uuid::Uuid::now_v7().to_string(),
            conversation_id: self.conversation_id.clone(),
            sequence: self.next,
            author,
            text: text.to_owned(),
            quick_replies: Vec::new(),
            client_message_id: client.map(|(id, _)| id.to_owned()),
            reply_to: None,
            nlu: None,
            state_after: None,
            created_at: self.now,
        };
        rows::insert_messages(conn, &[&m], client.map(|(_, sha)| sha)).await?;
        self.events.push(Event {
            conversation_id: self.conversation_id.clone(),
            sequence: m.sequence,
            created_at: self.now,
            kind: EventKind::Message(m.clone()),
        });
        Ok(m)
    }

    pub(super) async fn event(
        &mut self,
        conn: &mut sqlx::AnyConnection,
        kind: EventKind,
    ) -> Result<()> {
        self.next += 1;
        let e = Event {
            conversation_id: self.conversation_id.clone(),
            sequence: self.next,
            created_at: self.now,
            kind,
        };
        rows::insert_event(conn, &e).await?;
        self.events.push(e);
        Ok(())
    }

    /// Moves `last_sequence` (and the state and dialog state when given).
    pub(super) async fn finish(
        self,
        conn: &mut sqlx::AnyConnection,
        state: Option<ConversationState>,
        dialog_state: Option<&str>,
        end_reason: Option<&str>,
    ) -> Result<Vec<Event>> {
        sqlx::query(
            "UPDATE conversations SET last_sequence = $1, state = COALESCE($2, state), \
             dialog_state = COALESCE($3, dialog_state), end_reason = COALESCE($4, end_reason) \
             WHERE id = $5",
        )
        .bind(seq(self.next))
        .bind(state.map(ConversationState::as_str))
        .bind(dialog_state)
        .bind(end_reason)
        .bind(&self.conversation_id)
        .execute(conn)
        .await?;
        Ok(self.events)
    }
}

/// Inserts a ticket and its outbox row (inside the turn's transaction).
pub(super) async fn insert_ticket(
    conn: &mut sqlx::AnyConnection,
    t: &NewTicket,
    conversation_id: &str,
    customer_id: &str,
    now: i64,
) -> Result<()> {
    let slots = serde_json::to_string(&t.slots).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO tickets (id, conversation_id, customer_id, reason, priority, skill, \
         sort_key, auth_level, slots, state, lease_until, deliveries, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', 0, 0, $10, $10)",
    )
    .bind(&t.id)
    .bind(conversation_id)
    .bind(customer_id)
    .bind(&t.reason)
    .bind(priority_str(t.priority))
    .bind(&t.skill)
    .bind(t.sort_key)
    .bind(&t.auth_level)
    .bind(slots)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO ticket_outbox (ticket_id, created_at) VALUES ($1, $2)")
        .bind(&t.id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Closes a ticket `agent` holds as `to` (with an outcome and note when
/// resolved); `None` when the agent does not hold it.
async fn close_held(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    agent: &str,
    to: TicketState,
    outcome: Option<(&str, &str)>,
    now: i64,
) -> Result<Option<Ticket>> {
    let row = sqlx::query(&format!(
        "UPDATE tickets SET state = $1, outcome = COALESCE($2, outcome), \
         note = COALESCE($3, note), closed_at = $4, updated_at = $4, lease_until = 0 \
         WHERE id = $5 AND agent_id = $6 AND state = 'claimed' RETURNING {COLUMNS}"
    ))
    .bind(to.as_str())
    .bind(outcome.map(|(o, _)| o))
    .bind(outcome.map(|(_, n)| n))
    .bind(now)
    .bind(id)
    .bind(agent)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(ticket).transpose()
}

/// Cancels a waiting ticket (inside the turn's transaction); whether it was
/// still waiting.
pub(super) async fn cancel_ticket(
    conn: &mut sqlx::AnyConnection,
    ticket_id: &str,
    conversation_id: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE tickets SET state = 'cancelled', closed_at = $1, updated_at = $1 \
         WHERE id = $2 AND conversation_id = $3 AND state = 'queued'",
    )
    .bind(now)
    .bind(ticket_id)
    .bind(conversation_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

impl Store {
    /// Records (or replaces) an agent's availability, skills and capacity.
    pub async fn set_agent(&self, agent: &Agent) -> Result<()> {
        let skills =
            serde_json::to_string(&agent.skills).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _gate = self.gate().await;
        sqlx::query(
            "INSERT INTO agents (id, availability, skills, max_concurrent, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
             availability = excluded.availability, skills = excluded.skills, \
             max_concurrent = excluded.max_concurrent, updated_at = excluded.updated_at",
        )
        .bind(&agent.id)
        .bind(agent.availability.as_str())
        .bind(skills)
        .bind(i64::from(agent.max_concurrent))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The agent as last declared; `None` if it never declared anything.
    pub async fn agent(&self, id: &str) -> Result<Option<Agent>> {
        let row = sqlx::query(
            "SELECT id, availability, skills, max_concurrent FROM agents WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let skills: String = r.try_get("skills")?;
            let max: i64 = r.try_get("max_concurrent")?;
            Ok(Agent {
                id: r.try_get("id")?,
                availability: Availability::parse(&r.try_get::<String, _>("availability")?)?,
                skills: serde_json::from_str(&skills)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                max_concurrent: u32::try_from(max).unwrap_or(1),
            })
        })
        .transpose()
    }

    /// Available agents with `skill`, for waiting estimates.
    pub async fn available_agents(&self, skill: &str) -> Result<u32> {
        let found = sqlx::query("SELECT skills FROM agents WHERE availability = 'available'")
            .fetch_all(&self.pool)
            .await?;
        let mut n = 0u32;
        for r in found {
            let skills: String = r.try_get("skills")?;
            let skills: Vec<String> = serde_json::from_str(&skills).unwrap_or_default();
            if skills.iter().any(|s| s == skill) {
                n += 1;
            }
        }
        Ok(n)
    }

    pub async fn ticket(&self, id: &str) -> Result<Option<Ticket>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tickets WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ticket).transpose()
    }

    /// The conversation's open ticket, if any.
    pub async fn open_ticket(&self, conversation_id: &str) -> Result<Option<Ticket>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tickets WHERE conversation_id = $1 \
             AND state IN ('queued', 'claimed')"
        ))
        .bind(conversation_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ticket).transpose()
    }

    /// Waiting tickets of these skills, first in line first.
    pub async fn waiting_tickets(&self, skills: &[String], limit: i64) -> Result<Vec<Ticket>> {
        if skills.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM tickets WHERE state = 'queued' AND {} \
             ORDER BY sort_key, id LIMIT ${}",
            skills_in(1, skills.len()),
            skills.len() + 1
        );
        let mut q = sqlx::query(&sql);
        for s in skills {
            q = q.bind(s);
        }
        let found = q.bind(limit).fetch_all(&self.pool).await?;
        found.iter().map(ticket).collect()
    }

    /// Tickets waiting since before `before_ms` (queued or re-queued then),
    /// first in line first.
    pub async fn waiting_since(&self, before_ms: i64, limit: i64) -> Result<Vec<Ticket>> {
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tickets WHERE state = 'queued' AND updated_at < $1 \
             ORDER BY sort_key, id LIMIT $2"
        ))
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(ticket).collect()
    }

    /// Tickets the agent holds now.
    pub async fn held_tickets(&self, agent_id: &str) -> Result<Vec<Ticket>> {
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tickets WHERE agent_id = $1 AND state = 'claimed' \
             ORDER BY claimed_at"
        ))
        .bind(agent_id)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(ticket).collect()
    }

    /// Where a ticket with `sort_key` would stand in its skill's line (1 =
    /// next).
    pub async fn queue_standing(&self, skill: &str, sort_key: i64) -> Result<u32> {
        let ahead: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM tickets WHERE state = 'queued' AND skill = $1 \
             AND sort_key < $2",
        )
        .bind(skill)
        .bind(sort_key)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(u32::try_from(ahead + 1).unwrap_or(u32::MAX))
    }

    /// Every waiting ticket's conversation, id, skill and position (1 = next).
    pub async fn waiting_positions(&self) -> Result<Vec<(String, String, String, u32)>> {
        let found = sqlx::query(
            "SELECT conversation_id, skill, sort_key, id FROM tickets WHERE state = 'queued' \
             ORDER BY skill, sort_key, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(found.len());
        let mut skill = String::new();
        let mut pos = 0u32;
        for r in found {
            let s: String = r.try_get("skill")?;
            if s != skill {
                skill = s.clone();
                pos = 0;
            }
            pos += 1;
            out.push((r.try_get("conversation_id")?, r.try_get("id")?, s, pos));
        }
        Ok(out)
    }

    /// Claims the first waiting ticket of the agent's skills (`FOR UPDATE
    /// SKIP LOCKED` on PostgreSQL, so concurrent agents take different
    /// tickets without waiting on each other). `Ok(None)`: nothing waits.
    pub async fn claim_next_ticket(
        &self,
        agent: &Agent,
        lease_ms: i64,
        notice: &str,
    ) -> Result<Option<TicketResult>> {
        if agent.skills.is_empty() {
            return Ok(None);
        }
        for _ in 0..16 {
            let now = now_ms();
            let _gate = self.gate().await;
            let mut tx = self.pool.begin().await?;
            if self.held_count(&mut tx, &agent.id).await? >= i64::from(agent.max_concurrent) {
                tx.rollback().await?;
                return Ok(Some(Err(TicketRefusal::AtCapacity)));
            }
            let lock = match self.backend {
                super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
                super::Backend::Sqlite => "",
            };
            let sql = format!(
                "SELECT id FROM tickets WHERE state = 'queued' AND {} \
                 ORDER BY sort_key, id LIMIT 1{lock}",
                skills_in(1, agent.skills.len())
            );
            let mut q = sqlx::query(&sql);
            for s in &agent.skills {
                q = q.bind(s);
            }
            let Some(row) = q.fetch_optional(&mut *tx).await? else {
                tx.rollback().await?;
                return Ok(None);
            };
            let id: String = row.try_get("id")?;
            match self
                .claim_in(&mut tx, &id, agent, lease_ms, notice, now)
                .await?
            {
                Ok(done) => {
                    tx.commit().await?;
                    return Ok(Some(Ok(done)));
                }
                // Taken between the pick and the claim (SQLite across
                // processes); pick again.
                Err(_) => tx.rollback().await?,
            }
        }
        Ok(None)
    }

    /// Claims one ticket for `agent`. Claiming one's own ticket again
    /// renews the lease when `renew_own` (an agent's explicit Claim), and
    /// is refused as `Taken` otherwise (a broker's second offer).
    pub async fn claim_ticket(
        &self,
        id: &str,
        agent: &Agent,
        lease_ms: i64,
        notice: &str,
        renew_own: bool,
    ) -> Result<TicketResult> {
        let now = now_ms();
        let _gate = self.gate().await;
        let mut tx = self.pool.begin().await?;
        let Some(current) = self.ticket_in(&mut tx, id).await? else {
            tx.rollback().await?;
            return Ok(Err(TicketRefusal::NotFound));
        };
        if renew_own
            && current.state == TicketState::Claimed
            && current.agent_id.as_deref() == Some(agent.id.as_str())
        {
            let renewed = self.renew_in(&mut tx, id, &agent.id, lease_ms, now).await?;
            tx.commit().await?;
            return Ok(renewed.map(|t| (t, Vec::new())));
        }
        if current.state != TicketState::Queued || !agent.skills.contains(&current.skill) {
            tx.rollback().await?;
            return Ok(Err(TicketRefusal::Taken));
        }
        if self.held_count(&mut tx, &agent.id).await? >= i64::from(agent.max_concurrent) {
            tx.rollback().await?;
            return Ok(Err(TicketRefusal::AtCapacity));
        }
        let done = self
            .claim_in(&mut tx, id, agent, lease_ms, notice, now)
            .await?;
        if done.is_ok() {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(done)
    }

    async fn held_count(&self, conn: &mut sqlx::AnyConnection, agent: &str) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM tickets WHERE agent_id = $1 AND state = 'claimed'",
        )
        .bind(agent)
        .fetch_one(conn)
        .await?
        .try_get("n")?)
    }

    async fn ticket_in(&self, conn: &mut sqlx::AnyConnection, id: &str) -> Result<Option<Ticket>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tickets WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(ticket).transpose()
    }

    /// The claim itself: waiting → claimed in one conditional UPDATE, then
    /// the customer is told (notice and `assigned`), under the
    /// conversation's lock.
    async fn claim_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
        agent: &Agent,
        lease_ms: i64,
        notice: &str,
        now: i64,
    ) -> Result<TicketResult> {
        let row = sqlx::query(&format!(
            "UPDATE tickets SET state = 'claimed', agent_id = $1, lease_until = $2, \
             deliveries = deliveries + 1, claimed_at = $3, updated_at = $3 \
             WHERE id = $4 AND state = 'queued' RETURNING {COLUMNS}"
        ))
        .bind(&agent.id)
        .bind(now + lease_ms)
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            return Ok(Err(TicketRefusal::Taken));
        };
        let t = ticket(&row)?;
        let events = self
            .tell(conn, &t, now, Some(notice), HandoffStatus::Assigned, None)
            .await?;
        Ok(Ok((t, events)))
    }

    /// Appends a notice (when given) and a `handoff` event to the ticket's
    /// conversation, moving its state when `state` is given.
    async fn tell(
        &self,
        conn: &mut sqlx::AnyConnection,
        t: &Ticket,
        now: i64,
        notice: Option<&str>,
        status: HandoffStatus,
        state: Option<(ConversationState, Option<&str>)>,
    ) -> Result<Vec<Event>> {
        let Some(lock) =
            rows::lock_conversation(conn, &t.conversation_id, &t.customer_id, now).await?
        else {
            return Ok(Vec::new());
        };
        if lock.state == ConversationState::Ended {
            return Ok(Vec::new());
        }
        let mut a = Append::new(&t.conversation_id, lock.last_sequence, now);
        if let Some(text) = notice {
            a.message(conn, Author::System, text, None).await?;
        }
        a.event(
            conn,
            EventKind::Handoff {
                ticket_id: t.id.clone(),
                status,
                position: 0,
                wait_secs: 0,
            },
        )
        .await?;
        let (new_state, dialog) = match state {
            Some((s, d)) => (Some(s), d),
            None => (None, None),
        };
        if let Some(s) = new_state.filter(|s| *s != lock.state) {
            a.event(
                conn,
                EventKind::StateChange {
                    state: s,
                    dialog_state: String::new(),
                },
            )
            .await?;
        }
        a.finish(conn, new_state, dialog, None).await
    }

    async fn renew_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
        agent: &str,
        lease_ms: i64,
        now: i64,
    ) -> Result<std::result::Result<Ticket, TicketRefusal>> {
        let row = sqlx::query(&format!(
            "UPDATE tickets SET lease_until = $1, updated_at = $2 \
             WHERE id = $3 AND agent_id = $4 AND state = 'claimed' RETURNING {COLUMNS}"
        ))
        .bind(now + lease_ms)
        .bind(now)
        .bind(id)
        .bind(agent)
        .fetch_optional(conn)
        .await?;
        match row {
            Some(r) => Ok(Ok(ticket(&r)?)),
            None => Ok(Err(TicketRefusal::NotHeld)),
        }
    }

    /// Renews the agent's claim; `NotHeld` when it is not the agent's (any more).
    pub async fn renew_claim(
        &self,
        id: &str,
        agent: &str,
        lease_ms: i64,
    ) -> Result<std::result::Result<Ticket, TicketRefusal>> {
        let _gate = self.gate().await;
        let mut conn = self.pool.acquire().await?;
        self.renew_in(&mut conn, id, agent, lease_ms, now_ms())
            .await
    }

    /// Stores an agent's message to the customer (renewing the claim).
    /// Idempotent per (ticket, client id): a resend returns the stored
    /// message and `true`.
    pub async fn agent_message(
        &self,
        id: &str,
        agent: &str,
        client_message_id: &str,
        text: &str,
        text_sha256: &str,
        lease_ms: i64,
    ) -> Result<std::result::Result<(Ticket, Message, bool, Vec<Event>), TicketRefusal>> {
        let now = now_ms();
        let stored_id = format!("agent:{id}:{client_message_id}");
        let _gate = self.gate().await;
        let mut tx = self.pool.begin().await?;
        let t = match self.renew_in(&mut tx, id, agent, lease_ms, now).await? {
            Ok(t) => t,
            Err(refusal) => {
                tx.rollback().await?;
                return Ok(Err(refusal));
            }
        };
        // Under the conversation's lock, so a concurrent resend waits for
        // this one and then finds it.
        let Some(lock) =
            rows::lock_conversation(&mut tx, &t.conversation_id, &t.customer_id, now).await?
        else {
            tx.rollback().await?;
            return Ok(Err(TicketRefusal::NotFound));
        };
        if let Some((turn, sha)) =
            rows::find_turn(&mut tx, &t.conversation_id, &t.customer_id, &stored_id).await?
        {
            tx.commit().await?;
            if sha != text_sha256 {
                return Err(StoreError::IdReused);
            }
            return Ok(Ok((t, turn.customer, true, Vec::new())));
        }
        if lock.state == ConversationState::Ended {
            tx.rollback().await?;
            return Ok(Err(TicketRefusal::Ended));
        }
        let mut a = Append::new(&t.conversation_id, lock.last_sequence, now);
        let m = a
            .message(
                &mut tx,
                Author::Agent,
                text,
                Some((stored_id.as_str(), text_sha256)),
            )
            .await?;
        let events = a.finish(&mut tx, None, None, None).await?;
        tx.commit().await?;
        Ok(Ok((t, m, false, events)))
    }

    /// Closes the agent's ticket as resolved and ends the conversation.
    pub async fn resolve_ticket(
        &self,
        id: &str,
        agent: &str,
        outcome: &str,
        note: &str,
        notice: &str,
    ) -> Result<TicketResult> {
        let now = now_ms();
        let _gate = self.gate().await;
        let mut tx = self.pool.begin().await?;
        let closed = close_held(
            &mut tx,
            id,
            agent,
            TicketState::Resolved,
            Some((outcome, note)),
            now,
        )
        .await?;
        let Some(t) = closed else {
            tx.rollback().await?;
            return Ok(Err(TicketRefusal::NotHeld));
        };
        let mut events = Vec::new();
        if let Some(lock) =
            rows::lock_conversation(&mut tx, &t.conversation_id, &t.customer_id, now).await?
            && lock.state != ConversationState::Ended
        {
            let reason = format!("resolved:{outcome}");
            let mut a = Append::new(&t.conversation_id, lock.last_sequence, now);
            a.message(&mut tx, Author::System, notice, None).await?;
            a.event(
                &mut tx,
                EventKind::Ended {
                    reason: reason.clone(),
                },
            )
            .await?;
            events = a
                .finish(&mut tx, Some(ConversationState::Ended), None, Some(&reason))
                .await?;
        }
        tx.commit().await?;
        Ok(Ok((t, events)))
    }

    /// Returns the agent's ticket's conversation to the bot: the replies
    /// the bot opens with, `returned_to_bot`, the state back to active and
    /// the dialog state, in one transaction. `Stale` (as `Taken`) when the
    /// conversation moved on since `expected_last_sequence`.
    pub async fn hand_back_ticket(
        &self,
        id: &str,
        agent: &str,
        replies: &[String],
        dialog_state: &str,
        expected_last_sequence: u64,
    ) -> Result<TicketResult> {
        let now = now_ms();
        let _gate = self.gate().await;
        let mut tx = self.pool.begin().await?;
        let closed = close_held(&mut tx, id, agent, TicketState::HandedBack, None, now).await?;
        let Some(t) = closed else {
            tx.rollback().await?;
            return Ok(Err(TicketRefusal::NotHeld));
        };
        let Some(lock) =
            rows::lock_conversation(&mut tx, &t.conversation_id, &t.customer_id, now).await?
        else {
            tx.rollback().await?;
            return Ok(Err(TicketRefusal::NotFound));
        };
        if lock.state == ConversationState::Ended {
            tx.rollback().await?;
            return Ok(Err(TicketRefusal::Ended));
        }
        if lock.last_sequence != expected_last_sequence {
            tx.rollback().await?;
            return Ok(Err(TicketRefusal::Taken));
        }
        let mut a = Append::new(&t.conversation_id, lock.last_sequence, now);
        a.event(
            &mut tx,
            EventKind::Handoff {
                ticket_id: t.id.clone(),
                status: HandoffStatus::ReturnedToBot,
                position: 0,
                wait_secs: 0,
            },
        )
        .await?;
        a.event(
            &mut tx,
            EventKind::StateChange {
                state: ConversationState::Active,
                dialog_state: String::new(),
            },
        )
        .await?;
        for text in replies {
            a.message(&mut tx, Author::Bot, text, None).await?;
        }
        let events = a
            .finish(
                &mut tx,
                Some(ConversationState::Active),
                Some(dialog_state),
                None,
            )
            .await?;
        tx.commit().await?;
        Ok(Ok((t, events)))
    }

    /// Returns claims whose lease ran out to the queue (telling their
    /// customers), or dead-letters them after `max_deliveries` (the bot has
    /// the customer again). Returns the tickets as they now are, with the
    /// events stored.
    pub async fn expire_claims(
        &self,
        max_deliveries: u32,
        requeue_notice: &str,
        failed_notice: &str,
    ) -> Result<Vec<(Ticket, Vec<Event>)>> {
        let now = now_ms();
        let expired = sqlx::query(
            "SELECT id FROM tickets WHERE state = 'claimed' AND lease_until < $1 \
             ORDER BY lease_until LIMIT 100",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in expired {
            let id: String = r.try_get("id")?;
            let _gate = self.gate().await;
            let mut tx = self.pool.begin().await?;
            let row = sqlx::query(&format!(
                "UPDATE tickets SET state = CASE WHEN deliveries >= $1 THEN 'dead_letter' \
                 ELSE 'queued' END, agent_id = CASE WHEN deliveries >= $1 THEN agent_id \
                 ELSE NULL END, lease_until = 0, updated_at = $2, \
                 closed_at = CASE WHEN deliveries >= $1 THEN $2 ELSE closed_at END \
                 WHERE id = $3 AND state = 'claimed' AND lease_until < $2 RETURNING {COLUMNS}"
            ))
            .bind(i64::from(max_deliveries))
            .bind(now)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                continue;
            };
            let t = ticket(&row)?;
            let events = if t.state == TicketState::Queued {
                // Offered again, through the outbox like a new ticket.
                sqlx::query("UPDATE ticket_outbox SET published_at = NULL WHERE ticket_id = $1")
                    .bind(&t.id)
                    .execute(&mut *tx)
                    .await?;
                self.tell(
                    &mut tx,
                    &t,
                    now,
                    Some(requeue_notice),
                    HandoffStatus::Queued,
                    None,
                )
                .await?
            } else {
                // Nobody could keep it: the bot has the customer again
                // rather than leaving them waiting for no one.
                self.tell(
                    &mut tx,
                    &t,
                    now,
                    Some(failed_notice),
                    HandoffStatus::ReturnedToBot,
                    Some((ConversationState::Active, None)),
                )
                .await?
            };
            tx.commit().await?;
            out.push((t, events));
        }
        Ok(out)
    }

    /// Committed tickets the broker has not acknowledged, oldest first.
    pub async fn unpublished_tickets(&self, limit: i64) -> Result<Vec<Ticket>> {
        let found = sqlx::query(&format!(
            "SELECT {} FROM ticket_outbox o JOIN tickets t ON t.id = o.ticket_id \
             WHERE o.published_at IS NULL ORDER BY o.created_at LIMIT $1",
            COLUMNS
                .split(", ")
                .map(|c| format!("t.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(ticket).collect()
    }

    /// Marks a ticket as acknowledged by the broker.
    pub async fn mark_published(&self, ticket_id: &str) -> Result<()> {
        let _gate = self.gate().await;
        sqlx::query("UPDATE ticket_outbox SET published_at = $1 WHERE ticket_id = $2")
            .bind(now_ms())
            .bind(ticket_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Tickets by state, for tests, audits and metrics.
    pub async fn ticket_counts(&self) -> Result<BTreeMap<TicketState, i64>> {
        let found = sqlx::query("SELECT state, COUNT(*) AS n FROM tickets GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut out = BTreeMap::new();
        for r in found {
            out.insert(
                TicketState::parse(&r.try_get::<String, _>("state")?)?,
                r.try_get("n")?,
            );
        }
        Ok(out)
    }

    /// Open tickets (queued, claimed) by state and skill, for metrics.
    pub async fn open_ticket_counts(&self) -> Result<Vec<(TicketState, String, i64)>> {
        let found = sqlx::query(
            "SELECT state, skill, COUNT(*) AS n FROM tickets \
             WHERE state IN ('queued', 'claimed') GROUP BY state, skill",
        )
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|r| {
                Ok((
                    TicketState::parse(&r.try_get::<String, _>("state")?)?,
                    r.try_get("skill")?,
                    r.try_get("n")?,
                ))
            })
            .collect()
    }

    /// Every ticket of a conversation, oldest first (tests and audits).
    pub async fn conversation_tickets(&self, conversation_id: &str) -> Result<Vec<Ticket>> {
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tickets WHERE conversation_id = $1 ORDER BY created_at, id"
        ))
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(ticket).collect()
    }
}
