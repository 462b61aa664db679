//! `bankbot chat`: a terminal loop for staff to try the bot: each message
//! shows the top intents, the entities found, the dialog state transitions
//! and the bot's replies, with the in-process bank behind the flows (its
//! one-time code is 123456).

use std::io::{IsTerminal, Write};

use bankbot_models::engine::MAX_TEXT_BYTES;

use std::sync::Arc;

use bankbot_connectors::memory::MemoryBank;
use bankbot_dialog::state::State;
use bankbot_models::entities::Date;
use bankbot_models::entities::eval::value_text;

use crate::cli::ChatArgs;
use crate::commands::local_dialog;
use crate::executor::{Executor, Nlu, stage_name};
use crate::input::{self, Line};
use crate::paths::Paths;

/// Longest message read: what the engine classifies.
const MAX_LINE_BYTES: usize = MAX_TEXT_BYTES;

pub fn run(paths: &Paths, args: &ChatArgs) -> anyhow::Result<bool> {
    let (engine, flows, rt) = local_dialog(paths, &args.source)?;
    let exec = Executor {
        flows,
        bank: Arc::new(MemoryBank::new()),
        journal: None,
    };
    let mut state = State::default();
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
                let nlu = Nlu::from(&p);
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
                let before = stage_name(&state);
                let (next, report) =
                    rt.block_on(exec.handle("chat", "chat", &state, text, &nlu, Date::today_utc()));
                state = next;
                for e in &report.entities {
                    println!(
                        "  entity: {} {:?} = {}",
                        e.entity,
                        e.text,
                        value_text(&e.value)
                    );
                }
                println!("  state: {before} -> {}", report.transitions.join(" -> "));
                for op in &report.calls {
                    println!("  bank: {}", op.name());
                }
                for (reason, priority, skill) in &report.escalations {
                    println!("  escalate: {reason:?} to {skill} ({priority:?})");
                }
                for (reply, quick) in &report.replies {
                    println!("bot: {reply}");
                    if !quick.is_empty() {
                        println!("     [{}]", quick.join("] ["));
                    }
                }
            }
            Err(e) => println!("  error: {e}"),
        }
    }
    Ok(true)
}
