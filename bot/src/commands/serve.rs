//! `bankbot serve`: settings, logging, the model, then the gRPC server until
//! SIGINT/SIGTERM.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bankbot_models::engine::{Engine, EngineConfig};

use crate::catalogue;
use crate::cli::{ServeArgs, SettingsArgs};
use crate::grpc::Server;
use crate::nlu;
use crate::paths::{DEFAULT_MODEL_DIR, Paths};
use crate::service::{Nlu, Responder};
use crate::settings::{LogFormat, Override, Settings};

/// Issuer and audience of development tokens (`--insecure-dev`).
pub const DEV_ISSUER: &str = "bankbot-dev";
pub const DEV_AUDIENCE: &str = "bankbot";

pub fn run(paths: &Paths, args: &ServeArgs) -> anyhow::Result<bool> {
    let mut settings = load_settings(&args.settings)?;
    init_tracing(&settings)?;
    let dev_secret = apply_insecure_dev(&mut settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let sandbox = start_sandbox(&mut settings).await?;
        let server = Server::bind(settings.clone()).await?;
        let addr = server.local_addr()?;
        // A line scripts (and the end-to-end tests) can wait for.
        println!("bankbot: listening on {addr}");
        if let Some(admin) = server.admin_addr() {
            println!("bankbot: metrics on http://{admin}/metrics");
        }
        if let Some(secret) = dev_secret {
            let token = crate::commands::config::mint(
                &secret,
                &settings,
                "demo-customer",
                "customer",
                24 * 3600,
            )?;
            println!("bankbot: development token for customer `demo-customer` (24 h):\n{token}");
        }
        std::io::stdout().flush().ok();
        let paths = paths.clone();
        let load = {
            let settings = settings.clone();
            async move {
                tokio::task::spawn_blocking(move || load_nlu(&paths, &settings))
                    .await
                    .context("the model loader stopped")?
            }
        };
        let result = server.run(load, shutdown_signal()).await;
        if let Some(s) = sandbox {
            s.shutdown().await;
        }
        result
    })?;
    Ok(true)
}

/// `bankbot sandbox-bank`: the sandbox bank alone, logging to stderr.
pub fn sandbox_bank(args: bankbot_sandbox::cli::Args) -> anyhow::Result<bool> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = runtime.block_on(bankbot_sandbox::cli::run(args));
    Ok(code == std::process::ExitCode::SUCCESS)
}

/// With `bank.sandbox` (`--sandbox`): the sandbox bank on loopback, its
/// ledger in the data directory, and `bank.url` pointing at it.
async fn start_sandbox(
    settings: &mut Settings,
) -> anyhow::Result<Option<bankbot_sandbox::Sandbox>> {
    if !settings.bank.sandbox {
        return Ok(None);
    }
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let config = bankbot_sandbox::Config {
        listen: settings
            .bank
            .sandbox_listen
            .parse()
            .context("bank.sandbox_listen")?,
        database: settings.data_dir.join("sandbox-bank.sqlite3"),
        token: None,
        faults: bankbot_sandbox::Faults::default(),
        fixed_code: None,
    };
    let sandbox = bankbot_sandbox::start(config)
        .await
        .context("starting the sandbox bank")?;
    settings.bank.url = sandbox.base_url();
    println!(
        "bankbot: sandbox bank on {} (one-time codes are logged and at /sandbox/customers/ID/codes/latest)",
        settings.bank.url
    );
    Ok(Some(sandbox))
}

/// Settings from the config file, the environment and these flags.
pub fn load_settings(args: &SettingsArgs) -> anyhow::Result<Settings> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    Ok(Settings::load(
        args.config.as_deref(),
        &env,
        &overrides(args),
    )?)
}

fn overrides(a: &SettingsArgs) -> Vec<Override> {
    let mut out = Vec::new();
    let mut push = |key: &'static str, flag: &str, value: Option<String>| {
        if let Some(value) = value {
            out.push(Override {
                key,
                value,
                origin: format!("--{flag}"),
            });
        }
    };
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    push("listen", "listen", a.listen.clone());
    push("admin_listen", "admin-listen", a.admin_listen.clone());
    push("data_dir", "data-dir", path(&a.data_dir));
    push("database_url", "database-url", a.database_url.clone());
    push("intents", "intents", path(&a.intents));
    push("model", "model", path(&a.model));
    push(
        "log.format",
        "log-format",
        a.log_format.map(|f| match f {
            LogFormat::Text => "text".to_owned(),
            LogFormat::Json => "json".to_owned(),
        }),
    );
    push("auth.jwks_file", "jwks-file", path(&a.jwks_file));
    push(
        "auth.hs256_secret_file",
        "jwt-hs256-secret-file",
        path(&a.jwt_hs256_secret_file),
    );
    push("auth.issuer", "jwt-issuer", a.jwt_issuer.clone());
    push("auth.audience", "jwt-audience", a.jwt_audience.clone());
    push(
        "auth.insecure_dev",
        "insecure-dev",
        a.insecure_dev.then(|| "true".into()),
    );
    push("tls.cert", "tls-cert", path(&a.tls_cert));
    push("tls.key", "tls-key", path(&a.tls_key));
    push("tls.client_ca", "tls-client-ca", path(&a.tls_client_ca));
    push(
        "tls.allow_plaintext",
        "allow-plaintext",
        a.allow_plaintext.then(|| "true".into()),
    );
    push("bank.url", "bank-url", a.bank_url.clone());
    push("bank.sandbox", "sandbox", a.sandbox.then(|| "true".into()));
    push(
        "limits.max_text_bytes",
        "max-text-bytes",
        a.max_text_bytes.map(|n| n.to_string()),
    );
    out
}

/// With `--insecure-dev` and no key configured: a development HS256 secret
/// in the data directory, and the development issuer and audience.
pub fn apply_insecure_dev(settings: &mut Settings) -> anyhow::Result<Option<Vec<u8>>> {
    let a = &mut settings.auth;
    if !a.insecure_dev || a.jwks_file.is_some() || a.hs256_secret_file.is_some() {
        return Ok(None);
    }
    let path = settings.data_dir.join("dev-jwt-secret");
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let secret = crate::auth::ensure_dev_secret(&path)
        .with_context(|| format!("creating the development secret {}", path.display()))?;
    a.hs256_secret_file = Some(path.clone());
    if a.issuer.is_empty() {
        a.issuer = DEV_ISSUER.into();
    }
    if a.audience.is_empty() {
        a.audience = DEV_AUDIENCE.into();
    }
    tracing::warn!(
        secret = %path.display(),
        "INSECURE DEVELOPMENT MODE: tokens are signed with a local HS256 secret; never use this in production"
    );
    eprintln!(
        "warning: --insecure-dev: accepting HS256 tokens signed with {} (development only)",
        path.display()
    );
    Ok(Some(secret))
}

/// Logs to stderr as text or JSON, filtered by `log.level` (or `RUST_LOG`).
pub fn init_tracing(settings: &Settings) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(f),
        _ => EnvFilter::try_new(&settings.log.level),
    }
    .context("log level")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match settings.log.format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Already initialised (a second server in one process) is fine.
    let _ = result;
    Ok(())
}

/// Loads the catalogue's responses, the model and its encoder, and starts
/// the inference engine. An explicit `--model` is never downloaded or
/// trained; the default model is trained from the catalogue when stale.
pub fn load_nlu(paths: &Paths, settings: &Settings) -> anyhow::Result<Arc<Nlu>> {
    let (cat, _) = catalogue::load_dir(&settings.intents).map_err(|d| {
        anyhow::anyhow!(
            "{d}\nthe intent catalogue in {} has errors",
            settings.intents.display()
        )
    })?;
    let (encoder, artifact) = match &settings.model {
        Some(dir) => nlu::load_model_and_encoder(paths, dir, false)?,
        None => nlu::ensure_default_model(paths, &settings.intents, Path::new(DEFAULT_MODEL_DIR))?,
    };
    let responder = Responder::new(&cat, settings.bot.clone());
    let missing =
        responder.intents_without_responses(artifact.model.labels.iter().map(String::as_str));
    if !missing.is_empty() {
        tracing::warn!(intents = ?missing, "intents without responses answer with the generic reply");
    }
    let engine = Engine::start(encoder, artifact.model, EngineConfig::default())?;
    tracing::info!(
        intents = artifact.card.training_data.intents,
        "model loaded"
    );
    Ok(Arc::new(Nlu {
        engine,
        responder,
        flows: Arc::new(cat.flows(&settings.bot)),
    }))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
