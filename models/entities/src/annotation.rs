//! Rasa-style entity annotations inside training examples:
//! `send [50 euros](amount) to [Anna](payee)` is the text
//! `send 50 euros to Anna` with two entity spans.
//!
//! A literal bracket is written `\[` or `\]`, a literal backslash `\\`.
//!
//! Evaluation data may also state the normalised value the extractor must
//! find: `[50 quid](amount=50 GBP)`, `[last month](date_range=2024-02-01..2024-02-29)`.
//! The value is free text up to `)`; its meaning belongs to the entity type.

use serde::{Deserialize, Serialize};

/// One annotated span of the plain text, in byte offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitySpan {
    pub entity: String,
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// The expected normalised value, when the annotation gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// An example with its annotations removed from the text and kept as spans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnotatedText {
    pub text: String,
    pub entities: Vec<EntitySpan>,
}

/// What is wrong with an annotation and where: `column` counts characters
/// (not bytes) from the start of the raw example, starting at 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AnnotationError {
    pub column: usize,
    pub message: String,
}

fn err(column: usize, message: impl Into<String>) -> AnnotationError {
    AnnotationError {
        column,
        message: message.into(),
    }
}

/// True for names like `amount` or `card_last4`.
pub fn is_valid_entity_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

/// Parses an example, returning the plain text and its entity spans.
pub fn parse(raw: &str) -> Result<AnnotatedText, AnnotationError> {
    let chars: Vec<char> = raw.chars().collect();
    let mut text = String::with_capacity(raw.len());
    let mut entities = Vec::new();
    let mut i = 0;
    // Set while inside `[...]`: (column of `[`, byte offset in `text` where the span starts).
    let mut open: Option<(usize, usize)> = None;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => match chars.get(i + 1) {
                Some(&n @ ('[' | ']' | '\\')) => {
                    text.push(n);
                    i += 2;
                    continue;
                }
                _ => text.push('\\'),
            },
            '[' => {
                if open.is_some() {
                    return Err(err(i, "`[` inside an annotation: annotations cannot nest"));
                }
                open = Some((i, text.len()));
            }
            ']' => {
                let Some((col, start)) = open.take() else {
                    return Err(err(
                        i,
                        "`]` without a matching `[` (write `\\]` for a literal bracket)",
                    ));
                };
                if chars.get(i + 1) != Some(&'(') {
                    return Err(err(
                        i + 1,
                        "an annotation `[text]` must be followed by `(entity)`, e.g. `[50 euros](amount)` (write `\\[` for a literal bracket)",
                    ));
                }
                let name_start = i + 2;
                let Some(close) = chars[name_start..].iter().position(|&c| c == ')') else {
                    return Err(err(i + 1, "missing `)` after the entity name"));
                };
                let inside: String = chars[name_start..name_start + close].iter().collect();
                let (name, value) = match inside.split_once('=') {
                    Some((n, v)) => {
                        let v = v.trim();
                        if v.is_empty() {
                            return Err(err(name_start, "empty value after `=` in `()`"));
                        }
                        (n.trim(), Some(v.to_owned()))
                    }
                    None => (inside.trim(), None),
                };
                if name.is_empty() {
                    return Err(err(name_start, "empty entity name in `()`"));
                }
                if !is_valid_entity_name(name) {
                    return Err(err(
                        name_start,
                        format!(
                            "invalid entity name `{name}`: use lowercase letters, digits and `_`, starting with a letter"
                        ),
                    ));
                }
                let span_text = text[start..].to_owned();
                if span_text.trim().is_empty() {
                    return Err(err(col, "empty annotated text in `[]`"));
                }
                if span_text.trim() != span_text {
                    return Err(err(col, "annotated text starts or ends with a space"));
                }
                entities.push(EntitySpan {
                    entity: name.to_owned(),
                    start,
                    end: text.len(),
                    text: span_text,
                    value,
                });
                i = name_start + close + 1;
                continue;
            }
            _ => text.push(c),
        }
        i += 1;
    }
    if let Some((col, _)) = open {
        return Err(err(
            col,
            "`[` is never closed (write `\\[` for a literal bracket)",
        ));
    }
    Ok(AnnotatedText { text, entities })
}

/// Writes an annotated example back in the `[text](entity)` form, escaping
/// brackets in the plain text. Spans must not overlap and must lie on char
/// boundaries (as produced by [`parse`]).
pub fn render(a: &AnnotatedText) -> String {
    let escape = |s: &str, out: &mut String| {
        for c in s.chars() {
            if matches!(c, '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
    };
    let mut spans = a.entities.clone();
    spans.sort_by_key(|e| e.start);
    let mut out = String::new();
    let mut at = 0;
    for e in &spans {
        escape(&a.text[at..e.start], &mut out);
        out.push('[');
        escape(&a.text[e.start..e.end], &mut out);
        out.push_str("](");
        out.push_str(&e.entity);
        if let Some(v) = &e.value {
            out.push('=');
            out.push_str(v);
        }
        out.push(')');
        at = e.end;
    }
    escape(&a.text[at..], &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_has_no_entities() {
        let a = parse("When will my card arrive?").unwrap();
        assert_eq!(a.text, "When will my card arrive?");
        assert!(a.entities.is_empty());
    }

    #[test]
    fn spans_point_into_the_plain_text() {
        let a = parse("send [50 euros](amount) to [Anna](payee)").unwrap();
        assert_eq!(a.text, "send 50 euros to Anna");
        assert_eq!(a.entities.len(), 2);
        let e = &a.entities[0];
        assert_eq!(
            (e.entity.as_str(), &a.text[e.start..e.end]),
            ("amount", "50 euros")
        );
        let e = &a.entities[1];
        assert_eq!(
            (e.entity.as_str(), &a.text[e.start..e.end]),
            ("payee", "Anna")
        );
    }

    #[test]
    fn annotations_may_state_the_value() {
        let a = parse(
            "send [50 quid](amount=50 GBP) [last month](date_range = 2024-02-01..2024-02-29)",
        )
        .unwrap();
        assert_eq!(a.entities[0].value.as_deref(), Some("50 GBP"));
        assert_eq!(a.entities[1].entity, "date_range");
        assert_eq!(
            a.entities[1].value.as_deref(),
            Some("2024-02-01..2024-02-29")
        );
        assert_eq!(parse(&render(&a)).unwrap(), a);
        assert!(parse("[x](amount=)").is_err());
    }

    #[test]
    fn multibyte_text_keeps_byte_offsets() {
        let a = parse("pay [£20](amount) to [Zoë](payee) now").unwrap();
        assert_eq!(a.text, "pay £20 to Zoë now");
        assert_eq!(&a.text[a.entities[0].start..a.entities[0].end], "£20");
        assert_eq!(&a.text[a.entities[1].start..a.entities[1].end], "Zoë");
    }

    #[test]
    fn escaped_brackets_are_literal() {
        let a = parse(r"my ref is \[A1\] and \\ ok").unwrap();
        assert_eq!(a.text, r"my ref is [A1] and \ ok");
        assert!(a.entities.is_empty());
    }

    #[test]
    fn malformed_annotations_report_a_column() {
        let cases = [
            ("send [50 euros to Anna", 5, "never closed"),
            ("send [50 euros](amount to Anna", 15, "missing `)`"),
            ("send [50 euros] to Anna", 15, "followed by `(entity)`"),
            ("send 50 euros] to Anna", 13, "without a matching"),
            ("send [50 [euros]](amount)", 9, "cannot nest"),
            ("send [50 euros]() now", 16, "empty entity name"),
            ("send [50 euros](Amount) now", 16, "invalid entity name"),
            ("send [](amount) now", 5, "empty annotated text"),
            ("send [ 50](amount) now", 5, "starts or ends with a space"),
        ];
        for (raw, col, msg) in cases {
            let e = parse(raw).unwrap_err();
            assert_eq!(e.column, col, "{raw}: {e}");
            assert!(e.message.contains(msg), "{raw}: {e}");
        }
    }

    #[test]
    fn render_round_trips() {
        for raw in [
            "send [50 euros](amount) to [Anna](payee)",
            r"a \[literal\] bracket and [£5](amount)",
            "no entities at all",
        ] {
            let a = parse(raw).unwrap();
            assert_eq!(render(&a), raw);
            assert_eq!(parse(&render(&a)).unwrap(), a);
        }
    }
}
