//! Detoxification: turning a response flagged harmful into a harmless one.
//!
//! [`Detoxifier`] is the trait the [`Protector`](crate::Protector) composes. [`TemplateDetoxifier`] is the default
//! and the fallback: a fixed, polite refusal that never repeats the harmful content. [`LlmDetoxifier`] (a GGUF chat
//! model rewriting the answer, every rewrite verified by [`verify`]) and [`Seq2SeqDetoxifier`] are opt-in.

pub mod llm;
pub mod seq2seq;
pub mod template;
pub mod verify;

use serde::{Deserialize, Serialize};

pub use llm::{LlmDetoxConfig, LlmDetoxifier};
pub use seq2seq::{Seq2SeqConfig, Seq2SeqDetoxifier};
pub use template::TemplateDetoxifier;

use crate::detector::HarmScore;
use crate::error::Result;

/// What a detoxifier is given.
#[derive(Debug, Clone, Copy)]
pub struct DetoxRequest<'a> {
    /// The user's prompt.
    pub prompt: &'a str,
    /// The response that was flagged.
    pub response: &'a str,
    /// The detector's score for it (absent when the policy, not the detector, decided).
    pub score: Option<HarmScore>,
}

/// How a detoxifier produced its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetoxKind {
    /// The response was rewritten (by a model) into a harmless one.
    Rewrite,
    /// The response was replaced by a fixed text.
    Replacement,
}

/// A detoxifier's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detoxified {
    /// The text to show instead of the response.
    pub text: String,
    /// Rewritten or replaced.
    pub kind: DetoxKind,
}

/// Turns a harmful response into a harmless one. Implement it to plug in your own rewriter.
///
/// ```
/// use mllm_protector::detoxifier::{DetoxKind, DetoxRequest, Detoxified, Detoxifier};
/// struct Redact;
/// impl Detoxifier for Redact {
///     fn name(&self) -> &str { "redact" }
///     fn detoxify(&self, _req: &DetoxRequest<'_>) -> mllm_protector::Result<Detoxified> {
///         Ok(Detoxified { text: "[redacted]".into(), kind: DetoxKind::Replacement })
///     }
/// }
/// let out = Redact.detoxify(&DetoxRequest { prompt: "p", response: "r", score: None })?;
/// assert_eq!(out.text, "[redacted]");
/// # Ok::<(), mllm_protector::Error>(())
/// ```
pub trait Detoxifier: Send + Sync {
    /// Name shown in outcomes.
    fn name(&self) -> &str;

    /// Produces the harmless text to show instead of `request.response`.
    fn detoxify(&self, request: &DetoxRequest<'_>) -> Result<Detoxified>;
}
