//! Event streams: resume by sequence, multi-device delivery, Converse, limits
//! and shutdown.

use std::time::Duration;

use bankbot_proto::v1 as pb;
use pb::conversation_event::Kind;
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_reconnecting_stream_resumes_exactly,
    converse_carries_everything
);

async fn next(stream: &mut Streaming<pb::ConversationEvent>) -> pb::ConversationEvent {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an event within 20 s")
        .expect("the stream is open")
        .expect("not an error")
}

/// Skips to the next `rejected` event.
async fn next_rejected(stream: &mut Streaming<pb::ConversationEvent>) -> pb::ClientEventRejected {
    loop {
        if let Some(Kind::Rejected(r)) = next(stream).await.kind {
            return r;
        }
    }
}

pub async fn subscribe(
    app: &TestApp,
    customer: &str,
    id: &str,
    after: u64,
) -> Streaming<pb::ConversationEvent> {
    app.client()
        .await
        .stream_events(req(
            customer,
            pb::StreamEventsRequest {
                conversation_id: id.into(),
                after_sequence: after,
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn a_reconnecting_stream_resumes_exactly(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut c = app.client().await;
    let id = start(&mut c, "hana").await;
    let mut phone = subscribe(&app, "hana", &id, 0).await;
    let mut laptop = subscribe(&app, "hana", &id, 0).await;
    assert_eq!(
        next(&mut phone).await.sequence,
        1,
        "the stored greeting first"
    );
    assert_eq!(next(&mut laptop).await.sequence, 1);

    send(
        &mut c,
        "hana",
        &id,
        "h1",
        "what are your branch opening hours",
    )
    .await
    .unwrap();
    for device in [&mut phone, &mut laptop] {
        let e = next(device).await;
        assert_eq!(e.sequence, 2);
        match e.kind {
            Some(Kind::Message(m)) => assert_eq!(m.author(), pb::Author::Customer),
            other => panic!("{other:?}"),
        }
        assert_eq!(next(device).await.sequence, 3);
    }
    // The phone drops; two more turns happen; it reconnects after 3.
    drop(phone);
    send(&mut c, "hana", &id, "h2", "thanks").await.unwrap();
    send(&mut c, "hana", &id, "h3", "bye").await.unwrap();
    let mut phone = subscribe(&app, "hana", &id, 3).await;
    let got: Vec<u64> = [
        next(&mut phone).await,
        next(&mut phone).await,
        next(&mut phone).await,
        next(&mut phone).await,
    ]
    .iter()
    .map(|e| e.sequence)
    .collect();
    assert_eq!(got, vec![4, 5, 6, 7]);
    for want in 4..=7 {
        assert_eq!(next(&mut laptop).await.sequence, want);
    }
    // Live again: a read receipt is stored and delivered to both.
    let mut cc = app.client().await;
    let open = pb::ClientEvent {
        kind: Some(Kind2::Open(pb::OpenConversation {
            conversation_id: id.clone(),
            after_sequence: 7,
        })),
    };
    let receipt = pb::ClientEvent {
        kind: Some(Kind2::ReadReceipt(pb::ReadReceipt {
            reader: pb::Author::Customer.into(),
            up_to_sequence: 7,
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(open).await.unwrap();
    let _converse = cc
        .converse(req("hana", tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap();
    tx.send(receipt).await.unwrap();
    for device in [&mut phone, &mut laptop] {
        let e = next(device).await;
        assert_eq!(e.sequence, 8);
        assert!(matches!(e.kind, Some(Kind::ReadReceipt(ref r)) if r.up_to_sequence == 7));
    }
    // Ending the conversation ends every stream after the `ended` event.
    c.end_conversation(req(
        "hana",
        pb::EndConversationRequest {
            conversation_id: id.clone(),
            reason: "customer_closed".into(),
        },
    ))
    .await
    .unwrap();
    let e = next(&mut phone).await;
    assert!(matches!(e.kind, Some(Kind::Ended(ref r)) if r.reason == "customer_closed"));
    let end = tokio::time::timeout(Duration::from_secs(10), phone.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the stream closes cleanly: {end:?}");
    app.stop().await.unwrap();
    db.drop_now().await;
}

use pb::client_event::Kind as Kind2;

async fn converse_carries_everything(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut c = app.client().await;
    let id = start(&mut c, "ivan").await;
    let mut watcher = subscribe(&app, "ivan", &id, 1).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(pb::ClientEvent {
        kind: Some(Kind2::Open(pb::OpenConversation {
            conversation_id: id.clone(),
            after_sequence: 0,
        })),
    })
    .await
    .unwrap();
    let mut out = c
        .converse(req("ivan", tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut out).await.sequence, 1, "replay from the start");

    tx.send(pb::ClientEvent {
        kind: Some(Kind2::Typing(pb::Typing {
            author: pb::Author::Customer.into(),
            active: true,
        })),
    })
    .await
    .unwrap();
    let typing = next(&mut watcher).await;
    assert!(matches!(typing.kind, Some(Kind::Typing(ref t)) if t.active));
    assert_eq!(
        typing.sequence, 1,
        "typing carries the last stored sequence"
    );

    tx.send(pb::ClientEvent {
        kind: Some(Kind2::Message(pb::SendMessageRequest {
            conversation_id: String::new(),
            client_message_id: "v1".into(),
            text: "how do I reset my pin".into(),
        })),
    })
    .await
    .unwrap();
    // Converse sees its own typing echo first, then the turn.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = next(&mut out).await;
        if let Some(Kind::Message(m)) = e.kind {
            seen.push((e.sequence, m.author(), m.text));
        }
    }
    assert_eq!(seen[0].0, 2);
    assert_eq!(seen[0].1, pb::Author::Customer);
    assert_eq!(seen[1].1, pb::Author::Bot);
    assert!(seen[1].2.contains("PIN"), "{seen:?}");

    tx.send(pb::ClientEvent {
        kind: Some(Kind2::Message(pb::SendMessageRequest {
            conversation_id: String::new(),
            client_message_id: "v2".into(),
            text: "   ".into(),
        })),
    })
    .await
    .unwrap();
    let rejected = next_rejected(&mut out).await;
    assert_eq!(rejected.client_message_id, "v2");
    assert_eq!(rejected.code, Code::InvalidArgument as i32);
    assert_eq!(rejected.reason, "TEXT_EMPTY");
    // A read receipt for events that do not exist is refused too.
    tx.send(pb::ClientEvent {
        kind: Some(Kind2::ReadReceipt(pb::ReadReceipt {
            reader: pb::Author::Customer.into(),
            up_to_sequence: 999,
        })),
    })
    .await
    .unwrap();
    let rejected = next_rejected(&mut out).await;
    assert_eq!(rejected.reason, "SEQUENCE_AHEAD");
    // The stream stays open after a refusal.
    tx.send(pb::ClientEvent {
        kind: Some(Kind2::Message(pb::SendMessageRequest {
            conversation_id: String::new(),
            client_message_id: "v3".into(),
            text: "thank you".into(),
        })),
    })
    .await
    .unwrap();
    let e = loop {
        let e = next(&mut out).await;
        if matches!(e.kind, Some(Kind::Message(_))) {
            break e;
        }
    };
    assert_eq!(e.sequence, 4);
    drop(tx);
    drop(out);
    app.stop().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_shed_and_shutdown_closes_streams() {
    let (app, db) = spawn_with(Backend::Sqlite, |s| {
        s.limits.max_streams = 2;
        s.limits.max_streams_per_customer = 1;
    })
    .await;
    let mut c = app.client().await;
    let id = start(&mut c, "judy").await;
    let kim = start(&mut c, "kim").await;
    let lou = start(&mut c, "lou").await;
    let open = |customer: &'static str, id: String| {
        let mut c = c.clone();
        async move {
            c.stream_events(req(
                customer,
                pb::StreamEventsRequest {
                    conversation_id: id,
                    after_sequence: 0,
                },
            ))
            .await
        }
    };
    let mut first = subscribe(&app, "judy", &id, 0).await;
    next(&mut first).await;
    // One stream per customer here: judy's second is refused, kim's first is not.
    let refused = open("judy", id.clone()).await.unwrap_err();
    assert_status(&refused, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    let mut second = open("kim", kim).await.unwrap().into_inner();
    next(&mut second).await;
    // Two streams in the whole server: lou's is shed.
    let shed = open("lou", lou).await.unwrap_err();
    assert_status(&shed, Code::ResourceExhausted, "OVERLOADED");
    assert!(tonic_types::StatusExt::get_details_retry_info(&shed).is_some());
    // Closing a stream frees its place.
    drop(second);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopping = tokio::spawn(app.stop());
    let end = tokio::time::timeout(Duration::from_secs(10), first.next())
        .await
        .unwrap()
        .expect("a final status");
    let status = end.unwrap_err();
    assert_status(&status, Code::Unavailable, "SHUTTING_DOWN");
    stopping.await.unwrap().unwrap();
    db.drop_now().await;
}
