//! Starting real servers for the gRPC suite: `spawn_app(backend)` binds
//! 127.0.0.1:0 with a fresh database (a new SQLite directory, or a new
//! PostgreSQL database created from `DATABASE_URL`), the repository's
//! catalogue and a model trained once per test binary, and JWKS auth with
//! the committed test keys. Clients are real tonic clients over TCP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bankbot::auth::test_support;
use bankbot::grpc::Server;
use bankbot::paths::Paths;
use bankbot::service::Nlu;
use bankbot::settings::{DatabaseUrl, Settings};
use bankbot::store::Store;
use bankbot_proto::v1 as pb;
use bankbot_proto::v1::conversation_service_client::ConversationServiceClient;
use sqlx::Executor;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::common::{repo_model, repo_root};

pub const ISSUER: &str = "https://login.test-bank.example";
pub const AUDIENCE: &str = "bankbot-e2e";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/jwt")
}

/// A valid RS256 token for `customer`.
pub fn token(customer: &str) -> String {
    test_support::token(
        &fixtures(),
        "rsa-1",
        &test_support::claims(ISSUER, AUDIENCE, customer),
    )
}

/// One loaded NLU (engine thread + responses) shared by every in-process
/// server of this binary: the model is the same, only the servers differ.
pub fn shared_nlu() -> Arc<Nlu> {
    static NLU: OnceLock<Arc<Nlu>> = OnceLock::new();
    NLU.get_or_init(|| {
        let settings = base_settings(Path::new("unused"));
        let paths = Paths::resolve(
            std::env::var_os("BANKBOT_CACHE_DIR").map(PathBuf::from),
            std::env::var_os("BANKBOT_BASE_MODEL").map(PathBuf::from),
        );
        bankbot::commands::serve::load_nlu(&paths, &settings).unwrap()
    })
    .clone()
}

/// Settings of a test server: loopback port 0, JWKS auth, the trained model.
pub fn base_settings(data_dir: &Path) -> Settings {
    let mut s = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        intents: repo_root().join("intents"),
        model: Some(repo_model().to_path_buf()),
        ..Settings::default()
    };
    s.auth.jwks_file = Some(fixtures().join("jwks.json"));
    s.auth.issuer = ISSUER.into();
    s.auth.audience = AUDIENCE.into();
    s.limits.customer_rate_per_second = 1000;
    s.limits.customer_burst = 1000;
    s.limits.shutdown_grace_secs = 5;
    s
}

/// The PostgreSQL server the suite uses (CI sets DATABASE_URL; the machine's
/// local server otherwise).
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The NATS server with JetStream the suite uses (CI sets NATS_URL; the
/// machine's local server otherwise).
pub fn nats_url() -> String {
    std::env::var("NATS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into())
}

/// `url` with its database name replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A fresh, empty database for one test: a temporary directory (SQLite) or
/// a newly created PostgreSQL database, dropped again by [`Db::drop_now`].
#[derive(Debug)]
pub struct Db {
    pub dir: tempfile::TempDir,
    pub url: Option<String>,
    name: Option<String>,
}

impl Db {
    pub async fn fresh(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Self {
                dir,
                url: None,
                name: None,
            },
            Backend::Postgres => {
                sqlx::any::install_default_drivers();
                let admin = postgres_url();
                let name = format!("bankbot_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (set DATABASE_URL): {e}"));
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                Self {
                    dir,
                    url: Some(with_database(&admin, &name)),
                    name: Some(name),
                }
            }
        }
    }

    pub fn apply(&self, s: &mut Settings) {
        s.data_dir = self.dir.path().to_path_buf();
        s.database_url = DatabaseUrl(self.url.clone().unwrap_or_default());
    }

    pub async fn drop_now(&self) {
        if let Some(name) = &self.name {
            let admin = postgres_url();
            if let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await {
                let _ = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
            }
        }
    }
}

/// A running in-process server.
#[derive(Debug)]
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub admin: Option<std::net::SocketAddr>,
    pub settings: Settings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn start(settings: Settings) -> Self {
        let nlu = tokio::task::spawn_blocking(shared_nlu).await.unwrap();
        let server = Server::bind(settings.clone()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let admin = server.admin_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move { Ok(nlu) }, async move {
            let _ = stopped.await;
        }));
        let app = Self {
            addr,
            admin,
            settings,
            stop: Some(stop),
            task: Some(task),
        };
        // A TLS server is waited for by the test, over its own TLS channel.
        if app.settings.tls.cert.is_none() {
            wait_serving(app.channel().await).await;
        }
        app
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn client(&self) -> ConversationServiceClient<Channel> {
        ConversationServiceClient::new(self.channel().await)
    }

    /// A store on the same database, to assert what was stored.
    pub async fn store(&self) -> Store {
        Store::connect(&self.settings).await.unwrap()
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.unwrap(),
            None => Ok(()),
        }
    }
}

/// Polls health until SERVING (20 s at most).
pub async fn wait_serving(channel: Channel) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for _ in 0..800 {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if let Ok(r) = r
            && r.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the server did not become SERVING");
}

/// A started server on a fresh database of `backend`.
pub async fn spawn_app(backend: Backend) -> (TestApp, Db) {
    spawn_with(backend, |_| {}).await
}

pub async fn spawn_with(backend: Backend, edit: impl FnOnce(&mut Settings)) -> (TestApp, Db) {
    let db = Db::fresh(backend).await;
    let mut s = base_settings(db.dir.path());
    db.apply(&mut s);
    edit(&mut s);
    (TestApp::start(s).await, db)
}

/// A request with the bearer token of `customer`.
pub fn req<T>(customer: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token(customer)).parse().unwrap(),
    );
    r
}

pub async fn start(client: &mut ConversationServiceClient<Channel>, customer: &str) -> String {
    client
        .start_conversation(req(
            customer,
            pb::StartConversationRequest {
                channel: "web".into(),
                locale: "en-GB".into(),
                metadata: [("app_version".to_owned(), "1.2.3".to_owned())].into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .conversation_id
}

pub async fn send(
    client: &mut ConversationServiceClient<Channel>,
    customer: &str,
    conversation_id: &str,
    client_message_id: &str,
    text: &str,
) -> Result<pb::SendMessageResponse, Status> {
    client
        .send_message(req(
            customer,
            pb::SendMessageRequest {
                conversation_id: conversation_id.into(),
                client_message_id: client_message_id.into(),
                text: text.into(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

pub async fn all_messages(
    client: &mut ConversationServiceClient<Channel>,
    customer: &str,
    conversation_id: &str,
) -> Vec<pb::Message> {
    client
        .list_messages(req(
            customer,
            pb::ListMessagesRequest {
                conversation_id: conversation_id.into(),
                page_size: 1000,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .messages
}

/// Asserts a status code and its ErrorInfo reason.
pub fn assert_status(s: &Status, code: Code, reason: &str) {
    assert_eq!(s.code(), code, "{s:?}");
    let info = s
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {s:?}"));
    assert_eq!(info.reason, reason, "{s:?}");
    assert_eq!(info.domain, "bankbot.v1");
}

/// Runs an async test body once per backend: SQLite, then PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}
