//! The imperative shell around the dialog engine: builds a turn from the
//! NLU result, the entities and the customer's facts (from the bank),
//! steps the engine, and executes its actions through the [`Bank`]
//! connector, feeding outcomes back until the engine has nothing left to
//! do. Used by `bankbot chat`, `bankbot test` and the service.
//!
//! Exactly-once money: a transfer's idempotency key is derived from the
//! conversation, the call number and the transfer itself, so a turn decided
//! again (a retry after a crash) derives the same key. With a journal (the
//! service's store) the payment is committed as `confirmed` before the bank
//! is called, moved to `submitted`, then to its outcome; a key already
//! journalled with a final outcome is answered from the journal without
//! calling the bank. Step-up codes are bound to what they authorise (the
//! operation and every argument): the bank stores the binding with the
//! code and verification sends the binding of the arguments as they are
//! now, so any change needs a new code.

use std::collections::BTreeMap;
use std::sync::Arc;

use bankbot_connectors::{
    Bank, CardChange, CardStatus, CodeCheck, ConnectorError, Contact, Day, DisputeRequest,
    Money as BankMoney, TransferOutcome, TransferRequest,
};
use sha2::{Digest, Sha256};

use crate::store::{NewPayment, PaymentState, Store};
use bankbot_dialog::spec::{Flows, Operation, OutcomeKind, Priority};
use bankbot_dialog::state::{
    Action, CustomerFacts, EscalationReason, Event, Money, Named, Outcome, Stage, State, Turn,
    Value,
};
use bankbot_dialog::{render, step};
use bankbot_models::entities::{self, Context, Date, Entity, SavedPayee};

/// Most engine steps one customer message may cause (a reply, a call and
/// its outcome, a step-up…): a bound, never reached by sane flows.
const MAX_STEPS: usize = 16;

/// Transactions listed in one reply.
const MAX_LISTED: usize = 8;

/// What happened during one customer message, for callers and traces.
#[derive(Debug, Clone, Default)]
pub struct TurnReport {
    pub entities: Vec<Entity>,
    pub replies: Vec<(String, Vec<String>)>,
    /// Operations called, in order.
    pub calls: Vec<Operation>,
    pub step_up_requested: bool,
    pub escalations: Vec<(EscalationReason, Priority, String)>,
    /// The dialog state after each engine step, as "stage" strings.
    pub transitions: Vec<String>,
}

/// The NLU's view of a message.
#[derive(Debug, Clone)]
pub struct Nlu {
    pub ranking: Vec<(String, f32)>,
    pub out_of_scope: bool,
}

impl From<&bankbot_models::classifier::Prediction> for Nlu {
    fn from(p: &bankbot_models::classifier::Prediction) -> Nlu {
        Nlu {
            ranking: p
                .ranking
                .iter()
                .map(|r| (r.name.clone(), r.confidence))
                .collect(),
            out_of_scope: p.out_of_scope,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Executor {
    pub flows: Arc<Flows>,
    pub bank: Arc<dyn Bank>,
    /// Where payments are committed before the bank is called (the
    /// service's store). Offline tools (`chat`, `test`) on the in-process
    /// bank run without one.
    pub journal: Option<Store>,
}

/// SHA-256 of `parts`, each ended by a NUL (so no two lists collide), in hex.
fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// An idempotency key (≤ 128 visible ASCII characters) for `parts`.
pub fn derive_key(kind: &str, parts: &[&str]) -> String {
    format!("bb-{kind}-{}", &digest(parts)[..40])
}

/// What a step-up code authorises: the operation and all its arguments in
/// this conversation.
pub fn binding(conversation: &str, operation: Operation, args: &BTreeMap<String, Value>) -> String {
    let canonical = serde_json::to_string(args).unwrap_or_default();
    digest(&[conversation, operation.name(), &canonical])
}

/// A short name of where the dialog is: `idle`, `collecting:<slot>`,
/// `confirming`, `awaiting_step_up`, `executing`, `escalated`.
pub fn stage_name(s: &State) -> String {
    if s.escalated {
        return "escalated".into();
    }
    match s.active.as_ref().map(|a| &a.stage) {
        None => "idle".into(),
        Some(Stage::Collecting { slot, .. }) => format!("collecting:{slot}"),
        Some(Stage::Confirming) => "confirming".into(),
        Some(Stage::AwaitingStepUp { .. }) => "awaiting_step_up".into(),
        Some(Stage::Executing { .. }) => "executing".into(),
    }
}

fn named(id: &str, name: &str, aliases: Vec<String>) -> Named {
    Named {
        id: id.to_owned(),
        name: name.to_owned(),
        aliases,
    }
}

/// A one-time code as typed: 4 to 8 digits, spaces allowed.
fn looks_like_code(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    ((4..=8).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

fn to_bank(m: &Money) -> BankMoney {
    BankMoney {
        minor: m.minor,
        currency: m.currency.clone(),
    }
}

fn money_text(m: &BankMoney) -> String {
    render::money(&Money {
        minor: m.minor,
        currency: m.currency.clone(),
    })
}

fn day_of(d: Date) -> Result<Day, ConnectorError> {
    Day::parse(&d.to_string())
}

impl Executor {
    /// The customer's accounts, cards and payees, as the dialog sees them.
    /// A bank that cannot answer marks the facts unavailable: flows that
    /// need them then say so instead of asking.
    pub async fn facts(&self, customer: &str) -> CustomerFacts {
        let mut unavailable = false;
        let mut or_outage = |r: Result<Vec<_>, ConnectorError>| {
            r.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the bank could not list what the customer has");
                unavailable = true;
                Vec::new()
            })
        };
        // Three independent reads: one round trip's wait, not three.
        let (accounts, cards, payees) = tokio::join!(
            self.bank.accounts(customer),
            self.bank.cards(customer),
            self.bank.payees(customer)
        );
        let accounts = or_outage(accounts.map(|v| {
            v.into_iter()
                .map(|a| named(&a.id, &a.name, a.nicknames))
                .collect()
        }));
        let cards = or_outage(cards.map(|v| v.into_iter().map(|c| card_named(&c)).collect()));
        let payees = or_outage(payees.map(|v| {
            v.into_iter()
                .map(|p| named(&p.id, &p.name, p.nicknames))
                .collect()
        }));
        CustomerFacts {
            accounts,
            cards,
            payees,
            unavailable,
        }
    }
}

/// A card as the dialog names it: any distinctive word of its name
/// ("visa", "credit") and its last four digits. Blocked cards stay listed:
/// they are the ones to replace.
fn card_named(c: &bankbot_connectors::Card) -> Named {
    let mut aliases: Vec<String> = c
        .name
        .split_whitespace()
        .map(str::to_lowercase)
        .filter(|w| !matches!(w.as_str(), "card" | "ending" | "in" | "the" | "my"))
        .collect();
    aliases.push(c.last4.clone());
    named(&c.id, &c.name, aliases)
}

impl Executor {
    /// Handles one customer message. `conversation` scopes call ids and
    /// idempotency keys.
    pub async fn handle(
        &self,
        customer: &str,
        conversation: &str,
        state: &State,
        text: &str,
        nlu: &Nlu,
        today: Date,
    ) -> (State, TurnReport) {
        let mut report = TurnReport::default();
        let awaiting_code = matches!(
            state.active.as_ref().map(|a| &a.stage),
            Some(Stage::AwaitingStepUp { .. })
        );
        let event = match looks_like_code(text).filter(|_| awaiting_code) {
            Some(code) => self.verify(customer, conversation, state, code).await,
            None => {
                let facts = self.facts(customer).await;
                let mut ctx = Context::new(today);
                ctx.payees = facts
                    .payees
                    .iter()
                    .map(|p| SavedPayee {
                        id: p.id.clone(),
                        name: p.name.clone(),
                        aliases: p.aliases.clone(),
                    })
                    .collect();
                let found = entities::extract(text, &ctx);
                report.entities = found.clone();
                Event::Turn(Turn {
                    text: text.to_owned(),
                    ranking: nlu.ranking.clone(),
                    out_of_scope: nlu.out_of_scope,
                    entities: found,
                    facts,
                    today,
                })
            }
        };
        let state = self
            .run(customer, conversation, state, event, &mut report)
            .await;
        (state, report)
    }

    /// Checks a typed code against the code sent for the step-up in
    /// progress and what it was sent to authorise. The verification key
    /// covers the code and its id, so a turn retried after a crash gets
    /// the bank's first verdict again.
    async fn verify(
        &self,
        customer: &str,
        conversation: &str,
        state: &State,
        code: String,
    ) -> Event {
        let (Some(active), Some(code_id)) = (state.active.as_ref(), state.step_up_code.as_ref())
        else {
            return Event::StepUp { verified: false };
        };
        let Some(op) = self.flows.flows.get(&active.intent).and_then(|f| f.action) else {
            return Event::StepUp { verified: false };
        };
        let check = CodeCheck {
            code_id: code_id.clone(),
            code: code.clone(),
            binding: binding(conversation, op, &active.slots),
        };
        let key = derive_key("verify", &[conversation, code_id, &code]);
        match self.bank.verify_code(customer, &check, &key).await {
            Ok(verified) => Event::StepUp { verified },
            Err(e) => {
                tracing::warn!(conversation, error = %e, "could not check a one-time code");
                Event::StepUpUnavailable
            }
        }
    }

    /// Feeds an event (and the outcomes of the actions it causes) through
    /// the engine.
    pub async fn run(
        &self,
        customer: &str,
        conversation: &str,
        state: &State,
        event: Event,
        report: &mut TurnReport,
    ) -> State {
        let mut state = state.clone();
        let mut pending = vec![event];
        let mut steps = 0;
        while let Some(ev) = pending.pop() {
            steps += 1;
            if steps > MAX_STEPS {
                tracing::error!(
                    conversation,
                    "dialog did not settle within {MAX_STEPS} steps"
                );
                break;
            }
            let (next, actions) = step(&self.flows, &state, &ev);
            state = next;
            report.transitions.push(stage_name(&state));
            for action in actions {
                match action {
                    Action::Reply {
                        text,
                        quick_replies,
                    } => report.replies.push((text, quick_replies)),
                    Action::Call {
                        call,
                        operation,
                        args,
                    } => {
                        report.calls.push(operation);
                        let outcome = self
                            .call(customer, conversation, call, operation, &args)
                            .await;
                        pending.push(Event::Connector { call, outcome });
                    }
                    Action::RequestStepUp { operation } => {
                        report.step_up_requested = true;
                        let args = state
                            .active
                            .as_ref()
                            .map(|a| a.slots.clone())
                            .unwrap_or_default();
                        let bound = binding(conversation, operation, &args);
                        match self
                            .bank
                            .send_code(customer, operation.name(), &bound)
                            .await
                        {
                            Ok(code_id) => state.step_up_code = Some(code_id),
                            Err(e) => {
                                // No code could be sent: the flow cannot go on.
                                tracing::warn!(conversation, error = %e, "could not send a one-time code");
                                state.step_up_code = None;
                                pending.push(Event::StepUpUnavailable);
                            }
                        }
                    }
                    Action::Escalate {
                        reason,
                        priority,
                        skill,
                    } => report.escalations.push((reason, priority, skill)),
                }
            }
        }
        state
    }

    /// Executes one operation with the slot values as arguments.
    async fn call(
        &self,
        customer: &str,
        conversation: &str,
        call: u64,
        op: Operation,
        args: &BTreeMap<String, Value>,
    ) -> Outcome {
        let reference = |name: &str| match args.get(name) {
            Some(Value::Ref { id, .. }) => Ok(id.clone()),
            _ => Err(ConnectorError::Invalid(format!("missing `{name}`"))),
        };
        let money = |name: &str| match args.get(name) {
            Some(Value::Money(m)) => Ok(to_bank(m)),
            _ => Err(ConnectorError::Invalid(format!("missing `{name}`"))),
        };
        let mut data = BTreeMap::new();
        // Stable for this call of this conversation with these arguments.
        let key = derive_key(
            op.name(),
            &[
                conversation,
                &call.to_string(),
                &binding(conversation, op, args),
            ],
        );
        let result: Result<OutcomeKind, ConnectorError> = async {
            match op {
                Operation::GetBalance => {
                    let b = self.bank.balance(customer, &reference("account")?).await?;
                    data.insert("balance".to_owned(), money_text(&b.ledger));
                    data.insert("available".to_owned(), money_text(&b.available));
                    Ok(OutcomeKind::Success)
                }
                Operation::ListTransactions => {
                    let Some(Value::DateRange { range }) = args.get("period") else {
                        return Err(ConnectorError::Invalid("missing `period`".into()));
                    };
                    let (from, to) = (day_of(range.from)?, day_of(range.to)?);
                    let txs = self
                        .bank
                        .transactions(customer, &reference("account")?, &from, &to, MAX_LISTED)
                        .await?;
                    let listed: Vec<String> = txs
                        .iter()
                        .map(|t| {
                            format!(
                                "{} {} {}",
                                t.day.as_str(),
                                t.description,
                                money_text(&t.amount)
                            )
                        })
                        .collect();
                    let text = if listed.is_empty() {
                        "none".to_owned()
                    } else {
                        listed.join("; ")
                    };
                    data.insert("transactions".to_owned(), text);
                    data.insert("count".to_owned(), txs.len().to_string());
                    Ok(OutcomeKind::Success)
                }
                Operation::Transfer => {
                    let request = TransferRequest {
                        idempotency_key: key.clone(),
                        from_account: reference("from")?,
                        payee: reference("payee")?,
                        amount: money("amount")?,
                    };
                    match self.pay(customer, conversation, &request).await {
                        Ok(
                            TransferOutcome::Settled { reference }
                            | TransferOutcome::Accepted { reference },
                        ) => {
                            data.insert("reference".to_owned(), reference);
                            Ok(OutcomeKind::Success)
                        }
                        Ok(TransferOutcome::InsufficientFunds) => {
                            Ok(OutcomeKind::InsufficientFunds)
                        }
                        Ok(TransferOutcome::LimitExceeded) => Ok(OutcomeKind::LimitExceeded),
                        Ok(TransferOutcome::Rejected { .. }) => Ok(OutcomeKind::Rejected),
                        // A timeout or an unreadable answer after sending
                        // may have moved money.
                        Ok(TransferOutcome::Unknown)
                        | Err(ConnectorError::Timeout | ConnectorError::Malformed(_)) => {
                            Ok(OutcomeKind::Unknown)
                        }
                        Err(e) => Err(e),
                    }
                }
                Operation::BlockCard => {
                    self.bank
                        .change_card(customer, &reference("card")?, CardChange::Block, &key)
                        .await?;
                    Ok(OutcomeKind::Success)
                }
                Operation::FreezeCard => {
                    self.bank
                        .change_card(customer, &reference("card")?, CardChange::Freeze, &key)
                        .await?;
                    Ok(OutcomeKind::Success)
                }
                Operation::UnfreezeCard => {
                    self.bank
                        .change_card(customer, &reference("card")?, CardChange::Unfreeze, &key)
                        .await?;
                    Ok(OutcomeKind::Success)
                }
                Operation::ReplaceCard => {
                    let new = self
                        .bank
                        .replace_card(customer, &reference("card")?, &key)
                        .await?;
                    data.insert("card".to_owned(), new.name);
                    Ok(OutcomeKind::Success)
                }
                Operation::CardDeliveryStatus => {
                    let id = reference("card")?;
                    let cards = self.bank.cards(customer).await?;
                    let card = cards
                        .iter()
                        .find(|c| c.id == id)
                        .ok_or_else(|| ConnectorError::NotFound("card".into()))?;
                    let (status, advice) = match (card.status, &card.dispatched) {
                        (CardStatus::InTransit, Some(d)) => (
                            format!("posted on {}", d.as_str()),
                            "Cards usually arrive within 5 working days of posting.",
                        ),
                        (CardStatus::InTransit, None) => (
                            "ordered and is being made".to_owned(),
                            "It is usually posted within 2 working days.",
                        ),
                        (CardStatus::Active | CardStatus::Frozen, _) => {
                            ("delivered and activated".to_owned(), "It's ready to use.")
                        }
                        (CardStatus::Blocked, _) => {
                            ("blocked".to_owned(), "I can order a replacement.")
                        }
                    };
                    data.insert("status".to_owned(), status);
                    data.insert("advice".to_owned(), advice.to_owned());
                    Ok(OutcomeKind::Success)
                }
                Operation::OpenDispute => {
                    let Some(Value::Date { date }) = args.get("date") else {
                        return Err(ConnectorError::Invalid("missing `date`".into()));
                    };
                    let reason = match args.get("reason") {
                        Some(Value::Text { text }) => text.clone(),
                        _ => String::new(),
                    };
                    let dispute = DisputeRequest {
                        amount: money("amount")?,
                        day: day_of(*date)?,
                        reason,
                    };
                    let r = self.bank.open_dispute(customer, &dispute, &key).await?;
                    data.insert("reference".to_owned(), r);
                    Ok(OutcomeKind::Success)
                }
                Operation::UpdateContact => {
                    let Some(Value::Text { text }) = args.get("contact") else {
                        return Err(ConnectorError::Invalid("missing `contact`".into()));
                    };
                    let contact = if text.contains('@') {
                        Contact::Email(text.clone())
                    } else {
                        Contact::Phone(text.clone())
                    };
                    self.bank.update_contact(customer, &contact, &key).await?;
                    Ok(OutcomeKind::Success)
                }
            }
        }
        .await;
        let kind = match result {
            Ok(k) => k,
            Err(
                ConnectorError::Unavailable
                | ConnectorError::Timeout
                | ConnectorError::Malformed(_)
                | ConnectorError::CircuitOpen { .. },
            ) => OutcomeKind::Unavailable,
            Err(
                ConnectorError::NotFound(_)
                | ConnectorError::Refused(_)
                | ConnectorError::Invalid(_),
            ) => OutcomeKind::Rejected,
        };
        Outcome { kind, data }
    }

    /// Sends a transfer once: journalled as confirmed (committed) before
    /// the bank sees it, answered from the journal when its key already
    /// has a final outcome, and recorded with whatever the bank said.
    async fn pay(
        &self,
        customer: &str,
        conversation: &str,
        request: &TransferRequest,
    ) -> Result<TransferOutcome, ConnectorError> {
        let Some(journal) = &self.journal else {
            return self.bank.transfer(customer, request).await;
        };
        let new = NewPayment {
            idempotency_key: request.idempotency_key.clone(),
            conversation_id: conversation.to_owned(),
            customer_id: customer.to_owned(),
            from_account: request.from_account.clone(),
            payee: request.payee.clone(),
            amount_minor: request.amount.minor,
            currency: request.amount.currency.clone(),
        };
        // Not journalled, not sent: a plain outage.
        let stored = journal.confirm_payment(&new).await.map_err(|e| {
            tracing::error!(conversation, error = %e, "cannot journal a payment; not sending it");
            ConnectorError::Unavailable
        })?;
        match stored.state {
            PaymentState::Settled => {
                return Ok(TransferOutcome::Settled {
                    reference: stored.detail.unwrap_or_default(),
                });
            }
            PaymentState::Rejected => {
                return Ok(TransferOutcome::Rejected {
                    reason: stored.detail.unwrap_or_default(),
                });
            }
            PaymentState::Accepted => {
                return Ok(TransferOutcome::Accepted {
                    reference: stored.detail.unwrap_or_default(),
                });
            }
            PaymentState::Confirmed | PaymentState::Submitted | PaymentState::Unknown => {}
        }
        journal
            .move_payment(
                &new.idempotency_key,
                &[PaymentState::Confirmed, PaymentState::Unknown],
                PaymentState::Submitted,
                None,
            )
            .await
            .map_err(|e| {
                tracing::error!(conversation, error = %e, "cannot journal a payment; not sending it");
                ConnectorError::Unavailable
            })?;
        let outcome = self.bank.transfer(customer, request).await;
        let (state, detail) = match &outcome {
            Ok(o) => crate::bank::journal_entry(o),
            // Sent without a verdict: the reconciler asks the bank (and
            // sends it again under the same key if the bank never got it).
            Err(ConnectorError::Timeout | ConnectorError::Malformed(_)) => {
                (PaymentState::Unknown, None)
            }
            // Never reached the bank, and the customer is told so: final.
            Err(e) => (PaymentState::Rejected, Some(format!("not sent: {e}"))),
        };
        if let Err(e) = journal
            .move_payment(
                &new.idempotency_key,
                &[PaymentState::Submitted],
                state,
                detail.as_deref(),
            )
            .await
        {
            // The row stays `submitted`; the reconciler finishes it.
            tracing::error!(conversation, error = %e, "cannot record a payment's outcome");
        }
        outcome
    }
}
