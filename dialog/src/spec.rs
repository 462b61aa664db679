//! Compiled flows: what the engine runs. The bot's catalogue builds these
//! from the intent YAML and checks them (`bankbot check`), reporting errors
//! at `file:line:col`; [`Flows::validate`] is the engine's own guard.

use std::collections::BTreeMap;

use bankbot_entities::Decimal;

/// What a slot holds and which extractor fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// Money in minor units of the slot's currency.
    Amount,
    Date,
    DateRange,
    /// One of the customer's saved payees.
    Payee,
    /// One of the customer's accounts (by name or nickname in the text).
    Account,
    /// One of the customer's cards (by its last four digits or product name).
    Card,
    Phone,
    Email,
    /// A phone number or an e-mail address, whichever the customer gives.
    Contact,
    /// One of the slot's fixed options.
    Choice,
}

impl SlotKind {
    pub const ALL: [SlotKind; 10] = [
        SlotKind::Amount,
        SlotKind::Date,
        SlotKind::DateRange,
        SlotKind::Payee,
        SlotKind::Account,
        SlotKind::Card,
        SlotKind::Phone,
        SlotKind::Email,
        SlotKind::Contact,
        SlotKind::Choice,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SlotKind::Amount => "amount",
            SlotKind::Date => "date",
            SlotKind::DateRange => "date_range",
            SlotKind::Payee => "payee",
            SlotKind::Account => "account",
            SlotKind::Card => "card",
            SlotKind::Phone => "phone",
            SlotKind::Email => "email",
            SlotKind::Contact => "contact",
            SlotKind::Choice => "choice",
        }
    }

    pub fn from_name(name: &str) -> Option<SlotKind> {
        SlotKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A check on a collected value; a failed rule re-prompts with its message.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Amount strictly above zero.
    Positive,
    /// Amount at most this many major units (of the slot's currency).
    MaxAmount(Decimal),
    /// Amount at least this many major units.
    MinAmount(Decimal),
    /// Date not before the reference date.
    NotPast,
    /// Date not after the reference date.
    NotFuture,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlotSpec {
    pub name: String,
    pub kind: SlotKind,
    pub prompt: String,
    /// Said when the answer did not fill the slot; default: the prompt.
    pub reprompt: Option<String>,
    pub rules: Vec<(Rule, String)>,
    /// Options for `Choice` slots.
    pub options: Vec<String>,
    /// Skipped when the customer does not give it.
    pub optional: bool,
}

/// The connector operation a flow performs, once its slots are complete
/// and confirmed. The server maps each to a connector trait call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    GetBalance,
    ListTransactions,
    Transfer,
    BlockCard,
    FreezeCard,
    UnfreezeCard,
    ReplaceCard,
    CardDeliveryStatus,
    OpenDispute,
    UpdateContact,
}

impl Operation {
    pub const ALL: [Operation; 10] = [
        Operation::GetBalance,
        Operation::ListTransactions,
        Operation::Transfer,
        Operation::BlockCard,
        Operation::FreezeCard,
        Operation::UnfreezeCard,
        Operation::ReplaceCard,
        Operation::CardDeliveryStatus,
        Operation::OpenDispute,
        Operation::UpdateContact,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::GetBalance => "get_balance",
            Operation::ListTransactions => "list_transactions",
            Operation::Transfer => "transfer",
            Operation::BlockCard => "block_card",
            Operation::FreezeCard => "freeze_card",
            Operation::UnfreezeCard => "unfreeze_card",
            Operation::ReplaceCard => "replace_card",
            Operation::CardDeliveryStatus => "card_delivery_status",
            Operation::OpenDispute => "open_dispute",
            Operation::UpdateContact => "update_contact",
        }
    }

    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.name() == name)
    }

    /// The slots (name and kind) the operation takes as arguments.
    pub fn arguments(self) -> &'static [(&'static str, SlotKind)] {
        match self {
            Operation::GetBalance => &[("account", SlotKind::Account)],
            Operation::ListTransactions => &[
                ("account", SlotKind::Account),
                ("period", SlotKind::DateRange),
            ],
            Operation::Transfer => &[
                ("amount", SlotKind::Amount),
                ("payee", SlotKind::Payee),
                ("from", SlotKind::Account),
            ],
            Operation::BlockCard
            | Operation::FreezeCard
            | Operation::UnfreezeCard
            | Operation::ReplaceCard
            | Operation::CardDeliveryStatus => &[("card", SlotKind::Card)],
            Operation::OpenDispute => &[
                ("amount", SlotKind::Amount),
                ("date", SlotKind::Date),
                ("reason", SlotKind::Choice),
            ],
            Operation::UpdateContact => &[("contact", SlotKind::Contact)],
        }
    }

    /// The outcomes the operation can have: a response for any other is
    /// unreachable.
    pub fn outcomes(self) -> &'static [OutcomeKind] {
        match self {
            Operation::Transfer => &OutcomeKind::ALL,
            Operation::GetBalance | Operation::ListTransactions | Operation::CardDeliveryStatus => {
                &[OutcomeKind::Success, OutcomeKind::Unavailable]
            }
            Operation::BlockCard
            | Operation::FreezeCard
            | Operation::UnfreezeCard
            | Operation::ReplaceCard
            | Operation::OpenDispute
            | Operation::UpdateContact => &[
                OutcomeKind::Success,
                OutcomeKind::Rejected,
                OutcomeKind::Unavailable,
            ],
        }
    }

    /// Operations that move money: their flows must confirm first.
    pub fn moves_money(self) -> bool {
        match self {
            Operation::Transfer => true,
            Operation::GetBalance
            | Operation::ListTransactions
            | Operation::BlockCard
            | Operation::FreezeCard
            | Operation::UnfreezeCard
            | Operation::ReplaceCard
            | Operation::CardDeliveryStatus
            | Operation::OpenDispute
            | Operation::UpdateContact => false,
        }
    }
}

/// How a connector call ended, as the flow's responses are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutcomeKind {
    Success,
    InsufficientFunds,
    LimitExceeded,
    Rejected,
    /// The bank could not be reached; nothing happened.
    Unavailable,
    /// Money may have moved; the outcome will be settled later.
    Unknown,
}

impl OutcomeKind {
    pub const ALL: [OutcomeKind; 6] = [
        OutcomeKind::Success,
        OutcomeKind::InsufficientFunds,
        OutcomeKind::LimitExceeded,
        OutcomeKind::Rejected,
        OutcomeKind::Unavailable,
        OutcomeKind::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OutcomeKind::Success => "success",
            OutcomeKind::InsufficientFunds => "insufficient_funds",
            OutcomeKind::LimitExceeded => "limit_exceeded",
            OutcomeKind::Rejected => "rejected",
            OutcomeKind::Unavailable => "unavailable",
            OutcomeKind::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<OutcomeKind> {
        OutcomeKind::ALL.into_iter().find(|o| o.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    /// The session's login is enough.
    Session,
    /// A one-time code must be verified before the action.
    StepUp,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Normal,
    High,
    Urgent,
}

/// When the flow hands the customer to a person.
#[derive(Debug, Clone, PartialEq)]
pub enum EscalatePolicy {
    /// Only when the customer asks or the global fallback policy says so;
    /// then to this queue.
    OnRequest { priority: Priority, skill: String },
    /// Offer a person alongside the flow's first reply (lost card, fraud).
    Offer { priority: Priority, skill: String },
    /// Hand over at once, after the flow's immediate action.
    Immediately { priority: Priority, skill: String },
}

/// A reply: text with `{slot}` and `{result.field}` placeholders, and
/// quick replies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    pub text: String,
    pub quick_replies: Vec<String>,
}

impl Template {
    pub fn text(s: &str) -> Template {
        Template {
            text: s.to_owned(),
            quick_replies: Vec::new(),
        }
    }
}

/// One intent's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub intent: String,
    pub slots: Vec<SlotSpec>,
    /// Restates the values before acting; required when the operation
    /// moves money.
    pub confirm: Option<Template>,
    pub action: Option<Operation>,
    /// The reply when there is no action (FAQs), or the first reply before
    /// collecting slots.
    pub answer: Option<Template>,
    /// Other wordings of the answer; with several, the conversation's turn
    /// number picks one, so a question asked twice is not answered word for
    /// word the same.
    pub variants: Vec<Template>,
    pub outcomes: BTreeMap<OutcomeKind, Template>,
    pub requires_auth: AuthLevel,
    pub escalate: EscalatePolicy,
    /// The lowest calibrated confidence at which this intent is acted on.
    pub threshold: f32,
}

impl Flow {
    /// A flow with no slots and no action answers and is done: an FAQ,
    /// which may interrupt another flow without ending it.
    pub fn is_faq(&self) -> bool {
        self.slots.is_empty() && self.action.is_none()
    }
}

/// Intents with a global meaning on every turn.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalIntents {
    pub cancel: String,
    pub human: String,
    pub help: String,
    pub affirm: String,
    pub deny: String,
}

/// Behaviour that is not part of one flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub intents: GlobalIntents,
    /// Threshold for intents without their own.
    pub default_threshold: f32,
    /// Threshold for flows whose operation moves money, when higher.
    pub money_threshold: f32,
    /// Below this gap between the top two intents, ask "A or B?".
    pub ambiguity_gap: f32,
    /// Consecutive failed turns before a person is offered.
    pub max_failures: u8,
    /// Wrong one-time codes before the flow is abandoned.
    pub max_step_up_failures: u8,
    /// Re-prompts for one slot before the flow is abandoned.
    pub max_slot_attempts: u8,
    /// Currency for amounts written without one.
    pub currency: String,
    pub texts: PolicyTexts,
}

/// The engine's own replies.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyTexts {
    pub out_of_scope: String,
    pub not_understood: String,
    pub did_you_mean: String,
    pub offer_human: String,
    pub escalating: String,
    pub cancelled: String,
    pub nothing_to_cancel: String,
    pub help: String,
    pub resume: String,
    pub step_up: String,
    pub step_up_failed: String,
    pub step_up_locked: String,
    pub confirm_again: String,
    pub too_many_attempts: String,
    pub suspicious_payee: String,
    pub default_outcomes: BTreeMap<OutcomeKind, String>,
}

/// All flows, keyed by intent, and the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Flows {
    pub flows: BTreeMap<String, Flow>,
    pub policy: Policy,
    /// Human-readable intent names for "did you mean" quick replies.
    pub labels: BTreeMap<String, String>,
    /// Quick replies whose button title differs from what they send:
    /// payload -> title. The engine works with payloads only.
    pub quick_reply_titles: BTreeMap<String, String>,
}

/// Why compiled flows cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("flow `{flow}`: {message}")]
    Flow { flow: String, message: String },
    #[error("policy: {0}")]
    Policy(String),
}

impl Flows {
    /// The engine's invariants, which the catalogue compiler also reports
    /// with positions: money-moving flows confirm; placeholders name slots;
    /// choice slots have options; global intents exist.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        for (name, f) in &self.flows {
            let mut err = |message: String| {
                errors.push(SpecError::Flow {
                    flow: name.clone(),
                    message,
                })
            };
            if f.action.is_some_and(Operation::moves_money) && f.confirm.is_none() {
                err("moves money but has no confirmation step".into());
            }
            if f.action.is_some_and(Operation::moves_money) && f.requires_auth != AuthLevel::StepUp
            {
                err("moves money but does not require step-up authentication".into());
            }
            let slot_names: Vec<&str> = f.slots.iter().map(|s| s.name.as_str()).collect();
            for s in &f.slots {
                if s.kind == SlotKind::Choice && s.options.is_empty() {
                    err(format!("choice slot `{}` has no options", s.name));
                }
            }
            let mut templates: Vec<&Template> = f
                .confirm
                .iter()
                .chain(f.answer.iter())
                .chain(f.outcomes.values())
                .collect();
            let prompts: Vec<Template> =
                f.slots.iter().map(|s| Template::text(&s.prompt)).collect();
            templates.extend(prompts.iter());
            for t in templates {
                for p in crate::render::placeholders(&t.text) {
                    let slot = p.split('.').next().unwrap_or_default();
                    if p.starts_with("result.") {
                        continue;
                    }
                    if !slot_names.contains(&slot) {
                        err(format!("`{{{p}}}` names no slot of this flow"));
                    }
                }
            }
            if f.action.is_some() && !f.outcomes.contains_key(&OutcomeKind::Success) {
                err("has an action but no `success` response".into());
            }
            if f.action.is_none() && f.answer.is_none() && f.slots.is_empty() {
                err("has no answer, slots or action: it would say nothing".into());
            }
        }
        let g = &self.policy.intents;
        for i in [&g.cancel, &g.human, &g.help, &g.affirm, &g.deny] {
            if !self.labels.contains_key(i) {
                errors.push(SpecError::Policy(format!(
                    "global intent `{i}` is not in the catalogue"
                )));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
