//! The extractors' word stream: letters, numbers and single symbols with
//! byte spans into the original text. Whitespace separates tokens and is
//! remembered (`glued` is false after a space), so "25th" and "1.5k" are a
//! number glued to a word, and "£50" a symbol glued to a number.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A run of letters.
    Word,
    /// Digits, possibly with `.` or `,` between digits ("1,234.50").
    Num,
    /// Any other single non-space character.
    Sym,
}

#[derive(Debug, Clone)]
pub(crate) struct Tok<'a> {
    pub start: usize,
    pub end: usize,
    pub text: &'a str,
    /// Lower-cased text, for matching words.
    pub lower: String,
    pub kind: Kind,
    /// No whitespace between this token and the previous one.
    pub glued: bool,
}

impl Tok<'_> {
    pub fn is(&self, word: &str) -> bool {
        self.lower == word
    }
    pub fn is_any(&self, words: &[&str]) -> bool {
        words.contains(&self.lower.as_str())
    }
    pub fn sym(&self, c: char) -> bool {
        self.kind == Kind::Sym && self.text.starts_with(c)
    }
}

pub(crate) fn tokenize(text: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut it = text.char_indices().peekable();
    let mut glued = false;
    while let Some(&(start, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            glued = false;
            continue;
        }
        let kind;
        let mut end = start + c.len_utf8();
        it.next();
        if c.is_alphabetic() {
            kind = Kind::Word;
            while let Some(&(i, n)) = it.peek() {
                if !n.is_alphabetic() {
                    break;
                }
                end = i + n.len_utf8();
                it.next();
            }
        } else if c.is_ascii_digit() {
            kind = Kind::Num;
            loop {
                match it.peek() {
                    Some(&(i, n)) if n.is_ascii_digit() => {
                        end = i + 1;
                        it.next();
                    }
                    // A separator belongs to the number only between digits.
                    Some(&(i, n @ ('.' | ','))) => {
                        let next_is_digit = text[i + n.len_utf8()..]
                            .chars()
                            .next()
                            .is_some_and(|d| d.is_ascii_digit());
                        if !next_is_digit {
                            break;
                        }
                        end = i + 1;
                        it.next();
                    }
                    _ => break,
                }
            }
        } else {
            kind = Kind::Sym;
        }
        let t = &text[start..end];
        out.push(Tok {
            start,
            end,
            text: t,
            lower: t.to_lowercase(),
            kind,
            glued,
        });
        glued = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_words_and_symbols_with_spans() {
        let toks = tokenize("send £1,234.50 on the 25th, ok? 1.5k");
        let parts: Vec<(&str, Kind, bool)> =
            toks.iter().map(|t| (t.text, t.kind, t.glued)).collect();
        assert_eq!(
            parts,
            vec![
                ("send", Kind::Word, false),
                ("£", Kind::Sym, false),
                ("1,234.50", Kind::Num, true),
                ("on", Kind::Word, false),
                ("the", Kind::Word, false),
                ("25", Kind::Num, false),
                ("th", Kind::Word, true),
                (",", Kind::Sym, true),
                ("ok", Kind::Word, false),
                ("?", Kind::Sym, true),
                ("1.5", Kind::Num, false),
                ("k", Kind::Word, true),
            ]
        );
        let t = &toks[1];
        assert_eq!(&"send £1,234.50"[t.start..t.end], "£");
    }
}
