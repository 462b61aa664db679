//! Money amounts: "$700", "999.43 euros", "81.63€", "1.234,50 EUR",
//! "two hundred pounds", "50 quid", "1.5k", "a tenner", and bare numbers
//! where the sentence is about paying ("pay Liam 30").

use super::numbers::{Decimal, multiplier, parse_number_words, parse_numeral};
use super::tokens::{Kind, Tok};
use super::{Amount, Candidate, EntityKind, EntityValue, Source};

/// ISO 4217 codes recognised in text, with their minor-unit exponent.
pub const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TRY", 2),
    ("UAH", 2),
    ("USD", 2),
    ("ZAR", 2),
];

/// Codes also accepted in lower case: none of them is an English word.
const LOWERCASE_CODES: &[&str] = &[
    "gbp", "eur", "usd", "chf", "cad", "aud", "jpy", "inr", "sek", "nok", "dkk", "pln", "nzd",
    "hkd", "sgd", "zar", "czk", "huf",
];

/// The minor-unit exponent of an ISO 4217 code we know.
pub fn minor_exponent(code: &str) -> Option<u32> {
    CURRENCIES.iter().find(|(c, _)| *c == code).map(|(_, e)| *e)
}

fn symbol_currency(c: &str) -> Option<&'static str> {
    Some(match c {
        "£" => "GBP",
        "€" => "EUR",
        "$" => "USD",
        "¥" => "JPY",
        "₹" => "INR",
        "₩" => "KRW",
        "₺" => "TRY",
        "₪" => "ILS",
        "₦" => "NGN",
        "₱" => "PHP",
        "₴" => "UAH",
        _ => return None,
    })
}

fn code_currency(t: &Tok<'_>) -> Option<&'static str> {
    if t.kind != Kind::Word || t.text.len() != 3 {
        return None;
    }
    let upper = t.text.to_ascii_uppercase();
    let known = CURRENCIES
        .iter()
        .find(|(c, _)| *c == upper)
        .map(|(c, _)| *c)?;
    (t.text == upper || LOWERCASE_CODES.contains(&t.lower.as_str())).then_some(known)
}

/// A currency written as a word after the number, with the power of ten
/// the number is divided by (pence and cents are minor units).
fn word_currency(w: &str) -> Option<(Option<&'static str>, u32)> {
    Some(match w {
        "pound" | "pounds" | "quid" | "sterling" | "gbp" => (Some("GBP"), 0),
        "euro" | "euros" => (Some("EUR"), 0),
        "dollar" | "dollars" | "buck" | "bucks" => (Some("USD"), 0),
        "yen" => (Some("JPY"), 0),
        "franc" | "francs" => (Some("CHF"), 0),
        "rupee" | "rupees" => (Some("INR"), 0),
        "pence" | "p" => (Some("GBP"), 2),
        "cent" | "cents" => (None, 2),
        _ => return None,
    })
}

/// Words after which a bare number is probably money.
const MONEY_CONTEXT: &[&str] = &[
    "pay",
    "paid",
    "paying",
    "send",
    "sent",
    "sending",
    "transfer",
    "transferred",
    "transferring",
    "move",
    "moved",
    "xfer",
    "wire",
    "wired",
    "give",
    "lend",
    "owe",
    "owes",
    "owed",
    "spend",
    "spent",
    "cost",
    "costs",
    "charge",
    "charged",
    "withdraw",
    "withdrew",
    "withdrawn",
    "deposit",
    "deposited",
    "put",
    "refund",
    "refunded",
    "amount",
    "total",
    "payment",
    "sum",
    "limit",
    "balance",
    "make",
    "it",
    "gave",
    "given",
    "received",
    "receive",
    "earn",
    "earned",
    "salary",
    "wage",
    "wages",
    "rent",
    "bill",
    "fee",
    "fees",
    "price",
    "worth",
    "instead",
    "only",
    "withdrawal",
    "repay",
    "repayment",
    "transfers",
    "transaction",
];

/// Words that make a following or preceding number something other than money.
const NOT_MONEY_AFTER: &[&str] = &[
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "hour",
    "hours",
    "minute",
    "minutes",
    "min",
    "mins",
    "times",
    "time",
    "percent",
    "am",
    "pm",
    "st",
    "nd",
    "rd",
    "th",
    "digits",
    "digit",
    "transactions",
    "payments",
    "people",
    "items",
    "of",
];
const NOT_MONEY_BEFORE: &[&str] = &[
    "ending",
    "number",
    "no",
    "card",
    "account",
    "acct",
    "code",
    "the",
    "last",
    "pin",
    "extension",
    "ref",
    "reference",
    "id",
    "top",
    "first",
    "next",
    "past",
    "in",
    "on",
    "at",
    "since",
    "until",
];

pub(crate) fn extract(toks: &[Tok<'_>], out: &mut Vec<Candidate>) {
    let mut i = 0;
    while i < toks.len() {
        if let Some(c) = at(toks, i) {
            out.push(c);
        }
        i += 1;
    }
}

/// The longest amount starting at token `i`.
fn at(toks: &[Tok<'_>], i: usize) -> Option<Candidate> {
    let t = &toks[i];
    // Slang units on their own: "a tenner", "a fiver", "a grand".
    if t.is_any(&["a", "one"])
        && let Some(n) = toks.get(i + 1)
    {
        let slang = match n.lower.as_str() {
            "tenner" => Some(("10", Some("GBP"))),
            "fiver" => Some(("5", Some("GBP"))),
            "grand" => Some(("1000", None)),
            _ => None,
        };
        if let Some((v, cur)) = slang {
            let value = Decimal::parse_plain(v)?;
            return Some(candidate(toks, i, i + 2, value, cur, 0.95));
        }
    }
    // Prefix currency: "£50", "EUR 1.234,50", "US$ 20".
    let mut j = i;
    let mut prefix: Option<&'static str> = None;
    if t.kind == Kind::Sym {
        prefix = symbol_currency(t.text);
        j += 1;
    } else if let Some(code) = code_currency(t) {
        prefix = Some(code);
        j += 1;
        // "US$", "A$": the letters are part of a dollar symbol.
    } else if t.kind == Kind::Word && toks.get(i + 1).is_some_and(|n| n.glued && n.sym('$')) {
        prefix = match t.lower.as_str() {
            "us" => Some("USD"),
            "a" | "au" => Some("AUD"),
            "c" | "ca" => Some("CAD"),
            "nz" => Some("NZD"),
            "hk" => Some("HKD"),
            "s" => Some("SGD"),
            _ => None,
        };
        j += 2;
    }
    if prefix.is_none() && j != i {
        return None;
    }
    let (value, mut j, from_words) = number(toks, j)?;
    let mut value = value;
    // "1 250 euros": a space groups thousands only when a currency follows.
    if let (Some(a), Some(b), Some(c)) = (toks.get(j - 1), toks.get(j), toks.get(j + 1)) {
        let short =
            a.kind == Kind::Num && a.text.len() <= 3 && a.text.bytes().all(|d| d.is_ascii_digit());
        let group = b.kind == Kind::Num
            && !b.glued
            && b.text.len() == 3
            && b.text.bytes().all(|d| d.is_ascii_digit());
        let currency_after = (c.kind == Kind::Sym && symbol_currency(c.text).is_some())
            || code_currency(c).is_some()
            || word_currency(&c.lower).is_some_and(|_| c.lower != "p");
        if short && group && !from_words && (currency_after || prefix.is_some()) {
            value = Decimal::parse_plain(&format!("{}{}", a.text, b.text))?;
            j += 1;
        }
    }
    // Multiplier: glued "k"/"m"/"bn", or a word after.
    if let Some(m) = toks.get(j) {
        let word = m.kind == Kind::Word;
        let w = m.lower.as_str();
        let allowed = match w {
            "k" | "grand" => true,
            "m" | "mn" | "bn" => m.glued && prefix.is_some(),
            "thousand" | "million" | "billion" => !from_words,
            _ => false,
        };
        if word
            && allowed
            && let Some(e) = multiplier(w)
        {
            value = value.shift(e)?;
            j += 1;
        }
    }
    if let Some(cur) = prefix {
        // A code after a symbol amount repeats it ("$20 USD"): take it in.
        if toks.get(j).and_then(code_currency) == Some(cur) {
            j += 1;
        }
        return Some(candidate(toks, i, j, value, Some(cur), 0.99));
    }
    // Suffix currency: symbol, code or word.
    if let Some(s) = toks.get(j) {
        if s.kind == Kind::Sym
            && let Some(cur) = symbol_currency(s.text)
        {
            return Some(candidate(toks, i, j + 1, value, Some(cur), 0.99));
        }
        if let Some(cur) = code_currency(s) {
            return Some(candidate(toks, i, j + 1, value, Some(cur), 0.99));
        }
        if s.kind == Kind::Word
            && let Some((cur, minor)) = word_currency(&s.lower)
        {
            // "p" only glued ("50p"), never "5 p".
            if s.lower == "p" && !s.glued {
                return None;
            }
            let mut end = j + 1;
            // "pounds sterling"
            if s.lower.starts_with("pound") && toks.get(end).is_some_and(|n| n.is("sterling")) {
                end += 1;
            }
            let v = value.unshift(minor)?;
            return Some(candidate(toks, i, end, v, cur, 0.97));
        }
    }
    if toks[j - 1].is("grand") || toks[j - 1].is("k") {
        // "5 grand", "2k": money without a currency.
        return Some(candidate(toks, i, j, value, None, 0.9));
    }
    if from_words {
        return None;
    }
    bare(toks, i, j, value)
}

/// A numeral or number words at `j`: (value, next token, was words).
fn number(toks: &[Tok<'_>], j: usize) -> Option<(Decimal, usize, bool)> {
    let t = toks.get(j)?;
    match t.kind {
        Kind::Num => {
            // "12.34.56" or "01/02": not an amount numeral when a date-like
            // separator follows glued.
            if toks
                .get(j + 1)
                .is_some_and(|n| n.glued && (n.sym('/') || n.sym(':')))
            {
                return None;
            }
            if j > 0
                && toks[j].glued
                && (toks[j - 1].sym('/') || toks[j - 1].sym(':') || toks[j - 1].sym('-'))
            {
                return None;
            }
            Some((parse_numeral(t.text)?, j + 1, false))
        }
        Kind::Word => {
            let (n, used) = parse_number_words(toks, j)?;
            Some((Decimal::integer(u128::from(n))?, j + used, true))
        }
        Kind::Sym => None,
    }
}

/// A number with no currency: money only in a payment sentence.
fn bare(toks: &[Tok<'_>], i: usize, j: usize, value: Decimal) -> Option<Candidate> {
    let t = &toks[i];
    if j != i + 1 || t.kind != Kind::Num {
        return None;
    }
    let next = toks.get(j);
    if next.is_some_and(|n| {
        n.is_any(NOT_MONEY_AFTER) || n.sym('%') || n.sym('/') || (n.sym('-') && n.glued)
    }) {
        return None;
    }
    // Digits glued to letters ("4th", "x1234") are not amounts.
    if next.is_some_and(|n| n.glued && n.kind == Kind::Word)
        || (t.glued && i > 0 && toks[i - 1].kind == Kind::Word)
    {
        return None;
    }
    if i > 0 && toks[i - 1].is_any(NOT_MONEY_BEFORE) {
        return None;
    }
    let digits = t.text.bytes().filter(u8::is_ascii_digit).count();
    let two_decimals = value.scale() == 2;
    if digits > 9
        || t.text.starts_with('0') && !t.text.starts_with("0.") && !t.text.starts_with("0,")
    {
        return None;
    }
    let context = toks[i.saturating_sub(3)..i]
        .iter()
        .any(|p| p.is_any(MONEY_CONTEXT));
    // "2,300": thousands grouping is how people write money.
    if !context && value.scale() == 0 && t.text.contains(',') && t.text.len() >= 5 {
        return Some(candidate(toks, i, j, value, None, 0.7));
    }
    if context {
        return Some(candidate(toks, i, j, value, None, 0.75));
    }
    two_decimals.then(|| candidate(toks, i, j, value, None, 0.7))
}

fn candidate(
    toks: &[Tok<'_>],
    i: usize,
    j: usize,
    value: Decimal,
    currency: Option<&'static str>,
    confidence: f32,
) -> Candidate {
    Candidate {
        kind: EntityKind::Amount,
        start: toks[i].start,
        end: toks[j - 1].end,
        value: EntityValue::Amount(Amount {
            amount: value,
            currency: currency.map(str::to_owned),
        }),
        source: Source::Rules,
        confidence,
    }
}
