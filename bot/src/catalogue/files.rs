//! The file formats bank staff edit, as Rust types. The JSON Schemas that
//! editors use are generated from these types (`bankbot schema`), so the
//! schema and the loader cannot disagree.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// The pattern every intent name must match.
pub const INTENT_NAME_PATTERN: &str = "^[a-z][a-z0-9_]{0,63}$";

/// One intent: what customers say when they want one thing.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "bankbot intent")]
pub struct IntentFile {
    /// The intent's name: lowercase letters, digits and `_`, starting with a
    /// letter (e.g. `card_arrival`). `out_of_scope` (alias `oos`) holds
    /// examples the bot must recognise as not its job.
    #[schemars(regex(pattern = "^[a-z][a-z0-9_]{0,63}$"))]
    pub intent: String,

    /// What the customer wants, in one sentence, for the people who maintain
    /// the catalogue.
    #[serde(default)]
    pub description: Option<String>,

    /// Example messages, one per line, written the way customers write them.
    /// Mark entity values Rasa-style: `send [50 euros](amount) to [Anna](payee)`;
    /// the brackets are removed for training. Write a literal bracket as `\[`.
    #[schemars(length(min = 1))]
    pub examples: Vec<String>,

    /// What the bot answers when it recognises this intent: one reply is
    /// picked per turn, varying within a conversation. A reply is a text, or
    /// a text with quick replies (buttons the customer can tap). For
    /// `out_of_scope` these are the polite "not something I can do" replies.
    #[serde(default)]
    pub responses: Vec<ResponseSpec>,
}

/// One reply as written in YAML.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ResponseSpec {
    /// Just the text.
    Text(String),
    /// A text with quick replies.
    Rich(RichResponse),
}

/// A reply with buttons.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RichResponse {
    /// What the bot says.
    pub text: String,
    /// Buttons under the reply; a plain string is both the title and what is sent back.
    #[serde(default)]
    pub quick_replies: Vec<QuickReplySpec>,
}

/// A quick-reply button as written in YAML.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum QuickReplySpec {
    /// Title and payload are the same text.
    Title(String),
    /// What the button shows, and what the customer's message becomes when tapped.
    Full { title: String, payload: String },
}

/// Held-out evaluation utterances, grouped by the intent they should get.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "bankbot evaluation set")]
pub struct EvaluationFile {
    /// What this set is and how it was written.
    #[serde(default)]
    pub description: Option<String>,

    /// The day relative dates in the annotations were resolved against
    /// (YYYY-MM-DD), e.g. `[last month](date_range=2024-02-01..2024-02-29)`.
    /// `bankbot eval --reference-date` overrides it; the default is today.
    #[serde(default)]
    #[schemars(regex(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub reference_date: Option<String>,

    /// The customer's saved payees that `payee` annotations refer to (by id).
    #[serde(default)]
    pub payees: Vec<PayeeEntry>,

    /// Intent name -> utterances that should be classified as that intent.
    /// Use `out_of_scope` (or `oos`) for utterances the bot must reject.
    /// Entities may be annotated, with or without their expected value:
    /// `send [£50](amount=50 GBP) to [Mum](payee=mum)`.
    pub intents: BTreeMap<IntentKey, Vec<String>>,
}

/// A saved payee for entity evaluation.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PayeeEntry {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// An intent name used as a mapping key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct IntentKey(#[schemars(regex(pattern = "^[a-z][a-z0-9_]{0,63}$"))] pub String);

/// Renders the JSON Schema (Draft-07) of a file type.
pub fn schema_json<T: JsonSchema>() -> String {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut out = serde_json::to_string_pretty(&schema).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_schema_is_draft07_and_closed() {
        let s: serde_json::Value = serde_json::from_str(&schema_json::<IntentFile>()).unwrap();
        assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], serde_json::json!(["intent", "examples"]));
        assert_eq!(s["properties"]["intent"]["pattern"], INTENT_NAME_PATTERN);
        assert_eq!(s["properties"]["examples"]["minItems"], 1);
    }

    #[test]
    fn evaluation_schema_keys_are_intent_names() {
        let s: serde_json::Value = serde_json::from_str(&schema_json::<EvaluationFile>()).unwrap();
        assert_eq!(s["additionalProperties"], false);
        let text = s.to_string();
        assert!(
            text.contains(INTENT_NAME_PATTERN.replace('\\', "\\\\").as_str()),
            "{text}"
        );
    }
}
