use proptest::prelude::*;

use super::*;

fn ctx() -> Context {
    // A Wednesday.
    Context::new(Date::parse_iso("2024-03-13").expect("valid"))
}

fn one(text: &str, kind: EntityKind) -> Entity {
    let found = extract(text, &ctx());
    let of_kind: Vec<&Entity> = found.iter().filter(|e| e.entity == kind).collect();
    assert_eq!(
        of_kind.len(),
        1,
        "{text:?}: expected one {kind}, got {found:#?}"
    );
    of_kind[0].clone()
}

fn amount(text: &str) -> (String, String, Option<String>) {
    let e = one(text, EntityKind::Amount);
    match e.value {
        EntityValue::Amount(a) => (e.text, a.amount.to_string(), a.currency),
        other => panic!("{other:?}"),
    }
}

fn value_json(text: &str, kind: EntityKind) -> String {
    serde_json::to_string(&one(text, kind).value).expect("serialisable")
}

#[test]
fn amounts_in_the_forms_customers_write() {
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("I paid $700 for it", "$700", "700", Some("USD")),
        ("refund 999.43 euros", "999.43 euros", "999.43", Some("EUR")),
        ("charged 81.63€ twice", "81.63€", "81.63", Some("EUR")),
        ("send 1,234.50 GBP", "1,234.50 GBP", "1234.50", Some("GBP")),
        (
            "überweise 1.234,50 EUR",
            "1.234,50 EUR",
            "1234.50",
            Some("EUR"),
        ),
        (
            "two hundred pounds to mum",
            "two hundred pounds",
            "200",
            Some("GBP"),
        ),
        ("lend him 50 quid", "50 quid", "50", Some("GBP")),
        ("move 1.5k to savings", "1.5k", "1500", None),
        ("transfer £2.5k now", "£2.5k", "2500", Some("GBP")),
        ("pay back my mate a tenner", "a tenner", "10", Some("GBP")),
        ("shift a grand over", "a grand", "1000", None),
        ("can u pay Liam 30", "30", "30", None),
        ("costs 50p", "50p", "0.50", Some("GBP")),
        ("EUR 12,99 please", "EUR 12,99", "12.99", Some("EUR")),
        (
            "twenty-five dollars",
            "twenty-five dollars",
            "25",
            Some("USD"),
        ),
        ("US$ 40 to Carla", "US$ 40", "40", Some("USD")),
        ("£1,000,000", "£1,000,000", "1000000", Some("GBP")),
        ("the bill was 32.50", "32.50", "32.50", None),
        ("send 5 grand", "5 grand", "5000", None),
        ("no, make it 60", "60", "60", None),
    ];
    for (text, span, value, currency) in cases {
        let (s, v, c) = amount(text);
        assert_eq!(
            (s.as_str(), v.as_str(), c.as_deref()),
            (*span, *value, *currency),
            "{text}"
        );
    }
}

#[test]
fn numbers_that_are_not_money() {
    for text in [
        "my last 10 transactions",
        "it happened 3 days ago",
        "card ending 4471",
        "the 29th",
        "call me on 07700 900123",
        "I have 2 accounts",
        "sort code 40-11-62",
    ] {
        let found = extract(text, &ctx());
        assert!(
            found.iter().all(|e| e.entity != EntityKind::Amount),
            "{text}: {found:#?}"
        );
    }
}

#[test]
fn amount_json_is_a_decimal_string_and_a_code() {
    assert_eq!(
        value_json("999.43 euros", EntityKind::Amount),
        r#"{"amount":"999.43","currency":"EUR"}"#
    );
    assert_eq!(
        value_json("pay him 30", EntityKind::Amount),
        r#"{"amount":"30","currency":null}"#
    );
}

#[test]
fn dates_resolve_against_the_reference_date() {
    let cases: &[(&str, &str, &str)] = &[
        ("what did I spend today", "today", "\"2024-03-13\""),
        ("yesterday's payments", "yesterday", "\"2024-03-12\""),
        ("paid 5 weeks ago", "5 weeks ago", "\"2024-02-07\""),
        ("a month ago", "a month ago", "\"2024-02-13\""),
        ("last week Monday", "last week Monday", "\"2024-03-04\""),
        (
            "Friday of next week",
            "Friday of next week",
            "\"2024-03-22\"",
        ),
        ("last Monday", "last Monday", "\"2024-03-11\""),
        ("on Saturday", "Saturday", "\"2024-03-09\""),
        ("next Monday", "next Monday", "\"2024-03-18\""),
        ("on May 25", "May 25", "\"2023-05-25\""),
        ("25th of May 2022", "25th of May 2022", "\"2022-05-25\""),
        ("the 29th", "the 29th", "\"2024-02-29\""),
        (
            "on the 1st of next month",
            "the 1st of next month",
            "\"2024-04-01\"",
        ),
        ("2022-03-08", "2022-03-08", "\"2022-03-08\""),
        ("08/03/2022", "08/03/2022", "\"2022-03-08\""),
        ("March 3rd", "March 3rd", "\"2024-03-03\""),
        (
            "the day before yesterday",
            "the day before yesterday",
            "\"2024-03-11\"",
        ),
        ("end of last month", "end of last month", "\"2024-02-29\""),
        ("in 2 weeks", "in 2 weeks", "\"2024-03-27\""),
    ];
    for (text, span, value) in cases {
        let e = one(text, EntityKind::Date);
        assert_eq!(
            (
                e.text.as_str(),
                serde_json::to_string(&e.value).expect("json").as_str()
            ),
            (*span, *value),
            "{text}"
        );
    }
}

#[test]
fn date_ranges() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "spending last month",
            "last month",
            "2024-02-01",
            "2024-02-29",
        ),
        ("this year", "this year", "2024-01-01", "2024-12-31"),
        (
            "between 1 and 15 March",
            "between 1 and 15 March",
            "2024-03-01",
            "2024-03-15",
        ),
        (
            "from May 3 to May 10",
            "from May 3 to May 10",
            "2023-05-03",
            "2023-05-10",
        ),
        (
            "the past 30 days",
            "the past 30 days",
            "2024-02-12",
            "2024-03-13",
        ),
        ("last week", "last week", "2024-03-04", "2024-03-10"),
        ("this week", "this week", "2024-03-11", "2024-03-17"),
        (
            "last fortnight",
            "last fortnight",
            "2024-02-28",
            "2024-03-13",
        ),
        ("in January", "in January", "2024-01-01", "2024-01-31"),
        (
            "during December",
            "during December",
            "2023-12-01",
            "2023-12-31",
        ),
        ("since the 1st", "since the 1st", "2024-03-01", "2024-03-13"),
        ("March 2022", "March 2022", "2022-03-01", "2022-03-31"),
        (
            "over the weekend",
            "the weekend",
            "2024-03-09",
            "2024-03-10",
        ),
        ("last quarter", "last quarter", "2023-10-01", "2023-12-31"),
        ("in 2023", "in 2023", "2023-01-01", "2023-12-31"),
        (
            "from Monday to Friday",
            "from Monday to Friday",
            "2024-03-04",
            "2024-03-08",
        ),
        ("1-15 March", "1-15 March", "2024-03-01", "2024-03-15"),
    ];
    for (text, span, from, to) in cases {
        let e = one(text, EntityKind::DateRange);
        let EntityValue::DateRange(r) = e.value else {
            panic!("{text}")
        };
        assert_eq!(
            (e.text.as_str(), r.from.to_string(), r.to.to_string()),
            (*span, from.to_string(), to.to_string()),
            "{text}"
        );
    }
}

#[test]
fn future_preference_moves_dates_forward() {
    let mut c = ctx();
    c.prefer_future = true;
    let found = extract("pay rent on Friday and again on May 25", &c);
    let dates: Vec<String> = found
        .iter()
        .map(|e| serde_json::to_string(&e.value).expect("json"))
        .collect();
    assert_eq!(dates, vec!["\"2024-03-15\"", "\"2024-05-25\""]);
}

#[test]
fn identifiers() {
    assert_eq!(
        value_json("sort code 40-11-62 please", EntityKind::SortCode),
        "\"40-11-62\""
    );
    assert_eq!(
        value_json("sort code 401162", EntityKind::SortCode),
        "\"40-11-62\""
    );
    assert_eq!(
        value_json("account 41938270", EntityKind::AccountNumber),
        "\"41938270\""
    );
    assert_eq!(
        value_json("my card ending in 4471 was declined", EntityKind::CardLast4),
        "\"4471\""
    );
    assert_eq!(
        value_json("[card ending 1111]", EntityKind::CardLast4),
        "\"1111\""
    );
    assert_eq!(
        value_json("the one **** 9921", EntityKind::CardLast4),
        "\"9921\""
    );
    assert_eq!(
        value_json("text 07700 900123", EntityKind::Phone),
        "\"+447700900123\""
    );
    assert!(value_json("ring +44 (0)20 7946 0018", EntityKind::Phone).len() > 5);
    assert_eq!(
        value_json("call +1 415-555-0100", EntityKind::Phone),
        "\"+14155550100\""
    );
    assert_eq!(
        value_json("mail Jamie.R@Example.COM.", EntityKind::Email),
        "\"Jamie.R@example.com\""
    );
    assert!(value_json("to NL42 INGB 0007 3519 64", EntityKind::Iban).contains("\"valid\":"));
    let e = one("IBAN GB82 WEST 1234 5698 7654 33 thanks", EntityKind::Iban);
    assert_eq!(
        serde_json::to_string(&e.value).expect("json"),
        r#"{"iban":"GB82WEST12345698765433","valid":false,"problem":"checksum"}"#
    );
    assert_eq!(e.text, "GB82 WEST 1234 5698 7654 33");
}

#[test]
fn payees_match_saved_names_and_flag_lookalikes() {
    let mut c = ctx();
    c.payees = vec![
        SavedPayee {
            id: "p1".into(),
            name: "Pierre Dubois".into(),
            aliases: vec![],
        },
        SavedPayee {
            id: "p2".into(),
            name: "Mum".into(),
            aliases: vec!["Mom".into()],
        },
        SavedPayee {
            id: "p3".into(),
            name: "Green Lane Nursery".into(),
            aliases: vec![],
        },
    ];
    let found = extract(
        "send £20 to mum and €120 to Pierre Dubios, then pay Green Lane Nursery",
        &c,
    );
    let payees: Vec<(&str, String)> = found
        .iter()
        .filter_map(|e| match &e.value {
            EntityValue::Payee(p) => Some((e.text.as_str(), p.id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        payees,
        vec![
            ("mum", "p1".replace('1', "2")),
            ("Pierre Dubios", "p1".into()),
            ("Green Lane Nursery", "p3".into())
        ]
    );
    let first_name = extract("pay Pierre", &c);
    assert!(matches!(&first_name[0].value, EntityValue::Payee(p) if p.id == "p1"));
    // A Cyrillic "М" and "у": matches, flagged, low confidence.
    let spoof = extract("pay Мum now", &c);
    let EntityValue::Payee(p) = &spoof[0].value else {
        panic!("{spoof:?}")
    };
    assert!(p.confusable);
    assert!(spoof[0].confidence < 0.5);
    assert!(extract("pay Bob", &c).is_empty());
}

#[test]
fn spans_are_exact_slices_and_never_overlap() {
    let text = "send £50 to GB82 WEST 1234 5698 7654 32 on the 1st of next month, ref 12/03, call 07700 900123";
    let found = extract(text, &ctx());
    for w in found.windows(2) {
        assert!(w[0].end <= w[1].start, "{found:#?}");
    }
    for e in &found {
        assert_eq!(&text[e.start..e.end], e.text);
    }
}

/// Formats `minor` units of a two-decimal currency the way people write it.
fn format_amount(minor: u64, style: u8, code: &str, symbol: &str, word: &str) -> String {
    let units = minor / 100;
    let cents = minor % 100;
    let european = style & 1 == 1;
    let (group, point) = if european { ('.', ',') } else { (',', '.') };
    let digits = units.to_string();
    let mut grouped = String::new();
    for (k, ch) in digits.chars().enumerate() {
        if style & 2 == 2 && k > 0 && (digits.len() - k).is_multiple_of(3) {
            grouped.push(group);
        }
        grouped.push(ch);
    }
    let number = if cents == 0 && style & 4 == 4 {
        grouped
    } else {
        format!("{grouped}{point}{cents:02}")
    };
    match (style >> 3) % 4 {
        0 => format!("{symbol}{number}"),
        1 => format!("{number} {code}"),
        2 => format!("{code} {number}"),
        _ => format!("{number} {word}"),
    }
}

proptest! {
    #[test]
    fn amount_format_then_parse_round_trips(
        minor in 1u64..10_000_000_000,
        style in 0u8..32,
        cur in 0usize..3,
        prefix in prop::sample::select(vec!["send ", "I paid ", "", "it was "]),
    ) {
        let (code, symbol, word) = [("GBP", "£", "pounds"), ("EUR", "€", "euros"), ("USD", "$", "dollars")][cur];
        let written = format_amount(minor, style, code, symbol, word);
        let text = format!("{prefix}{written} thanks");
        let found = extract(&text, &ctx());
        prop_assert_eq!(found.len(), 1, "{} -> {:?}", text, found);
        let EntityValue::Amount(a) = &found[0].value else { panic!("{found:?}") };
        prop_assert_eq!(a.minor_units(code), Some(i64::try_from(minor).expect("small")), "{}", text);
        prop_assert_eq!(a.currency.as_deref(), Some(code));
        prop_assert_eq!(&found[0].text, &written);
    }

    #[test]
    fn iban_single_character_corruption_is_always_rejected(
        country in 0usize..6,
        seed in any::<u64>(),
        pos in 0usize..34,
        replacement in 0u32..36,
    ) {
        // Valid IBANs of countries with numeric or letter-typed BBANs.
        let (cc, shape) = [("GB", "aaaannnnnnnnnnnnnn"), ("DE", "nnnnnnnnnnnnnnnnnn"), ("NL", "aaaannnnnnnnnn"), ("BE", "nnnnnnnnnnnn"), ("ES", "nnnnnnnnnnnnnnnnnnnn"), ("PL", "nnnnnnnnnnnnnnnnnnnnnnnn")][country];
        let mut s = seed;
        let bban: String = shape.chars().map(|k| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let r = (s >> 33) as u32;
            if k == 'a' { char::from(b'A' + (r % 26) as u8) } else { char::from(b'0' + (r % 10) as u8) }
        }).collect();
        let good = iban::with_check_digits(cc, &bban).expect("computable");
        prop_assert_eq!(iban::validate(&good), Ok(()));
        let pos = pos % good.len();
        let new = char::from_digit(replacement, 36).expect("< 36").to_ascii_uppercase();
        let old = good.as_bytes()[pos] as char;
        prop_assume!(new != old);
        let mut bad = good.clone();
        bad.replace_range(pos..pos + 1, &new.to_string());
        prop_assert!(iban::validate(&bad).is_err(), "{} accepted", bad);
        // And the extractor reports it as invalid rather than dropping it.
        let found = extract(&format!("pay {bad} today"), &ctx());
        let reported = found.iter().any(|e| matches!(&e.value, EntityValue::Iban(v) if !v.valid));
        prop_assert!(reported || !bad[..2].bytes().all(|b| b.is_ascii_alphabetic()) || !bad[2..4].bytes().all(|b| b.is_ascii_digit()), "{} -> {:?}", bad, found);
    }

    #[test]
    fn extraction_never_panics_and_spans_are_slices(text in "\\PC{0,80}") {
        let found = extract(&text, &ctx());
        for e in &found {
            prop_assert_eq!(&text[e.start..e.end], e.text.as_str());
        }
    }
}

#[test]
fn weekends_and_always() {
    let e = one("a hotel billed me last weekend", EntityKind::DateRange);
    assert_eq!(
        serde_json::to_string(&e.value).expect("json"),
        r#"{"from":"2024-03-09","to":"2024-03-10"}"#
    );
    assert!(extract("is the 24/7 helpline free", &ctx()).is_empty());
    let e = one("taken last night", EntityKind::Date);
    assert_eq!(e.text, "last night");
}

#[test]
fn ordinals_that_are_not_days_and_the_week_before_last() {
    assert!(
        extract(
            "freeze my credit card, I have 2 and it's the second one",
            &ctx()
        )
        .is_empty()
    );
    let e = one("paid on the second", EntityKind::Date);
    assert_eq!(
        serde_json::to_string(&e.value).expect("json"),
        "\"2024-03-02\""
    );
    let e = one("spending for the week before last", EntityKind::DateRange);
    assert_eq!(
        serde_json::to_string(&e.value).expect("json"),
        r#"{"from":"2024-02-26","to":"2024-03-03"}"#
    );
    let e = one("the month before last", EntityKind::DateRange);
    assert_eq!(
        serde_json::to_string(&e.value).expect("json"),
        r#"{"from":"2024-01-01","to":"2024-01-31"}"#
    );
}
