//! bankbot's entity extraction (re-exported as `bankbot_models::entities`):
//! typed values with spans, found by rules that are
//! exact where the shape is (IBANs, sort codes, e-mail), careful where
//! language is loose (amounts, relative dates), and fuzzy only against what
//! the caller passes in (the customer's saved payees).
//!
//! Everything here is pure: text and a [`Context`] in, [`Entity`]s out. Spans
//! are byte offsets into the UTF-8 text; money is an exact decimal with an
//! ISO 4217 code, never a float; dates resolve against the context's
//! reference date, so the same text and date always give the same values.

mod amount;
pub mod annotation;
pub mod calendar;
mod dates;
pub mod eval;
pub mod iban;
mod ids;
pub mod numbers;
pub mod payee;
mod tokens;

use serde::{Deserialize, Serialize};

pub use amount::{CURRENCIES, minor_exponent};
pub use calendar::Date;
pub use iban::IbanProblem;
pub use numbers::Decimal;

/// The entity types the extractors produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Amount,
    Date,
    DateRange,
    Iban,
    AccountNumber,
    SortCode,
    CardLast4,
    Phone,
    Email,
    Payee,
}

impl EntityKind {
    pub const ALL: [EntityKind; 10] = [
        EntityKind::Amount,
        EntityKind::Date,
        EntityKind::DateRange,
        EntityKind::Iban,
        EntityKind::AccountNumber,
        EntityKind::SortCode,
        EntityKind::CardLast4,
        EntityKind::Phone,
        EntityKind::Email,
        EntityKind::Payee,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Amount => "amount",
            EntityKind::Date => "date",
            EntityKind::DateRange => "date_range",
            EntityKind::Iban => "iban",
            EntityKind::AccountNumber => "account_number",
            EntityKind::SortCode => "sort_code",
            EntityKind::CardLast4 => "card_last4",
            EntityKind::Phone => "phone",
            EntityKind::Email => "email",
            EntityKind::Payee => "payee",
        }
    }

    pub fn from_name(name: &str) -> Option<EntityKind> {
        EntityKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for EntityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Money as written: an exact decimal and the currency, when the text
/// names one ("£", "euros", "USD"); `None` for "pay Liam 30".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    pub amount: Decimal,
    pub currency: Option<String>,
}

impl Amount {
    /// The amount in minor units of `currency` (which the caller decides when
    /// the text named none), if it is exact in that currency: "£10.005" is not.
    pub fn minor_units(&self, currency: &str) -> Option<i64> {
        self.amount.to_minor_units(minor_exponent(currency)?)
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Amount", 2)?;
        st.serialize_field("amount", &self.amount.to_string())?;
        st.serialize_field("currency", &self.currency)?;
        st.end()
    }
}

/// Both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateRange {
    pub from: Date,
    pub to: Date,
}

/// An IBAN-shaped string: valid ones and invalid ones alike are reported,
/// so the bot can say what is wrong instead of ignoring it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IbanValue {
    pub iban: String,
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<IbanProblem>,
}

/// A saved payee the text refers to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayeeMatch {
    pub id: String,
    pub name: String,
    /// Similarity of the text to the name, 0–1.
    pub score: f64,
    /// The text only matches after folding lookalike characters from
    /// another script: treat as suspicious, never act on it silently.
    pub confusable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EntityValue {
    Amount(Amount),
    Date(Date),
    DateRange(DateRange),
    Iban(IbanValue),
    Payee(PayeeMatch),
    /// Account numbers, sort codes, card digits, phone numbers (E.164 when
    /// the country is known) and e-mail addresses, normalised.
    Text(String),
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The built-in rules.
    Rules,
    /// Fuzzy matching against the caller's saved payees.
    SavedPayees,
}

/// One entity in the text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    pub entity: EntityKind,
    /// Byte offsets into the text.
    pub start: usize,
    pub end: usize,
    pub text: String,
    pub value: EntityValue,
    pub source: Source,
    pub confidence: f32,
}

/// A saved payee of the customer, as the bank's systems know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPayee {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// What the extractors need to know besides the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// "today" for relative dates.
    pub reference_date: Date,
    /// Dates without a year and bare weekdays resolve forwards (scheduling a
    /// payment) instead of backwards (looking up transactions).
    pub prefer_future: bool,
    /// "08/03/2022" is 8 March (UK) rather than 3 August (US).
    pub day_first: bool,
    /// Country calling code for national phone numbers ("07700 900123").
    pub phone_country_code: Option<u16>,
    pub payees: Vec<SavedPayee>,
}

impl Context {
    /// UK conventions, no saved payees.
    pub fn new(reference_date: Date) -> Context {
        Context {
            reference_date,
            prefer_future: false,
            day_first: true,
            phone_country_code: Some(44),
            payees: Vec::new(),
        }
    }
}

/// An extractor's proposal before overlaps are resolved.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub kind: EntityKind,
    pub start: usize,
    pub end: usize,
    pub value: EntityValue,
    pub source: Source,
    pub confidence: f32,
}

/// Longest text the extractors look at; longer input is cut at a char
/// boundary (customer messages are far shorter).
pub const MAX_TEXT_BYTES: usize = 4096;

/// Every entity in `text`, in text order, without overlaps: where proposals
/// overlap, the longer span wins, then the more confident one.
pub fn extract(text: &str, ctx: &Context) -> Vec<Entity> {
    extract_kinds(text, ctx, &EntityKind::ALL)
}

/// Like [`extract`], running only the extractors for `kinds` (a dialog
/// waiting for one slot asks for that type only; fuzz targets test one
/// parser at a time). Dates and date ranges share one parser, as do the
/// fixed-shape identifiers.
pub fn extract_kinds(text: &str, ctx: &Context, kinds: &[EntityKind]) -> Vec<Entity> {
    let mut cut = text.len().min(MAX_TEXT_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let text = &text[..cut];
    let toks = tokens::tokenize(text);
    let mut cands = Vec::new();
    let wants = |k: &[EntityKind]| k.iter().any(|k| kinds.contains(k));
    let id_kinds = [
        EntityKind::AccountNumber,
        EntityKind::SortCode,
        EntityKind::CardLast4,
        EntityKind::Phone,
        EntityKind::Email,
    ];
    for f in iban::find(text)
        .into_iter()
        .filter(|_| wants(&[EntityKind::Iban]))
    {
        cands.push(Candidate {
            kind: EntityKind::Iban,
            start: f.start,
            end: f.end,
            value: EntityValue::Iban(IbanValue {
                iban: f.compact,
                valid: f.problem.is_none(),
                problem: f.problem,
            }),
            source: Source::Rules,
            confidence: if f.problem.is_none() { 0.99 } else { 0.8 },
        });
    }
    if wants(&id_kinds) {
        ids::extract(text, ctx, &mut cands);
    }
    if wants(&[EntityKind::Date, EntityKind::DateRange]) {
        dates::extract(&toks, ctx, &mut cands);
    }
    if wants(&[EntityKind::Amount]) {
        amount::extract(&toks, &mut cands);
    }
    if wants(&[EntityKind::Payee]) {
        payee::extract(&toks, text, ctx, &mut cands);
    }
    cands.retain(|c| kinds.contains(&c.kind));

    cands.sort_by(|a, b| {
        (b.end - b.start)
            .cmp(&(a.end - a.start))
            .then(b.confidence.total_cmp(&a.confidence))
            .then(a.start.cmp(&b.start))
            .then(a.kind.cmp(&b.kind))
    });
    let mut chosen: Vec<Candidate> = Vec::new();
    for c in cands {
        if chosen.iter().all(|k| c.end <= k.start || c.start >= k.end) {
            chosen.push(c);
        }
    }
    chosen.sort_by_key(|c| c.start);
    chosen
        .into_iter()
        .map(|c| Entity {
            entity: c.kind,
            start: c.start,
            end: c.end,
            text: text[c.start..c.end].to_owned(),
            value: c.value,
            source: c.source,
            confidence: c.confidence,
        })
        .collect()
}

#[cfg(test)]
mod tests;
