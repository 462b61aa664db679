//! Payees: spans of the text that match one of the customer's saved payees
//! (passed in by the caller), tolerant of typos and case, with characters
//! from other scripts that look like Latin letters ("Тоm" with a Cyrillic
//! Т) flagged: a payee name that only matches after folding lookalikes is
//! reported with `confusable: true` and never with full confidence.

use unicode_normalization::UnicodeNormalization;

use super::tokens::{Kind, Tok};
use super::{Candidate, Context, EntityKind, EntityValue, PayeeMatch, Source};

/// Lowest similarity (0–1) accepted as a match.
const MIN_SIMILARITY: f64 = 0.8;

/// Latin lookalikes from other scripts (Cyrillic, Greek) and compatibility
/// forms, folded to the Latin letter they imitate.
fn lookalike(c: char) -> Option<char> {
    Some(match c {
        'а' | 'α' => 'a',
        'в' | 'β' => 'b',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ε' => 'e',
        'һ' => 'h',
        'і' | 'ι' | 'ı' => 'i',
        'ј' => 'j',
        'к' | 'κ' => 'k',
        'ℓ' => 'l',
        'м' => 'm',
        'н' | 'η' => 'n',
        'о' | 'ο' | 'σ' => 'o',
        'р' | 'ρ' => 'p',
        'ԛ' => 'q',
        'г' => 'r',
        'ѕ' => 's',
        'т' | 'τ' => 't',
        'υ' | 'ц' => 'u',
        'ν' => 'v',
        'ԝ' | 'ω' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'γ' => 'y',
        'ζ' => 'z',
        'А' | 'Α' => 'a',
        'В' | 'Β' => 'b',
        'С' => 'c',
        'Е' | 'Ε' => 'e',
        'Н' | 'Η' => 'h',
        'І' | 'Ι' => 'i',
        'Ј' => 'j',
        'К' | 'Κ' => 'k',
        'М' | 'Μ' => 'm',
        'Ν' => 'n',
        'О' | 'Ο' => 'o',
        'Р' | 'Ρ' => 'p',
        'Ѕ' => 's',
        'Т' | 'Τ' => 't',
        'Υ' | 'Ү' => 'y',
        'Х' | 'Χ' => 'x',
        'Ζ' => 'z',
        _ => return None,
    })
}

/// Lower case, accents removed (NFKD without combining marks, which also
/// folds full-width letters), lookalikes folded. Returns the skeleton and
/// whether any lookalike was folded.
pub fn skeleton(s: &str) -> (String, bool) {
    let mut out = String::with_capacity(s.len());
    let mut folded = false;
    for c in s.nfkd() {
        if unicode_normalization::char::is_combining_mark(c) {
            continue;
        }
        if let Some(l) = lookalike(c) {
            folded = true;
            out.push(l);
        } else {
            out.extend(c.to_lowercase());
        }
    }
    (out, folded)
}

struct Name {
    payee: usize,
    words: Vec<String>,
}

pub(crate) fn extract(toks: &[Tok<'_>], text: &str, ctx: &Context, out: &mut Vec<Candidate>) {
    if ctx.payees.is_empty() {
        return;
    }
    let mut names = Vec::new();
    for (idx, p) in ctx.payees.iter().enumerate() {
        for n in std::iter::once(&p.name).chain(p.aliases.iter()) {
            let words: Vec<String> = n
                .split_whitespace()
                .map(|w| skeleton(w).0)
                .filter(|w| !w.is_empty())
                .collect();
            if !words.is_empty() {
                names.push(Name { payee: idx, words });
            }
        }
    }
    // First names that belong to one payee only may stand for the payee.
    let first_name_owner = |first: &str| {
        let owners: Vec<usize> = names
            .iter()
            .filter(|n| n.words.len() > 1 && n.words[0] == first)
            .map(|n| n.payee)
            .collect();
        (owners.len() == 1 || owners.windows(2).all(|w| w[0] == w[1]))
            .then(|| owners.first().copied())
            .flatten()
    };
    for i in 0..toks.len() {
        if toks[i].kind != Kind::Word {
            continue;
        }
        let mut best: Option<(f64, usize, usize, bool)> = None; // (score, payee, end token, folded)
        for name in &names {
            let len = name.words.len();
            let Some(window) = toks.get(i..i + len) else {
                continue;
            };
            if window.iter().any(|t| t.kind != Kind::Word) {
                continue;
            }
            let raw = &text[window[0].start..window[len - 1].end];
            let (sk, folded) = skeleton(raw);
            let target = name.words.join(" ");
            let sk = sk.split_whitespace().collect::<Vec<_>>().join(" ");
            let score = similarity(&sk, &target);
            if score >= MIN_SIMILARITY
                && best.is_none_or(|b| score > b.0 || (score == b.0 && i + len > b.2))
            {
                best = Some((score, name.payee, i + len, folded));
            }
        }
        if best.is_none() {
            let (sk, folded) = skeleton(toks[i].text);
            if let Some(p) = first_name_owner(&sk) {
                best = Some((0.9, p, i + 1, folded));
            }
        }
        if let Some((score, payee, end, folded)) = best {
            let p = &ctx.payees[payee];
            let confidence = if folded { 0.3 } else { score as f32 };
            out.push(Candidate {
                kind: EntityKind::Payee,
                start: toks[i].start,
                end: toks[end - 1].end,
                value: EntityValue::Payee(PayeeMatch {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    score: (score * 1000.0).round() / 1000.0,
                    confusable: folded,
                }),
                source: Source::SavedPayees,
                confidence,
            });
        }
    }
}

/// 1 for equal strings; short names must match exactly (one typo in
/// "Tom" is another name).
fn similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    if b.chars().count() <= 4 || a.chars().count() <= 4 {
        return 0.0;
    }
    strsim::normalized_damerau_levenshtein(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeleton_folds_lookalikes_and_accents() {
        assert_eq!(skeleton("Zoë"), ("zoe".to_owned(), false));
        assert_eq!(skeleton("Тоm"), ("tom".to_owned(), true));
        assert_eq!(skeleton("ＡＬＩＣＥ"), ("alice".to_owned(), false));
    }
}
