//! The service's one typed settings tree. Sources are layered, later ones
//! winning: built-in defaults < the config file (`--config FILE`, TOML) <
//! `BANKBOT_*` environment variables < command-line flags. The layers are
//! merged as TOML tables and deserialised once, so every key is checked the
//! same way whatever its source, and an unknown key or a wrong type names the
//! key and where it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything `bankbot serve` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The gRPC address.
    pub listen: SocketAddr,
    /// Where Prometheus metrics are served (`/metrics`); empty: not served.
    pub admin_listen: String,
    /// Where the SQLite database (and the development secret) live.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when empty the embedded SQLite database is used.
    pub database_url: DatabaseUrl,
    /// The intent catalogue (responses are read from it).
    pub intents: PathBuf,
    /// A trained model directory; empty: the default model trained from `intents`.
    pub model: Option<PathBuf>,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
    pub limits: LimitSettings,
    pub storage: StorageSettings,
    pub bot: BotSettings,
    pub bank: BankSettings,
    pub escalation: EscalationSettings,
}

/// Hand-overs to human agents: where the queue lives and its timings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationSettings {
    /// `embedded` (tables in the service's database) or `nats` (JetStream
    /// at `nats_url`, for many replicas).
    pub backend: QueueBackendName,
    /// The NATS server (`NATS_URL`), for the `nats` backend.
    pub nats_url: String,
    /// Prefix of the JetStream streams (upper case) and subjects, so
    /// several deployments can share a NATS server.
    pub nats_prefix: String,
    /// How long a claim lasts without activity from its agent.
    pub claim_lease_ms: u64,
    /// Claims a ticket may lose to an expired lease before it is
    /// dead-lettered.
    pub max_deliveries: u32,
    /// A ticket waiting this much longer than one of the next priority up
    /// goes first (priority aging).
    pub aging_secs: u64,
    /// The expected handling time per conversation, for waiting estimates
    /// before there is history.
    pub average_handle_secs: u64,
    /// How often expired claims are returned to the queue and waiting
    /// customers' positions refreshed.
    pub sweep_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueBackendName {
    Embedded,
    Nats,
}

impl Default for EscalationSettings {
    fn default() -> Self {
        Self {
            backend: QueueBackendName::Embedded,
            nats_url: String::new(),
            nats_prefix: "bankbot".into(),
            claim_lease_ms: 60_000,
            max_deliveries: 5,
            aging_secs: 600,
            average_handle_secs: 240,
            sweep_interval_ms: 1_000,
        }
    }
}

/// The bank connector: where the bank API is and how patiently to call it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BankSettings {
    /// The bank API up to its prefix, e.g.
    /// `https://bank.example/open-banking/v3.1`. Empty: the in-process demo
    /// bank (nothing real; for trying the bot out).
    pub url: String,
    /// Start the sandbox bank in this process and use it (`--sandbox`).
    pub sandbox: bool,
    /// Where the sandbox bank listens (`127.0.0.1:0` picks a free port).
    pub sandbox_listen: String,
    /// A file holding the bearer token the bank issued to bankbot.
    pub token_file: Option<PathBuf>,
    /// Deadline of one bank operation, retries included.
    pub deadline_ms: u64,
    /// Deadlines of named operations (`transfer = 8000`).
    pub deadlines_ms: BTreeMap<String, u64>,
    /// Larger answers from the bank are refused.
    pub max_response_kib: u64,
    /// PEM CA certificate(s) to trust for the bank's TLS, besides public roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key for mutual TLS with the bank.
    pub client_identity_file: Option<PathBuf>,
    /// How often the reconciler looks for payments without a final outcome.
    pub reconcile_interval_ms: u64,
    /// A payment untouched this long is the reconciler's to finish.
    pub reconcile_after_ms: u64,
    pub breaker: BreakerSettings,
}

/// When the bank connector's circuit breaker opens and how it recovers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Calls remembered.
    pub window: usize,
    /// Fewest calls in the window before it may open.
    pub min_calls: usize,
    /// Open when this share of the window failed (1–100)…
    pub failure_percent: u8,
    /// …or was slower than `slow_call_ms` (1–100).
    pub slow_percent: u8,
    pub slow_call_ms: u64,
    /// How long it refuses before letting probes through.
    pub open_ms: u64,
    /// Successful probes that close it.
    pub probes: usize,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        let d = bankbot_connectors::resilience::BreakerConfig::default();
        Self {
            window: d.window,
            min_calls: d.min_calls,
            failure_percent: (d.failure_ratio * 100.0).round() as u8,
            slow_percent: (d.slow_ratio * 100.0).round() as u8,
            slow_call_ms: u64::try_from(d.slow_call.as_millis()).unwrap_or(u64::MAX),
            open_ms: u64::try_from(d.open_for.as_millis()).unwrap_or(u64::MAX),
            probes: d.probes,
        }
    }
}

impl Default for BankSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            sandbox: false,
            sandbox_listen: "127.0.0.1:8787".into(),
            token_file: None,
            deadline_ms: 5_000,
            deadlines_ms: BTreeMap::new(),
            max_response_kib: 1_024,
            ca_file: None,
            client_identity_file: None,
            reconcile_interval_ms: 2_000,
            reconcile_after_ms: 10_000,
            breaker: BreakerSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `bankbot=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// JWKS file with RS256/ES256 public keys (production).
    pub jwks_file: Option<PathBuf>,
    /// File holding an HS256 secret (development).
    pub hs256_secret_file: Option<PathBuf>,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
    /// Start without a configured key: a development secret is created in the
    /// data directory and a token for a demo customer is printed. Never in production.
    pub insecure_dev: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain; with `key`, the server speaks TLS only.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// PEM CA bundle: clients must present a certificate it signed (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Allow plaintext gRPC on a non-loopback address (behind a TLS-terminating proxy).
    pub allow_plaintext: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Longest customer message, in bytes of UTF-8.
    pub max_text_bytes: usize,
    /// Sustained calls per second per customer.
    pub customer_rate_per_second: u32,
    /// Calls a customer may make in a burst above the rate.
    pub customer_burst: u32,
    /// Calls in flight across all customers; more are shed with RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// Open event streams across all customers.
    pub max_streams: usize,
    /// Open event streams per customer (devices, tabs).
    pub max_streams_per_customer: usize,
    /// How long in-flight calls get to finish on shutdown, in seconds.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// SQLite `synchronous`: `full` (an acknowledged turn survives power loss)
    /// or `normal` (survives a process crash; faster).
    pub sqlite_synchronous: SqliteSync,
    /// Connections in the pool.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    Full,
    Normal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotSettings {
    /// The first message of every conversation.
    pub greeting: String,
    /// Said when a message is out of scope and the catalogue has no `out_of_scope` responses.
    pub fallback: String,
    /// Said when the customer's message contained a card number (which was masked).
    pub card_number_warning: String,
    /// Said when an intent has no responses in the catalogue yet.
    pub no_response: String,
    /// Told later, in the conversation, when a payment whose outcome the
    /// customer had not heard went through (`{amount}`, `{reference}`).
    pub payment_done_notice: String,
    /// …or did not (`{amount}`, `{reason}`).
    pub payment_failed_notice: String,
    /// Told when the conversation joins the agents' queue (`{position}`,
    /// `{wait}`).
    pub handoff_queued_notice: String,
    /// Told when an agent takes the conversation.
    pub handoff_assigned_notice: String,
    /// Told when the customer stops waiting.
    pub handoff_cancelled_notice: String,
    /// Told when the agent's claim lapsed and the customer waits again.
    pub handoff_requeued_notice: String,
    /// Told when no agent kept the conversation (dead-lettered).
    pub handoff_failed_notice: String,
    /// Told when the agent hands the conversation back to the bot.
    pub handoff_returned_notice: String,
    /// Told when the agent closes the conversation.
    pub handoff_resolved_notice: String,
}

/// A database URL whose password never reaches logs or `config print`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// The URL with any password replaced by `***`.
    pub fn masked(&self) -> String {
        mask_url_password(&self.0)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}

fn mask_url_password(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (url, None),
    };
    let mut out = mask_authority_password(url);
    if let Some(q) = query {
        out.push('?');
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn mask_authority_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &url[scheme_end + 3 + at..]
        ),
        _ => url.to_owned(),
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_listen: "127.0.0.1:9464".into(),
            data_dir: PathBuf::from("data"),
            database_url: DatabaseUrl::default(),
            intents: PathBuf::from(crate::paths::DEFAULT_INTENTS_DIR),
            model: None,
            log: LogSettings::default(),
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
            limits: LimitSettings::default(),
            storage: StorageSettings::default(),
            bot: BotSettings::default(),
            bank: BankSettings::default(),
            escalation: EscalationSettings::default(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwks_file: None,
            hs256_secret_file: None,
            issuer: String::new(),
            audience: String::new(),
            leeway_secs: 30,
            insecure_dev: false,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_text_bytes: crate::text::DEFAULT_MAX_TEXT_BYTES,
            customer_rate_per_second: 20,
            customer_burst: 40,
            max_in_flight: 512,
            max_streams: 10_000,
            max_streams_per_customer: 16,
            shutdown_grace_secs: 10,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            sqlite_synchronous: SqliteSync::Full,
            max_connections: 16,
        }
    }
}

impl Default for BotSettings {
    fn default() -> Self {
        Self {
            greeting: "Hello! I'm the bank's virtual assistant. How can I help you today?".into(),
            fallback: "Sorry, I can't help with that. I can answer questions about your cards, \
                       payments, accounts and our products."
                .into(),
            card_number_warning: "For your security, please don't share card numbers in chat. \
                                  I've hidden the number you sent."
                .into(),
            no_response: "Thanks, I've understood. I can't do that in chat yet; a colleague \
                          or the app can help."
                .into(),
            payment_done_notice: "Update on your payment of {amount}: it has gone through. \
                                  Reference: {reference}."
                .into(),
            payment_failed_notice: "Update on your payment of {amount}: it did not go through \
                                    ({reason}), so no money has left your account."
                .into(),
            handoff_queued_notice: "You're number {position} in the queue for a colleague; the \
                                    wait is about {wait}. Say \"stop waiting\" to carry on with me."
                .into(),
            handoff_assigned_notice: "A colleague has joined the conversation.".into(),
            handoff_cancelled_notice:
                "No problem, you've left the queue. What can I help you with?".into(),
            handoff_requeued_notice: "Sorry, our colleague had to step away. You're back in the \
                                      queue and the next colleague free will pick up."
                .into(),
            handoff_failed_notice: "Sorry, none of our colleagues could take this just now. \
                                    I'm here to help meanwhile, or ask for a person again later."
                .into(),
            handoff_returned_notice: "You're back with the virtual assistant. What else can I \
                                      help you with?"
                .into(),
            handoff_resolved_notice: "Our colleague has closed this conversation. Thank you for \
                                      getting in touch."
                .into(),
        }
    }
}

/// Environment variables and the settings key each one sets.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("BANKBOT_LISTEN", "listen"),
    ("BANKBOT_ADMIN_LISTEN", "admin_listen"),
    ("BANKBOT_DATA_DIR", "data_dir"),
    ("DATABASE_URL", "database_url"),
    ("BANKBOT_DATABASE_URL", "database_url"),
    ("BANKBOT_INTENTS", "intents"),
    ("BANKBOT_MODEL", "model"),
    ("BANKBOT_LOG_FORMAT", "log.format"),
    ("BANKBOT_LOG_LEVEL", "log.level"),
    ("BANKBOT_JWKS_FILE", "auth.jwks_file"),
    ("BANKBOT_JWT_HS256_SECRET_FILE", "auth.hs256_secret_file"),
    ("BANKBOT_JWT_ISSUER", "auth.issuer"),
    ("BANKBOT_JWT_AUDIENCE", "auth.audience"),
    ("BANKBOT_JWT_LEEWAY_SECS", "auth.leeway_secs"),
    ("BANKBOT_INSECURE_DEV", "auth.insecure_dev"),
    ("BANKBOT_TLS_CERT", "tls.cert"),
    ("BANKBOT_TLS_KEY", "tls.key"),
    ("BANKBOT_TLS_CLIENT_CA", "tls.client_ca"),
    ("BANKBOT_ALLOW_PLAINTEXT", "tls.allow_plaintext"),
    ("BANKBOT_MAX_TEXT_BYTES", "limits.max_text_bytes"),
    (
        "BANKBOT_CUSTOMER_RATE_PER_SECOND",
        "limits.customer_rate_per_second",
    ),
    ("BANKBOT_CUSTOMER_BURST", "limits.customer_burst"),
    ("BANKBOT_MAX_IN_FLIGHT", "limits.max_in_flight"),
    ("BANKBOT_MAX_STREAMS", "limits.max_streams"),
    (
        "BANKBOT_MAX_STREAMS_PER_CUSTOMER",
        "limits.max_streams_per_customer",
    ),
    ("BANKBOT_SQLITE_SYNCHRONOUS", "storage.sqlite_synchronous"),
    ("BANKBOT_DB_MAX_CONNECTIONS", "storage.max_connections"),
    ("BANKBOT_BANK_URL", "bank.url"),
    ("BANKBOT_SANDBOX", "bank.sandbox"),
    ("BANKBOT_BANK_TOKEN_FILE", "bank.token_file"),
    ("BANKBOT_BANK_DEADLINE_MS", "bank.deadline_ms"),
    ("BANKBOT_QUEUE_BACKEND", "escalation.backend"),
    ("NATS_URL", "escalation.nats_url"),
    ("BANKBOT_NATS_URL", "escalation.nats_url"),
];

/// A settings problem, naming the source.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// One override: a dotted key, its raw text, and where it came from.
#[derive(Debug, Clone)]
pub struct Override {
    pub key: &'static str,
    pub value: String,
    pub origin: String,
}

impl Settings {
    /// Loads defaults < `file` < `env` < `flags`, then validates the result.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &[Override],
    ) -> Result<Self, SettingsError> {
        let mut tree =
            toml::Table::try_from(Settings::default()).map_err(|e| SettingsError::Invalid {
                origin: "defaults".into(),
                message: e.to_string(),
            })?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                let pos = e
                    .span()
                    .map(|s| crate::yaml::pos_of_byte(&text[..s.start], s.start));
                SettingsError::Invalid {
                    origin: match pos {
                        Some(p) => format!("{}:{p}", path.display()),
                        None => path.display().to_string(),
                    },
                    message: e.message().to_owned(),
                }
            })?;
            // Validate the file on its own first, so a mistake points at the file.
            check(&table, &path.display().to_string())?;
            merge(&mut tree, table);
        }
        let mut overrides: Vec<Override> = Vec::new();
        for (name, key) in ENV_KEYS {
            if let Some((_, v)) = env.iter().find(|(n, _)| n == name) {
                overrides.push(Override {
                    key,
                    value: v.clone(),
                    origin: format!("environment variable {name}"),
                });
            }
        }
        overrides.extend(flags.iter().cloned());
        for o in &overrides {
            set(&mut tree, o)?;
        }
        let settings: Settings =
            toml::Value::Table(tree)
                .try_into()
                .map_err(|e: toml::de::Error| SettingsError::Invalid {
                    origin: "settings".into(),
                    message: e.message().to_owned(),
                })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |message: String| {
            Err(SettingsError::Invalid {
                origin: "settings".into(),
                message,
            })
        };
        if self.limits.max_text_bytes == 0 || self.limits.max_text_bytes > 64 * 1024 {
            return bad("limits.max_text_bytes must be between 1 and 65536".into());
        }
        if self.limits.customer_rate_per_second == 0 || self.limits.customer_burst == 0 {
            return bad("limits.customer_rate_per_second and customer_burst must be > 0".into());
        }
        if self.limits.max_in_flight == 0
            || self.limits.max_streams == 0
            || self.limits.max_streams_per_customer == 0
        {
            return bad(
                "limits.max_in_flight, limits.max_streams and limits.max_streams_per_customer must be > 0"
                    .into(),
            );
        }
        if self.storage.max_connections == 0 {
            return bad("storage.max_connections must be > 0".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key go together".into());
        }
        if self.tls.client_ca.is_some() && self.tls.cert.is_none() {
            return bad("tls.client_ca needs tls.cert and tls.key".into());
        }
        if !self.database_url.is_empty()
            && !self.database_url.0.starts_with("postgres://")
            && !self.database_url.0.starts_with("postgresql://")
        {
            return bad(format!(
                "database_url must be a postgres:// URL (or empty for the embedded SQLite database), got {}",
                self.database_url.masked()
            ));
        }
        let q = &self.escalation;
        if q.backend == QueueBackendName::Nats
            && !(q.nats_url.starts_with("nats://") || q.nats_url.starts_with("tls://"))
        {
            return bad(format!(
                "escalation.backend = \"nats\" needs escalation.nats_url (NATS_URL) as nats://host:port, got `{}`",
                q.nats_url
            ));
        }
        if q.nats_prefix.is_empty()
            || q.nats_prefix.len() > 32
            || !q
                .nats_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return bad(format!(
                "escalation.nats_prefix `{}` must be 1-32 lowercase letters, digits or '_'",
                q.nats_prefix
            ));
        }
        if !(1_000..=3_600_000).contains(&q.claim_lease_ms) {
            return bad("escalation.claim_lease_ms must be between 1000 and 3600000".into());
        }
        if !(1..=100).contains(&q.max_deliveries) {
            return bad("escalation.max_deliveries must be between 1 and 100".into());
        }
        if q.aging_secs == 0 || q.average_handle_secs == 0 {
            return bad(
                "escalation.aging_secs and escalation.average_handle_secs must be > 0".into(),
            );
        }
        if !(50..=60_000).contains(&q.sweep_interval_ms) {
            return bad("escalation.sweep_interval_ms must be between 50 and 60000".into());
        }
        let b = &self.bank;
        if b.sandbox && !b.url.is_empty() {
            return bad("bank.url and bank.sandbox (--sandbox) exclude each other".into());
        }
        if !b.url.is_empty() && !b.url.starts_with("https://") && !b.url.starts_with("http://") {
            return bad(format!("bank.url must be an http(s) URL, got `{}`", b.url));
        }
        if b.sandbox && b.sandbox_listen.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "bank.sandbox_listen `{}` is not an address like 127.0.0.1:8787",
                b.sandbox_listen
            ));
        }
        if b.deadline_ms == 0 || b.deadline_ms > 120_000 {
            return bad("bank.deadline_ms must be between 1 and 120000".into());
        }
        if let Some((op, _)) = b.deadlines_ms.iter().find(|(op, ms)| {
            !bankbot_connectors::http::OPERATIONS.contains(&op.as_str()) || **ms == 0
        }) {
            return bad(format!(
                "bank.deadlines_ms.{op}: not an operation ({}) or zero",
                bankbot_connectors::http::OPERATIONS.join(", ")
            ));
        }
        let k = &b.breaker;
        if k.window == 0
            || k.min_calls == 0
            || k.min_calls > k.window
            || k.probes == 0
            || !(1..=100).contains(&k.failure_percent)
            || !(1..=100).contains(&k.slow_percent)
            || k.open_ms == 0
        {
            return bad(
                "bank.breaker: window, min_calls (≤ window), probes and open_ms must be > 0, \
                 failure_percent and slow_percent 1–100"
                    .into(),
            );
        }
        if b.max_response_kib == 0 || b.reconcile_interval_ms == 0 {
            return bad("bank.max_response_kib and bank.reconcile_interval_ms must be > 0".into());
        }
        if !self.admin_listen.is_empty() && self.admin_listen.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "admin_listen `{}` is not an address like 127.0.0.1:9464",
                self.admin_listen
            ));
        }
        Ok(())
    }

    /// The effective settings as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut copy = self.clone();
        copy.database_url = DatabaseUrl(self.database_url.masked());
        toml::to_string_pretty(&copy).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("bankbot.sqlite3")
    }
}

/// Rejects unknown keys and wrong types in a partial table.
fn check(table: &toml::Table, origin: &str) -> Result<(), SettingsError> {
    let mut tree =
        toml::Table::try_from(Settings::default()).map_err(|e| SettingsError::Invalid {
            origin: "defaults".into(),
            message: e.to_string(),
        })?;
    merge(&mut tree, table.clone());
    toml::Value::Table(tree)
        .try_into::<Settings>()
        .map(|_| ())
        .map_err(|e| SettingsError::Invalid {
            origin: origin.to_owned(),
            message: e.message().to_owned(),
        })
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sets a dotted key from text, typed like the default value at that key.
fn set(tree: &mut toml::Table, o: &Override) -> Result<(), SettingsError> {
    let invalid = |message: String| SettingsError::Invalid {
        origin: o.origin.clone(),
        message,
    };
    let mut parts: Vec<&str> = o.key.split('.').collect();
    let last = parts.pop().ok_or_else(|| invalid("empty key".into()))?;
    let mut table = tree;
    for p in parts {
        table = match table.get_mut(p) {
            Some(toml::Value::Table(t)) => t,
            _ => return Err(invalid(format!("unknown settings section `{p}`"))),
        };
    }
    let value = match table.get(last) {
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            o.value
                .trim()
                .parse()
                .map_err(|_| invalid(format!("`{}` is not a whole number", o.value)))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(match o.value.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            other => return Err(invalid(format!("`{other}` is not true or false"))),
        }),
        _ => toml::Value::String(o.value.clone()),
    };
    table.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(key: &'static str, value: &str) -> Override {
        Override {
            key,
            value: value.into(),
            origin: format!("--{key}"),
        }
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bankbot.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:6000\"\n[auth]\nissuer = \"file-iss\"\naudience = \"file-aud\"\n[limits]\nmax_text_bytes = 100\n",
        )
        .unwrap();
        let env = vec![
            ("BANKBOT_JWT_ISSUER".to_owned(), "env-iss".to_owned()),
            ("BANKBOT_MAX_TEXT_BYTES".to_owned(), "200".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let s = Settings::load(Some(&file), &env, &[flag("limits.max_text_bytes", "300")]).unwrap();
        assert_eq!(s.listen.port(), 6000);
        assert_eq!(s.auth.issuer, "env-iss");
        assert_eq!(s.auth.audience, "file-aud");
        assert_eq!(s.limits.max_text_bytes, 300);
        assert_eq!(
            s.limits.customer_burst,
            LimitSettings::default().customer_burst
        );
    }

    #[test]
    fn mistakes_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bankbot.toml");
        std::fs::write(&file, "[limits]\nmax_txt_bytes = 1\n").unwrap();
        let e = Settings::load(Some(&file), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bankbot.toml") && e.contains("max_txt_bytes"),
            "{e}"
        );

        std::fs::write(&file, "listen = [\n").unwrap();
        let e = Settings::load(Some(&file), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bankbot.toml:"), "{e}");

        let env = vec![("BANKBOT_MAX_TEXT_BYTES".to_owned(), "lots".to_owned())];
        let e = Settings::load(None, &env, &[]).unwrap_err().to_string();
        assert!(
            e.contains("BANKBOT_MAX_TEXT_BYTES") && e.contains("lots"),
            "{e}"
        );

        let e = Settings::load(None, &[], &[flag("listen", "nowhere")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") || e.contains("address"), "{e}");

        let e = Settings::load(None, &[], &[flag("database_url", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres://"), "{e}");
    }

    #[test]
    fn bank_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bankbot.toml");
        std::fs::write(
            &file,
            "[bank]\nurl = \"https://bank.example/open-banking/v3.1\"\n[bank.deadlines_ms]\ntransfer = 8000\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &[], &[]).unwrap();
        assert_eq!(s.bank.deadlines_ms.get("transfer"), Some(&8000));
        assert_eq!(s.bank.deadline_ms, 5_000);

        std::fs::write(&file, "[bank.deadlines_ms]\ntransfr = 8000\n").unwrap();
        let e = Settings::load(Some(&file), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("transfr") && e.contains("transfer_status"),
            "{e}"
        );

        let e = Settings::load(
            None,
            &[],
            &[flag("bank.url", "http://b/x"), flag("bank.sandbox", "true")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("exclude"), "{e}");

        let env = vec![("BANKBOT_BANK_URL".to_owned(), "ftp://bank".to_owned())];
        let e = Settings::load(None, &env, &[]).unwrap_err().to_string();
        assert!(e.contains("http(s)"), "{e}");

        let e = Settings::load(None, &[], &[flag("bank.deadline_ms", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("deadline_ms"), "{e}");

        let e = Settings::load(None, &[], &[flag("bank.breaker.min_calls", "50")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bank.breaker"), "{e}");
        let s = Settings::load(None, &[], &[flag("bank.breaker.open_ms", "2500")]).unwrap();
        assert_eq!(s.bank.breaker.open_ms, 2_500);
        assert_eq!(s.bank.breaker.failure_percent, 50);
    }

    #[test]
    fn escalation_settings_are_checked() {
        let env = vec![
            ("BANKBOT_QUEUE_BACKEND".to_owned(), "nats".to_owned()),
            ("NATS_URL".to_owned(), "nats://127.0.0.1:4222".to_owned()),
        ];
        let s = Settings::load(None, &env, &[]).unwrap();
        assert_eq!(s.escalation.backend, QueueBackendName::Nats);
        assert_eq!(s.escalation.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(s.escalation.nats_prefix, "bankbot");

        let e = Settings::load(None, &env[..1], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs escalation.nats_url"), "{e}");
        let e = Settings::load(None, &[], &[flag("escalation.backend", "kafka")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kafka"), "{e}");
        for (key, value, says) in [
            ("escalation.claim_lease_ms", "10", "claim_lease_ms"),
            ("escalation.max_deliveries", "0", "max_deliveries"),
            ("escalation.aging_secs", "0", "aging_secs"),
            ("escalation.sweep_interval_ms", "1", "sweep_interval_ms"),
            ("escalation.nats_prefix", "Bank.Bot", "nats_prefix"),
        ] {
            let e = Settings::load(None, &[], &[flag(key, value)])
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{key}: {e}");
        }
    }

    #[test]
    fn printing_masks_the_database_password() {
        let s = Settings::load(
            None,
            &[(
                "DATABASE_URL".to_owned(),
                "postgres://bot:s3cret@db:5432/bankbot".to_owned(),
            )],
            &[],
        )
        .unwrap();
        let printed = s.to_masked_toml();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("postgres://bot:***@db:5432/bankbot"),
            "{printed}"
        );
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(mask_url_password("postgres://db/x"), "postgres://db/x");
        assert_eq!(
            mask_url_password("postgres://db/x?sslmode=require&password=pw&user=u"),
            "postgres://db/x?sslmode=require&password=***&user=u"
        );
    }
}
