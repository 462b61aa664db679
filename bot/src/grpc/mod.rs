//! The gRPC server: `bankbot.v1.ConversationService` behind the JWT guard,
//! `grpc.health.v1.Health`, server reflection (v1 and v1alpha), optional
//! TLS/mTLS, and the admin HTTP port with Prometheus metrics.
//!
//! Start-up: the listener is bound first and serves health (NOT_SERVING)
//! while the database is migrated and the model loaded; then health turns
//! SERVING. Shutdown: health NOT_SERVING, open streams end with UNAVAILABLE,
//! no new calls are accepted, in-flight calls finish (up to the grace
//! period), the database pool closes.

pub mod agent;
pub mod convert;
pub mod guard;
pub mod metrics;
pub mod service;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use bankbot_proto::v1::agent_service_server::AgentServiceServer;
use bankbot_proto::v1::conversation_service_server::ConversationServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::auth::{AuthConfig, Authenticator, KeySource};
use crate::service::{Conversations, Nlu};
use crate::settings::Settings;
use crate::store::Store;
use guard::{CustomerLimiter, Guard};
use metrics::Metrics;
use service::{ConversationApi, Shared};

/// Largest request message accepted (a 4 KiB text plus framing, with room).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
const SERVICE_NAME: &str = "bankbot.v1.ConversationService";
const AGENT_SERVICE_NAME: &str = "bankbot.v1.AgentService";

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    settings: Settings,
    listener: TcpListener,
    admin: Option<TcpListener>,
}

impl Server {
    /// Checks the transport settings and binds the gRPC and admin ports.
    pub async fn bind(settings: Settings) -> anyhow::Result<Self> {
        let tls = settings.tls.cert.is_some();
        if !tls && !settings.listen.ip().is_loopback() && !settings.tls.allow_plaintext {
            bail!(
                "refusing plaintext gRPC on the non-loopback address {}: give --tls-cert and --tls-key, \
                 or --allow-plaintext when a proxy terminates TLS",
                settings.listen
            );
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let admin = if settings.admin_listen.is_empty() {
            None
        } else {
            let addr: SocketAddr = settings
                .admin_listen
                .parse()
                .with_context(|| format!("admin_listen `{}`", settings.admin_listen))?;
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (admin)"))?,
            )
        };
        Ok(Self {
            settings,
            listener,
            admin,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves. `nlu` loads the model; it runs
    /// while health already answers NOT_SERVING.
    pub async fn run<N, S>(self, nlu: N, shutdown: S) -> anyhow::Result<()>
    where
        N: Future<Output = anyhow::Result<Arc<Nlu>>> + Send,
        S: Future<Output = ()> + Send,
    {
        let Self {
            settings,
            listener,
            admin,
        } = self;
        let auth = Arc::new(authenticator(&settings)?);
        let metrics = Arc::new(Metrics::new());
        let limiter = Arc::new(CustomerLimiter::new(
            settings.limits.customer_rate_per_second,
            settings.limits.customer_burst,
        ));
        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::NotServing).await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(bankbot_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .context("building reflection (v1)")?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .context("building reflection (v1alpha)")?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            ready: OnceLock::new(),
            shutdown: shutdown_rx,
            in_flight: Arc::new(Semaphore::new(settings.limits.max_in_flight)),
            streams: Arc::new(Semaphore::new(settings.limits.max_streams)),
            customer_streams: std::sync::Mutex::new(std::collections::HashMap::new()),
            max_streams_per_customer: settings.limits.max_streams_per_customer,
            limiter: limiter.clone(),
            metrics: metrics.clone(),
        });
        let api = tonic::service::interceptor::InterceptedService::new(
            ConversationServiceServer::new(ConversationApi::new(shared.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            Guard {
                auth: auth.clone(),
                limiter: limiter.clone(),
                metrics: metrics.clone(),
                role: crate::auth::Role::Customer,
                service: "ConversationService",
            },
        );
        let agent_api = tonic::service::interceptor::InterceptedService::new(
            AgentServiceServer::new(agent::AgentApi::new(ConversationApi::new(shared.clone())))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            Guard {
                auth,
                limiter: limiter.clone(),
                metrics: metrics.clone(),
                role: crate::auth::Role::Agent,
                service: "AgentService",
            },
        );

        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)));
        if let Some(tls) = tls_config(&settings)? {
            builder = builder.tls_config(tls).context("configuring TLS")?;
        }
        let router = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .add_service(agent_api);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Small request/response frames: without TCP_NODELAY every reply
        // waits for the peer's delayed ACK (about 40 ms).
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let grpc = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        }));
        let admin_task = admin.map(|l| tokio::spawn(serve_admin(l, shared.clone())));
        let janitor = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    limiter.forget_idle();
                }
            })
        };

        tokio::pin!(shutdown);
        let init = async {
            let store = Store::connect(&settings)
                .await
                .context("opening the database")?;
            store.migrate().await.context("migrating the database")?;
            let observer: Arc<dyn bankbot_connectors::http::CallObserver> = metrics.clone();
            let bank = crate::bank::connect(&settings.bank, Some(observer))?;
            let nlu = nlu.await?;
            anyhow::Ok((store, nlu, bank))
        };
        let shutdown_rx_for_reconciler = shared.shutdown.clone();
        let mut reconciler = None;
        let mut sweeper = None;
        let mut queue = None;
        let started = tokio::select! {
            r = init => Some(r),
            () = &mut shutdown => None,
        };
        let store = match started {
            Some(Ok((store, nlu, bank))) => {
                let escalations = Arc::new(
                    crate::escalation::Escalations::connect(
                        store.clone(),
                        settings.escalation.clone(),
                        settings.bot.clone(),
                    )
                    .await?,
                );
                let conv = Arc::new(Conversations::new(
                    store.clone(),
                    nlu,
                    bank.clone(),
                    settings.bot.clone(),
                    settings.limits.max_text_bytes,
                    metrics.clone(),
                    escalations.clone(),
                ));
                queue = Some(escalations.clone());
                escalations
                    .backend()
                    .attach_hub(conv.hub().clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("relaying live events: {e}"))?;
                // Returns lapsed claims to the queue, relays the outbox and
                // tells waiting customers where they stand.
                sweeper = Some(tokio::spawn(crate::escalation::run_sweeper(
                    escalations,
                    conv.clone(),
                    {
                        let mut stop = shutdown_rx_for_reconciler.clone();
                        async move {
                            let _ = stop.wait_for(|s| *s).await;
                        }
                    },
                )));
                // Finishes payments left without an outcome, from this
                // process or a previous one, and tells the customers.
                let notify: Arc<crate::bank::Notify> = {
                    let conv = conv.clone();
                    Arc::new(move |events| conv.publish(events))
                };
                reconciler = Some(tokio::spawn(crate::bank::run_reconciler(
                    store.clone(),
                    bank,
                    crate::bank::ReconcilerConfig {
                        interval: Duration::from_millis(settings.bank.reconcile_interval_ms),
                        idle: Duration::from_millis(settings.bank.reconcile_after_ms),
                        texts: settings.bot.clone(),
                    },
                    notify,
                    {
                        let mut stop = shutdown_rx_for_reconciler.clone();
                        async move {
                            let _ = stop.wait_for(|s| *s).await;
                        }
                    },
                )));
                let _ = shared.ready.set(conv);
                set_health(&health, ServingStatus::Serving).await;
                tracing::info!(backend = ?store.backend(), "serving");
                shutdown.await;
                Some(store)
            }
            Some(Err(e)) => {
                let _ = stop_tx.send(());
                janitor.abort();
                let _ = grpc.await;
                return Err(e);
            }
            None => None,
        };

        tracing::info!("shutting down");
        set_health(&health, ServingStatus::NotServing).await;
        let _ = shutdown_tx.send(true);
        let _ = stop_tx.send(());
        let grace = Duration::from_secs(settings.limits.shutdown_grace_secs);
        match tokio::time::timeout(grace, grpc).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server error"),
            Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed"),
            Err(_) => tracing::warn!("in-flight calls did not finish within the grace period"),
        }
        janitor.abort();
        if let Some(r) = reconciler {
            let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
        }
        if let Some(s) = sweeper {
            let _ = tokio::time::timeout(Duration::from_secs(2), s).await;
        }
        if let Some(q) = queue {
            q.close().await;
        }
        if let Some(t) = admin_task {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        if let Some(store) = store {
            store.close().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The server as a whole ("") and both services share one status.
async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
    health.set_service_status(AGENT_SERVICE_NAME, status).await;
}

/// The configured JWT verifier; refuses to build without a key.
fn authenticator(settings: &Settings) -> anyhow::Result<Authenticator> {
    let a = &settings.auth;
    let keys = match (&a.jwks_file, &a.hs256_secret_file) {
        (Some(_), Some(_)) => bail!(
            "configure either a JWKS file (production) or an HS256 secret file (development), not both"
        ),
        (Some(jwks), None) => KeySource::Jwks(jwks.clone()),
        (None, Some(secret)) => KeySource::Hs256SecretFile(secret.clone()),
        (None, None) => bail!(
            "no JWT key configured: set BANKBOT_JWKS_FILE (or --jwks-file) for RS256/ES256 keys, \
             or BANKBOT_JWT_HS256_SECRET_FILE for development; `bankbot serve --insecure-dev` \
             creates a development secret"
        ),
    };
    if a.issuer.is_empty() || a.audience.is_empty() {
        bail!(
            "the JWT issuer and audience must be configured (BANKBOT_JWT_ISSUER, BANKBOT_JWT_AUDIENCE)"
        );
    }
    Ok(Authenticator::from_config(&AuthConfig {
        keys,
        issuer: a.issuer.clone(),
        audience: a.audience.clone(),
        leeway_secs: a.leeway_secs,
    })?)
}

fn tls_config(settings: &Settings) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&settings.tls.cert, &settings.tls.key) else {
        return Ok(None);
    };
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &settings.tls.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// `GET /metrics` (Prometheus text) and `GET /ready` (200 once serving).
async fn serve_admin(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let metrics_state = shared.clone();
    let ready_state = shared;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let s = metrics_state.clone();
                async move {
                    let queue = s.ready.get().map(|c| c.engine().queue_len());
                    let tickets = match s.ready.get() {
                        Some(c) => c.store().open_ticket_counts().await.ok(),
                        None => None,
                    };
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        s.metrics.render(queue, tickets),
                    )
                }
            }),
        )
        .route(
            "/ready",
            get(move || {
                let s = ready_state.clone();
                async move {
                    if s.ready.get().is_some() && !*s.shutdown.borrow() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}
