//! A position-keeping YAML reader for files bank staff edit.
//!
//! The parser's event stream is turned into a small node tree where every
//! node remembers its line and column, then typed values are read from the
//! tree through serde, so every error (unknown key, wrong type, missing key)
//! points at `line:col`. Only the plain data subset of YAML is accepted:
//! anchors, aliases, tags and multiple documents are rejected, which rules out
//! alias-expansion bombs; nesting depth, node count and input size are capped.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Self {
        Self {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Block,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Scalar { value: String, style: ScalarStyle },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub pos: Pos,
    /// Character offset of the node in the source.
    pub offset: usize,
}

impl Node {
    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key node of `key` when this node is a mapping.
    pub fn key(&self, key: &str) -> Option<&Node> {
        self.entries()
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, _)| k)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.kind {
            NodeKind::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.kind {
            NodeKind::Map(entries) => entries,
            _ => &[],
        }
    }

    fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, style: ScalarStyle::Plain } if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "an empty value",
            NodeKind::Scalar { .. } => "a single value",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping of keys",
        }
    }
}

/// Caps that keep hostile or accidental input from exhausting memory or stack.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 20,
            max_depth: 32,
            max_nodes: 200_000,
        }
    }
}

/// A problem in a YAML file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

impl std::error::Error for YamlError {}

fn yerr(pos: Pos, message: impl Into<String>) -> YamlError {
    YamlError {
        pos,
        message: message.into(),
    }
}

/// Parses one YAML document into a node tree. `Ok(None)` for an empty document.
pub fn parse(src: &str, limits: &Limits) -> Result<Option<Node>, YamlError> {
    if src.len() > limits.max_bytes {
        return Err(yerr(
            Pos { line: 1, col: 1 },
            format!("file is larger than {} bytes", limits.max_bytes),
        ));
    }
    if let Some((i, _)) = src.char_indices().find(|&(_, c)| c == '\0') {
        let pos = pos_of_byte(src, i);
        return Err(yerr(
            pos,
            "file contains a NUL byte: this is a binary file, not YAML",
        ));
    }
    let mut parser = Parser::new_from_str(src);
    // Stack of containers being built: (node under construction, pending map key).
    let mut stack: Vec<(Node, Option<Node>)> = Vec::new();
    let mut root: Option<Node> = None;
    let mut nodes = 0usize;
    let mut documents = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| {
            let m = e.marker();
            yerr(
                Pos {
                    line: m.line(),
                    col: m.col() + 1,
                },
                format!("YAML syntax error: {}", e.info()),
            )
        })?;
        let pos = Pos::from_marker(&mark);
        let offset = mark.index();
        let finished = match event {
            Event::StreamStart | Event::Nothing => None,
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(yerr(
                        pos,
                        "more than one YAML document (`---`): put each intent in its own file",
                    ));
                }
                None
            }
            Event::DocumentEnd => None,
            Event::Alias(_) => {
                return Err(yerr(
                    pos,
                    "aliases (`*name`) are not supported: write the value out",
                ));
            }
            Event::Scalar(value, style, anchor, tag) => {
                reject_anchor_tag(pos, anchor, tag.is_some())?;
                let style = match style {
                    TScalarStyle::Plain => ScalarStyle::Plain,
                    TScalarStyle::SingleQuoted => ScalarStyle::SingleQuoted,
                    TScalarStyle::DoubleQuoted => ScalarStyle::DoubleQuoted,
                    TScalarStyle::Literal | TScalarStyle::Folded => ScalarStyle::Block,
                };
                Some(Node {
                    kind: NodeKind::Scalar { value, style },
                    pos,
                    offset,
                })
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                reject_anchor_tag(pos, anchor, tag.is_some())?;
                if stack.len() >= limits.max_depth {
                    return Err(yerr(
                        pos,
                        format!("nesting deeper than {} levels", limits.max_depth),
                    ));
                }
                let kind = if matches!(event, Event::SequenceStart(..)) {
                    NodeKind::Seq(Vec::new())
                } else {
                    NodeKind::Map(Vec::new())
                };
                stack.push((Node { kind, pos, offset }, None));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((mut node, _)) = stack.pop() else {
                    return Err(yerr(pos, "unbalanced end of collection"));
                };
                // A block collection's start event is reported after its first
                // key or dash; point at whichever comes first in the file.
                let first = match &node.kind {
                    NodeKind::Map(entries) => entries.first().map(|(k, _)| (k.pos, k.offset)),
                    NodeKind::Seq(items) => items.first().map(|i| (i.pos, i.offset)),
                    NodeKind::Scalar { .. } => None,
                };
                if let Some((p, o)) = first.filter(|(p, _)| *p < node.pos) {
                    node.pos = p;
                    node.offset = o;
                }
                Some(node)
            }
        };
        let Some(node) = finished else { continue };
        nodes += 1;
        if nodes > limits.max_nodes {
            return Err(yerr(
                node.pos,
                format!("more than {} values in one file", limits.max_nodes),
            ));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some((parent, pending)) => match &mut parent.kind {
                NodeKind::Seq(items) => items.push(node),
                NodeKind::Map(entries) => match pending.take() {
                    None => {
                        if !matches!(node.kind, NodeKind::Scalar { .. }) {
                            return Err(yerr(
                                node.pos,
                                "a key must be a plain value, not a list or mapping",
                            ));
                        }
                        if let Some((first, _)) =
                            entries.iter().find(|(k, _)| k.as_str() == node.as_str())
                        {
                            return Err(yerr(
                                node.pos,
                                format!(
                                    "duplicate key `{}` (first defined at {})",
                                    node.as_str().unwrap_or_default(),
                                    first.pos
                                ),
                            ));
                        }
                        *pending = Some(node);
                    }
                    Some(key) => entries.push((key, node)),
                },
                NodeKind::Scalar { .. } => unreachable!("scalars are never pushed on the stack"),
            },
        }
    }
    Ok(root.filter(|r| !r.is_null()))
}

fn reject_anchor_tag(pos: Pos, anchor: usize, tagged: bool) -> Result<(), YamlError> {
    if anchor != 0 {
        return Err(yerr(
            pos,
            "anchors (`&name`) are not supported: write the value out",
        ));
    }
    if tagged {
        return Err(yerr(pos, "tags (`!name`) are not supported"));
    }
    Ok(())
}

/// The 1-based line and column of a byte offset.
pub fn pos_of_byte(src: &str, byte: usize) -> Pos {
    let before = &src[..byte.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos { line, col }
}

/// The source position of character `char_index` of a scalar's value, when it
/// can be mapped exactly (single-line plain or quoted scalars); otherwise the
/// scalar's own position. `lines` are the source's lines (`str::lines`),
/// split once per file so that each call costs one line.
pub fn pos_in_scalar(lines: &[&str], node: &Node, char_index: usize) -> Pos {
    let NodeKind::Scalar { value, style } = &node.kind else {
        return node.pos;
    };
    let Some(line) = node.pos.line.checked_sub(1).and_then(|l| lines.get(l)) else {
        return node.pos;
    };
    let mut src_chars = line.chars().skip(node.pos.col.saturating_sub(1));
    let mut col = node.pos.col;
    match style {
        ScalarStyle::Plain => {}
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
            src_chars.next();
            col += 1;
        }
        ScalarStyle::Block => return node.pos,
    }
    for (i, vc) in value.chars().enumerate() {
        if i == char_index {
            return Pos {
                line: node.pos.line,
                col,
            };
        }
        let Some(sc) = src_chars.next() else {
            return node.pos;
        };
        match (style, sc) {
            (ScalarStyle::SingleQuoted, '\'') => {
                src_chars.next();
                col += 2;
            }
            (ScalarStyle::DoubleQuoted, '\\') => return node.pos,
            _ if sc == vc => col += 1,
            _ => return node.pos,
        }
    }
    if char_index == value.chars().count() {
        Pos {
            line: node.pos.line,
            col,
        }
    } else {
        node.pos
    }
}

/// A serde error that knows where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            pos: None,
            message: msg.to_string(),
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let hint = closest(field, expected)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        Self::custom(format_args!(
            "unknown key `{field}`{hint}; allowed keys: {}",
            expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("missing required key `{field}`"))
    }
}

/// The candidate within edit distance 2 of `word`, if any.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Reads a typed value from a node; the error carries the position of the
/// innermost node that failed.
pub fn from_node<'de, T: serde::Deserialize<'de>>(node: &'de Node) -> Result<T, YamlError> {
    T::deserialize(node).map_err(|e| YamlError {
        pos: e.pos.unwrap_or(node.pos),
        message: e.message,
    })
}

fn at<T>(node: &Node, r: Result<T, DeError>) -> Result<T, DeError> {
    r.map_err(|mut e| {
        e.pos.get_or_insert(node.pos);
        e
    })
}

fn type_error(node: &Node, expected: &str) -> DeError {
    DeError {
        pos: Some(node.pos),
        message: format!("expected {expected}, found {}", node.describe()),
    }
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => visitor.visit_unit(),
            NodeKind::Scalar {
                value,
                style: ScalarStyle::Plain,
            } => {
                if let Ok(i) = value.parse::<i64>() {
                    visitor.visit_i64(i)
                } else if let Ok(f) = value.parse::<f64>() {
                    visitor.visit_f64(f)
                } else if value == "true" || value == "false" {
                    visitor.visit_bool(value == "true")
                } else {
                    visitor.visit_str(value)
                }
            }
            NodeKind::Scalar { value, .. } => visitor.visit_str(value),
            NodeKind::Seq(items) => visitor.visit_seq(Seq { iter: items.iter() }),
            NodeKind::Map(entries) => visitor.visit_map(Map {
                iter: entries.iter(),
                value: None,
            }),
        };
        at(self, r)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Scalar { value, .. } if !self.is_null() => at(self, visitor.visit_str(value)),
            _ => Err(type_error(self, "a text value")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            at(self, visitor.visit_none())
        } else {
            at(self, visitor.visit_some(self))
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Seq(items) => at(self, visitor.visit_seq(Seq { iter: items.iter() })),
            _ => Err(type_error(self, "a list (lines starting with `- `)")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Map(entries) => at(
                self,
                visitor.visit_map(Map {
                    iter: entries.iter(),
                    value: None,
                }),
            ),
            _ => Err(type_error(self, "a mapping of `key: value` lines")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.as_str() {
            Some("true") => at(self, visitor.visit_bool(true)),
            Some("false") => at(self, visitor.visit_bool(false)),
            _ => Err(type_error(self, "`true` or `false`")),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.as_str().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) => at(self, visitor.visit_u64(n)),
            None => Err(type_error(self, "a whole number")),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.as_str().and_then(|s| s.parse::<f64>().ok()) {
            Some(n) => at(self, visitor.visit_f64(n)),
            None => Err(type_error(self, "a number")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => {
                at(self, visitor.visit_enum(value.as_str().into_deserializer()))
            }
            _ => Err(type_error(self, "one of the allowed names")),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u128 f32 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct ignored_any
    }
}

struct Seq<'de> {
    iter: std::slice::Iter<'de, Node>,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(node) => at(node, seed.deserialize(node)).map(Some),
            None => Ok(None),
        }
    }
}

struct Map<'de> {
    iter: std::slice::Iter<'de, (Node, Node)>,
    value: Option<&'de Node>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                at(k, seed.deserialize(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value requested before key"))?;
        at(node, seed.deserialize(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        intent: String,
        #[serde(default)]
        description: Option<String>,
        examples: Vec<String>,
    }

    fn load(src: &str) -> Result<Doc, YamlError> {
        let node = parse(src, &Limits::default())?.ok_or_else(|| yerr(Pos::default(), "empty"))?;
        from_node(&node)
    }

    #[test]
    fn reads_a_minimal_document() {
        let d = load(
            "intent: card_arrival\nexamples:\n  - When will my card arrive?\n  - 'yes'\n  - no\n",
        )
        .unwrap();
        assert_eq!(d.intent, "card_arrival");
        assert_eq!(d.examples, ["When will my card arrive?", "yes", "no"]);
        assert_eq!(d.description, None);
    }

    #[test]
    fn unknown_key_points_at_the_key_and_suggests() {
        let e = load("intent: a\nexmples:\n  - x\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 1 });
        assert!(
            e.message
                .contains("unknown key `exmples` (did you mean `examples`?)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let e = load("intent: a\nexamples:\n  - x\n  - [1, 2]\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 4, col: 5 });
        assert!(
            e.message.contains("expected a text value, found a list"),
            "{}",
            e.message
        );
        let e = load("intent: a\nexamples: hello\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 11 });
        assert!(e.message.contains("expected a list"));
    }

    #[test]
    fn missing_key_points_at_the_mapping() {
        let e = load("# comment\nintent: a\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 1 });
        assert!(e.message.contains("missing required key `examples`"));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse("intent: a\nintent: b\n", &Limits::default()).unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 1 });
        assert!(
            e.message
                .contains("duplicate key `intent` (first defined at 1:1)")
        );
    }

    #[test]
    fn anchors_aliases_tags_and_multiple_documents_are_refused() {
        let bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n";
        assert!(
            parse(bomb, &Limits::default())
                .unwrap_err()
                .message
                .contains("anchors")
        );
        assert!(parse("a: *x\n", &Limits::default()).is_err());
        assert!(
            parse("a: !custom x\n", &Limits::default())
                .unwrap_err()
                .message
                .contains("tags")
        );
        assert!(
            parse("a: 1\n---\nb: 2\n", &Limits::default())
                .unwrap_err()
                .message
                .contains("more than one")
        );
    }

    #[test]
    fn deep_nesting_and_size_are_capped() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let e = parse(&deep, &Limits::default()).unwrap_err();
        assert!(
            e.message.contains("nesting deeper than 32"),
            "{}",
            e.message
        );
        let many = "- x\n".repeat(50);
        let small = Limits {
            max_nodes: 10,
            ..Limits::default()
        };
        assert!(
            parse(&many, &small)
                .unwrap_err()
                .message
                .contains("more than 10 values")
        );
        let tiny = Limits {
            max_bytes: 8,
            ..Limits::default()
        };
        assert!(
            parse("intent: abcdef\n", &tiny)
                .unwrap_err()
                .message
                .contains("larger than 8 bytes")
        );
    }

    #[test]
    fn syntax_errors_and_binary_input_have_positions() {
        let e = parse("intent: a\nexamples:\n  - 'unclosed\n", &Limits::default()).unwrap_err();
        assert!(e.message.starts_with("YAML syntax error"), "{}", e.message);
        assert!(e.pos.line >= 3);
        let e = parse("intent: a\n\0\0", &Limits::default()).unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 1 });
        assert!(e.message.contains("binary"));
    }

    #[test]
    fn empty_documents_are_none() {
        assert_eq!(parse("", &Limits::default()).unwrap(), None);
        assert_eq!(
            parse("# only a comment\n", &Limits::default()).unwrap(),
            None
        );
    }

    #[test]
    fn positions_inside_scalars() {
        let src = "examples:\n  - send [50 euros(amount)\n  - 'it''s [x'\n";
        let root = parse(src, &Limits::default()).unwrap().unwrap();
        let items = root.get("examples").unwrap().items();
        let src: Vec<&str> = src.lines().collect();
        let src = src.as_slice();
        // Plain: character 5 is the `[`, at column 5 + 5.
        assert_eq!(pos_in_scalar(src, &items[0], 5), Pos { line: 2, col: 10 });
        // Single-quoted with a doubled quote: value "it's [x", `[` is character 5.
        assert_eq!(pos_in_scalar(src, &items[1], 5), Pos { line: 3, col: 12 });
    }

    #[test]
    fn closest_suggests_near_misses_only() {
        assert_eq!(
            closest("exmples", &["intent", "examples"]),
            Some("examples")
        );
        assert_eq!(closest("zzzzzz", &["intent", "examples"]), None);
    }
}
