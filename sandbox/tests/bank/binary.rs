//! The `sandbox-bank` binary: its start-up line, flag checking, signals,
//! and the crash fault (which aborts the process, so it is only testable
//! out of process).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use bankbot_connectors::wire::{BASE_PATH, DomesticPayment, Envelope};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{Client, admin, payment, try_send};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-bank");

/// Starts the binary on a free port and waits for its listening line.
async fn start(db: &Path, extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .args(extra)
        .env_remove("SANDBOX_BANK_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .unwrap()
        .expect("the listening line");
    let addr = line
        .strip_prefix("sandbox-bank: listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .parse()
        .unwrap();
    (child, addr)
}

fn client(addr: SocketAddr) -> Client {
    Client {
        addr,
        customer: Some("alice".into()),
        token: None,
    }
}

#[tokio::test]
async fn a_crash_after_commit_keeps_the_payment_and_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.sqlite");
    let (mut child, addr) = start(&db, &["--crash-after-apply-rate", "1"]).await;

    // Reads are untouched by the crash fault.
    assert_eq!(client(addr).balance("acc-current").await, 123_456);
    let body = serde_json::to_vec(&payment("acc-current", "payee-mum", "42.00")).unwrap();
    let headers = [("x-customer-id", "alice"), ("x-idempotency-key", "crash-1")];
    let path = format!("{BASE_PATH}/domestic-payments");
    let answer = try_send(addr, "POST", &path, &headers, Some(&body)).await;
    assert!(answer.is_none(), "the bank answered: {answer:?}");
    let status = child.wait().await.unwrap();
    assert!(!status.success());
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(6), "{status:?}");
    }

    // After a restart the payment is there, once, and the retry finds it.
    let (_child, addr) = start(&db, &[]).await;
    let alice = client(addr);
    let found = alice
        .get("/domestic-payments/by-idempotency-key/crash-1")
        .await;
    assert_eq!(found.status, 200, "{}", found.text());
    let id = found
        .wire::<Envelope<DomesticPayment>>()
        .data
        .domestic_payment_id;
    let retry = alice
        .pay("crash-1", "acc-current", "payee-mum", "42.00")
        .await;
    assert_eq!(retry.status, 201);
    assert_eq!(
        retry
            .wire::<Envelope<DomesticPayment>>()
            .data
            .domestic_payment_id,
        id
    );
    assert_eq!(alice.balance("acc-current").await, 123_456 - 4_200);
    let audit = admin(addr, "GET", "/sandbox/audit", None).await.json();
    assert_eq!(audit["payments"], 1);
    assert_eq!(audit["postings_sum_minor"], 0);
}

#[tokio::test]
async fn bad_flags_exit_with_status_2_and_say_why() {
    for (flag, value) in [
        ("--error-rate", "2"),
        ("--timeout-rate", "-0.5"),
        ("--crash-after-apply-rate", "often"),
        ("--fault-scope", "reads"),
        ("--fixed-code", "12"),
        ("--listen", "nowhere"),
    ] {
        let out = Command::new(BIN)
            .args([flag, value])
            .env_remove("SANDBOX_BANK_TOKEN")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_bank_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(&dir.path().join("bank.sqlite"), &["--token", "t0k"]).await;
    assert_eq!(
        admin(addr, "GET", "/sandbox/health", None).await.status,
        200
    );
    assert_eq!(client(addr).get("/accounts").await.status, 401);
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status:?}");
}
