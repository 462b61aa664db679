use bankbot_connectors::wire::{
    Card, CardStatus, CodeSent, CodeVerdict, Envelope, TransactionPage, codes,
};
use serde_json::{Value, json};

use crate::helpers::{ALL_TIME, Client, spawn_bank, spawn_bank_with};

fn status(s: &str) -> Value {
    json!({"Data": {"Status": s}})
}

#[tokio::test]
async fn a_blocked_card_cannot_be_unfrozen_and_is_replaced() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");
    let path = "/cards/card-debit/status";

    let r = alice.put(path, "c1", &status("Frozen")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.wire::<Envelope<Card>>().data.status, CardStatus::Frozen);
    // The same status again is a no-op.
    let r = alice.put(path, "c2", &status("Frozen")).await;
    assert_eq!(r.status, 200);
    let r = alice.put(path, "c3", &status("Active")).await;
    assert_eq!(r.wire::<Envelope<Card>>().data.status, CardStatus::Active);
    let r = alice.put(path, "c4", &status("Blocked")).await;
    assert_eq!(r.wire::<Envelope<Card>>().data.status, CardStatus::Blocked);

    for (key, target) in [("c5", "Active"), ("c6", "Frozen")] {
        let r = alice.put(path, key, &status(target)).await;
        assert_eq!(r.status, 422, "{}", r.text());
        assert_eq!(r.error_code(), codes::CARD_BLOCKED);
    }
    let r = alice.put(path, "c7", &status("Blocked")).await;
    assert_eq!(r.status, 200);
    // A replayed key answers what it answered, a reused one is refused.
    let r = alice.put(path, "c1", &status("Frozen")).await;
    assert_eq!(r.wire::<Envelope<Card>>().data.status, CardStatus::Frozen);
    let r = alice.put(path, "c1", &status("Active")).await;
    assert_eq!(r.error_code(), codes::CONSENT_MISMATCH);
    let r = alice.put(path, "c8", &status("InTransit")).await;
    assert_eq!(r.status, 400);
    let r = alice
        .put("/cards/card-nope/status", "c9", &status("Frozen"))
        .await;
    assert_eq!(r.status, 404);

    let r = alice
        .call("POST", "/cards/card-debit/replacements", Some("r1"), None)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let new: Card = r.wire::<Envelope<Card>>().data;
    assert_eq!(new.status, CardStatus::InTransit);
    assert!(new.dispatched_on.is_some());
    assert!(new.name.starts_with("Visa debit ending "));
    assert_eq!(new.last4.len(), 4);
    let again = alice
        .call("POST", "/cards/card-debit/replacements", Some("r1"), None)
        .await;
    assert_eq!(again.body, r.body);
    let cards = alice.get("/cards").await.json();
    let cards = cards["Data"]["Card"].as_array().unwrap();
    assert_eq!(cards.len(), 3);
    assert_eq!(cards[0]["Status"], "Blocked");
    assert_eq!(cards[2]["CardId"], new.card_id.as_str());
}

#[tokio::test]
async fn a_one_time_code_works_once_for_its_binding() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");
    let send = |binding: &str| json!({"Data": {"Purpose": "transfer", "Binding": binding}});
    let check = |code: &str, binding: &str| json!({"Data": {"Code": code, "Binding": binding}});

    let r = alice
        .call("POST", "/one-time-codes", None, Some(&send("pay mum 10")))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let sent: Envelope<CodeSent> = r.wire();
    assert!(sent.data.expires_at.ends_with('Z'));
    let code = bank.latest_code("alice").await;
    assert_eq!(code.len(), 6);
    let verify = format!("/one-time-codes/{}/verification", sent.data.code_id);
    let verdict = |r: crate::helpers::Resp| {
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Envelope<CodeVerdict> = r.wire();
        (v.data.verified, v.data.attempts_left)
    };

    // The right code for another binding fails and uses an attempt.
    let r = alice.post(&verify, "v1", &check(&code, "pay mum 99")).await;
    assert_eq!(verdict(r), (false, Some(2)));
    let r = alice.post(&verify, "v2", &check(&code, "pay mum 10")).await;
    assert_eq!(verdict(r), (true, Some(2)));
    // The same turn retried gets the same verdict; a new one does not.
    let r = alice.post(&verify, "v2", &check(&code, "pay mum 10")).await;
    assert_eq!(verdict(r), (true, Some(2)));
    let r = alice.post(&verify, "v3", &check(&code, "pay mum 10")).await;
    assert_eq!(verdict(r), (false, Some(0)));

    // Three wrong tries exhaust a code.
    let r = alice
        .call("POST", "/one-time-codes", None, Some(&send("b3")))
        .await;
    let sent: CodeSent = r.wire::<Envelope<CodeSent>>().data;
    let code = bank.latest_code("alice").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let verify = format!("/one-time-codes/{}/verification", sent.code_id);
    for (i, left) in [(1, 2), (2, 1), (3, 0)] {
        let r = alice
            .post(&verify, &format!("w{i}"), &check(wrong, "b3"))
            .await;
        assert_eq!(verdict(r), (false, Some(left)));
    }
    let r = alice.post(&verify, "w4", &check(&code, "b3")).await;
    assert_eq!(verdict(r), (false, Some(0)));

    // Someone else's code does not exist for bob; bad shapes are 400.
    let bob = bank.client("bob");
    let r = bob.post(&verify, "x1", &check(&code, "b3")).await;
    assert_eq!(r.status, 404);
    let r = alice.post(&verify, "x2", &check("12ab", "b3")).await;
    assert_eq!(r.status, 400);
    let r = alice
        .call(
            "POST",
            "/one-time-codes",
            None,
            Some(&json!({"Data": {"Purpose": "fun", "Binding": "b"}})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = crate::helpers::admin(
        bank.addr(),
        "GET",
        "/sandbox/customers/nobody/codes/latest",
        None,
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_fixed_code_is_sent_when_configured() {
    let bank = spawn_bank_with(|c| c.fixed_code = Some("424242".into())).await;
    let alice = bank.client("alice");
    let r = alice
        .call(
            "POST",
            "/one-time-codes",
            None,
            Some(&json!({"Data": {"Purpose": "update_contact", "Binding": "b"}})),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(bank.latest_code("alice").await, "424242");
}

#[tokio::test]
async fn disputes_name_a_booked_transaction() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");
    let page: TransactionPage = alice
        .get(&format!("/accounts/acc-current/transactions?{ALL_TIME}"))
        .await
        .wire();
    let t6 = &page.data.transaction[0];
    let dispute = |amount: &str, date: &str| {
        json!({"Data": {"Amount": {"Amount": amount, "Currency": "GBP"},
                        "BookingDate": date, "Reason": "not me"}})
    };
    let r = alice
        .post("/disputes", "d1", &dispute("4.50", &t6.booking_date))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        r.json()["Data"]["DisputeId"]
            .as_str()
            .unwrap()
            .starts_with("DSP-")
    );
    let again = alice
        .post("/disputes", "d1", &dispute("4.50", &t6.booking_date))
        .await;
    assert_eq!(again.body, r.body);
    let r = alice
        .post("/disputes", "d2", &dispute("4.51", &t6.booking_date))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.error_code(), codes::TRANSACTION_UNKNOWN);
    let r = alice
        .post("/disputes", "d3", &dispute("4.50", "yesterday"))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn contact_details_are_validated_and_used() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");
    let change = json!({"Data": {"MobileNumber": "+447700900999"}});
    let r = alice.put("/contact-details", "m1", &change).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    let r = alice.put("/contact-details", "m1", &change).await;
    assert_eq!(r.status, 204);
    for bad in [
        json!({"Data": {"MobileNumber": "07700900999"}}),
        json!({"Data": {"EmailAddress": "not an address"}}),
        json!({"Data": {}}),
    ] {
        let r = alice.put("/contact-details", "m2", &bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = alice
        .put(
            "/contact-details",
            "m3",
            &json!({"Data": {"EmailAddress": "alice@example.com"}}),
        )
        .await;
    assert_eq!(r.status, 204);
}

/// A mix of everything, then the books must still balance.
#[tokio::test]
async fn money_is_conserved_across_a_mix_of_operations() {
    let bank = spawn_bank().await;
    let mut expected = std::collections::HashMap::new();
    for who in ["ann", "ben", "cat"] {
        let c: Client = bank.client(who);
        let mut paid = 0;
        for (i, (account, amount, minor)) in [
            ("acc-current", "12.34", 1_234),
            ("acc-current", "0.01", 1),
            ("acc-savings", "999.99", 99_999),
        ]
        .into_iter()
        .enumerate()
        {
            let r = c
                .pay(&format!("p{i}"), account, "payee-landlord", amount)
                .await;
            assert_eq!(r.status, 201, "{}", r.text());
            if account == "acc-current" {
                paid += minor;
            }
            // Retries never move money twice.
            c.pay(&format!("p{i}"), account, "payee-landlord", amount)
                .await;
        }
        let r = c
            .pay("too-much", "acc-current", "payee-mum", "9999.00")
            .await;
        assert_eq!(r.status, 422);
        c.put("/cards/card-credit/status", "f", &status("Frozen"))
            .await;
        expected.insert(format!("{who}/acc-current"), 123_456 - paid);
    }
    let audit = bank.audit().await;
    assert_eq!(audit["postings_sum_minor"], 0);
    assert_eq!(audit["unbalanced_entries"], 0);
    assert_eq!(audit["payments"], 9);
    assert_eq!(audit["ledger_entries_per_key_max"], 1);
    assert_eq!(audit["duplicate_keys"], 0);
    for (account, minor) in expected {
        assert_eq!(audit["balances"][&account], minor, "{account}");
    }
    assert_eq!(audit["balances"]["cat/acc-savings"], 500_000 - 99_999);
}
