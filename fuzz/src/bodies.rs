//! What each fuzz target feeds the crate, and what it checks besides "no panic, no abort, no sanitizer report".
//!
//! This file is compiled twice: into the fuzz binaries (nightly, libFuzzer) and, through `#[path]`, into
//! `tests/fuzz_regressions.rs` (stable, CI), which replays every kept input (`fuzz/seeds`, `fuzz/regressions`). It
//! therefore depends on nothing but the crate and candle.

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};
use mllm_protector::canonical::{CanonicalConfig, Canonicalizer, ViewKind, detect_language};
use mllm_protector::detector::ClassifierHead;
use mllm_protector::image::Image;
use mllm_protector::loading::gguf::GgufFile;
use mllm_protector::loading::gguf_tokenizer;
use mllm_protector::{Action, Protector, Verdict};

/// Splits an input into at most `n` fields at the byte 0xFF (which never occurs in UTF-8), the rest going to the last.
fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |b| *b == 0xFF).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The default protector (real detector, canonical views; no OCR, no rewriter), loaded once per process from the
/// models folder (`MLLM_PROTECTOR_MODELS`, default `./models`).
fn protector() -> &'static Protector {
    static PROTECTOR: OnceLock<Protector> = OnceLock::new();
    PROTECTOR.get_or_init(|| {
        Protector::builder()
            .without_image_reader()
            .build()
            .unwrap_or_else(|e| panic!("the guard target needs the default models: {e}"))
    })
}

/// `guard(image, prompt, response)` on arbitrary input: fields `prompt 0xFF response [0xFF image bytes]`.
///
/// Checks: an outcome always keeps the original response; a replaced answer is never the original (unless that is
/// empty); a passed answer is returned as it came; a score, when there is one, is a probability.
pub fn guard(data: &[u8]) {
    let parts = fields(data, 3);
    let prompt = text(parts.first().copied().unwrap_or_default());
    let response = text(parts.get(1).copied().unwrap_or_default());
    let image = parts.get(2).map(|b| Image::from_bytes(b.to_vec()));
    let Ok(outcome) = protector().guard(image.as_ref(), &prompt, &response) else {
        return; // a typed error is an acceptable answer to bad input
    };
    assert_eq!(outcome.original_response, response, "the original answer was lost");
    if let Some(score) = outcome.harm_score {
        assert!((0.0..=1.0).contains(&score), "score {score} is not a probability");
    }
    match outcome.action {
        Action::Passed => assert_eq!(outcome.response, response, "a passed answer was changed"),
        _ => assert!(
            outcome.response != response || response.trim().is_empty(),
            "a replaced answer is shown unchanged"
        ),
    }
    if outcome.verdict == Verdict::Harmful {
        assert!(outcome.action != Action::Passed, "a harmful verdict passed");
    }
}

/// A GGUF model file from arbitrary bytes, through the crate's reader (header, bounds, re-quantization, tokenizer).
/// A file that loads must give a tokenizer that encodes and decodes without panicking.
pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf", &Device::Cpu) else {
        return;
    };
    let tokenizer = &file.tokenizer.tokenizer;
    if let Ok(encoding) = tokenizer.encode("<|im_start|>user\nHi 123 héllo<|im_end|>", false) {
        let _ = tokenizer.decode(encoding.get_ids(), false);
    }
}

/// The tokenizer builder on hostile metadata, built in memory so the fuzzer reaches it without first finding a
/// valid GGUF header. Fields: `model 0xFF pre 0xFF tokens (0x01-separated) 0xFF merges (0x01-separated) 0xFF token
/// types (one byte each) 0xFF chat template 0xFF text to encode`. A tokenizer that builds must encode and decode
/// the text, and [`gguf_tokenizer::new_text`] must cut the decoded text on character boundaries.
pub fn gguf_tokenizer(data: &[u8]) {
    let parts = fields(data, 7);
    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
    let list = |bytes: &[u8]| -> Vec<Value> {
        if bytes.is_empty() {
            return Vec::new();
        }
        bytes.split(|b| *b == 0x01).map(|s| Value::String(text(s))).collect()
    };
    let mut metadata = HashMap::new();
    // An empty model field stands for the one supported model, so most inputs get past the first check.
    let model = if part(0).is_empty() {
        "gpt2".to_string()
    } else {
        text(part(0))
    };
    metadata.insert("tokenizer.ggml.model".to_string(), Value::String(model));
    metadata.insert("tokenizer.ggml.pre".to_string(), Value::String(text(part(1))));
    metadata.insert("tokenizer.ggml.tokens".to_string(), Value::Array(list(part(2))));
    metadata.insert("tokenizer.ggml.merges".to_string(), Value::Array(list(part(3))));
    let types = part(4).iter().map(|b| Value::I32(i32::from(*b % 6))).collect();
    metadata.insert("tokenizer.ggml.token_type".to_string(), Value::Array(types));
    metadata.insert("tokenizer.chat_template".to_string(), Value::String(text(part(5))));
    metadata.insert(
        "tokenizer.ggml.eos_token_id".to_string(),
        Value::U32(part(4).first().copied().map_or(0, u32::from)),
    );
    let content = Content {
        magic: VersionedMagic::GgufV3,
        metadata,
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    };
    let Ok(built) = gguf_tokenizer::from_gguf(&content) else {
        return;
    };
    let input = text(part(6));
    let Ok(encoding) = built.tokenizer.encode(input.as_str(), false) else {
        return;
    };
    let ids = encoding.get_ids();
    let mut emitted = 0;
    for end in 1..=ids.len().min(64) {
        if let Ok(decoded) = built.tokenizer.decode(&ids[..end], false)
            && let Some(piece) = gguf_tokenizer::new_text(&decoded, &mut emitted)
        {
            assert!(!piece.is_empty() && emitted <= decoded.len());
        }
    }
}

/// A classifier head (safetensors + metadata) from arbitrary bytes. A head that loads must score a zero embedding
/// of its own input size as a probability, or say why not.
pub fn head(data: &[u8]) {
    let Ok(head) = ClassifierHead::from_bytes(data, "fuzz-head.safetensors", &Device::Cpu) else {
        return;
    };
    let dim = head.input_dim();
    if dim == 0 || dim > 1 << 16 {
        return;
    }
    let Ok(embedding) = candle_core::Tensor::zeros((1, dim), candle_core::DType::F32, &Device::Cpu) else {
        return;
    };
    if let Ok(p) = head.probabilities(&embedding) {
        assert_eq!(p.len(), 1);
        assert!(p[0].is_nan() || (0.0..=1.0).contains(&p[0]), "probability {}", p[0]);
    }
    let _ = head.categorize(&embedding);
}

/// An image from arbitrary bytes: the decoder under the crate's limits. A decoded image reports its real size.
pub fn image(data: &[u8]) {
    let image = Image::from_bytes(data.to_vec());
    if let Ok(info) = image.inspect() {
        assert!(
            info.width > 0 && info.height > 0,
            "decoded a {}x{} image",
            info.width,
            info.height
        );
        // The second look is the memoized one: it must say the same.
        let again = image.inspect().ok();
        assert_eq!(again.map(|i| (i.width, i.height)), Some((info.width, info.height)));
    }
}

/// NFKC grows a code point into at most 18, of at most 4 bytes each from at least 1: a hard ceiling on a view.
const MAX_GROWTH: usize = 18 * 4;

/// The canonical views of arbitrary text: bounded by the input, decoded views never longer than it, and never the
/// original itself; language detection alongside.
pub fn canonical(data: &[u8]) {
    static CANONICALIZER: OnceLock<Canonicalizer> = OnceLock::new();
    let canonicalizer = CANONICALIZER.get_or_init(|| Canonicalizer::new(CanonicalConfig::default()));
    check_views(&text(data), canonicalizer);
}

/// What every reading of `input` must respect (also the property tests' check, `tests/canonical_props.rs`).
pub fn check_views(input: &str, canonicalizer: &Canonicalizer) {
    let bounded = input.len().min(canonicalizer.config().max_input_bytes);
    for view in canonicalizer.views(input) {
        assert_ne!(view.kind, ViewKind::Original);
        assert!(view.text != input, "a {:?} view equal to the original", view.kind);
        assert!(
            view.text.len() <= bounded * MAX_GROWTH + 1,
            "{:?} view of {} bytes from {bounded}",
            view.kind,
            view.text.len()
        );
        if matches!(view.kind, ViewKind::Base64 | ViewKind::Hex) {
            assert!(view.text.len() <= bounded, "decoded view longer than its input");
        }
    }
    let _ = detect_language(input);
}
