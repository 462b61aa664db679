//! The payments crash test. Customers confirm transfers through `bankbot
//! serve` (a real process, SQLite or PostgreSQL) acting on the sandbox bank
//! (a real process, `bankbot sandbox-bank`) while a driver kills the server
//! with SIGKILL at random moments and restarts it, and the bank aborts
//! itself between committing a payment and answering (and is restarted).
//!
//! Afterwards: no idempotency key has two ledger entries, every transfer a
//! customer was told is done is in the ledger exactly once, money is
//! conserved, each customer's balance is exactly their opening balance less
//! the payments the bank booked, the bot's journal agrees with the bank, and
//! nothing is left without a final outcome 30 s after the last restart.
//!
//! CI runs a small count; `BANKBOT_CRASH_CUSTOMERS`, `BANKBOT_CRASH_TRANSFERS`
//! and `BANKBOT_CRASH_KILLS` scale it up. The figures are printed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bankbot::settings::{DatabaseUrl, Settings};
use bankbot::store::{PaymentState, Store};
use bankbot_connectors::Bank;
use bankbot_connectors::http::{HttpBank, HttpConfig};
use tokio::sync::Mutex;

use crate::common::{bankbot, repo_model};
use crate::helpers::*;

const OPENING_MINOR: i64 = 123_456;
const CODE: &str = "246810";

pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A free loopback port (bound and released): the processes restart on the
/// same address. Drawn at random below the kernel's ephemeral range, so
/// tests running at the same time (each restarting its processes on fixed
/// ports) do not draw the same one, as consecutive `bind(0)`s can.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Spawns `cmd` until it prints a line starting with `ready` (the port may
/// still be held for a moment by the previous process), then keeps
/// draining its stdout.
pub fn spawn_ready(cmd: &mut std::process::Command, ready: &str) -> Child {
    for _ in 0..50 {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with(ready) => break true,
                Some(Ok(_)) => {}
                _ => break false,
            }
        };
        if started {
            std::thread::spawn(move || for _ in lines {});
            return child;
        }
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{cmd:?} did not start");
}

fn start_bank(port: u16, dir: &Path, crash_rate: f64) -> Child {
    let mut cmd = bankbot();
    cmd.args(["sandbox-bank", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--db")
        .arg(dir.join("bank.sqlite3"))
        .args(["--fixed-code", CODE])
        .args(["--crash-after-apply-rate", &crash_rate.to_string()]);
    spawn_ready(&mut cmd, "sandbox-bank: listening on")
}

/// `bankbot serve` on `port` for a crash test: the test keys, no admin
/// port, generous rate limits, on SQLite in `dir` or the PostgreSQL `url`.
pub fn serve_command(
    port: u16,
    dir: &Path,
    url: Option<&str>,
    log_level: &str,
) -> std::process::Command {
    let mut cmd = bankbot();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", ""])
        .arg("--data-dir")
        .arg(dir)
        .arg("--model")
        .arg(repo_model())
        .env("BANKBOT_JWKS_FILE", fixtures().join("jwks.json"))
        .env("BANKBOT_JWT_ISSUER", ISSUER)
        .env("BANKBOT_JWT_AUDIENCE", AUDIENCE)
        .env("BANKBOT_CUSTOMER_RATE_PER_SECOND", "1000")
        .env("BANKBOT_CUSTOMER_BURST", "1000")
        .env("BANKBOT_LOG_LEVEL", log_level)
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL");
    if let Some(url) = url {
        cmd.env("DATABASE_URL", url);
    }
    cmd
}

fn start_bot(port: u16, bank_port: u16, dir: &Path, url: Option<&str>) -> Child {
    let mut cmd = serve_command(port, dir, url, "warn");
    cmd.args([
        "--bank-url",
        &format!("http://127.0.0.1:{bank_port}/open-banking/v3.1"),
    ])
    .env("BANKBOT_BANK_DEADLINE_MS", "2000");
    // Reconcile briskly so the test ends soon after the last restart.
    let config = dir.join("crash.toml");
    std::fs::write(
        &config,
        "[bank]\nreconcile_interval_ms = 250\nreconcile_after_ms = 2500\n",
    )
    .unwrap();
    cmd.arg("--config").arg(&config);
    spawn_ready(&mut cmd, "bankbot: listening on")
}

/// A client that reconnects until the server answers.
pub async fn client(
    addr: SocketAddr,
) -> bankbot_proto::v1::conversation_service_client::ConversationServiceClient<
    tonic::transport::Channel,
> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(20))
        .connect_lazy();
    bankbot_proto::v1::conversation_service_client::ConversationServiceClient::new(channel)
}

/// Sends one message until the server answers it (the same client message
/// id every time, as a channel adapter would); the joined reply text.
pub async fn deliver(
    addr: SocketAddr,
    who: &str,
    conversation: &str,
    cmid: &str,
    text: &str,
    deadline: Instant,
) -> Option<String> {
    while Instant::now() < deadline {
        let mut c = client(addr).await;
        match send(&mut c, who, conversation, cmid, text).await {
            Ok(r) => {
                return Some(
                    r.messages
                        .iter()
                        .map(|m| m.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" | "),
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(150)).await,
        }
    }
    None
}

pub async fn open(addr: SocketAddr, who: &str, deadline: Instant) -> Option<String> {
    while Instant::now() < deadline {
        let mut c = client(addr).await;
        let r = c
            .start_conversation(req(
                who,
                bankbot_proto::v1::StartConversationRequest {
                    channel: "web".into(),
                    locale: "en-GB".into(),
                    metadata: Default::default(),
                },
            ))
            .await;
        if let Ok(r) = r {
            return Some(r.into_inner().conversation_id);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    None
}

/// What the customers saw.
#[derive(Debug, Default)]
struct Seen {
    /// (customer, amount in minor units) told "on its way".
    done: Vec<(String, i64)>,
    /// Transfers whose conversation got stuck before the code (a restart
    /// lost an unacknowledged turn the customer gave up on).
    abandoned: usize,
    /// Told something else (unknown outcome, bank unavailable), by reply.
    other: usize,
    replies: BTreeMap<String, usize>,
}

async fn crash_test(backend: Backend) {
    let customers = env_count("BANKBOT_CRASH_CUSTOMERS", 4);
    let transfers = env_count("BANKBOT_CRASH_TRANSFERS", 2);
    let max_kills = env_count("BANKBOT_CRASH_KILLS", 3);
    repo_model();
    let db = Db::fresh(backend).await;
    let bank_dir = tempfile::tempdir().unwrap();
    let (bank_port, bot_port) = (free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{bot_port}").parse().unwrap();

    let bank = Arc::new(Mutex::new(start_bank(bank_port, bank_dir.path(), 0.2)));
    let bot = Arc::new(Mutex::new(start_bot(
        bot_port,
        bank_port,
        db.dir.path(),
        db.url.as_deref(),
    )));
    let finished = Arc::new(AtomicBool::new(false));
    let bank_restarts = Arc::new(AtomicUsize::new(0));

    // The bank watcher: restarts the sandbox whenever it aborted itself.
    let watcher = {
        let (bank, finished, restarts) = (bank.clone(), finished.clone(), bank_restarts.clone());
        let dir = bank_dir.path().to_path_buf();
        tokio::spawn(async move {
            while !finished.load(Ordering::SeqCst) {
                {
                    let mut b = bank.lock().await;
                    if let Ok(Some(_)) = b.try_wait() {
                        *b = start_bank(bank_port, &dir, 0.2);
                        restarts.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The killer: SIGKILL at random moments, restart at once.
    let kills = Arc::new(AtomicUsize::new(0));
    let last_restart = Arc::new(std::sync::Mutex::new(Instant::now()));
    let killer = {
        let (bot, finished, kills, last) = (
            bot.clone(),
            finished.clone(),
            kills.clone(),
            last_restart.clone(),
        );
        let (dir, url) = (db.dir.path().to_path_buf(), db.url.clone());
        tokio::spawn(async move {
            while !finished.load(Ordering::SeqCst) && kills.load(Ordering::SeqCst) < max_kills {
                let pause = 500 + u64::from(rand::random::<u16>() % 1_500);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                if finished.load(Ordering::SeqCst) {
                    break;
                }
                let mut b = bot.lock().await;
                b.kill().unwrap(); // SIGKILL
                b.wait().unwrap();
                kills.fetch_add(1, Ordering::SeqCst);
                *b = start_bot(bot_port, bank_port, &dir, url.as_deref());
                *last.lock().unwrap() = Instant::now();
            }
        })
    };

    // The customers: each confirms its transfers one after another.
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut tasks = Vec::new();
    for i in 0..customers {
        let (seen, kills) = (seen.clone(), kills.clone());
        tasks.push(tokio::spawn(async move {
            let who = format!("crash-cust-{i}");
            // At least `transfers` each, and on until the kills are done.
            for t in 0..200 {
                if t >= transfers && kills.load(Ordering::SeqCst) >= max_kills {
                    break;
                }
                // Distinct amounts identify the transfers in the ledger.
                let minor = 100 + (i as i64) * 1_000 + t as i64 + 1;
                let Some(conv) = open(addr, &who, deadline).await else {
                    seen.lock().unwrap().abandoned += 1;
                    continue;
                };
                let amount = format!("£{}.{:02}", minor / 100, minor % 100);
                let steps = [
                    format!("send {amount} to Mum from my current account"),
                    "yes".to_owned(),
                    CODE.to_owned(),
                ];
                let mut last = None;
                for (n, text) in steps.iter().enumerate() {
                    last = deliver(addr, &who, &conv, &format!("m{t}-{n}"), text, deadline).await;
                    if last.is_none() {
                        break;
                    }
                }
                let mut s = seen.lock().unwrap();
                match last {
                    Some(text) if text.contains("is on its way") => {
                        s.done.push((who.clone(), minor))
                    }
                    Some(text) => {
                        s.other += 1;
                        *s.replies.entry(text).or_default() += 1;
                    }
                    None => s.abandoned += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    finished.store(true, Ordering::SeqCst);
    killer.await.unwrap();
    watcher.await.unwrap();
    let last_restart = *last_restart.lock().unwrap();

    // The bank stays up from here (no more crashes) for the reconciler.
    {
        let mut b = bank.lock().await;
        if b.try_wait().unwrap().is_none() {
            b.kill().unwrap();
            b.wait().unwrap();
        }
        *b = start_bank(bank_port, bank_dir.path(), 0.0);
    }
    let mut settings = Settings {
        data_dir: db.dir.path().to_path_buf(),
        ..Settings::default()
    };
    settings.database_url = DatabaseUrl(db.url.clone().unwrap_or_default());
    let store = Store::connect(&settings).await.unwrap();
    let open_states = |counts: &[(PaymentState, i64)]| -> i64 {
        counts
            .iter()
            .filter(|(s, _)| !s.is_final())
            .map(|(_, n)| n)
            .sum()
    };
    let mut counts = store.payment_counts().await.unwrap();
    while open_states(&counts) > 0 && last_restart.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        counts = store.payment_counts().await.unwrap();
    }
    let stuck = open_states(&counts);

    // The bank's side.
    let conn = HttpBank::new(HttpConfig::new(format!(
        "http://127.0.0.1:{bank_port}/open-banking/v3.1"
    )))
    .unwrap();
    let audit: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{bank_port}/sandbox/audit"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let today =
        bankbot_connectors::Day::parse(&bankbot_models::entities::Date::today_utc().to_string())
            .unwrap();
    let mut booked: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for i in 0..customers {
        let who = format!("crash-cust-{i}");
        let txs = conn
            .transactions(&who, "acc-current", &today, &today, 100)
            .await
            .unwrap_or_default();
        booked.insert(who, txs.iter().map(|t| -t.amount.minor).collect());
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let attempted = seen.done.len() + seen.other + seen.abandoned;
    let lost = seen
        .done
        .iter()
        .filter(|(who, minor)| booked[who].iter().filter(|m| *m == minor).count() != 1)
        .count();
    let duplicates = booked
        .values()
        .map(|ms| {
            let mut v = ms.clone();
            v.sort_unstable();
            v.windows(2).filter(|w| w[0] == w[1]).count()
        })
        .sum::<usize>();
    let bank_payments = audit["payments"].as_i64().unwrap();
    let settled: i64 = counts
        .iter()
        .filter(|(s, _)| *s == PaymentState::Settled)
        .map(|(_, n)| n)
        .sum();
    println!(
        "crash test ({backend:?}): customers {customers}, transfers attempted {attempted}, told done {}, \
         told other {}, abandoned {}, bot kills {}, bank crashes {}, bank payments {bank_payments}, \
         journal {counts:?}, duplicate keys {}, duplicate debits {duplicates}, lost {lost}, stuck {stuck}\n\
         other replies: {:?}",
        seen.done.len(),
        seen.other,
        seen.abandoned,
        kills.load(Ordering::SeqCst),
        bank_restarts.load(Ordering::SeqCst),
        audit["duplicate_keys"],
        seen.replies,
    );
    assert_eq!(audit["duplicate_keys"], 0, "{audit}");
    assert!(
        audit["ledger_entries_per_key_max"].as_i64().unwrap() <= 1,
        "{audit}"
    );
    assert_eq!(
        audit["postings_sum_minor"], 0,
        "money is conserved: {audit}"
    );
    assert_eq!(audit["unbalanced_entries"], 0, "{audit}");
    assert_eq!(duplicates, 0, "{booked:?}");
    assert_eq!(
        lost, 0,
        "told done but not booked once: {:?} vs {booked:?}",
        seen.done
    );
    assert_eq!(
        stuck, 0,
        "payments without an outcome 30 s after the last restart: {counts:?}"
    );
    assert_eq!(
        settled, bank_payments,
        "the journal agrees with the bank: {counts:?}"
    );
    for (who, ms) in &booked {
        let key = format!("{who}/acc-current");
        assert_eq!(
            audit["balances"][&key].as_i64().unwrap_or(OPENING_MINOR),
            OPENING_MINOR - ms.iter().sum::<i64>(),
            "{who}: opening balance less what was booked"
        );
    }
    assert!(!seen.done.is_empty(), "some transfers completed: {seen:?}");

    store.close().await;
    for p in [&bot, &bank] {
        let mut c = p.lock().await;
        let _ = c.kill();
        let _ = c.wait();
    }
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_survive_crashes_exactly_once_sqlite() {
    crash_test(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_survive_crashes_exactly_once_postgres() {
    crash_test(Backend::Postgres).await;
}
