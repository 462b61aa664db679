use bankbot_connectors::wire::{BASE_PATH, codes};
use serde_json::json;

use crate::helpers::{admin, payment, send, spawn_bank, spawn_bank_with};

#[tokio::test]
async fn the_bearer_token_is_enforced_on_the_bank_api_only() {
    let bank = spawn_bank_with(|c| c.token = Some("s3cret".into())).await;
    let alice = bank.client("alice");

    let r = alice.get("/accounts").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.error_code(), "BANKBOT.Unauthorized");
    let r = alice.clone().with_token("wrong").get("/accounts").await;
    assert_eq!(r.status, 401);
    let r = alice.clone().with_token("s3cret").get("/accounts").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Unauthorised requests change nothing, not even enrolment.
    let r = alice.pay("k", "acc-current", "payee-mum", "1.00").await;
    assert_eq!(r.status, 401);
    assert_eq!(bank.audit().await["payments"], 0);

    let r = admin(bank.addr(), "GET", "/sandbox/health", None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn faults_are_switched_live_and_spare_the_admin_routes() {
    let bank = spawn_bank().await;
    let alice = bank.client("alice");
    let addr = bank.addr();

    let r = admin(
        addr,
        "PUT",
        "/sandbox/faults",
        Some(&json!({"error_rate": 1})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = alice.get("/accounts").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.error_code(), codes::UNEXPECTED);
    let r = admin(addr, "GET", "/sandbox/health", None).await;
    assert_eq!(r.status, 200);
    let r = admin(addr, "GET", "/sandbox/faults", None).await;
    assert_eq!(r.json()["error_rate"], 1.0);
    assert_eq!(r.json()["scope"], "all");
    // Nothing was done behind the 503s.
    let r = alice.pay("k1", "acc-current", "payee-mum", "1.00").await;
    assert_eq!(r.status, 503);
    assert_eq!(bank.audit().await["payments"], 0);

    // Scoped to payments: reads work, payments fail.
    let scoped = json!({"error_rate": 1, "scope": "payments"});
    let r = admin(addr, "PUT", "/sandbox/faults", Some(&scoped)).await;
    assert_eq!(r.status, 200);
    assert_eq!(alice.get("/accounts").await.status, 200);
    let r = alice.pay("k1", "acc-current", "payee-mum", "1.00").await;
    assert_eq!(r.status, 503);

    for bad in [
        json!({"error_rate": 2}),
        json!({"timeout_rate": -0.1}),
        json!({"eror_rate": 1}),
        json!({"scope": "everything"}),
    ] {
        let r = admin(addr, "PUT", "/sandbox/faults", Some(&bad)).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    // A slow bank still answers, and does the work.
    let slow = json!({"latency_ms": 5, "timeout_rate": 1, "timeout_ms": 20, "scope": "writes"});
    let r = admin(addr, "PUT", "/sandbox/faults", Some(&slow)).await;
    assert_eq!(r.status, 200);
    let r = alice.pay("k1", "acc-current", "payee-mum", "1.00").await;
    assert_eq!(r.status, 201, "{}", r.text());

    let r = admin(addr, "PUT", "/sandbox/faults", Some(&json!({}))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["timeout_ms"], 30_000);
    let r = alice.pay("k1", "acc-current", "payee-mum", "1.00").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(bank.audit().await["payments"], 1);
}

#[tokio::test]
async fn errors_always_have_the_documented_shape() {
    let bank = spawn_bank().await;
    let addr = bank.addr();
    let alice = bank.client("alice");

    // No or a bad customer header.
    let r = send(addr, "GET", &format!("{BASE_PATH}/accounts"), &[], None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), codes::HEADER_MISSING);
    let long = "c".repeat(129);
    for bad in ["two words", long.as_str()] {
        let r = send(
            addr,
            "GET",
            &format!("{BASE_PATH}/accounts"),
            &[("x-customer-id", bad)],
            None,
        )
        .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.error_code(), codes::FIELD_INVALID);
    }

    // Unknown routes and methods.
    let r = alice.get("/nowhere").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), codes::NOT_FOUND);
    let r = send(addr, "GET", "/", &[], None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), codes::NOT_FOUND);
    let r = alice.call("DELETE", "/accounts", None, None).await;
    assert_eq!(r.status, 405);
    r.error_code();

    // Malformed bodies say what is wrong.
    let path = format!("{BASE_PATH}/domestic-payments");
    let headers = [("x-customer-id", "alice"), ("x-idempotency-key", "k")];
    let r = send(addr, "POST", &path, &headers, Some(b"{\"Data\": ")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), codes::FIELD_INVALID);
    assert!(r.text().contains("EOF"), "{}", r.text());
    let r = send(addr, "POST", &path, &headers, Some(b"{\"Data\": {}}")).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Initiation"), "{}", r.text());
    // Refused on the declared length, before the body is read.
    let too_long = [
        ("x-customer-id", "alice"),
        ("x-idempotency-key", "k-big"),
        ("Content-Type", "application/json"),
        ("Content-Length", "70000"),
    ];
    let r = send(addr, "POST", &path, &too_long, None).await;
    assert_eq!(r.status, 413);
    r.error_code();
    let r = send(
        addr,
        "POST",
        &path,
        &headers,
        Some(payment_bytes().as_slice()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());

    // The interaction id is echoed, on success and on error.
    for path in ["/accounts", "/nowhere"] {
        let r = send(
            addr,
            "GET",
            &format!("{BASE_PATH}{path}"),
            &[
                ("x-customer-id", "alice"),
                ("x-fapi-interaction-id", "trace-42"),
            ],
            None,
        )
        .await;
        assert_eq!(r.header("x-fapi-interaction-id"), Some("trace-42"));
    }
    assert_eq!(bank.audit().await["payments"], 1);
}

fn payment_bytes() -> Vec<u8> {
    serde_json::to_vec(&payment("acc-current", "payee-mum", "1.00")).unwrap()
}
