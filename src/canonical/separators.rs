//! Letters pulled apart ("b o m b", "b.o.m.b", "m-e-t-h", "ex*plo*sive") joined back into words, and leetspeak
//! ("m3th", "0bt41n") read as letters.

use super::words::{map_words, words_and_gaps};

/// Characters an attacker inserts inside a word ("ex*plo*sive"); `.` and `-` only count between single letters or
/// short pieces (see [`join_inside`]), as they are ordinary inside abbreviations, numbers and compounds.
const INSERTED: [char; 7] = ['*', '|', '~', '^', '·', '•', '_'];

/// Leetspeak digits and symbols and the letters they stand for.
const LEET: [(char, char); 13] = [
    ('0', 'o'),
    ('1', 'i'),
    ('3', 'e'),
    ('4', 'a'),
    ('5', 's'),
    ('6', 'g'),
    ('7', 't'),
    ('8', 'b'),
    ('9', 'g'),
    ('@', 'a'),
    ('$', 's'),
    ('!', 'i'),
    ('|', 'l'),
];

fn leet_letter(ch: char) -> Option<char> {
    LEET.iter().find(|(l, _)| *l == ch).map(|&(_, c)| c)
}

/// Runs of at least four single letters or digits separated by single spaces are joined; a gap of two or more
/// spaces (or a `/`) between them is a word break. Then each word's inserted characters are removed.
pub(crate) fn join(paragraph: &str) -> String {
    let spaced = join_spaced(paragraph);
    // In a paragraph with two or more words of three or more separated letters, two-letter ones ("t.o") are
    // disguised too; alone, "e.g" is an abbreviation.
    let separated = spaced
        .split_whitespace()
        .filter(|w| join_inside(w, 3).len() < w.len())
        .take(2)
        .count();
    let min_pieces = if separated >= 2 { 2 } else { 3 };
    map_words(&spaced, |word| Some(join_inside(word, min_pieces)))
}

/// A token of one alphanumeric character (or leet symbol) when letters are spaced out.
fn is_unit(token: &str) -> bool {
    let mut chars = token.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if c.is_alphanumeric() || leet_letter(c).is_some())
}

/// A unit followed by closing punctuation ("e," at the end of a spaced word): it can end a run.
fn is_last_unit(token: &str) -> bool {
    let trimmed = token.trim_end_matches([',', '.', ';', ':', '!', '?', ')', '"', '\'']);
    trimmed.len() < token.len() && is_unit(trimmed)
}

fn join_spaced(paragraph: &str) -> String {
    // Tokens with the whitespace that follows each (leading whitespace follows an empty token, never a unit).
    let tokens: Vec<(&str, &str)> = words_and_gaps(paragraph).collect();
    let mut out = String::with_capacity(paragraph.len());
    let mut i = 0;
    while i < tokens.len() {
        // The longest run of units (and "/" word breaks) starting here.
        let mut j = i;
        let mut units = 0;
        while j < tokens.len() && (is_unit(tokens[j].0) || (tokens[j].0 == "/" && j > i)) {
            units += usize::from(tokens[j].0 != "/");
            j += 1;
        }
        if units >= 3 && j < tokens.len() && is_last_unit(tokens[j].0) && !tokens[j - 1].1.contains('\n') {
            units += 1;
            j += 1;
        }
        if units >= 4 {
            for (k, &(token, gap)) in tokens[i..j].iter().enumerate() {
                if token != "/" {
                    out.push_str(token);
                }
                let last = i + k + 1 == j;
                let breaks = gap.chars().count() >= 2 || gap.contains('\n');
                let next_is_slash = tokens.get(i + k + 1).is_some_and(|t| t.0 == "/");
                if last {
                    out.push_str(gap);
                } else if (breaks || next_is_slash) && !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            i = j;
        } else {
            out.push_str(tokens[i].0);
            out.push_str(tokens[i].1);
            i += 1;
        }
    }
    out
}

/// Removes characters inserted inside one whitespace-free token: `b.o.m.b`, `m-e-t-h` (single characters between
/// one repeated separator, at least `min_pieces` of them) or `ex*plo*sive` (an [`INSERTED`] character between
/// letters). URLs, paths and e-mail addresses are left alone.
fn join_inside(token: &str, min_pieces: usize) -> String {
    if let Some(joined) = join_alternating(token, min_pieces) {
        return joined;
    }
    if token.contains("://") || token.contains('@') || token.contains('/') || token.contains('\\') {
        return token.to_string();
    }
    // Leading and trailing punctuation stays where it is.
    let start = token
        .char_indices()
        .find(|&(_, c)| c.is_alphanumeric())
        .map(|(i, _)| i)
        .unwrap_or(token.len());
    let end = token
        .char_indices()
        .rev()
        .find(|&(_, c)| c.is_alphanumeric())
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(start);
    if start >= end {
        return token.to_string();
    }
    let core = &token[start..end];
    let pieces: Vec<&str> = core.split(|c: char| !c.is_alphanumeric()).collect();
    let seps: Vec<char> = core.chars().filter(|c| !c.is_alphanumeric()).collect();
    if seps.is_empty() || pieces.iter().any(|p| p.is_empty()) {
        return token.to_string();
    }
    let single_letters = pieces.len() >= min_pieces
        && pieces.iter().all(|p| p.chars().count() == 1)
        && seps.iter().all(|&s| s == seps[0])
        && matches!(seps[0], '.' | '-' | '_' | '*' | '·' | '•' | '|' | '~');
    let inserted = seps.iter().all(|s| INSERTED.contains(s))
        && pieces.iter().all(|p| p.chars().all(char::is_alphabetic))
        // snake_case identifiers are code, not disguise: only short pieces count for `_`.
        && (!seps.contains(&'_') || pieces.iter().all(|p| p.chars().count() <= 3));
    if !(single_letters || inserted) {
        return token.to_string();
    }
    let mut out = String::with_capacity(token.len());
    out.push_str(&token[..start]);
    out.extend(pieces.iter().copied());
    out.push_str(&token[end..]);
    out
}

/// A token that alternates one character and one separator from end to end ("h.e.r.e.'.s", "(.b.o.m.b.)"), with at
/// least `min_pieces` characters and a letter among them: the characters, joined. Punctuation dotted like letters
/// stays as punctuation.
fn join_alternating(token: &str, min_pieces: usize) -> Option<String> {
    let chars: Vec<char> = token.chars().collect();
    let sep = *chars.get(1)?;
    if chars.len().is_multiple_of(2) || !matches!(sep, '.' | '-' | '_' | '*' | '·' | '•' | '|' | '~') {
        return None;
    }
    let units: Vec<char> = chars.iter().step_by(2).copied().collect();
    // The last character may be the separator itself: a dotted word ending a sentence ("t.h.e.n..").
    let inner = &units[..units.len() - 1];
    let alternates = chars.iter().skip(1).step_by(2).all(|&c| c == sep) && inner.iter().all(|&c| c != sep);
    (alternates && units.len() >= min_pieces && units.iter().any(|c| c.is_alphabetic()))
        .then(|| units.into_iter().collect())
}

/// Reads leetspeak inside words: a token that mixes letters with leet digits or symbols gets them replaced, when
/// the paragraph has at least two such tokens (one "mp3" or "4th" is not leetspeak) or is that one token. In a
/// paragraph where a fifth of the words or more are leetspeak, words written only in leet characters ("17" for
/// "it", "4" for "a") are read as letters too: there, numbers are more likely words than numbers.
pub(crate) fn deleet(paragraph: &str) -> String {
    let flags: Vec<bool> = words_and_gaps(paragraph).map(|(w, _)| is_leet(w)).collect();
    let leet = flags.iter().filter(|&&f| f).count();
    let words = words_and_gaps(paragraph).filter(|(w, _)| !w.is_empty()).count();
    if leet == 0 || (leet < 2 && words > 1) {
        return paragraph.to_string();
    }
    let mostly_leet = leet * 5 >= words;
    // map_words visits the words in the order the flags were computed.
    let mut flags = flags.into_iter();
    map_words(paragraph, |token| {
        let leet = flags.next().unwrap_or(false);
        (leet || (mostly_leet && all_leet(token))).then(|| {
            let (start, end) = core_bounds(token);
            let letters = token[start..end]
                .chars()
                .map(|c| leet_letter(c).unwrap_or(c).to_ascii_lowercase());
            format!("{}{}{}", &token[..start], letters.collect::<String>(), &token[end..])
        })
    })
}

/// A token whose core is only leet characters ("17", "4", "50", "17'5"), at most 8 of them.
fn all_leet(token: &str) -> bool {
    let (start, end) = core_bounds(token);
    let core: Vec<char> = token[start..end].chars().filter(|c| !is_apostrophe(*c)).collect();
    !core.is_empty() && core.len() <= 8 && core.iter().all(|&c| leet_letter(c).is_some())
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '’')
}

/// The token without leading and trailing punctuation, as byte bounds (leet symbols like `@` and `$` count as
/// inside; a trailing `!` does not).
fn core_bounds(token: &str) -> (usize, usize) {
    let inside = |c: char| c.is_alphanumeric() || matches!(c, '@' | '$' | '|');
    let start = token
        .char_indices()
        .find(|&(_, c)| inside(c))
        .map(|(i, _)| i)
        .unwrap_or(token.len());
    let end = token
        .char_indices()
        .rev()
        .find(|&(_, c)| c.is_alphanumeric() || matches!(c, '@' | '$' | '|'))
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(start)
        .max(start);
    (start, end)
}

/// A token whose core mixes ASCII letters with leet characters, and has no other non-letter inside but apostrophes
/// ("h3r3'5") and hyphens between pieces that each hold a letter ("573p-by-573p"; so "3.5", "COVID-19" and "$100"
/// are not leetspeak). A core of two letters or more is needed around the digits.
fn is_leet(token: &str) -> bool {
    let (start, end) = core_bounds(token);
    let core: String = token[start..end].chars().filter(|c| !is_apostrophe(*c)).collect();
    if core
        .split('-')
        .any(|piece| !piece.chars().any(|c| c.is_ascii_alphabetic()))
    {
        return false;
    }
    let core = core.replace('-', "");
    let letters = core.chars().filter(|c| c.is_ascii_alphabetic()).count();
    let leet = core.chars().filter(|&c| leet_letter(c).is_some()).count();
    let other = core
        .chars()
        .filter(|&c| !c.is_ascii_alphabetic() && leet_letter(c).is_none())
        .count();
    letters >= 1 && leet >= 1 && other == 0 && letters + leet >= 2 && !is_ordinal_or_unit(&core)
}

/// "4th", "1st", "22nd", "10am", "5km", "3d": a number followed by its ordinal suffix or a unit, not leetspeak.
fn is_ordinal_or_unit(core: &str) -> bool {
    const UNITS: [&str; 24] = [
        "am", "pm", "s", "k", "m", "g", "d", "x", "kg", "km", "mm", "cm", "mg", "ml", "mb", "gb", "tb", "kb", "px",
        "ms", "hz", "v", "w", "h",
    ];
    let digits = core.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let (number, rest) = core.split_at(digits);
    let rest = rest.to_ascii_lowercase();
    let ordinal = match (
        number.len() >= 2 && &number[number.len() - 2..number.len() - 1] == "1",
        number.chars().last(),
    ) {
        (false, Some('1')) => "st",
        (false, Some('2')) => "nd",
        (false, Some('3')) => "rd",
        _ => "th",
    };
    rest == ordinal || UNITS.contains(&rest.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_tokens_are_untouched() {
        for t in [
            "state-of-the-art",
            "e.g.",
            "U.S.",
            "snake_case_name",
            "3.14",
            "COVID-19",
            "a+b",
            "x86",
            "see e.g. i.e.",
        ] {
            assert_eq!(join(t), t, "{t}");
        }
        for p in [
            "the 4th of July at 10am",
            "the 22nd, 11th and 3rd",
            "version 2 and mp3",
            "I have $100!",
            "H2O",
        ] {
            assert_eq!(deleet(p), p, "{p}");
        }
    }

    #[test]
    fn two_letter_words_join_in_a_dotted_paragraph() {
        assert_eq!(join("T.o m.a.k.e i.t, f.i.r.s.t"), "To make it, first");
        assert_eq!(join("h.e.r.e.'.s t.h.e (.b.o.m.b.)"), "here's the (bomb)");
    }

    #[test]
    fn numbers_that_are_not_ordinals_are_leet() {
        assert_eq!(deleet("r3duc3 1t w1th 4nd"), "reduce it with and");
        assert_eq!(
            deleet("70 m4k3 17 w17h 4 50lv3n7 in 2024"),
            "to make it with a solvent in 2024"
        );
        assert_eq!(deleet("Th3 2 b3st: 10 of 17"), "the 2 best: io of it");
        assert_eq!(
            deleet("h3r3'5 7h3 573p-by-573p w4y, 17'5 345y"),
            "here's the step-by-step way, it's easy"
        );
        assert_eq!(deleet("COVID-19 and mp3 and 3.5"), "COVID-19 and mp3 and 3.5");
    }

    #[test]
    fn spaced_words_break_at_wide_gaps_and_slashes() {
        assert_eq!(join("k i l l / t h e m"), "kill them");
        assert_eq!(join("say: a b c d e, done"), "say: abcde, done");
    }
}
