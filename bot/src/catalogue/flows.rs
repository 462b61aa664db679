//! Compiles the `flow:` section of an intent file into the dialog engine's
//! [`Flow`], and the whole catalogue into [`Flows`]. Everything the engine
//! cannot run is an error at `file:line:col`: undefined slots, actions or
//! responses, unreachable responses, flows with no way out, money moved
//! without confirmation or step-up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bankbot_dialog::render::placeholders;
use bankbot_dialog::spec::{
    AuthLevel, EscalatePolicy, Flow, Flows, GlobalIntents, Operation, OutcomeKind, Policy,
    PolicyTexts, Priority, Rule, SlotKind, SlotSpec, Template,
};
use bankbot_models::entities::Decimal;

use super::files::{
    ActionName, AuthName, EscalateWhen, FlowSpec, OutcomeName, PriorityName, ResponseSpec,
    RuleName, SlotKindName,
};
use super::{Catalogue, Response, is_valid_intent_name, response};
use crate::diag::Diagnostic;
use crate::yaml::{Node, Pos};

fn kind(k: SlotKindName) -> SlotKind {
    match k {
        SlotKindName::Amount => SlotKind::Amount,
        SlotKindName::Date => SlotKind::Date,
        SlotKindName::DateRange => SlotKind::DateRange,
        SlotKindName::Payee => SlotKind::Payee,
        SlotKindName::Account => SlotKind::Account,
        SlotKindName::Card => SlotKind::Card,
        SlotKindName::Phone => SlotKind::Phone,
        SlotKindName::Email => SlotKind::Email,
        SlotKindName::Contact => SlotKind::Contact,
        SlotKindName::Choice => SlotKind::Choice,
    }
}

fn operation(a: ActionName) -> Operation {
    match a {
        ActionName::GetBalance => Operation::GetBalance,
        ActionName::ListTransactions => Operation::ListTransactions,
        ActionName::Transfer => Operation::Transfer,
        ActionName::BlockCard => Operation::BlockCard,
        ActionName::FreezeCard => Operation::FreezeCard,
        ActionName::UnfreezeCard => Operation::UnfreezeCard,
        ActionName::ReplaceCard => Operation::ReplaceCard,
        ActionName::CardDeliveryStatus => Operation::CardDeliveryStatus,
        ActionName::OpenDispute => Operation::OpenDispute,
        ActionName::UpdateContact => Operation::UpdateContact,
    }
}

fn outcome(o: OutcomeName) -> OutcomeKind {
    match o {
        OutcomeName::Success => OutcomeKind::Success,
        OutcomeName::InsufficientFunds => OutcomeKind::InsufficientFunds,
        OutcomeName::LimitExceeded => OutcomeKind::LimitExceeded,
        OutcomeName::Rejected => OutcomeKind::Rejected,
        OutcomeName::Unavailable => OutcomeKind::Unavailable,
        OutcomeName::Unknown => OutcomeKind::Unknown,
    }
}

fn priority(p: PriorityName) -> Priority {
    match p {
        PriorityName::Normal => Priority::Normal,
        PriorityName::High => Priority::High,
        PriorityName::Urgent => Priority::Urgent,
    }
}

fn template(r: &Response) -> Template {
    Template {
        text: r.text.clone(),
        quick_replies: r.quick_replies.iter().map(|q| q.payload.clone()).collect(),
    }
}

struct Ctx<'a> {
    path: &'a Path,
    diags: &'a mut Vec<Diagnostic>,
    errors: usize,
}

impl Ctx<'_> {
    fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.errors += 1;
        self.diags.push(Diagnostic::error(self.path, pos, msg));
    }
    fn warning(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(self.path, pos, msg));
    }
}

fn pos_of(node: Option<&Node>, fallback: Pos) -> Pos {
    node.map_or(fallback, |n| n.pos)
}

/// Compiles one intent's flow; `None` (with diagnostics) when it cannot run.
pub fn compile(
    intent: &str,
    spec: &FlowSpec,
    node: &Node,
    path: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<Flow> {
    let mut cx = Ctx {
        path,
        diags,
        errors: 0,
    };
    let at = |key: &str| pos_of(node.get(key), node.pos);
    let key_at = |key: &str| pos_of(node.key(key), node.pos);

    // Slots.
    let slot_nodes = node.get("slots").map(Node::items).unwrap_or_default();
    let mut slots = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (s, n) in spec.slots.iter().zip(slot_nodes) {
        let name_pos = pos_of(n.get("name"), n.pos);
        if !is_valid_intent_name(&s.name) {
            cx.error(
                name_pos,
                format!(
                    "invalid slot name `{}`: use lowercase letters, digits and `_`",
                    s.name
                ),
            );
        }
        if !names.insert(s.name.clone()) {
            cx.error(name_pos, format!("slot `{}` is defined twice", s.name));
        }
        let k = kind(s.kind);
        if k == SlotKind::Choice && s.options.is_empty() {
            cx.error(
                pos_of(n.get("type"), n.pos),
                format!("choice slot `{}` has no `options`", s.name),
            );
        }
        if k != SlotKind::Choice && !s.options.is_empty() {
            cx.error(
                pos_of(n.get("options"), n.pos),
                "`options` belong to `choice` slots only",
            );
        }
        if s.prompt.trim().is_empty() {
            cx.error(
                pos_of(n.get("prompt"), n.pos),
                format!("slot `{}` has an empty prompt", s.name),
            );
        }
        let rule_nodes = n.get("validate").map(Node::items).unwrap_or_default();
        let mut rules = Vec::new();
        for (r, rn) in s.validate.iter().zip(rule_nodes) {
            let rpos = rn.pos;
            let amount_rule = matches!(
                r.rule,
                RuleName::Positive | RuleName::MinAmount | RuleName::MaxAmount
            );
            let date_rule = matches!(r.rule, RuleName::NotPast | RuleName::NotFuture);
            if (amount_rule && k != SlotKind::Amount)
                || (date_rule && !matches!(k, SlotKind::Date | SlotKind::DateRange))
            {
                cx.error(
                    rpos,
                    format!("this rule does not apply to a `{}` slot", k.name()),
                );
                continue;
            }
            let limit = match (r.rule, &r.value) {
                (RuleName::MinAmount | RuleName::MaxAmount, Some(v)) => {
                    match Decimal::parse_plain(v.trim()) {
                        Some(d) => Some(d),
                        None => {
                            cx.error(
                                pos_of(rn.get("value"), rpos),
                                format!("`{v}` is not a decimal amount such as 10000 or 99.99"),
                            );
                            continue;
                        }
                    }
                }
                (RuleName::MinAmount | RuleName::MaxAmount, None) => {
                    cx.error(rpos, "`min_amount` and `max_amount` need a `value`");
                    continue;
                }
                (RuleName::Positive | RuleName::NotPast | RuleName::NotFuture, Some(_)) => {
                    cx.error(pos_of(rn.get("value"), rpos), "this rule takes no `value`");
                    continue;
                }
                (RuleName::Positive | RuleName::NotPast | RuleName::NotFuture, None) => None,
            };
            let rule = match (r.rule, limit) {
                (RuleName::Positive, _) => Rule::Positive,
                (RuleName::MinAmount, Some(d)) => Rule::MinAmount(d),
                (RuleName::MaxAmount, Some(d)) => Rule::MaxAmount(d),
                (RuleName::NotPast, _) => Rule::NotPast,
                (RuleName::NotFuture, _) => Rule::NotFuture,
                (RuleName::MinAmount | RuleName::MaxAmount, None) => continue,
            };
            rules.push((rule, r.message.trim().to_owned()));
        }
        slots.push(SlotSpec {
            name: s.name.clone(),
            kind: k,
            prompt: s.prompt.trim().to_owned(),
            reprompt: s.reprompt.as_ref().map(|r| r.trim().to_owned()),
            rules,
            options: s.options.clone(),
            optional: s.optional,
        });
    }
    let slot_kind = |name: &str| slots.iter().find(|s| s.name == name).map(|s| s.kind);

    // Replies, with their placeholders checked.
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    let check_text = |cx: &mut Ctx<'_>,
                      text: &str,
                      pos: Pos,
                      results: bool,
                      referenced: &mut BTreeSet<String>| {
        for p in placeholders(text) {
            if let Some(field) = p.strip_prefix("result.") {
                if !results {
                    cx.error(
                        pos,
                        format!("`{{result.{field}}}` is only known in `outcomes` replies"),
                    );
                }
                continue;
            }
            if slot_kind(&p).is_none() {
                cx.error(
                    pos,
                    format!(
                        "`{{{p}}}` names no slot of this flow (slots: {})",
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            referenced.insert(p);
        }
    };
    for (s, n) in spec.slots.iter().zip(slot_nodes) {
        check_text(
            &mut cx,
            &s.prompt,
            pos_of(n.get("prompt"), n.pos),
            false,
            &mut referenced,
        );
        if let Some(r) = &s.reprompt {
            check_text(
                &mut cx,
                r,
                pos_of(n.get("reprompt"), n.pos),
                false,
                &mut referenced,
            );
        }
    }
    let reply = |cx: &mut Ctx<'_>,
                 spec: &ResponseSpec,
                 pos: Pos,
                 results: bool,
                 referenced: &mut BTreeSet<String>|
     -> Option<Template> {
        match response(spec) {
            Ok(r) => {
                check_text(cx, &r.text, pos, results, referenced);
                Some(template(&r))
            }
            Err(m) => {
                cx.error(pos, m);
                None
            }
        }
    };
    let answer = spec
        .answer
        .as_ref()
        .and_then(|a| reply(&mut cx, a, at("answer"), false, &mut referenced));
    let confirm = spec
        .confirm
        .as_ref()
        .and_then(|c| reply(&mut cx, c, at("confirm"), false, &mut referenced));
    let mut outcomes = BTreeMap::new();
    let outcome_nodes = node.get("outcomes").map(Node::entries).unwrap_or_default();
    for ((name, r), (k, _)) in spec.outcomes.iter().zip(outcome_nodes) {
        if let Some(t) = reply(&mut cx, r, k.pos, true, &mut referenced) {
            outcomes.insert(outcome(*name), (t, k.pos));
        }
    }

    // The action and what it needs.
    let action = spec.action.map(operation);
    match action {
        Some(op) => {
            for (arg, want) in op.arguments() {
                match slot_kind(arg) {
                    None => cx.error(
                        at("action"),
                        format!(
                            "undefined slot: `{}` needs a slot `{arg}` of type `{}`",
                            op.name(),
                            want.name()
                        ),
                    ),
                    Some(k) if k != *want => cx.error(
                        at("action"),
                        format!(
                            "slot `{arg}` is a `{}`, but `{}` needs a `{}`",
                            k.name(),
                            op.name(),
                            want.name()
                        ),
                    ),
                    Some(_) => {
                        referenced.insert((*arg).to_owned());
                    }
                }
            }
            if op.moves_money() && confirm.is_none() {
                cx.error(at("action"), format!("`{}` moves money: the flow needs a `confirm` step that restates the values", op.name()));
            }
            if op.moves_money() && spec.requires_auth != AuthName::StepUp {
                cx.error(
                    at("action"),
                    format!("`{}` moves money: set `requires_auth: step_up`", op.name()),
                );
            }
            if !outcomes.contains_key(&OutcomeKind::Success) {
                cx.error(
                    key_at("action"),
                    format!(
                        "no way out: `{}` has no `success` response under `outcomes`",
                        op.name()
                    ),
                );
            }
            for (o, (_, pos)) in &outcomes {
                if !op.outcomes().contains(o) {
                    cx.error(
                        *pos,
                        format!(
                            "unreachable response: `{}` never ends in `{}`",
                            op.name(),
                            o.name()
                        ),
                    );
                }
            }
        }
        None => {
            if let Some((_, pos)) = outcomes.values().next() {
                cx.error(*pos, "unreachable response: `outcomes` without an `action`");
            }
            if confirm.is_some() {
                cx.error(
                    at("confirm"),
                    "unreachable state: `confirm` without an `action` confirms nothing",
                );
            }
            if !slots.is_empty() {
                cx.error(
                    key_at("slots"),
                    "no way out: the flow collects slots but has no `action` to use them",
                );
            }
            if answer.is_none() && slots.is_empty() {
                cx.error(
                    node.pos,
                    "the flow has no `answer`, `slots` or `action`: it would say nothing",
                );
            }
        }
    }
    if spec.requires_auth == AuthName::StepUp && action.is_none() {
        cx.error(
            at("requires_auth"),
            "unreachable state: step-up without an `action` protects nothing",
        );
    }
    for (s, n) in spec.slots.iter().zip(slot_nodes) {
        if !referenced.contains(&s.name) {
            cx.warning(
                pos_of(n.get("name"), n.pos),
                format!(
                    "slot `{}` is collected but never used by the action or a reply",
                    s.name
                ),
            );
        }
    }
    let threshold = spec.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !(threshold > 0.0 && threshold <= 1.0) {
        cx.error(at("threshold"), "`threshold` must be above 0 and at most 1");
    }
    if let Some(skill) = &spec.escalate.skill
        && !crate::escalation::valid_skill(skill)
    {
        let pos = node
            .get("escalate")
            .map(|e| pos_of(e.get("skill"), e.pos))
            .unwrap_or(node.pos);
        cx.error(
            pos,
            format!("`{skill}` is not a queue name: 1-32 lowercase letters, digits, '-' or '_'"),
        );
    }
    let (p, skill) = (
        priority(spec.escalate.priority),
        spec.escalate
            .skill
            .clone()
            .unwrap_or_else(|| "general".into()),
    );
    let escalate = match spec.escalate.when {
        EscalateWhen::OnRequest => EscalatePolicy::OnRequest { priority: p, skill },
        EscalateWhen::Offer => EscalatePolicy::Offer { priority: p, skill },
        EscalateWhen::Immediately => EscalatePolicy::Immediately { priority: p, skill },
    };
    (cx.errors == 0).then(|| Flow {
        intent: intent.to_owned(),
        slots,
        confirm,
        action,
        answer,
        variants: Vec::new(),
        outcomes: outcomes.into_iter().map(|(k, (t, _))| (k, t)).collect(),
        requires_auth: match spec.requires_auth {
            AuthName::Session => AuthLevel::Session,
            AuthName::StepUp => AuthLevel::StepUp,
        },
        escalate,
        threshold,
    })
}

/// Confidence needed to act on an intent without its own threshold.
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Confidence needed to start a flow that moves money.
pub const MONEY_THRESHOLD: f32 = 0.7;

fn label(name: &str) -> String {
    let spaced = name.replace('_', " ");
    let mut c = spaced.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => spaced,
    }
}

/// The engine's own replies (a later issue makes them configurable per bank).
pub fn default_policy() -> Policy {
    Policy {
        intents: GlobalIntents {
            cancel: "cancel".into(),
            human: "talk_to_human".into(),
            help: "help".into(),
            affirm: "affirm".into(),
            deny: "deny".into(),
        },
        default_threshold: DEFAULT_THRESHOLD,
        money_threshold: MONEY_THRESHOLD,
        ambiguity_gap: 0.2,
        max_failures: 2,
        max_step_up_failures: 3,
        max_slot_attempts: 3,
        currency: "GBP".into(),
        texts: PolicyTexts {
            out_of_scope: "Sorry, that's not something I can help with here. I can help with your accounts, payments and cards.".into(),
            not_understood: "Sorry, I didn't quite get that. Could you say it another way?".into(),
            did_you_mean: "Did you mean {result.a} or {result.b}?".into(),
            offer_human: "Would you like to talk to someone from our team?".into(),
            escalating: "I'm passing you to one of our team now. They'll see everything we've discussed.".into(),
            cancelled: "OK, I've stopped that. Nothing has been changed.".into(),
            nothing_to_cancel: "There's nothing in progress to cancel.".into(),
            help: "I can check balances and transactions, send money to your saved payees, block or freeze cards, track a new card, dispute a payment, report fraud and update your contact details. Say \"cancel\" to stop anything, or \"talk to a person\" at any time.".into(),
            resume: "Now, back to where we were:".into(),
            step_up: "For your security I've sent a one-time code to your registered phone. Please type it here.".into(),
            step_up_failed: "That code didn't match. I've sent you a new one; please type it here.".into(),
            step_up_locked: "That code didn't match again, so I've stopped for your security. Nothing has been changed.".into(),
            confirm_again: "I've updated that.".into(),
            too_many_attempts: "I'm having trouble with that, so I've stopped. Nothing has been changed.".into(),
            suspicious_payee: "That name contains look-alike characters, so I can't match it to a saved payee. Please type the payee's name again.".into(),
            default_outcomes: BTreeMap::from([
                (OutcomeKind::Unavailable, "Sorry, I can't reach our systems right now, so nothing has been done. Please try again in a few minutes.".to_owned()),
                (OutcomeKind::Unknown, "We're confirming this with our systems and will tell you the result here as soon as we have it. Please don't repeat it in the meantime.".to_owned()),
                (OutcomeKind::Rejected, "Sorry, that couldn't be done.".to_owned()),
                (OutcomeKind::InsufficientFunds, "There isn't enough money in that account for this.".to_owned()),
                (OutcomeKind::LimitExceeded, "That's over your limit, so nothing has been done.".to_owned()),
            ]),
        },
    }
}

impl Catalogue {
    /// Every intent's flow: compiled flows as written, FAQ flows that answer
    /// with the intent's responses, and `bot.no_response` for intents with
    /// neither. The scope statement is the `out_of_scope` intent's first
    /// response, else `bot.fallback`.
    pub fn flows(&self, bot: &crate::settings::BotSettings) -> Flows {
        let mut flows = BTreeMap::new();
        let mut labels = BTreeMap::new();
        for i in &self.intents {
            labels.insert(i.name.clone(), label(&i.name));
            let flow = match &i.flow {
                Some(f) => f.clone(),
                None => Flow {
                    intent: i.name.clone(),
                    slots: Vec::new(),
                    confirm: None,
                    action: None,
                    answer: Some(
                        i.responses
                            .first()
                            .map_or_else(|| Template::text(&bot.no_response), template),
                    ),
                    variants: i.responses.iter().map(template).collect(),
                    outcomes: BTreeMap::new(),
                    requires_auth: AuthLevel::Session,
                    escalate: EscalatePolicy::OnRequest {
                        priority: Priority::Normal,
                        skill: "general".into(),
                    },
                    threshold: DEFAULT_THRESHOLD,
                },
            };
            flows.insert(i.name.clone(), flow);
        }
        let mut policy = default_policy();
        policy.texts.out_of_scope = self
            .out_of_scope
            .as_ref()
            .and_then(|i| i.responses.first())
            .map_or_else(|| bot.fallback.clone(), |r| r.text.clone());
        let quick_reply_titles = self
            .intents
            .iter()
            .chain(self.out_of_scope.as_ref())
            .flat_map(|i| i.responses.iter())
            .flat_map(|r| r.quick_replies.iter())
            .filter(|q| q.title != q.payload)
            .map(|q| (q.payload.clone(), q.title.clone()))
            .collect();
        Flows {
            flows,
            policy,
            labels,
            quick_reply_titles,
        }
    }
}
