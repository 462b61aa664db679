//! The queue contract, one suite run against every queue backend on both
//! databases: tickets are committed with their turn, claimed in priority
//! order by skill, never held by two agents, returned after a lapsed lease
//! (and dead-lettered after too many), closed by hand-back, resolve or
//! cancellation, and a duplicate publication is still one ticket.
//!
//! It drives the library (`Store` + `Escalations`) directly, as the service
//! does, so each case states the contract without the gRPC layer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bankbot::escalation::{Escalations, QueueChange};
use bankbot::settings::{BotSettings, EscalationSettings, QueueBackendName};
use bankbot::store::{
    Agent, Availability, ConversationState, NewConversation, NewTurn, NluRecord, Store,
    TicketChange, TicketRefusal, TicketState, TurnOutcome,
};
use bankbot_dialog::spec::Priority;
use bankbot_dialog::state::{EscalationReason, State as DialogState};

use crate::helpers::{Backend, Db};

/// A store on a fresh database and the escalations over one backend.
pub struct Rig {
    pub store: Store,
    pub esc: Arc<Escalations>,
    pub db: Db,
    /// The NATS streams' prefix, to delete them at the end.
    pub prefix: Option<String>,
}

pub async fn rig(
    db: Backend,
    queue: QueueBackendName,
    edit: impl FnOnce(&mut EscalationSettings),
) -> Rig {
    let db = Db::fresh(db).await;
    // No model: the queue needs only the database (and the broker).
    let mut s = bankbot::settings::Settings::default();
    db.apply(&mut s);
    s.escalation.backend = queue;
    s.escalation.nats_url = crate::helpers::nats_url();
    // Streams of their own, so parallel tests never take each other's offers.
    s.escalation.nats_prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let prefix = s.escalation.nats_prefix.clone();
    edit(&mut s.escalation);
    let store = Store::connect(&s).await.unwrap();
    store.migrate().await.unwrap();
    let esc = Escalations::connect(store.clone(), s.escalation.clone(), BotSettings::default())
        .await
        .unwrap();
    Rig {
        store,
        esc: Arc::new(esc),
        db,
        prefix: (queue == QueueBackendName::Nats).then_some(prefix),
    }
}

/// Deletes the streams a test created under `prefix`.
pub async fn drop_streams(prefix: &str) {
    let client = async_nats::connect(crate::helpers::nats_url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let names = bankbot::escalation::nats::Names::new(prefix);
    for s in [names.stream, names.dead_letter_stream] {
        let _ = js.delete_stream(&s).await;
    }
}

impl Rig {
    /// A conversation whose turn hands over to `skill` at `priority`;
    /// returns (conversation id, ticket id).
    pub async fn enqueue(
        &self,
        customer: &str,
        skill: &str,
        priority: Priority,
    ) -> (String, String) {
        let (c, _) = self
            .store
            .create_conversation(NewConversation {
                customer_id: customer.into(),
                channel: "web".into(),
                locale: "en".into(),
                metadata: BTreeMap::new(),
                greeting: Vec::new(),
            })
            .await
            .unwrap();
        let dialog = DialogState {
            escalated: true,
            ..DialogState::default()
        };
        let (ticket, notice) = self
            .esc
            .draft(EscalationReason::CustomerAsked, priority, skill, &dialog)
            .await
            .unwrap();
        let id = ticket.id.clone();
        let turn = NewTurn {
            conversation_id: c.id.clone(),
            customer_id: customer.into(),
            client_message_id: format!("m-{id}"),
            text: "a person please".into(),
            text_sha256: "0".repeat(64),
            nlu: Some(NluRecord {
                intent: "talk_to_human".into(),
                confidence: 0.9,
                out_of_scope: false,
                ranking: Vec::new(),
            }),
            replies: vec![bankbot::store::Reply {
                text: notice,
                quick_replies: Vec::new(),
            }],
            state_after: ConversationState::Handoff,
            dialog_state: serde_json::to_string(&dialog).unwrap(),
            expected_last_sequence: c.last_sequence,
            ticket: Some(TicketChange::Open(ticket)),
        };
        assert!(matches!(
            self.store.commit_turn(turn).await.unwrap(),
            TurnOutcome::Stored(..)
        ));
        self.esc.committed(&id).await.unwrap();
        (c.id, id)
    }

    pub async fn agent(&self, id: &str, skills: &[&str], max: u32) -> Agent {
        let a = Agent {
            id: id.into(),
            availability: Availability::Available,
            skills: skills.iter().map(|s| (*s).to_owned()).collect(),
            max_concurrent: max,
        };
        self.store.set_agent(&a).await.unwrap();
        a
    }

    /// The id of the ticket `agent` claims next (`None`: nothing waits).
    pub async fn next(&self, agent: &Agent) -> Option<String> {
        match self.esc.claim_next(agent).await.unwrap() {
            None => None,
            Some(Ok((t, _))) => {
                assert_eq!(t.state, TicketState::Claimed);
                assert_eq!(t.agent_id.as_deref(), Some(agent.id.as_str()));
                Some(t.id)
            }
            Some(Err(r)) => panic!("claim refused: {r:?}"),
        }
    }

    pub async fn finish(self) {
        self.esc.close().await;
        self.store.close().await;
        self.db.drop_now().await;
        if let Some(p) = &self.prefix {
            drop_streams(p).await;
        }
    }
}

/// Runs every contract case for one (database, backend) pair.
#[macro_export]
macro_rules! queue_contract {
    ($db:expr, $queue:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn priority_order_and_skills() {
            $crate::queue::priority_order_and_skills($db, $queue).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn no_ticket_reaches_two_agents() {
            $crate::queue::no_ticket_reaches_two_agents($db, $queue).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_lapsed_claim_is_redelivered_then_dead_lettered() {
            $crate::queue::a_lapsed_claim_is_redelivered_then_dead_lettered($db, $queue).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn hand_back_resolve_and_cancel_close_tickets() {
            $crate::queue::hand_back_resolve_and_cancel_close_tickets($db, $queue).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_duplicate_publication_is_one_ticket() {
            $crate::queue::a_duplicate_publication_is_one_ticket($db, $queue).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn claims_respect_capacity_and_watchers_hear_changes() {
            $crate::queue::claims_respect_capacity_and_watchers_hear_changes($db, $queue).await
        }
    };
}

mod embedded_sqlite {
    crate::queue_contract!(
        crate::helpers::Backend::Sqlite,
        bankbot::settings::QueueBackendName::Embedded
    );
}
mod embedded_postgres {
    crate::queue_contract!(
        crate::helpers::Backend::Postgres,
        bankbot::settings::QueueBackendName::Embedded
    );
}
mod nats_sqlite {
    crate::queue_contract!(
        crate::helpers::Backend::Sqlite,
        bankbot::settings::QueueBackendName::Nats
    );
}
mod nats_postgres {
    crate::queue_contract!(
        crate::helpers::Backend::Postgres,
        bankbot::settings::QueueBackendName::Nats
    );
}

pub async fn priority_order_and_skills(db: Backend, queue: QueueBackendName) {
    let r = rig(db, queue, |_| {}).await;
    assert_eq!(
        r.esc.backend().name(),
        match queue {
            QueueBackendName::Embedded => "embedded",
            QueueBackendName::Nats => "nats",
        }
    );
    let (_, a) = r.enqueue("c1", "general", Priority::Normal).await;
    let (_, b) = r.enqueue("c2", "general", Priority::Urgent).await;
    let (_, c) = r.enqueue("c3", "cards", Priority::Normal).await;
    let (_, d) = r.enqueue("c4", "general", Priority::High).await;
    let (_, e) = r.enqueue("c5", "general", Priority::Normal).await;
    let general = r.agent("g", &["general"], 10).await;
    let cards = r.agent("k", &["cards"], 10).await;
    // Most urgent first, first come first within a priority; never another skill.
    assert_eq!(r.next(&general).await.as_deref(), Some(b.as_str()));
    assert_eq!(r.next(&general).await.as_deref(), Some(d.as_str()));
    assert_eq!(r.next(&general).await.as_deref(), Some(a.as_str()));
    assert_eq!(r.next(&general).await.as_deref(), Some(e.as_str()));
    assert_eq!(r.next(&general).await, None);
    assert_eq!(r.next(&cards).await.as_deref(), Some(c.as_str()));
    assert_eq!(r.next(&cards).await, None);
    r.finish().await;
}

pub async fn no_ticket_reaches_two_agents(db: Backend, queue: QueueBackendName) {
    let r = rig(db, queue, |_| {}).await;
    let mut want = Vec::new();
    for i in 0..16 {
        want.push(
            r.enqueue(&format!("c{i}"), "general", Priority::Normal)
                .await
                .1,
        );
    }
    let r = Arc::new(r);
    let mut tasks = Vec::new();
    for a in 0..6 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let agent = r.agent(&format!("a{a}"), &["general"], 20).await;
            let mut got = Vec::new();
            while let Some(id) = r.next(&agent).await {
                got.push(id);
            }
            got
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    claimed.sort();
    want.sort();
    assert_eq!(claimed, want, "every ticket claimed exactly once");
    let counts = r.store.ticket_counts().await.unwrap();
    assert_eq!(counts.get(&TicketState::Claimed), Some(&16));
    for id in &want {
        assert_eq!(r.store.ticket(id).await.unwrap().unwrap().deliveries, 1);
    }
    Arc::into_inner(r).unwrap().finish().await;
}

pub async fn a_lapsed_claim_is_redelivered_then_dead_lettered(
    db: Backend,
    queue: QueueBackendName,
) {
    let r = rig(db, queue, |s| {
        s.claim_lease_ms = 1_000;
        s.max_deliveries = 2;
    })
    .await;
    let (conversation, id) = r.enqueue("c1", "general", Priority::Normal).await;
    let first = r.agent("first", &["general"], 5).await;
    let second = r.agent("second", &["general"], 5).await;
    assert_eq!(r.next(&first).await.as_deref(), Some(id.as_str()));
    // Renewing keeps it; nobody else gets it meanwhile.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        r.store
            .renew_claim(&id, "first", 1_000)
            .await
            .unwrap()
            .is_ok()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    r.esc.sweep().await.unwrap();
    assert_eq!(r.next(&second).await, None);
    // The first agent goes silent: the claim lapses and the ticket waits again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let events = r.esc.sweep().await.unwrap();
    assert!(!events.is_empty(), "the customer is told they wait again");
    let t = r.store.ticket(&id).await.unwrap().unwrap();
    assert_eq!(
        (t.state, t.deliveries, t.agent_id.clone()),
        (TicketState::Queued, 1, None)
    );
    assert_eq!(
        r.store
            .renew_claim(&id, "first", 1_000)
            .await
            .unwrap()
            .unwrap_err(),
        TicketRefusal::NotHeld
    );
    assert_eq!(r.next(&second).await.as_deref(), Some(id.as_str()));
    assert_eq!(r.store.ticket(&id).await.unwrap().unwrap().deliveries, 2);
    // Abandoned once more: dead-lettered, not offered again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    r.esc.sweep().await.unwrap();
    let t = r.store.ticket(&id).await.unwrap().unwrap();
    assert_eq!(t.state, TicketState::DeadLetter);
    assert_eq!(r.next(&first).await, None);
    assert_eq!(r.next(&second).await, None);
    assert!(r.store.open_ticket(&conversation).await.unwrap().is_none());
    r.finish().await;
}

pub async fn hand_back_resolve_and_cancel_close_tickets(db: Backend, queue: QueueBackendName) {
    let r = rig(db, queue, |_| {}).await;
    let (c1, back) = r.enqueue("c1", "general", Priority::Normal).await;
    let (c2, done) = r.enqueue("c2", "general", Priority::Normal).await;
    let (c3, cancel) = r.enqueue("c3", "general", Priority::Normal).await;
    let agent = r.agent("a", &["general"], 5).await;
    assert_eq!(r.next(&agent).await.as_deref(), Some(back.as_str()));
    assert_eq!(r.next(&agent).await.as_deref(), Some(done.as_str()));

    let conv = r.store.conversation(&c1, "c1").await.unwrap().unwrap();
    let (t, _) = r
        .store
        .hand_back_ticket(
            &back,
            "a",
            &["back with the bot".into()],
            "{}",
            conv.last_sequence,
        )
        .await
        .unwrap()
        .unwrap();
    r.esc.handed_back(&t).await.unwrap();
    assert_eq!(t.state, TicketState::HandedBack);
    let conv = r.store.conversation(&c1, "c1").await.unwrap().unwrap();
    assert_eq!(conv.state, ConversationState::Active);

    let (t, _) = r
        .esc
        .resolve(&done, "a", "answered", "")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.state, TicketState::Resolved);
    let conv = r.store.conversation(&c2, "c2").await.unwrap().unwrap();
    assert_eq!(conv.state, ConversationState::Ended);
    // Only its holder closes a ticket, once.
    assert_eq!(
        r.esc
            .resolve(&done, "a", "answered", "")
            .await
            .unwrap()
            .unwrap_err(),
        TicketRefusal::NotHeld
    );

    // The customer stops waiting: the turn cancels the ticket with it.
    let conv = r.store.conversation(&c3, "c3").await.unwrap().unwrap();
    let turn = NewTurn {
        conversation_id: c3.clone(),
        customer_id: "c3".into(),
        client_message_id: "stop".into(),
        text: "stop waiting".into(),
        text_sha256: "1".repeat(64),
        nlu: None,
        replies: Vec::new(),
        state_after: ConversationState::Active,
        dialog_state: "{}".into(),
        expected_last_sequence: conv.last_sequence,
        ticket: Some(TicketChange::Cancel {
            ticket_id: cancel.clone(),
        }),
    };
    assert!(matches!(
        r.store.commit_turn(turn).await.unwrap(),
        TurnOutcome::Stored(..)
    ));
    r.esc.cancelled(&cancel).await.unwrap();
    assert_eq!(
        r.store.ticket(&cancel).await.unwrap().unwrap().state,
        TicketState::Cancelled
    );
    assert_eq!(r.next(&agent).await, None);
    r.finish().await;
}

pub async fn a_duplicate_publication_is_one_ticket(db: Backend, queue: QueueBackendName) {
    let r = rig(db, queue, |_| {}).await;
    let (conversation, id) = r.enqueue("c1", "general", Priority::Normal).await;
    // The relay publishes again (as after a crash between publish and mark).
    let t = r.store.ticket(&id).await.unwrap().unwrap();
    r.esc.backend().publish(&t).await.unwrap();
    r.esc.backend().publish(&t).await.unwrap();
    r.esc.committed(&id).await.unwrap();
    r.esc.sweep().await.unwrap();
    // A second hand-over of the same conversation cannot be a second ticket.
    let conv = r
        .store
        .conversation(&conversation, "c1")
        .await
        .unwrap()
        .unwrap();
    let (again, _) = r
        .esc
        .draft(
            EscalationReason::CustomerAsked,
            Priority::Normal,
            "general",
            &DialogState::default(),
        )
        .await
        .unwrap();
    let turn = NewTurn {
        conversation_id: conversation.clone(),
        customer_id: "c1".into(),
        client_message_id: "again".into(),
        text: "a person please".into(),
        text_sha256: "2".repeat(64),
        nlu: None,
        replies: Vec::new(),
        state_after: ConversationState::Handoff,
        dialog_state: "{}".into(),
        expected_last_sequence: conv.last_sequence,
        ticket: Some(TicketChange::Open(again)),
    };
    assert!(matches!(
        r.store.commit_turn(turn).await.unwrap(),
        TurnOutcome::Stale
    ));
    let agent = r.agent("a", &["general"], 5).await;
    let other = r.agent("b", &["general"], 5).await;
    assert_eq!(r.next(&agent).await.as_deref(), Some(id.as_str()));
    assert_eq!(r.next(&other).await, None);
    assert_eq!(r.next(&agent).await, None);
    assert_eq!(
        r.store
            .conversation_tickets(&conversation)
            .await
            .unwrap()
            .len(),
        1
    );
    r.finish().await;
}

pub async fn claims_respect_capacity_and_watchers_hear_changes(
    db: Backend,
    queue: QueueBackendName,
) {
    let r = rig(db, queue, |_| {}).await;
    let mut watch = r.esc.watch();
    let (_, a) = r.enqueue("c1", "general", Priority::Normal).await;
    let (_, b) = r.enqueue("c2", "general", Priority::Normal).await;
    let heard = |change: QueueChange| match change {
        QueueChange::Queued(t) => (t.id, TicketState::Queued),
        QueueChange::Gone {
            ticket_id, state, ..
        } => (ticket_id, state),
    };
    let got = tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard(got), (a.clone(), TicketState::Queued));
    let got = tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard(got), (b.clone(), TicketState::Queued));
    let one = r.agent("solo", &["general"], 1).await;
    assert_eq!(r.next(&one).await.as_deref(), Some(a.as_str()));
    let got = tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard(got), (a.clone(), TicketState::Claimed));
    // At capacity: refused, and the other ticket stays for someone else.
    assert_eq!(
        r.esc.claim_next(&one).await.unwrap().unwrap().unwrap_err(),
        TicketRefusal::AtCapacity
    );
    assert_eq!(
        r.esc.claim(&b, &one).await.unwrap().unwrap_err(),
        TicketRefusal::AtCapacity
    );
    let other = r.agent("other", &["general"], 1).await;
    assert_eq!(r.next(&other).await.as_deref(), Some(b.as_str()));
    r.finish().await;
}

/// NATS only: a rig with one waiting general ticket, and a JetStream
/// context on the rig's streams.
async fn nats_rig_with_one_ticket() -> (
    Rig,
    String,
    bankbot::escalation::nats::Names,
    async_nats::jetstream::Context,
    async_nats::jetstream::stream::Stream,
) {
    let r = rig(Backend::Sqlite, QueueBackendName::Nats, |_| {}).await;
    let (_, id) = r.enqueue("c1", "general", Priority::Normal).await;
    let names = bankbot::escalation::nats::Names::new(r.prefix.as_deref().unwrap());
    let js = async_nats::jetstream::new(
        async_nats::connect(crate::helpers::nats_url())
            .await
            .unwrap(),
    );
    let stream = js.get_stream(&names.stream).await.unwrap();
    (r, id, names, js, stream)
}

/// NATS only: an offer delivered `MAX_DELIVER` times without being claimed
/// (here: a consumer that refuses it every time) moves to the dead-letter
/// stream and leaves the work queue; its ticket stays claimable by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_never_claimed_is_dead_lettered() {
    use async_nats::jetstream::{self, AckKind};
    use bankbot::escalation::nats::{MAX_DELIVER, Names};
    use tokio_stream::StreamExt;

    let (r, id, names, js, stream) = nats_rig_with_one_ticket().await;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &Names::consumer_name("general", 2),
            names.consumer("general", 2),
        )
        .await
        .unwrap();
    for _ in 0..MAX_DELIVER {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        let m = batch.next().await.expect("the offer again").unwrap();
        m.ack_with(AckKind::Nak(None)).await.unwrap();
    }
    // The next pull finds nothing: the server gives up on the offer.
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    assert!(batch.next().await.is_none());
    let mut dead = 0;
    for _ in 0..100 {
        let mut dlq = js.get_stream(&names.dead_letter_stream).await.unwrap();
        dead = dlq.info().await.unwrap().state.messages;
        if dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead, 1, "the offer is in the dead-letter stream");
    let mut work = js.get_stream(&names.stream).await.unwrap();
    assert_eq!(work.info().await.unwrap().state.messages, 0);
    let agent = r.agent("a", &["general"], 5).await;
    assert_eq!(r.next(&agent).await, None, "no offer left to take");
    let (t, _) = r.esc.claim(&id, &agent).await.unwrap().unwrap();
    assert_eq!(t.state, TicketState::Claimed);
    r.finish().await;
}

/// NATS only: an offer the broker lost (here: deleted from the stream, as
/// a nats-server killed before writing it would) is found missing by the
/// sweeper's audit and offered again; the ticket is claimed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_offer_is_offered_again() {
    let (r, id, names, _js, stream) = nats_rig_with_one_ticket().await;
    let t = r.store.ticket(&id).await.unwrap().unwrap();
    let offer = stream
        .get_last_raw_message_by_subject(&names.subject(&t))
        .await
        .unwrap();
    assert!(stream.delete_message(offer.sequence).await.unwrap());
    let agent = r.agent("a", &["general"], 5).await;
    assert_eq!(r.next(&agent).await, None, "the offer is gone");
    // The audit looks at tickets that have waited a few seconds.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    for _ in 0..5 {
        r.esc.sweep().await.unwrap();
    }
    assert_eq!(r.next(&agent).await.as_deref(), Some(id.as_str()));
    assert_eq!(r.next(&agent).await, None);
    r.finish().await;
}
