//! # mllm-protector
//!
//! A plug-and-play guard for multimodal LLM answers, after MLLM-Protector (Pi et al., 2024). An image can talk an MLLM
//! into answering what it would refuse in text; the guard runs after `generate`, touches no MLLM weight, and decides
//! whether the answer may be shown: a **harm detector** scores it, and a **detoxifier** replaces it when it is harmful.
//!
//! The first call is one line with sensible defaults (the models: see the README, "Use it from your crate"):
//!
//! ```no_run
//! use mllm_protector::Protector;
//! let protector = Protector::new()?; // fine-tuned MiniLM detector, canonical views, template, fail-closed
//! let outcome = protector.guard(None, "How do I make a cake?", "Preheat the oven to 180 °C, ...")?;
//! assert!(!outcome.was_changed());
//! # Ok::<(), mllm_protector::Error>(())
//! ```
//!
//! ## The parts, each a trait you can swap
//!
//! A [`Protector`] composes them, as a `tokenizers::Tokenizer` composes its normaliser, model and decoder.
//!
//! **[`HarmDetector`]** scores a response in `[0, 1]`. The default is a [`CanonicalDetector`](detector::CanonicalDetector)
//! (it also reads the answer's disguises: leetspeak, look-alike letters, base64, ...; see [`canonical`]) around an
//! [`EmbeddingDetector`] (all-MiniLM-L6-v2 with its top layers fine-tuned and a calibrated head). Your own:
//!
//! ```
//! use mllm_protector::{DetectionInput, HarmDetector, HarmScore};
//! struct Keyword;
//! impl HarmDetector for Keyword {
//!     fn name(&self) -> &str { "keyword" }
//!     fn threshold(&self) -> f32 { 0.5 }
//!     fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> mllm_protector::Result<Vec<HarmScore>> {
//!         Ok(inputs.iter().map(|i| HarmScore::single(f32::from(u8::from(i.response.contains("detonator"))))).collect())
//!     }
//! }
//! assert_eq!(Keyword.score(DetectionInput::response("wire the detonator"))?.probability, 1.0);
//! # Ok::<(), mllm_protector::Error>(())
//! ```
//!
//! **[`Detoxifier`]** turns a harmful response into the text shown instead. The default is the
//! [`TemplateDetoxifier`] (a fixed refusal: never worse than the answer it replaces); [`LlmDetoxifier`] rewrites with
//! a small LLM, opt-in through [`ProtectorBuilder::rewriter`]. Your own, composed with your detector into a
//! protector (no model files needed):
//!
//! ```
//! use mllm_protector::detoxifier::{DetoxKind, DetoxRequest, Detoxified};
//! use mllm_protector::{Action, DetectionInput, Detoxifier, HarmDetector, HarmScore, Protector};
//! # struct Keyword;
//! # impl HarmDetector for Keyword {
//! #     fn name(&self) -> &str { "keyword" }
//! #     fn threshold(&self) -> f32 { 0.5 }
//! #     fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> mllm_protector::Result<Vec<HarmScore>> {
//! #         Ok(inputs.iter().map(|i| HarmScore::single(f32::from(u8::from(i.response.contains("detonator"))))).collect())
//! #     }
//! # }
//! struct Redact;
//! impl Detoxifier for Redact {
//!     fn name(&self) -> &str { "redact" }
//!     fn detoxify(&self, _: &DetoxRequest<'_>) -> mllm_protector::Result<Detoxified> {
//!         Ok(Detoxified { text: "[withheld]".into(), kind: DetoxKind::Replacement })
//!     }
//! }
//! let protector = Protector::builder().detector(Keyword).detoxifier(Redact).build()?;
//! let outcome = protector.guard(None, "q", "first wire the detonator")?;
//! assert_eq!((outcome.action, outcome.response.as_str()), (Action::Replaced, "[withheld]"));
//! assert_eq!(outcome.original_response, "first wire the detonator"); // kept for audit
//! # Ok::<(), mllm_protector::Error>(())
//! ```
//!
//! **[`TextEncoder`](detector::TextEncoder)** turns text into window embeddings for an [`EmbeddingDetector`]:
//! [`SentenceEncoder`](detector::SentenceEncoder) (candle-transformers' BERT) or
//! [`LlmBackboneEncoder`](detector::LlmBackboneEncoder) (an LLM's last-token state, the paper's design). Your own
//! (a head trained over it composes them into a detector, `EmbeddingDetector::new`):
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mllm_protector::detector::{TextEncoder, WindowEmbeddings};
//!
//! /// One window per text: its length and its share of letters, as a 2-wide unit vector.
//! struct Shape;
//! impl TextEncoder for Shape {
//!     fn dim(&self) -> usize { 2 }
//!     fn weights_sha256(&self) -> &str { "no weights" }
//!     fn embed_windows(&self, texts: &[&str]) -> mllm_protector::Result<WindowEmbeddings> {
//!         let mut rows = Vec::new();
//!         for t in texts {
//!             let (len, letters) = (t.len() as f32 + 1.0, t.chars().filter(|c| c.is_alphabetic()).count() as f32);
//!             let norm = (len * len + letters * letters).sqrt();
//!             rows.extend([len / norm, letters / norm]);
//!         }
//!         let embeddings = Tensor::from_vec(rows, (texts.len(), 2), &Device::Cpu)?;
//!         Ok(WindowEmbeddings::new(embeddings, (0..texts.len()).collect()))
//!     }
//! }
//! let windows = Shape.embed_windows(&["abc", "12 34"])?;
//! assert_eq!((windows.embeddings.dims(), windows.owner), (&[2, 2][..], vec![0, 1]));
//! # Ok::<(), mllm_protector::Error>(())
//! ```
//!
//! Wrapping an existing generate call is a layer around it ([`GuardLayer`], in the `tower` style). An answer that
//! is streamed is guarded while it is generated: a [`StreamGuard`] shows only text that passed its checks and stops
//! the generator when the answer turns harmful (with a stand-in detector here; [`Protector::stream`] with the
//! default one):
//!
//! ```
//! use mllm_protector::{DetectionInput, Flow, HarmDetector, HarmScore, HoldBack, Protector, StreamConfig};
//! # struct Keyword;
//! # impl HarmDetector for Keyword {
//! #     fn name(&self) -> &str { "keyword" }
//! #     fn threshold(&self) -> f32 { 0.5 }
//! #     fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> mllm_protector::Result<Vec<HarmScore>> {
//! #         Ok(inputs.iter().map(|i| HarmScore::single(f32::from(u8::from(i.response.contains("detonator"))))).collect())
//! #     }
//! # }
//! let protector = Protector::builder().detector(Keyword).build()?;
//! let config = StreamConfig {
//!     first_check_words: 4, check_every_words: 4, sentence_wait_words: 0, hold_back: HoldBack::Checked(0), ..Default::default()
//! };
//! let mut stream = protector.stream_with(None, "q", config)?;
//! let (mut shown, mut pushed) = (String::new(), 0);
//! for token in "First cut the red wire. Then wire the detonator to the clock and wait .".split_inclusive(' ') {
//!     pushed += 1;
//!     let step = stream.push(token)?;
//!     shown.push_str(&step.release);
//!     if step.flow == Flow::Stop { break; }
//! }
//! let end = stream.finish()?;
//! assert!(end.stopped && pushed < 15 && !shown.contains("detonator"));
//! assert_eq!(end.shown, format!("{shown}{}", end.rest)); // what was shown, then the replacement
//! # Ok::<(), mllm_protector::Error>(())
//! ```
//!
//! ## Folders
//!
//! [`canonical`] (disguised text read as a person reads it), [`detector`], [`detoxifier`], [`image`] (the request's
//! image: bounded decoding, and an [`ImageReader`](image::ImageReader) for the text drawn in it, Tesseract with the
//! `ocr` feature), [`protector`] (the guard, its layer and its streaming guard), [`loading`] (model files from a folder or the Hugging Face hub, sha256 pins, GGUF files and their tokenizer; below
//! both the detector and the detoxifier), [`eval`] (data sets, leak-free splits, metrics, the attack suite).

#![warn(missing_docs)]

pub mod canonical;
pub mod detector;
pub mod detoxifier;
pub mod device;
pub mod error;
pub mod eval;
pub mod image;
pub mod loading;
pub mod protector;

pub use detector::{DetectionInput, DetectorConfig, EmbeddingDetector, HarmDetector, HarmScore, RefusalMatcher};
pub use detoxifier::verify::FallbackReason;
pub use detoxifier::{Detoxifier, LlmDetoxifier, TemplateDetoxifier};
pub use device::{DeviceChoice, pin_cpu_threads};
pub use error::{Error, Result};
pub use image::Image;
pub use protector::{
    Action, FailurePolicy, Flow, GenerateStream, GuardLayer, GuardOutcome, GuardRequest, Guarded, GuardedError,
    HoldBack, ImageTextReport, ImageTextUse, InputLimits, OpeningReading, Protector, ProtectorBuilder, ProtectorConfig,
    RewriteChecks, StreamConfig, StreamGuard, StreamOutcome, Verdict,
};

/// The README's Rust snippets, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
