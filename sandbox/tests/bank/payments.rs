use bankbot_connectors::wire::{DomesticPayment, Envelope, PaymentStatus, TransactionPage, codes};

use crate::helpers::{ALL_TIME, payment, spawn_bank};

#[tokio::test]
async fn a_payment_is_made_once_per_key() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");

    let first = alice
        .pay("key-1", "acc-current", "payee-mum", "10.00")
        .await;
    assert_eq!(first.status, 201, "{}", first.text());
    let made: Envelope<DomesticPayment> = first.wire();
    let id = made.data.domestic_payment_id.clone();
    assert!(id.starts_with("PAY-"));
    assert_eq!(made.data.status, PaymentStatus::AcceptedSettlementCompleted);

    // The retry gets the original answer, byte for byte, and moves nothing.
    let again = alice
        .pay("key-1", "acc-current", "payee-mum", "10.00")
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(alice.balance("acc-current").await, 123_456 - 1_000);

    // Same key, another request: refused, nothing moves.
    let other = alice
        .pay("key-1", "acc-current", "payee-mum", "11.00")
        .await;
    assert_eq!(other.status, 422);
    assert_eq!(other.error_code(), codes::CONSENT_MISMATCH);
    assert_eq!(alice.balance("acc-current").await, 123_456 - 1_000);

    // The payment can be found by id and by key.
    let by_id: Envelope<DomesticPayment> =
        alice.get(&format!("/domestic-payments/{id}")).await.wire();
    assert_eq!(by_id.data.domestic_payment_id, id);
    let by_key: Envelope<DomesticPayment> = alice
        .get("/domestic-payments/by-idempotency-key/key-1")
        .await
        .wire();
    assert_eq!(by_key.data.domestic_payment_id, id);
    let none = alice
        .get("/domestic-payments/by-idempotency-key/key-2")
        .await;
    assert_eq!(none.status, 404);
    assert_eq!(none.error_code(), codes::NOT_FOUND);

    // It is the newest transaction of the account.
    let page: TransactionPage = alice
        .get(&format!("/accounts/acc-current/transactions?{ALL_TIME}"))
        .await
        .wire();
    let newest = &page.data.transaction[0];
    assert_eq!(newest.amount.amount, "10.00");
    assert_eq!(
        newest.transaction_information,
        "Payment to Mum, ref birthday"
    );

    let audit = bank.audit().await;
    assert_eq!(audit["payments"], 1);
    assert_eq!(audit["ledger_entries_per_key_max"], 1);
    assert_eq!(audit["duplicate_keys"], 0);

    // The key is per customer: bob may use it too.
    let bob = bank.client("bob");
    let r = bob.pay("key-1", "acc-current", "payee-mum", "10.00").await;
    assert_eq!(r.status, 201);
    assert_ne!(
        r.wire::<Envelope<DomesticPayment>>()
            .data
            .domestic_payment_id,
        id
    );
}

#[tokio::test]
async fn concurrent_requests_with_one_key_book_one_entry() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let alice = alice.clone();
        tasks.push(tokio::spawn(async move {
            alice
                .pay("same-key", "acc-current", "payee-pierre", "25.00")
                .await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            201 => ids.push(
                r.wire::<Envelope<DomesticPayment>>()
                    .data
                    .domestic_payment_id,
            ),
            409 => assert_eq!(r.error_code(), codes::IN_FLIGHT),
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(alice.balance("acc-current").await, 123_456 - 2_500);
    let audit = bank.audit().await;
    assert_eq!(audit["payments"], 1);
    assert_eq!(audit["ledger_entries_per_key_max"], 1);
    assert_eq!(audit["postings_sum_minor"], 0);
}

#[tokio::test]
async fn refusals_are_stored_under_the_key() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");

    let poor = alice
        .pay("k-big", "acc-current", "payee-mum", "5000.00")
        .await;
    assert_eq!(poor.status, 422, "{}", poor.text());
    assert_eq!(poor.error_code(), codes::INSUFFICIENT_FUNDS);
    let again = alice
        .pay("k-big", "acc-current", "payee-mum", "5000.00")
        .await;
    assert_eq!((again.status, &again.body), (422, &poor.body));
    // Not a payment: nothing to find under the key.
    let r = alice
        .get("/domestic-payments/by-idempotency-key/k-big")
        .await;
    assert_eq!(r.status, 404);

    let over = alice
        .pay("k-limit", "acc-savings", "payee-mum", "10000.01")
        .await;
    assert_eq!(over.status, 422);
    assert_eq!(over.error_code(), codes::LIMIT_EXCEEDED);
    let again = alice
        .pay("k-limit", "acc-savings", "payee-mum", "10000.01")
        .await;
    assert_eq!(again.body, over.body);
    // Exactly the limit is fine.
    let at = alice
        .pay("k-at-limit", "acc-savings", "payee-mum", "4999.99")
        .await;
    assert_eq!(at.status, 201, "{}", at.text());

    let stranger = alice
        .pay("k-payee", "acc-current", "payee-nobody", "1.00")
        .await;
    assert_eq!(stranger.status, 422);
    assert_eq!(stranger.error_code(), codes::PAYEE_UNKNOWN);

    // Malformed requests are 400 and not stored: fixing them is allowed.
    for (key, amount) in [("k-frac", "1.005"), ("k-neg", "-1.00"), ("k-zero", "0")] {
        let r = alice.pay(key, "acc-current", "payee-mum", amount).await;
        assert_eq!(r.status, 400, "{amount}: {}", r.text());
        assert_eq!(r.error_code(), codes::FIELD_INVALID);
        let fixed = alice.pay(key, "acc-current", "payee-mum", "1.00").await;
        assert_eq!(fixed.status, 201, "{}", fixed.text());
    }
    let mut euros = payment("acc-current", "payee-mum", "1.00");
    euros["Data"]["Initiation"]["InstructedAmount"]["Currency"] = "EUR".into();
    let r = alice.post("/domestic-payments", "k-eur", &euros).await;
    assert_eq!(r.status, 400);

    // Keys must be visible ASCII, 1 to 128 characters.
    let body = payment("acc-current", "payee-mum", "1.00");
    let r = alice
        .call("POST", "/domestic-payments", None, Some(&body))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), codes::HEADER_MISSING);
    let long = "k".repeat(129);
    for bad in ["with space", long.as_str()] {
        let r = alice.post("/domestic-payments", bad, &body).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.error_code(), codes::FIELD_INVALID);
    }

    let audit = bank.audit().await;
    assert_eq!(audit["payments"], 4);
    assert_eq!(audit["postings_sum_minor"], 0);
}

#[tokio::test]
async fn another_customers_resources_are_not_found() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");
    let bob = bank.client("bob");

    let r = alice.pay("k1", "acc-current", "payee-mum", "12.34").await;
    let id = r
        .wire::<Envelope<DomesticPayment>>()
        .data
        .domestic_payment_id;
    let replaced = alice
        .call("POST", "/cards/card-debit/replacements", Some("r1"), None)
        .await;
    assert_eq!(replaced.status, 201, "{}", replaced.text());
    let new_card = replaced.json()["Data"]["CardId"]
        .as_str()
        .unwrap()
        .to_owned();

    for path in [
        format!("/domestic-payments/{id}"),
        format!("/cards/{new_card}/status"),
        "/accounts/acc-elsewhere/balances".to_owned(),
    ] {
        let r = if path.ends_with("/status") {
            bob.put(
                &path,
                "b1",
                &serde_json::json!({"Data": {"Status": "Frozen"}}),
            )
            .await
        } else {
            bob.get(&path).await
        };
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.error_code(), codes::NOT_FOUND);
    }
    // Bob's money and cards are his own.
    assert_eq!(bob.balance("acc-current").await, 123_456);
    assert_eq!(alice.balance("acc-current").await, 123_456 - 1_234);
    let cards = bob.get("/cards").await.json();
    assert_eq!(cards["Data"]["Card"][0]["Status"], "Active");
}

#[tokio::test]
async fn payments_survive_a_restart_and_enrolment_is_not_redone() {
    let bank = spawn_bank().await;
    let database = bank.database.clone();
    let alice = bank.client("alice");
    let r = alice.pay("k1", "acc-current", "payee-mum", "100.00").await;
    assert_eq!(r.status, 201);
    let crate::helpers::TestBank { sandbox, dir, .. } = bank;
    sandbox.shutdown().await;

    let again = bankbot_sandbox::start(bankbot_sandbox::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database,
        ..bankbot_sandbox::Config::default()
    })
    .await
    .unwrap();
    let alice = crate::helpers::Client {
        addr: again.local_addr(),
        customer: Some("alice".into()),
        token: None,
    };
    assert_eq!(alice.balance("acc-current").await, 123_456 - 10_000);
    let replay = alice.pay("k1", "acc-current", "payee-mum", "100.00").await;
    assert_eq!(replay.body, r.body);
    again.shutdown().await;
    drop(dir);
}
