//! What human agents do with hand-overs: availability, claims, the ticket
//! with its transcript, messages and typing to the customer, resolving and
//! handing back. Everything the customer should see is stored as events of
//! their conversation and published to its live streams.
//!
//! Visibility: an agent sees a ticket it holds (or closed), or a waiting
//! one of a skill it may take. The skills it may take are those it
//! declared, narrowed by its token's `skills` claim when there is one.

use bankbot_dialog::state::{Event as DialogEvent, State as DialogState};

use super::{Conversations, LiveEvent, Result, ServiceError};
use crate::executor::{Executor, TurnReport};
use crate::store::{
    Agent, Author, Availability, ConversationState, Event, Message, Ticket, TicketRefusal,
    TicketResult, TicketState,
};
use crate::text;

/// The most skills an agent declares, and conversations it takes at once.
pub const MAX_SKILLS: usize = 32;
pub const MAX_CONCURRENT: u32 = 20;
/// Transcript messages a ticket carries.
pub const MAX_TRANSCRIPT: i64 = 1000;
const MAX_NOTE_BYTES: usize = 2048;
/// Times a hand-back is decided again when the customer wrote meanwhile.
const MAX_HAND_BACK_ATTEMPTS: usize = 5;

/// The calling agent: its id (the token's subject) and the skills its
/// token allows (`None`: any).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub id: &'a str,
    pub allowed: Option<&'a [String]>,
}

impl Caller<'_> {
    fn may(&self, skill: &str) -> bool {
        self.allowed.is_none_or(|a| a.iter().any(|s| s == skill))
    }
}

fn refused(reason: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Refused {
        reason,
        message: message.into(),
    }
}

fn refusal(r: TicketRefusal) -> ServiceError {
    match r {
        TicketRefusal::NotFound => ServiceError::TicketNotFound,
        TicketRefusal::Taken => refused(
            "TICKET_TAKEN",
            "another agent has this ticket, or it is no longer waiting",
        ),
        TicketRefusal::NotHeld => refused(
            "TICKET_NOT_HELD",
            "you do not hold this ticket (its claim may have lapsed); claim it again",
        ),
        TicketRefusal::AtCapacity => refused(
            "AGENT_AT_CAPACITY",
            "you already hold as many conversations as your max_concurrent allows",
        ),
        TicketRefusal::Ended => ServiceError::Ended,
    }
}

fn check_ticket_id(id: &str) -> Result<()> {
    uuid::Uuid::try_parse(id).map(|_| ()).map_err(|_| {
        ServiceError::invalid(
            "ticket_id",
            "TICKET_ID_INVALID",
            "must be a ticket id from WatchQueue, ClaimNext or Claim",
        )
    })
}

use crate::escalation::valid_skill;

impl Conversations {
    pub fn escalations(&self) -> &std::sync::Arc<crate::escalation::Escalations> {
        &self.escalations
    }

    fn publish_events(&self, events: &[Event]) {
        for e in events {
            self.hub.publish(LiveEvent::Stored(e.clone()));
        }
    }

    /// The agent as declared, its skills narrowed by its token; offline
    /// with no skills when it never declared anything.
    pub async fn agent(&self, who: Caller<'_>) -> Result<Agent> {
        let mut agent = self.store.agent(who.id).await?.unwrap_or(Agent {
            id: who.id.to_owned(),
            availability: Availability::Offline,
            skills: Vec::new(),
            max_concurrent: 1,
        });
        agent.skills.retain(|s| who.may(s));
        Ok(agent)
    }

    /// Declares availability, skills and capacity; returns the agent and
    /// the tickets it holds.
    pub async fn set_availability(
        &self,
        who: Caller<'_>,
        availability: Availability,
        mut skills: Vec<String>,
        max_concurrent: u32,
    ) -> Result<(Agent, Vec<Ticket>)> {
        if skills.is_empty() || skills.len() > MAX_SKILLS {
            return Err(ServiceError::invalid(
                "skills",
                "SKILLS_INVALID",
                format!("give 1-{MAX_SKILLS} skills"),
            ));
        }
        if let Some(bad) = skills.iter().find(|s| !valid_skill(s)) {
            return Err(ServiceError::invalid(
                "skills",
                "SKILLS_INVALID",
                format!("`{bad}` is not a skill name (1-32 lowercase letters, digits, '-' or '_')"),
            ));
        }
        if let Some(bad) = skills.iter().find(|s| !who.may(s)) {
            return Err(ServiceError::invalid(
                "skills",
                "SKILL_NOT_ALLOWED",
                format!("your token does not allow the `{bad}` queue"),
            ));
        }
        if !(1..=MAX_CONCURRENT).contains(&max_concurrent) {
            return Err(ServiceError::invalid(
                "max_concurrent",
                "MAX_CONCURRENT_INVALID",
                format!("must be 1-{MAX_CONCURRENT}"),
            ));
        }
        skills.sort();
        skills.dedup();
        let agent = Agent {
            id: who.id.to_owned(),
            availability,
            skills,
            max_concurrent,
        };
        self.store.set_agent(&agent).await?;
        let held = self.store.held_tickets(who.id).await?;
        Ok((agent, held))
    }

    pub async fn agent_status(&self, who: Caller<'_>) -> Result<(Agent, Vec<Ticket>)> {
        let agent = self.agent(who).await?;
        let held = self.store.held_tickets(who.id).await?;
        Ok((agent, held))
    }

    /// Waiting tickets the agent may take, first in line first.
    pub async fn waiting_for(&self, who: Caller<'_>, limit: i64) -> Result<Vec<Ticket>> {
        let agent = self.agent(who).await?;
        Ok(self.store.waiting_tickets(&agent.skills, limit).await?)
    }

    async fn with_transcript(&self, t: Ticket) -> Result<(Ticket, Vec<Message>)> {
        let transcript = self
            .store
            .messages_after(&t.conversation_id, 0, MAX_TRANSCRIPT)
            .await?;
        Ok((t, transcript))
    }

    fn claimed(&self, done: TicketResult) -> Result<Ticket> {
        let (t, events) = done.map_err(refusal)?;
        self.publish_events(&events);
        Ok(t)
    }

    /// Claims the most urgent ticket the agent may take; `None` when none waits.
    pub async fn claim_next(&self, who: Caller<'_>) -> Result<Option<(Ticket, Vec<Message>)>> {
        let agent = self.agent(who).await?;
        if agent.availability != Availability::Available {
            return Err(refused(
                "AGENT_NOT_AVAILABLE",
                "set your availability to available before claiming",
            ));
        }
        let Some(done) = self
            .escalations
            .claim_next(&agent)
            .await
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?
        else {
            return Ok(None);
        };
        let t = self.claimed(done)?;
        Ok(Some(self.with_transcript(t).await?))
    }

    pub async fn claim(&self, who: Caller<'_>, ticket_id: &str) -> Result<(Ticket, Vec<Message>)> {
        check_ticket_id(ticket_id)?;
        let agent = self.agent(who).await?;
        if agent.availability != Availability::Available {
            return Err(refused(
                "AGENT_NOT_AVAILABLE",
                "set your availability to available before claiming",
            ));
        }
        let done = self
            .escalations
            .claim(ticket_id, &agent)
            .await
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let t = self.claimed(done)?;
        self.with_transcript(t).await
    }

    /// Renews the agent's claim (activity on the ticket); the ticket as it now is.
    async fn renew_claim(&self, who: Caller<'_>, ticket_id: &str) -> Result<Ticket> {
        check_ticket_id(ticket_id)?;
        self.store
            .renew_claim(ticket_id, who.id, self.escalations.lease_ms())
            .await?
            .map_err(refusal)
    }

    /// RenewClaim: the renewed ticket with its transcript.
    pub async fn renew(&self, who: Caller<'_>, ticket_id: &str) -> Result<(Ticket, Vec<Message>)> {
        let t = self.renew_claim(who, ticket_id).await?;
        self.with_transcript(t).await
    }

    /// A ticket the agent may see, with its transcript; holding it renews
    /// the claim.
    pub async fn ticket_for(
        &self,
        who: Caller<'_>,
        ticket_id: &str,
    ) -> Result<(Ticket, Vec<Message>)> {
        check_ticket_id(ticket_id)?;
        let t = self
            .store
            .ticket(ticket_id)
            .await?
            .ok_or(ServiceError::TicketNotFound)?;
        let mine = t.agent_id.as_deref() == Some(who.id);
        if mine && t.state == TicketState::Claimed {
            return self.renew(who, ticket_id).await;
        }
        let takeable =
            t.state == TicketState::Queued && self.agent(who).await?.skills.contains(&t.skill);
        if !(mine || takeable) {
            return Err(ServiceError::TicketNotFound);
        }
        self.with_transcript(t).await
    }

    /// The conversation of a ticket the agent holds (for its stream).
    pub async fn held_conversation(
        &self,
        who: Caller<'_>,
        ticket_id: &str,
    ) -> Result<crate::store::Conversation> {
        let t = self.renew_claim(who, ticket_id).await?;
        self.store
            .conversation(&t.conversation_id, &t.customer_id)
            .await?
            .ok_or(ServiceError::TicketNotFound)
    }

    /// Sends the agent's message to the customer. Returns the stored
    /// message, whether it was a resend, and the claim's new expiry.
    pub async fn agent_message(
        &self,
        who: Caller<'_>,
        ticket_id: &str,
        client_message_id: &str,
        raw_text: &str,
    ) -> Result<(Message, bool, i64)> {
        check_ticket_id(ticket_id)?;
        super::check_client_message_id(client_message_id)?;
        let text = text::validate(raw_text, self.max_text_bytes)
            .map_err(|e| ServiceError::invalid("text", e.reason(), e.to_string()))?;
        let masked = text::mask_card_numbers(text).text;
        let sha = super::text_sha(&masked);
        let (t, m, replayed, events) = self
            .store
            .agent_message(
                ticket_id,
                who.id,
                client_message_id,
                &masked,
                &sha,
                self.escalations.lease_ms(),
            )
            .await?
            .map_err(refusal)?;
        self.publish_events(&events);
        Ok((m, replayed, t.lease_until))
    }

    pub async fn agent_typing(&self, who: Caller<'_>, ticket_id: &str, active: bool) -> Result<()> {
        let t = self.renew_claim(who, ticket_id).await?;
        self.hub.publish(LiveEvent::Typing {
            conversation_id: t.conversation_id,
            author: Author::Agent,
            active,
        });
        Ok(())
    }

    /// Closes the ticket with `outcome` and ends the conversation.
    pub async fn resolve(
        &self,
        who: Caller<'_>,
        ticket_id: &str,
        outcome: &str,
        note: &str,
    ) -> Result<(Ticket, Vec<Message>)> {
        check_ticket_id(ticket_id)?;
        if !(1..=64).contains(&outcome.len())
            || !outcome
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(ServiceError::invalid(
                "outcome",
                "OUTCOME_INVALID",
                "must be 1-64 lowercase letters, digits, '_' or '-' (e.g. answered)",
            ));
        }
        let note = note.trim();
        if note.len() > MAX_NOTE_BYTES
            || note
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(ServiceError::invalid(
                "note",
                "NOTE_INVALID",
                format!("at most {MAX_NOTE_BYTES} bytes of text"),
            ));
        }
        let note = text::mask_card_numbers(note).text;
        let _turn = self
            .locks
            .lock(&self.conversation_of(ticket_id).await?)
            .await;
        let done = self
            .escalations
            .resolve(ticket_id, who.id, outcome, &note)
            .await
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let t = self.claimed(done)?;
        self.with_transcript(t).await
    }

    async fn conversation_of(&self, ticket_id: &str) -> Result<String> {
        Ok(self
            .store
            .ticket(ticket_id)
            .await?
            .ok_or(ServiceError::TicketNotFound)?
            .conversation_id)
    }

    /// Returns the conversation to the bot, optionally starting the flow
    /// of `flow` (an intent). Returns the ticket and what the bot said.
    pub async fn hand_back(
        &self,
        who: Caller<'_>,
        ticket_id: &str,
        flow: &str,
    ) -> Result<(Ticket, Vec<Message>)> {
        check_ticket_id(ticket_id)?;
        let flow = flow.trim();
        if !flow.is_empty() && !self.nlu.flows.flows.contains_key(flow) {
            return Err(ServiceError::invalid(
                "flow",
                "FLOW_UNKNOWN",
                format!("`{flow}` is not an intent with a flow"),
            ));
        }
        let conversation_id = self.conversation_of(ticket_id).await?;
        // Under the conversation's lock, so no customer turn interleaves in
        // this process; the store's sequence check covers other replicas.
        let _turn = self.locks.lock(&conversation_id).await;
        for _ in 0..MAX_HAND_BACK_ATTEMPTS {
            let t = self
                .store
                .ticket(ticket_id)
                .await?
                .ok_or(ServiceError::TicketNotFound)?;
            if t.agent_id.as_deref() != Some(who.id) || t.state != TicketState::Claimed {
                return Err(refusal(TicketRefusal::NotHeld));
            }
            let conversation = self
                .store
                .conversation(&t.conversation_id, &t.customer_id)
                .await?
                .ok_or(ServiceError::TicketNotFound)?;
            if conversation.state == ConversationState::Ended {
                return Err(ServiceError::Ended);
            }
            let dialog: DialogState =
                serde_json::from_str(&conversation.dialog_state).unwrap_or_default();
            let executor = Executor {
                flows: self.nlu.flows.clone(),
                bank: self.bank.clone(),
                journal: Some(self.store.clone()),
            };
            let mut report = TurnReport::default();
            let after = executor
                .run(
                    &t.customer_id,
                    &t.conversation_id,
                    &dialog,
                    DialogEvent::HandedBack {
                        intent: (!flow.is_empty()).then(|| flow.to_owned()),
                    },
                    &mut report,
                )
                .await;
            let mut replies = vec![self.bot.handoff_returned_notice.clone()];
            if !report.replies.is_empty() {
                // The flow speaks for itself.
                replies.clear();
            }
            replies.extend(report.replies.into_iter().map(|(text, _)| text));
            let dialog_json = serde_json::to_string(&after)
                .map_err(|e| ServiceError::Internal(format!("dialog state: {e}")))?;
            match self
                .store
                .hand_back_ticket(
                    ticket_id,
                    who.id,
                    &replies,
                    &dialog_json,
                    conversation.last_sequence,
                )
                .await?
            {
                Ok((t, events)) => {
                    self.publish_events(&events);
                    if let Err(e) = self.escalations.handed_back(&t).await {
                        tracing::warn!(error = %e, "could not settle a handed-back ticket");
                    }
                    let said = events
                        .into_iter()
                        .filter_map(|e| match e.kind {
                            crate::store::EventKind::Message(m) => Some(m),
                            _ => None,
                        })
                        .collect();
                    return Ok((t, said));
                }
                // The customer wrote in between (another replica): decide again.
                Err(TicketRefusal::Taken) => continue,
                Err(other) => return Err(refusal(other)),
            }
        }
        Err(ServiceError::Overloaded {
            what: "this conversation",
            retry_after: std::time::Duration::from_millis(100),
        })
    }

    /// Tells waiting customers with a live stream here where they stand,
    /// when it changed since `last` (which it updates).
    pub async fn refresh_positions(
        &self,
        last: &mut std::collections::HashMap<String, u32>,
    ) -> Result<()> {
        let now = self.store.waiting_positions().await?;
        let mut seen = std::collections::HashMap::with_capacity(now.len());
        let per = u32::try_from(self.escalations.settings.average_handle_secs).unwrap_or(u32::MAX);
        // Available agents per skill, read once per refresh.
        let mut agents_by_skill = std::collections::HashMap::new();
        for (conversation_id, ticket_id, skill, position) in now {
            if last.get(&conversation_id) != Some(&position) {
                let agents = match agents_by_skill.get(&skill) {
                    Some(n) => *n,
                    None => {
                        let n = self.store.available_agents(&skill).await?.max(1);
                        agents_by_skill.insert(skill, n);
                        n
                    }
                };
                self.hub.publish(LiveEvent::Position {
                    conversation_id: conversation_id.clone(),
                    ticket_id,
                    position,
                    wait_secs: position.saturating_mul(per) / agents,
                });
            }
            seen.insert(conversation_id, position);
        }
        *last = seen;
        Ok(())
    }
}
