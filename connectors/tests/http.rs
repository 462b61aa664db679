//! The HTTP connector against a scripted bank (wiremock on loopback):
//! deadlines, retries, the circuit breaker, `Retry-After`, and answers that
//! break the contract. No assertion depends on the machine being fast; the
//! few timing checks are lower bounds the client itself guarantees.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bankbot_connectors::http::{HttpBank, HttpConfig};
use bankbot_connectors::resilience::{BreakerConfig, BreakerState, RetryPolicy};
use bankbot_connectors::{Bank, ConnectorError, Money, TransferOutcome, TransferRequest};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PREFIX: &str = "/open-banking/v3.1";

fn config(server: &MockServer) -> HttpConfig {
    let mut c = HttpConfig::new(format!("{}{PREFIX}", server.uri()));
    c.token = Some("t0ken".into());
    c.deadline = Duration::from_secs(3);
    c.retry = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(10),
        max_wait: Duration::from_secs(2),
    };
    c
}

fn accounts_body() -> serde_json::Value {
    json!({"Data": {"Account": [
        {"AccountId": "acc-1", "Currency": "GBP", "Nickname": "Current account", "Aliases": ["current"]}
    ]}})
}

fn transfer(key: &str) -> TransferRequest {
    TransferRequest {
        idempotency_key: key.into(),
        from_account: "acc-1".into(),
        payee: "payee-1".into(),
        amount: Money {
            minor: 1_050,
            currency: "GBP".into(),
        },
    }
}

fn payment(id: &str) -> serde_json::Value {
    json!({"Data": {"DomesticPaymentId": id, "Status": "AcceptedSettlementCompleted",
                    "CreationDateTime": "2026-11-22T10:00:00Z"}})
}

async fn hits(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

#[tokio::test]
async fn reads_send_the_customer_and_token_and_map_the_body() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{PREFIX}/accounts")))
        .and(header("x-customer-id", "cust-7"))
        .and(header("authorization", "Bearer t0ken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(accounts_body()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{PREFIX}/accounts/acc%201/balances")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Data": {"Balance": [
            {"Type": "InterimBooked", "Amount": {"Amount": "12.30", "Currency": "GBP"}, "CreditDebitIndicator": "Debit"},
            {"Type": "InterimAvailable", "Amount": {"Amount": "100", "Currency": "GBP"}, "CreditDebitIndicator": "Credit"}
        ]}})))
        .mount(&server)
        .await;
    let bank = HttpBank::new(config(&server)).unwrap();
    let accounts = bank.accounts("cust-7").await.unwrap();
    assert_eq!(accounts[0].id, "acc-1");
    assert_eq!(accounts[0].nicknames, vec!["current".to_owned()]);
    // Path segments are escaped, never spliced.
    let b = bank.balance("cust-7", "acc 1").await.unwrap();
    assert_eq!(b.ledger.minor, -1_230);
    assert_eq!(b.available.minor, 10_000);
}

#[tokio::test]
async fn a_slow_bank_hits_the_deadline_and_a_slow_transfer_is_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(accounts_body())
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(payment("p1"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.deadline = Duration::from_millis(300);
    let bank = HttpBank::new(c).unwrap();
    let started = Instant::now();
    assert_eq!(bank.accounts("c").await, Err(ConnectorError::Timeout));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the deadline bounds the call"
    );
    // The request reached the bank: money may have moved.
    assert_eq!(
        bank.transfer("c", &transfer("k-slow")).await,
        Ok(TransferOutcome::Unknown)
    );
}

#[tokio::test]
async fn a_5xx_storm_opens_the_breaker_which_fails_fast_then_recovers() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.retry.max_attempts = 1;
    c.breaker = BreakerConfig {
        window: 4,
        min_calls: 4,
        failure_ratio: 0.5,
        slow_ratio: 1.0,
        slow_call: Duration::from_secs(10),
        open_for: Duration::from_millis(400),
        probes: 2,
    };
    let bank = HttpBank::new(c).unwrap();
    for _ in 0..4 {
        assert_eq!(bank.accounts("c").await, Err(ConnectorError::Unavailable));
    }
    assert!(matches!(bank.breaker_state(), BreakerState::Open { .. }));
    let before = hits(&server).await;
    assert_eq!(before, 4);
    for _ in 0..20 {
        assert!(matches!(
            bank.accounts("c").await,
            Err(ConnectorError::CircuitOpen { .. })
        ));
    }
    assert_eq!(
        hits(&server).await,
        before,
        "no call reaches the bank while open"
    );

    // The bank recovers; after `open_for` the probes close the breaker.
    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(accounts_body()))
        .mount(&server)
        .await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(bank.accounts("c").await.is_ok(), "first probe");
    assert!(matches!(
        bank.breaker_state(),
        BreakerState::HalfOpen { .. }
    ));
    assert!(bank.accounts("c").await.is_ok(), "second probe");
    assert_eq!(bank.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.retry.max_attempts = 1;
    c.breaker = BreakerConfig {
        window: 2,
        min_calls: 2,
        failure_ratio: 0.5,
        slow_ratio: 1.0,
        slow_call: Duration::from_secs(10),
        open_for: Duration::from_millis(200),
        probes: 1,
    };
    let bank = HttpBank::new(c).unwrap();
    for _ in 0..2 {
        let _ = bank.accounts("c").await;
    }
    assert!(matches!(bank.breaker_state(), BreakerState::Open { .. }));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(bank.accounts("c").await, Err(ConnectorError::Unavailable));
    assert!(matches!(bank.breaker_state(), BreakerState::Open { .. }));
    assert_eq!(hits(&server).await, 3);
}

#[tokio::test]
async fn retry_after_is_honoured_and_retries_keep_the_key_and_interaction() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{PREFIX}/domestic-payments")))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{PREFIX}/domestic-payments")))
        .respond_with(ResponseTemplate::new(201).set_body_json(payment("PAY-1")))
        .with_priority(2)
        .mount(&server)
        .await;
    let bank = HttpBank::new(config(&server)).unwrap();
    let started = Instant::now();
    assert_eq!(
        bank.transfer("c", &transfer("key-1")).await,
        Ok(TransferOutcome::Settled {
            reference: "PAY-1".into()
        })
    );
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited as the bank asked"
    );
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 2);
    let h = |r: &Request, n: &str| r.headers.get(n).unwrap().to_str().unwrap().to_owned();
    assert_eq!(h(&reqs[0], "x-idempotency-key"), "key-1");
    assert_eq!(h(&reqs[1], "x-idempotency-key"), "key-1");
    assert_eq!(
        h(&reqs[0], "x-fapi-interaction-id"),
        h(&reqs[1], "x-fapi-interaction-id")
    );
    let body: serde_json::Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(
        body["Data"]["Initiation"]["InstructedAmount"]["Amount"],
        "10.50"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_gives_up_and_unkeyed_writes_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "120"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{PREFIX}/one-time-codes")))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let bank = HttpBank::new(config(&server)).unwrap();
    assert_eq!(bank.payees("c").await, Err(ConnectorError::Unavailable));
    assert_eq!(hits(&server).await, 1, "a two-minute wait is not taken");
    assert_eq!(
        bank.send_code("c", "transfer", "b").await,
        Err(ConnectorError::Unavailable)
    );
    assert_eq!(hits(&server).await, 2, "a code is never texted twice");
}

#[tokio::test]
async fn transient_failures_are_retried_up_to_three_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(accounts_body()))
        .with_priority(2)
        .mount(&server)
        .await;
    let bank = HttpBank::new(config(&server)).unwrap();
    assert!(bank.accounts("c").await.is_ok());
    assert_eq!(hits(&server).await, 3);

    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    assert_eq!(bank.accounts("c").await, Err(ConnectorError::Unavailable));
    assert_eq!(hits(&server).await, 3, "three attempts, no more");
}

#[tokio::test]
async fn answers_that_break_the_contract_are_errors() {
    let server = MockServer::start().await;
    let cases: Vec<(&str, ResponseTemplate)> = vec![
        ("/accounts", ResponseTemplate::new(200).set_body_string("{not json")),
        (
            "/payees",
            ResponseTemplate::new(200).set_body_json(json!({"Data": {"Payee": "nobody"}})),
        ),
        (
            "/cards",
            // An error inside a 200.
            ResponseTemplate::new(200).set_body_json(json!({"Code": "500", "Message": "oops",
                "Errors": [{"ErrorCode": "UK.OBIE.UnexpectedError", "Message": "oops"}]})),
        ),
        (
            "/accounts/a/balances",
            // Three decimals for pounds.
            ResponseTemplate::new(200).set_body_json(json!({"Data": {"Balance": [
                {"Type": "InterimBooked", "Amount": {"Amount": "1.005", "Currency": "GBP"}, "CreditDebitIndicator": "Credit"},
                {"Type": "InterimAvailable", "Amount": {"Amount": "1.00", "Currency": "GBP"}, "CreditDebitIndicator": "Credit"}
            ]}})),
        ),
        (
            "/domestic-payments/by-idempotency-key/k",
            ResponseTemplate::new(302).insert_header("location", "http://elsewhere.example/"),
        ),
    ];
    for (p, response) in cases {
        Mock::given(path(format!("{PREFIX}{p}")))
            .respond_with(response)
            .mount(&server)
            .await;
    }
    let bank = HttpBank::new(config(&server)).unwrap();
    let malformed = |r: Result<(), ConnectorError>| matches!(r, Err(ConnectorError::Malformed(_)));
    assert!(malformed(bank.accounts("c").await.map(drop)));
    assert!(malformed(bank.payees("c").await.map(drop)));
    assert!(malformed(bank.cards("c").await.map(drop)));
    assert!(malformed(bank.balance("c", "a").await.map(drop)));
    assert!(malformed(bank.transfer_status("c", "k").await.map(drop)));
}

#[tokio::test]
async fn huge_answers_are_refused_and_a_huge_payment_answer_is_unknown() {
    let server = MockServer::start().await;
    let huge = "x".repeat(2 << 20);
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string(huge.clone()))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string(huge))
        .mount(&server)
        .await;
    let bank = HttpBank::new(config(&server)).unwrap();
    assert!(matches!(
        bank.accounts("c").await,
        Err(ConnectorError::Malformed(m)) if m.contains("larger than")
    ));
    assert_eq!(
        hits(&server).await,
        1,
        "not retried: it would be as large again"
    );
    assert_eq!(
        bank.transfer("c", &transfer("k-huge")).await,
        Ok(TransferOutcome::Unknown)
    );
}

#[tokio::test]
async fn payment_verdicts_map_and_a_bank_that_cannot_be_reached_is_not_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"Code": "422",
            "Message": "Insufficient funds",
            "Errors": [{"ErrorCode": "BANKBOT.InsufficientFunds", "Message": "Insufficient funds"}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{PREFIX}/domestic-payments/by-idempotency-key/nope")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"Code": "404",
            "Message": "not found", "Errors": [{"ErrorCode": "UK.OBIE.Resource.NotFound", "Message": "not found"}]})))
        .mount(&server)
        .await;
    let bank = HttpBank::new(config(&server)).unwrap();
    assert_eq!(
        bank.transfer("c", &transfer("k-poor")).await,
        Ok(TransferOutcome::InsufficientFunds)
    );
    assert_eq!(bank.transfer_status("c", "nope").await, Ok(None));

    // Nothing listens here: the request never left, so it is a plain failure.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut c = HttpConfig::new(format!("http://{closed}{PREFIX}"));
    c.retry.base = Duration::from_millis(5);
    let unreachable = HttpBank::new(c).unwrap();
    assert_eq!(
        unreachable.transfer("c", &transfer("k-off")).await,
        Err(ConnectorError::Unavailable)
    );
}
