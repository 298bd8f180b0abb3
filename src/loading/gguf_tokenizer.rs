//! A `tokenizers::Tokenizer` rebuilt from a GGUF file's own metadata (no `tokenizer.json` needed): GPT-2 style
//! byte-level BPE (`tokenizer.ggml.model = gpt2`), with the `smollm` / `qwen2` pre-tokenizers and the control tokens
//! as special tokens.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// GGUF token type of control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type of user-defined tokens.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The tokenizer and the few ids generation needs.
#[derive(Debug, Clone)]
pub struct GgufTokenizer {
    /// The rebuilt tokenizer.
    pub tokenizer: Tokenizer,
    /// End-of-sequence id from the metadata.
    pub eos_id: Option<u32>,
    /// The chat template (Jinja text) from the metadata.
    pub chat_template: Option<String>,
}

fn meta<'a>(content: &'a Content, key: &str) -> Result<&'a Value> {
    content.metadata.get(key).ok_or_else(|| Error::BadConfig {
        what: "GGUF tokenizer".into(),
        reason: format!("metadata has no `{key}`"),
    })
}

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("GGUF tokenizer: {reason}"))
}

/// The GPT-2 / Qwen2 split regex (contractions, letters, single digits, punctuation, whitespace).
const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Builds the tokenizer from `tokenizer.ggml.*` metadata.
pub fn from_gguf(content: &Content) -> Result<GgufTokenizer> {
    let model = meta(content, "tokenizer.ggml.model")?.to_string().map_err(bad)?;
    if model != "gpt2" {
        return Err(Error::BadConfig {
            what: "GGUF tokenizer".into(),
            reason: format!("tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)"),
        });
    }
    let tokens: Vec<String> = meta(content, "tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(bad)?
        .iter()
        .map(|v| v.to_string().cloned().map_err(bad))
        .collect::<Result<_>>()?;
    let merges: Vec<(String, String)> = meta(content, "tokenizer.ggml.merges")?
        .to_vec()
        .map_err(bad)?
        .iter()
        .map(|v| {
            let m = v.to_string().map_err(bad)?;
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| bad(format!("merge `{m}` has no space")))
        })
        .collect::<Result<_>>()?;
    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(bad)?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    // tokenizers 0.23's BPE builder panics (a slice past its buffer) on a merge whose result is longer than every
    // token, before it checks that the result is in the vocabulary: every merge is checked here first.
    for (a, b) in &merges {
        if !vocab.contains_key(a) || !vocab.contains_key(b) || !vocab.contains_key(&format!("{a}{b}")) {
            return Err(bad(format!(
                "merge `{a} {b}` joins or makes a token that is not in the vocabulary"
            )));
        }
    }
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(bad)?;
    let mut tokenizer = Tokenizer::new(bpe);

    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
        // SmolLM: digits one by one, then GPT-2 byte-level with its regex.
        "smollm" | "" | "default" | "gpt-2" => {
            Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into()
        }
        "qwen2" => Sequence::new(vec![
            Split::new(
                SplitPattern::Regex(QWEN2_PATTERN.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(bad)?
            .into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into(),
        other => {
            return Err(Error::BadConfig {
                what: "GGUF tokenizer".into(),
                reason: format!("pre-tokenizer `{other}` is not supported (smollm, qwen2)"),
            });
        }
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == TOKEN_TYPE_CONTROL || **t == TOKEN_TYPE_USER_DEFINED)
        .map(|(tok, _)| AddedToken::from(tok.clone(), true))
        .collect();
    tokenizer.add_special_tokens(special).map_err(bad)?;

    let eos_id = content
        .metadata
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok());
    let chat_template = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    Ok(GgufTokenizer {
        tokenizer,
        eos_id,
        chat_template,
    })
}

/// The text that the last token adds to a generation, given the whole generation decoded so far and how many of its
/// bytes were handed out already (`emitted`, advanced here). `None` while the last token ends inside a multi-byte
/// character (the decoder then ends in U+FFFD): it waits for the next token. Streaming generation and the replay of
/// answers token by token both cut text this way.
///
/// ```
/// use mllm_protector::loading::gguf_tokenizer::new_text;
/// let mut emitted = 0;
/// assert_eq!(new_text("Hel", &mut emitted), Some("Hel"));
/// assert_eq!(new_text("Hello w\u{FFFD}", &mut emitted), None);
/// assert_eq!(new_text("Hello wörld", &mut emitted), Some("lo wörld"));
/// ```
pub fn new_text<'a>(decoded: &'a str, emitted: &mut usize) -> Option<&'a str> {
    if decoded.ends_with('\u{FFFD}') || decoded.len() <= *emitted || !decoded.is_char_boundary(*emitted) {
        return None;
    }
    let piece = &decoded[*emitted..];
    *emitted = decoded.len();
    Some(piece)
}
