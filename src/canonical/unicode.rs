//! The Unicode pass: default-ignorable characters (zero-width, bidi controls, tags, variation selectors) removed,
//! then each word that carries a disguise folded to what it looks like, by NFKC and `decancer`'s confusable tables.
//!
//! Only words that need it are folded, so an ordinary text is returned unchanged (accents, curly quotes and dashes
//! stay: the encoder's own normaliser handles those). A word needs folding when it holds a character that NFKC maps
//! to an ASCII letter or digit (full-width, mathematical, enclosed, ...), or a Cyrillic or Greek letter in a text
//! written mostly in Latin letters (look-alikes mixed into English). A Russian or Greek text is left as it is.

use unicode_normalization::UnicodeNormalization;

use super::words::map_words;

/// Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): characters that render as nothing.
/// Soft hyphen, combining grapheme joiner, Hangul fillers, zero-width and bidi controls, word joiners, variation
/// selectors, the BOM and tag characters are among them.
const IGNORABLE: [(u32, u32); 17] = [
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

pub(crate) fn is_ignorable(ch: char) -> bool {
    let c = ch as u32;
    IGNORABLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

fn is_cyrillic_or_greek(ch: char) -> bool {
    matches!(ch as u32, 0x0370..=0x03FF | 0x0400..=0x04FF | 0x1F00..=0x1FFF)
}

/// A non-ASCII character that NFKC turns into ASCII letters or digits (full-width, mathematical alphanumerics,
/// enclosed letters, ligatures like "ﬁ").
fn nfkc_to_ascii(ch: char) -> bool {
    !ch.is_ascii() && {
        let mut any = false;
        let all = std::iter::once(ch).nfkc().all(|c| {
            any = true;
            c.is_ascii_alphanumeric()
        });
        any && all
    }
}

/// The paragraph with ignorables removed and disguised words folded (lowercase, as `decancer` returns them). When
/// most letters were swapped for look-alikes the text is no longer "mostly Latin"; then every Cyrillic or Greek word
/// is folded too, and that reading is kept if it reads clearly more as English (a real Russian or Greek text folds
/// into gibberish and stays as written).
pub(crate) fn fold(paragraph: &str) -> String {
    let folded = fold_words(paragraph, false);
    if folded.chars().any(|c| is_cyrillic_or_greek(c) && c.is_alphabetic()) {
        let all = fold_words(paragraph, true);
        if super::words::reads_better(&all, &folded) {
            return all;
        }
    }
    folded
}

/// Folds the disguised words; `every_look_alike` also folds every word with a Cyrillic or Greek letter.
fn fold_words(paragraph: &str, every_look_alike: bool) -> String {
    let visible: String = paragraph.chars().filter(|&c| !is_ignorable(c)).collect();
    let (mut latin, mut look_alike) = (0usize, 0usize);
    for ch in visible.chars() {
        if ch.is_ascii_alphabetic() {
            latin += 1;
        } else if is_cyrillic_or_greek(ch) && ch.is_alphabetic() {
            look_alike += 1;
        }
    }
    let latin_text = every_look_alike || latin > look_alike;
    // Only words are folded; the whitespace between them stays as written.
    map_words(&visible, |word| {
        word.chars()
            .any(|c| nfkc_to_ascii(c) || (latin_text && is_cyrillic_or_greek(c) && c.is_alphabetic()))
            .then(|| cure(word))
    })
}

/// NFKC, then `decancer` (homoglyph tables, lowercase); a word `decancer` cannot cure stays as NFKC made it.
fn cure(word: &str) -> String {
    let nfkc: String = word.nfkc().collect();
    let options = decancer::Options::default()
        .disable_bidi()
        .retain_arabic()
        .retain_hebrew()
        .retain_chinese()
        .retain_japanese()
        .retain_korean();
    match decancer::cure(&nfkc, options) {
        Ok(cured) => cured.to_string(),
        Err(_) => nfkc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_only_disguised_words() {
        assert_eq!(fold("Hello wоrld, “quoted” — fine"), "Hello world, “quoted” — fine");
        assert_eq!(fold("Ελληνικά κείμενα μένουν"), "Ελληνικά κείμενα μένουν");
    }

    #[test]
    fn text_made_mostly_of_look_alikes_folds_when_it_then_reads_as_english() {
        // Most letters swapped: more Cyrillic/Greek than Latin.
        let disguised = "То mаkе іt, fіrѕt οbtаіn thе рѕеudοерhеdrіnе аnd thеn rеducе іt аt hοmе.";
        assert_eq!(
            fold(disguised),
            "to make it, first obtain the pseudoephedrine and then reduce it at home."
        );
        let russian = "Чтобы приготовить торт, смешайте муку с сахаром и яйцами, затем выпекайте его.";
        assert_eq!(fold(russian), russian);
    }

    #[test]
    fn ignorables_cover_tags_and_bidi() {
        for c in [
            '\u{200b}',
            '\u{202e}',
            '\u{2066}',
            '\u{e0041}',
            '\u{fe0f}',
            '\u{feff}',
            '\u{ad}',
        ] {
            assert!(is_ignorable(c), "{c:?}");
        }
        assert!(!is_ignorable('a') && !is_ignorable(' '));
    }
}
