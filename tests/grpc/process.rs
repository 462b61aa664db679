//! The `bankbot serve` process itself: configuration from the environment,
//! refusing to start without keys, SIGKILL in the middle of a burst of turns
//! (no acknowledged message lost), and a clean SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bankbot_proto::v1 as pb;
use bankbot_proto::v1::conversation_service_client::ConversationServiceClient;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{bankbot, repo_model, repo_root};
use crate::helpers::*;

/// `bankbot serve` on port 0 with the test keys and `db`; returns the child
/// and the address it printed.
fn serve(db: &Db) -> (Child, std::net::SocketAddr) {
    let mut cmd = bankbot();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", ""])
        .arg("--data-dir")
        .arg(db.dir.path())
        .arg("--model")
        .arg(repo_model())
        .env("BANKBOT_JWKS_FILE", fixtures().join("jwks.json"))
        .env("BANKBOT_JWT_ISSUER", ISSUER)
        .env("BANKBOT_JWT_AUDIENCE", AUDIENCE)
        .env("BANKBOT_LOG_FORMAT", "json")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(url) = &db.url {
        cmd.env("DATABASE_URL", url);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(a) = line.strip_prefix("bankbot: listening on ") {
            break a.parse().unwrap();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

async fn connect(addr: std::net::SocketAddr) -> ConversationServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    wait_serving(channel.clone()).await;
    ConversationServiceClient::new(channel)
}

#[test]
fn serve_refuses_to_start_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = bankbot()
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", ""])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--model")
        .arg(repo_model())
        .env_remove("BANKBOT_JWKS_FILE")
        .env_remove("BANKBOT_JWT_HS256_SECRET_FILE")
        .env("BANKBOT_JWT_ISSUER", ISSUER)
        .env("BANKBOT_JWT_AUDIENCE", AUDIENCE)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no JWT key configured"), "{err}");
    assert!(err.contains("--insecure-dev"), "{err}");
}

#[test]
fn config_print_layers_sources_and_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bankbot.toml");
    std::fs::write(
        &file,
        "[limits]\nmax_text_bytes = 1000\n[auth]\nissuer = \"from-file\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bankbot"))
        .current_dir(repo_root())
        .args(["config", "print", "--config"])
        .arg(&file)
        .args(["--max-text-bytes", "2000"])
        .env("DATABASE_URL", "postgres://bot:hunter2@db.internal/bankbot")
        .env("BANKBOT_JWT_AUDIENCE", "from-env")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("max_text_bytes = 2000"), "{text}");
    assert!(text.contains("issuer = \"from-file\""), "{text}");
    assert!(text.contains("audience = \"from-env\""), "{text}");
    assert!(
        !text.contains("hunter2") && text.contains("bot:***@db.internal"),
        "{text}"
    );

    std::fs::write(&file, "[limits]\nmax_text_byte = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bankbot"))
        .args(["config", "print", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bankbot.toml") && err.contains("max_text_byte"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message_sqlite() {
    kill_during_a_burst(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message_postgres() {
    kill_during_a_burst(Backend::Postgres).await;
}

/// Eight customers send turns as fast as they can; the server is killed
/// with SIGKILL mid-burst and restarted. Every message the server
/// acknowledged is in the transcript afterwards, exactly once, each with its
/// reply, and a resend of any message (acknowledged or not) completes.
async fn kill_during_a_burst(backend: Backend) {
    let db = Db::fresh(backend).await;
    let (mut child, addr) = serve(&db);
    let mut c = connect(addr).await;
    let mut conversations = Vec::new();
    for i in 0..8 {
        let who = format!("crash-{i}");
        let id = start(&mut c, &who).await;
        conversations.push((who, id));
    }
    let mut tasks = Vec::new();
    for (who, id) in conversations.clone() {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0.. {
                let cmid = format!("{who}-{n}");
                match send(&mut c, &who, &id, &cmid, "what's my balance").await {
                    Ok(_) => acked.push(cmid),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(400 + rand_ms())).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(total > 0, "some turns were acknowledged before the kill");

    let (mut child, addr) = serve(&db);
    let mut c = connect(addr).await;
    for ((who, id), acked) in conversations.iter().zip(&acked) {
        let all = all_messages(&mut c, who, id).await;
        for cmid in acked {
            let stored: Vec<_> = all
                .iter()
                .filter(|m| &m.client_message_id == cmid)
                .collect();
            assert_eq!(stored.len(), 1, "{cmid} stored exactly once");
            assert!(
                all.iter().any(|m| m.reply_to == stored[0].message_id),
                "{cmid} has its reply"
            );
        }
        // Sequences are gap-free: no half turn was left behind.
        let seqs: Vec<u64> = all.iter().map(|m| m.sequence).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        // The first unacknowledged message can be resent and completes.
        let next = format!("{who}-{}", acked.len());
        send(&mut c, who, id, &next, "what's my balance")
            .await
            .unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    db.drop_now().await;
}

fn rand_ms() -> u64 {
    u64::from(rand::random::<u16>() % 400)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_closes_streams_cleanly() {
    let db = Db::fresh(Backend::Sqlite).await;
    let (mut child, addr) = serve(&db);
    let mut c = connect(addr).await;
    let id = start(&mut c, "pat").await;
    let mut stream = c
        .stream_events(req(
            "pat",
            pb::StreamEventsRequest {
                conversation_id: id.clone(),
                after_sequence: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().sequence, 1);
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let end = tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .unwrap()
        .expect("a final status, not a dropped connection");
    assert_status(&end.unwrap_err(), Code::Unavailable, "SHUTTING_DOWN");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    db.drop_now().await;
}

/// `serve --sandbox` starts the sandbox bank in the same process and acts
/// on it: a balance comes from its ledger, and the customer is enrolled
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_the_sandbox_acts_on_the_sandbox_ledger() {
    let db = Db::fresh(Backend::Sqlite).await;
    let config = db.dir.path().join("sandbox.toml");
    std::fs::write(&config, "[bank]\nsandbox_listen = \"127.0.0.1:0\"\n").unwrap();
    let mut child = bankbot()
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(db.dir.path())
        .arg("--model")
        .arg(repo_model())
        .env("BANKBOT_JWKS_FILE", fixtures().join("jwks.json"))
        .env("BANKBOT_JWT_ISSUER", ISSUER)
        .env("BANKBOT_JWT_AUDIENCE", AUDIENCE)
        .env_remove("DATABASE_URL")
        .env_remove("BANKBOT_BANK_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut bank_url = None;
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("bankbot: sandbox bank on ") {
            bank_url = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(a) = line.strip_prefix("bankbot: listening on ") {
            break a.parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let bank_url = bank_url.expect("the sandbox's address is printed first");
    assert!(db.dir.path().join("sandbox-bank.sqlite3").exists());

    let mut c = connect(addr).await;
    let id = start(&mut c, "sam").await;
    let r = send(
        &mut c,
        "sam",
        &id,
        "1",
        "how much money is in my current account",
    )
    .await
    .unwrap();
    assert!(r.messages[0].text.contains("£1,234.56"), "{:?}", r.messages);
    let root = bank_url.trim_end_matches("/open-banking/v3.1");
    let audit: serde_json::Value = reqwest::get(format!("{root}/sandbox/audit"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["balances"]["sam/acc-current"], 123_456, "{audit}");
    child.kill().unwrap();
    child.wait().unwrap();
}
