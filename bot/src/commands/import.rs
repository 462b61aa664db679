//! `bankbot import csv|rasa`: existing data -> one intent file per intent.
//! Names are normalised to the catalogue's rules (and the renames printed),
//! repeated examples dropped, and existing files never overwritten without
//! `--force`. The output passes `bankbot check`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bankbot_models::annotation;
use bankbot_models::metrics::OUT_OF_SCOPE;

use crate::catalogue::files::{IntentFile, schema_json};
use crate::catalogue::{self, normalise};
use crate::cli::ImportCommand;
use crate::commands::schema::INTENT_SCHEMA;
use crate::yaml::{self, Limits, NodeKind};

const MAX_INPUT: usize = 64 << 20;

pub fn run(cmd: ImportCommand) -> anyhow::Result<bool> {
    let (intents, out, force) = match cmd {
        ImportCommand::Csv { file, out, force } => (from_csv(&file)?, out, force),
        ImportCommand::Rasa { file, out, force } => (from_rasa(&file)?, out, force),
    };
    write_catalogue(&intents, &out, force)?;
    Ok(true)
}

/// Intent name -> examples (annotated form), in first-seen order of examples.
type Collected = BTreeMap<String, Vec<String>>;

/// Lowercase, `_` for anything else, no leading digit: `Check Balance!` -> `check_balance`.
pub fn normalise_name(raw: &str) -> Option<String> {
    let mut s = String::new();
    for c in raw.trim().chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('_') && !s.is_empty() {
            s.push('_');
        }
    }
    let s = s.trim_end_matches('_').to_owned();
    let s = if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("intent_{s}")
    } else {
        s
    };
    let s: String = s.chars().take(64).collect();
    catalogue::is_valid_intent_name(&s).then_some(s)
}

fn add(
    intents: &mut Collected,
    renames: &mut BTreeMap<String, String>,
    raw_name: &str,
    example: &str,
) -> anyhow::Result<()> {
    let Some(name) = normalise_name(raw_name) else {
        bail!("intent name {raw_name:?} has no letters or digits");
    };
    // `oos` and `out_of_scope` are one intent in the catalogue.
    let name = if catalogue::is_out_of_scope(&name) {
        OUT_OF_SCOPE.to_owned()
    } else {
        name
    };
    if name != raw_name {
        renames.insert(raw_name.to_owned(), name.clone());
    }
    let list = intents.entry(name).or_default();
    // Examples are single lines: line breaks inside a CSV cell become spaces.
    let example = example.split_whitespace().collect::<Vec<_>>().join(" ");
    if !example.is_empty() && !list.iter().any(|e| normalise(e) == normalise(&example)) {
        list.push(example);
    }
    Ok(())
}

fn report_renames(renames: &BTreeMap<String, String>) {
    for (from, to) in renames {
        eprintln!("renamed intent {from:?} -> `{to}`");
    }
}

fn from_csv(path: &Path) -> anyhow::Result<Collected> {
    let text = catalogue::read_text(path, MAX_INPUT).map_err(|d| anyhow::anyhow!("{d}"))?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header", path.display()))?
        .clone();
    let col = |n: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(n))
    };
    let (Some(t), Some(i)) = (col("text"), col("intent")) else {
        bail!(
            "{}:1:1: the CSV header must name a `text` and an `intent` column",
            path.display()
        );
    };
    let mut intents = Collected::new();
    let mut renames = BTreeMap::new();
    for rec in reader.records() {
        let rec = rec.with_context(|| format!("{}: malformed CSV", path.display()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let (text, intent) = (
            rec.get(t).unwrap_or_default(),
            rec.get(i).unwrap_or_default(),
        );
        if text.trim().is_empty() || intent.trim().is_empty() {
            bail!("{}:{line}:1: empty text or intent", path.display());
        }
        // Plain CSV text is literal: brackets are escaped so they stay text.
        let escaped = annotation::render(&annotation::AnnotatedText {
            text: text.trim().to_owned(),
            entities: vec![],
        });
        add(&mut intents, &mut renames, intent, &escaped)
            .with_context(|| format!("{}:{line}:1", path.display()))?;
    }
    report_renames(&renames);
    Ok(intents)
}

/// Rasa 2/3 `nlu:` YAML. `[text](entity)`, `[text](entity:value)` and
/// `[text]{"entity": "e", ...}` become `[text](entity)`; synonym, regex and
/// lookup sections are skipped with a note.
fn from_rasa(path: &Path) -> anyhow::Result<Collected> {
    let src = catalogue::read_text(path, MAX_INPUT).map_err(|d| anyhow::anyhow!("{d}"))?;
    let limits = Limits {
        max_bytes: MAX_INPUT,
        ..Limits::default()
    };
    let at = |pos: yaml::Pos| format!("{}:{pos}", path.display());
    let root = yaml::parse(&src, &limits)
        .map_err(|e| anyhow::anyhow!("{}: {}", at(e.pos), e.message))?
        .ok_or_else(|| anyhow::anyhow!("{}: empty file", path.display()))?;
    let Some(nlu) = root.get("nlu") else {
        bail!(
            "{}: no `nlu:` section (is this a Rasa 2/3 NLU file?)",
            at(root.pos)
        );
    };
    if !matches!(nlu.kind, NodeKind::Seq(_)) {
        bail!("{}: `nlu:` must be a list", at(nlu.pos));
    }
    let mut intents = Collected::new();
    let mut renames = BTreeMap::new();
    for item in nlu.items() {
        let Some(intent) = item.get("intent").and_then(|n| n.as_str()) else {
            let kind = item
                .entries()
                .first()
                .and_then(|(k, _)| k.as_str())
                .unwrap_or("item");
            eprintln!(
                "{}: skipped a `{kind}` entry (only intents are imported)",
                at(item.pos)
            );
            continue;
        };
        let Some(examples) = item.get("examples") else {
            bail!("{}: intent `{intent}` has no `examples`", at(item.pos));
        };
        let block = examples.as_str().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: `examples` must be a block of `- ` lines",
                at(examples.pos)
            )
        })?;
        for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some(text) = line.strip_prefix('-') else {
                bail!(
                    "{}: example line {line:?} does not start with `- `",
                    at(examples.pos)
                );
            };
            let converted = convert_rasa_annotations(text.trim())
                .map_err(|m| anyhow::anyhow!("{}: {m} in {text:?}", at(examples.pos)))?;
            add(&mut intents, &mut renames, intent, &converted)?;
        }
    }
    report_renames(&renames);
    if intents.is_empty() {
        bail!("{}: no intents with examples found", path.display());
    }
    Ok(intents)
}

/// Rewrites Rasa entity markup into `[text](entity)`.
fn convert_rasa_annotations(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Text outside markup is literal: its brackets and backslashes are escaped.
    let literal = |s: &str| {
        annotation::render(&annotation::AnnotatedText {
            text: s.to_owned(),
            entities: vec![],
        })
    };
    while let Some(open) = rest.find('[') {
        out.push_str(&literal(&rest[..open]));
        let after = &rest[open + 1..];
        let close = after.find(']').ok_or("`[` without `]`")?;
        let span = &after[..close];
        let tail = &after[close + 1..];
        if let Some(body) = tail.strip_prefix('(') {
            let end = body.find(')').ok_or("`(` without `)`")?;
            let entity = body[..end].split(':').next().unwrap_or_default().trim();
            out.push_str(&format!("[{span}]({entity})"));
            rest = &body[end + 1..];
        } else if tail.starts_with('{') {
            let end = tail.find('}').ok_or("`{` without `}`")?;
            let meta: serde_json::Value =
                serde_json::from_str(&tail[..=end]).map_err(|e| format!("entity JSON: {e}"))?;
            let entity = meta
                .get("entity")
                .and_then(|e| e.as_str())
                .ok_or("entity JSON without \"entity\"")?;
            out.push_str(&format!("[{span}]({entity})"));
            rest = &tail[end + 1..];
        } else {
            // A literal bracket in the text.
            out.push_str("\\[");
            rest = after;
        }
    }
    out.push_str(&literal(rest));
    annotation::parse(&out).map_err(|e| e.message)?;
    Ok(out)
}

/// A YAML scalar for `s`: plain when that reads back as the same string,
/// otherwise single-quoted (double-quoted with escapes for control characters).
pub fn yaml_scalar(s: &str) -> String {
    let specials = [
        "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~",
    ];
    let plain_ok = !s.is_empty()
        && s.trim() == s
        && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !s.chars().any(|c| c.is_control())
        && !specials.contains(&s.to_ascii_lowercase().as_str())
        && s.parse::<f64>().is_err();
    if plain_ok {
        s.to_owned()
    } else if s.chars().any(|c| c.is_control()) {
        serde_json::to_string(s).unwrap_or_default()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Writes one file per intent (and the schema the modeline points at).
fn write_catalogue(intents: &Collected, out: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let files: Vec<(PathBuf, String)> = intents
        .iter()
        .map(|(name, examples)| {
            let mut y = format!(
                "# yaml-language-server: $schema={INTENT_SCHEMA}\nintent: {name}\nexamples:\n"
            );
            for e in examples {
                y.push_str("  - ");
                y.push_str(&yaml_scalar(e));
                y.push('\n');
            }
            (out.join(format!("{name}.yaml")), y)
        })
        .collect();
    let clashes: Vec<String> = files
        .iter()
        .filter(|(p, _)| p.exists())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if !clashes.is_empty() && !force {
        bail!(
            "these files exist already (use --force to replace them): {}",
            clashes.join(", ")
        );
    }
    // Every file must pass the real loader before anything is written.
    let staging =
        tempfile::tempdir_in(out).with_context(|| format!("writing to {}", out.display()))?;
    for (path, content) in &files {
        let probe = staging.path().join(path.file_name().unwrap_or_default());
        std::fs::write(&probe, content).with_context(|| format!("writing {}", probe.display()))?;
        let mut diags = Vec::new();
        if catalogue::load_file(&probe, &mut diags).is_none() {
            let errors: Vec<String> = diags
                .iter()
                .filter(|d| d.is_error())
                .map(ToString::to_string)
                .collect();
            bail!(
                "internal error: {} would not load ({}); nothing was written",
                path.display(),
                errors.join("; ")
            );
        }
    }
    // Then each file replaces its destination in one rename.
    for (path, _) in &files {
        let probe = staging.path().join(path.file_name().unwrap_or_default());
        std::fs::rename(&probe, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let schema = out.join(INTENT_SCHEMA);
    if !schema.exists() {
        std::fs::write(&schema, schema_json::<IntentFile>())?;
    }
    let total: usize = intents.values().map(Vec::len).sum();
    eprintln!(
        "wrote {} intent files with {total} examples to {}",
        files.len(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_read_back_unchanged() {
        for s in [
            "plain words",
            "yes",
            "No",
            "123",
            "1.5",
            "- dash",
            "[5 euros](amount) now",
            "it's: odd",
            "ends with:",
            "x # y",
            "'quoted'",
            "tab\there",
            "null",
            "~",
            "@home",
            " spaced ",
        ] {
            let doc = format!("v: {}\n", yaml_scalar(s));
            let root = yaml::parse(&doc, &Limits::default()).unwrap().unwrap();
            assert_eq!(root.get("v").unwrap().as_str(), Some(s), "{s:?} -> {doc}");
        }
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(
            normalise_name("Check Balance!").as_deref(),
            Some("check_balance")
        );
        assert_eq!(
            normalise_name("faq/ask-fees").as_deref(),
            Some("faq_ask_fees")
        );
        assert_eq!(
            normalise_name("24h_support").as_deref(),
            Some("intent_24h_support")
        );
        assert_eq!(normalise_name("!!!"), None);
    }

    #[test]
    fn rasa_markup_converts() {
        assert_eq!(
            convert_rasa_annotations("send [50](amount) to [Bob](payee:robert)").unwrap(),
            "send [50](amount) to [Bob](payee)"
        );
        assert_eq!(
            convert_rasa_annotations(r#"pay [Anna]{"entity": "payee", "value": "anna"} now"#)
                .unwrap(),
            "pay [Anna](payee) now"
        );
        assert_eq!(
            convert_rasa_annotations("a [literal] bracket").unwrap(),
            r"a \[literal\] bracket"
        );
    }
}
