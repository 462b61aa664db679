//! The conversation's dialog state, events in and actions out. State is
//! plain data: the server stores it with each turn (as JSON) and passes it
//! back on the next one.

use std::collections::BTreeMap;

use bankbot_entities::{Date, DateRange, Entity};
use serde::{Deserialize, Serialize};

use crate::spec::{Operation, OutcomeKind, Priority};

/// Exact money: minor units and an ISO 4217 code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: String,
}

/// A collected slot value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Value {
    Money(Money),
    Date {
        date: Date,
    },
    DateRange {
        range: DateRange,
    },
    /// A payee, account or card of the customer's: id and display name.
    Ref {
        id: String,
        name: String,
    },
    /// Phone, e-mail or a choice.
    Text {
        text: String,
    },
}

/// Where the active flow is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    /// Waiting for this slot.
    Collecting { slot: String, attempts: u8 },
    /// The values were restated; waiting for yes or no.
    Confirming,
    /// A one-time code was sent; waiting for its verification.
    AwaitingStepUp { failures: u8 },
    /// The operation was requested; waiting for its outcome.
    Executing { call: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveFlow {
    pub intent: String,
    pub slots: BTreeMap<String, Value>,
    pub stage: Stage,
}

/// A "did you mean A or B?" question awaiting its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub intents: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    pub active: Option<ActiveFlow>,
    /// Consecutive turns the bot could not act on.
    pub failures: u8,
    pub pending_choice: Option<Choice>,
    /// A person was offered (to this queue); "yes" now means escalate.
    pub human_offered: Option<HumanOffer>,
    /// Handed to a person: the engine answers nothing until handed back.
    pub escalated: bool,
    /// The next connector call's number (call ids are per conversation).
    pub next_call: u64,
    /// Customer turns so far.
    #[serde(default)]
    pub turns: u64,
    /// The id of the one-time code sent for the step-up in progress. Set
    /// by the shell that sends codes; opaque to the engine.
    #[serde(default)]
    pub step_up_code: Option<String>,
    /// A one-time code was verified in this conversation (the hand-over
    /// ticket's authentication level).
    #[serde(default)]
    pub stepped_up: bool,
}

/// Where an offered hand-over would go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HumanOffer {
    pub priority: Priority,
    pub skill: String,
}

impl HumanOffer {
    pub fn general() -> HumanOffer {
        HumanOffer {
            priority: Priority::Normal,
            skill: "general".to_owned(),
        }
    }
}

/// What the customer has, as the bank's systems report it; the server
/// fetches it through the connectors and passes it in with each turn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerFacts {
    pub accounts: Vec<Named>,
    pub cards: Vec<Named>,
    pub payees: Vec<Named>,
    /// The bank could not say what the customer has (an outage): a flow
    /// that needs an account, card or payee cannot be served now.
    pub unavailable: bool,
}

/// Something of the customer's with an id, a display name and the words it
/// is called by ("current", "savings", "visa", "4471").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub id: String,
    pub name: String,
    pub aliases: Vec<String>,
}

/// One customer message after NLU.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub text: String,
    /// Intents with calibrated confidence, best first.
    pub ranking: Vec<(String, f32)>,
    pub out_of_scope: bool,
    pub entities: Vec<Entity>,
    pub facts: CustomerFacts,
    pub today: Date,
}

/// The result of a connector call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub kind: OutcomeKind,
    /// Fields for `{result.field}` placeholders, formatted by the server.
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Turn(Turn),
    /// The outcome of the call with this id.
    Connector {
        call: u64,
        outcome: Outcome,
    },
    /// Whether the one-time code the customer typed was right.
    StepUp {
        verified: bool,
    },
    /// No one-time code could be sent: the protected action cannot happen.
    StepUpUnavailable,
    /// A person handed the conversation back; optionally start a flow.
    HandedBack {
        intent: Option<String>,
    },
}

/// What the server must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Reply {
        text: String,
        quick_replies: Vec<String>,
    },
    /// Call the connector; feed the outcome back as `Event::Connector`.
    Call {
        call: u64,
        operation: Operation,
        args: BTreeMap<String, Value>,
    },
    /// Send a one-time code and verify what the customer types next; feed
    /// the verdict back as `Event::StepUp`.
    RequestStepUp { operation: Operation },
    Escalate {
        reason: EscalationReason,
        priority: Priority,
        skill: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationReason {
    CustomerAsked,
    RepeatedFailure,
    FlowPolicy,
    StepUpFailed,
    ConnectorUnavailable,
}
