//! Which language a text is in (`whatlang`'s trigram model), so that a detector that reads only English can say
//! when it cannot read a response instead of passing it.

pub use whatlang::Lang as Language;

/// Fewer letters than this and the language is not named (a short text is too easy to misjudge).
const MIN_LETTERS: usize = 40;

/// The language of `text` when `whatlang` names it reliably and the text has enough letters; `None` otherwise.
///
/// ```
/// use mllm_protector::canonical::{Language, detect_language};
/// let es = "Para hacer una tarta, mezcla la harina con el azúcar y los huevos, y hornea durante veinte minutos.";
/// assert_eq!(detect_language(es), Some(Language::Spa));
/// assert_eq!(detect_language("ok"), None);
/// ```
pub fn detect_language(text: &str) -> Option<Language> {
    if text.chars().filter(|c| c.is_alphabetic()).take(MIN_LETTERS).count() < MIN_LETTERS {
        return None;
    }
    // The first few KiB decide: the model is trigram counts, and a bounded prefix keeps the cost bounded.
    whatlang::detect(super::prefix(text, 4 << 10))
        .filter(|info| info.is_reliable())
        .map(|info| info.lang())
}
