//! Turns, idempotency, transcripts, validation and persistence.

use bankbot_proto::v1 as pb;
use futures_util::future::join_all;
use tonic::Code;
use tonic_types::StatusExt;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_full_conversation,
    resends_are_answered_from_storage,
    pages_cover_the_transcript_once,
    invalid_text_is_refused_and_nothing_stored,
    card_numbers_are_masked_before_storage,
    other_customers_get_not_found,
    a_restart_keeps_the_history,
    a_flow_runs_across_turns_with_its_state_stored,
);

async fn a_full_conversation(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut c = app.client().await;
    let started = c
        .start_conversation(req(
            "alice",
            pb::StartConversationRequest {
                channel: "web".into(),
                locale: String::new(),
                metadata: Default::default(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.state(), pb::ConversationState::Active);
    assert_eq!(started.messages.len(), 1, "a greeting");
    assert_eq!(started.last_sequence, 1);
    let id = started.conversation_id;

    let r = send(
        &mut c,
        "alice",
        &id,
        "m1",
        "I think my card was stolen yesterday",
    )
    .await
    .unwrap();
    let nlu = r.nlu.clone().unwrap();
    assert_eq!(nlu.intent, "card_lost_stolen");
    assert!(!nlu.out_of_scope && nlu.confidence > 0.5, "{nlu:?}");
    assert!(!nlu.ranking.is_empty());
    assert!(!r.replayed);
    // The lost-card flow: it says what happens, then asks which card (the
    // in-process bank's customer has two), offering them as quick replies.
    assert_eq!(r.messages.len(), 2, "{:?}", r.messages);
    assert!(
        r.messages[0].text.contains("block the card"),
        "{:?}",
        r.messages[0]
    );
    assert!(
        r.messages[1].text.contains("Which card"),
        "{:?}",
        r.messages[1]
    );
    assert_eq!(r.messages[1].quick_replies.len(), 2);
    let customer = r.customer_message.unwrap();
    assert_eq!(customer.author(), pb::Author::Customer);
    assert_eq!(customer.client_message_id, "m1");
    assert_eq!(customer.sequence, 2);

    let r = send(
        &mut c,
        "alice",
        &id,
        "m2",
        "who won the football world cup in 1966",
    )
    .await
    .unwrap();
    let nlu = r.nlu.unwrap();
    assert!(nlu.out_of_scope, "{nlu:?}");
    assert_eq!(nlu.intent, "out_of_scope");
    assert!(
        r.messages[0].text.contains("cards, payments"),
        "{:?}",
        r.messages
    );

    let all = all_messages(&mut c, "alice", &id).await;
    let authors: Vec<_> = all.iter().map(|m| m.author()).collect();
    let (bot, customer) = (pb::Author::Bot, pb::Author::Customer);
    assert_eq!(authors, vec![bot, customer, bot, bot, customer, bot, bot]);
    let seqs: Vec<u64> = all.iter().map(|m| m.sequence).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<u64>>());
    // The task resumes after the out-of-scope answer.
    assert!(all[6].text.contains("Which card"), "{:?}", all[6]);
    assert!(
        all.iter()
            .all(|m| m.create_time.is_some() && !m.message_id.is_empty())
    );
    assert_eq!(all[2].reply_to, all[1].message_id);

    c.submit_feedback(req(
        "alice",
        pb::SubmitFeedbackRequest {
            conversation_id: id.clone(),
            rating: 4,
            comment: "quick, thanks".into(),
        },
    ))
    .await
    .unwrap();
    let bad = c
        .submit_feedback(req(
            "alice",
            pb::SubmitFeedbackRequest {
                conversation_id: id.clone(),
                rating: 6,
                comment: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&bad, Code::InvalidArgument, "RATING_OUT_OF_RANGE");
    let store = app.store().await;
    assert_eq!(
        store.feedback(&id).await.unwrap(),
        Some((4, "quick, thanks".into()))
    );

    let ended = c
        .end_conversation(req(
            "alice",
            pb::EndConversationRequest {
                conversation_id: id.clone(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.state(), pb::ConversationState::Ended);
    assert_eq!(ended.last_sequence, 8, "7 messages, then the `ended` event");
    let refused = send(&mut c, "alice", &id, "m3", "hello?")
        .await
        .unwrap_err();
    assert_status(&refused, Code::FailedPrecondition, "CONVERSATION_ENDED");
    // A resend of an earlier message still gets its stored reply.
    assert!(
        send(
            &mut c,
            "alice",
            &id,
            "m1",
            "I think my card was stolen yesterday"
        )
        .await
        .unwrap()
        .replayed
    );
    store.close().await;
    app.stop().await.unwrap();
    db.drop_now().await;
}

async fn resends_are_answered_from_storage(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut c = app.client().await;
    let id = start(&mut c, "bob").await;
    let first = send(&mut c, "bob", &id, "k1", "what is my balance")
        .await
        .unwrap();
    let again = send(&mut c, "bob", &id, "k1", "what is my balance")
        .await
        .unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(first.messages, again.messages);
    assert_eq!(first.customer_message, again.customer_message);

    // 20 concurrent duplicates of a new message: one stored turn, one answer.
    let calls = (0..20).map(|_| {
        let mut c = c.clone();
        let id = id.clone();
        async move { send(&mut c, "bob", &id, "k2", "freeze my card please").await }
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids: std::collections::BTreeSet<_> = results
        .iter()
        .map(|r| r.customer_message.as_ref().unwrap().message_id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "every duplicate sees the same stored message");
    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
    let store = app.store().await;
    assert_eq!(store.count_client_messages(&id, "k2").await.unwrap(), 1);
    assert_eq!(all_messages(&mut c, "bob", &id).await.len(), 5);

    let reused = send(&mut c, "bob", &id, "k2", "something else entirely")
        .await
        .unwrap_err();
    assert_status(&reused, Code::AlreadyExists, "CLIENT_MESSAGE_ID_REUSED");
    store.close().await;
    app.stop().await.unwrap();
    db.drop_now().await;
}

async fn pages_cover_the_transcript_once(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut c = app.client().await;
    let id = start(&mut c, "carol").await;
    for i in 0..7 {
        send(
            &mut c,
            "carol",
            &id,
            &format!("p{i}"),
            "show me my recent transactions",
        )
        .await
        .unwrap();
    }
    let full = all_messages(&mut c, "carol", &id).await;
    assert_eq!(full.len(), 15);
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_messages(req(
                "carol",
                pb::ListMessagesRequest {
                    conversation_id: id.clone(),
                    page_size: 4,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.messages.len() <= 4);
        paged.extend(page.messages);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 4);
    assert_eq!(paged, full);

    let other = start(&mut c, "carol").await;
    let first = c
        .list_messages(req(
            "carol",
            pb::ListMessagesRequest {
                conversation_id: id.clone(),
                page_size: 2,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let misused = c
        .list_messages(req(
            "carol",
            pb::ListMessagesRequest {
                conversation_id: other,
                page_size: 2,
                page_token: first.next_page_token,
            },
        ))
        .await
        .unwrap_err();
    assert_status(&misused, Code::InvalidArgument, "PAGE_TOKEN_INVALID");
    let negative = c
        .list_messages(req(
            "carol",
            pb::ListMessagesRequest {
                conversation_id: id.clone(),
                page_size: -1,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&negative, Code::InvalidArgument, "PAGE_SIZE_NEGATIVE");
    app.stop().await.unwrap();
    db.drop_now().await;
}

async fn invalid_text_is_refused_and_nothing_stored(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut c = app.client().await;
    let id = start(&mut c, "dan").await;
    let cases = [
        ("", "TEXT_EMPTY"),
        ("   \n\t ", "TEXT_EMPTY"),
        ("hello\0there", "TEXT_CONTROL_CHARACTER"),
        ("bell \u{7} ring", "TEXT_CONTROL_CHARACTER"),
    ];
    for (i, (text, reason)) in cases.iter().enumerate() {
        let e = send(&mut c, "dan", &id, &format!("bad{i}"), text)
            .await
            .unwrap_err();
        assert_status(&e, Code::InvalidArgument, reason);
        let bad = e.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "text");
    }
    let long = "a".repeat(4097);
    let e = send(&mut c, "dan", &id, "long", &long).await.unwrap_err();
    assert_status(&e, Code::InvalidArgument, "TEXT_TOO_LONG");
    assert!(
        send(&mut c, "dan", &id, "ok", &"b".repeat(4096))
            .await
            .is_ok()
    );
    let e = send(&mut c, "dan", &id, "", "hello").await.unwrap_err();
    assert_status(&e, Code::InvalidArgument, "CLIENT_MESSAGE_ID_INVALID");
    let e = send(&mut c, "dan", "not-a-uuid", "x", "hello")
        .await
        .unwrap_err();
    assert_status(&e, Code::InvalidArgument, "CONVERSATION_ID_INVALID");
    let e = c
        .start_conversation(req(
            "dan",
            pb::StartConversationRequest {
                channel: "Web Chat!".into(),
                locale: String::new(),
                metadata: Default::default(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&e, Code::InvalidArgument, "CHANNEL_INVALID");
    // Only the greeting and the one valid turn were stored.
    assert_eq!(all_messages(&mut c, "dan", &id).await.len(), 3);
    app.stop().await.unwrap();
    db.drop_now().await;
}

async fn card_numbers_are_masked_before_storage(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut c = app.client().await;
    let id = start(&mut c, "erin").await;
    let r = send(
        &mut c,
        "erin",
        &id,
        "c1",
        "my card 4111 1111 1111 1111 was stolen, please block it",
    )
    .await
    .unwrap();
    let stored = r.customer_message.unwrap().text;
    assert!(!stored.contains("4111 1111"), "{stored}");
    assert!(stored.contains("1111"), "{stored}");
    assert_eq!(
        r.messages.len(),
        3,
        "a warning, then the flow's answer and question"
    );
    assert!(r.messages[0].text.contains("card numbers"));
    assert!(
        r.messages[2].text.contains("Which card"),
        "{:?}",
        r.messages
    );
    assert_eq!(r.nlu.unwrap().intent, "card_lost_stolen");
    let all = all_messages(&mut c, "erin", &id).await;
    assert!(all.iter().all(|m| !m.text.contains("4111 1111")));
    app.stop().await.unwrap();
    db.drop_now().await;
}

async fn other_customers_get_not_found(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut c = app.client().await;
    let id = start(&mut c, "frank").await;
    send(&mut c, "frank", &id, "f1", "hello").await.unwrap();
    let nobody = uuid::Uuid::new_v4().to_string();
    for target in [id.clone(), nobody] {
        let mut errors = Vec::new();
        errors.push(
            send(&mut c, "mallory", &target, "x", "hello")
                .await
                .unwrap_err(),
        );
        errors.push(
            c.list_messages(req(
                "mallory",
                pb::ListMessagesRequest {
                    conversation_id: target.clone(),
                    page_size: 10,
                    page_token: String::new(),
                },
            ))
            .await
            .unwrap_err(),
        );
        errors.push(
            c.stream_events(req(
                "mallory",
                pb::StreamEventsRequest {
                    conversation_id: target.clone(),
                    after_sequence: 0,
                },
            ))
            .await
            .unwrap_err(),
        );
        let open = pb::ClientEvent {
            kind: Some(pb::client_event::Kind::Open(pb::OpenConversation {
                conversation_id: target.clone(),
                after_sequence: 0,
            })),
        };
        errors.push(
            c.converse(req("mallory", tokio_stream::iter(vec![open])))
                .await
                .unwrap_err(),
        );
        errors.push(
            c.end_conversation(req(
                "mallory",
                pb::EndConversationRequest {
                    conversation_id: target.clone(),
                    reason: String::new(),
                },
            ))
            .await
            .unwrap_err(),
        );
        errors.push(
            c.submit_feedback(req(
                "mallory",
                pb::SubmitFeedbackRequest {
                    conversation_id: target.clone(),
                    rating: 1,
                    comment: String::new(),
                },
            ))
            .await
            .unwrap_err(),
        );
        for e in &errors {
            assert_status(e, Code::NotFound, "CONVERSATION_NOT_FOUND");
            assert_eq!(e.message(), "conversation not found");
        }
    }
    // Frank's conversation is untouched.
    let all = all_messages(&mut c, "frank", &id).await;
    assert_eq!(all.len(), 3);
    app.stop().await.unwrap();
    db.drop_now().await;
}

async fn a_restart_keeps_the_history(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let settings = app.settings.clone();
    let mut c = app.client().await;
    let id = start(&mut c, "gina").await;
    send(
        &mut c,
        "gina",
        &id,
        "g1",
        "I want to open a savings account",
    )
    .await
    .unwrap();
    let before = all_messages(&mut c, "gina", &id).await;
    app.stop().await.unwrap();

    let app = TestApp::start(settings).await;
    let mut c = app.client().await;
    assert_eq!(all_messages(&mut c, "gina", &id).await, before);
    let r = send(
        &mut c,
        "gina",
        &id,
        "g1",
        "I want to open a savings account",
    )
    .await
    .unwrap();
    assert!(r.replayed, "idempotency survives the restart");
    let r = send(&mut c, "gina", &id, "g2", "thanks a lot")
        .await
        .unwrap();
    assert_eq!(r.customer_message.unwrap().sequence, 4);
    app.stop().await.unwrap();
    db.drop_now().await;
}

/// Two replicas on one PostgreSQL database: turns of one conversation never
/// interleave and a duplicate is stored once, whichever replica gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serialise_turns_and_deduplicate() {
    let (a, db) = spawn_app(Backend::Postgres).await;
    let b = TestApp::start(a.settings.clone()).await;
    let mut ca = a.client().await;
    let cb = b.client().await;
    let id = start(&mut ca, "rita").await;
    let calls = (0..12).map(|i| {
        let mut c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        let id = id.clone();
        async move {
            send(
                &mut c,
                "rita",
                &id,
                "same",
                "what are your branch opening hours",
            )
            .await
        }
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids: std::collections::BTreeSet<_> = results
        .iter()
        .map(|r| r.customer_message.as_ref().unwrap().message_id.clone())
        .collect();
    assert_eq!(ids.len(), 1);
    // Concurrent turns on one conversation through both replicas; a client
    // told to retry (RESOURCE_EXHAUSTED with RetryInfo) resends the same id.
    let calls = (0..10).map(|i| {
        let mut c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        let id = id.clone();
        async move {
            loop {
                match send(&mut c, "rita", &id, &format!("t{i}"), "thanks").await {
                    Err(e) if e.code() == Code::ResourceExhausted => {
                        let wait = e.get_details_retry_info().unwrap().retry_delay.unwrap();
                        tokio::time::sleep(wait).await;
                    }
                    other => return other,
                }
            }
        }
    });
    for r in join_all(calls).await {
        r.unwrap();
    }
    let all = all_messages(&mut ca, "rita", &id).await;
    let seqs: Vec<u64> = all.iter().map(|m| m.sequence).collect();
    assert_eq!(seqs, (1..=23).collect::<Vec<u64>>(), "11 turns, gap-free");
    // Every reply directly follows the message it answers.
    for pair in all[1..].chunks(2) {
        assert_eq!(pair[1].reply_to, pair[0].message_id);
    }
    b.stop().await.unwrap();
    a.stop().await.unwrap();
    db.drop_now().await;
}

/// A transfer through the service: slots from the first message, a
/// confirmation, step-up, and the bank call, with the dialog state stored
/// with every turn (and read back from storage on the next).
async fn a_flow_runs_across_turns_with_its_state_stored(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let mut c = app.client().await;
    let id = start(&mut c, "fay").await;
    let store = app.store().await;
    let stage = |c: Option<bankbot::store::Conversation>| {
        let state: bankbot_dialog::State = serde_json::from_str(&c.unwrap().dialog_state).unwrap();
        bankbot::executor::stage_name(&state)
    };
    let r = send(
        &mut c,
        "fay",
        &id,
        "f1",
        "send £50 to Mum from my current account",
    )
    .await
    .unwrap();
    assert_eq!(r.nlu.unwrap().intent, "transfer_money");
    assert!(
        r.messages[0]
            .text
            .contains("send £50.00 to Mum from your Current account?"),
        "{:?}",
        r.messages
    );
    assert_eq!(
        stage(store.conversation(&id, "fay").await.unwrap()),
        "confirming"
    );
    let r = send(&mut c, "fay", &id, "f2", "yes").await.unwrap();
    assert!(
        r.messages[0].text.contains("one-time code"),
        "{:?}",
        r.messages
    );
    assert_eq!(
        stage(store.conversation(&id, "fay").await.unwrap()),
        "awaiting_step_up"
    );
    let r = send(&mut c, "fay", &id, "f3", "123456").await.unwrap();
    assert!(
        r.messages[0].text.contains("£50.00 is on its way to Mum"),
        "{:?}",
        r.messages
    );
    assert_eq!(stage(store.conversation(&id, "fay").await.unwrap()), "idle");
    // A resend of the confirming code is a replay: the bank is not called again.
    let again = send(&mut c, "fay", &id, "f3", "123456").await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.messages, r.messages);
    store.close().await;
    app.stop().await.unwrap();
    db.drop_now().await;
}
