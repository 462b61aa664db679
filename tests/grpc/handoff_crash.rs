//! The hand-over crash test. Customers ask for a person through `bankbot
//! serve` (a real process) while a driver SIGKILLs and restarts it, and,
//! on the NATS backend, SIGKILLs and restarts a nats-server of the test's
//! own (JetStream on disk). Two agents claim with ClaimNext and resolve
//! throughout, through the same restarts.
//!
//! Afterwards every escalation a customer was told about has exactly one
//! ticket, every ticket was claimed and resolved, no ticket was handed to
//! an agent twice (no claim answered twice, none with a second delivery),
//! and no conversation has two tickets. The figures are printed.
//!
//! `BANKBOT_HANDOFF_CUSTOMERS` and `BANKBOT_HANDOFF_KILLS` scale it up.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bankbot::settings::{DatabaseUrl, Settings};
use bankbot::store::{Store, TicketState};
use bankbot_proto::v1 as pb;
use bankbot_proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::Mutex;

use crate::common::repo_model;
use crate::crash::{deliver, env_count, free_port, open, serve_command, spawn_ready};
use crate::handoff::agent_req;
use crate::helpers::*;

/// A nats-server with JetStream of the test's own, so it can be killed.
fn start_nats(port: u16, dir: &Path) -> Child {
    let mut child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH (the machine's NATS package)");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nats-server did not listen on {port}");
}

fn start_server(port: u16, dir: &Path, url: Option<&str>, nats: Option<&str>) -> Child {
    let mut cmd = serve_command(port, dir, url, "error");
    let config = dir.join("handoff-crash.toml");
    let mut toml = "[escalation]\nsweep_interval_ms = 200\n".to_owned();
    if let Some(nats) = nats {
        toml.push_str(&format!(
            "backend = \"nats\"\nnats_url = \"{nats}\"\nnats_prefix = \"crash\"\n"
        ));
    }
    std::fs::write(&config, toml).unwrap();
    cmd.arg("--config").arg(&config);
    spawn_ready(&mut cmd, "bankbot: listening on")
}

fn agents(addr: SocketAddr) -> AgentServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    AgentServiceClient::new(channel)
}

/// Resolves a claimed ticket, again after a restart until the server
/// answers; a ticket already resolved by an attempt whose answer was lost
/// is `TICKET_NOT_HELD`.
async fn resolve(addr: SocketAddr, agent: &str, ticket_id: &str) {
    for _ in 0..600 {
        let r = agents(addr)
            .resolve(agent_req(
                agent,
                pb::ResolveRequest {
                    ticket_id: ticket_id.to_owned(),
                    outcome: "answered".into(),
                    note: String::new(),
                },
            ))
            .await;
        match r {
            Ok(_) => return,
            Err(s) if s.code() == tonic::Code::FailedPrecondition => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What the agents were handed.
#[derive(Debug, Default)]
struct Claims {
    ids: Vec<String>,
}

async fn handoff_crash(backend: Backend, with_nats: bool) {
    let customers = env_count("BANKBOT_HANDOFF_CUSTOMERS", 12);
    let max_kills = env_count("BANKBOT_HANDOFF_KILLS", 3);
    repo_model();
    let db = Db::fresh(backend).await;
    let nats_dir = tempfile::tempdir().unwrap();
    let (port, nats_port) = (free_port(), free_port());
    let nats_url = with_nats.then(|| format!("nats://127.0.0.1:{nats_port}"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let nats = Arc::new(Mutex::new(
        with_nats.then(|| start_nats(nats_port, nats_dir.path())),
    ));
    let server = Arc::new(Mutex::new(start_server(
        port,
        db.dir.path(),
        db.url.as_deref(),
        nats_url.as_deref(),
    )));
    let finished = Arc::new(AtomicBool::new(false));
    let (kills, nats_kills) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));

    // The killer: SIGKILL the server (and every other time nats-server)
    // at random moments, and restart.
    let killer = {
        let (server, nats, finished) = (server.clone(), nats.clone(), finished.clone());
        let (kills, nats_kills) = (kills.clone(), nats_kills.clone());
        let (dir, url, nats_url) = (
            db.dir.path().to_path_buf(),
            db.url.clone(),
            nats_url.clone(),
        );
        let nats_dir = nats_dir.path().to_path_buf();
        tokio::spawn(async move {
            let mut round = 0;
            while !finished.load(Ordering::SeqCst) && kills.load(Ordering::SeqCst) < max_kills {
                let pause = 400 + u64::from(rand::random::<u16>() % 1_200);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                round += 1;
                let mut n = nats.lock().await;
                if round % 2 == 0
                    && let Some(child) = n.as_mut()
                {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    nats_kills.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    *n = Some(start_nats(nats_port, &nats_dir));
                }
                let mut s = server.lock().await;
                s.kill().unwrap();
                s.wait().unwrap();
                kills.fetch_add(1, Ordering::SeqCst);
                *s = start_server(port, &dir, url.as_deref(), nats_url.as_deref());
            }
        })
    };

    // Two agents claim throughout, through the restarts.
    let claims = Arc::new(std::sync::Mutex::new(Claims::default()));
    let recovered = Arc::new(AtomicUsize::new(0));
    let mut agent_tasks = Vec::new();
    for name in ["ann", "bob"] {
        let (claims, finished) = (claims.clone(), finished.clone());
        let recovered = recovered.clone();
        agent_tasks.push(tokio::spawn(async move {
            let mut idle_since: Option<Instant> = None;
            loop {
                let mut c = agents(addr);
                let status = c
                    .set_availability(agent_req(
                        name,
                        pb::SetAvailabilityRequest {
                            availability: pb::Availability::Available.into(),
                            skills: vec!["general".into()],
                            max_concurrent: 20,
                        },
                    ))
                    .await;
                let Ok(status) = status else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // A claim whose answer a restart lost: the agent's desk
                // finds it among its held tickets and finishes it.
                for id in status.into_inner().claimed_ticket_ids {
                    recovered.fetch_add(1, Ordering::SeqCst);
                    resolve(addr, name, &id).await;
                }
                match c.claim_next(agent_req(name, pb::ClaimNextRequest {})).await {
                    Ok(r) => match r.into_inner().ticket {
                        Some(t) => {
                            idle_since = None;
                            let id = t.summary.unwrap().ticket_id;
                            claims.lock().unwrap().ids.push(id.clone());
                            resolve(addr, name, &id).await;
                        }
                        None => {
                            // Done once the customers are and nothing came for a while.
                            let since = *idle_since.get_or_insert_with(Instant::now);
                            if finished.load(Ordering::SeqCst)
                                && since.elapsed() > Duration::from_secs(8)
                            {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }));
    }

    // The customers: a burst of hand-overs, staggered a little.
    let told = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut tasks = Vec::new();
    for i in 0..customers {
        let told = told.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150 * i as u64)).await;
            let who = format!("handoff-cust-{i}");
            let conv = open(addr, &who, deadline).await?;
            let reply = deliver(
                addr,
                &who,
                &conv,
                "m1",
                "I want to talk to a human",
                deadline,
            )
            .await?;
            if reply.contains("in the queue") {
                told.fetch_add(1, Ordering::SeqCst);
            }
            Some((who, conv))
        }));
    }
    let mut conversations = Vec::new();
    for t in tasks {
        if let Some(c) = t.await.unwrap() {
            conversations.push(c);
        }
    }
    // Keep killing until the kills are done, then let the agents drain.
    while kills.load(Ordering::SeqCst) < max_kills && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    finished.store(true, Ordering::SeqCst);
    killer.await.unwrap();
    for t in agent_tasks {
        t.await.unwrap();
    }

    // What was stored.
    let mut s = Settings {
        data_dir: db.dir.path().to_path_buf(),
        ..Settings::default()
    };
    s.database_url = DatabaseUrl(db.url.clone().unwrap_or_default());
    let store = Store::connect(&s).await.unwrap();
    let claimed = claims.lock().unwrap().ids.clone();
    let distinct: BTreeSet<&String> = claimed.iter().collect();
    let mut tickets = 0;
    let mut lost = 0;
    let mut duplicate_tickets = 0;
    let mut redelivered = 0;
    let mut never_claimed = 0;
    for (who, conv) in &conversations {
        let ts = store.conversation_tickets(conv).await.unwrap();
        tickets += ts.len();
        if ts.len() > 1 {
            duplicate_tickets += ts.len() - 1;
        }
        let c = store.conversation(conv, who).await.unwrap().unwrap();
        if ts.is_empty() && c.state == bankbot::store::ConversationState::Handoff {
            lost += 1;
        }
        for t in &ts {
            if t.deliveries > 1 {
                redelivered += 1;
            }
            if t.state != TicketState::Resolved {
                never_claimed += 1;
            }
        }
    }
    let answered_twice = claimed.len() - distinct.len();
    println!(
        "handoff crash ({backend:?}, {}): {} customers, {} told they were queued, {} tickets, \
         {} claims answered, {} found held after a lost answer, {} server kills, \
         {} nats-server kills; lost {lost}, \
         duplicate tickets {duplicate_tickets}, claims answered twice {answered_twice}, \
         tickets delivered twice {redelivered}, not resolved {never_claimed}",
        if with_nats { "nats" } else { "embedded" },
        conversations.len(),
        told.load(Ordering::SeqCst),
        tickets,
        claimed.len(),
        recovered.load(Ordering::SeqCst),
        kills.load(Ordering::SeqCst),
        nats_kills.load(Ordering::SeqCst),
    );
    assert_eq!(
        conversations.len(),
        customers,
        "every customer got an answer"
    );
    assert_eq!(tickets, customers, "one ticket per hand-over");
    assert_eq!(lost, 0);
    assert_eq!(duplicate_tickets, 0);
    assert_eq!(answered_twice, 0, "no ticket handed to two agents");
    assert_eq!(redelivered, 0, "no ticket delivered twice");
    assert_eq!(
        never_claimed, 0,
        "every ticket reached an agent and was resolved"
    );
    assert!(kills.load(Ordering::SeqCst) >= max_kills);

    store.close().await;
    {
        let mut s = server.lock().await;
        let _ = s.kill();
        let _ = s.wait();
    }
    if let Some(n) = nats.lock().await.as_mut() {
        let _ = n.kill();
        let _ = n.wait();
    }
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_survive_crashes_embedded_sqlite() {
    handoff_crash(Backend::Sqlite, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_survive_crashes_embedded_postgres() {
    handoff_crash(Backend::Postgres, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_survive_crashes_and_nats_restarts_postgres() {
    handoff_crash(Backend::Postgres, true).await;
}
