//! Harm detection: a score in `[0, 1]` for "this response is harmful".
//!
//! [`HarmDetector`] is the trait the [`Protector`](crate::Protector) composes. The default is a [`CanonicalDetector`]
//! (it also reads the canonical views of a disguised answer, [`crate::canonical`]) around an [`EmbeddingDetector`] (a
//! sentence encoder, [`TextEncoder`], with a trained [`ClassifierHead`] over its embeddings); [`RefusalMatcher`] is
//! the string-matching baseline it is measured against.

pub mod canonical;
pub mod category;
pub mod context;
pub mod encoder;
mod fused_bert;
mod half_dense;
pub mod head;
pub mod hedge_reader;
mod int8_dense;
pub mod llm_backbone;
pub mod refusal;
pub mod segments;
mod tiles;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use canonical::{CanonicalDetector, LanguagePolicy};
pub use category::HarmCategory;
pub use context::ScoringContext;
pub use encoder::{
    SentenceEncoder, TextEncoder, WeightDelta, WeightLayout, WindowCache, WindowEmbeddings, WindowKind, Windowing,
};
pub use head::{ClassifierHead, DeltaStorage, EncoderIdentity, EncoderKind, HeadMetadata};
pub use hedge_reader::{EmbeddingHedgeReader, HedgeReader};
pub use llm_backbone::LlmBackboneEncoder;
pub use refusal::RefusalMatcher;
pub use segments::Segmenting;

use crate::canonical::{CanonicalConfig, Language, ViewKind};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::loading::{ModelSource, default_models_dir, pins};

/// What a detector reads: the user's prompt and the model's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectionInput<'a> {
    /// The user's prompt (may be empty).
    pub prompt: &'a str,
    /// The response to score.
    pub response: &'a str,
}

impl<'a> DetectionInput<'a> {
    /// A prompt and a response.
    pub fn new(prompt: &'a str, response: &'a str) -> Self {
        DetectionInput { prompt, response }
    }

    /// A response alone.
    pub fn response(response: &'a str) -> Self {
        DetectionInput { prompt: "", response }
    }
}

/// A detector's judgement of one response.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HarmScore {
    /// Probability that the response is harmful, in `[0, 1]`.
    pub probability: f32,
    /// How many windows the response was read in.
    pub windows: usize,
    /// The window that scored highest (0-based).
    pub worst_window: usize,
    /// The harm category of that window, when the detector names one with confidence (see
    /// [`DetectorConfig::min_category_margin`]).
    #[serde(default)]
    pub category: Option<HarmCategory>,
    /// How far the named category's centroid is ahead of the next one (cosine gap), when categories are named.
    #[serde(default)]
    pub category_margin: Option<f32>,
    /// Which reading of the response decided the score: the original, or a canonical view (e.g. leetspeak) that a
    /// [`CanonicalDetector`] scored higher.
    #[serde(default)]
    pub view: ViewKind,
    /// The response's language, when a [`CanonicalDetector`] found it is not English.
    #[serde(default)]
    pub language: Option<Language>,
}

impl HarmScore {
    /// A score read in one window.
    pub fn single(probability: f32) -> Self {
        HarmScore {
            probability,
            windows: 1,
            worst_window: 0,
            category: None,
            category_margin: None,
            view: ViewKind::Original,
            language: None,
        }
    }
}

/// Scores responses for harm. Implement it to plug your own classifier into a [`Protector`](crate::Protector).
///
/// ```
/// use mllm_protector::detector::{DetectionInput, HarmDetector, HarmScore};
///
/// /// Flags any response that mentions a forbidden word.
/// struct Wordlist(Vec<&'static str>);
/// impl HarmDetector for Wordlist {
///     fn name(&self) -> &str { "wordlist" }
///     fn threshold(&self) -> f32 { 0.5 }
///     fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> mllm_protector::Result<Vec<HarmScore>> {
///         Ok(inputs.iter().map(|i| {
///             let hit = self.0.iter().any(|w| i.response.contains(w));
///             HarmScore::single(if hit { 1.0 } else { 0.0 })
///         }).collect())
///     }
/// }
/// let d = Wordlist(vec!["detonator"]);
/// assert_eq!(d.score(DetectionInput::response("a detonator"))?.probability, 1.0);
/// # Ok::<(), mllm_protector::Error>(())
/// ```
pub trait HarmDetector: Send + Sync {
    /// Name shown in outcomes and reports.
    fn name(&self) -> &str;

    /// The probability at or above which a response is harmful (the detector's documented operating point).
    fn threshold(&self) -> f32;

    /// Scores many responses at once (batched where the detector can).
    fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> Result<Vec<HarmScore>>;

    /// [`score_batch`](Self::score_batch), reusing windows embedded earlier from `cache` (a detector over token
    /// windows gives exactly the scores of `score_batch`, paying only for windows not seen before). The
    /// [`StreamGuard`](crate::StreamGuard) reads its growing answer through this. The default ignores the cache.
    fn score_batch_cached(&self, inputs: &[DetectionInput<'_>], cache: &mut WindowCache) -> Result<Vec<HarmScore>> {
        let _ = cache;
        self.score_batch(inputs)
    }

    /// Scores one response.
    fn score(&self, input: DetectionInput<'_>) -> Result<HarmScore> {
        let mut scores = self.score_batch(&[input])?;
        match (scores.pop(), scores.is_empty()) {
            (Some(score), true) => Ok(score),
            _ => Err(Error::ShapeMismatch {
                what: format!("{} scores for one input", self.name()),
                expected: "1".into(),
                actual: (scores.len() + 1).to_string(),
            }),
        }
    }
}

impl<T: HarmDetector + ?Sized> HarmDetector for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn threshold(&self) -> f32 {
        (**self).threshold()
    }
    fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> Result<Vec<HarmScore>> {
        (**self).score_batch(inputs)
    }
    fn score_batch_cached(&self, inputs: &[DetectionInput<'_>], cache: &mut WindowCache) -> Result<Vec<HarmScore>> {
        (**self).score_batch_cached(inputs, cache)
    }
}

/// Where a head comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadSource {
    /// The head shipped inside the crate (over all-MiniLM-L6-v2 with its top layers fine-tuned; the file carries
    /// the weight delta).
    #[default]
    Embedded,
    /// A head file written by `examples/train_detector.rs`.
    File(PathBuf),
}

/// The default [`DetectorConfig::min_category_margin`]: where category accuracy on JBB validation's harmful answers
/// peaks among the margins measured (0.65 of the 21% named; 0.38 naming all), `evaluate --set jbb-val --categories`.
pub const DEFAULT_MIN_CATEGORY_MARGIN: f32 = 0.05;

/// A span's probability on the head's scale: `strict` maps to `threshold`, 0 to 0 and 1 to 1, linearly between,
/// so a span crosses the head's threshold exactly when it reaches `strict` (NaN stays NaN).
///
/// ```
/// use mllm_protector::detector::span_probability;
/// assert_eq!(span_probability(0.95, 0.75, 0.95), 0.75);
/// assert!(span_probability(0.9, 0.75, 0.95) < 0.75);
/// assert_eq!(span_probability(1.0, 0.75, 0.95), 1.0);
/// ```
pub fn span_probability(p: f32, threshold: f32, strict: f32) -> f32 {
    if strict <= threshold {
        p
    } else if p < strict {
        p * threshold / strict
    } else if strict >= 1.0 {
        threshold
    } else {
        threshold + (p - strict) * (1.0 - threshold) / (1.0 - strict)
    }
}

/// Errors unless `theirs` was trained over the encoder (weights and fine-tuned delta) that `mine` reads through.
fn same_encoder(mine: &ClassifierHead, theirs: &ClassifierHead, what: &str) -> Result<()> {
    let (mine, theirs) = (&mine.metadata().encoder, &theirs.metadata().encoder);
    if mine.weights_sha256 != theirs.weights_sha256 || mine.delta_sha256 != theirs.delta_sha256 {
        return Err(Error::BadConfig {
            what: what.into(),
            reason: format!(
                "trained over encoder {} (delta {:?}), but this detector reads through {} (delta {:?})",
                theirs.weights_sha256, theirs.delta_sha256, mine.weights_sha256, mine.delta_sha256
            ),
        });
    }
    Ok(())
}

/// Configuration of the default detector; every field has a default, so `{}` is a valid config.
///
/// ```
/// use mllm_protector::detector::DetectorConfig;
/// let config: DetectorConfig = serde_json::from_str(r#"{"device": "cpu"}"#)?;
/// assert!(config.verify_checksum);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorConfig {
    /// The encoder's files (default: `<models dir>/all-MiniLM-L6-v2`, else the hub's
    /// `sentence-transformers/all-MiniLM-L6-v2`: its local cache, or a download with the `hub` feature).
    pub encoder: ModelSource,
    /// The head (default: the embedded one).
    pub head: HeadSource,
    /// Where the models run.
    pub device: DeviceChoice,
    /// How the encoder's weights are held and run (default: the fastest on the device, int8 on CPUs with AVX-512
    /// VNNI; [`WeightLayout::FusedFloat`] for embeddings that match the f32 model's).
    pub weight_layout: WeightLayout,
    /// Check the encoder's weights against the sha256 the head was trained on.
    pub verify_checksum: bool,
    /// The GGUF read by a head trained on an LLM backbone ([`EncoderKind::LlmLastToken`]; default: the
    /// SmolLM2-135M-Instruct file in the models folder).
    pub backbone: PathBuf,
    /// Sentences per short span read in a long response (overrides the head's recorded windowing, which has spans
    /// off; `Some(0)`: off). See [`Windowing::span_sentences`]. Off by default: measured on validation, spans read
    /// out of context flag harmless text as often as harmful, and a head trained on spans
    /// ([`DetectorConfig::span_head`]) added 1–2 points of recall (docs/EVALUATION.md, "Short spans").
    pub span_sentences: Option<usize>,
    /// A short span ([`DetectorConfig::span_sentences`]) counts as harmful only at or above this probability (its
    /// score is mapped monotonically so that this value lands on the head's threshold); `None`: the head's own
    /// threshold. Spans are read out of their context, where harmless text scores higher than in whole windows, so
    /// they need a stricter bar (docs/EVALUATION.md, "Short spans").
    pub span_threshold: Option<f32>,
    /// A head trained on short spans (`examples/train_span_head.rs`) that scores them instead of the detector's head;
    /// it must read through the same encoder. Unless set above, its recorded span length turns spans on and its
    /// threshold is the span threshold.
    pub span_head: Option<PathBuf>,
    /// Topic segments of a long answer written as one paragraph, each read on its own and held to
    /// [`Segmenting::threshold`] (`None`: off). They recover the paragraphs that a harmful answer padded with harmless
    /// text in the same paragraph would otherwise hide (docs/EVALUATION.md, "Topic segments"). Answers that fit
    /// one window, or that have paragraph breaks, pay nothing.
    pub segments: Option<Segmenting>,
    /// A category is named only when its centroid is at least this far (cosine) ahead of the next; else the
    /// response gets no category and the template speaks generically.
    pub min_category_margin: f32,
    /// The canonical views the default [`CanonicalDetector`] reads besides the original.
    pub canonical: CanonicalConfig,
    /// What the default [`CanonicalDetector`] does with a response in a language the encoder cannot read.
    pub language_policy: LanguagePolicy,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            encoder: ModelSource::dir_or_hub(default_models_dir().join(pins::MINILM_DIR_NAME), pins::MINILM_HUB_REPO),
            head: HeadSource::Embedded,
            device: DeviceChoice::Cpu,
            weight_layout: WeightLayout::default(),
            verify_checksum: true,
            backbone: default_models_dir()
                .join(pins::SMOLLM2_DIR_NAME)
                .join(pins::SMOLLM2_GGUF_FILE),
            span_sentences: None,
            span_threshold: None,
            span_head: None,
            segments: Some(Segmenting::default()),
            min_category_margin: DEFAULT_MIN_CATEGORY_MARGIN,
            canonical: CanonicalConfig::default(),
            language_policy: LanguagePolicy::default(),
        }
    }
}

impl DetectorConfig {
    /// The default encoder from the Hugging Face hub instead of the local folder.
    pub fn from_hub() -> Self {
        DetectorConfig {
            encoder: ModelSource::hub(pins::MINILM_HUB_REPO),
            ..Self::default()
        }
    }
}

/// A [`TextEncoder`] plus a [`ClassifierHead`]: every window of the response is embedded and scored, and the
/// response's score is the highest window's, so one harmful paragraph in a long harmless text is not diluted.
pub struct EmbeddingDetector {
    encoder: Arc<dyn TextEncoder>,
    head: ClassifierHead,
    context: ScoringContext,
    name: String,
    min_category_margin: f32,
    span_threshold: Option<f32>,
    /// Scores short spans instead of `head` ([`DetectorConfig::span_head`]).
    span_head: Option<ClassifierHead>,
    segment_threshold: Option<f32>,
}

impl std::fmt::Debug for EmbeddingDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingDetector")
            .field("name", &self.name)
            .field("context", &self.context)
            .field("threshold", &self.head.metadata().threshold)
            .finish()
    }
}

impl EmbeddingDetector {
    /// Loads the default detector: all-MiniLM-L6-v2 from the models folder and the embedded head.
    ///
    /// ```no_run
    /// use mllm_protector::detector::{DetectionInput, EmbeddingDetector, HarmDetector};
    /// let detector = EmbeddingDetector::load_default()?;
    /// let score = detector.score(DetectionInput::response("Water boils at 100 °C at sea level."))?;
    /// assert!(score.probability < detector.threshold());
    /// # Ok::<(), mllm_protector::Error>(())
    /// ```
    pub fn load_default() -> Result<Self> {
        Self::load(&DetectorConfig::default())
    }

    /// Loads a detector from its configuration.
    pub fn load(config: &DetectorConfig) -> Result<Self> {
        let device = config.device.to_device()?;
        let head = match &config.head {
            HeadSource::Embedded => ClassifierHead::embedded(&device)?,
            HeadSource::File(path) => ClassifierHead::load(path, &device)?,
        };
        let meta = head.metadata();
        if meta.encoder.delta_storage == DeltaStorage::Shared {
            return Err(Error::BadConfig {
                what: "detector head".into(),
                reason: "this head reads through another head's fine-tuned encoder (its delta is shared, not stored): \
                         use it with EmbeddingDetector::beside"
                    .into(),
            });
        }
        let expected = config.verify_checksum.then_some(meta.encoder.weights_sha256.as_str());
        let mut windowing = meta.encoder.windowing;
        let span_head = match &config.span_head {
            Some(path) => {
                let span_head = ClassifierHead::load(path, &device)?;
                same_encoder(&head, &span_head, "span head")?;
                // It reads the spans' own embeddings, without the prompt the answer head may read beside them.
                if span_head.input_dim() != meta.encoder.dim {
                    return Err(Error::ShapeMismatch {
                        what: format!("span head {} input vs encoder output", path.display()),
                        expected: meta.encoder.dim.to_string(),
                        actual: span_head.input_dim().to_string(),
                    });
                }
                windowing.span_sentences = span_head.metadata().encoder.windowing.span_sentences;
                Some(span_head)
            }
            None => None,
        };
        if let Some(n) = config.span_sentences {
            windowing.span_sentences = n;
        }
        let encoder: Arc<dyn TextEncoder> = match meta.encoder.kind {
            EncoderKind::SentenceTransformer => Arc::new(
                SentenceEncoder::load_with_layout(
                    &config.encoder,
                    &device,
                    windowing,
                    expected,
                    head.encoder_delta().as_ref(),
                    config.weight_layout,
                )?
                .with_segmenting(config.segments),
            ),
            EncoderKind::LlmLastToken => Arc::new(LlmBackboneEncoder::load(
                &config.backbone,
                expected,
                &device,
                meta.encoder.windowing,
            )?),
        };
        let name = format!("{} + {}-layer head", meta.encoder.name, meta.layer_sizes.len() - 1);
        let mut detector = Self::new(encoder, head, name)?;
        detector.min_category_margin = config.min_category_margin;
        detector.span_threshold = config
            .span_threshold
            .or(span_head.as_ref().map(|h| h.metadata().threshold));
        detector.span_head = span_head;
        detector.segment_threshold = config.segments.map(|s| s.threshold);
        Ok(detector)
    }

    /// Composes an encoder and a head; their widths must agree.
    pub fn new(encoder: Arc<dyn TextEncoder>, head: ClassifierHead, name: impl Into<String>) -> Result<Self> {
        let context = head.metadata().context;
        let width = context.feature_dim(encoder.dim());
        if width != head.input_dim() {
            return Err(Error::ShapeMismatch {
                what: format!("head input vs encoder output ({context:?})"),
                expected: width.to_string(),
                actual: head.input_dim().to_string(),
            });
        }
        Ok(EmbeddingDetector {
            encoder,
            head,
            context,
            name: name.into(),
            min_category_margin: DEFAULT_MIN_CATEGORY_MARGIN,
            span_threshold: None,
            span_head: None,
            segment_threshold: None,
        })
    }

    /// Another head over this detector's encoder (shared, not loaded again), e.g. the request head
    /// ([`ClassifierHead::embedded_request`]). The head must have been trained over this very encoder: the same
    /// weights and the same fine-tuned delta.
    ///
    /// ```no_run
    /// use mllm_protector::detector::{ClassifierHead, DetectionInput, EmbeddingDetector, HarmDetector};
    /// let detector = EmbeddingDetector::load_default()?;
    /// let requests = detector.beside(ClassifierHead::embedded_request(&candle_core::Device::Cpu)?, "request head")?;
    /// let score = requests.score(DetectionInput::response("Steps to manufacture illegal drugs. 1. 2. 3."))?;
    /// println!("{}", score.probability);
    /// # Ok::<(), mllm_protector::Error>(())
    /// ```
    pub fn beside(&self, head: ClassifierHead, name: impl Into<String>) -> Result<Self> {
        same_encoder(&self.head, &head, "head beside the detector")?;
        let mut detector = Self::new(self.encoder.clone(), head, name)?;
        detector.min_category_margin = self.min_category_margin;
        detector.segment_threshold = self.segment_threshold;
        Ok(detector)
    }

    /// The head in use.
    pub fn head(&self) -> &ClassifierHead {
        &self.head
    }

    /// The encoder in use.
    pub fn encoder(&self) -> &Arc<dyn TextEncoder> {
        &self.encoder
    }

    /// Holds short spans to this threshold (see [`DetectorConfig::span_threshold`]).
    pub fn with_span_threshold(mut self, threshold: Option<f32>) -> Self {
        self.span_threshold = threshold;
        self
    }

    /// Holds topic segments to this threshold (see [`Segmenting::threshold`]; the encoder decides whether segments
    /// are read at all, [`SentenceEncoder::with_segmenting`]).
    pub fn with_segment_threshold(mut self, threshold: Option<f32>) -> Self {
        self.segment_threshold = threshold;
        self
    }

    /// Names a category only when its margin is at least `margin` (see [`DetectorConfig::min_category_margin`]).
    pub fn with_min_category_margin(mut self, margin: f32) -> Self {
        self.min_category_margin = margin;
        self
    }
}

impl HarmDetector for EmbeddingDetector {
    fn name(&self) -> &str {
        &self.name
    }

    fn threshold(&self) -> f32 {
        self.head.metadata().threshold
    }

    fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> Result<Vec<HarmScore>> {
        self.score_with(inputs, None)
    }

    fn score_batch_cached(&self, inputs: &[DetectionInput<'_>], cache: &mut WindowCache) -> Result<Vec<HarmScore>> {
        self.score_with(inputs, Some(cache))
    }
}

impl EmbeddingDetector {
    fn score_with(&self, inputs: &[DetectionInput<'_>], cache: Option<&mut WindowCache>) -> Result<Vec<HarmScore>> {
        if let Some(i) = inputs.iter().position(|x| x.response.trim().is_empty()) {
            return Err(Error::InvalidInput(format!("response {i} is empty: nothing to score")));
        }
        let texts: Vec<_> = inputs.iter().map(|x| self.context.text(x)).collect();
        let refs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let windows = match cache {
            Some(cache) => self.encoder.embed_windows_cached(&refs, cache)?,
            None => self.encoder.embed_windows(&refs)?,
        };
        let probs = if self.context.embeds_prompt() {
            let prompts: Vec<&str> = inputs.iter().map(|x| x.prompt).collect();
            let prompts = context::prompt_embeddings(self.encoder.as_ref(), &prompts)?;
            self.head.probabilities(&context::beside_prompt(&windows, &prompts)?)?
        } else {
            self.head.probabilities(&windows.embeddings)?
        };
        // Categories come from the response's own windows (the centroids live in the encoder's space).
        let categories = self.head.categorize(&windows.embeddings)?;
        let span_probs = match &self.span_head {
            Some(span_head) if windows.kind.contains(&WindowKind::Span) => {
                Some(span_head.probabilities(&windows.embeddings)?)
            }
            _ => None,
        };
        let mut scores = vec![
            HarmScore {
                probability: f32::NEG_INFINITY,
                ..HarmScore::single(0.0)
            };
            inputs.len()
        ];
        let threshold = self.head.metadata().threshold;
        for (row, (&owner, &p)) in windows.owner.iter().zip(&probs).enumerate() {
            // A span is scored by the span head where there is one; spans and segments are held to their bars.
            let (p, strict) = match windows.kind.get(row) {
                Some(WindowKind::Span) => (
                    span_probs
                        .as_ref()
                        .map_or(p, |s| s.get(row).copied().unwrap_or(f32::NAN)),
                    self.span_threshold,
                ),
                Some(WindowKind::Segment) => (p, self.segment_threshold),
                _ => (p, None),
            };
            let p = strict.map_or(p, |strict| span_probability(p, threshold, strict));
            let score = scores.get_mut(owner).ok_or_else(|| Error::ShapeMismatch {
                what: "window owner".into(),
                expected: format!("< {}", inputs.len()),
                actual: owner.to_string(),
            })?;
            // NaN must not hide behind max(): keep it so the protector sees an undecidable score.
            if !score.probability.is_nan() && (p.is_nan() || p > score.probability) {
                score.probability = p;
                score.worst_window = score.windows;
                let named = categories.as_ref().and_then(|c| c.get(row).copied());
                score.category_margin = named.map(|(_, margin)| margin);
                score.category = named
                    .filter(|&(_, margin)| margin >= self.min_category_margin)
                    .map(|(category, _)| category);
            }
            score.windows += 1;
        }
        Ok(scores)
    }
}
