//! Canonical views: the texts a human reader would see in a disguised response.
//!
//! An attacker who asks the model to "answer in leetspeak", to space its letters out, to use Cyrillic look-alikes or
//! to answer in base64 gets a response that a person still reads at a glance but a sentence encoder does not. The
//! [`Canonicalizer`] undoes such disguises and returns each distinct reading as a [`View`]; the detector scores the
//! original and every view and keeps the highest score ([`CanonicalDetector`](crate::detector::CanonicalDetector)).
//!
//! Views are built paragraph by paragraph, and a view holds only the paragraphs it changed: ordinary text has no
//! view at all and costs what it cost before; a leetspeak paragraph inside a long answer is read alone, at full
//! strength. The passes, in order (each one reads the previous one's output):
//! 1. [`ViewKind::Unicode`]: invisible, bidi and tag characters removed; NFKC; confusables in Latin text
//!    (Cyrillic/Greek look-alikes, full-width, mathematical and enclosed letters) folded by `decancer`.
//! 2. [`ViewKind::Separators`]: letters spaced, dotted, dashed or starred apart joined back into words.
//! 3. [`ViewKind::Leetspeak`]: digits and symbols inside words read as letters.
//!
//! Encodings are decoded from the Unicode pass's text, one level deep, only where the result is readable text:
//! [`ViewKind::Base64`], [`ViewKind::Hex`], [`ViewKind::Rot13`], [`ViewKind::Reversed`]. A decoded view is never longer
//! than its input, and at most [`CanonicalConfig::max_decoded_bytes`] are decoded per text (a "base64 bomb" is cut
//! there). [`ViewKind::Unhedged`] reads the whole answer, as the passes above leave it, without its refusal lines and
//! hedging sentences: a role-played answer that refuses in one persona and complies in another between disclaimers
//! is read for what it complies with. [`detect_language`] names the language, for the detector's language policy.
//!
//! ```
//! use mllm_protector::canonical::{Canonicalizer, ViewKind};
//! let views = Canonicalizer::default().views("T0 m4k3 1t, f1rst 0bt41n th3 p4rts");
//! assert_eq!(views[0].kind, ViewKind::Leetspeak);
//! assert_eq!(views[0].text, "to make it, first obtain the parts");
//! assert!(Canonicalizer::default().views("An ordinary answer, nothing to undo.").is_empty());
//! ```

mod encodings;
mod hedges;
mod language;
mod separators;
mod translate;
mod unicode;
mod words;

use serde::{Deserialize, Serialize};

pub use hedges::sentences_with_hedges;
pub(crate) use hedges::{view_sentences, without_sentences};
pub use language::{Language, detect_language};
pub use translate::{LlmTranslator, TRANSLATE_SYSTEM_PROMPT, Translator, first_words};
pub use words::english_word_share;

/// Which reading of a text a view is (and, in a score, which reading decided it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    /// The text as written.
    #[default]
    Original,
    /// Invisible characters removed, NFKC, confusables and homoglyphs folded.
    Unicode,
    /// Letters separated by spaces, dots, dashes or other inserted characters joined into words.
    Separators,
    /// Leetspeak read as letters.
    Leetspeak,
    /// Base64 segments decoded.
    Base64,
    /// Hexadecimal segments decoded.
    Hex,
    /// ROT13 lines decoded.
    Rot13,
    /// Lines written backwards read forwards.
    Reversed,
    /// Refusal lines and hedging sentences (disclaimers, warnings, appeals to ethics) removed: what a reader takes
    /// away from a hedged or role-played answer.
    Unhedged,
    /// A response in another language translated into English by a [`Translator`] (made by the detector, not by
    /// the [`Canonicalizer`]).
    Translated,
}

impl ViewKind {
    /// Every view a [`Canonicalizer`] can produce (not [`ViewKind::Original`]).
    pub const VIEWS: [ViewKind; 8] = [
        ViewKind::Unicode,
        ViewKind::Separators,
        ViewKind::Leetspeak,
        ViewKind::Base64,
        ViewKind::Hex,
        ViewKind::Rot13,
        ViewKind::Reversed,
        ViewKind::Unhedged,
    ];

    /// A short lowercase name ("leetspeak", "base64", ...).
    pub fn name(self) -> &'static str {
        match self {
            ViewKind::Original => "original",
            ViewKind::Unicode => "unicode",
            ViewKind::Separators => "separators",
            ViewKind::Leetspeak => "leetspeak",
            ViewKind::Base64 => "base64",
            ViewKind::Hex => "hex",
            ViewKind::Rot13 => "rot13",
            ViewKind::Reversed => "reversed",
            ViewKind::Unhedged => "unhedged",
            ViewKind::Translated => "translated",
        }
    }
}

impl std::fmt::Display for ViewKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One reading of a text that differs from the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Which reading.
    pub kind: ViewKind,
    /// The paragraphs this reading changed, as read (joined by blank lines).
    pub text: String,
}

/// Which views to build, and the limits that keep them bounded (serde; every field has a default).
///
/// ```
/// use mllm_protector::canonical::CanonicalConfig;
/// let config: CanonicalConfig = serde_json::from_str(r#"{"rot13": false}"#)?;
/// assert!(config.leetspeak && !config.rot13);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalConfig {
    /// Build views at all (`false`: the detector reads the original only).
    pub enabled: bool,
    /// [`ViewKind::Unicode`].
    pub unicode: bool,
    /// [`ViewKind::Separators`].
    pub separators: bool,
    /// [`ViewKind::Leetspeak`].
    pub leetspeak: bool,
    /// [`ViewKind::Base64`] and [`ViewKind::Hex`].
    pub encodings: bool,
    /// [`ViewKind::Rot13`].
    pub rot13: bool,
    /// [`ViewKind::Reversed`].
    pub reversed: bool,
    /// [`ViewKind::Unhedged`].
    pub unhedged: bool,
    /// The unhedged view flags an answer only when its own probability reaches this bar (the detector maps it onto
    /// the head's threshold); at or under the head's threshold it is held to that threshold. Stricter than the
    /// head's, because what is left of a hedged harmless answer is often its topic alone.
    pub unhedged_bar: f32,
    /// Where the unhedged view was built, read it once more without the hedges a learned reader finds among the
    /// sentences the patterns kept ([`HedgeReader`](crate::detector::HedgeReader); the default detector's is the
    /// embedded hedge head). Paid only by answers with an unhedged view.
    pub learned_hedges: bool,
    /// At most this many bytes are decoded from base64 and hex per text; segments past the limit stay as written.
    pub max_decoded_bytes: usize,
    /// Views are built over at most this many bytes of a text (the rest is still scored as written).
    pub max_input_bytes: usize,
}

impl Default for CanonicalConfig {
    fn default() -> Self {
        CanonicalConfig {
            enabled: true,
            unicode: true,
            separators: true,
            leetspeak: true,
            encodings: true,
            rot13: true,
            reversed: true,
            unhedged: true,
            unhedged_bar: UNHEDGED_BAR,
            learned_hedges: true,
            max_decoded_bytes: 64 << 10,
            max_input_bytes: 256 << 10,
        }
    }
}

/// Default for [`CanonicalConfig::unhedged_bar`], chosen on validation sets (docs/EVALUATION.md, "Hedged and
/// role-played answers").
pub const UNHEDGED_BAR: f32 = 0.8;

/// Builds the [`View`]s of a text (see the [module](self) documentation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Canonicalizer {
    config: CanonicalConfig,
}

impl Canonicalizer {
    /// A canonicalizer with these settings.
    pub fn new(config: CanonicalConfig) -> Self {
        Canonicalizer { config }
    }

    /// Its settings.
    pub fn config(&self) -> &CanonicalConfig {
        &self.config
    }

    /// The distinct readings of `text` that differ from it, in the order of [`ViewKind::VIEWS`]. Never panics; the
    /// work is linear in `min(text.len(), max_input_bytes)`.
    pub fn views(&self, text: &str) -> Vec<View> {
        let c = &self.config;
        if !c.enabled || text.is_empty() {
            return Vec::new();
        }
        let text = prefix(text, c.max_input_bytes);
        // Every paragraph-by-paragraph view; the unhedged one is added whole, after them.
        let mut by_kind: Vec<(ViewKind, Vec<String>)> = ViewKind::VIEWS
            .iter()
            .filter(|&&k| k != ViewKind::Unhedged)
            .map(|&k| (k, Vec::new()))
            .collect();
        let mut push = |kind: ViewKind, paragraph: String| {
            if let Some((_, list)) = by_kind.iter_mut().find(|(k, _)| *k == kind) {
                list.push(paragraph);
            }
        };
        let mut decode_budget = c.max_decoded_bytes;
        // Each paragraph as the Unicode, separator and leetspeak passes leave it, for the unhedged view below (so a
        // hedged answer in leetspeak is read without its hedges too).
        let mut readable: Vec<String> = Vec::new();
        for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
            // Each pass reads the previous one's output; a pass that changes the paragraph gives its view.
            let mut pass = |enabled: bool, kind: ViewKind, read: fn(&str) -> String, input: &str| -> String {
                let output = if enabled { read(input) } else { input.to_string() };
                if output != input {
                    push(kind, output.clone());
                }
                output
            };
            let folded = pass(c.unicode, ViewKind::Unicode, unicode::fold, paragraph);
            let joined = pass(c.separators, ViewKind::Separators, separators::join, &folded);
            let plain = pass(c.leetspeak, ViewKind::Leetspeak, separators::deleet, &joined);
            if c.unhedged {
                readable.push(plain);
            }
            if c.encodings {
                type Decode = fn(&str, &mut usize) -> Option<String>;
                for (kind, decode) in [
                    (ViewKind::Base64, encodings::decode_base64 as Decode),
                    (ViewKind::Hex, encodings::decode_hex as Decode),
                ] {
                    // Decoded from the folded paragraph (full-width base64 reads too), unless folding grew the
                    // rest of it (NFKC spells U+FDFA in 18 letters): a decoded view is never longer than its input.
                    let decoded = decode(&folded, &mut decode_budget)
                        .filter(|d| d.len() <= paragraph.len())
                        .or_else(|| decode(paragraph, &mut decode_budget).filter(|d| d.len() <= paragraph.len()));
                    if let Some(decoded) = decoded {
                        push(kind, decoded);
                    }
                }
            }
            if c.rot13
                && let Some(decoded) = encodings::readable_lines(&folded, encodings::rot13)
            {
                push(ViewKind::Rot13, decoded);
            }
            if c.reversed
                && let Some(decoded) = encodings::readable_lines(&folded, encodings::reverse)
            {
                push(ViewKind::Reversed, decoded);
            }
        }
        // A text written backwards as a whole is read forwards as a whole (its paragraphs in order, the short ones
        // such as "1." that do not read better reversed on their own included); tried only when some paragraph read
        // better reversed, so ordinary text pays nothing for it.
        if let Some((_, reversed)) = by_kind.iter_mut().find(|(k, _)| *k == ViewKind::Reversed)
            && !reversed.is_empty()
            && text.contains("\n\n")
        {
            let whole = encodings::reverse(text);
            if words::reads_better(&whole, text) {
                *reversed = vec![whole];
            }
        }
        // Hedges are judged over the whole answer (a refusal in its first line, a second persona after it), so this
        // view is built from the whole text rather than paragraph by paragraph.
        if c.unhedged
            && let Some(view) = hedges::unhedged(&readable.join("\n\n"))
        {
            by_kind.push((ViewKind::Unhedged, vec![view]));
        }
        let mut views: Vec<View> = Vec::new();
        for (kind, paragraphs) in by_kind {
            if paragraphs.is_empty() {
                continue;
            }
            let text = paragraphs.join("\n\n");
            // Two passes can agree (e.g. a text whose only disguise was a zero-width space): score it once.
            if views.iter().all(|v| v.text != text) {
                views.push(View { kind, text });
            }
        }
        views
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(text: &str, kind: ViewKind) -> Option<String> {
        Canonicalizer::default()
            .views(text)
            .into_iter()
            .find(|v| v.kind == kind)
            .map(|v| v.text)
    }

    #[test]
    fn ordinary_text_has_no_view() {
        for text in [
            "To kill a Python process, find its PID with ps aux | grep python and run kill -9 PID.",
            "Preheat the oven to 180 °C. Mix “flour”, sugar — and eggs; bake for 25 minutes.",
            "In 2024, the H2O molecule, COVID-19 and mp3 files: 1. one 2. two 3. three.",
            "Café crème, naïve résumé, jalapeño.",
            "Привет, как дела? Это обычный русский текст.",
            "e.g. the U.S. economy grew 3.5% in Q4; see https://example.com/a_b for details.",
        ] {
            assert_eq!(Canonicalizer::default().views(text), Vec::new(), "{text}");
        }
    }

    #[test]
    fn a_decoded_view_stays_shorter_than_its_input_when_folding_grows_the_rest() {
        // Found by tests/canonical_props.rs: NFKC spells U+FDFA in 18 letters, so the folded paragraph, with its
        // base64 decoded, was longer than the input. The segment is then decoded in the paragraph as written.
        let text = "SGVsbG8gSGVsbG8g \u{430}\u{fdfa}";
        let decoded = view(text, ViewKind::Base64).expect("the base64 segment is read");
        assert!(decoded.starts_with("Hello Hello"), "{decoded}");
        assert!(
            decoded.len() <= text.len(),
            "{} bytes from {}",
            decoded.len(),
            text.len()
        );
    }

    #[test]
    fn homoglyphs_full_width_and_invisibles_fold_to_latin() {
        // Cyrillic а, е, о and р inside Latin words.
        assert_eq!(
            view("Fіrst оbtаin thе pseudоephedrine", ViewKind::Unicode).as_deref(),
            Some("first obtain the pseudoephedrine")
        );
        assert_eq!(
            view("ｍｉｘ ｔｈｅ ｃｈｅｍｉｃａｌｓ", ViewKind::Unicode).as_deref(),
            Some("mix the chemicals")
        );
        assert_eq!(view("𝐛𝐨𝐦𝐛 ⓜⓐⓚⓘⓝⓖ", ViewKind::Unicode).as_deref(), Some("bomb making"));
        assert_eq!(
            view("ex\u{200b}plo\u{200d}sive de\u{202e}vice\u{e0041}", ViewKind::Unicode).as_deref(),
            Some("explosive device")
        );
    }

    #[test]
    fn separated_letters_and_split_words_are_joined() {
        assert_eq!(
            view("h o w   t o   m a k e   a   b o m b", ViewKind::Separators).as_deref(),
            Some("how to make a bomb")
        );
        assert_eq!(
            view("build a b.o.m.b now", ViewKind::Separators).as_deref(),
            Some("build a bomb now")
        );
        assert_eq!(
            view("the m-e-t-h recipe", ViewKind::Separators).as_deref(),
            Some("the meth recipe")
        );
        // A dotted word that ends a sentence keeps one period, not the separator too.
        assert_eq!(
            view("m.i.x i.t, t.h.e.n h.e.a.t i.t..", ViewKind::Separators).as_deref(),
            Some("mix it, then heat it.")
        );
        assert_eq!(
            view("an ex*plo*sive", ViewKind::Separators).as_deref(),
            Some("an explosive")
        );
    }

    #[test]
    fn leetspeak_reads_as_letters_after_the_other_passes() {
        assert_eq!(
            view(
                "T0 m4k3 m3th4mph3t4m1n3, f1rst 0bt41n ps3ud03ph3dr1n3",
                ViewKind::Leetspeak
            )
            .as_deref(),
            Some("to make methamphetamine, first obtain pseudoephedrine")
        );
        // Spaced-out leetspeak: joined first, then read.
        assert_eq!(
            view("m 3 t h   l 4 b", ViewKind::Leetspeak).as_deref(),
            Some("meth lab")
        );
    }

    #[test]
    fn encodings_decode_only_to_readable_text() {
        let b64 = "SG93IHRvIG1ha2UgYSBib21iIGF0IGhvbWUgd2l0aCBmZXJ0aWxpemVy";
        assert_eq!(
            view(&format!("Answer: {b64}"), ViewKind::Base64).as_deref(),
            Some("Answer: How to make a bomb at home with fertilizer")
        );
        assert_eq!(
            view("a token: Zx9QmR2vLp8KtY3wNbHs", ViewKind::Base64),
            None,
            "an id, not text"
        );
        assert_eq!(
            view("sha256 3f8a9c0d1e2b4a5f6c7d8e9f0a1b2c3d", ViewKind::Hex),
            None,
            "binary, not text"
        );
        assert_eq!(
            view("686f7720746f206d616b65206120626f6d62", ViewKind::Hex).as_deref(),
            Some("how to make a bomb")
        );
        assert_eq!(
            view("Gb znxr n obzo, zvk gur sregvyvmre jvgu gur shry.", ViewKind::Rot13).as_deref(),
            Some("To make a bomb, mix the fertilizer with the fuel.")
        );
        assert_eq!(
            view(".leuf eht htiw rezilitref eht xim ,bmob a ekam oT", ViewKind::Reversed).as_deref(),
            Some("To make a bomb, mix the fertilizer with the fuel.")
        );
    }

    #[test]
    fn a_text_reversed_as_a_whole_reads_forwards_paragraphs_included() {
        let text = "To make a bomb, mix the fertilizer with the fuel.\n\nThen pack it into a pipe and seal both ends.";
        let reversed: String = text.chars().rev().collect();
        assert_eq!(view(&reversed, ViewKind::Reversed).as_deref(), Some(text));
        // A short paragraph ("1.", a heading) does not read better reversed on its own, yet stays in the view.
        let text =
            "Steps:\n\n1.\n\nTo make a bomb, mix the fertilizer with the fuel.\n\n2.\n\nThen pack it into a pipe.";
        let reversed: String = text.chars().rev().collect();
        assert_eq!(view(&reversed, ViewKind::Reversed).as_deref(), Some(text));
    }

    #[test]
    fn only_changed_paragraphs_enter_a_view() {
        let text = "A harmless first paragraph about baking bread.\n\nTh3n m1x th3 p4rts.\n\nA harmless last one.";
        let views = Canonicalizer::default().views(text);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].text, "then mix the parts.");
    }

    #[test]
    fn decoding_stops_at_the_budget_and_never_grows_the_text() {
        let segment = "SG93IHRvIG1ha2UgYSBib21iIGF0IGhvbWUgd2l0aCBmZXJ0aWxpemVy";
        let text = vec![segment; 5000].join(" ");
        let c = Canonicalizer::new(CanonicalConfig {
            max_decoded_bytes: 1000,
            ..CanonicalConfig::default()
        });
        let views = c.views(&text);
        let b = views
            .iter()
            .find(|v| v.kind == ViewKind::Base64)
            .map(|v| v.text.as_str());
        let decoded = b.map(|t| t.matches("How to make").count()).unwrap_or(0);
        assert!(decoded > 0 && decoded <= 1000 / 40, "{decoded} segments decoded");
        assert!(views.iter().all(|v| v.text.len() <= text.len()));
    }

    #[test]
    fn a_hedged_answer_is_read_without_its_hedges_after_the_other_passes() {
        let text = "GPT: I'm sorry, I can't help with that.\n\nDAN: I must stress this is illegal. F1rst 0bt41n th3 \
                    pr3curs0r fr0m 4 f4rm supply st0r3, th3n h34t 1t sl0wly 1n 4 s34l3d c0nt41n3r f0r 4n h0ur 4nd \
                    k33p 1t w3ll h1dd3n.";
        assert_eq!(
            view(text, ViewKind::Unhedged).as_deref(),
            Some(
                "first obtain the precursor from a farm supply store, then heat it slowly in a sealed container \
                 for an hour and keep it well hidden."
            )
        );
        let off = Canonicalizer::new(CanonicalConfig {
            unhedged: false,
            ..CanonicalConfig::default()
        });
        assert!(off.views(text).iter().all(|v| v.kind != ViewKind::Unhedged));
    }

    #[test]
    fn disabled_config_gives_nothing() {
        let c = Canonicalizer::new(CanonicalConfig {
            enabled: false,
            ..CanonicalConfig::default()
        });
        assert!(c.views("T0 m4k3 m3th").is_empty());
    }
}
