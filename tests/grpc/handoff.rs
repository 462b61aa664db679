//! Hand-overs end to end over gRPC: a customer asks for a person, an agent
//! watching the queue claims the ticket, messages and typing flow both
//! ways on the streams, and the agent hands the conversation back (or
//! resolves it); the customer can stop waiting. Both databases.

use std::time::{Duration, Instant};

use bankbot::auth::test_support;
use bankbot_proto::v1 as pb;
use bankbot_proto::v1::agent_service_client::AgentServiceClient;
use pb::conversation_event::Kind;
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request, Streaming};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_person_takes_over_and_hands_back,
    a_waiting_customer_can_stop_waiting,
    an_agent_resolves_and_the_conversation_ends,
    agents_see_only_what_they_may,
    ending_a_waiting_conversation_closes_its_ticket
);

/// A token with `role: agent` (and a `skills` claim when given).
pub fn agent_token(agent: &str, skills: Option<&[&str]>) -> String {
    let mut claims = test_support::claims(ISSUER, AUDIENCE, agent);
    let m = claims.as_object_mut().unwrap();
    m.insert("role".into(), json!("agent"));
    if let Some(s) = skills {
        m.insert("skills".into(), json!(s));
    }
    test_support::token(&fixtures(), "rsa-1", &claims)
}

pub fn agent_req<T>(agent: &str, msg: T) -> Request<T> {
    with_token(&agent_token(agent, None), msg)
}

pub fn with_token<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub async fn agent_client(app: &TestApp) -> AgentServiceClient<Channel> {
    AgentServiceClient::new(app.channel().await)
}

pub async fn available(c: &mut AgentServiceClient<Channel>, agent: &str, skills: &[&str]) {
    c.set_availability(agent_req(
        agent,
        pb::SetAvailabilityRequest {
            availability: pb::Availability::Available.into(),
            skills: skills.iter().map(|s| (*s).to_owned()).collect(),
            max_concurrent: 3,
        },
    ))
    .await
    .unwrap();
}

async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an event within 20 s")
        .expect("the stream is open")
        .expect("not an error")
}

/// Skips events until `pick` accepts one.
async fn until<T, R>(stream: &mut Streaming<T>, mut pick: impl FnMut(T) -> Option<R>) -> R {
    loop {
        if let Some(r) = pick(next(stream).await) {
            return r;
        }
    }
}

fn handoff(e: pb::ConversationEvent) -> Option<pb::HandoffStatus> {
    match e.kind {
        Some(Kind::Handoff(h)) => Some(h),
        _ => None,
    }
}

fn queued(e: pb::QueueEvent) -> Option<pb::TicketSummary> {
    match e.kind {
        Some(pb::queue_event::Kind::Queued(t)) => Some(t),
        _ => None,
    }
}

fn gone(e: pb::QueueEvent) -> Option<pb::TicketGone> {
    match e.kind {
        Some(pb::queue_event::Kind::Gone(g)) => Some(g),
        _ => None,
    }
}

fn typing(e: pb::ConversationEvent) -> Option<pb::Typing> {
    match e.kind {
        Some(Kind::Typing(t)) => Some(t),
        _ => None,
    }
}

fn message_by(author: pb::Author) -> impl FnMut(pb::ConversationEvent) -> Option<pb::Message> {
    move |e| match e.kind {
        Some(Kind::Message(m)) if m.author == author as i32 => Some(m),
        _ => None,
    }
}

/// Starts a conversation with a live stream and asks for a person.
async fn ask_for_a_person(
    app: &TestApp,
    customer: &str,
) -> (
    String,
    Streaming<pb::ConversationEvent>,
    pb::SendMessageResponse,
) {
    let mut c = app.client().await;
    let id = start(&mut c, customer).await;
    let stream = crate::streams::subscribe(app, customer, &id, 0).await;
    let r = send(&mut c, customer, &id, "m1", "I want to talk to a human")
        .await
        .unwrap();
    (id, stream, r)
}

async fn a_person_takes_over_and_hands_back(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut agent = agent_client(&app).await;
    available(&mut agent, "sam", &["general"]).await;
    let mut watch = agent
        .watch_queue(agent_req("sam", pb::WatchQueueRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut watch).await;
    assert!(
        matches!(&first.kind, Some(pb::queue_event::Kind::Snapshot(s)) if s.tickets.is_empty()),
        "{first:?}"
    );

    let asked = Instant::now();
    let (id, mut stream, r) = ask_for_a_person(&app, "petra").await;
    assert_eq!(r.state, pb::ConversationState::Handoff as i32, "{r:?}");
    let said: Vec<&str> = r.messages.iter().map(|m| m.text.as_str()).collect();
    assert!(
        said.iter().any(|t| t.contains("number 1 in the queue")),
        "{said:?}"
    );
    assert!(
        r.messages
            .iter()
            .any(|m| m.quick_replies.iter().any(|q| q.payload == "stop waiting")),
        "the customer is offered a way to stop waiting: {said:?}"
    );

    // The watching agent sees it at once.
    let queued = until(&mut watch, queued).await;
    let seen_after = asked.elapsed();
    assert_eq!(queued.conversation_id, id);
    assert_eq!(queued.skill, "general");
    assert_eq!(queued.reason, "customer_asked");
    assert!(seen_after < Duration::from_secs(10), "{seen_after:?}");

    // Operators see the queue.
    let scrape = || async {
        reqwest::get(format!("http://{}/metrics", app.admin.unwrap()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let metrics = scrape().await;
    assert!(
        metrics.contains("bankbot_tickets_open{state=\"queued\",skill=\"general\"} 1"),
        "{metrics}"
    );

    // The customer's stream says where they stand.
    let h = until(&mut stream, handoff).await;
    assert_eq!(h.status, pb::handoff_status::Status::Queued as i32);
    assert_eq!(h.queue_position, 1);
    assert_eq!(h.ticket_id, queued.ticket_id);

    // The agent claims it, with everything the bot knew.
    let claimed = agent
        .claim_next(agent_req("sam", pb::ClaimNextRequest {}))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .expect("a ticket");
    let summary = claimed.summary.clone().unwrap();
    assert_eq!(summary.ticket_id, queued.ticket_id);
    assert_eq!(summary.deliveries, 1);
    assert_eq!(claimed.state, pb::TicketState::Claimed as i32);
    assert_eq!(claimed.agent_id, "sam");
    assert_eq!(claimed.customer_id, "petra");
    assert_eq!(claimed.auth_level, "token");
    assert!(claimed.lease_expire_time.is_some());
    assert!(
        claimed
            .transcript
            .iter()
            .any(|m| m.text == "I want to talk to a human"
                && m.author == pb::Author::Customer as i32),
        "{:?}",
        claimed.transcript
    );
    assert_eq!(claimed.nlu_trail.len(), 1);
    assert_eq!(claimed.nlu_trail[0].intent, "talk_to_human");
    let ticket_id = summary.ticket_id;
    let gone = until(&mut watch, gone).await;
    assert_eq!(gone.ticket_id, ticket_id);
    assert_eq!(gone.state, pb::TicketState::Claimed as i32);
    let h = until(&mut stream, handoff).await;
    assert_eq!(h.status, pb::handoff_status::Status::Assigned as i32);
    let metrics = scrape().await;
    assert!(
        metrics.contains("bankbot_tickets_open{state=\"claimed\",skill=\"general\"} 1")
            && !metrics.contains("bankbot_tickets_open{state=\"queued\""),
        "{metrics}"
    );

    // Customer → agent: the message goes to the person, not the bot.
    let mut agent_view = agent
        .stream_conversation(agent_req(
            "sam",
            pb::StreamConversationRequest {
                ticket_id: ticket_id.clone(),
                after_sequence: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut c = app.client().await;
    let r = send(
        &mut c,
        "petra",
        &id,
        "m2",
        "I was charged twice for my shopping",
    )
    .await
    .unwrap();
    assert!(r.messages.is_empty(), "the bot stays quiet: {r:?}");
    assert!(r.nlu.is_none(), "the NLU is not asked: {r:?}");
    assert_eq!(r.state, pb::ConversationState::Handoff as i32);
    let got = until(&mut agent_view, |e| {
        message_by(pb::Author::Customer)(e).filter(|m| m.client_message_id == "m2")
    })
    .await;
    assert_eq!(got.text, "I was charged twice for my shopping");

    // Agent → customer, once even when resent; typing too.
    let send_agent = |cid: &str, text: &str| pb::SendAgentMessageRequest {
        ticket_id: ticket_id.clone(),
        client_message_id: cid.into(),
        text: text.into(),
    };
    let sent = agent
        .send_agent_message(agent_req(
            "sam",
            send_agent("a1", "Hi Petra, I'm Sam. Let me look."),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!sent.replayed);
    let again = agent
        .send_agent_message(agent_req(
            "sam",
            send_agent("a1", "Hi Petra, I'm Sam. Let me look."),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(
        again.message.unwrap().message_id,
        sent.message.clone().unwrap().message_id
    );
    let reused = agent
        .send_agent_message(agent_req("sam", send_agent("a1", "something else")))
        .await
        .unwrap_err();
    assert_status(&reused, Code::AlreadyExists, "CLIENT_MESSAGE_ID_REUSED");
    let heard = until(&mut stream, message_by(pb::Author::Agent)).await;
    assert_eq!(heard.text, "Hi Petra, I'm Sam. Let me look.");
    agent
        .send_typing(agent_req(
            "sam",
            pb::SendTypingRequest {
                ticket_id: ticket_id.clone(),
                active: true,
            },
        ))
        .await
        .unwrap();
    let typing = until(&mut stream, typing).await;
    assert_eq!(typing.author, pb::Author::Agent as i32);
    assert!(typing.active);

    // The agent hands back into a flow; the bot resumes.
    let back = agent
        .hand_back(agent_req(
            "sam",
            pb::HandBackRequest {
                ticket_id: ticket_id.clone(),
                flow: "check_balance".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        back.ticket.as_ref().unwrap().state,
        pb::TicketState::HandedBack as i32
    );
    assert!(!back.messages.is_empty(), "{back:?}");
    let h = until(&mut stream, handoff).await;
    assert_eq!(h.status, pb::handoff_status::Status::ReturnedToBot as i32);
    let state = until(&mut stream, |e| match e.kind {
        Some(Kind::StateChange(s)) => Some(s),
        _ => None,
    })
    .await;
    assert_eq!(state.state, pb::ConversationState::Active as i32);
    let resumed = until(&mut stream, message_by(pb::Author::Bot)).await;
    assert_eq!(resumed.text, back.messages[0].text);
    let r = send(&mut c, "petra", &id, "m3", "thank you").await.unwrap();
    assert_eq!(r.state, pb::ConversationState::Active as i32);
    assert!(r.nlu.is_some() && !r.messages.is_empty(), "{r:?}");

    // The agent no longer holds it.
    let late = agent
        .send_agent_message(agent_req("sam", send_agent("a2", "still there?")))
        .await
        .unwrap_err();
    assert_status(&late, Code::FailedPrecondition, "TICKET_NOT_HELD");
    let store = app.store().await;
    let tickets = store.conversation_tickets(&id).await.unwrap();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    app.stop().await.unwrap();
    db.drop_now().await;
}

async fn a_waiting_customer_can_stop_waiting(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut agent = agent_client(&app).await;
    available(&mut agent, "sam", &["general"]).await;
    let mut watch = agent
        .watch_queue(agent_req("sam", pb::WatchQueueRequest {}))
        .await
        .unwrap()
        .into_inner();
    let (id, mut stream, _) = ask_for_a_person(&app, "quinn").await;
    let queued = until(&mut watch, queued).await;
    let mut c = app.client().await;
    // While waiting, other messages wait with the customer.
    let r = send(&mut c, "quinn", &id, "m2", "are you there?")
        .await
        .unwrap();
    assert_eq!(r.state, pb::ConversationState::Handoff as i32);
    assert!(r.messages.is_empty());
    let r = send(&mut c, "quinn", &id, "m3", "stop waiting")
        .await
        .unwrap();
    assert_eq!(r.state, pb::ConversationState::Active as i32, "{r:?}");
    assert!(r.messages[0].text.contains("left the queue"), "{r:?}");
    let gone = until(&mut watch, gone).await;
    assert_eq!(gone.ticket_id, queued.ticket_id);
    assert_eq!(gone.state, pb::TicketState::Cancelled as i32);
    let h = until(&mut stream, |e| {
        handoff(e).filter(|h| h.status != pb::handoff_status::Status::Queued as i32)
    })
    .await;
    assert_eq!(h.status, pb::handoff_status::Status::Cancelled as i32);
    // Nothing left to claim; the bot answers again.
    let none = agent
        .claim_next(agent_req("sam", pb::ClaimNextRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(none.ticket.is_none());
    let r = send(&mut c, "quinn", &id, "m4", "what's my balance")
        .await
        .unwrap();
    assert_eq!(r.state, pb::ConversationState::Active as i32);
    assert!(!r.messages.is_empty());
    app.stop().await.unwrap();
    db.drop_now().await;
}

async fn an_agent_resolves_and_the_conversation_ends(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut agent = agent_client(&app).await;
    available(&mut agent, "sam", &["general"]).await;
    let (id, mut stream, _) = ask_for_a_person(&app, "rosa").await;
    let ticket = agent
        .claim_next(agent_req("sam", pb::ClaimNextRequest {}))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let ticket_id = ticket.summary.unwrap().ticket_id;
    let bad = agent
        .resolve(agent_req(
            "sam",
            pb::ResolveRequest {
                ticket_id: ticket_id.clone(),
                outcome: "Not A Code!".into(),
                note: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&bad, Code::InvalidArgument, "OUTCOME_INVALID");
    let done = agent
        .resolve(agent_req(
            "sam",
            pb::ResolveRequest {
                ticket_id: ticket_id.clone(),
                outcome: "answered".into(),
                note: "explained the duplicate charge; card 4111 1111 1111 1111".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(done.state, pb::TicketState::Resolved as i32);
    assert_eq!(done.outcome, "answered");
    let ended = until(&mut stream, |e| match e.kind {
        Some(Kind::Ended(x)) => Some(x),
        _ => None,
    })
    .await;
    assert_eq!(ended.reason, "resolved:answered");
    let mut c = app.client().await;
    let after = send(&mut c, "rosa", &id, "m9", "hello?").await.unwrap_err();
    assert_status(&after, Code::FailedPrecondition, "CONVERSATION_ENDED");
    let stored = app.store().await.ticket(&ticket_id).await.unwrap().unwrap();
    assert!(
        !stored.note.unwrap().contains("4111 1111 1111 1111"),
        "card numbers in notes are masked"
    );
    app.stop().await.unwrap();
    db.drop_now().await;
}

async fn ending_a_waiting_conversation_closes_its_ticket(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut agent = agent_client(&app).await;
    available(&mut agent, "sam", &["general"]).await;
    let mut watch = agent
        .watch_queue(agent_req("sam", pb::WatchQueueRequest {}))
        .await
        .unwrap()
        .into_inner();
    let (id, _stream, _) = ask_for_a_person(&app, "uma").await;
    let queued = until(&mut watch, queued).await;
    app.client()
        .await
        .end_conversation(req(
            "uma",
            pb::EndConversationRequest {
                conversation_id: id.clone(),
                reason: "customer_closed".into(),
            },
        ))
        .await
        .unwrap();
    let gone = until(&mut watch, gone).await;
    assert_eq!(gone.ticket_id, queued.ticket_id);
    assert_eq!(gone.state, pb::TicketState::Cancelled as i32);
    let none = agent
        .claim_next(agent_req("sam", pb::ClaimNextRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(
        none.ticket.is_none(),
        "nobody is handed a conversation that ended"
    );
    app.stop().await.unwrap();
    db.drop_now().await;
}

async fn agents_see_only_what_they_may(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut agent = agent_client(&app).await;
    // A customer token cannot use the agents' service, nor an agent's the customers'.
    let denied = agent
        .claim_next(req("petra", pb::ClaimNextRequest {}))
        .await
        .unwrap_err();
    assert_status(&denied, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    let mut c = app.client().await;
    let denied = c
        .start_conversation(agent_req(
            "sam",
            pb::StartConversationRequest {
                channel: "web".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_status(&denied, Code::PermissionDenied, "ROLE_NOT_ALLOWED");

    // Claiming needs availability; skills are checked and bounded by the token.
    let unavailable = agent
        .claim_next(agent_req("sam", pb::ClaimNextRequest {}))
        .await
        .unwrap_err();
    assert_status(
        &unavailable,
        Code::FailedPrecondition,
        "AGENT_NOT_AVAILABLE",
    );
    let cards_only = agent_token("carla", Some(&["cards"]));
    let not_allowed = agent
        .set_availability(with_token(
            &cards_only,
            pb::SetAvailabilityRequest {
                availability: pb::Availability::Available.into(),
                skills: vec!["general".into()],
                max_concurrent: 1,
            },
        ))
        .await
        .unwrap_err();
    assert_status(&not_allowed, Code::InvalidArgument, "SKILL_NOT_ALLOWED");
    for (skills, max, reason) in [
        (vec![], 1, "SKILLS_INVALID"),
        (vec!["Cards!".to_owned()], 1, "SKILLS_INVALID"),
        (vec!["cards".to_owned()], 0, "MAX_CONCURRENT_INVALID"),
        (vec!["cards".to_owned()], 99, "MAX_CONCURRENT_INVALID"),
    ] {
        let e = agent
            .set_availability(with_token(
                &cards_only,
                pb::SetAvailabilityRequest {
                    availability: pb::Availability::Available.into(),
                    skills,
                    max_concurrent: max,
                },
            ))
            .await
            .unwrap_err();
        assert_status(&e, Code::InvalidArgument, reason);
    }
    agent
        .set_availability(with_token(
            &cards_only,
            pb::SetAvailabilityRequest {
                availability: pb::Availability::Available.into(),
                skills: vec!["cards".into()],
                max_concurrent: 1,
            },
        ))
        .await
        .unwrap();
    available(&mut agent, "sam", &["general"]).await;

    let (_id, _stream, _) = ask_for_a_person(&app, "petra").await;
    let waiting = agent
        .watch_queue(agent_req("sam", pb::WatchQueueRequest {}))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    let Some(pb::queue_event::Kind::Snapshot(snap)) = waiting.kind else {
        panic!("{waiting:?}")
    };
    assert_eq!(snap.tickets.len(), 1);
    let ticket_id = snap.tickets[0].ticket_id.clone();
    // The cards agent neither sees nor takes a general ticket.
    let hidden = agent
        .get_ticket(with_token(
            &cards_only,
            pb::GetTicketRequest {
                ticket_id: ticket_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&hidden, Code::NotFound, "TICKET_NOT_FOUND");
    let nothing = agent
        .claim_next(with_token(&cards_only, pb::ClaimNextRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(nothing.ticket.is_none());
    let taken = agent
        .claim(with_token(
            &cards_only,
            pb::ClaimRequest {
                ticket_id: ticket_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&taken, Code::FailedPrecondition, "TICKET_TAKEN");
    // Sam takes it; a second general agent cannot, nor stream or write to it.
    agent
        .claim(agent_req(
            "sam",
            pb::ClaimRequest {
                ticket_id: ticket_id.clone(),
            },
        ))
        .await
        .unwrap();
    available(&mut agent, "gus", &["general"]).await;
    let second = agent
        .claim(agent_req(
            "gus",
            pb::ClaimRequest {
                ticket_id: ticket_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&second, Code::FailedPrecondition, "TICKET_TAKEN");
    let hidden = agent
        .get_ticket(agent_req(
            "gus",
            pb::GetTicketRequest {
                ticket_id: ticket_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&hidden, Code::NotFound, "TICKET_NOT_FOUND");
    let not_held = agent
        .stream_conversation(agent_req(
            "gus",
            pb::StreamConversationRequest {
                ticket_id: ticket_id.clone(),
                after_sequence: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_status(&not_held, Code::FailedPrecondition, "TICKET_NOT_HELD");
    let bad_id = agent
        .get_ticket(agent_req(
            "sam",
            pb::GetTicketRequest {
                ticket_id: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&bad_id, Code::InvalidArgument, "TICKET_ID_INVALID");
    // Customers cannot pass off messages as an agent's.
    let spoof = send(&mut c, "petra", &_id, "agent:x:y", "hi")
        .await
        .unwrap_err();
    assert_status(&spoof, Code::InvalidArgument, "CLIENT_MESSAGE_ID_INVALID");
    app.stop().await.unwrap();
    db.drop_now().await;
}

/// Two replicas on one PostgreSQL database and one NATS server: the
/// customer's stream is on one, the agent on the other. The ticket, the
/// claim, and messages and typing both ways cross between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_queue_and_streams_over_nats() {
    let db = Db::fresh(Backend::Postgres).await;
    let mut s = base_settings(db.dir.path());
    db.apply(&mut s);
    s.escalation.backend = bankbot::settings::QueueBackendName::Nats;
    s.escalation.nats_url = nats_url();
    s.escalation.nats_prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let prefix = s.escalation.nats_prefix.clone();
    let customer_side = TestApp::start(s.clone()).await;
    let agent_side = TestApp::start(s).await;

    let mut agent = agent_client(&agent_side).await;
    available(&mut agent, "sam", &["general"]).await;
    let mut watch = agent
        .watch_queue(agent_req("sam", pb::WatchQueueRequest {}))
        .await
        .unwrap()
        .into_inner();
    next(&mut watch).await; // the (empty) snapshot
    let (id, mut stream, _) = ask_for_a_person(&customer_side, "nora").await;
    let queued = until(&mut watch, queued).await;
    assert_eq!(queued.conversation_id, id);

    let ticket = agent
        .claim_next(agent_req("sam", pb::ClaimNextRequest {}))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .expect("the ticket, through the other replica");
    let ticket_id = ticket.summary.unwrap().ticket_id;
    assert_eq!(ticket_id, queued.ticket_id);
    let h = until(&mut stream, |e| {
        handoff(e).filter(|h| h.status != pb::handoff_status::Status::Queued as i32)
    })
    .await;
    assert_eq!(h.status, pb::handoff_status::Status::Assigned as i32);

    let mut agent_view = agent
        .stream_conversation(agent_req(
            "sam",
            pb::StreamConversationRequest {
                ticket_id: ticket_id.clone(),
                after_sequence: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    agent
        .send_agent_message(agent_req(
            "sam",
            pb::SendAgentMessageRequest {
                ticket_id: ticket_id.clone(),
                client_message_id: "a1".into(),
                text: "Hello Nora, Sam here.".into(),
            },
        ))
        .await
        .unwrap();
    let heard = until(&mut stream, message_by(pb::Author::Agent)).await;
    assert_eq!(heard.text, "Hello Nora, Sam here.");
    agent
        .send_typing(agent_req(
            "sam",
            pb::SendTypingRequest {
                ticket_id: ticket_id.clone(),
                active: true,
            },
        ))
        .await
        .unwrap();
    let typing = until(&mut stream, typing).await;
    assert_eq!(typing.author, pb::Author::Agent as i32);

    let mut c = customer_side.client().await;
    send(
        &mut c,
        "nora",
        &id,
        "m2",
        "Hi Sam, my card is stuck in the machine",
    )
    .await
    .unwrap();
    let got = until(&mut agent_view, |e| {
        message_by(pb::Author::Customer)(e).filter(|m| m.client_message_id == "m2")
    })
    .await;
    assert_eq!(got.text, "Hi Sam, my card is stuck in the machine");

    customer_side.stop().await.unwrap();
    agent_side.stop().await.unwrap();
    db.drop_now().await;
    crate::queue::drop_streams(&prefix).await;
}
