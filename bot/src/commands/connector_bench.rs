//! `bankbot bench connector`: what the HTTP connector costs per call and
//! how its circuit breaker behaves, against the sandbox bank on loopback
//! (started in this process on a fresh ledger).
//!
//! - Overhead: the same request timed as a bare HTTP exchange (reqwest, no
//!   parsing) and through the connector (deadline, breaker, retry policy,
//!   body cap, JSON and contract checks, mapping to domain types); p50/p99
//!   of each and of the difference of the medians.
//! - Payments: keyed transfers through the connector, each a ledger write.
//! - Breaker: with the bank failing every call, how many calls and how long
//!   until it opens, how fast it refuses while open, and how long after the
//!   bank recovers until it is closed again.

use std::time::{Duration, Instant};

use anyhow::Context;
use bankbot_connectors::http::{HttpBank, HttpConfig};
use bankbot_connectors::resilience::{BreakerConfig, BreakerState, RetryPolicy};
use bankbot_connectors::{Bank, ConnectorError, Money, TransferRequest};

use super::bench::percentile;
use crate::cli::ConnectorBenchArgs;

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    let (p50, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
    println!(
        "{name:<28} n={:<6} p50 {:>9.1} µs   p99 {:>9.1} µs   max {:>9.1} µs",
        v.len(),
        us(p50),
        us(p99),
        us(v.last().copied().unwrap_or_default())
    );
    (p50, p99)
}

async fn faults(addr: std::net::SocketAddr, body: serde_json::Value) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .put(format!("http://{addr}/sandbox/faults"))
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "setting faults: {}", r.status());
    Ok(())
}

pub fn run(args: &ConnectorBenchArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: &ConnectorBenchArgs) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir()?;
    let sandbox = bankbot_sandbox::start(bankbot_sandbox::Config {
        listen: "127.0.0.1:0".parse()?,
        database: dir.path().join("bench-bank.sqlite3"),
        ..bankbot_sandbox::Config::default()
    })
    .await
    .context("starting the sandbox bank")?;
    let base = sandbox.base_url();
    let bank = HttpBank::new(HttpConfig::new(base.clone()))
        .map_err(|e| anyhow::anyhow!("connector: {e}"))?;
    let raw = reqwest::Client::new();
    let customer = "bench-customer";
    // Enrol and warm the connection pools.
    for _ in 0..50 {
        bank.balance(customer, "acc-current")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        raw.get(format!("{base}/accounts/acc-current/balances"))
            .header("x-customer-id", customer)
            .send()
            .await?
            .bytes()
            .await?;
    }
    println!(
        "connector benchmark against the sandbox bank on {} ({} calls each)",
        sandbox.local_addr(),
        args.calls
    );
    let (mut bare, mut through) = (Vec::new(), Vec::new());
    for _ in 0..args.calls {
        let t = Instant::now();
        let r = raw
            .get(format!("{base}/accounts/acc-current/balances"))
            .header("x-customer-id", customer)
            .send()
            .await?;
        r.bytes().await?;
        bare.push(t.elapsed());
        let t = Instant::now();
        bank.balance(customer, "acc-current")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        through.push(t.elapsed());
    }
    let (b50, b99) = summary("balance, bare HTTP", bare);
    let (c50, c99) = summary("balance, connector", through);
    println!(
        "{:<28} p50 {:>9.1} µs   p99 {:>9.1} µs",
        "connector overhead",
        us(c50.saturating_sub(b50)),
        us(c99.saturating_sub(b99))
    );
    let mut pays = Vec::new();
    for i in 0..args.calls.min(2_000) {
        let request = TransferRequest {
            idempotency_key: format!("bench-{i}"),
            from_account: "acc-savings".into(),
            payee: "payee-mum".into(),
            amount: Money {
                minor: 1,
                currency: "GBP".into(),
            },
        };
        let t = Instant::now();
        bank.transfer(customer, &request)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        pays.push(t.elapsed());
    }
    summary("transfer (ledger write)", pays);

    // The breaker under a 5xx storm, then recovery.
    let breaker = BreakerConfig {
        window: 20,
        min_calls: 10,
        failure_ratio: 0.5,
        slow_ratio: 0.8,
        slow_call: Duration::from_secs(2),
        open_for: Duration::from_millis(args.open_for_ms),
        probes: 3,
    };
    let mut config = HttpConfig::new(base.clone());
    config.breaker = breaker.clone();
    config.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    let guarded = HttpBank::new(config).map_err(|e| anyhow::anyhow!("connector: {e}"))?;
    faults(sandbox.local_addr(), serde_json::json!({"error_rate": 1.0})).await?;
    let storm = Instant::now();
    let mut calls = 0;
    while !matches!(guarded.breaker_state(), BreakerState::Open { .. }) {
        calls += 1;
        let _ = guarded.accounts(customer).await;
        anyhow::ensure!(calls < 1_000, "the breaker did not open");
    }
    let opened_after = storm.elapsed();
    let mut refusals = Vec::new();
    for _ in 0..1_000 {
        let t = Instant::now();
        let r = guarded.accounts(customer).await;
        refusals.push(t.elapsed());
        anyhow::ensure!(
            matches!(r, Err(ConnectorError::CircuitOpen { .. })),
            "a call went through while open: {r:?}"
        );
    }
    faults(sandbox.local_addr(), serde_json::json!({})).await?;
    let recovered = Instant::now();
    let mut refused_while_waiting = 0;
    while guarded.breaker_state() != BreakerState::Closed {
        if guarded.accounts(customer).await.is_err() {
            refused_while_waiting += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::ensure!(
            recovered.elapsed() < Duration::from_secs(60),
            "the breaker did not close"
        );
    }
    let closed_after = recovered.elapsed();
    println!(
        "breaker (window {}, min {} calls, open at {:.0}% failures, open for {} ms, {} probes):",
        breaker.window,
        breaker.min_calls,
        breaker.failure_ratio * 100.0,
        args.open_for_ms,
        breaker.probes
    );
    println!(
        "  opened after {calls} failing calls in {:.1} ms",
        opened_after.as_secs_f64() * 1000.0
    );
    summary("  refusal while open", refusals);
    println!(
        "  closed {:.1} ms after the bank recovered ({refused_while_waiting} calls refused meanwhile)",
        closed_after.as_secs_f64() * 1000.0
    );
    sandbox.shutdown().await;
    Ok(true)
}
