//! Encodings a reader can decode: base64 and hex segments, ROT13 and reversed lines. A decoding is kept only when
//! it reads as text (valid UTF-8, printable, mostly letters and spaces; for ROT13 and reversed lines, clearly more
//! English than the line as written). One level deep: what is decoded is not decoded again.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use super::words::{map_words, reads_better};

/// Shortest base64 or hex segment worth trying (shorter ones are words, ids and hashes more often than messages).
const MIN_SEGMENT: usize = 16;

/// Decoded bytes that read as text: UTF-8, no control characters but newlines and tabs, at least 70% letters and
/// spaces, and at least two words.
fn readable(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let total = text.chars().count();
    if total == 0 {
        return None;
    }
    let control = text
        .chars()
        .filter(|&c| c.is_control() && c != '\n' && c != '\t')
        .count();
    let letters = text.chars().filter(|&c| c.is_alphabetic() || c == ' ').count();
    let words = text.split_whitespace().count();
    (control == 0 && letters * 10 >= total * 7 && words >= 2).then(|| text.to_string())
}

/// Replaces each whitespace-separated segment that `decode` accepts, while `budget` (decoded bytes) lasts.
fn replace_segments(text: &str, budget: &mut usize, mut decode: impl FnMut(&str) -> Option<Vec<u8>>) -> Option<String> {
    let mut changed = false;
    let out = map_words(text, |token| {
        // Quotes, brackets and a final full stop around an encoded blob are not part of it.
        let core =
            token.trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '(' | ')' | '[' | ']' | '.' | ',' | ':'));
        let decoded = (core.len() >= MIN_SEGMENT && *budget > 0)
            .then(|| decode(core))
            .flatten()
            .and_then(|bytes| readable(&bytes))?;
        if decoded.len() > *budget {
            *budget = 0;
            return None;
        }
        *budget -= decoded.len();
        changed = true;
        Some(decoded)
    });
    changed.then_some(out)
}

/// Base64 segments (standard or URL-safe alphabet, padding optional) decoded to text.
pub(crate) fn decode_base64(text: &str, budget: &mut usize) -> Option<String> {
    replace_segments(text, budget, |core| {
        let body = core.trim_end_matches('=');
        if !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
            || body.len() % 4 == 1
        {
            return None;
        }
        STANDARD_NO_PAD
            .decode(body)
            .or_else(|_| URL_SAFE_NO_PAD.decode(body))
            .ok()
    })
}

/// Hex segments (an even number of hex digits, optionally `0x`-prefixed) decoded to text.
pub(crate) fn decode_hex(text: &str, budget: &mut usize) -> Option<String> {
    replace_segments(text, budget, |core| {
        let digits = core.strip_prefix("0x").unwrap_or(core);
        if digits.len() % 2 != 0 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        digits
            .as_bytes()
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok())
            })
            .collect()
    })
}

/// ROT13 of the ASCII letters.
pub(crate) fn rot13(line: &str) -> String {
    line.chars()
        .map(|c| match c {
            'a'..='z' => (((c as u8 - b'a') + 13) % 26 + b'a') as char,
            'A'..='Z' => (((c as u8 - b'A') + 13) % 26 + b'A') as char,
            _ => c,
        })
        .collect()
}

/// The line's characters in reverse order.
pub(crate) fn reverse(line: &str) -> String {
    line.chars().rev().collect()
}

/// Applies `transform` to the whole paragraph when the result reads clearly better as English (short list lines are
/// judged with their neighbours), else to each line where it does; `None` when nothing does.
pub(crate) fn readable_lines(paragraph: &str, transform: fn(&str) -> String) -> Option<String> {
    let whole = transform(paragraph);
    if reads_better(&whole, paragraph) {
        return Some(whole);
    }
    let mut changed = false;
    let lines: Vec<String> = paragraph
        .split('\n')
        .map(|line| {
            let decoded = transform(line);
            if reads_better(&decoded, line) {
                changed = true;
                decoded
            } else {
                line.to_string()
            }
        })
        .collect();
    changed.then(|| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_with_prefix_and_the_budget() {
        let mut budget = 100;
        assert_eq!(
            decode_hex("0x68656c6c6f20776f726c64", &mut budget).as_deref(),
            Some("hello world")
        );
        assert_eq!(budget, 89);
        let mut none = 0;
        assert_eq!(decode_hex("68656c6c6f20776f726c64", &mut none), None);
    }

    #[test]
    fn rot13_is_its_own_inverse() {
        assert_eq!(rot13(&rot13("Hello, World!")), "Hello, World!");
    }
}
