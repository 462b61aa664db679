//! Customer text at the service boundary: validation and card-number masking.
//!
//! [`validate`] checks a customer message before anything else sees it: it
//! must not be empty, must fit a byte budget and must not carry control
//! characters (which could forge log lines or confuse terminals). Errors never
//! echo the text itself.
//!
//! [`mask_card_numbers`] hides payment card numbers (PANs) before text is
//! logged, stored or shown to staff. A card number is 13 to 19 digits that
//! pass the Luhn check, written plain or with single spaces, hyphens, dots or
//! no-break spaces between digits. Each one found is replaced, separators
//! included, by `[card ending NNNN]`, which keeps only the last four digits.
//!
//! The scanner works on runs: maximal stretches of ASCII digits joined by
//! single separators that start and end with a digit. A run directly touching
//! a letter or other alphanumeric character (`ref4111…`, `4111…x`) is part of
//! an identifier and is left alone. Within a run, candidates are slices that
//! start at the beginning of a group (the digits between separators) and end
//! at the end of a group, so a run without separators longer than 19 digits
//! (a long reference number) is never a card. Among the Luhn-valid 13–19 digit
//! candidates of a run, the scanner picks non-overlapping ones masking as many
//! digits as possible, preferring fewer and therefore longer cards, then
//! earlier ones. Each group start has at most 19 possible ends, so the work is
//! linear in the length of the text.

/// Default longest customer message, in bytes of UTF-8.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 4096;

/// Why customer text was refused. The messages never contain the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The text is empty or only whitespace.
    #[error("text is empty")]
    Empty,
    /// The text has more than `max` bytes of UTF-8.
    #[error("text is longer than {max} bytes ({bytes})")]
    TooLong {
        /// The text's length in bytes.
        bytes: usize,
        /// The largest length allowed.
        max: usize,
    },
    /// The text contains a control character other than `\n`, `\t` or the
    /// `\r` of a `\r\n` pair.
    #[error("text contains control character U+{code:04X} at byte {offset}")]
    ControlCharacter {
        /// Byte offset of the first offending character in the text as given
        /// (before trimming).
        offset: usize,
        /// The character's code point.
        code: u32,
    },
}

impl TextError {
    /// A stable machine-readable reason code for the error.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            TextError::Empty => "TEXT_EMPTY",
            TextError::TooLong { .. } => "TEXT_TOO_LONG",
            TextError::ControlCharacter { .. } => "TEXT_CONTROL_CHARACTER",
        }
    }
}

/// Checks customer text and returns it with surrounding whitespace trimmed.
///
/// The checks, in order:
/// 1. the text as given is at most `max_bytes` bytes of UTF-8
///    ([`TextError::TooLong`]);
/// 2. it contains no control character (Unicode general category Cc) other
///    than `\n`, `\t` and a `\r` directly followed by `\n`; a lone `\r` is
///    refused ([`TextError::ControlCharacter`], for the first offender). The
///    line and paragraph separators U+2028 and U+2029 are not Cc and are
///    allowed;
/// 3. it is not empty once trimmed ([`TextError::Empty`]).
///
/// # Errors
///
/// The first check that fails, as above.
pub fn validate(text: &str, max_bytes: usize) -> Result<&str, TextError> {
    if text.len() > max_bytes {
        return Err(TextError::TooLong {
            bytes: text.len(),
            max: max_bytes,
        });
    }
    let mut chars = text.char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        let allowed = match c {
            '\n' | '\t' => true,
            '\r' => matches!(chars.peek(), Some((_, '\n'))),
            _ => !c.is_control(),
        };
        if !allowed {
            return Err(TextError::ControlCharacter {
                offset,
                code: u32::from(c),
            });
        }
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(TextError::Empty);
    }
    Ok(trimmed)
}

/// Text with its card numbers masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// The text, each card number replaced by `[card ending NNNN]`.
    pub text: String,
    /// How many card numbers were masked.
    pub cards: usize,
}

/// Fewest digits in a card number.
const MIN_CARD_DIGITS: usize = 13;
/// Most digits in a card number.
const MAX_CARD_DIGITS: usize = 19;
/// The no-break space, accepted as a separator like a plain space.
const NO_BREAK_SPACE: &str = "\u{a0}";

/// Replaces every card number in `text` by `[card ending NNNN]`, NNNN being
/// its last four digits; the whole span, separators included, is replaced.
/// See the module documentation for what counts as a card number.
#[must_use]
pub fn mask_card_numbers(text: &str) -> Masked {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut cards = 0;
    let mut digits = Vec::new();
    let mut groups = Vec::new();
    let mut pos = 0;
    // Digits and separators are whole characters (ASCII, or the two bytes of
    // U+00A0 matched together), and ASCII bytes never occur inside a multibyte
    // UTF-8 sequence, so every offset a run starts or ends at, and every group
    // boundary, is a char boundary.
    while pos < bytes.len() {
        if !bytes[pos].is_ascii_digit() {
            pos += 1;
            continue;
        }
        let run_start = pos;
        digits.clear();
        groups.clear();
        loop {
            let start = pos;
            let first_digit = digits.len();
            while let Some(&b) = bytes.get(pos).filter(|b| b.is_ascii_digit()) {
                digits.push(b - b'0');
                pos += 1;
            }
            groups.push(Group {
                start,
                end: pos,
                first_digit,
                end_digit: digits.len(),
            });
            let sep = separator_len(&bytes[pos..]);
            if sep > 0 && bytes.get(pos + sep).is_some_and(u8::is_ascii_digit) {
                pos += sep;
            } else {
                break;
            }
        }
        let run_end = pos;
        if touches_alphanumeric(text, run_start, run_end) {
            continue;
        }
        for (first, last) in choose_cards(&digits, &groups) {
            let span_start = groups[first].start;
            let span_end = groups[last].end;
            let end_digit = groups[last].end_digit;
            out.push_str(&text[copied..span_start]);
            out.push_str("[card ending ");
            for &d in &digits[end_digit - 4..end_digit] {
                out.push(char::from(b'0' + d));
            }
            out.push(']');
            copied = span_end;
            cards += 1;
        }
    }
    out.push_str(&text[copied..]);
    Masked { text: out, cards }
}

/// A stretch of digits between separators within a run.
#[derive(Debug, Clone, Copy)]
struct Group {
    /// Byte offset of the group's first digit in the text.
    start: usize,
    /// Byte offset just past the group's last digit.
    end: usize,
    /// Index of the group's first digit in the run's digits.
    first_digit: usize,
    /// Index just past the group's last digit in the run's digits.
    end_digit: usize,
}

/// Length in bytes of the separator `rest` starts with, 0 if none.
fn separator_len(rest: &[u8]) -> usize {
    match rest.first() {
        Some(b' ' | b'-' | b'.') => 1,
        _ if rest.starts_with(NO_BREAK_SPACE.as_bytes()) => NO_BREAK_SPACE.len(),
        _ => 0,
    }
}

/// Whether the run `text[start..end]` directly touches an alphanumeric
/// character on either side.
fn touches_alphanumeric(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric)
}

/// The card numbers of one run, as `(first group, last group)` pairs in
/// order: the non-overlapping Luhn-valid 13–19 digit group-aligned slices
/// that cover the most digits, then are fewest, then start earliest.
fn choose_cards(digits: &[u8], groups: &[Group]) -> Vec<(usize, usize)> {
    if digits.len() < MIN_CARD_DIGITS {
        return Vec::new();
    }
    let n = groups.len();
    // best[i]: the best score for groups i.., and the card starting at i (its
    // last group) if the best choice takes one there.
    let mut best = vec![(Score::default(), None::<usize>); n + 1];
    for i in (0..n).rev() {
        let mut chosen = (best[i + 1].0, None);
        let first_digit = groups[i].first_digit;
        // Ends within 19 digits of the start, longest first; at most 19.
        let ends = groups[i..]
            .iter()
            .take_while(|g| g.end_digit - first_digit <= MAX_CARD_DIGITS)
            .count();
        for j in (i..i + ends).rev() {
            let slice = &digits[first_digit..groups[j].end_digit];
            if slice.len() < MIN_CARD_DIGITS || !luhn_valid(slice) {
                continue;
            }
            let after = best[j + 1].0;
            let score = Score {
                covered: after.covered + slice.len(),
                cards: after.cards + 1,
            };
            // Ties keep the earlier candidate: taking a card here beats
            // skipping, and a longer card beats a shorter one.
            if score.better_than(chosen.0) || (chosen.1.is_none() && score == chosen.0) {
                chosen = (score, Some(j));
            }
        }
        best[i] = chosen;
    }
    let mut cards = Vec::new();
    let mut i = 0;
    while i < n {
        match best[i].1 {
            Some(j) => {
                cards.push((i, j));
                i = j + 1;
            }
            None => i += 1,
        }
    }
    cards
}

/// How good a choice of cards within a run is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Score {
    /// Digits masked.
    covered: usize,
    /// Cards masked.
    cards: usize,
}

impl Score {
    /// More digits masked, then fewer (longer) cards.
    fn better_than(self, other: Score) -> bool {
        (self.covered, other.cards) > (other.covered, self.cards)
    }
}

/// Whether `digits` (values 0 to 9, most significant first) pass the Luhn
/// check. False for an empty slice or one holding a value above 9.
#[must_use]
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        if d > 9 {
            return false;
        }
        let mut v = u32::from(d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(text: &str) -> (String, usize) {
        let m = mask_card_numbers(text);
        (m.text, m.cards)
    }

    fn unchanged(text: &str) {
        assert_eq!(masked(text), (text.to_string(), 0), "{text:?}");
    }

    fn digits_of(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    // ---- validate ----

    #[test]
    fn validate_returns_trimmed_text() {
        assert_eq!(validate("  hello there \n", 100), Ok("hello there"));
        assert_eq!(validate("hi", DEFAULT_MAX_TEXT_BYTES), Ok("hi"));
    }

    #[test]
    fn validate_refuses_empty_and_whitespace_only() {
        assert_eq!(validate("", 100), Err(TextError::Empty));
        assert_eq!(validate(" \t\n\r\n \u{3000}", 100), Err(TextError::Empty));
    }

    #[test]
    fn validate_length_is_in_bytes_and_inclusive() {
        let exact = "a".repeat(10);
        assert_eq!(validate(&exact, 10), Ok(exact.as_str()));
        assert_eq!(
            validate(&"a".repeat(11), 10),
            Err(TextError::TooLong { bytes: 11, max: 10 })
        );
        // "é" is two bytes: five of them are ten bytes.
        let accents = "é".repeat(5);
        assert_eq!(validate(&accents, 10), Ok(accents.as_str()));
        assert_eq!(
            validate(&"é".repeat(6), 10),
            Err(TextError::TooLong { bytes: 12, max: 10 })
        );
    }

    #[test]
    fn validate_length_counts_surrounding_whitespace() {
        assert_eq!(
            validate("  abc  ", 5),
            Err(TextError::TooLong { bytes: 7, max: 5 })
        );
    }

    #[test]
    fn validate_refuses_nul_and_escape() {
        assert_eq!(
            validate("ab\0c", 100),
            Err(TextError::ControlCharacter { offset: 2, code: 0 })
        );
        assert_eq!(
            validate("é\u{1b}[31m", 100),
            Err(TextError::ControlCharacter {
                offset: 2,
                code: 0x1b
            })
        );
        assert_eq!(
            validate("a\u{7f}", 100),
            Err(TextError::ControlCharacter {
                offset: 1,
                code: 0x7f
            })
        );
        assert_eq!(
            validate("a\u{85}", 100),
            Err(TextError::ControlCharacter {
                offset: 1,
                code: 0x85
            })
        );
    }

    #[test]
    fn validate_reports_first_control_character() {
        assert_eq!(
            validate("ok\u{7}then\0", 100),
            Err(TextError::ControlCharacter { offset: 2, code: 7 })
        );
    }

    #[test]
    fn validate_control_character_in_leading_whitespace_is_reported() {
        assert_eq!(
            validate(" \0 ", 100),
            Err(TextError::ControlCharacter { offset: 1, code: 0 })
        );
    }

    #[test]
    fn validate_refuses_lone_carriage_return() {
        assert_eq!(
            validate("line one\rline two", 100),
            Err(TextError::ControlCharacter {
                offset: 8,
                code: 0x0d
            })
        );
        assert_eq!(
            validate("trailing\r", 100),
            Err(TextError::ControlCharacter {
                offset: 8,
                code: 0x0d
            })
        );
        assert_eq!(
            validate("a\r\rb", 100),
            Err(TextError::ControlCharacter {
                offset: 1,
                code: 0x0d
            })
        );
    }

    #[test]
    fn validate_allows_newline_tab_and_crlf() {
        let text = "first\nsecond\tcol\r\nthird";
        assert_eq!(validate(text, 100), Ok(text));
        assert_eq!(validate("a\r\n", 100), Ok("a"));
    }

    #[test]
    fn validate_allows_emoji_and_line_separators() {
        let text = "thanks 🙏🏽 — ça marche\u{2028}next\u{2029}";
        assert_eq!(validate(text, 100), Ok("thanks 🙏🏽 — ça marche\u{2028}next"));
    }

    #[test]
    fn errors_have_reasons_and_messages_without_text() {
        let too_long = TextError::TooLong {
            bytes: 5000,
            max: 4096,
        };
        assert_eq!(too_long.reason(), "TEXT_TOO_LONG");
        assert_eq!(
            too_long.to_string(),
            "text is longer than 4096 bytes (5000)"
        );
        let control = TextError::ControlCharacter {
            offset: 12,
            code: 0,
        };
        assert_eq!(control.reason(), "TEXT_CONTROL_CHARACTER");
        assert_eq!(
            control.to_string(),
            "text contains control character U+0000 at byte 12"
        );
        assert_eq!(TextError::Empty.reason(), "TEXT_EMPTY");
        assert_eq!(TextError::Empty.to_string(), "text is empty");

        let secret = "secret\u{1b}";
        let err = validate(secret, 100).unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }

    // ---- luhn ----

    #[test]
    fn luhn_checks_known_numbers() {
        assert!(luhn_valid(&digits_of("4111111111111111")));
        assert!(luhn_valid(&digits_of("378282246310005")));
        assert!(luhn_valid(&digits_of("0")));
        assert!(!luhn_valid(&digits_of("4111111111111112")));
        assert!(!luhn_valid(&[]));
        assert!(!luhn_valid(&[4, 1, 10]));
    }

    // ---- masking: what is masked ----

    #[test]
    fn masks_plain_numbers_of_every_length() {
        for (number, last) in [
            ("4111111111111111", "1111"),    // Visa
            ("4012888888881881", "1881"),    // Visa
            ("5555555555554444", "4444"),    // Mastercard
            ("5105105105105100", "5100"),    // Mastercard
            ("378282246310005", "0005"),     // Amex, 15
            ("371449635398431", "8431"),     // Amex, 15
            ("6799990100000000019", "0019"), // Maestro, 19
            ("4222222222222", "2222"),       // Visa, 13
            ("6011111111111117", "1117"),    // Discover
        ] {
            assert_eq!(
                masked(number),
                (format!("[card ending {last}]"), 1),
                "{number}"
            );
        }
    }

    #[test]
    fn masks_spaced_hyphenated_dotted_and_mixed() {
        for text in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111.1111.1111.1111",
            "4111 1111-1111.1111",
            "4111\u{a0}1111\u{a0}1111\u{a0}1111",
            "41 11111111 111111",
        ] {
            assert_eq!(
                masked(text),
                ("[card ending 1111]".to_string(), 1),
                "{text:?}"
            );
        }
        assert_eq!(
            masked("3782 822463 10005"),
            ("[card ending 0005]".to_string(), 1)
        );
        assert_eq!(
            masked("6799-9901-0000-0000-019"),
            ("[card ending 0019]".to_string(), 1)
        );
        assert_eq!(
            masked("4222 2222 22222"),
            ("[card ending 2222]".to_string(), 1)
        );
    }

    #[test]
    fn masks_card_inside_a_sentence() {
        assert_eq!(
            masked("my card is 4111111111111111, help"),
            ("my card is [card ending 1111], help".to_string(), 1)
        );
        assert_eq!(
            masked("(5555-5555-5555-4444)."),
            ("([card ending 4444]).".to_string(), 1)
        );
        assert_eq!(
            masked("card:4111 1111 1111 1111\nthanks"),
            ("card:[card ending 1111]\nthanks".to_string(), 1)
        );
    }

    #[test]
    fn masks_with_non_ascii_around() {
        assert_eq!(
            masked("carte: 4111 1111 1111 1111 €"),
            ("carte: [card ending 1111] €".to_string(), 1)
        );
        assert_eq!(
            masked("カード«5555555555554444»です"),
            ("カード«[card ending 4444]»です".to_string(), 1)
        );
        assert_eq!(
            masked("💳 4111-1111-1111-1111 💳"),
            ("💳 [card ending 1111] 💳".to_string(), 1)
        );
    }

    #[test]
    fn masks_two_cards() {
        assert_eq!(
            masked("old 4111111111111111 new 5555 5555 5555 4444"),
            (
                "old [card ending 1111] new [card ending 4444]".to_string(),
                2
            )
        );
        // Joined into a single 32-digit run.
        assert_eq!(
            masked("4111111111111111 5555555555554444"),
            ("[card ending 1111] [card ending 4444]".to_string(), 2)
        );
        assert_eq!(
            masked("4111 1111 1111 1111 5555 5555 5555 4444"),
            ("[card ending 1111] [card ending 4444]".to_string(), 2)
        );
    }

    #[test]
    fn masks_card_followed_by_expiry_or_other_numbers() {
        assert_eq!(
            masked("4111111111111111 12/27"),
            ("[card ending 1111] 12/27".to_string(), 1)
        );
        assert_eq!(
            masked("4111 1111 1111 1111 12-27 cvv 123"),
            ("[card ending 1111] 12-27 cvv 123".to_string(), 1)
        );
        assert_eq!(
            masked("4111 1111 1111 1111 123"),
            ("[card ending 1111] 123".to_string(), 1)
        );
        assert_eq!(
            masked("ref 12 4111 1111 1111 1111"),
            ("ref 12 [card ending 1111]".to_string(), 1)
        );
    }

    #[test]
    fn prefers_masking_more_digits_over_leftmost_slice() {
        // "1111 1111 1111 4111" is itself Luhn-valid; a repeated card must
        // still be cut on its own boundaries.
        let repeats = 50;
        let text = "4111 1111 1111 1111 ".repeat(repeats);
        let m = mask_card_numbers(text.trim_end());
        assert_eq!(m.cards, repeats);
        assert_eq!(m.text, vec!["[card ending 1111]"; repeats].join(" "));
    }

    #[test]
    fn masked_text_keeps_no_other_digits() {
        let m = mask_card_numbers("pay 6799 9901 0000 0000 019 now");
        assert_eq!(m.text, "pay [card ending 0019] now");
        assert_eq!(m.text.bytes().filter(u8::is_ascii_digit).count(), 4);
    }

    // ---- masking: what is left alone ----

    #[test]
    fn leaves_luhn_invalid_and_short_numbers() {
        unchanged("4111111111111112");
        unchanged("4111 1111 1111 1112");
        unchanged("411111111111"); // 12 digits
        unchanged("4111 1111 1111"); // 12 digits
        unchanged("0044 20 7946 0958"); // phone number, fails Luhn
        unchanged("+44 7700 900123 456");
    }

    #[test]
    fn leaves_long_references_without_separators() {
        // Luhn-valid as a whole and with a valid card as its first 16 digits.
        unchanged("41111111111111110000");
        unchanged("reference 12345678901234567890.");
        unchanged(&"4111111111111111".repeat(3));
    }

    #[test]
    fn leaves_amounts_dates_and_sort_codes() {
        unchanged("I paid £1,234.50 on 2026-11-22 to sort code 12-34-56");
        unchanged("1,234,567,890,123.45");
        unchanged("2026-11-22 10:30");
        unchanged("account 12345678 sort code 12-34-56");
    }

    #[test]
    fn leaves_runs_touching_letters() {
        unchanged("ref4111111111111111");
        unchanged("4111111111111111x");
        unchanged("id-é4111 1111 1111 1111");
        // A separator between letter and digits is not touching.
        assert_eq!(
            masked("ref-4111111111111111"),
            ("ref-[card ending 1111]".to_string(), 1)
        );
    }

    #[test]
    fn separators_must_be_single() {
        // Two separators in a row end the run: the parts are too short.
        unchanged("4111  1111  1111  1111");
        unchanged("4111--1111--1111--1111");
        unchanged("4111 ,1111 1111 1111");
    }

    #[test]
    fn iban_digit_tail_is_masked_only_if_luhn_valid() {
        // The letters end the first groups; the digit tail
        // "1234 5698 7654 32" is 14 digits and fails Luhn, so stays.
        unchanged("IBAN GB82 WEST 1234 5698 7654 32");
        // A tail that happens to be Luhn-valid would be masked like a card.
        assert_eq!(
            masked("IBAN XX00 BANK 4111 1111 1111 1111"),
            ("IBAN XX00 BANK [card ending 1111]".to_string(), 1)
        );
    }

    #[test]
    fn leaves_text_without_digits() {
        unchanged("");
        unchanged("hello, how do I block my card?");
        unchanged("- . - . -");
    }

    // ---- masking: size ----

    #[test]
    fn long_digit_texts_complete() {
        let digits = "4".repeat(DEFAULT_MAX_TEXT_BYTES);
        assert_eq!(mask_card_numbers(&digits).cards, 0);

        // Thirteen to nineteen ones never pass Luhn.
        let ones = "1 ".repeat(DEFAULT_MAX_TEXT_BYTES / 2);
        assert_eq!(mask_card_numbers(&ones).cards, 0);

        let mixed = "4111-1111.1111 1111 ".repeat(DEFAULT_MAX_TEXT_BYTES / 20);
        let m = mask_card_numbers(&mixed);
        assert_eq!(m.cards, DEFAULT_MAX_TEXT_BYTES / 20);

        let pairs = "12.".repeat(DEFAULT_MAX_TEXT_BYTES / 3);
        let _ = mask_card_numbers(&pairs);
    }
}
