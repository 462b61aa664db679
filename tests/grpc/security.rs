//! Authentication, rate limits, transport security and the generic
//! services (health, reflection) through a real server.

use std::time::Duration;

use bankbot::auth::test_support;
use bankbot_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::helpers::*;

fn with_header<T>(msg: T, value: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", value.parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_with_its_reason() {
    let (app, db) = spawn_app(Backend::Sqlite).await;
    let mut c = app.client().await;
    let matrix = test_support::rejection_matrix(&fixtures(), ISSUER, AUDIENCE);
    assert!(matrix.len() >= 20, "{} cases", matrix.len());
    let start = || pb::StartConversationRequest {
        channel: "web".into(),
        locale: String::new(),
        metadata: Default::default(),
    };
    for (case, header, reason) in &matrix {
        let e = c
            .start_conversation(with_header(start(), header))
            .await
            .expect_err(case);
        assert_eq!(e.code(), Code::Unauthenticated, "{case}: {e:?}");
        let info = e.get_details_error_info().unwrap();
        assert_eq!(&info.reason, reason, "{case}");
        // The refusal never echoes the token.
        if let Some(token) = header.strip_prefix("Bearer ").filter(|t| t.len() > 20) {
            assert!(!e.message().contains(&token[..20]), "{case}");
        }
    }
    // No header at all.
    let e = c
        .start_conversation(Request::new(start()))
        .await
        .unwrap_err();
    assert_status(&e, Code::Unauthenticated, "TOKEN_MISSING");
    // Both production algorithms are accepted.
    for kid in ["rsa-1", "ec-1"] {
        let t = test_support::token(
            &fixtures(),
            kid,
            &test_support::claims(ISSUER, AUDIENCE, "kate"),
        );
        c.start_conversation(with_header(start(), &format!("Bearer {t}")))
            .await
            .unwrap_or_else(|e| panic!("{kid}: {e:?}"));
    }
    // Agents and administrators have their own services; not this one.
    let mut agent = test_support::claims(ISSUER, AUDIENCE, "kate");
    agent["role"] = serde_json::json!("agent");
    let t = test_support::token(&fixtures(), "rsa-1", &agent);
    let e = c
        .start_conversation(with_header(start(), &format!("Bearer {t}")))
        .await
        .unwrap_err();
    assert_status(&e, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    // Refused calls stored nothing: only kate's two conversations exist.
    assert_eq!(
        app.store()
            .await
            .customer_conversation_count("kate")
            .await
            .unwrap(),
        2
    );
    app.stop().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_over_the_rate_limit_is_told_when_to_retry() {
    let (app, db) = spawn_with(Backend::Sqlite, |s| {
        s.limits.customer_rate_per_second = 1;
        s.limits.customer_burst = 3;
    })
    .await;
    let mut c = app.client().await;
    let id = start(&mut c, "leo").await;
    let mut refused = None;
    for i in 0..6 {
        if let Err(e) = send(&mut c, "leo", &id, &format!("r{i}"), "hello").await {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("the burst of 3 runs out");
    assert_status(&e, Code::ResourceExhausted, "RATE_LIMITED");
    let retry = e.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(retry <= Duration::from_secs(1), "{retry:?}");
    // Another customer is not affected.
    start(&mut c, "mia").await;
    app.stop().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics_are_served() {
    let (app, db) = spawn_app(Backend::Sqlite).await;
    let channel = app.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "bankbot.v1.ConversationService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1 as r1;
    let mut reflection = r1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(r1::ServerReflectionResponse {
        message_response:
            Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(list)),
        ..
    })) = responses.next().await
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["bankbot.v1.ConversationService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{names:?}");
    }

    use tonic_reflection::pb::v1alpha as ra;
    let mut alpha = ra::server_reflection_client::ServerReflectionClient::new(channel);
    let request = ra::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            ra::server_reflection_request::MessageRequest::FileContainingSymbol(
                "bankbot.v1.ConversationService".into(),
            ),
        ),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        responses.next().await,
        Some(Ok(ra::ServerReflectionResponse {
            message_response: Some(
                ra::server_reflection_response::MessageResponse::FileDescriptorResponse(_)
            ),
            ..
        }))
    ));

    // One turn, then the metrics show it.
    let mut c = app.client().await;
    let id = start(&mut c, "nina").await;
    send(&mut c, "nina", &id, "n1", "what are your opening hours")
        .await
        .unwrap();
    let admin = app.admin.unwrap();
    let body = http_get(admin, "/metrics").await;
    assert!(
        body.contains("bankbot_turn_latency_seconds_count 1"),
        "{body}"
    );
    assert!(
        body.contains("bankbot_intents_total{intent=\"branch_hours\"} 1"),
        "{body}"
    );
    assert!(body.contains("bankbot_engine_queue_depth"), "{body}");
    assert!(http_get(admin, "/ready").await.contains("ready"));
    app.stop().await.unwrap();
    db.drop_now().await;
}

/// A minimal HTTP/1.1 GET over a raw socket (the admin port is plain HTTP).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let ca_params = || {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p
    };
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params().self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params(), &ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["adapter".into()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let ca_pem = ca_cert.pem();
    let cert = write("server.pem", server_cert.pem());
    let key = write("server.key", server_key.serialize_pem());
    let ca_path = write("ca.pem", ca_pem.clone());

    let (app, db) = spawn_with(Backend::Sqlite, |s| {
        s.tls.cert = Some(cert.clone());
        s.tls.key = Some(key.clone());
        s.tls.client_ca = Some(ca_path.clone());
    })
    .await;
    let url = format!("https://localhost:{}", app.addr.port());
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .domain_name("localhost");
    // With a client certificate: works.
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .tls_config(tls.clone().identity(Identity::from_pem(
            client_cert.pem(),
            client_key.serialize_pem(),
        )))
        .unwrap()
        .connect()
        .await
        .unwrap();
    wait_serving(channel.clone()).await;
    let mut c = pb::conversation_service_client::ConversationServiceClient::new(channel);
    start(&mut c, "olga").await;
    // Without one: the handshake or the first call fails.
    let anonymous = match Channel::from_shared(url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
    {
        Err(_) => true,
        Ok(ch) => {
            let mut c = pb::conversation_service_client::ConversationServiceClient::new(ch);
            c.start_conversation(req(
                "olga",
                pb::StartConversationRequest {
                    channel: "web".into(),
                    locale: String::new(),
                    metadata: Default::default(),
                },
            ))
            .await
            .is_err()
        }
    };
    assert!(anonymous, "mTLS requires a client certificate");
    // Plaintext to the TLS port fails.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{}", app.addr.port()))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        let mut c = pb::conversation_service_client::ConversationServiceClient::new(ch);
        assert!(
            c.start_conversation(req(
                "olga",
                pb::StartConversationRequest {
                    channel: "web".into(),
                    locale: String::new(),
                    metadata: Default::default(),
                },
            ))
            .await
            .is_err()
        );
    }
    app.stop().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_off_loopback_and_missing_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = base_settings(dir.path());
    s.listen = "0.0.0.0:0".parse().unwrap();
    let e = bankbot::grpc::Server::bind(s.clone()).await.unwrap_err();
    assert!(e.to_string().contains("plaintext"), "{e}");
    s.tls.allow_plaintext = true;
    s.admin_listen = String::new();
    assert!(bankbot::grpc::Server::bind(s).await.is_ok());

    let mut s = base_settings(dir.path());
    s.auth.jwks_file = None;
    s.admin_listen = String::new();
    let server = bankbot::grpc::Server::bind(s).await.unwrap();
    let e = server
        .run(async { Ok(shared_nlu()) }, std::future::pending())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no JWT key configured"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_the_model_is_loaded() {
    let db = Db::fresh(Backend::Sqlite).await;
    let mut s = base_settings(db.dir.path());
    db.apply(&mut s);
    let server = bankbot::grpc::Server::bind(s).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (loaded, loading) = tokio::sync::oneshot::channel::<()>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(
        async move {
            let _ = loading.await;
            Ok(shared_nlu())
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    assert_eq!(
        health
            .check(check.clone())
            .await
            .unwrap()
            .into_inner()
            .status,
        not_serving
    );
    let mut c = pb::conversation_service_client::ConversationServiceClient::new(channel.clone());
    let e = c
        .start_conversation(req(
            "quinn",
            pb::StartConversationRequest {
                channel: "web".into(),
                locale: String::new(),
                metadata: Default::default(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&e, Code::Unavailable, "NOT_READY");
    assert!(e.get_details_retry_info().is_some());
    loaded.send(()).unwrap();
    wait_serving(channel).await;
    start(&mut c, "quinn").await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    db.drop_now().await;
}
