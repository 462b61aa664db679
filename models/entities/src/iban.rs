//! IBANs (ISO 13616): country code, two check digits and a BBAN whose
//! length and character classes are fixed per country; the check digits
//! make the whole number ≡ 1 (mod 97) (ISO 7064 MOD 97-10).
//!
//! MOD 97-10 catches every single substitution of a digit by a digit or a
//! letter by a letter. A digit written where the country's format wants a
//! letter (or the reverse) is caught by the format. Only a class-changing
//! substitution inside an alphanumeric BBAN part can slip past the
//! checksum (about 1 in 97); no IBAN check can do better.

use std::fmt;

/// Why an IBAN-shaped string is not a valid IBAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IbanProblem {
    UnknownCountry,
    Length,
    Format,
    Checksum,
}

impl fmt::Display for IbanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IbanProblem::UnknownCountry => "unknown country code",
            IbanProblem::Length => "wrong length for the country",
            IbanProblem::Format => "characters do not fit the country's format",
            IbanProblem::Checksum => "check digits do not match",
        })
    }
}

/// BBAN formats from the IBAN registry: `n` digits, `a` upper-case letters,
/// `c` either, each with its count.
const FORMATS: &[(&str, &str)] = &[
    ("AD", "8n12c"),
    ("AE", "3n16n"),
    ("AL", "8n16c"),
    ("AT", "16n"),
    ("AZ", "4a20c"),
    ("BA", "16n"),
    ("BE", "12n"),
    ("BG", "4a6n8c"),
    ("BH", "4a14c"),
    ("BR", "23n1a1c"),
    ("CH", "5n12c"),
    ("CR", "18n"),
    ("CY", "8n16c"),
    ("CZ", "20n"),
    ("DE", "18n"),
    ("DK", "14n"),
    ("DO", "4c20n"),
    ("EE", "16n"),
    ("EG", "25n"),
    ("ES", "20n"),
    ("FI", "14n"),
    ("FO", "14n"),
    ("FR", "10n11c2n"),
    ("GB", "4a14n"),
    ("GE", "2a16n"),
    ("GI", "4a15c"),
    ("GL", "14n"),
    ("GR", "7n16c"),
    ("GT", "4c20c"),
    ("HR", "17n"),
    ("HU", "24n"),
    ("IE", "4a14n"),
    ("IL", "19n"),
    ("IS", "22n"),
    ("IT", "1a10n12c"),
    ("JO", "4a4n18c"),
    ("KW", "4a22c"),
    ("KZ", "3n13c"),
    ("LB", "4n20c"),
    ("LI", "5n12c"),
    ("LT", "16n"),
    ("LU", "3n13c"),
    ("LV", "4a13c"),
    ("MC", "10n11c2n"),
    ("MD", "2c18c"),
    ("ME", "18n"),
    ("MK", "3n10c2n"),
    ("MR", "23n"),
    ("MT", "4a5n18c"),
    ("MU", "4a19n3a"),
    ("NL", "4a10n"),
    ("NO", "11n"),
    ("PK", "4a16c"),
    ("PL", "24n"),
    ("PS", "4a21c"),
    ("PT", "21n"),
    ("QA", "4a21c"),
    ("RO", "4a16c"),
    ("RS", "18n"),
    ("SA", "2n18c"),
    ("SE", "20n"),
    ("SI", "15n"),
    ("SK", "20n"),
    ("SM", "1a10n12c"),
    ("TN", "20n"),
    ("TR", "5n17c"),
    ("UA", "6n19c"),
    ("VG", "4a16n"),
    ("XK", "16n"),
];

fn format_of(country: &str) -> Option<Vec<(u8, usize)>> {
    let spec = FORMATS.iter().find(|(c, _)| *c == country)?.1;
    let mut out = Vec::new();
    let mut n = 0usize;
    for b in spec.bytes() {
        if b.is_ascii_digit() {
            n = n * 10 + usize::from(b - b'0');
        } else {
            out.push((b, n));
            n = 0;
        }
    }
    Some(out)
}

/// The length of a country's IBANs, if we know the country.
pub fn iban_length(country: &str) -> Option<usize> {
    format_of(country).map(|f| 4 + f.iter().map(|(_, n)| n).sum::<usize>())
}

/// `s` (spaces removed, upper case) mod 97 after moving the first four
/// characters to the end and letters to 10..35.
fn mod97(s: &str) -> Option<u32> {
    let (head, tail) = s.split_at(4.min(s.len()));
    let mut r: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = c.to_digit(36)?;
        r = if v < 10 {
            (r * 10 + v) % 97
        } else {
            (r * 100 + v) % 97
        };
    }
    Some(r)
}

/// Checks a compact, upper-case IBAN.
pub fn validate(compact: &str) -> Result<(), IbanProblem> {
    if compact.len() < 5
        || !compact
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(IbanProblem::Format);
    }
    let country = &compact[..2];
    let Some(format) = format_of(country) else {
        return Err(IbanProblem::UnknownCountry);
    };
    if !compact[..2].bytes().all(|b| b.is_ascii_uppercase())
        || !compact[2..4].bytes().all(|b| b.is_ascii_digit())
    {
        return Err(IbanProblem::Format);
    }
    if iban_length(country) != Some(compact.len()) {
        return Err(IbanProblem::Length);
    }
    let mut pos = 4;
    for (class, n) in format {
        let part = &compact.as_bytes()[pos..pos + n];
        let fits = match class {
            b'n' => part.iter().all(u8::is_ascii_digit),
            b'a' => part.iter().all(u8::is_ascii_uppercase),
            _ => true,
        };
        if !fits {
            return Err(IbanProblem::Format);
        }
        pos += n;
    }
    if mod97(compact) != Some(1) {
        return Err(IbanProblem::Checksum);
    }
    Ok(())
}

/// Computes the check digits for a country and BBAN (used by tests and by
/// anyone generating demo data).
pub fn with_check_digits(country: &str, bban: &str) -> Option<String> {
    let r = mod97(&format!("{country}00{bban}"))?;
    Some(format!("{country}{:02}{bban}", 98 - r))
}

/// An IBAN-shaped run in the text: byte span, compact upper-case form.
pub(crate) struct Found {
    pub start: usize,
    pub end: usize,
    pub compact: String,
    pub problem: Option<IbanProblem>,
}

/// Finds IBAN-shaped runs: two letters, two digits, then groups of letters
/// and digits separated by single spaces or hyphens. Of the possible ends
/// the longest valid one wins; if none is valid, the one with the
/// country's length (or the whole compact run) is reported as invalid.
pub(crate) fn find(text: &str) -> Vec<Found> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= b.len() {
        let word_start = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let shape = b[i].is_ascii_alphabetic()
            && b[i + 1].is_ascii_alphabetic()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit();
        if !word_start || !shape {
            i += 1;
            continue;
        }
        // Group boundaries: (byte end of group, compact length so far).
        let mut ends: Vec<(usize, usize)> = Vec::new();
        let mut compact = String::new();
        let mut j = i;
        loop {
            let g = j;
            while j < b.len() && b[j].is_ascii_alphanumeric() {
                j += 1;
            }
            if j == g {
                break;
            }
            // Later groups must be short (written in fours) and not words.
            let group = &text[g..j];
            if g != i
                && (group.len() > 4 && compact.len() >= 4
                    || group.bytes().all(|c| c.is_ascii_alphabetic()) && group.len() > 4)
            {
                break;
            }
            compact.push_str(&group.to_ascii_uppercase());
            ends.push((j, compact.len()));
            if compact.len() > 34 {
                break;
            }
            if j + 1 < b.len() && (b[j] == b' ' || b[j] == b'-') && b[j + 1].is_ascii_alphanumeric()
            {
                j += 1;
            } else {
                break;
            }
        }
        let best = ends
            .iter()
            .rev()
            .find(|(_, n)| validate(&compact[..*n]).is_ok());
        let chosen = match best {
            Some(&(end, n)) => Some((end, n, None)),
            None => {
                let want = iban_length(&compact[..2]);
                let by_len = ends.iter().find(|(_, n)| Some(*n) == want);
                match (by_len, want) {
                    (Some(&(end, n)), _) => Some((end, n, validate(&compact[..n]).err())),
                    // Long enough to be meant as an IBAN: report it.
                    _ => ends
                        .iter()
                        .rev()
                        .find(|(_, n)| (15..=34).contains(n))
                        .map(|&(end, n)| (end, n, validate(&compact[..n]).err())),
                }
            }
        };
        match chosen {
            Some((end, n, problem)) => {
                out.push(Found {
                    start: i,
                    end,
                    compact: compact[..n].to_owned(),
                    problem,
                });
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_good_ibans_validate() {
        for s in [
            "GB82WEST12345698765432",
            "NL91ABNA0417164300",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
            "BE68539007547034",
        ] {
            assert_eq!(validate(s), Ok(()), "{s}");
        }
        assert_eq!(
            validate("GB82WEST12345698765433"),
            Err(IbanProblem::Checksum)
        );
        assert_eq!(validate("GB82WEST1234569876543"), Err(IbanProblem::Length));
        assert_eq!(
            validate("XX82WEST12345698765432"),
            Err(IbanProblem::UnknownCountry)
        );
        assert_eq!(validate("GB82WE5T12345698765432"), Err(IbanProblem::Format));
        assert_eq!(
            with_check_digits("GB", "WEST12345698765432").as_deref(),
            Some("GB82WEST12345698765432")
        );
    }

    #[test]
    fn finds_spaced_and_compact_ibans_in_text() {
        let f = find("send it to GB82 WEST 1234 5698 7654 32 please");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].compact, "GB82WEST12345698765432");
        assert_eq!(f[0].problem, None);
        let f = find("iban nl91abna0417164300.");
        assert_eq!(f[0].compact, "NL91ABNA0417164300");
        let f = find("to GB82 WEST 1234 5698 7654 33 now");
        assert_eq!(f[0].problem, Some(IbanProblem::Checksum));
        assert!(find("flight BA12 to Rome").is_empty());
    }
}
