//! `bankbot chat`: a terminal loop for staff to try the classifier.

use std::io::{IsTerminal, Write};

use bankbot_models::engine::{EngineConfig, MAX_TEXT_BYTES};

use crate::cli::ChatArgs;
use crate::commands::load_engine;
use crate::input::{self, Line};
use crate::paths::Paths;

/// Longest message read: what the engine classifies.
const MAX_LINE_BYTES: usize = MAX_TEXT_BYTES;

pub fn run(paths: &Paths, args: &ChatArgs) -> anyhow::Result<bool> {
    let engine = load_engine(
        paths,
        &args.source,
        EngineConfig {
            top_k: 3,
            ..EngineConfig::default()
        },
    )?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!(
            "bankbot chat: type a customer message and press Enter (Ctrl-D or /quit to leave)."
        );
    }
    let mut stdout = std::io::stdout();
    let mut stdin = std::io::stdin().lock();
    loop {
        if interactive {
            print!("> ");
            stdout.flush()?;
        }
        // A read error (a directory as stdin, a closed terminal) ends the session.
        let Some(line) = input::read_line(&mut stdin, MAX_LINE_BYTES)? else {
            break;
        };
        let line = match line {
            Line::Text(bytes) => match String::from_utf8(bytes) {
                Ok(l) => l,
                Err(_) => {
                    println!("  (not UTF-8 text; try again)");
                    continue;
                }
            },
            Line::TooLong => {
                println!("  (longer than {MAX_LINE_BYTES} bytes; try a shorter message)");
                continue;
            }
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if text == "/quit" || text == "/exit" {
            break;
        }
        match engine.classify_blocking(text) {
            Ok(c) => {
                let p = c.prediction;
                if p.out_of_scope {
                    println!(
                        "  out of scope (score {:.2}; the bot would say it cannot help with this)",
                        p.oos_score
                    );
                } else {
                    println!(
                        "  intent: {} ({:.0}%)",
                        p.intent.name,
                        p.intent.confidence * 100.0
                    );
                }
                for (i, r) in p.ranking.iter().enumerate() {
                    let bar = "#".repeat((r.confidence * 20.0).round() as usize);
                    println!(
                        "   {}. {:<26} {:>5.1}%  {bar}",
                        i + 1,
                        r.name,
                        r.confidence * 100.0
                    );
                }
            }
            Err(e) => println!("  error: {e}"),
        }
    }
    Ok(true)
}
