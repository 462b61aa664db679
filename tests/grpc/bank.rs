//! Flows through gRPC against the real sandbox bank over HTTP: the server
//! is configured with `bank.url` like a deployment, the sandbox runs on
//! loopback with its own SQLite ledger, and the assertions read the bank's
//! side through its admin routes (the "SMS" outbox, the ledger audit).

use std::time::Duration;

use bankbot::store::PaymentState;
use serde_json::Value;

use crate::helpers::{Backend, send, spawn_with, start};

/// A sandbox bank on 127.0.0.1:0 with a ledger in `dir`.
pub async fn sandbox(dir: &std::path::Path) -> bankbot_sandbox::Sandbox {
    bankbot_sandbox::start(bankbot_sandbox::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.join("sandbox.sqlite3"),
        ..bankbot_sandbox::Config::default()
    })
    .await
    .unwrap()
}

pub async fn admin_get(bank: &bankbot_sandbox::Sandbox, path: &str) -> Value {
    let url = format!("http://{}{path}", bank.local_addr());
    let r = reqwest::get(&url).await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

/// Replaces the sandbox's faults (`{}`: none).
async fn set_faults(bank: &bankbot_sandbox::Sandbox, faults: Value) {
    let r = reqwest::Client::new()
        .put(format!("http://{}/sandbox/faults", bank.local_addr()))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

async fn latest_code(bank: &bankbot_sandbox::Sandbox, customer: &str) -> String {
    admin_get(bank, &format!("/sandbox/customers/{customer}/codes/latest")).await["Code"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn flows_against_the_sandbox(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let bank = sandbox(dir.path()).await;
    let url = bank.base_url();
    let (app, db) = spawn_with(backend, |s| {
        s.bank.url = url;
        s.bank.reconcile_interval_ms = 100;
    })
    .await;
    let mut c = app.client().await;
    let who = "sandra";
    let id = start(&mut c, who).await;
    let text = |r: &bankbot_proto::v1::SendMessageResponse| {
        r.messages
            .iter()
            .map(|m| m.text.clone())
            .collect::<Vec<_>>()
            .join(" | ")
    };

    // Balance, read from the ledger.
    let r = send(
        &mut c,
        who,
        &id,
        "b1",
        "how much money is in my current account",
    )
    .await
    .unwrap();
    assert!(text(&r).contains("£1,234.56"), "{}", text(&r));
    // Bank calls are measured.
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("bankbot_bank_call_seconds_count{operation=\"balance\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("bankbot_bank_breaker_open 0"), "{metrics}");

    // Transactions: the sandbox books them relative to its enrolment day.
    let r = send(
        &mut c,
        who,
        &id,
        "t1",
        "show me my current account transactions from the last 3 days",
    )
    .await
    .unwrap();
    assert!(text(&r).contains("Corner Shop"), "{}", text(&r));
    assert!(!text(&r).contains("Salary"), "{}", text(&r));

    // A transfer with step-up: the code is "texted" by the bank.
    let r = send(
        &mut c,
        who,
        &id,
        "p1",
        "send £50 to Mum from my current account",
    )
    .await
    .unwrap();
    assert!(text(&r).contains("£50.00 to Mum"), "{}", text(&r));
    let r = send(&mut c, who, &id, "p2", "yes").await.unwrap();
    assert!(text(&r).contains("one-time code"), "{}", text(&r));
    let code = latest_code(&bank, who).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = send(&mut c, who, &id, "p3", wrong).await.unwrap();
    assert!(!text(&r).contains("on its way"), "{}", text(&r));
    // A wrong code sends a fresh one; the first no longer works.
    let fresh = latest_code(&bank, who).await;
    let r = send(&mut c, who, &id, "p4", &fresh).await.unwrap();
    assert!(
        text(&r).contains("£50.00 is on its way to Mum"),
        "{}",
        text(&r)
    );
    let audit = admin_get(&bank, "/sandbox/audit").await;
    assert_eq!(
        audit["balances"][format!("{who}/acc-current")],
        123_456 - 5_000
    );
    assert_eq!(audit["payments"], 1);
    assert_eq!(audit["ledger_entries_per_key_max"], 1);
    assert_eq!(audit["postings_sum_minor"], 0);
    let store = app.store().await;
    assert_eq!(
        store.payment_counts().await.unwrap(),
        vec![(PaymentState::Settled, 1)],
        "journalled and settled"
    );
    // The resent confirming turn is a replay: no second payment.
    let again = send(&mut c, who, &id, "p4", &fresh).await.unwrap();
    assert!(again.replayed);
    assert_eq!(admin_get(&bank, "/sandbox/audit").await["payments"], 1);

    // Blocking a card acts on the bank's card.
    let r = send(&mut c, who, &id, "c1", "I lost my debit card ending 4471")
        .await
        .unwrap();
    assert!(
        text(&r).contains("Visa debit ending 4471 is now blocked"),
        "{}",
        text(&r)
    );
    let cards = bankbot_connectors::http::HttpBank::new(bankbot_connectors::http::HttpConfig::new(
        bank.base_url(),
    ))
    .unwrap();
    use bankbot_connectors::Bank;
    let card = cards
        .cards(who)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == "card-debit")
        .unwrap();
    assert_eq!(card.status, bankbot_connectors::CardStatus::Blocked);

    // The bank failing every change: the customer hears so, and the card
    // is untouched.
    set_faults(
        &bank,
        serde_json::json!({"error_rate": 1.0, "scope": "writes"}),
    )
    .await;
    let r = send(&mut c, who, &id, "f1", "freeze my credit card")
        .await
        .unwrap();
    assert!(!text(&r).contains("is frozen"), "{}", text(&r));
    let card = cards
        .cards(who)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == "card-credit")
        .unwrap();
    assert_eq!(card.status, bankbot_connectors::CardStatus::Active);

    store.close().await;
    app.stop().await.unwrap();
    bank.shutdown().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_against_the_sandbox_sqlite() {
    flows_against_the_sandbox(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_against_the_sandbox_postgres() {
    flows_against_the_sandbox(Backend::Postgres).await;
}

/// A payment whose answer was lost is finished by the reconciler: the
/// customer hears "not sure yet", never "failed", and the journal ends
/// settled with exactly one ledger entry.
async fn an_unknown_payment_is_reconciled(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let bank = sandbox(dir.path()).await;
    let url = bank.base_url();
    let (app, db) = spawn_with(backend, |s| {
        s.bank.url = url;
        // The sandbox answers after the deadline: the outcome is unknown.
        s.bank.deadlines_ms.insert("transfer".into(), 300);
        s.bank.reconcile_interval_ms = 100;
        s.bank.reconcile_after_ms = 200;
    })
    .await;
    let mut c = app.client().await;
    let who = "ulrich";
    let id = start(&mut c, who).await;
    send(
        &mut c,
        who,
        &id,
        "u1",
        "send £20 to Mum from my current account",
    )
    .await
    .unwrap();
    send(&mut c, who, &id, "u2", "yes").await.unwrap();
    let code = latest_code(&bank, who).await;
    set_faults(
        &bank,
        serde_json::json!({"latency_ms": 1500, "scope": "payments"}),
    )
    .await;
    let r = send(&mut c, who, &id, "u3", &code).await.unwrap();
    let said: String = r.messages.iter().map(|m| m.text.as_str()).collect();
    assert!(!said.contains("on its way"), "{said}");
    assert!(!said.to_lowercase().contains("failed"), "{said}");
    // The bank recovers; the reconciler asks it what became of the key.
    set_faults(&bank, serde_json::json!({})).await;
    let store = app.store().await;
    let mut settled = false;
    for _ in 0..100 {
        if store.payment_counts().await.unwrap() == vec![(PaymentState::Settled, 1)] {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "{:?}", store.payment_counts().await.unwrap());
    // The promise "I'll tell you here" is kept, once.
    let all = crate::helpers::all_messages(&mut c, who, &id).await;
    let updates: Vec<_> = all
        .iter()
        .filter(|m| {
            m.text
                .starts_with("Update on your payment of £20.00: it has gone through")
        })
        .collect();
    assert_eq!(updates.len(), 1, "{all:?}");
    let audit = admin_get(&bank, "/sandbox/audit").await;
    assert_eq!(audit["payments"], 1);
    assert_eq!(audit["ledger_entries_per_key_max"], 1);
    assert_eq!(
        audit["balances"][format!("{who}/acc-current")],
        123_456 - 2_000
    );
    store.close().await;
    app.stop().await.unwrap();
    bank.shutdown().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_payment_is_reconciled_sqlite() {
    an_unknown_payment_is_reconciled(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_payment_is_reconciled_postgres() {
    an_unknown_payment_is_reconciled(Backend::Postgres).await;
}
