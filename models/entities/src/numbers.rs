//! Exact decimal numbers: numerals with either grouping convention
//! ("1,234.50", "1.234,50"), multipliers ("1.5k") and number words
//! ("two hundred and fifty"). Never floating point.

use std::fmt;

use super::tokens::{Kind, Tok};

/// Longest mantissa kept: beyond this a "number" is not an amount anyone
/// means, and refusing it keeps arithmetic far from overflow.
const MAX_DIGITS: usize = 24;

/// `mantissa × 10^-scale`, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    mantissa: u128,
    scale: u32,
}

impl Decimal {
    pub fn new(mantissa: u128, scale: u32) -> Option<Decimal> {
        (scale <= 18 && mantissa < 10u128.pow(MAX_DIGITS as u32))
            .then_some(Decimal { mantissa, scale })
    }
    pub fn integer(n: u128) -> Option<Decimal> {
        Decimal::new(n, 0)
    }
    pub fn mantissa(self) -> u128 {
        self.mantissa
    }
    pub fn scale(self) -> u32 {
        self.scale
    }
    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// `self × 10^exp`, dropping fractional zeros the multiplication made
    /// redundant: 1.5 × 10^3 = 1500, not 1500.0.
    pub fn shift(self, exp: u32) -> Option<Decimal> {
        let mut m = self.mantissa;
        let mut s = self.scale;
        let mut e = exp;
        while e > 0 && s > 0 {
            s -= 1;
            e -= 1;
        }
        m = m.checked_mul(10u128.checked_pow(e)?)?;
        Decimal::new(m, s)
    }

    /// `self × 10^-exp` (pence to pounds).
    pub fn unshift(self, exp: u32) -> Option<Decimal> {
        Decimal::new(self.mantissa, self.scale + exp)
    }

    /// The same value with trailing fractional zeros removed.
    pub fn normalized(self) -> Decimal {
        let mut d = self;
        while d.scale > 0 && d.mantissa.is_multiple_of(10) {
            d.mantissa /= 10;
            d.scale -= 1;
        }
        d
    }

    /// The value in units of `10^-exponent` (minor units), if exact.
    pub fn to_minor_units(self, exponent: u32) -> Option<i64> {
        let d = self.normalized();
        if d.scale > exponent {
            return None;
        }
        let m = d
            .mantissa
            .checked_mul(10u128.checked_pow(exponent - d.scale)?)?;
        i64::try_from(m).ok()
    }

    /// Parses the canonical form written by `Display` ("1234.50").
    pub fn parse_plain(s: &str) -> Option<Decimal> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || s.ends_with('.')
        {
            return None;
        }
        if int.len() + frac.len() > MAX_DIGITS {
            return None;
        }
        let m: u128 = format!("{int}{frac}").parse().ok()?;
        Decimal::new(m, u32::try_from(frac.len()).ok()?)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return f.write_str(&digits);
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{int}.{frac}")
    }
}

/// Parses a numeral token ("1,234.50", "1.234,50", "999,43", "1.5").
///
/// One separator followed by exactly three digits groups thousands
/// ("1,234", "1.234"), unless the integer part is 0 ("0.125"); followed by
/// one or two digits it is the decimal point ("999,43"). With both kinds,
/// the last one is the decimal point and the other must group by threes.
pub fn parse_numeral(s: &str) -> Option<Decimal> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b',')
    {
        return None;
    }
    let seps: Vec<(usize, u8)> = s
        .bytes()
        .enumerate()
        .filter(|(_, b)| !b.is_ascii_digit())
        .collect();
    let (int_part, frac_part, group_sep): (&str, &str, Option<u8>) = match seps.as_slice() {
        [] => (s, "", None),
        [(i, sep)] => {
            let after = &s[i + 1..];
            if after.len() == 3 && &s[..*i] != "0" {
                (s, "", Some(*sep))
            } else if after.len() <= 2 || (*sep == b'.' && !after.is_empty()) {
                (&s[..*i], after, None)
            } else {
                return None;
            }
        }
        many => {
            let (last_i, last_sep) = many[many.len() - 1];
            let all_same = many.iter().all(|(_, b)| *b == last_sep);
            if all_same {
                // 1,234,567 or 1.234.567: grouping only.
                (s, "", Some(last_sep))
            } else {
                let group = many[0].1;
                if many[..many.len() - 1].iter().any(|(_, b)| *b != group) {
                    return None;
                }
                (&s[..last_i], &s[last_i + 1..], Some(group))
            }
        }
    };
    let int_digits: String = match group_sep {
        None => int_part.to_owned(),
        Some(g) => {
            let groups: Vec<&str> = int_part.split(char::from(g)).collect();
            let first_ok = (1..=3).contains(&groups[0].len());
            let rest_ok = groups[1..].iter().all(|g| g.len() == 3);
            if !first_ok
                || !rest_ok
                || groups
                    .iter()
                    .any(|g| !g.bytes().all(|b| b.is_ascii_digit()))
            {
                return None;
            }
            groups.concat()
        }
    };
    if int_digits.is_empty() || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if int_digits.len() + frac_part.len() > MAX_DIGITS {
        return None;
    }
    let m: u128 = format!("{int_digits}{frac_part}").parse().ok()?;
    Decimal::new(m, u32::try_from(frac_part.len()).ok()?)
}

fn unit_word(w: &str) -> Option<u64> {
    Some(match w {
        "zero" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        _ => return None,
    })
}

fn tens_word(w: &str) -> Option<u64> {
    Some(match w {
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

/// A multiplier word or suffix: "k", "thousand", "m", "million", "bn".
pub fn multiplier(w: &str) -> Option<u32> {
    Some(match w {
        "hundred" => 2,
        "k" | "thousand" | "grand" => 3,
        "m" | "mn" | "million" | "mil" => 6,
        "bn" | "billion" => 9,
        _ => return None,
    })
}

/// Number words starting at `toks[i]`: "two hundred and fifty",
/// "twenty-five", "a thousand". Returns the value and the number of tokens
/// used. "a"/"an" count only before "hundred", "thousand", "million" or
/// "billion".
pub(crate) fn parse_number_words(toks: &[Tok<'_>], i: usize) -> Option<(u64, usize)> {
    let big = |w: &str| match w {
        "thousand" => Some(3),
        "million" => Some(6),
        "billion" => Some(9),
        _ => None,
    };
    let word_at = |j: usize| {
        toks.get(j)
            .filter(|t| t.kind == Kind::Word)
            .map(|t| t.lower.as_str())
    };
    let mut total: u64 = 0;
    let mut current: u64 = 0;
    let mut any = false;
    let mut j = i;
    let mut used = 0;
    while let Some(t) = toks.get(j) {
        let w = t.lower.as_str();
        let sub = current % 100;
        if t.sym('-') {
            // "twenty-five": a hyphen glued on both sides, only after tens.
            let unit = toks
                .get(j + 1)
                .filter(|n| t.glued && n.glued)
                .and_then(|n| unit_word(&n.lower))
                .filter(|u| (1..=9).contains(u));
            match unit {
                Some(u) if any && sub >= 20 && sub.is_multiple_of(10) => {
                    current += u;
                    j += 2;
                    used = j - i;
                    continue;
                }
                _ => break,
            }
        }
        if t.kind != Kind::Word {
            break;
        }
        if let Some(u) = unit_word(w) {
            let fits = sub == 0 || (sub >= 20 && sub.is_multiple_of(10) && (1..=9).contains(&u));
            if !fits {
                break;
            }
            current += u;
        } else if let Some(t10) = tens_word(w) {
            if sub != 0 {
                break;
            }
            current += t10;
        } else if (w == "a" || w == "an") && !any {
            if !word_at(j + 1).is_some_and(|n| n == "hundred" || big(n).is_some()) {
                break;
            }
            current = 1;
        } else if w == "hundred" && any && (1..=99).contains(&current) {
            current *= 100;
        } else if let Some(e) = big(w).filter(|_| any && current > 0) {
            total = total.checked_add(current.checked_mul(10u64.pow(e))?)?;
            current = 0;
        } else if w == "and" && any && sub == 0 {
            let more =
                word_at(j + 1).is_some_and(|n| unit_word(n).is_some() || tens_word(n).is_some());
            if !more {
                break;
            }
            j += 1;
            continue;
        } else {
            break;
        }
        any = true;
        j += 1;
        used = j - i;
    }
    if used == 0 {
        return None;
    }
    Some((total.checked_add(current)?, used))
}

#[cfg(test)]
mod tests {
    use super::super::tokens::tokenize;
    use super::*;

    #[test]
    fn numerals_with_either_convention() {
        let p = |s: &str| parse_numeral(s).map(|d| d.to_string());
        assert_eq!(p("700").as_deref(), Some("700"));
        assert_eq!(p("999.43").as_deref(), Some("999.43"));
        assert_eq!(p("1,234.50").as_deref(), Some("1234.50"));
        assert_eq!(p("1.234,50").as_deref(), Some("1234.50"));
        assert_eq!(p("999,43").as_deref(), Some("999.43"));
        assert_eq!(p("1,234").as_deref(), Some("1234"));
        assert_eq!(p("1.234.567").as_deref(), Some("1234567"));
        assert_eq!(p("0.125").as_deref(), Some("0.125"));
        assert_eq!(p("1.5").as_deref(), Some("1.5"));
        assert_eq!(p("12,3456"), None);
        assert_eq!(p("1,23,456"), None);
        assert_eq!(p("1.234.56,7"), None);
    }

    #[test]
    fn decimal_arithmetic_is_exact() {
        let d = parse_numeral("1.5").expect("valid");
        assert_eq!(d.shift(3).map(|d| d.to_string()).as_deref(), Some("1500"));
        let p = Decimal::integer(50)
            .and_then(|d| d.unshift(2))
            .expect("valid");
        assert_eq!(p.to_string(), "0.50");
        assert_eq!(p.to_minor_units(2), Some(50));
        assert_eq!(
            Decimal::parse_plain("10.005").and_then(|d| d.to_minor_units(2)),
            None
        );
        assert_eq!(Decimal::parse_plain("1234.50"), parse_numeral("1,234.50"));
    }

    #[test]
    fn number_words() {
        let w = |s: &str| {
            let t = tokenize(s);
            parse_number_words(&t, 0)
        };
        assert_eq!(w("two hundred pounds"), Some((200, 2)));
        assert_eq!(w("twenty-five quid"), Some((25, 3)));
        assert_eq!(w("one thousand two hundred and fifty"), Some((1250, 6)));
        assert_eq!(w("a thousand"), Some((1000, 2)));
        assert_eq!(w("fifty"), Some((50, 1)));
        assert_eq!(w("a few"), None);
        assert_eq!(w("ninety nine"), Some((99, 2)));
        assert_eq!(w("three million"), Some((3_000_000, 2)));
    }
}
