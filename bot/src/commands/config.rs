//! `bankbot config print`, `bankbot migrate` and `bankbot token`.

use anyhow::{Context, bail};
use serde_json::json;

use crate::cli::{SettingsArgs, TokenArgs};
use crate::commands::serve::{apply_insecure_dev, load_settings};
use crate::settings::Settings;
use crate::store::{Backend, Store};

pub fn print(args: &SettingsArgs) -> anyhow::Result<bool> {
    let settings = load_settings(args)?;
    print!("{}", settings.to_masked_toml());
    Ok(true)
}

pub fn migrate(args: &SettingsArgs) -> anyhow::Result<bool> {
    let settings = load_settings(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::connect(&settings)
            .await
            .context("opening the database")?;
        store.migrate().await.context("migrating the database")?;
        match store.backend() {
            Backend::Sqlite => println!("migrated {}", settings.sqlite_path().display()),
            Backend::Postgres => println!("migrated {}", settings.database_url.masked()),
        }
        store.close().await;
        anyhow::Ok(())
    })?;
    Ok(true)
}

pub fn token(args: &TokenArgs) -> anyhow::Result<bool> {
    let mut settings = load_settings(&args.settings)?;
    let secret = match apply_insecure_dev(&mut settings)? {
        Some(s) => s,
        None => match &settings.auth.hs256_secret_file {
            Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            None => bail!(
                "tokens can only be minted with an HS256 secret: give --jwt-hs256-secret-file or --insecure-dev"
            ),
        },
    };
    println!(
        "{}",
        mint(&secret, &settings, &args.sub, &args.role, args.ttl_secs)?
    );
    Ok(true)
}

/// An HS256 token for `sub` with the configured issuer and audience.
pub fn mint(
    secret: &[u8],
    settings: &Settings,
    sub: &str,
    role: &str,
    ttl_secs: u64,
) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = json!({
        "iss": settings.auth.issuer,
        "aud": settings.auth.audience,
        "sub": sub,
        "role": role,
        "iat": now,
        "exp": now + ttl_secs,
    });
    // The secret file's trailing whitespace is not part of the key.
    let key = secret.trim_ascii_end();
    Ok(crate::auth::mint_hs256(key, &claims)?)
}
