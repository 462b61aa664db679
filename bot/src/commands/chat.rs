//! `bankbot chat`: a terminal loop for staff to try the classifier.

use std::io::{BufRead, IsTerminal, Write};

use bankbot_models::engine::EngineConfig;

use crate::cli::ChatArgs;
use crate::commands::load_engine;
use crate::paths::Paths;

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
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            print!("> ");
            stdout.flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                println!("  (unreadable input: {e})");
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
