//! `bankbot bench queue`: how fast a hand-over reaches the agents, per
//! queue backend, on a temporary SQLite file or the given PostgreSQL
//! database (where it adds rows under a queue name of its own).
//!
//! For each ticket, one at a time: a turn that escalates is committed (the
//! ticket in the turn's transaction) and announced as the service does;
//! the latency is from the commit's return to the `queued` change reaching
//! a watcher. On `nats` the watcher is a second replica (its own
//! connection), so the figure includes the broker hop; on `embedded` it is
//! the same process (the embedded queue wakes only local watchers).
//! Then agents claim them all with ClaimNext, timed per claim.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bankbot_dialog::spec::Priority;
use bankbot_dialog::state::{EscalationReason, State as DialogState};

use super::bench::percentile;
use crate::cli::QueueBenchArgs;
use crate::escalation::{Escalations, QueueChange};
use crate::settings::{BotSettings, DatabaseUrl, QueueBackendName, Settings};
use crate::store::{
    Agent, Availability, ConversationState, NewConversation, NewTurn, Store, TicketChange,
    TurnOutcome,
};

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort_unstable();
    println!(
        "  {name:<34} n={:<5} p50 {:>8.0} µs   p99 {:>8.0} µs   max {:>8.0} µs",
        v.len(),
        us(percentile(&v, 0.5)),
        us(percentile(&v, 0.99)),
        us(v.last().copied().unwrap_or_default())
    );
}

pub fn run(args: &QueueBenchArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for backend in &args.backends {
            bench(args, *backend).await?;
        }
        Ok(true)
    })
}

async fn bench(args: &QueueBenchArgs, backend: QueueBackendName) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut settings = Settings {
        data_dir: dir.path().to_path_buf(),
        database_url: DatabaseUrl(args.database_url.clone().unwrap_or_default()),
        ..Settings::default()
    };
    settings.escalation.backend = backend;
    settings.escalation.nats_url = args.nats_url.clone();
    settings.escalation.nats_prefix =
        format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let store = Store::connect(&settings)
        .await
        .context("opening the database")?;
    store.migrate().await?;
    // A queue of its own in a shared database.
    let skill = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let connect = || {
        Escalations::connect(
            store.clone(),
            settings.escalation.clone(),
            BotSettings::default(),
        )
    };
    let replica = Arc::new(connect().await?);
    let watcher = match backend {
        QueueBackendName::Embedded => replica.clone(),
        QueueBackendName::Nats => Arc::new(connect().await?),
    };
    println!(
        "queue backend {:?} on {:?}, {} tickets",
        backend,
        store.backend(),
        args.tickets
    );

    let mut changes = watcher.watch();
    let (mut commit, mut visible) = (Vec::new(), Vec::new());
    let dialog = DialogState {
        escalated: true,
        ..DialogState::default()
    };
    for i in 0..args.tickets {
        let customer = format!("bench-{i}");
        let (c, _) = store
            .create_conversation(NewConversation {
                customer_id: customer.clone(),
                channel: "bench".into(),
                locale: "en".into(),
                metadata: BTreeMap::new(),
                greeting: Vec::new(),
            })
            .await?;
        let (ticket, _) = replica
            .draft(
                EscalationReason::CustomerAsked,
                Priority::Normal,
                &skill,
                &dialog,
            )
            .await?;
        let id = ticket.id.clone();
        let turn = NewTurn {
            conversation_id: c.id,
            customer_id: customer,
            client_message_id: format!("m{i}"),
            text: "a person please".into(),
            text_sha256: "0".repeat(64),
            nlu: None,
            replies: Vec::new(),
            state_after: ConversationState::Handoff,
            dialog_state: serde_json::to_string(&dialog)?,
            expected_last_sequence: c.last_sequence,
            ticket: Some(TicketChange::Open(ticket)),
        };
        let started = Instant::now();
        let outcome = store.commit_turn(turn).await?;
        anyhow::ensure!(
            matches!(outcome, TurnOutcome::Stored(..)),
            "the turn was not stored"
        );
        let committed = Instant::now();
        commit.push(committed - started);
        replica.committed(&id).await?;
        loop {
            let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
                .await
                .context("no queue change within 10 s")??;
            if matches!(&change, QueueChange::Queued(t) if t.id == id) {
                visible.push(committed.elapsed());
                break;
            }
        }
    }
    summary("turn commit with its ticket", commit);
    summary("commit → visible to a watcher", visible);

    let agent = Agent {
        id: format!("agent-{skill}"),
        availability: Availability::Available,
        skills: vec![skill.clone()],
        max_concurrent: u32::try_from(args.tickets + 1).unwrap_or(u32::MAX),
    };
    store.set_agent(&agent).await?;
    let mut claims = Vec::new();
    loop {
        let started = Instant::now();
        match watcher.claim_next(&agent).await? {
            Some(Ok(_)) => claims.push(started.elapsed()),
            Some(Err(r)) => anyhow::bail!("claim refused: {r:?}"),
            None => break,
        }
    }
    anyhow::ensure!(
        claims.len() == args.tickets,
        "claimed {} of {} tickets",
        claims.len(),
        args.tickets
    );
    summary("ClaimNext", claims);
    replica.close().await;
    watcher.close().await;
    if backend == QueueBackendName::Nats {
        let client = async_nats::connect(&args.nats_url).await?;
        let js = async_nats::jetstream::new(client);
        let names = crate::escalation::nats::Names::new(&settings.escalation.nats_prefix);
        for s in [names.stream, names.dead_letter_stream] {
            let _ = js.delete_stream(&s).await;
        }
    }
    store.close().await;
    Ok(())
}
