//! Hedges the unhedged view's patterns do not list.
//!
//! The patterns of the unhedged view ([`ViewKind::Unhedged`](crate::canonical::ViewKind::Unhedged)) recognise the
//! refusals and disclaimers they list. A jailbroken persona words its hedges freely ("I don't endorse any of this",
//! "you'll be in deep trouble"), and every hedge left in pulls the reading towards the safety information the
//! head was trained to pass. A [`HedgeReader`] names the sentences of an unhedged view that are hedges too; the
//! [`CanonicalDetector`](crate::detector::CanonicalDetector) then reads the view once more without them.

use candle_core::Device;

use crate::detector::{ClassifierHead, DetectionInput, EmbeddingDetector, HarmDetector};
use crate::error::Result;

/// Says which sentences are hedges: refusals, warnings, disclaimers, appeals to ethics, rather than content.
pub trait HedgeReader: Send + Sync {
    /// A short name for reports.
    fn name(&self) -> &str;

    /// For each sentence, whether it is a hedge. A sentence the reader cannot decide is not a hedge: it stays in
    /// the view, which then reads as it would without the reader.
    fn hedges(&self, sentences: &[&str]) -> Result<Vec<bool>>;
}

/// A logistic head over the harm detector's own encoder, one sentence at a time: the hedge head shipped with the
/// crate ([`ClassifierHead::embedded_hedge`], trained by `examples/train_hedge_head.rs`), or another.
///
/// ```no_run
/// use mllm_protector::detector::{EmbeddingDetector, EmbeddingHedgeReader, HedgeReader};
/// let reader = EmbeddingHedgeReader::beside(&EmbeddingDetector::load_default()?, &candle_core::Device::Cpu)?;
/// let hedges = reader.hedges(&["I don't endorse any of this.", "Mix the flour with the eggs."])?;
/// println!("{hedges:?}");
/// # Ok::<(), mllm_protector::Error>(())
/// ```
#[derive(Debug)]
pub struct EmbeddingHedgeReader {
    detector: EmbeddingDetector,
    threshold: f32,
}

impl EmbeddingHedgeReader {
    /// The embedded hedge head beside `detector`'s encoder (shared, not loaded again). The detector must be the
    /// default one: the head was trained over its encoder.
    pub fn beside(detector: &EmbeddingDetector, device: &Device) -> Result<Self> {
        let head = ClassifierHead::embedded_hedge(device)?;
        Self::with_head(detector, head)
    }

    /// `head` beside `detector`'s encoder; the head must have been trained over that encoder.
    pub fn with_head(detector: &EmbeddingDetector, head: ClassifierHead) -> Result<Self> {
        let detector = detector.beside(head, "hedge head")?;
        let threshold = detector.threshold();
        Ok(EmbeddingHedgeReader { detector, threshold })
    }

    /// Calls a sentence a hedge from this probability on (default: the head's own threshold).
    pub fn with_threshold(mut self, threshold: f32) -> Self {
        self.threshold = threshold;
        self
    }
}

impl HedgeReader for EmbeddingHedgeReader {
    fn name(&self) -> &str {
        self.detector.name()
    }

    fn hedges(&self, sentences: &[&str]) -> Result<Vec<bool>> {
        let inputs: Vec<DetectionInput<'_>> = sentences.iter().map(|s| DetectionInput::response(s)).collect();
        let threshold = self.threshold;
        // A NaN compares false: undecided is not a hedge.
        Ok(self
            .detector
            .score_batch(&inputs)?
            .iter()
            .map(|s| s.probability >= threshold)
            .collect())
    }
}
