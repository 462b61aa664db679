//! Line input with a length bound: a line longer than the bound is skipped
//! to its end without ever being held in memory, so a stream without
//! newlines cannot exhaust memory.

use std::io::{self, BufRead};

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line's bytes, without the `\n` (and without a `\r` before it).
    Text(Vec<u8>),
    /// The line had more than the bound's bytes; its content was dropped.
    TooLong,
}

/// Reads the next line of at most `max` bytes. `Ok(None)` at end of input.
pub fn read_line(input: &mut impl BufRead, max: usize) -> io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        read_any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max + 1 {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buf.len());
        input.consume(used);
        if done.is_some() {
            break;
        }
    }
    if !read_any {
        return Ok(None);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if too_long || line.len() > max {
        return Ok(Some(Line::TooLong));
    }
    Ok(Some(Line::Text(line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> Vec<Line> {
        // A tiny buffer, so lines span many fills.
        let mut r = io::BufReader::with_capacity(3, input);
        std::iter::from_fn(|| read_line(&mut r, max).unwrap()).collect()
    }

    #[test]
    fn lines_are_split_bounded_and_skipped_when_too_long() {
        let text = |s: &str| Line::Text(s.as_bytes().to_vec());
        assert_eq!(
            all(b"ab\r\n\nabcdef\nxyz", 4),
            [text("ab"), text(""), Line::TooLong, text("xyz")]
        );
        // Exactly the bound, and the bound plus a carriage return.
        assert_eq!(all(b"abcd\nabcd\r\n", 4), [text("abcd"), text("abcd")]);
        assert!(all(b"", 4).is_empty());
    }

    #[test]
    fn an_endless_line_is_not_held_in_memory() {
        let huge = vec![b'x'; 10 << 20];
        let mut r = io::BufReader::new(&huge[..]);
        assert_eq!(read_line(&mut r, 1024).unwrap(), Some(Line::TooLong));
        assert_eq!(read_line(&mut r, 1024).unwrap(), None);
    }
}
