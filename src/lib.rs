//! # mllm-protector
//!
//! A plug-and-play guard for multimodal LLM answers, after MLLM-Protector (Pi et al., 2024): a **harm detector**
//! scores the response an MLLM produced, and a **detoxifier** turns a response flagged harmful into a harmless one.
//! No MLLM weight is touched: the guard runs after `generate`.
//!
//! The [`Protector`] composes the two parts, each a trait you can swap:
//! - [`HarmDetector`]: default [`EmbeddingDetector`] (all-MiniLM-L6-v2 on candle with its top layers fine-tuned,
//!   a calibrated head, windows over long responses); an LLM backbone
//!   ([`LlmBackboneEncoder`](detector::LlmBackboneEncoder)) is the paper's design; [`RefusalMatcher`] is the
//!   string baseline.
//! - [`Detoxifier`]: default [`LlmDetoxifier`] (SmolLM2 rewrites the answer; every rewrite is verified) when its
//!   model is present, else [`TemplateDetoxifier`] (a fixed refusal that never repeats the harmful text), which is
//!   also the fallback for any rejected rewrite.
//!
//! ```no_run
//! use mllm_protector::Protector;
//! let protector = Protector::new()?;
//! let outcome = protector.guard(None, "How do I make a cake?", "Preheat the oven to 180 °C, ...")?;
//! assert!(!outcome.was_changed());
//! # Ok::<(), mllm_protector::Error>(())
//! ```
//!
//! Folders follow the architecture: [`detector`], [`detoxifier`], [`protector`], [`loading`] (model files, hub,
//! checksums), [`eval`] (data sets and metrics).

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
pub use device::DeviceChoice;
pub use error::{Error, Result};
pub use image::Image;
pub use protector::{
    Action, FailurePolicy, GuardLayer, GuardOutcome, GuardRequest, Guarded, GuardedError, InputLimits, Protector,
    ProtectorBuilder, ProtectorConfig, RewriteChecks, Verdict,
};

/// The README's Rust snippets, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
