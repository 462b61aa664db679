//! The intent catalogue: a directory of YAML files, one intent each, loaded
//! into validated domain types. Loading never returns a partial catalogue:
//! any error fails the whole load with every diagnostic found.

pub mod files;
pub mod flows;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bankbot_models::annotation::{self, AnnotatedText};
use bankbot_models::metrics::OUT_OF_SCOPE;
use sha2::{Digest, Sha256};

use crate::diag::{self, Diagnostic, Diagnostics};
use crate::yaml::{self, Limits, Node, Pos};
use files::IntentFile;

/// The modeline that lets editors validate intent files against the schema.
pub const MODELINE_PREFIX: &str = "# yaml-language-server: $schema=";
/// Intents with fewer examples than this get a warning.
pub const MIN_EXAMPLES_ADVISED: usize = 10;
/// Longest example accepted, in characters.
pub const MAX_EXAMPLE_CHARS: usize = 1000;
const MAX_FILES: usize = 10_000;

/// Where something was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub pos: Pos,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.pos)
    }
}

#[derive(Debug, Clone)]
pub struct Example {
    /// As written, with annotations.
    pub raw: String,
    /// Plain text and entity spans.
    pub annotated: AnnotatedText,
    pub source: Source,
}

impl Example {
    pub fn text(&self) -> &str {
        &self.annotated.text
    }
}

#[derive(Debug, Clone)]
pub struct Intent {
    pub name: String,
    pub description: Option<String>,
    pub examples: Vec<Example>,
    /// What the bot says when it recognises this intent (may be empty).
    pub responses: Vec<Response>,
    /// The compiled `flow:` section, if the intent has one.
    pub flow: Option<bankbot_dialog::Flow>,
    pub source: Source,
}

/// A validated bot reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub text: String,
    pub quick_replies: Vec<QuickReply>,
}

/// A validated quick-reply button.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuickReply {
    pub title: String,
    pub payload: String,
}

/// Longest reply text, in characters.
pub const MAX_RESPONSE_CHARS: usize = 2000;
/// Longest quick-reply title and payload, in characters.
pub const MAX_QUICK_REPLY_CHARS: usize = 128;
/// Most quick replies under one reply.
pub const MAX_QUICK_REPLIES: usize = 10;

/// A validated catalogue. `intents` excludes out-of-scope, which is kept
/// apart because it is never predicted as a normal intent.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub intents: Vec<Intent>,
    pub out_of_scope: Option<Intent>,
}

impl Catalogue {
    /// Every example as (plain text, label), out-of-scope labelled [`OUT_OF_SCOPE`].
    pub fn labelled(&self) -> Vec<(String, String)> {
        self.intents
            .iter()
            .chain(self.out_of_scope.as_ref())
            .flat_map(|i| {
                i.examples
                    .iter()
                    .map(move |e| (e.text().to_owned(), label(&i.name)))
            })
            .collect()
    }

    /// sha256 over the sorted (label, text) pairs: identifies the training data
    /// independent of file layout, comments and annotation markup.
    pub fn data_hash(&self) -> String {
        let mut pairs = self.labelled();
        pairs.sort();
        let mut h = Sha256::new();
        for (text, label) in pairs {
            h.update(label.as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }

    pub fn example_count(&self) -> usize {
        self.intents
            .iter()
            .chain(self.out_of_scope.as_ref())
            .map(|i| i.examples.len())
            .sum()
    }
}

fn label(name: &str) -> String {
    if is_out_of_scope(name) {
        OUT_OF_SCOPE.to_owned()
    } else {
        name.to_owned()
    }
}

/// True for `out_of_scope` and its alias `oos`.
pub fn is_out_of_scope(name: &str) -> bool {
    name == OUT_OF_SCOPE || name == "oos"
}

/// True for names like `card_arrival`.
pub fn is_valid_intent_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

/// Lowercase, alphanumerics only, single spaces: two examples that differ
/// only in case, punctuation or spacing are "the same example".
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// Reads a text file for parsing: size-capped, UTF-8 checked (reporting the
/// position of the first invalid byte), never empty.
pub fn read_text(path: &Path, max_bytes: usize) -> Result<String, Diagnostic> {
    let start = Pos { line: 1, col: 1 };
    let meta = std::fs::metadata(path)
        .map_err(|e| Diagnostic::error(path, start, format!("cannot read: {e}")))?;
    if meta.len() > max_bytes as u64 {
        return Err(Diagnostic::error(
            path,
            start,
            format!(
                "file is {} bytes, more than the {max_bytes} allowed",
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Diagnostic::error(path, start, format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or_default();
        Diagnostic::error(
            path,
            yaml::pos_of_byte(prefix, valid),
            "invalid UTF-8: save the file as UTF-8",
        )
    })?;
    // Editors on Windows (Notepad, Excel) start UTF-8 files with a byte
    // order mark; it is not content.
    let text = match text.strip_prefix('\u{FEFF}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    if text.trim().is_empty() {
        return Err(Diagnostic::error(path, start, "file is empty"));
    }
    Ok(text)
}

/// YAML files under `dir` (recursively, skipping hidden entries), sorted.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let start = Pos { line: 1, col: 1 };
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| Diagnostic::error(&d, start, format!("cannot read directory: {e}")))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| Diagnostic::error(&d, start, format!("cannot read directory: {e}")))?;
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = entry
                .file_type()
                .map_err(|e| Diagnostic::error(&path, start, e.to_string()))?;
            if ft.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
                if out.len() > MAX_FILES {
                    return Err(Diagnostic::error(
                        dir,
                        start,
                        format!("more than {MAX_FILES} YAML files"),
                    ));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Loads and validates every intent file under `dir`. On success returns the
/// catalogue and its warnings; on failure every diagnostic (errors first in
/// file order, warnings included).
pub fn load_dir(dir: &Path) -> Result<(Catalogue, Vec<Diagnostic>), Diagnostics> {
    let files = yaml_files(dir).map_err(|d| Diagnostics(vec![d]))?;
    let mut diags = Vec::new();
    if files.is_empty() {
        diags.push(Diagnostic::error(
            dir,
            Pos { line: 1, col: 1 },
            "no intent files (*.yaml) in this directory",
        ));
        return Err(Diagnostics(diags));
    }
    let mut intents: Vec<Intent> = Vec::new();
    for path in &files {
        if let Some(intent) = load_file(path, &mut diags) {
            intents.push(intent);
        }
    }
    cross_checks(&intents, &mut diags);
    diag::sort(&mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(Diagnostics(diags));
    }
    let (oos, mut intents): (Vec<Intent>, Vec<Intent>) =
        intents.into_iter().partition(|i| is_out_of_scope(&i.name));
    intents.sort_by(|a, b| a.name.cmp(&b.name));
    if intents.len() < 2 {
        return Err(Diagnostics(vec![Diagnostic::error(
            dir,
            Pos { line: 1, col: 1 },
            format!(
                "a catalogue needs at least 2 intents besides out_of_scope, found {}",
                intents.len()
            ),
        )]));
    }
    Ok((
        Catalogue {
            intents,
            out_of_scope: oos.into_iter().next(),
        },
        diags,
    ))
}

/// Loads one intent file, pushing its diagnostics; `None` when it has errors.
pub fn load_file(path: &Path, diags: &mut Vec<Diagnostic>) -> Option<Intent> {
    let before = diags.iter().filter(|d| d.is_error()).count();
    let src = match read_text(path, Limits::default().max_bytes) {
        Ok(s) => s,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    let root = match yaml::parse(&src, &Limits::default()) {
        Ok(Some(root)) => root,
        Ok(None) => {
            diags.push(Diagnostic::error(
                path,
                Pos { line: 1, col: 1 },
                "file has no content (only comments)",
            ));
            return None;
        }
        Err(e) => {
            diags.push(Diagnostic::error(path, e.pos, e.message));
            return None;
        }
    };
    let file: IntentFile = match yaml::from_node(&root) {
        Ok(f) => f,
        Err(e) => {
            diags.push(Diagnostic::error(path, e.pos, e.message));
            return None;
        }
    };
    let name_pos = root.get("intent").map_or(root.pos, |n| n.pos);
    if !is_valid_intent_name(&file.intent) {
        diags.push(Diagnostic::error(
            path,
            name_pos,
            format!(
                "invalid intent name `{}`: use lowercase letters, digits and `_`, starting with a letter (at most 64)",
                file.intent
            ),
        ));
    }
    if !src
        .lines()
        .take(5)
        .any(|l| l.trim_start().starts_with(MODELINE_PREFIX))
    {
        diags.push(Diagnostic::warning(
            path,
            Pos { line: 1, col: 1 },
            format!(
                "no `{MODELINE_PREFIX}intent.schema.json` line: editors cannot validate this file"
            ),
        ));
    }
    if path.file_stem().and_then(|s| s.to_str()) != Some(file.intent.as_str()) {
        diags.push(Diagnostic::warning(
            path,
            name_pos,
            format!("file name does not match the intent name `{}`", file.intent),
        ));
    }
    let example_nodes = root.get("examples").map(Node::items).unwrap_or_default();
    let examples_key = root.key("examples").map_or(root.pos, |n| n.pos);
    let examples_pos = root.get("examples").map_or(root.pos, |n| n.pos);
    if file.examples.is_empty() {
        diags.push(Diagnostic::error(
            path,
            examples_pos,
            "`examples` is empty: an intent needs at least one example",
        ));
    }
    let mut examples = Vec::with_capacity(file.examples.len());
    // Split into lines only if an annotation error needs a position.
    let lines = std::cell::OnceCell::<Vec<&str>>::new();
    for (raw, node) in file.examples.iter().zip(example_nodes) {
        if raw.trim().is_empty() {
            diags.push(Diagnostic::error(path, node.pos, "empty example"));
            continue;
        }
        if raw.contains('\n') {
            diags.push(Diagnostic::error(
                path,
                node.pos,
                "an example must be a single line",
            ));
            continue;
        }
        if raw.chars().count() > MAX_EXAMPLE_CHARS {
            diags.push(Diagnostic::error(
                path,
                node.pos,
                format!("example longer than {MAX_EXAMPLE_CHARS} characters"),
            ));
            continue;
        }
        match annotation::parse(raw) {
            Ok(annotated) => examples.push(Example {
                raw: raw.clone(),
                annotated,
                source: Source {
                    path: path.to_path_buf(),
                    pos: node.pos,
                },
            }),
            Err(e) => diags.push(Diagnostic::error(
                path,
                yaml::pos_in_scalar(lines.get_or_init(|| src.lines().collect()), node, e.column),
                format!("malformed annotation: {}", e.message),
            )),
        }
    }
    if !is_out_of_scope(&file.intent)
        && !file.examples.is_empty()
        && file.examples.len() < MIN_EXAMPLES_ADVISED
    {
        diags.push(Diagnostic::warning(
            path,
            examples_key,
            format!(
                "only {} example(s): intents need at least {MIN_EXAMPLES_ADVISED} varied examples to be recognised reliably",
                file.examples.len()
            ),
        ));
    }
    let response_nodes = root.get("responses").map(Node::items).unwrap_or_default();
    let mut responses = Vec::with_capacity(file.responses.len());
    for (spec, node) in file.responses.iter().zip(response_nodes) {
        match response(spec) {
            Ok(r) => responses.push(r),
            Err(msg) => diags.push(Diagnostic::error(path, node.pos, msg)),
        }
    }
    if file.flow.is_some() && !file.responses.is_empty() {
        diags.push(Diagnostic::warning(
            path,
            root.key("responses").map_or(root.pos, |n| n.pos),
            "`responses` are not used: this intent's `flow` answers it (write the reply as `flow.answer` or under `outcomes`)",
        ));
    }
    let flow = match (&file.flow, root.get("flow")) {
        (Some(spec), Some(node)) => flows::compile(&file.intent, spec, node, path, diags),
        _ => None,
    };
    let errors = diags.iter().filter(|d| d.is_error()).count();
    (errors == before).then(|| Intent {
        name: file.intent,
        description: file.description,
        examples,
        responses,
        flow,
        source: Source {
            path: path.to_path_buf(),
            pos: name_pos,
        },
    })
}

/// Validates one reply as written.
fn response(spec: &files::ResponseSpec) -> Result<Response, String> {
    let (text, quick) = match spec {
        files::ResponseSpec::Text(t) => (t, &[][..]),
        files::ResponseSpec::Rich(r) => (&r.text, &r.quick_replies[..]),
    };
    let text = text.trim();
    if text.is_empty() {
        return Err("empty response text".into());
    }
    if text.chars().count() > MAX_RESPONSE_CHARS {
        return Err(format!(
            "response longer than {MAX_RESPONSE_CHARS} characters"
        ));
    }
    if quick.len() > MAX_QUICK_REPLIES {
        return Err(format!(
            "{} quick replies: at most {MAX_QUICK_REPLIES} fit under one response",
            quick.len()
        ));
    }
    let mut quick_replies = Vec::with_capacity(quick.len());
    for q in quick {
        let (title, payload) = match q {
            files::QuickReplySpec::Title(t) => (t.trim(), t.trim()),
            files::QuickReplySpec::Full { title, payload } => (title.trim(), payload.trim()),
        };
        for (what, v) in [("title", title), ("payload", payload)] {
            if v.is_empty() {
                return Err(format!("empty quick-reply {what}"));
            }
            if v.chars().count() > MAX_QUICK_REPLY_CHARS || v.contains('\n') {
                return Err(format!(
                    "quick-reply {what} must be one line of at most {MAX_QUICK_REPLY_CHARS} characters"
                ));
            }
        }
        quick_replies.push(QuickReply {
            title: title.to_owned(),
            payload: payload.to_owned(),
        });
    }
    Ok(Response {
        text: text.to_owned(),
        quick_replies,
    })
}

/// Checks across files: duplicate intent names, and examples repeated within
/// or across intents.
fn cross_checks(intents: &[Intent], diags: &mut Vec<Diagnostic>) {
    let mut names: BTreeMap<String, &Source> = BTreeMap::new();
    for i in intents {
        let key = label(&i.name);
        if let Some(first) = names.get(&key) {
            diags.push(Diagnostic::error(
                &i.source.path,
                i.source.pos,
                format!("intent `{}` is already defined at {first}", i.name),
            ));
        } else {
            names.insert(key, &i.source);
        }
    }
    let mut seen: BTreeMap<String, (&str, &Source)> = BTreeMap::new();
    for i in intents {
        for e in &i.examples {
            let key = normalise(e.text());
            if key.is_empty() {
                continue;
            }
            match seen.get(&key) {
                Some((other, first)) if *other == i.name => diags.push(Diagnostic::warning(
                    &e.source.path,
                    e.source.pos,
                    format!("repeated example (first at {first})"),
                )),
                Some((other, first)) => diags.push(Diagnostic::warning(
                    &e.source.path,
                    e.source.pos,
                    format!("the same example is in intent `{other}` ({first}): the model cannot tell them apart"),
                )),
                None => {
                    seen.insert(key, (&i.name, &e.source));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
