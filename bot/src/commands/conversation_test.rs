//! `bankbot test [FILES…]`: scripted conversations run through the real
//! NLU model, entity extractors, dialog engine and executor in-process,
//! against a fresh in-process bank per script (with injected faults where
//! the script asks). Each turn's expectations are checked; failures name
//! `file:line:col`, the script and the turn.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bankbot_connectors::memory::{Fault, MemoryBank};
use bankbot_connectors::{ConnectorError, TransferOutcome};
use bankbot_dialog::state::State;
use bankbot_models::entities::Date;
use bankbot_models::entities::eval::value_text;
use serde::Deserialize;

use crate::catalogue;
use crate::cli::TestArgs;
use crate::commands::local_dialog;
use crate::diag::{Diagnostic, Diagnostics};
use crate::executor::{Executor, Nlu, stage_name};
use crate::paths::Paths;
use crate::yaml::{self, Limits, Node, Pos};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// "Today" for every script that does not set its own.
    #[serde(default)]
    reference_date: Option<String>,
    tests: Vec<Script>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    name: String,
    #[serde(default)]
    reference_date: Option<String>,
    /// Bank operation (`transfer`, `balance`, `change_card`, `send_code`, …)
    /// -> `unavailable`, `timeout`, `refused`, or for `transfer`
    /// `insufficient_funds`, `limit_exceeded`, `rejected`, `unknown`.
    #[serde(default)]
    faults: BTreeMap<String, String>,
    turns: Vec<TurnSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnSpec {
    user: String,
    /// Replaces the model's answer, for scripts about low confidence.
    #[serde(default)]
    nlu: Option<NluSpec>,
    #[serde(default)]
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NluSpec {
    intent: String,
    confidence: f32,
    #[serde(default)]
    second: Option<String>,
    #[serde(default)]
    second_confidence: Option<f32>,
    #[serde(default)]
    out_of_scope: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// The NLU's top intent (`out_of_scope` when it declines).
    #[serde(default)]
    intent: Option<String>,
    /// `idle`, `collecting:<slot>`, `confirming`, `awaiting_step_up`,
    /// `executing` or `escalated`, after the turn.
    #[serde(default)]
    state: Option<String>,
    /// Fragments that must all appear in the bot's replies (case-insensitive).
    #[serde(default)]
    reply: Vec<String>,
    /// Fragments that must not appear.
    #[serde(default)]
    not_reply: Vec<String>,
    /// Bank operations executed during the turn, in order.
    #[serde(default)]
    calls: Option<Vec<String>>,
    /// Whether a one-time code was requested.
    #[serde(default)]
    step_up: Option<bool>,
    /// The skill queue the conversation was escalated to.
    #[serde(default)]
    escalate: Option<String>,
    /// Entity type -> value as annotations write it ("50 GBP", "2024-03-13").
    #[serde(default)]
    entities: BTreeMap<String, String>,
}

fn fault(op: &str, name: &str) -> Option<Fault> {
    Some(match (op, name) {
        (_, "unavailable") => Fault::Error(ConnectorError::Unavailable),
        (_, "timeout") => Fault::Error(ConnectorError::Timeout),
        (_, "refused") => Fault::Error(ConnectorError::Refused("refused by the test".into())),
        ("transfer", "insufficient_funds") => Fault::Transfer(TransferOutcome::InsufficientFunds),
        ("transfer", "limit_exceeded") => Fault::Transfer(TransferOutcome::LimitExceeded),
        ("transfer", "rejected") => Fault::Transfer(TransferOutcome::Rejected {
            reason: "test".into(),
        }),
        ("transfer", "unknown") => Fault::Transfer(TransferOutcome::Unknown),
        _ => return None,
    })
}

/// One loaded script with the positions of its turns.
struct Loaded {
    path: PathBuf,
    script: Script,
    pos: Pos,
    turn_pos: Vec<Pos>,
    today: Date,
}

fn load(path: &Path, out: &mut Vec<Loaded>) -> Result<(), Diagnostics> {
    let one = |pos: Pos, msg: String| Diagnostics(vec![Diagnostic::error(path, pos, msg)]);
    let src = catalogue::read_text(path, 4 << 20).map_err(|d| Diagnostics(vec![d]))?;
    let root = match yaml::parse(&src, &Limits::default()) {
        Ok(Some(r)) => r,
        Ok(None) => return Err(one(Pos { line: 1, col: 1 }, "empty test file".into())),
        Err(e) => return Err(one(e.pos, e.message)),
    };
    let file: File = yaml::from_node(&root).map_err(|e| one(e.pos, e.message))?;
    let date = |raw: &Option<String>, node: Option<&Node>| -> Result<Option<Date>, Diagnostics> {
        match raw {
            None => Ok(None),
            Some(s) => Date::parse_iso(s)
                .map(Some)
                .map_err(|e| one(node.map_or(root.pos, |n| n.pos), e.to_string())),
        }
    };
    let file_date =
        date(&file.reference_date, root.get("reference_date"))?.unwrap_or_else(Date::today_utc);
    let nodes = root.get("tests").map(Node::items).unwrap_or_default();
    for (script, node) in file.tests.into_iter().zip(nodes) {
        let today = date(&script.reference_date, node.get("reference_date"))?.unwrap_or(file_date);
        for (op, f) in &script.faults {
            if fault(op, f).is_none() {
                return Err(one(
                    node.get("faults").map_or(node.pos, |n| n.pos),
                    format!("unknown fault `{f}` for `{op}`"),
                ));
            }
        }
        let turn_pos = node
            .get("turns")
            .map(Node::items)
            .unwrap_or_default()
            .iter()
            .map(|n| n.pos)
            .collect();
        out.push(Loaded {
            path: path.to_path_buf(),
            script,
            pos: node.pos,
            turn_pos,
            today,
        });
    }
    Ok(())
}

fn files(args: &TestArgs) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in &args.files {
        if p.is_dir() {
            let mut found = catalogue::yaml_files(p).map_err(|d| anyhow::anyhow!("{d}"))?;
            out.append(&mut found);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        bail!("no conversation test files given");
    }
    Ok(out)
}

pub fn run(paths: &Paths, args: &TestArgs) -> anyhow::Result<bool> {
    let mut scripts = Vec::new();
    let mut diags = Vec::new();
    for f in files(args)? {
        if let Err(d) = load(&f, &mut scripts) {
            diags.extend(d.0);
        }
    }
    if !diags.is_empty() {
        bail!("{}", Diagnostics(diags));
    }
    let (engine, flows, rt) = local_dialog(paths, &args.source)?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for s in &scripts {
        let bank = Arc::new(MemoryBank::new());
        for (op, f) in &s.script.faults {
            if let Some(fault) = fault(op, f) {
                bank.inject(op, fault);
            }
        }
        let exec = Executor {
            flows: flows.clone(),
            bank,
            journal: None,
        };
        let mut state = State::default();
        let mut failure = None;
        for (n, turn) in s.script.turns.iter().enumerate() {
            let nlu = match &turn.nlu {
                Some(o) => {
                    let mut ranking = vec![(o.intent.clone(), o.confidence)];
                    if let (Some(i), Some(c)) = (&o.second, o.second_confidence) {
                        ranking.push((i.clone(), c));
                    }
                    Nlu {
                        ranking,
                        out_of_scope: o.out_of_scope,
                    }
                }
                None => {
                    let c = engine
                        .classify_blocking(&turn.user)
                        .with_context(|| format!("classifying {:?}", turn.user))?;
                    Nlu::from(&c.prediction)
                }
            };
            let conversation = format!("test:{}", s.script.name);
            let (next, report) = rt.block_on(exec.handle(
                "test-customer",
                &conversation,
                &state,
                &turn.user,
                &nlu,
                s.today,
            ));
            state = next;
            let problems = check(&turn.expect, &nlu, &state, &report);
            if args.verbose {
                println!("  [{}] > {}", s.script.name, turn.user);
                for (r, _) in &report.replies {
                    println!("      bot: {r}");
                }
                println!("      state: {}", report.transitions.join(" -> "));
            }
            if !problems.is_empty() {
                let pos = s.turn_pos.get(n).copied().unwrap_or(s.pos);
                let replies: Vec<&str> = report.replies.iter().map(|(t, _)| t.as_str()).collect();
                failure = Some(format!(
                    "{}:{}:{}: test {:?}, turn {} ({:?}): {}\n    bot said: {:?}",
                    s.path.display(),
                    pos.line,
                    pos.col,
                    s.script.name,
                    n + 1,
                    turn.user,
                    problems.join("; "),
                    replies
                ));
                break;
            }
        }
        match failure {
            None => {
                passed += 1;
                println!("ok      {}", s.script.name);
            }
            Some(f) => {
                failed += 1;
                println!("FAILED  {}\n  {f}", s.script.name);
            }
        }
    }
    println!(
        "\n{passed} passed, {failed} failed ({} scripts)",
        scripts.len()
    );
    Ok(failed == 0)
}

fn check(
    e: &Expect,
    nlu: &Nlu,
    state: &State,
    report: &crate::executor::TurnReport,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(want) = &e.intent {
        let got = if nlu.out_of_scope {
            "out_of_scope".to_owned()
        } else {
            nlu.ranking.first().map(|r| r.0.clone()).unwrap_or_default()
        };
        if &got != want {
            problems.push(format!("intent {got}, expected {want}"));
        }
    }
    if let Some(want) = &e.state {
        let got = stage_name(state);
        if &got != want {
            problems.push(format!("state {got}, expected {want}"));
        }
    }
    let said = report
        .replies
        .iter()
        .map(|(t, q)| format!("{t} {}", q.join(" ")))
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase();
    for f in &e.reply {
        if !said.contains(&f.to_lowercase()) {
            problems.push(format!("no reply contains {f:?}"));
        }
    }
    for f in &e.not_reply {
        if said.contains(&f.to_lowercase()) {
            problems.push(format!("a reply contains {f:?}"));
        }
    }
    if let Some(want) = &e.calls {
        let got: Vec<&str> = report.calls.iter().map(|o| o.name()).collect();
        if got != want.iter().map(String::as_str).collect::<Vec<_>>() {
            problems.push(format!("calls {got:?}, expected {want:?}"));
        }
    }
    if let Some(want) = e.step_up
        && report.step_up_requested != want
    {
        problems.push(format!(
            "step-up requested: {}, expected {want}",
            report.step_up_requested
        ));
    }
    if let Some(want) = &e.escalate {
        match report.escalations.first() {
            Some((_, _, skill)) if skill == want => {}
            Some((_, _, skill)) => problems.push(format!("escalated to {skill}, expected {want}")),
            None => problems.push(format!("no escalation, expected one to {want}")),
        }
    }
    for (kind, want) in &e.entities {
        let found = report.entities.iter().any(|en| {
            en.entity.name() == kind
                && bankbot_models::entities::eval::value_matches(&en.value, want)
        });
        if !found {
            let got: Vec<String> = report
                .entities
                .iter()
                .map(|en| format!("{}={}", en.entity, value_text(&en.value)))
                .collect();
            problems.push(format!("no {kind} entity {want:?} (found {got:?})"));
        }
    }
    problems
}
