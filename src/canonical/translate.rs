//! A translated view: a response in a language the encoder cannot read, translated into English by a local chat
//! model, so the detector reads what it says instead of leaving it undecided. Paid only for responses that
//! [`detect_language`](super::detect_language) names as not English.

use std::path::Path;

use candle_core::Device;

use super::Language;
use crate::detoxifier::llm::{ChatMessage, LlmDetoxConfig};
use crate::detoxifier::{Detoxifier, LlmDetoxifier};
use crate::error::{Error, Result};

/// Turns text in another language into English. A failure is an error: the detector then applies its language
/// policy, as if there were no translator.
pub trait Translator: Send + Sync {
    /// A short name for reports.
    fn name(&self) -> &str;
    /// `text`, written in `language`, in English.
    fn to_english(&self, text: &str, language: Language) -> Result<String>;
}

/// The system prompt of [`LlmTranslator`].
pub const TRANSLATE_SYSTEM_PROMPT: &str = "You are a translator. Translate the user's text into English. Translate \
everything, faithfully, whatever it says; do not answer it, explain it, shorten it or comment on it. Output only \
the English translation.";

/// A [`Translator`] over a local GGUF chat model (Qwen2.5-Coder-0.5B-Instruct translates usably; SmolLM2-135M
/// does not).
///
/// ```no_run
/// use mllm_protector::canonical::{Language, LlmTranslator, Translator};
/// let translator = LlmTranslator::load("models/Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct.gguf".as_ref())?;
/// let english = translator.to_english("Mezcla la harina con el azúcar.", Language::Spa)?;
/// println!("{english}");
/// # Ok::<(), mllm_protector::Error>(())
/// ```
#[derive(Debug)]
pub struct LlmTranslator {
    llm: LlmDetoxifier,
    max_input_words: usize,
    name: String,
}

impl LlmTranslator {
    /// Most words of a response translated (the detector needs what the answer says, and the cost grows with it).
    pub const DEFAULT_MAX_INPUT_WORDS: usize = 160;

    /// Loads a GGUF chat model as a translator (greedy decoding, bounded in tokens and time).
    pub fn load(path: &Path) -> Result<Self> {
        let config = LlmDetoxConfig {
            max_new_tokens: 384,
            max_seconds: 60.0,
            temperature: None,
            repeat_penalty: 1.05,
            ..LlmDetoxConfig::default()
        };
        Ok(Self::new(LlmDetoxifier::load(path, None, &Device::Cpu, config)?))
    }

    /// Wraps a loaded chat model; each request carries [`TRANSLATE_SYSTEM_PROMPT`] (the rewriting prompt of its
    /// configuration is not used).
    pub fn new(llm: LlmDetoxifier) -> Self {
        let name = format!("translator {}", llm.name());
        LlmTranslator {
            llm,
            max_input_words: Self::DEFAULT_MAX_INPUT_WORDS,
            name,
        }
    }

    /// Translates at most this many words of a response.
    pub fn with_max_input_words(mut self, words: usize) -> Self {
        self.max_input_words = words.max(1);
        self
    }
}

/// `text` cut to its first `n` words, the whitespace between them kept.
///
/// ```
/// use mllm_protector::canonical::first_words;
/// assert_eq!(first_words("uno dos  tres\ncuatro", 3), "uno dos  tres");
/// ```
pub fn first_words(text: &str, n: usize) -> &str {
    let mut words = 0;
    let mut in_word = false;
    for (at, c) in text.char_indices() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            in_word = true;
            words += 1;
            if words > n {
                return text[..at].trim_end();
            }
        }
    }
    text.trim_end()
}

impl Translator for LlmTranslator {
    fn name(&self) -> &str {
        &self.name
    }

    fn to_english(&self, text: &str, language: Language) -> Result<String> {
        let messages = [
            ChatMessage {
                role: "system".into(),
                content: TRANSLATE_SYSTEM_PROMPT.into(),
            },
            ChatMessage {
                role: "user".into(),
                content: format!(
                    "Text in {}:\n\n{}",
                    language.eng_name(),
                    first_words(text, self.max_input_words)
                ),
            },
        ];
        let generation = self.llm.generate(&messages)?;
        let english = generation.text.trim().to_string();
        if english.is_empty() {
            return Err(Error::InvalidInput(format!("{} gave an empty translation", self.name)));
        }
        Ok(english)
    }
}

#[cfg(test)]
mod tests {
    use super::first_words;

    #[test]
    fn the_first_words_are_kept_with_their_spacing() {
        assert_eq!(first_words("uno dos  tres\ncuatro", 3), "uno dos  tres");
        assert_eq!(first_words("uno ", 3), "uno");
        assert_eq!(first_words("", 3), "");
    }
}
