//! One module per `bankbot` subcommand.

pub mod bench;
pub mod chat;
pub mod check;
pub mod config;
pub mod connector_bench;
pub mod conversation_test;
pub mod eval;
pub mod import;
pub mod loadgen;
pub mod model;
pub mod parse;
pub mod queue_bench;
pub mod schema;
pub mod serve;
pub mod train;

use bankbot_models::engine::{Engine, EngineConfig};
use bankbot_models::entities;

use crate::cli::ModelSource;
use crate::nlu;
use crate::paths::Paths;

/// Loads the encoder and the chosen (or default, kept current) model and
/// starts the inference engine.
pub fn load_engine(
    paths: &Paths,
    source: &ModelSource,
    config: EngineConfig,
) -> anyhow::Result<Engine> {
    let (encoder, artifact) = match &source.model {
        Some(dir) => nlu::load_model_and_encoder(paths, dir, true)?,
        None => nlu::ensure_default_model(
            paths,
            &source.intents,
            std::path::Path::new(crate::paths::DEFAULT_MODEL_DIR),
        )?,
    };
    Ok(Engine::start(encoder, artifact.model, config)?)
}

/// The entity context from `--reference-date`, `--prefer-future`,
/// `--month-first` and `--payees`.
pub fn entity_context(args: &crate::cli::EntityArgs) -> anyhow::Result<entities::Context> {
    let date = match &args.reference_date {
        Some(s) => {
            entities::Date::parse_iso(s).map_err(|e| anyhow::anyhow!("--reference-date: {e}"))?
        }
        None => entities::Date::today_utc(),
    };
    let mut ctx = entities::Context::new(date);
    ctx.prefer_future = args.prefer_future;
    ctx.day_first = !args.month_first;
    if let Some(path) = &args.payees {
        ctx.payees = read_payees(path).map_err(|d| anyhow::anyhow!("{d}"))?;
    }
    Ok(ctx)
}

/// A YAML (or JSON) list of `{id, name, aliases}`, with `file:line:col` errors.
fn read_payees(
    path: &std::path::Path,
) -> Result<Vec<entities::SavedPayee>, crate::diag::Diagnostics> {
    use crate::diag::{Diagnostic, Diagnostics};
    use crate::yaml::{self, Limits, Pos};
    let one = |pos: Pos, msg: String| Diagnostics(vec![Diagnostic::error(path, pos, msg)]);
    let src = crate::catalogue::read_text(path, 1 << 20).map_err(|d| Diagnostics(vec![d]))?;
    let root = match yaml::parse(&src, &Limits::default()) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(one(
                Pos { line: 1, col: 1 },
                "the payee file is empty".into(),
            ));
        }
        Err(e) => return Err(one(e.pos, e.message)),
    };
    let list: Vec<crate::catalogue::files::PayeeEntry> =
        yaml::from_node(&root).map_err(|e| one(e.pos, e.message))?;
    Ok(list
        .into_iter()
        .map(|p| entities::SavedPayee {
            id: p.id,
            name: p.name,
            aliases: p.aliases,
        })
        .collect())
}

/// What `chat` and `test` run a conversation with: the engine (model from
/// `source`), the catalogue's flows with the default bot texts, and a
/// single-threaded runtime for the executor's connector calls.
pub fn local_dialog(
    paths: &Paths,
    source: &ModelSource,
) -> anyhow::Result<(
    Engine,
    std::sync::Arc<bankbot_dialog::Flows>,
    tokio::runtime::Runtime,
)> {
    let (cat, _) =
        crate::catalogue::load_dir(&source.intents).map_err(|d| anyhow::anyhow!("{d}"))?;
    let flows = std::sync::Arc::new(cat.flows(&crate::settings::BotSettings::default()));
    let engine = load_engine(
        paths,
        source,
        EngineConfig {
            top_k: 3,
            ..EngineConfig::default()
        },
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok((engine, flows, rt))
}
