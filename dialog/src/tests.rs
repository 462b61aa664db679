use std::collections::BTreeMap;

use bankbot_entities::{self as entities, Context, Date, Decimal, SavedPayee};

use crate::spec::*;
use crate::state::*;
use crate::{HUMAN_QUICK_REPLY, step};

fn today() -> Date {
    Date::parse_iso("2024-03-13").expect("valid")
}

fn tmpl(s: &str) -> Template {
    Template::text(s)
}

fn flows() -> Flows {
    let mut flows = BTreeMap::new();
    let slot = |name: &str, kind: SlotKind, prompt: &str| SlotSpec {
        name: name.into(),
        kind,
        prompt: prompt.into(),
        reprompt: None,
        rules: vec![],
        options: vec![],
        optional: false,
    };
    let mut amount = slot(
        "amount",
        SlotKind::Amount,
        "How much would you like to send?",
    );
    amount.rules = vec![
        (Rule::Positive, "The amount must be more than zero.".into()),
        (
            Rule::MaxAmount(Decimal::parse_plain("1000").expect("valid")),
            "You can send up to £1,000 here.".into(),
        ),
    ];
    flows.insert(
        "transfer_money".to_owned(),
        Flow {
            intent: "transfer_money".into(),
            slots: vec![
                amount,
                slot("payee", SlotKind::Payee, "Who to?"),
                slot("from", SlotKind::Account, "From which account?"),
            ],
            confirm: Some(tmpl("Send {amount} to {payee} from {from}?")),
            action: Some(Operation::Transfer),
            answer: None,
            variants: vec![],
            outcomes: BTreeMap::from([
                (
                    OutcomeKind::Success,
                    tmpl("Done: {amount} is on its way to {payee}. Ref {result.reference}."),
                ),
                (
                    OutcomeKind::InsufficientFunds,
                    tmpl("There isn't enough in {from} for that."),
                ),
            ]),
            requires_auth: AuthLevel::StepUp,
            escalate: EscalatePolicy::OnRequest {
                priority: Priority::Normal,
                skill: "general".into(),
            },
            threshold: 0.5,
        },
    );
    flows.insert(
        "check_balance".to_owned(),
        Flow {
            intent: "check_balance".into(),
            slots: vec![slot("account", SlotKind::Account, "Which account?")],
            confirm: None,
            action: Some(Operation::GetBalance),
            answer: None,
            variants: vec![],
            outcomes: BTreeMap::from([(OutcomeKind::Success, tmpl("{account}: {result.balance}"))]),
            requires_auth: AuthLevel::Session,
            escalate: EscalatePolicy::OnRequest {
                priority: Priority::Normal,
                skill: "general".into(),
            },
            threshold: 0.5,
        },
    );
    flows.insert(
        "card_lost_stolen".to_owned(),
        Flow {
            intent: "card_lost_stolen".into(),
            slots: vec![slot("card", SlotKind::Card, "Which card?")],
            confirm: None,
            action: Some(Operation::BlockCard),
            answer: Some(tmpl("I'll block it right away.")),
            variants: vec![],
            outcomes: BTreeMap::from([(OutcomeKind::Success, tmpl("{card} is blocked."))]),
            requires_auth: AuthLevel::Session,
            escalate: EscalatePolicy::Offer {
                priority: Priority::Urgent,
                skill: "cards".into(),
            },
            threshold: 0.5,
        },
    );
    flows.insert(
        "branch_hours".to_owned(),
        Flow {
            intent: "branch_hours".into(),
            slots: vec![],
            confirm: None,
            action: None,
            answer: Some(tmpl("Branches open 9 to 5, Monday to Saturday.")),
            variants: vec![],
            outcomes: BTreeMap::new(),
            requires_auth: AuthLevel::Session,
            escalate: EscalatePolicy::OnRequest {
                priority: Priority::Normal,
                skill: "general".into(),
            },
            threshold: 0.5,
        },
    );
    let labels: BTreeMap<String, String> = [
        ("transfer_money", "Send money"),
        ("check_balance", "Check a balance"),
        ("card_lost_stolen", "Lost or stolen card"),
        ("branch_hours", "Branch hours"),
        ("cancel", "Cancel"),
        ("talk_to_human", "Talk to a person"),
        ("help", "Help"),
        ("affirm", "Yes"),
        ("deny", "No"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    Flows {
        flows,
        labels,
        quick_reply_titles: BTreeMap::new(),
        policy: Policy {
            intents: GlobalIntents {
                cancel: "cancel".into(),
                human: "talk_to_human".into(),
                help: "help".into(),
                affirm: "affirm".into(),
                deny: "deny".into(),
            },
            default_threshold: 0.5,
            money_threshold: 0.7,
            ambiguity_gap: 0.2,
            max_failures: 2,
            max_step_up_failures: 3,
            max_slot_attempts: 3,
            currency: "GBP".into(),
            texts: PolicyTexts {
                out_of_scope: "I can only help with banking.".into(),
                not_understood: "Sorry, I didn't get that.".into(),
                did_you_mean: "Did you mean {result.a} or {result.b}?".into(),
                offer_human: "Would you like to talk to a person?".into(),
                escalating: "I'm passing you to a colleague.".into(),
                cancelled: "OK, I've cancelled that.".into(),
                nothing_to_cancel: "There's nothing to cancel.".into(),
                help: "I can check balances, send money and help with cards.".into(),
                resume: "Back to where we were:".into(),
                step_up: "I've sent you a code. Please type it in.".into(),
                step_up_failed: "That code didn't match; I've sent a new one.".into(),
                step_up_locked: "That's too many wrong codes, so I've stopped.".into(),
                confirm_again: "Updated.".into(),
                too_many_attempts: "Let's stop there.".into(),
                suspicious_payee: "That name has look-alike letters; please type it again.".into(),
                default_outcomes: BTreeMap::from([
                    (
                        OutcomeKind::Unavailable,
                        "Our systems are busy; nothing was done.".to_owned(),
                    ),
                    (
                        OutcomeKind::Unknown,
                        "We're confirming this with the bank and will tell you the result."
                            .to_owned(),
                    ),
                ]),
            },
        },
    }
}

fn facts() -> CustomerFacts {
    let n = |id: &str, name: &str, aliases: &[&str]| Named {
        id: id.into(),
        name: name.into(),
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
    };
    CustomerFacts {
        accounts: vec![
            n("acc-1", "Current account", &["current"]),
            n("acc-2", "Savings", &["savings", "saver"]),
        ],
        cards: vec![n("card-1", "Visa debit ending 4471", &["4471", "visa"])],
        payees: vec![n("p-mum", "Mum", &[]), n("p-pierre", "Pierre Dubois", &[])],
        unavailable: false,
    }
}

/// A turn as the server builds it: the real entity extractors with the
/// customer's payees.
fn turn(text: &str, ranking: &[(&str, f32)]) -> Event {
    let mut ctx = Context::new(today());
    ctx.payees = facts()
        .payees
        .iter()
        .map(|p| SavedPayee {
            id: p.id.clone(),
            name: p.name.clone(),
            aliases: vec![],
        })
        .collect();
    Event::Turn(Turn {
        text: text.into(),
        ranking: ranking.iter().map(|(i, c)| ((*i).to_owned(), *c)).collect(),
        out_of_scope: ranking.first().is_some_and(|(i, _)| *i == "out_of_scope"),
        entities: entities::extract(text, &ctx),
        facts: facts(),
        today: today(),
    })
}

fn replies(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { text, .. } => Some(text.clone()),
            Action::Call { .. } | Action::RequestStepUp { .. } | Action::Escalate { .. } => None,
        })
        .collect()
}

struct Convo {
    flows: Flows,
    state: State,
}

impl Convo {
    fn new() -> Convo {
        Convo {
            flows: flows(),
            state: State::default(),
        }
    }
    fn send(&mut self, e: Event) -> Vec<Action> {
        let (s, a) = step(&self.flows, &self.state, &e);
        // The state survives storage.
        let json = serde_json::to_string(&s).expect("serialisable");
        self.state = serde_json::from_str(&json).expect("round trip");
        assert_eq!(self.state, s);
        a
    }
    fn say(&mut self, text: &str, ranking: &[(&str, f32)]) -> Vec<Action> {
        self.send(turn(text, ranking))
    }
}

#[test]
fn the_compiled_flows_are_valid() {
    assert_eq!(flows().validate(), Ok(()));
    let mut f = flows();
    if let Some(t) = f.flows.get_mut("transfer_money") {
        t.confirm = None;
    }
    let errs = f.validate().expect_err("money flow without confirmation");
    assert!(
        errs.iter()
            .any(|e| e.to_string().contains("no confirmation")),
        "{errs:?}"
    );
}

#[test]
fn transfer_collects_confirms_steps_up_and_acts_once() {
    let mut c = Convo::new();
    let a = c.say("send £50 to Mum", &[("transfer_money", 0.93)]);
    assert_eq!(replies(&a), vec!["From which account?"]);
    let Action::Reply { quick_replies, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(
        quick_replies,
        &vec!["Current account".to_owned(), "Savings".to_owned()]
    );
    let a = c.say("the current one", &[("check_balance", 0.4)]);
    assert_eq!(
        replies(&a),
        vec!["Send £50.00 to Mum from Current account?"]
    );
    let a = c.say("yes", &[("affirm", 0.97)]);
    assert!(matches!(
        a[0],
        Action::RequestStepUp {
            operation: Operation::Transfer
        }
    ));
    let a = c.send(Event::StepUp { verified: true });
    let Action::Call {
        call,
        operation,
        args,
    } = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!(*operation, Operation::Transfer);
    assert_eq!(
        args["amount"],
        Value::Money(Money {
            minor: 5000,
            currency: "GBP".into()
        })
    );
    assert_eq!(
        args["payee"],
        Value::Ref {
            id: "p-mum".into(),
            name: "Mum".into()
        }
    );
    let outcome = Outcome {
        kind: OutcomeKind::Success,
        data: BTreeMap::from([("reference".to_owned(), "TX-1".to_owned())]),
    };
    let a = c.send(Event::Connector {
        call: *call,
        outcome: outcome.clone(),
    });
    assert_eq!(
        replies(&a),
        vec!["Done: £50.00 is on its way to Mum. Ref TX-1."]
    );
    assert_eq!(c.state.active, None);
    // A repeated outcome does nothing.
    assert!(
        c.send(Event::Connector {
            call: *call,
            outcome
        })
        .is_empty()
    );
}

#[test]
fn a_bank_outage_ends_a_flow_that_needs_the_customers_accounts() {
    let mut c = Convo::new();
    let Event::Turn(mut t) = turn("send £50 to Mum", &[("transfer_money", 0.93)]) else {
        panic!()
    };
    t.facts = CustomerFacts {
        unavailable: true,
        ..CustomerFacts::default()
    };
    let a = c.send(Event::Turn(t));
    let said = replies(&a);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(!said[0].contains("account?"), "not asked: {said:?}");
    assert!(c.state.active.is_none(), "the flow ended");
    assert!(c.state.human_offered.is_some(), "a person is offered");
    assert!(
        !a.iter().any(|x| matches!(x, Action::Call { .. })),
        "nothing was called"
    );
}

#[test]
fn a_correction_at_confirmation_updates_and_restates() {
    let mut c = Convo::new();
    c.say("send £50 to Mum from savings", &[("transfer_money", 0.9)]);
    let a = c.say("no, make it 60", &[("deny", 0.6)]);
    assert_eq!(
        replies(&a),
        vec!["Updated.", "Send £60.00 to Mum from Savings?"]
    );
    let a = c.say("no", &[("deny", 0.95)]);
    assert_eq!(replies(&a), vec!["OK, I've cancelled that."]);
    assert_eq!(c.state.active, None);
}

#[test]
fn slot_validation_reprompts_with_the_rule() {
    let mut c = Convo::new();
    c.say("I want to send money", &[("transfer_money", 0.9)]);
    let a = c.say("5000 pounds", &[("transfer_money", 0.5)]);
    assert_eq!(
        replies(&a),
        vec!["You can send up to £1,000 here. How much would you like to send?"]
    );
    let a = c.say("£20", &[("transfer_money", 0.4)]);
    assert_eq!(replies(&a), vec!["Who to?"]);
}

#[test]
fn an_faq_mid_flow_is_answered_and_the_flow_resumes() {
    let mut c = Convo::new();
    c.say("send money to Pierre", &[("transfer_money", 0.9)]);
    let before = c.state.active.clone();
    let a = c.say("what time do branches open", &[("branch_hours", 0.92)]);
    assert_eq!(
        replies(&a),
        vec![
            "Branches open 9 to 5, Monday to Saturday.",
            "Back to where we were: How much would you like to send?"
        ]
    );
    assert_eq!(c.state.active, before);
}

#[test]
fn cancel_and_help_work_on_every_turn() {
    let mut c = Convo::new();
    c.say("send money", &[("transfer_money", 0.9)]);
    let a = c.say("help", &[("help", 0.9)]);
    assert_eq!(
        replies(&a)[0],
        "I can check balances, send money and help with cards."
    );
    let a = c.say("forget it", &[("cancel", 0.9)]);
    assert_eq!(replies(&a), vec!["OK, I've cancelled that."]);
    let a = c.say("cancel", &[("cancel", 0.9)]);
    assert_eq!(replies(&a), vec!["There's nothing to cancel."]);
}

#[test]
fn low_confidence_asks_and_repeated_failure_offers_a_person() {
    let mut c = Convo::new();
    let a = c.say(
        "card money thing",
        &[("card_lost_stolen", 0.41), ("transfer_money", 0.35)],
    );
    assert_eq!(
        replies(&a),
        vec!["Did you mean Lost or stolen card or Send money?"]
    );
    let a = c.say("Send money", &[("transfer_money", 0.2)]);
    assert_eq!(replies(&a), vec!["How much would you like to send?"]);
    let mut c = Convo::new();
    c.say("blah", &[("branch_hours", 0.2)]);
    let a = c.say("what's the weather", &[("out_of_scope", 0.9)]);
    assert_eq!(
        replies(&a),
        vec!["I can only help with banking. Would you like to talk to a person?"]
    );
    let a = c.say(HUMAN_QUICK_REPLY, &[("talk_to_human", 0.6)]);
    assert!(matches!(
        a.last(),
        Some(Action::Escalate {
            reason: EscalationReason::CustomerAsked,
            ..
        })
    ));
    assert!(c.state.escalated);
    // While a person has it, the bot is quiet.
    assert!(c.say("hello?", &[("greet", 0.9)]).is_empty());
    let a = c.send(Event::HandedBack {
        intent: Some("check_balance".into()),
    });
    assert_eq!(replies(&a), vec!["Which account?"]);
}

#[test]
fn money_needs_more_confidence_than_other_intents() {
    let mut c = Convo::new();
    let a = c.say("send", &[("transfer_money", 0.6), ("check_balance", 0.1)]);
    assert_eq!(replies(&a), vec!["Sorry, I didn't get that."]);
    let a = c.say("balance", &[("check_balance", 0.6)]);
    assert_eq!(replies(&a), vec!["Which account?"]);
}

#[test]
fn wrong_codes_lock_the_flow() {
    let mut c = Convo::new();
    c.say("send £10 to Mum from current", &[("transfer_money", 0.9)]);
    c.say("yes", &[("affirm", 0.9)]);
    for _ in 0..2 {
        let a = c.send(Event::StepUp { verified: false });
        assert!(matches!(a[0], Action::RequestStepUp { .. }));
    }
    let a = c.send(Event::StepUp { verified: false });
    assert_eq!(
        replies(&a),
        vec!["That's too many wrong codes, so I've stopped."]
    );
    assert_eq!(c.state.active, None);
    assert!(c.state.human_offered.is_some());
}

#[test]
fn lost_card_blocks_at_once_and_offers_a_person_urgently() {
    let mut c = Convo::new();
    let a = c.say("I lost my card", &[("card_lost_stolen", 0.95)]);
    assert_eq!(replies(&a), vec!["I'll block it right away."]);
    let Some(Action::Call {
        call,
        operation: Operation::BlockCard,
        args,
    }) = a.get(1)
    else {
        panic!("{a:?}")
    };
    assert_eq!(
        args["card"],
        Value::Ref {
            id: "card-1".into(),
            name: "Visa debit ending 4471".into()
        }
    );
    let a = c.send(Event::Connector {
        call: *call,
        outcome: Outcome {
            kind: OutcomeKind::Success,
            data: BTreeMap::new(),
        },
    });
    let Action::Reply {
        text,
        quick_replies,
    } = &a[0]
    else {
        panic!()
    };
    assert_eq!(text, "Visa debit ending 4471 is blocked.");
    assert_eq!(quick_replies, &vec![HUMAN_QUICK_REPLY.to_owned()]);
    let a = c.say("yes please", &[("affirm", 0.9)]);
    assert!(matches!(a.last(), Some(Action::Escalate { .. })));
}

#[test]
fn an_unknown_payment_outcome_is_never_called_a_failure() {
    let mut c = Convo::new();
    c.say("send £10 to Mum from current", &[("transfer_money", 0.9)]);
    c.say("yes", &[("affirm", 0.9)]);
    let a = c.send(Event::StepUp { verified: true });
    let Action::Call { call, .. } = &a[0] else {
        panic!()
    };
    let a = c.send(Event::Connector {
        call: *call,
        outcome: Outcome {
            kind: OutcomeKind::Unknown,
            data: BTreeMap::new(),
        },
    });
    let text = replies(&a).join(" ");
    assert!(text.contains("confirming"), "{text}");
    assert!(!text.to_lowercase().contains("fail"));
}

#[test]
fn lookalike_payees_are_refused() {
    let mut c = Convo::new();
    c.say("send £10 from current", &[("transfer_money", 0.9)]);
    let a = c.say("Мum", &[("transfer_money", 0.3)]);
    assert!(replies(&a)[0].contains("look-alike"), "{a:?}");
    assert!(
        !c.state
            .active
            .as_ref()
            .is_some_and(|f| f.slots.contains_key("payee"))
    );
}

#[test]
fn out_of_scope_mid_task_says_so_and_resumes() {
    let mut c = Convo::new();
    c.say("send money to Pierre", &[("transfer_money", 0.9)]);
    let a = c.say("who won the match", &[("out_of_scope", 0.9)]);
    assert_eq!(
        replies(&a),
        vec![
            "I can only help with banking.",
            "Back to where we were: How much would you like to send?"
        ]
    );
    assert!(
        matches!(&c.state.active, Some(f) if f.stage == Stage::Collecting { slot: "amount".into(), attempts: 0 })
    );
}
