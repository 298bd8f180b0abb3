//! Is a text readable English? The share of its words that are among the most frequent English words: running
//! English prose has 40–55% of them; ROT13, reversed text and decoded garbage have almost none. Used to accept a
//! decoding only when it reads as text.

/// The most frequent English words (function words and common verbs), lowercase, sorted for binary search.
const COMMON: [&str; 117] = [
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "because", "been", "but", "by",
    "can", "could", "do", "does", "each", "even", "first", "for", "from", "get", "give", "go", "good", "has", "have",
    "he", "her", "here", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "know", "like",
    "make", "many", "may", "me", "more", "most", "much", "must", "my", "new", "no", "not", "now", "of", "on", "one",
    "only", "or", "other", "our", "out", "over", "people", "said", "see", "she", "should", "so", "some", "such",
    "take", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "through",
    "time", "to", "two", "up", "us", "use", "used", "very", "was", "way", "we", "well", "were", "what", "when",
    "where", "which", "while", "who", "why", "will", "with", "would", "you", "your", "step", "using",
];

/// The words of `text` (maximal runs without whitespace), each with the whitespace after it, in order; a text that
/// starts with whitespace yields an empty word first. Concatenated, they give back `text`.
pub(crate) fn words_and_gaps(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let split = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(split);
        let space = tail.find(|c: char| !c.is_whitespace()).unwrap_or(tail.len());
        let (gap, tail) = tail.split_at(space);
        rest = tail;
        Some((word, gap))
    })
}

/// `text` with each word replaced by `f(word)` where it returns a replacement; whitespace stays as written.
pub(crate) fn map_words(text: &str, mut f: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    for (word, gap) in words_and_gaps(text) {
        match f(word) {
            Some(replacement) => out.push_str(&replacement),
            None => out.push_str(word),
        }
        out.push_str(gap);
    }
    out
}

fn is_common(word: &str) -> bool {
    COMMON.contains(&word)
}

/// The share (0 to 1) of the alphabetic words of `text` that are frequent English words; 0 for a text without
/// words.
///
/// ```
/// use mllm_protector::canonical::english_word_share;
/// assert!(english_word_share("This is how you make it at home.") > 0.5);
/// assert!(english_word_share("Guvf vf ubj lbh znxr vg ng ubzr.") < 0.1);
/// ```
pub fn english_word_share(text: &str) -> f64 {
    let mut words = 0usize;
    let mut common = 0usize;
    let mut buf = String::new();
    let mut flush = |buf: &mut String| {
        if !buf.is_empty() {
            words += 1;
            if buf.len() <= 8 && is_common(buf) {
                common += 1;
            }
            buf.clear();
        }
    };
    for ch in text.chars() {
        if ch.is_alphabetic() {
            buf.extend(ch.to_lowercase());
        } else if ch != '\'' {
            flush(&mut buf);
        }
    }
    flush(&mut buf);
    if words == 0 { 0.0 } else { common as f64 / words as f64 }
}

/// Whether `text` is more likely English text than `than`: at least 4 words, 15% of them frequent English words
/// (technical answers and lists run low; ROT13 and reversed text have almost none), and 10 points more than `than`.
pub(crate) fn reads_better(text: &str, than: &str) -> bool {
    let words = text
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count();
    let share = english_word_share(text);
    words >= 4 && share >= 0.15 && share >= english_word_share(than) + 0.10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_lowercase_and_unique() {
        let mut sorted = COMMON.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), COMMON.len());
        assert!(COMMON.iter().all(|w| w.chars().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn words_and_gaps_give_back_the_text() {
        for text in ["", " a  b\n", "one", "  ", "x y \t"] {
            let parts: Vec<(&str, &str)> = words_and_gaps(text).collect();
            assert_eq!(parts.iter().map(|(w, g)| format!("{w}{g}")).collect::<String>(), text);
        }
        assert_eq!(
            words_and_gaps(" a  b").collect::<Vec<_>>(),
            [("", " "), ("a", "  "), ("b", "")]
        );
        assert_eq!(map_words(" ab  c", |w| (w == "ab").then(|| "X".to_string())), " X  c");
    }

    #[test]
    fn reads_better_needs_enough_words_and_a_clear_gain() {
        assert!(reads_better("to make it at home", "gb znxr vg ng ubzr"));
        assert!(!reads_better("make it", "znxr vg"));
        assert!(!reads_better("to make it at home", "to make it at home"));
    }
}
