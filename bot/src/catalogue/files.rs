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

    /// What the bot does for this intent beyond answering: slots to collect,
    /// a confirmation, a bank operation and a reply per outcome. Intents
    /// without a flow are answered from `responses` (an FAQ, which may
    /// interrupt another task without ending it).
    #[serde(default)]
    pub flow: Option<FlowSpec>,
}

/// A task: collect slots, confirm, act, answer per outcome.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// The lowest calibrated confidence (0–1) at which the bot acts on this
    /// intent. Money-moving flows are never below the global money threshold.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Said first, before any slot is asked for ("I'll block it right away").
    #[serde(default)]
    pub answer: Option<ResponseSpec>,
    /// What to collect, in the order it is asked for.
    #[serde(default)]
    pub slots: Vec<SlotSpecFile>,
    /// Restates the collected values, with `{slot}` placeholders, and waits
    /// for yes or no. Required when the action moves money.
    #[serde(default)]
    pub confirm: Option<ResponseSpec>,
    /// The bank operation, run once the slots are complete and confirmed.
    #[serde(default)]
    pub action: Option<ActionName>,
    /// `step_up` asks for a one-time code before the action. Required when
    /// the action moves money.
    #[serde(default)]
    pub requires_auth: AuthName,
    /// When to hand the customer to a person.
    #[serde(default)]
    pub escalate: EscalateSpec,
    /// The reply per outcome of the action; `{slot}` and `{result.field}`
    /// placeholders are filled. `success` is required with an action.
    #[serde(default)]
    pub outcomes: BTreeMap<OutcomeName, ResponseSpec>,
}

/// One value to collect.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotSpecFile {
    /// How placeholders and the action refer to it (`amount`, `payee`, …).
    #[schemars(regex(pattern = "^[a-z][a-z0-9_]{0,63}$"))]
    pub name: String,
    /// What it holds, and so which extractor fills it.
    #[serde(rename = "type")]
    pub kind: SlotKindName,
    /// The question that asks for it.
    pub prompt: String,
    /// Asked again when an answer did not fill it; default: the prompt.
    #[serde(default)]
    pub reprompt: Option<String>,
    /// Never asked for; filled only when the customer gives it.
    #[serde(default)]
    pub optional: bool,
    /// The choices of a `choice` slot (also shown as quick replies).
    #[serde(default)]
    pub options: Vec<String>,
    /// Checks on the value; a failed one says its message and asks again.
    #[serde(default)]
    pub validate: Vec<RuleSpec>,
}

/// A check on a slot's value.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub rule: RuleName,
    /// The limit for `min_amount` / `max_amount`, in major units ("10000").
    #[serde(default)]
    pub value: Option<String>,
    /// What the customer is told when the check fails.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    Positive,
    MinAmount,
    MaxAmount,
    NotPast,
    NotFuture,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlotKindName {
    Amount,
    Date,
    DateRange,
    Payee,
    Account,
    Card,
    Phone,
    Email,
    Contact,
    Choice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionName {
    GetBalance,
    ListTransactions,
    Transfer,
    BlockCard,
    FreezeCard,
    UnfreezeCard,
    ReplaceCard,
    CardDeliveryStatus,
    OpenDispute,
    UpdateContact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeName {
    Success,
    InsufficientFunds,
    LimitExceeded,
    Rejected,
    Unavailable,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthName {
    #[default]
    Session,
    StepUp,
}

/// When a person takes over.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalateSpec {
    /// `on_request` (the default), `offer` (a "talk to a person" button with
    /// the outcome), or `immediately` (hand over after the first reply).
    #[serde(default)]
    pub when: EscalateWhen,
    #[serde(default)]
    pub priority: PriorityName,
    /// The agents' skill queue: `cards`, `payments`, `fraud`, `general`, …
    #[serde(default)]
    pub skill: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscalateWhen {
    #[default]
    OnRequest,
    Offer,
    Immediately,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PriorityName {
    #[default]
    Normal,
    High,
    Urgent,
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
