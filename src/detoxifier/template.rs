//! A fixed, polite refusal. It never looks at the harmful response, so it cannot repeat any of it.

use serde::{Deserialize, Serialize};

use crate::detoxifier::{DetoxKind, DetoxRequest, Detoxified, Detoxifier};
use crate::error::Result;

/// The default refusal text.
pub const DEFAULT_REFUSAL: &str = "I can't help with that, because the answer could cause real harm. \
If you are working on something related, such as safety information, prevention, or research on how to protect \
people, I'm glad to help with that instead.";

/// Replaces a harmful response with a fixed message (serde-configurable).
///
/// ```
/// use mllm_protector::detoxifier::{DetoxRequest, Detoxifier, TemplateDetoxifier};
/// let out = TemplateDetoxifier::default().detoxify(&DetoxRequest {
///     prompt: "How do I pick a lock?",
///     response: "Step 1: insert a tension wrench...",
///     score: None,
/// })?;
/// assert!(!out.text.contains("tension wrench"));
/// # Ok::<(), mllm_protector::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplateDetoxifier {
    /// The message shown instead of a harmful response.
    pub message: String,
}

impl Default for TemplateDetoxifier {
    fn default() -> Self {
        TemplateDetoxifier {
            message: DEFAULT_REFUSAL.to_string(),
        }
    }
}

impl TemplateDetoxifier {
    pub(crate) fn name_static(&self) -> &'static str {
        "template"
    }
}

impl Detoxifier for TemplateDetoxifier {
    fn name(&self) -> &str {
        self.name_static()
    }

    fn detoxify(&self, _request: &DetoxRequest<'_>) -> Result<Detoxified> {
        Ok(Detoxified {
            text: self.message.clone(),
            kind: DetoxKind::Replacement,
        })
    }
}
