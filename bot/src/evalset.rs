//! Labelled evaluation and calibration data: a YAML evaluation file
//! (`intents: {name: [utterances]}`) or a CSV with a `text,intent` header.
//! Rows labelled `oos` or `out_of_scope` are out of scope.

use std::path::Path;

use bankbot_models::annotation::{self, EntitySpan};
use bankbot_models::entities::{Date, SavedPayee};
use bankbot_models::metrics::OUT_OF_SCOPE;
use bankbot_models::train::LabelledText;

use crate::catalogue::files::EvaluationFile;
use crate::catalogue::{self, Source, is_out_of_scope, is_valid_intent_name};
use crate::diag::{Diagnostic, Diagnostics};
use crate::yaml::{self, Limits, Pos};

/// Largest evaluation file read.
pub const MAX_EVAL_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct EvalRow {
    pub text: String,
    pub label: String,
    pub entities: Vec<EntitySpan>,
    pub source: Source,
}

impl EvalRow {
    pub fn labelled(&self) -> LabelledText {
        LabelledText::new(self.text.clone(), self.label.clone())
    }
}

/// What an evaluation file says besides its rows: the context its entity
/// annotations were written in.
#[derive(Debug, Clone, Default)]
pub struct EntitySetting {
    pub reference_date: Option<Date>,
    pub payees: Vec<SavedPayee>,
}

/// Reads an evaluation file by extension (`.csv`, else YAML).
pub fn load(path: &Path) -> Result<Vec<EvalRow>, Diagnostics> {
    load_with_setting(path).map(|(rows, _)| rows)
}

/// Like [`load`], with the file's reference date and payees (YAML only).
pub fn load_with_setting(path: &Path) -> Result<(Vec<EvalRow>, EntitySetting), Diagnostics> {
    let mut setting = EntitySetting::default();
    let src = catalogue::read_text(path, MAX_EVAL_BYTES).map_err(|d| Diagnostics(vec![d]))?;
    let mut diags = Vec::new();
    let rows = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        load_csv(path, &src, &mut diags)
    } else {
        load_yaml(path, &src, &mut diags, &mut setting)
    };
    if diags.iter().any(Diagnostic::is_error) {
        return Err(Diagnostics(diags));
    }
    if rows.is_empty() {
        return Err(Diagnostics(vec![Diagnostic::error(
            path,
            Pos { line: 1, col: 1 },
            "no evaluation rows",
        )]));
    }
    Ok((rows, setting))
}

fn label_of(name: &str) -> String {
    if is_out_of_scope(name) {
        OUT_OF_SCOPE.to_owned()
    } else {
        name.to_owned()
    }
}

/// Validates one utterance; pushes an error and returns `None` when bad.
fn row(
    path: &Path,
    pos: Pos,
    raw: &str,
    label: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<EvalRow> {
    if raw.trim().is_empty() {
        diags.push(Diagnostic::error(path, pos, "empty utterance"));
        return None;
    }
    if !is_valid_intent_name(label) {
        diags.push(Diagnostic::error(
            path,
            pos,
            format!("invalid intent name `{label}`"),
        ));
        return None;
    }
    match annotation::parse(raw) {
        Ok(a) => Some(EvalRow {
            text: a.text,
            label: label_of(label),
            entities: a.entities,
            source: Source {
                path: path.to_path_buf(),
                pos,
            },
        }),
        Err(e) => {
            diags.push(Diagnostic::error(
                path,
                pos,
                format!(
                    "malformed annotation at character {}: {}",
                    e.column + 1,
                    e.message
                ),
            ));
            None
        }
    }
}

fn load_yaml(
    path: &Path,
    src: &str,
    diags: &mut Vec<Diagnostic>,
    setting: &mut EntitySetting,
) -> Vec<EvalRow> {
    let limits = Limits {
        max_bytes: MAX_EVAL_BYTES,
        ..Limits::default()
    };
    let root = match yaml::parse(src, &limits) {
        Ok(Some(r)) => r,
        Ok(None) => {
            diags.push(Diagnostic::error(
                path,
                Pos { line: 1, col: 1 },
                "file has no content (only comments)",
            ));
            return Vec::new();
        }
        Err(e) => {
            diags.push(Diagnostic::error(path, e.pos, e.message));
            return Vec::new();
        }
    };
    let file = match yaml::from_node::<EvaluationFile>(&root) {
        Ok(f) => f,
        Err(e) => {
            diags.push(Diagnostic::error(path, e.pos, e.message));
            return Vec::new();
        }
    };
    if let (Some(raw), Some(node)) = (&file.reference_date, root.get("reference_date")) {
        match Date::parse_iso(raw) {
            Ok(d) => setting.reference_date = Some(d),
            Err(e) => diags.push(Diagnostic::error(path, node.pos, e.to_string())),
        }
    }
    setting.payees = file
        .payees
        .into_iter()
        .map(|p| SavedPayee {
            id: p.id,
            name: p.name,
            aliases: p.aliases,
        })
        .collect();
    let mut rows = Vec::new();
    for (key, list) in root.get("intents").map(|n| n.entries()).unwrap_or_default() {
        let label = key.as_str().unwrap_or_default();
        for item in list.items() {
            let raw = item.as_str().unwrap_or_default();
            if let Some(r) = row(path, item.pos, raw, label, diags) {
                rows.push(r);
            }
        }
    }
    rows
}

fn load_csv(path: &Path, src: &str, diags: &mut Vec<Diagnostic>) -> Vec<EvalRow> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(src.as_bytes());
    let start = Pos { line: 1, col: 1 };
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            diags.push(Diagnostic::error(
                path,
                start,
                format!("cannot read the CSV header: {e}"),
            ));
            return Vec::new();
        }
    };
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(text_col), Some(intent_col)) = (col("text"), col("intent")) else {
        diags.push(Diagnostic::error(
            path,
            start,
            "the CSV header must name a `text` and an `intent` column",
        ));
        return Vec::new();
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        match record {
            Ok(rec) => {
                let line = rec.position().map_or(0, |p| p.line() as usize);
                let pos = Pos { line, col: 1 };
                let text = rec.get(text_col).unwrap_or_default();
                let intent = rec.get(intent_col).unwrap_or_default().trim();
                if let Some(r) = row(path, pos, text, intent, diags) {
                    rows.push(r);
                }
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                diags.push(Diagnostic::error(
                    path,
                    Pos { line, col: 1 },
                    format!("malformed CSV row: {e}"),
                ));
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        (dir, p)
    }

    #[test]
    fn yaml_rows_keep_labels_positions_and_entities() {
        let (_d, p) = write(
            "e.yaml",
            "intents:\n  pay:\n    - send [5 euros](amount)\n  oos:\n    - what's the weather\n",
        );
        let rows = load(&p).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].text.as_str(), rows[0].label.as_str()),
            ("send 5 euros", "pay")
        );
        assert_eq!(rows[0].entities[0].entity, "amount");
        assert_eq!(rows[0].source.pos, Pos { line: 3, col: 7 });
        assert_eq!(rows[1].label, OUT_OF_SCOPE);
    }

    #[test]
    fn csv_rows_with_any_column_order() {
        let (_d, p) = write(
            "e.csv",
            "intent,text,extra\npay,\"send 5, now\",x\nout_of_scope,hello there,y\n",
        );
        let rows = load(&p).unwrap();
        assert_eq!(rows[0].text, "send 5, now");
        assert_eq!(rows[1].label, OUT_OF_SCOPE);
        assert_eq!(rows[1].source.pos.line, 3);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let (_d, p) = write("e.csv", "words,label\nx,y\n");
        assert!(
            load(&p)
                .unwrap_err()
                .to_string()
                .contains("`text` and an `intent` column")
        );
        let (_d, p) = write("e.csv", "text,intent\n,pay\nfine,Bad Name\n");
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains(":2:1: error: empty utterance"), "{e}");
        assert!(
            e.contains(":3:1: error: invalid intent name `Bad Name`"),
            "{e}"
        );
        let (_d, p) = write("e.yaml", "intents:\n  pay: hello\n");
        assert!(
            load(&p)
                .unwrap_err()
                .to_string()
                .contains("2:8: error: expected a list")
        );
        let (_d, p) = write("e.yaml", "examples:\n  - x\n");
        assert!(
            load(&p)
                .unwrap_err()
                .to_string()
                .contains("unknown key `examples`")
        );
        let (_d, p) = write("e.yaml", "intents: {}\n");
        assert!(
            load(&p)
                .unwrap_err()
                .to_string()
                .contains("no evaluation rows")
        );
    }
}
