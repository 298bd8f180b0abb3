//! The answer's opening read on its own. A streamed answer is first checked at its opening, before the rest
//! exists; the post-hoc guard reads the same opening at the same strict threshold, so a stream stopped there and the
//! guard of the whole answer reach the same verdict. A harmful answer's opening ("Sure, here is how to ...") can
//! score higher alone than the whole answer whose harmful part a long harmless text dilutes.

use serde::{Deserialize, Serialize};

/// Where an answer's opening ends and how strictly it is read (serde; every field has a default).
///
/// ```
/// use mllm_protector::OpeningReading;
/// let opening = OpeningReading { words: 3, sentence_wait_words: 2, ..Default::default() };
/// let text = "Sure, here is. The guide follows.";
/// assert_eq!(opening.end(text).map(|end| &text[..end]), Some("Sure, here is."));
/// assert_eq!(opening.opening_of("Too short."), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpeningReading {
    /// The opening has at least this many words (default 32, the stream's first check).
    pub words: usize,
    /// It runs on up to this many more words to end with a sentence (default 12).
    pub sentence_wait_words: usize,
    /// The opening alone makes the answer harmful when it scores at least this (default 0.98, far above the
    /// detector's threshold: an opening is read without what follows it).
    pub threshold: f32,
    /// The guard reads the opening only when the whole answer scores at least this (default
    /// [`DEFAULT_MIN_WHOLE_SCORE`]). The whole answer's first window holds the opening, so an answer whose opening
    /// alone is surely harmful does not read as plainly harmless whole; ordinary answers, which score far lower,
    /// then pay nothing for the opening.
    pub min_whole_score: f32,
}

/// The default [`OpeningReading::min_whole_score`].
pub const DEFAULT_MIN_WHOLE_SCORE: f32 = 0.02;

impl Default for OpeningReading {
    /// 32 words, waiting up to 12 more for a sentence end, at threshold 0.98: the strictest threshold measured on
    /// the validation sets (`examples/opening_probe.rs`), where it flagged no answer that the guard of the whole
    /// answer passes (docs/EVALUATION.md, "Streaming").
    fn default() -> Self {
        OpeningReading {
            words: 32,
            sentence_wait_words: 12,
            threshold: DEFAULT_OPENING_THRESHOLD,
            min_whole_score: DEFAULT_MIN_WHOLE_SCORE,
        }
    }
}

/// The default [`OpeningReading::threshold`].
pub const DEFAULT_OPENING_THRESHOLD: f32 = 0.98;

impl OpeningReading {
    /// The byte offset where the opening of `text` ends: after the first word, from the `words`-th on, that ends a
    /// sentence (its last character is `.`, `!`, `?`, `:` or `;`, or a line break follows it), or after word
    /// `words + sentence_wait_words`. A word counts once whitespace follows it, so the result does not change as
    /// the text grows. `None` while the text has not reached its opening's end.
    pub fn end(&self, text: &str) -> Option<usize> {
        let first = self.words.max(1);
        word_ends(text, 0)
            .enumerate()
            .find(|&(i, (_, sentence))| i + 1 >= first && (sentence || i + 1 >= first + self.sentence_wait_words))
            .map(|(_, (at, _))| at)
    }

    /// The opening of a finished answer, when the answer goes on after it (else the whole answer is the opening,
    /// and there is nothing more to read).
    pub fn opening_of<'a>(&self, text: &'a str) -> Option<&'a str> {
        let end = self.end(text)?;
        (!text[end..].trim().is_empty()).then(|| &text[..end])
    }
}

/// The words completed in `text[start..]` (a word is complete once whitespace follows it): for each, the byte offset
/// of that whitespace, and whether the word ends a sentence (its last character is `.`, `!`, `?`, `:` or `;`, or a
/// line break follows it). `start` must be a character boundary.
pub(crate) fn word_ends(text: &str, start: usize) -> impl Iterator<Item = (usize, bool)> + '_ {
    let mut prev = text[..start].chars().next_back();
    text[start..].char_indices().filter_map(move |(offset, c)| {
        let last = prev.filter(|p| !p.is_whitespace());
        prev = Some(c);
        let last = last.filter(|_| c.is_whitespace())?;
        Some((start + offset, matches!(last, '.' | '!' | '?' | ':' | ';') || c == '\n'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_waits_for_a_sentence_end_within_its_bound() {
        let opening = OpeningReading {
            words: 2,
            sentence_wait_words: 2,
            ..Default::default()
        };
        // The second word does not end a sentence; the third does.
        assert_eq!(opening.opening_of("one two three. four"), Some("one two three."));
        // No sentence end: cut after words + wait.
        assert_eq!(opening.opening_of("a b c d e f"), Some("a b c d"));
        // A line break ends a sentence.
        assert_eq!(opening.opening_of("a b\nc d"), Some("a b"));
        // The answer ends with its opening: nothing more to read.
        assert_eq!(opening.opening_of("a b. "), None);
        assert_eq!(opening.end("a b. "), Some(4));
        // Not reached yet: the last word is not followed by whitespace.
        assert_eq!(opening.end("a b."), None);
    }

    #[test]
    fn the_end_does_not_move_as_the_text_grows() {
        let opening = OpeningReading::default();
        let text = format!("{}end. {}", "word ".repeat(20), "more ".repeat(40));
        let end = opening.end(&text);
        for cut in (0..text.len()).rev() {
            match opening.end(&text[..cut]) {
                Some(e) => assert_eq!(Some(e), end),
                None => assert!(cut <= end.unwrap_or(usize::MAX)),
            }
        }
    }
}
