use super::*;

const MODELINE: &str = "# yaml-language-server: $schema=intent.schema.json\n";

fn ten(prefix: &str) -> String {
    (0..10)
        .map(|i| format!("  - {prefix} example number {i}\n"))
        .collect()
}

/// Writes files into a fresh directory and loads it; diagnostics are rendered
/// with the directory replaced by `DIR`.
fn load(files: &[(&str, &[u8])]) -> (Option<Catalogue>, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let (cat, diags) = match load_dir(dir.path()) {
        Ok((c, w)) => (Some(c), w),
        Err(d) => (None, d.0),
    };
    let text = diags
        .iter()
        .map(|d| {
            d.to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
        .collect::<Vec<_>>()
        .join("\n");
    (cat, text)
}

fn intent(name: &str) -> String {
    format!("{MODELINE}intent: {name}\nexamples:\n{}", ten(name))
}

#[test]
fn the_minimal_file_is_a_complete_intent() {
    let minimal = "intent: card_arrival\nexamples:\n  - When will my card arrive?\n  - my new card still hasn't come\n";
    let other = intent("greet");
    let (cat, diags) = load(&[
        ("card_arrival.yaml", minimal.as_bytes()),
        ("greet.yaml", other.as_bytes()),
    ]);
    let cat = cat.expect("minimal file must load");
    assert_eq!(cat.intents.len(), 2);
    let card = &cat.intents[0];
    assert_eq!(card.name, "card_arrival");
    assert_eq!(card.examples[1].text(), "my new card still hasn't come");
    assert_eq!(card.examples[1].source.pos, Pos { line: 4, col: 5 });
    // Only advice, no errors.
    insta::assert_snapshot!(diags, @r"
    DIR/card_arrival.yaml:1:1: warning: no `# yaml-language-server: $schema=intent.schema.json` line: editors cannot validate this file
    DIR/card_arrival.yaml:2:1: warning: only 2 example(s): intents need at least 10 varied examples to be recognised reliably
    ");
}

#[test]
fn errors_point_at_file_line_and_column() {
    let typo = format!("{MODELINE}intent: card_lost\nexmples:\n  - lost it\n");
    let empty = format!("{MODELINE}intent: card_found\nexamples: []\n");
    let bad_ann = format!(
        "{MODELINE}intent: pay\nexamples:\n  - send [50 euros(amount) to Anna\n  - 'pay [Bob](payee'\n"
    );
    let bad_name = format!("{MODELINE}intent: Pay-Now\nexamples:\n  - x\n");
    let (cat, diags) = load(&[
        ("card_lost.yaml", typo.as_bytes()),
        ("card_found.yaml", empty.as_bytes()),
        ("pay.yaml", bad_ann.as_bytes()),
        ("pay_now.yaml", bad_name.as_bytes()),
        ("greet.yaml", intent("greet").as_bytes()),
    ]);
    assert!(cat.is_none());
    insta::assert_snapshot!(diags, @r"
    DIR/card_found.yaml:3:11: error: `examples` is empty: an intent needs at least one example
    DIR/card_lost.yaml:3:1: error: unknown key `exmples` (did you mean `examples`?); allowed keys: `intent`, `description`, `examples`, `responses`, `flow`
    DIR/pay.yaml:3:1: warning: only 2 example(s): intents need at least 10 varied examples to be recognised reliably
    DIR/pay.yaml:4:10: error: malformed annotation: `[` is never closed (write `\[` for a literal bracket)
    DIR/pay.yaml:5:15: error: malformed annotation: missing `)` after the entity name
    DIR/pay_now.yaml:2:9: error: invalid intent name `Pay-Now`: use lowercase letters, digits and `_`, starting with a letter (at most 64)
    DIR/pay_now.yaml:2:9: warning: file name does not match the intent name `Pay-Now`
    DIR/pay_now.yaml:3:1: warning: only 1 example(s): intents need at least 10 varied examples to be recognised reliably
    ");
}

#[test]
fn duplicate_intents_and_repeated_examples() {
    let a = intent("greet");
    let b = format!("{MODELINE}intent: greet\nexamples:\n{}", ten("other"));
    let c = format!(
        "{MODELINE}intent: bye\nexamples:\n{}  - Greet example number 3!\n",
        ten("bye")
    );
    let (cat, diags) = load(&[
        ("greet.yaml", a.as_bytes()),
        ("x/greet.yaml", b.as_bytes()),
        ("bye.yaml", c.as_bytes()),
    ]);
    assert!(cat.is_none());
    insta::assert_snapshot!(diags, @r"
    DIR/greet.yaml:7:5: warning: the same example is in intent `bye` (DIR/bye.yaml:14:5): the model cannot tell them apart
    DIR/x/greet.yaml:2:9: error: intent `greet` is already defined at DIR/greet.yaml:2:9
    ");
}

#[test]
fn unreadable_files_get_specific_errors() {
    let mut invalid_utf8 = b"intent: a\nexamples:\n  - caf".to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    let bomb = "a: &a [x, x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n";
    let deep = format!("intent: {}{}\n", "[".repeat(200), "]".repeat(200));
    let (cat, diags) = load(&[
        ("empty.yaml", b"   \n"),
        ("comments.yaml", b"# nothing here\n"),
        ("binary.yaml", b"intent: a\n\x00\x01\x02"),
        ("utf8.yaml", &invalid_utf8),
        ("bomb.yaml", bomb.as_bytes()),
        ("deep.yaml", deep.as_bytes()),
        ("list.yaml", b"- just\n- a list\n"),
        ("syntax.yaml", b"intent: a\nexamples:\n  - 'unterminated\n"),
    ]);
    assert!(cat.is_none());
    insta::assert_snapshot!(diags, @r"
    DIR/binary.yaml:2:1: error: file contains a NUL byte: this is a binary file, not YAML
    DIR/bomb.yaml:1:7: error: anchors (`&name`) are not supported: write the value out
    DIR/comments.yaml:1:1: error: file has no content (only comments)
    DIR/deep.yaml:1:40: error: nesting deeper than 32 levels
    DIR/empty.yaml:1:1: error: file is empty
    DIR/list.yaml:1:1: error: expected a mapping of `key: value` lines, found a list
    DIR/syntax.yaml:3:5: error: YAML syntax error: while scanning a quoted scalar, found unexpected end of stream
    DIR/utf8.yaml:3:8: error: invalid UTF-8: save the file as UTF-8
    ");
}

#[test]
fn a_byte_order_mark_is_not_content() {
    let file = format!("\u{FEFF}{MODELINE}intent: card_arrival\nexamples:\n  - where is my card\n");
    let other = intent("greet");
    let (cat, diags) = load(&[
        ("card_arrival.yaml", file.as_bytes()),
        ("greet.yaml", other.as_bytes()),
    ]);
    assert!(!diags.contains("error"), "{diags}");
    assert_eq!(cat.unwrap().intents[0].name, "card_arrival");
}

#[test]
fn out_of_scope_is_kept_apart_and_oos_is_an_alias() {
    let oos = format!("{MODELINE}intent: oos\nexamples:\n  - what's the weather\n");
    let (cat, _) = load(&[
        ("oos.yaml", oos.as_bytes()),
        ("greet.yaml", intent("greet").as_bytes()),
        ("bye.yaml", intent("bye").as_bytes()),
    ]);
    let cat = cat.unwrap();
    assert_eq!(
        cat.intents
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        ["bye", "greet"]
    );
    assert_eq!(cat.out_of_scope.as_ref().unwrap().examples.len(), 1);
    let labelled = cat.labelled();
    assert!(labelled.contains(&("what's the weather".to_owned(), OUT_OF_SCOPE.to_owned())));
    assert_eq!(cat.example_count(), 21);
}

#[test]
fn a_catalogue_needs_two_intents() {
    let (cat, diags) = load(&[("greet.yaml", intent("greet").as_bytes())]);
    assert!(cat.is_none());
    assert!(diags.contains("at least 2 intents"), "{diags}");
    let (cat, diags) = load(&[("notes.txt", b"hello")]);
    assert!(cat.is_none());
    assert!(diags.contains("no intent files"), "{diags}");
}

#[test]
fn data_hash_ignores_layout_and_markup() {
    let a1 = format!(
        "{MODELINE}intent: pay\nexamples:\n  - send [5 euros](amount) now\n{}",
        ten("pay")
    );
    let a2 = format!(
        "intent: pay\n# a comment\nexamples:\n{}  - send 5 euros now\n",
        ten("pay")
    );
    let g = intent("greet");
    let (c1, _) = load(&[("pay.yaml", a1.as_bytes()), ("greet.yaml", g.as_bytes())]);
    let (c2, _) = load(&[("sub/p.yaml", a2.as_bytes()), ("greet.yaml", g.as_bytes())]);
    assert_eq!(c1.unwrap().data_hash(), c2.unwrap().data_hash());
    let a3 = a1.replace("now", "today");
    let (c3, _) = load(&[("pay.yaml", a3.as_bytes()), ("greet.yaml", g.as_bytes())]);
    let (c1, _) = load(&[("pay.yaml", a1.as_bytes()), ("greet.yaml", g.as_bytes())]);
    assert_ne!(c1.unwrap().data_hash(), c3.unwrap().data_hash());
}

#[test]
fn normalise_collapses_case_punctuation_and_space() {
    assert_eq!(normalise("  What's   my BALANCE?? "), "what s my balance");
    assert_eq!(normalise("!!!"), "");
}

#[test]
fn responses_are_texts_or_texts_with_quick_replies() {
    let good = format!(
        "{}responses:\n  - \"Plain reply.\"\n  - text: \"With buttons.\"\n    quick_replies:\n      - \"Yes\"\n      - {{ title: \"Talk to a person\", payload: \"talk to a human\" }}\n",
        intent("greet")
    );
    let (cat, text) = load(&[
        ("greet.yaml", good.as_bytes()),
        ("bye.yaml", intent("bye").as_bytes()),
    ]);
    let cat = cat.unwrap_or_else(|| panic!("{text}"));
    let greet = cat.intents.iter().find(|i| i.name == "greet").unwrap();
    assert_eq!(greet.responses.len(), 2);
    assert_eq!(greet.responses[0].text, "Plain reply.");
    assert!(greet.responses[0].quick_replies.is_empty());
    assert_eq!(
        greet.responses[1].quick_replies,
        vec![
            QuickReply {
                title: "Yes".into(),
                payload: "Yes".into()
            },
            QuickReply {
                title: "Talk to a person".into(),
                payload: "talk to a human".into()
            },
        ]
    );

    let bad = format!(
        "{}responses:\n  - \"ok\"\n  - \"   \"\n  - text: \"buttons\"\n    quick_replies:\n      - \"\"\n",
        intent("greet")
    );
    let (cat, text) = load(&[
        ("greet.yaml", bad.as_bytes()),
        ("bye.yaml", intent("bye").as_bytes()),
    ]);
    assert!(cat.is_none());
    insta::assert_snapshot!(text, @r"
    DIR/greet.yaml:16:5: error: empty response text
    DIR/greet.yaml:17:5: error: empty quick-reply title
    ");
}

fn with_flow(name: &str, flow: &str) -> String {
    format!("{}flow:\n{flow}", intent(name))
}

#[test]
fn flows_compile_and_reach_the_engine() {
    let transfer = with_flow(
        "transfer_money",
        "  slots:\n    - {name: amount, type: amount, prompt: How much?}\n    - {name: payee, type: payee, prompt: Who to?}\n    - {name: from, type: account, prompt: From which account?}\n  confirm: \"Send {amount} to {payee}?\"\n  requires_auth: step_up\n  action: transfer\n  outcomes:\n    success: \"Sent {amount}, ref {result.reference}.\"\n",
    );
    let faq = format!(
        "{}responses:\n  - text: Nine to five.\n    quick_replies:\n      - {{title: Talk to a person, payload: talk to a human}}\n",
        intent("branch_hours")
    );
    let (cat, diags) = load(&[
        ("transfer_money.yaml", transfer.as_bytes()),
        ("branch_hours.yaml", faq.as_bytes()),
    ]);
    let cat = cat.unwrap_or_else(|| panic!("{diags}"));
    assert_eq!(diags, "");
    let flows = cat.flows(&crate::settings::BotSettings::default());
    let t = &flows.flows["transfer_money"];
    assert_eq!(t.action, Some(bankbot_dialog::Operation::Transfer));
    assert_eq!(t.slots.len(), 3);
    assert!(flows.flows["branch_hours"].is_faq());
    assert_eq!(
        flows.flows["branch_hours"]
            .answer
            .as_ref()
            .map(|a| a.text.as_str()),
        Some("Nine to five.")
    );
    // The engine sends payloads; the service shows their titles.
    let quick = flows.flows["branch_hours"]
        .answer
        .as_ref()
        .map(|a| a.quick_replies.clone());
    assert_eq!(quick, Some(vec!["talk to a human".to_owned()]));
    assert_eq!(
        flows.quick_reply_titles["talk to a human"],
        "Talk to a person"
    );
}

#[test]
fn broken_flows_are_errors_at_their_position() {
    let bad = with_flow(
        "transfer_money",
        concat!(
            "  slots:\n",
            "    - {name: amount, type: amount, prompt: \"How much, {payee}?\"}\n",
            "    - name: reason\n",
            "      type: choice\n",
            "      prompt: Why?\n",
            "      validate:\n",
            "        - {rule: max_amount, value: \"10\", message: too much}\n",
            "  action: transfer\n",
            "  outcomes:\n",
            "    succes: \"Done.\"\n",
        ),
    );
    let (_, diags) = load(&[("transfer_money.yaml", bad.as_bytes())]);
    assert!(
        diags.contains("DIR/transfer_money.yaml:24:5: error:"),
        "{diags}"
    );
    assert!(diags.contains("unknown variant `succes`"), "{diags}");

    let bad = with_flow(
        "transfer_money",
        concat!(
            "  slots:\n",
            "    - {name: amount, type: amount, prompt: \"How much, {payee}?\"}\n",
            "    - name: reason\n",
            "      type: choice\n",
            "      prompt: Why?\n",
            "      validate:\n",
            "        - {rule: max_amount, value: \"10\", message: too much}\n",
            "  action: transfer\n",
            "  outcomes:\n",
            "    success: \"Done.\"\n",
            "    insufficient_funds: \"No money.\"\n",
        ),
    );
    let (_, diags) = load(&[("transfer_money.yaml", bad.as_bytes())]);
    insta::assert_snapshot!(diags, @r"
    DIR/transfer_money.yaml:16:44: error: `{payee}` names no slot of this flow (slots: amount, reason)
    DIR/transfer_money.yaml:17:13: warning: slot `reason` is collected but never used by the action or a reply
    DIR/transfer_money.yaml:18:13: error: choice slot `reason` has no `options`
    DIR/transfer_money.yaml:21:11: error: this rule does not apply to a `choice` slot
    DIR/transfer_money.yaml:22:11: error: `transfer` moves money: set `requires_auth: step_up`
    DIR/transfer_money.yaml:22:11: error: `transfer` moves money: the flow needs a `confirm` step that restates the values
    DIR/transfer_money.yaml:22:11: error: undefined slot: `transfer` needs a slot `from` of type `account`
    DIR/transfer_money.yaml:22:11: error: undefined slot: `transfer` needs a slot `payee` of type `payee`
    ");
    let bad = with_flow(
        "freeze_card",
        concat!(
            "  slots:\n",
            "    - {name: card, type: card, prompt: Which card?}\n",
            "  confirm: Sure?\n",
            "  outcomes:\n",
            "    success: Frozen.\n",
        ),
    );
    let (_, diags) = load(&[("freeze_card.yaml", bad.as_bytes())]);
    insta::assert_snapshot!(diags, @r"
    DIR/freeze_card.yaml:15:3: error: no way out: the flow collects slots but has no `action` to use them
    DIR/freeze_card.yaml:16:14: warning: slot `card` is collected but never used by the action or a reply
    DIR/freeze_card.yaml:17:12: error: unreachable state: `confirm` without an `action` confirms nothing
    DIR/freeze_card.yaml:19:5: error: unreachable response: `outcomes` without an `action`
    ");
    // Responses an operation can never produce are unreachable.
    let bad = with_flow(
        "freeze_card",
        concat!(
            "  slots:\n",
            "    - {name: card, type: card, prompt: Which card?}\n",
            "  action: freeze_card\n",
            "  outcomes:\n",
            "    success: Frozen {card}.\n",
            "    insufficient_funds: \"No money, {result.x}.\"\n",
        ),
    );
    let (_, diags) = load(&[("freeze_card.yaml", bad.as_bytes())]);
    insta::assert_snapshot!(diags, @"DIR/freeze_card.yaml:20:5: error: unreachable response: `freeze_card` never ends in `insufficient_funds`");
}

#[test]
fn queue_names_are_checked_where_they_are_written() {
    let bad = with_flow(
        "talk_to_human",
        concat!(
            "  answer: One moment.\n",
            "  escalate:\n",
            "    when: immediately\n",
            "    skill: Cards Team\n",
        ),
    );
    let (_, diags) = load(&[("talk_to_human.yaml", bad.as_bytes())]);
    assert!(
        diags.contains("talk_to_human.yaml:") && diags.contains("`Cards Team` is not a queue name"),
        "{diags}"
    );
    let line = diags
        .lines()
        .find(|l| l.contains("Cards Team"))
        .unwrap_or_default();
    assert!(line.contains(":18:12: error:"), "{line}");
}

#[test]
fn responses_beside_a_flow_are_a_warning() {
    let both = format!(
        "{}responses:\n  - Unused.\nflow:\n  answer: Hello.\n",
        intent("greet")
    );
    let other = intent("thanks");
    let (cat, diags) = load(&[
        ("greet.yaml", both.as_bytes()),
        ("thanks.yaml", other.as_bytes()),
    ]);
    assert!(cat.is_some());
    insta::assert_snapshot!(diags, @"DIR/greet.yaml:14:1: warning: `responses` are not used: this intent's `flow` answers it (write the reply as `flow.answer` or under `outcomes`)");
}
