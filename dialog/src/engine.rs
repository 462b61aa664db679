//! `step(flows, state, event) -> (state, actions)`: the whole dialog
//! policy. No IO, no clock (the turn carries "today"), no randomness.

use std::collections::BTreeMap;

use bankbot_entities::{DateRange, Entity, EntityValue};

use crate::render;
use crate::spec::{
    AuthLevel, EscalatePolicy, Flow, Flows, OutcomeKind, Policy, Priority, Rule, SlotKind,
    SlotSpec, Template,
};
use crate::state::{
    Action, ActiveFlow, Choice, CustomerFacts, EscalationReason, Event, HumanOffer, Money, Named,
    Outcome, Stage, State, Turn, Value,
};

/// The quick reply that accepts an offer of a person.
pub const HUMAN_QUICK_REPLY: &str = "Talk to a person";

/// Advances the dialog by one event.
pub fn step(flows: &Flows, state: &State, event: &Event) -> (State, Vec<Action>) {
    let mut run = Run {
        flows,
        st: state.clone(),
        out: Vec::new(),
    };
    match event {
        Event::Turn(turn) => {
            run.st.turns = run.st.turns.saturating_add(1);
            run.turn(turn);
        }
        Event::Connector { call, outcome } => run.outcome(*call, outcome),
        Event::StepUp { verified } => run.step_up(*verified),
        Event::StepUpUnavailable => {
            if matches!(
                run.st.active.as_ref().map(|a| &a.stage),
                Some(Stage::AwaitingStepUp { .. })
            ) {
                run.st.active = None;
                run.bank_unavailable();
            }
        }
        Event::HandedBack { intent } => {
            run.st.escalated = false;
            run.st.failures = 0;
            run.st.human_offered = None;
            if let Some(i) = intent.as_deref().and_then(|i| flows.flows.get(i)) {
                run.start(i, None);
            }
        }
    }
    (run.st, run.out)
}

struct Run<'a> {
    flows: &'a Flows,
    st: State,
    out: Vec<Action>,
}

/// What a turn's entities and text gave one slot.
enum Fill {
    Filled(Value),
    /// Understood but not acceptable: say why.
    Invalid(String),
    Nothing,
}

impl Run<'_> {
    fn reply(&mut self, text: impl Into<String>, quick_replies: Vec<String>) {
        self.out.push(Action::Reply {
            text: text.into(),
            quick_replies,
        });
    }

    fn threshold(&self, intent: &str) -> f32 {
        let p = &self.flows.policy;
        match self.flows.flows.get(intent) {
            Some(f) if f.action.is_some_and(crate::spec::Operation::moves_money) => {
                f.threshold.max(p.money_threshold)
            }
            Some(f) => f.threshold,
            None => p.default_threshold,
        }
    }

    /// The intent the turn is confidently about, if any.
    fn confident(&self, turn: &Turn) -> Option<String> {
        if turn.out_of_scope {
            return None;
        }
        let (intent, conf) = turn.ranking.first()?;
        (*conf >= self.threshold(intent)).then(|| intent.clone())
    }

    fn escalate(&mut self, reason: EscalationReason, priority: Priority, skill: &str) {
        let text = self.flows.policy.texts.escalating.clone();
        self.reply(text, Vec::new());
        self.out.push(Action::Escalate {
            reason,
            priority,
            skill: skill.to_owned(),
        });
        self.st.escalated = true;
        self.st.human_offered = None;
        self.st.pending_choice = None;
        self.st.failures = 0;
    }

    fn failed_turn(&mut self, text: String, quick_replies: Vec<String>) {
        self.st.failures = self.st.failures.saturating_add(1);
        if self.st.failures >= self.flows.policy.max_failures {
            let offer = self.flows.policy.texts.offer_human.clone();
            self.reply(
                format!("{text} {offer}"),
                vec![HUMAN_QUICK_REPLY.to_owned()],
            );
            self.st.human_offered = Some(HumanOffer::general());
        } else {
            self.reply(text, quick_replies);
        }
    }

    fn turn(&mut self, turn: &Turn) {
        if self.st.escalated {
            // A person has the conversation: the bot stays quiet.
            return;
        }
        let g = &self.flows.policy.intents;
        let mut intent = self.confident(turn);
        // An answer to "did you mean A or B?".
        if let Some(choice) = self.st.pending_choice.take() {
            let said = turn.text.trim().to_lowercase();
            let picked = choice.intents.iter().find(|i| {
                self.flows
                    .labels
                    .get(*i)
                    .is_some_and(|l| l.to_lowercase() == said)
                    || turn
                        .ranking
                        .first()
                        .is_some_and(|(top, c)| top == *i && *c >= 0.3)
            });
            if let Some(p) = picked {
                intent = Some(p.clone());
            }
        }
        // An answer to "shall I get you a person?".
        if let Some(offer) = self.st.human_offered.take() {
            let yes = turn.text.trim().eq_ignore_ascii_case(HUMAN_QUICK_REPLY)
                || intent.as_deref() == Some(g.affirm.as_str());
            if yes || intent.as_deref() == Some(g.human.as_str()) {
                self.escalate(
                    EscalationReason::CustomerAsked,
                    offer.priority,
                    &offer.skill,
                );
                return;
            }
        }
        if let Some(i) = intent.as_deref() {
            if i == g.human {
                let (priority, skill) = self.active_escalation();
                self.escalate(EscalationReason::CustomerAsked, priority, &skill);
                return;
            }
            if i == g.cancel {
                self.st.failures = 0;
                let text = if self.st.active.take().is_some() {
                    self.flows.policy.texts.cancelled.clone()
                } else {
                    self.flows.policy.texts.nothing_to_cancel.clone()
                };
                self.reply(text, Vec::new());
                return;
            }
            if i == g.help {
                self.st.failures = 0;
                let help = self.flows.policy.texts.help.clone();
                self.reply(help, Vec::new());
                self.resume();
                return;
            }
        }
        if self.st.active.is_some() && self.continue_flow(turn, intent.as_deref()) {
            return;
        }
        match intent {
            Some(i) => {
                let Some(flow) = self.flows.flows.get(&i) else {
                    let text = self.flows.policy.texts.not_understood.clone();
                    self.failed_turn(text, Vec::new());
                    return;
                };
                self.st.failures = 0;
                // A new task replaces the unfinished one (FAQs were handled
                // as digressions before we got here).
                self.st.active = None;
                self.start(flow, Some(turn));
            }
            None => self.fallback(turn),
        }
    }

    /// Low confidence or out of scope.
    fn fallback(&mut self, turn: &Turn) {
        let p = &self.flows.policy;
        if turn.out_of_scope {
            let text = p.texts.out_of_scope.clone();
            self.failed_turn(text, Vec::new());
            return;
        }
        if let [(a, ca), (b, cb), ..] = turn.ranking.as_slice()
            && ca - cb <= p.ambiguity_gap
            && self.flows.flows.contains_key(a)
            && self.flows.flows.contains_key(b)
        {
            let label = |i: &str| {
                self.flows
                    .labels
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| i.replace('_', " "))
            };
            let (la, lb) = (label(a), label(b));
            let text = render::fill(
                &p.texts.did_you_mean,
                &BTreeMap::new(),
                &BTreeMap::from([("a".to_owned(), la.clone()), ("b".to_owned(), lb.clone())]),
            );
            self.st.pending_choice = Some(Choice {
                intents: vec![a.clone(), b.clone()],
            });
            self.failed_turn(text, vec![la, lb]);
            return;
        }
        let text = p.texts.not_understood.clone();
        self.failed_turn(text, Vec::new());
    }

    fn active_escalation(&self) -> (Priority, String) {
        let flow = self
            .st
            .active
            .as_ref()
            .and_then(|a| self.flows.flows.get(&a.intent));
        match flow.map(|f| &f.escalate) {
            Some(
                EscalatePolicy::Offer { priority, skill }
                | EscalatePolicy::Immediately { priority, skill }
                | EscalatePolicy::OnRequest { priority, skill },
            ) => (*priority, skill.clone()),
            None => (Priority::Normal, "general".to_owned()),
        }
    }

    /// Starts a flow, taking whatever the turn already says.
    fn start(&mut self, flow: &Flow, turn: Option<&Turn>) {
        if let Some(answer) = self.answer_of(flow) {
            let text = render::fill(&answer.text, &BTreeMap::new(), &BTreeMap::new());
            self.reply(text, answer.quick_replies.clone());
        }
        if flow.is_faq() {
            // Answered; nothing to keep.
            if let EscalatePolicy::Immediately { priority, skill } = &flow.escalate {
                self.escalate(EscalationReason::FlowPolicy, *priority, skill);
            }
            return;
        }
        let mut active = ActiveFlow {
            intent: flow.intent.clone(),
            slots: BTreeMap::new(),
            // Nothing asked yet; `advance` decides.
            stage: Stage::Collecting {
                slot: String::new(),
                attempts: 0,
            },
        };
        if let Some(t) = turn {
            let notes = fill_slots(flow, &mut active, t, &self.flows.policy, None);
            for n in notes {
                self.reply(n, Vec::new());
            }
        }
        self.st.active = Some(active);
        self.advance(turn.map(|t| &t.facts));
    }

    /// The bank's systems are out: say so (nothing was done) and offer a
    /// person; the flow, if any, has ended.
    fn bank_unavailable(&mut self) {
        let text = self
            .flows
            .policy
            .texts
            .default_outcomes
            .get(&OutcomeKind::Unavailable)
            .cloned()
            .unwrap_or_default();
        self.reply(text, vec![HUMAN_QUICK_REPLY.to_owned()]);
        self.st.human_offered = Some(HumanOffer::general());
    }

    /// Asks for the next missing slot, or confirms, or acts.
    fn advance(&mut self, facts: Option<&CustomerFacts>) {
        let Some(mut active) = self.st.active.take() else {
            return;
        };
        let Some(flow) = self.flows.flows.get(&active.intent) else {
            return;
        };
        // A slot the customer has only one option for fills itself.
        if let Some(facts) = facts {
            for s in &flow.slots {
                if active.slots.contains_key(&s.name) {
                    continue;
                }
                if let Some(only) = single_option(s.kind, facts) {
                    active.slots.insert(s.name.clone(), only);
                }
            }
        }
        let missing = flow
            .slots
            .iter()
            .find(|s| !s.optional && !active.slots.contains_key(&s.name));
        if let Some(slot) = missing {
            // The bank cannot say what the customer has: asking which
            // account, card or payee would lead nowhere.
            if facts.is_some_and(|f| f.unavailable)
                && matches!(
                    slot.kind,
                    SlotKind::Account | SlotKind::Card | SlotKind::Payee
                )
            {
                self.bank_unavailable();
                return;
            }
            let attempts = match &active.stage {
                Stage::Collecting { slot: s, attempts } if *s == slot.name => *attempts,
                Stage::Collecting { .. }
                | Stage::Confirming
                | Stage::AwaitingStepUp { .. }
                | Stage::Executing { .. } => 0,
            };
            active.stage = Stage::Collecting {
                slot: slot.name.clone(),
                attempts,
            };
            let text = render::fill(&slot.prompt, &active.slots, &BTreeMap::new());
            let quick = options_for(slot, facts);
            self.st.active = Some(active);
            self.reply(text, quick);
            return;
        }
        if let Some(confirm) = &flow.confirm
            && active.stage != Stage::Confirming
        {
            active.stage = Stage::Confirming;
            let text = render::fill(&confirm.text, &active.slots, &BTreeMap::new());
            let quick = if confirm.quick_replies.is_empty() {
                vec!["Yes".to_owned(), "No".to_owned()]
            } else {
                confirm.quick_replies.clone()
            };
            self.st.active = Some(active);
            self.reply(text, quick);
            return;
        }
        self.st.active = Some(active);
        self.proceed();
    }

    /// Slots complete and confirmed: step up if required, else act.
    fn proceed(&mut self) {
        let Some(active) = self.st.active.as_mut() else {
            return;
        };
        let Some(flow) = self.flows.flows.get(&active.intent) else {
            return;
        };
        let Some(operation) = flow.action else {
            // Slots without an action: nothing more to do.
            self.st.active = None;
            return;
        };
        match flow.requires_auth {
            AuthLevel::StepUp if !matches!(active.stage, Stage::AwaitingStepUp { .. }) => {
                active.stage = Stage::AwaitingStepUp { failures: 0 };
                self.out.push(Action::RequestStepUp { operation });
                let text = self.flows.policy.texts.step_up.clone();
                self.reply(text, Vec::new());
            }
            AuthLevel::StepUp | AuthLevel::Session => {
                let call = self.st.next_call;
                self.st.next_call += 1;
                let args = active.slots.clone();
                active.stage = Stage::Executing { call };
                self.out.push(Action::Call {
                    call,
                    operation,
                    args,
                });
            }
        }
    }

    /// The active flow's reaction to a turn; false when the turn is not for
    /// it (a new intent takes over).
    fn continue_flow(&mut self, turn: &Turn, intent: Option<&str>) -> bool {
        let Some(mut active) = self.st.active.clone() else {
            return false;
        };
        let Some(flow) = self.flows.flows.get(&active.intent) else {
            self.st.active = None;
            return false;
        };
        let p = &self.flows.policy;
        let digression = intent
            .and_then(|i| self.flows.flows.get(i))
            .filter(|f| f.is_faq() && f.intent != active.intent);
        match active.stage.clone() {
            Stage::Confirming => {
                let before = active.slots.clone();
                let notes = fill_slots(flow, &mut active, turn, p, None);
                if active.slots != before || !notes.is_empty() {
                    // A correction: "no, make it 60".
                    for n in notes {
                        self.reply(n, Vec::new());
                    }
                    active.stage = Stage::Collecting {
                        slot: String::new(),
                        attempts: 0,
                    };
                    self.st.active = Some(active);
                    let again = p.texts.confirm_again.clone();
                    self.reply(again, Vec::new());
                    self.advance(Some(&turn.facts));
                    return true;
                }
                if intent == Some(p.intents.affirm.as_str()) {
                    self.st.failures = 0;
                    self.proceed();
                    return true;
                }
                if intent == Some(p.intents.deny.as_str()) {
                    self.st.failures = 0;
                    self.st.active = None;
                    let text = p.texts.cancelled.clone();
                    self.reply(text, Vec::new());
                    return true;
                }
                if let Some(faq) = digression {
                    self.digress(faq);
                    return true;
                }
                if intent.is_some() {
                    return false;
                }
                let text = p.texts.not_understood.clone();
                self.failed_turn(text, Vec::new());
                self.resume();
                true
            }
            Stage::Collecting { slot, attempts } => {
                let notes = fill_slots(flow, &mut active, turn, p, Some(&slot));
                let filled = active.slots.contains_key(&slot);
                if filled {
                    self.st.failures = 0;
                    for n in notes {
                        self.reply(n, Vec::new());
                    }
                    self.st.active = Some(active);
                    self.advance(Some(&turn.facts));
                    return true;
                }
                // Out of scope mid-task: say so, then pick the task up again.
                if turn.out_of_scope && notes.is_empty() {
                    self.st.active = Some(active);
                    let text = p.texts.out_of_scope.clone();
                    self.failed_turn(text, Vec::new());
                    self.resume();
                    return true;
                }
                // A value of the right kind that failed a rule is about this
                // slot, whatever the classifier thought of the words.
                if let Some(faq) = digression.filter(|_| notes.is_empty()) {
                    self.digress(faq);
                    return true;
                }
                if let Some(i) = intent.filter(|_| notes.is_empty())
                    && i != active.intent
                    && i != p.intents.affirm
                    && i != p.intents.deny
                {
                    return false;
                }
                let attempts = attempts.saturating_add(1);
                if attempts >= p.max_slot_attempts {
                    self.st.active = None;
                    let text = p.texts.too_many_attempts.clone();
                    self.failed_turn(text, vec![HUMAN_QUICK_REPLY.to_owned()]);
                    self.st.human_offered = Some(HumanOffer::general());
                    return true;
                }
                active.stage = Stage::Collecting {
                    slot: slot.clone(),
                    attempts,
                };
                let spec = flow.slots.iter().find(|s| s.name == slot);
                let reprompt = spec
                    .map(|s| s.reprompt.clone().unwrap_or_else(|| s.prompt.clone()))
                    .unwrap_or_default();
                let quick = spec
                    .map(|s| options_for(s, Some(&turn.facts)))
                    .unwrap_or_default();
                let mut text = notes.join(" ");
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(&render::fill(&reprompt, &active.slots, &BTreeMap::new()));
                self.st.active = Some(active);
                self.reply(text, quick);
                true
            }
            Stage::AwaitingStepUp { .. } => {
                if let Some(faq) = digression {
                    self.digress(faq);
                    return true;
                }
                if intent.is_some_and(|i| i != active.intent) {
                    return false;
                }
                let text = p.texts.step_up.clone();
                self.reply(text, Vec::new());
                true
            }
            Stage::Executing { .. } => {
                let text = p.texts.resume.clone();
                self.reply(text, Vec::new());
                true
            }
        }
    }

    /// The flow's answer, or one of its variants chosen by the turn number.
    fn answer_of<'f>(&self, flow: &'f Flow) -> Option<&'f Template> {
        if flow.variants.is_empty() {
            return flow.answer.as_ref();
        }
        let n = flow.variants.len() as u64;
        flow.variants
            .get(usize::try_from(self.st.turns.saturating_sub(1) % n).unwrap_or(0))
    }

    /// Answers an FAQ mid-flow, then picks the flow up where it was.
    fn digress(&mut self, faq: &Flow) {
        if let Some(a) = self.answer_of(faq) {
            self.reply(a.text.clone(), a.quick_replies.clone());
        }
        self.resume();
    }

    /// Repeats what the active flow is waiting for.
    fn resume(&mut self) {
        let Some(active) = self.st.active.clone() else {
            return;
        };
        let Some(flow) = self.flows.flows.get(&active.intent) else {
            return;
        };
        let lead = self.flows.policy.texts.resume.clone();
        match &active.stage {
            Stage::Collecting { slot, .. } => {
                if let Some(s) = flow.slots.iter().find(|s| &s.name == slot) {
                    let text = format!(
                        "{lead} {}",
                        render::fill(&s.prompt, &active.slots, &BTreeMap::new())
                    );
                    self.reply(text, options_for(s, None));
                }
            }
            Stage::Confirming => {
                if let Some(c) = &flow.confirm {
                    let text = format!(
                        "{lead} {}",
                        render::fill(&c.text, &active.slots, &BTreeMap::new())
                    );
                    self.reply(text, vec!["Yes".to_owned(), "No".to_owned()]);
                }
            }
            Stage::AwaitingStepUp { .. } => {
                let text = format!("{lead} {}", self.flows.policy.texts.step_up);
                self.reply(text, Vec::new());
            }
            Stage::Executing { .. } => {}
        }
    }

    fn outcome(&mut self, call: u64, outcome: &Outcome) {
        let Some(active) = self.st.active.clone() else {
            return;
        };
        if active.stage != (Stage::Executing { call }) {
            // A late or repeated outcome: already handled.
            return;
        }
        let Some(flow) = self.flows.flows.get(&active.intent) else {
            return;
        };
        self.st.active = None;
        let template = flow.outcomes.get(&outcome.kind).cloned().or_else(|| {
            self.flows
                .policy
                .texts
                .default_outcomes
                .get(&outcome.kind)
                .map(|t| Template::text(t))
        });
        let template = template.unwrap_or_default();
        let text = render::fill(&template.text, &active.slots, &outcome.data);
        let mut quick = template.quick_replies.clone();
        match (&flow.escalate, outcome.kind) {
            (EscalatePolicy::Immediately { priority, skill }, _) => {
                self.reply(text, quick);
                self.escalate(EscalationReason::FlowPolicy, *priority, skill);
            }
            (_, OutcomeKind::Unavailable)
                if flow.action.is_some_and(crate::spec::Operation::moves_money) =>
            {
                self.reply(text, Vec::new());
                let (priority, skill) = match &flow.escalate {
                    // A money operation that could not run: at least high.
                    EscalatePolicy::Offer { priority, skill }
                    | EscalatePolicy::OnRequest { priority, skill }
                    | EscalatePolicy::Immediately { priority, skill } => {
                        ((*priority).max(Priority::High), skill.clone())
                    }
                };
                self.escalate(EscalationReason::ConnectorUnavailable, priority, &skill);
            }
            (EscalatePolicy::Offer { priority, skill }, _) => {
                quick.push(HUMAN_QUICK_REPLY.to_owned());
                self.reply(text, quick);
                self.st.human_offered = Some(HumanOffer {
                    priority: *priority,
                    skill: skill.clone(),
                });
            }
            (EscalatePolicy::OnRequest { .. }, _) => self.reply(text, quick),
        }
    }

    fn step_up(&mut self, verified: bool) {
        let Some(active) = self.st.active.as_mut() else {
            return;
        };
        let Stage::AwaitingStepUp { failures } = active.stage else {
            return;
        };
        if verified {
            self.st.stepped_up = true;
            self.proceed();
            return;
        }
        let failures = failures.saturating_add(1);
        if failures >= self.flows.policy.max_step_up_failures {
            self.st.active = None;
            let text = self.flows.policy.texts.step_up_locked.clone();
            self.reply(text, vec![HUMAN_QUICK_REPLY.to_owned()]);
            self.st.human_offered = Some(HumanOffer::general());
            return;
        }
        active.stage = Stage::AwaitingStepUp { failures };
        if let Some(op) = self.flows.flows.get(&active.intent).and_then(|f| f.action) {
            self.out.push(Action::RequestStepUp { operation: op });
        }
        let text = self.flows.policy.texts.step_up_failed.clone();
        self.reply(text, Vec::new());
    }
}

/// Options offered as quick replies for a slot.
fn options_for(slot: &SlotSpec, facts: Option<&CustomerFacts>) -> Vec<String> {
    let names = |v: &[Named]| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    match (slot.kind, facts) {
        (SlotKind::Choice, _) => slot.options.clone(),
        (SlotKind::Account, Some(f)) => names(&f.accounts),
        (SlotKind::Card, Some(f)) => names(&f.cards),
        (SlotKind::Payee, Some(f)) if f.payees.len() <= 6 => names(&f.payees),
        (
            SlotKind::Account
            | SlotKind::Card
            | SlotKind::Payee
            | SlotKind::Amount
            | SlotKind::Date
            | SlotKind::DateRange
            | SlotKind::Phone
            | SlotKind::Email
            | SlotKind::Contact,
            _,
        ) => Vec::new(),
    }
}

fn single_option(kind: SlotKind, facts: &CustomerFacts) -> Option<Value> {
    let only = |v: &[Named]| match v {
        [one] => Some(Value::Ref {
            id: one.id.clone(),
            name: one.name.clone(),
        }),
        _ => None,
    };
    match kind {
        SlotKind::Account => only(&facts.accounts),
        SlotKind::Card => only(&facts.cards),
        SlotKind::Payee
        | SlotKind::Amount
        | SlotKind::Date
        | SlotKind::DateRange
        | SlotKind::Phone
        | SlotKind::Email
        | SlotKind::Contact
        | SlotKind::Choice => None,
    }
}

/// Fills slots from a turn. The slot being asked for (`asking`) takes any
/// value of its kind; other slots only when their kind is unambiguous in
/// the flow (one slot of that kind). Returns messages about values that
/// were understood but refused.
fn fill_slots(
    flow: &Flow,
    active: &mut ActiveFlow,
    turn: &Turn,
    policy: &Policy,
    asking: Option<&str>,
) -> Vec<String> {
    let mut notes = Vec::new();
    for slot in &flow.slots {
        let is_asked = asking == Some(slot.name.as_str());
        let unique_kind = flow.slots.iter().filter(|s| s.kind == slot.kind).count() == 1;
        // Account and choice slots match words, so they listen only when asked
        // (or when the flow has one of them).
        if !is_asked && !unique_kind {
            continue;
        }
        match read_slot(slot, turn, policy, is_asked) {
            Fill::Filled(v) => {
                active.slots.insert(slot.name.clone(), v);
            }
            Fill::Invalid(msg) => notes.push(msg),
            Fill::Nothing => {}
        }
    }
    notes
}

fn entity_of(turn: &Turn, pick: impl Fn(&EntityValue) -> bool) -> Option<&Entity> {
    turn.entities.iter().find(|e| pick(&e.value))
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The customer's item named in the text: one match, or none.
fn named_in(text: &str, items: &[Named]) -> Option<Value> {
    let said = words(text);
    let hits: Vec<&Named> = items
        .iter()
        .filter(|n| {
            std::iter::once(&n.name).chain(n.aliases.iter()).any(|a| {
                let a = words(a);
                !a.is_empty() && said.windows(a.len()).any(|w| w == a.as_slice())
            })
        })
        .collect();
    match hits.as_slice() {
        [one] => Some(Value::Ref {
            id: one.id.clone(),
            name: one.name.clone(),
        }),
        _ => None,
    }
}

fn read_slot(slot: &SlotSpec, turn: &Turn, policy: &Policy, asked: bool) -> Fill {
    let currency = policy.currency.as_str();
    let value = match slot.kind {
        SlotKind::Amount => {
            let Some(e) = entity_of(turn, |v| matches!(v, EntityValue::Amount(_))) else {
                return Fill::Nothing;
            };
            let EntityValue::Amount(a) = &e.value else {
                return Fill::Nothing;
            };
            let code = a.currency.clone().unwrap_or_else(|| currency.to_owned());
            match a.minor_units(&code) {
                Some(minor) => Value::Money(Money {
                    minor,
                    currency: code,
                }),
                None => {
                    return Fill::Invalid(format!(
                        "{} has more decimal places than {code} allows.",
                        e.text
                    ));
                }
            }
        }
        SlotKind::Date => {
            match entity_of(turn, |v| matches!(v, EntityValue::Date(_))).map(|e| &e.value) {
                Some(EntityValue::Date(d)) => Value::Date { date: *d },
                _ => return Fill::Nothing,
            }
        }
        SlotKind::DateRange => {
            match entity_of(turn, |v| {
                matches!(v, EntityValue::DateRange(_) | EntityValue::Date(_))
            })
            .map(|e| &e.value)
            {
                Some(EntityValue::DateRange(r)) => Value::DateRange { range: *r },
                Some(EntityValue::Date(d)) => Value::DateRange {
                    range: DateRange { from: *d, to: *d },
                },
                _ => return Fill::Nothing,
            }
        }
        SlotKind::Payee => {
            match entity_of(turn, |v| matches!(v, EntityValue::Payee(_))).map(|e| &e.value) {
                Some(EntityValue::Payee(p)) if p.confusable => {
                    return Fill::Invalid(policy.texts.suspicious_payee.clone());
                }
                Some(EntityValue::Payee(p)) if turn.facts.payees.iter().any(|n| n.id == p.id) => {
                    Value::Ref {
                        id: p.id.clone(),
                        name: p.name.clone(),
                    }
                }
                _ if asked => match named_in(&turn.text, &turn.facts.payees) {
                    Some(v) => v,
                    None => return Fill::Nothing,
                },
                _ => return Fill::Nothing,
            }
        }
        SlotKind::Account => match named_in(&turn.text, &turn.facts.accounts) {
            Some(v) => v,
            None => return Fill::Nothing,
        },
        SlotKind::Card => {
            let by_digits = entity_of(turn, |v| matches!(v, EntityValue::Text(_)))
                .filter(|e| e.entity == bankbot_entities::EntityKind::CardLast4)
                .and_then(|e| named_in(&e.text, &turn.facts.cards));
            match by_digits.or_else(|| named_in(&turn.text, &turn.facts.cards)) {
                Some(v) => v,
                None => return Fill::Nothing,
            }
        }
        SlotKind::Phone | SlotKind::Email | SlotKind::Contact => {
            use bankbot_entities::EntityKind;
            let wanted: &[EntityKind] = match slot.kind {
                SlotKind::Phone => &[EntityKind::Phone],
                SlotKind::Email => &[EntityKind::Email],
                SlotKind::Contact
                | SlotKind::Amount
                | SlotKind::Date
                | SlotKind::DateRange
                | SlotKind::Payee
                | SlotKind::Account
                | SlotKind::Card
                | SlotKind::Choice => &[EntityKind::Phone, EntityKind::Email],
            };
            match turn
                .entities
                .iter()
                .find(|e| wanted.contains(&e.entity))
                .map(|e| &e.value)
            {
                Some(EntityValue::Text(t)) => Value::Text { text: t.clone() },
                _ => return Fill::Nothing,
            }
        }
        SlotKind::Choice => {
            if !asked {
                return Fill::Nothing;
            }
            let said = turn.text.trim().to_lowercase();
            let by_number = said
                .parse::<usize>()
                .ok()
                .and_then(|n| slot.options.get(n.wrapping_sub(1)));
            let by_text = slot
                .options
                .iter()
                .find(|o| said == o.to_lowercase() || said.contains(&o.to_lowercase()));
            match by_number.or(by_text) {
                Some(o) => Value::Text { text: o.clone() },
                None => return Fill::Nothing,
            }
        }
    };
    for (rule, message) in &slot.rules {
        if !rule_holds(rule, &value, turn) {
            return Fill::Invalid(message.clone());
        }
    }
    Fill::Filled(value)
}

fn rule_holds(rule: &Rule, value: &Value, turn: &Turn) -> bool {
    match (rule, value) {
        (Rule::Positive, Value::Money(m)) => m.minor > 0,
        (Rule::MaxAmount(max), Value::Money(m)) => bankbot_entities::minor_exponent(&m.currency)
            .and_then(|e| max.to_minor_units(e))
            .is_none_or(|limit| m.minor <= limit),
        (Rule::MinAmount(min), Value::Money(m)) => bankbot_entities::minor_exponent(&m.currency)
            .and_then(|e| min.to_minor_units(e))
            .is_none_or(|limit| m.minor >= limit),
        (Rule::NotPast, Value::Date { date }) => *date >= turn.today,
        (Rule::NotFuture, Value::Date { date }) => *date <= turn.today,
        (Rule::NotPast, Value::DateRange { range }) => range.to >= turn.today,
        (Rule::NotFuture, Value::DateRange { range }) => range.from <= turn.today,
        // A rule about another kind of value does not apply (the catalogue
        // check refuses such combinations).
        (
            Rule::Positive
            | Rule::MaxAmount(_)
            | Rule::MinAmount(_)
            | Rule::NotPast
            | Rule::NotFuture,
            _,
        ) => true,
    }
}
