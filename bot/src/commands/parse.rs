//! `bankbot parse`: utterances on stdin, one JSON object per line on stdout.
//! Requests are pipelined through the inference engine, answers keep input
//! order; a bad line gets a JSON error object, never a crash. Entities are
//! extracted against `--reference-date` (default today) and `--payees`.

use std::collections::VecDeque;
use std::io::Write;

use bankbot_models::classifier::IntentScore;
use bankbot_models::engine::{Classified, Engine, EngineConfig};
use bankbot_models::entities::{self, Entity};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::cli::ParseArgs;
use crate::commands::{entity_context, load_engine};
use crate::input;
use crate::paths::Paths;

/// Lines in flight at once.
const WINDOW: usize = 256;
/// Longest line read (what the engine classifies); longer lines are
/// reported as errors.
const MAX_LINE_BYTES: usize = bankbot_models::engine::MAX_TEXT_BYTES;

type Pending = (
    usize,
    String,
    Result<oneshot::Receiver<bankbot_models::Result<Classified>>, String>,
);

pub fn run(paths: &Paths, args: &ParseArgs) -> anyhow::Result<bool> {
    let engine = load_engine(
        paths,
        &args.source,
        EngineConfig {
            top_k: args.top.max(1),
            ..EngineConfig::default()
        },
    )?;
    let ctx = entity_context(&args.entities)?;
    let mut stdin = std::io::stdin().lock();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut line_no = 0;
    while let Some(line) = input::read_line(&mut stdin, MAX_LINE_BYTES)? {
        line_no += 1;
        let text = match line {
            input::Line::Text(bytes) => {
                String::from_utf8(bytes).map_err(|_| "invalid UTF-8".to_owned())
            }
            input::Line::TooLong => Err(format!("line longer than {MAX_LINE_BYTES} bytes")),
        };
        let entry = match text {
            Err(e) => (line_no, String::new(), Err(e)),
            Ok(text) => {
                if text.trim().is_empty() {
                    (line_no, text, Err("empty text".to_owned()))
                } else {
                    let rx = submit(&engine, &text);
                    (line_no, text, rx)
                }
            }
        };
        pending.push_back(entry);
        while pending.len() >= WINDOW {
            if let Some(p) = pending.pop_front() {
                emit(&mut out, &ctx, p)?;
            }
        }
    }
    while let Some(p) = pending.pop_front() {
        emit(&mut out, &ctx, p)?;
    }
    out.flush()?;
    Ok(true)
}

fn submit(
    engine: &Engine,
    text: &str,
) -> Result<oneshot::Receiver<bankbot_models::Result<Classified>>, String> {
    engine.submit(text).map_err(|e| e.to_string())
}

/// One output line: a parse result or an error object.
#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Parsed {
        text: &'a str,
        intent: IntentScore,
        ranking: Vec<IntentScore>,
        out_of_scope: bool,
        entities: Vec<Entity>,
    },
    Error {
        text: &'a str,
        error: String,
        line: usize,
    },
}

fn emit(
    out: &mut impl Write,
    ctx: &entities::Context,
    (line, text, rx): Pending,
) -> anyhow::Result<()> {
    let result = rx.and_then(|rx| {
        rx.blocking_recv()
            .map_err(|_| "the inference engine stopped".to_owned())?
            .map_err(|e| e.to_string())
    });
    let value = match result {
        Ok(c) => Line::Parsed {
            text: &text,
            intent: c.prediction.intent,
            ranking: c.prediction.ranking,
            out_of_scope: c.prediction.out_of_scope,
            entities: entities::extract(&text, ctx),
        },
        Err(error) => Line::Error {
            text: &text,
            error,
            line,
        },
    };
    writeln!(out, "{}", serde_json::to_string(&value)?)?;
    Ok(())
}
