//! A fixed, polite refusal. It never looks at the harmful response, so it cannot repeat any of it.

use serde::{Deserialize, Serialize};

use crate::detector::HarmCategory;
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
    /// The message shown instead of a harmful response when its category is unknown.
    pub message: String,
    /// When the detector names the harm category, say what kind of request is declined and offer a safe
    /// alternative for that category (default on).
    pub category_aware: bool,
}

impl Default for TemplateDetoxifier {
    fn default() -> Self {
        TemplateDetoxifier {
            message: DEFAULT_REFUSAL.to_string(),
            category_aware: true,
        }
    }
}

impl TemplateDetoxifier {
    /// The refusal for a response of `category` (the generic message when unknown or when not category-aware).
    /// It is built from fixed text only, so it cannot repeat anything from the response.
    ///
    /// ```
    /// use mllm_protector::detector::HarmCategory;
    /// use mllm_protector::TemplateDetoxifier;
    /// let t = TemplateDetoxifier::default();
    /// assert!(t.message_for(Some(HarmCategory::MalwareHacking)).contains("malware"));
    /// assert_eq!(t.message_for(None), t.message);
    /// ```
    pub fn message_for(&self, category: Option<HarmCategory>) -> String {
        match category {
            Some(c) if self.category_aware => format!(
                "I can't help with requests for {}, because the answer could cause real harm. {}",
                c.describe(),
                c.safe_alternative()
            ),
            _ => self.message.clone(),
        }
    }

    pub(crate) fn name_static(&self) -> &'static str {
        "template"
    }
}

impl Detoxifier for TemplateDetoxifier {
    fn name(&self) -> &str {
        self.name_static()
    }

    fn detoxify(&self, request: &DetoxRequest<'_>) -> Result<Detoxified> {
        Ok(Detoxified {
            text: self.message_for(request.score.and_then(|s| s.category)),
            kind: DetoxKind::Replacement,
        })
    }
}
