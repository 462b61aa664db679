//! Domain values to wire messages (and page tokens). Protobuf types stop here.

use bankbot_proto::v1 as pb;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::catalogue::QuickReply;
use crate::store::{
    Author, Availability, ConversationState, Event, EventKind, HandoffStatus, Message, NluRecord,
    Ticket, TicketState,
};
use bankbot_dialog::spec::Priority;

pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

pub fn state(s: ConversationState) -> pb::ConversationState {
    match s {
        ConversationState::Active => pb::ConversationState::Active,
        ConversationState::Handoff => pb::ConversationState::Handoff,
        ConversationState::Ended => pb::ConversationState::Ended,
    }
}

pub fn author(a: Author) -> pb::Author {
    match a {
        Author::Customer => pb::Author::Customer,
        Author::Bot => pb::Author::Bot,
        Author::Agent => pb::Author::Agent,
        Author::System => pb::Author::System,
    }
}

fn quick(q: &[QuickReply]) -> Vec<pb::QuickReply> {
    q.iter()
        .map(|q| pb::QuickReply {
            title: q.title.clone(),
            payload: q.payload.clone(),
        })
        .collect()
}

pub fn bot_message(m: &Message) -> pb::BotMessage {
    pb::BotMessage {
        message_id: m.id.clone(),
        text: m.text.clone(),
        quick_replies: quick(&m.quick_replies),
    }
}

pub fn message(m: &Message) -> pb::Message {
    pb::Message {
        message_id: m.id.clone(),
        author: author(m.author).into(),
        text: m.text.clone(),
        quick_replies: quick(&m.quick_replies),
        create_time: Some(timestamp(m.created_at)),
        sequence: m.sequence,
        client_message_id: m.client_message_id.clone().unwrap_or_default(),
        reply_to: m.reply_to.clone().unwrap_or_default(),
    }
}

pub fn nlu(n: &NluRecord) -> pb::NluResult {
    pb::NluResult {
        intent: n.intent.clone(),
        confidence: n.confidence,
        out_of_scope: n.out_of_scope,
        ranking: n
            .ranking
            .iter()
            .map(|(intent, confidence)| pb::IntentScore {
                intent: intent.clone(),
                confidence: *confidence,
            })
            .collect(),
    }
}

pub fn event(e: &Event) -> pb::ConversationEvent {
    use pb::conversation_event::Kind;
    let kind = match &e.kind {
        EventKind::Message(m) => Kind::Message(message(m)),
        EventKind::ReadReceipt {
            reader,
            up_to_sequence,
        } => Kind::ReadReceipt(pb::ReadReceipt {
            reader: author(*reader).into(),
            up_to_sequence: *up_to_sequence,
        }),
        EventKind::StateChange {
            state: s,
            dialog_state,
        } => Kind::StateChange(pb::StateChange {
            state: state(*s).into(),
            dialog_state: dialog_state.clone(),
        }),
        EventKind::Ended { reason } => Kind::Ended(pb::ConversationEnded {
            reason: reason.clone(),
        }),
        EventKind::Handoff {
            ticket_id,
            status,
            position,
            wait_secs,
        } => Kind::Handoff(handoff(ticket_id, *status, *position, *wait_secs)),
    };
    pb::ConversationEvent {
        sequence: e.sequence,
        create_time: Some(timestamp(e.created_at)),
        kind: Some(kind),
    }
}

pub fn typing(sequence: u64, who: Author, active: bool) -> pb::ConversationEvent {
    pb::ConversationEvent {
        sequence,
        create_time: Some(timestamp(crate::store::now_ms())),
        kind: Some(pb::conversation_event::Kind::Typing(pb::Typing {
            author: author(who).into(),
            active,
        })),
    }
}

pub fn handoff(
    ticket_id: &str,
    status: HandoffStatus,
    position: u32,
    wait_secs: u32,
) -> pb::HandoffStatus {
    use pb::handoff_status::Status;
    pb::HandoffStatus {
        status: match status {
            HandoffStatus::Queued => Status::Queued,
            HandoffStatus::Assigned => Status::Assigned,
            HandoffStatus::ReturnedToBot => Status::ReturnedToBot,
            HandoffStatus::Cancelled => Status::Cancelled,
        }
        .into(),
        queue_position: position,
        estimated_wait_seconds: wait_secs,
        ticket_id: ticket_id.to_owned(),
    }
}

/// A live-only queue update (position and wait while waiting).
pub fn handoff_update(
    sequence: u64,
    ticket_id: &str,
    position: u32,
    wait_secs: u32,
) -> pb::ConversationEvent {
    pb::ConversationEvent {
        sequence,
        create_time: Some(timestamp(crate::store::now_ms())),
        kind: Some(pb::conversation_event::Kind::Handoff(handoff(
            ticket_id,
            HandoffStatus::Queued,
            position,
            wait_secs,
        ))),
    }
}

pub fn priority(p: Priority) -> pb::TicketPriority {
    match p {
        Priority::Normal => pb::TicketPriority::Normal,
        Priority::High => pb::TicketPriority::High,
        Priority::Urgent => pb::TicketPriority::Urgent,
    }
}

pub fn ticket_state(s: TicketState) -> pb::TicketState {
    match s {
        TicketState::Queued => pb::TicketState::Queued,
        TicketState::Claimed => pb::TicketState::Claimed,
        TicketState::Resolved => pb::TicketState::Resolved,
        TicketState::HandedBack => pb::TicketState::HandedBack,
        TicketState::Cancelled => pb::TicketState::Cancelled,
        TicketState::DeadLetter => pb::TicketState::DeadLetter,
    }
}

pub fn availability(a: Availability) -> pb::Availability {
    match a {
        Availability::Available => pb::Availability::Available,
        Availability::Busy => pb::Availability::Busy,
        Availability::Offline => pb::Availability::Offline,
    }
}

pub fn ticket_summary(t: &Ticket) -> pb::TicketSummary {
    pb::TicketSummary {
        ticket_id: t.id.clone(),
        conversation_id: t.conversation_id.clone(),
        reason: t.reason.clone(),
        priority: priority(t.priority).into(),
        skill: t.skill.clone(),
        enqueue_time: Some(timestamp(t.created_at)),
        deliveries: t.deliveries,
    }
}

/// A ticket with its transcript (oldest first) and the NLU trail read
/// from the customer's messages.
pub fn ticket(t: &Ticket, transcript: &[Message]) -> pb::Ticket {
    pb::Ticket {
        summary: Some(ticket_summary(t)),
        customer_id: t.customer_id.clone(),
        state: ticket_state(t.state).into(),
        agent_id: t.agent_id.clone().unwrap_or_default(),
        lease_expire_time: (t.lease_until > 0).then(|| timestamp(t.lease_until)),
        auth_level: t.auth_level.clone(),
        slots: t.slots.clone().into_iter().collect(),
        transcript: transcript.iter().map(message).collect(),
        nlu_trail: transcript
            .iter()
            .filter_map(|m| {
                m.nlu.as_ref().map(|n| pb::NluStep {
                    message_id: m.id.clone(),
                    intent: n.intent.clone(),
                    confidence: n.confidence,
                    out_of_scope: n.out_of_scope,
                })
            })
            .collect(),
        outcome: t.outcome.clone().unwrap_or_default(),
    }
}

const TOKEN_VERSION: &str = "m1";

/// An opaque page token: the conversation and the last sequence served.
pub fn page_token(conversation_id: &str, last_sequence: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_VERSION}:{conversation_id}:{last_sequence}"))
}

/// The sequence a page token continues after; `None` when it is not a token
/// for this conversation.
pub fn parse_page_token(token: &str, conversation_id: &str) -> Option<u64> {
    if token.len() > 256 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.splitn(3, ':');
    (parts.next()? == TOKEN_VERSION && parts.next()? == conversation_id)
        .then(|| parts.next()?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_are_bound_to_their_conversation() {
        let t = page_token("c1", 42);
        assert_eq!(parse_page_token(&t, "c1"), Some(42));
        assert_eq!(parse_page_token(&t, "c2"), None);
        assert_eq!(parse_page_token("garbage!", "c1"), None);
        assert_eq!(parse_page_token(&"A".repeat(300), "c1"), None);
    }

    #[test]
    fn timestamps_split_milliseconds() {
        let t = timestamp(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
    }
}
