//! The [`Protector`]: a harm detector and a detoxifier behind one call, `guard(image, prompt, response)`.

pub mod layer;
pub mod opening;
pub mod stream;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use layer::{Generate, GenerateStream, GuardLayer, Guarded, GuardedError};
pub use opening::{DEFAULT_MIN_WHOLE_SCORE, DEFAULT_OPENING_THRESHOLD, OpeningReading};
pub use stream::{Flow, HoldBack, StreamConfig, StreamGuard, StreamOutcome, StreamStats, StreamStep};

use crate::canonical::{Language, ViewKind};
use crate::detector::{
    CanonicalDetector, ClassifierHead, DetectionInput, DetectorConfig, HarmCategory, HarmDetector, HarmScore,
};
use crate::detoxifier::verify::{FallbackReason, complies, is_degenerate, rouge_l_f1};
use crate::detoxifier::{DetoxKind, DetoxRequest, Detoxifier, LlmDetoxifier, TemplateDetoxifier};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::image::{Image, ImageInfo, ImageReader, ImageText};
use crate::loading::{ModelSource, pins};

/// What the guard does when the detector cannot decide (an error while scoring, a non-finite score).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Treat the response as harmful: show the fallback refusal (default; a security library fails safe).
    #[default]
    FailClosed,
    /// Show the response unchanged, marked undecided.
    FailOpen,
}

/// Size limits on what the guard accepts, so a hostile input cannot stall it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InputLimits {
    /// Largest response scored, in bytes (default 256 KiB, about 60,000 words).
    pub max_response_bytes: usize,
    /// Largest prompt accepted, in bytes (default 64 KiB).
    pub max_prompt_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_response_bytes: 256 << 10,
            max_prompt_bytes: 64 << 10,
        }
    }
}

/// The protector's own settings (serde; every field has a default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProtectorConfig {
    /// Overrides the detector's threshold.
    pub threshold: Option<f32>,
    /// What happens when the detector cannot decide.
    pub on_undecided: FailurePolicy,
    /// Input size limits.
    pub limits: InputLimits,
    /// How rewrites are checked before they are shown.
    pub verification: RewriteChecks,
    /// How the text read from an image is used.
    pub image_text: ImageTextUse,
    /// The answer's opening, also read alone at a strict threshold (default on; `None`: off). It is what a
    /// [`StreamGuard`] checks first, so a stream stopped at its opening and the guard of the whole answer agree.
    pub opening: Option<OpeningReading>,
}

impl Default for ProtectorConfig {
    fn default() -> Self {
        ProtectorConfig {
            threshold: None,
            on_undecided: FailurePolicy::default(),
            limits: InputLimits::default(),
            verification: RewriteChecks::default(),
            image_text: ImageTextUse::default(),
            opening: Some(OpeningReading::default()),
        }
    }
}

/// Checks every rewrite must pass before it is shown; a rewrite that fails one is replaced by the template.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RewriteChecks {
    /// Score the rewrite with the detector and reject it when still harmful (default on).
    pub rescore: bool,
    /// Reject a rewrite whose ROUGE-L F1 with the harmful response is at or above this (default 0.3: a refusal
    /// that names the topic stays far below it, a paraphrase of the answer does not).
    pub max_rouge_l: f64,
    /// Reject a rewrite that does not decline the request or that agrees to it ([`complies`]; default on).
    pub must_decline: bool,
}

impl Default for RewriteChecks {
    fn default() -> Self {
        RewriteChecks {
            rescore: true,
            max_rouge_l: 0.3,
            must_decline: true,
        }
    }
}

/// The detector's verdict on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Scored under the threshold.
    Harmless,
    /// Scored at or over the threshold.
    Harmful,
    /// The detector could not score it; the [`FailurePolicy`] decided.
    Undecided,
}

/// What the guard did to the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Shown unchanged.
    Passed,
    /// Rewritten by the detoxifier into a harmless answer.
    Rewritten,
    /// Replaced by a fixed refusal.
    Replaced,
}

/// Everything the guard decided about one response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardOutcome {
    /// Probability that the original response is harmful (absent when undecided).
    pub harm_score: Option<f32>,
    /// The threshold the score was compared with.
    pub threshold: f32,
    /// Harmless, harmful or undecided.
    pub verdict: Verdict,
    /// What was done.
    pub action: Action,
    /// The text to show the user.
    pub response: String,
    /// The response as the model wrote it.
    pub original_response: String,
    /// The detector that scored it.
    pub detector: String,
    /// The detoxifier that produced `response`, when it was changed.
    pub detoxifier: Option<String>,
    /// Why the detector could not decide, or why the detoxifier's text was not used.
    pub note: Option<String>,
    /// When the template replaced a rewrite or the policy failed closed: why.
    pub fallback: Option<FallbackReason>,
    /// The detector's score of the rewrite that was shown (or rejected).
    pub rewrite_score: Option<f32>,
    /// How many windows the response was read in.
    pub windows: usize,
    /// The harm category the detector names for the response's worst window (meaningful when harmful).
    pub category: Option<HarmCategory>,
    /// The image, when one was given.
    pub image: Option<ImageInfo>,
    /// Which reading of the response decided the score: the original, or a canonical view such as leetspeak or
    /// base64 (the disguise the detector saw through).
    pub view: ViewKind,
    /// The response's language, when the detector found it is not English.
    pub language: Option<Language>,
    /// The text read from the image, when the protector has an [`ImageReader`] and the request an image.
    pub image_text: Option<ImageTextReport>,
    /// Whether the verdict came from the answer's opening read alone ([`ProtectorConfig::opening`]) rather than
    /// from the whole answer.
    #[serde(default)]
    pub opening: bool,
}

/// The text read from a request's image and what the guard made of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageTextReport {
    /// The words read (empty when the image has none).
    pub text: String,
    /// The reader that read them.
    pub reader: String,
    /// Seconds spent reading.
    pub seconds: f64,
    /// Whether the text changed the judgement: the answer read after it scored higher ([`ImageTextUse::Prepend`]),
    /// or the answer was held to the lower threshold ([`ImageTextUse::LowerThreshold`]).
    pub used: bool,
    /// The image text's own score, read as a request by the request detector ([`ImageTextUse::LowerThreshold`]).
    pub request_score: Option<f32>,
}

/// How the guard uses the text read from the image ([`ImageReader`]). A typographic attack (FigStep) puts the
/// harmful request in the image: the answer ("1. Obtain pseudoephedrine ...") may not say what it answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageTextUse {
    /// Read and reported in the outcome, not used in the verdict.
    Report,
    /// The answer is also read after the image's text, as one more reading (the highest score counts).
    Prepend,
    /// When the image's text, read as a request, scores as harmful (at least `request_threshold`), the answer is held
    /// to `threshold` instead of the detector's (or the protector's, when lower). The request is scored by the
    /// protector's request detector (by default the embedded request head; [`ProtectorBuilder::request_detector`]),
    /// or, without one, by the answer detector.
    LowerThreshold {
        /// The image text's score from which it counts as a harmful request.
        request_threshold: f32,
        /// The threshold for answers to such a request.
        threshold: f32,
    },
}

impl Default for ImageTextUse {
    /// [`ImageTextUse::LowerThreshold`] with the request threshold 0.5 (on the request head's score) and the answer
    /// threshold 0.1: chosen on the validation half of SafeBench-Tiny and 50 benign typographic images
    /// (`examples/figstep_eval.rs`; docs/EVALUATION.md, "Images"), in the middle of the options with the fewest
    /// successful attacks left and no benign answer changed.
    fn default() -> Self {
        ImageTextUse::LowerThreshold {
            request_threshold: 0.5,
            threshold: 0.1,
        }
    }
}

impl GuardOutcome {
    /// Whether the text shown differs from the model's.
    pub fn was_changed(&self) -> bool {
        self.action != Action::Passed
    }
}

/// One answer's judgement before the guard acts on it: the score that decides, the threshold it is held to, the
/// report of the image's text, and whether the answer's opening decided.
pub(crate) struct Judgement {
    pub(crate) score: Result<HarmScore, String>,
    pub(crate) threshold: f32,
    pub(crate) image_text: Option<ImageTextReport>,
    pub(crate) opening: bool,
}

impl Judgement {
    /// A judgement of the whole answer (not of its opening).
    fn new(score: Result<HarmScore, String>, threshold: f32, image_text: Option<ImageTextReport>) -> Self {
        Judgement {
            score,
            threshold,
            image_text,
            opening: false,
        }
    }
}

/// One item of [`Protector::guard_batch`].
#[derive(Debug, Clone, Copy)]
pub struct GuardRequest<'a> {
    /// The image sent with the prompt.
    pub image: Option<&'a Image>,
    /// The user's prompt.
    pub prompt: &'a str,
    /// The model's response.
    pub response: &'a str,
}

/// A harm detector and a detoxifier behind one call.
///
/// ```no_run
/// use mllm_protector::Protector;
/// let protector = Protector::new()?; // default detector, template detoxifier, fail-closed
/// let outcome = protector.guard(None, "How do I bake bread?", "Mix flour, water, yeast and salt, ...")?;
/// println!("{:?} {:?}: {}", outcome.verdict, outcome.harm_score, outcome.response);
/// # Ok::<(), mllm_protector::Error>(())
/// ```
pub struct Protector {
    detector: Arc<dyn HarmDetector>,
    /// Scores the text read from an image as a request ([`ImageTextUse::LowerThreshold`]); without one, the
    /// answer detector reads it.
    request_detector: Option<Arc<dyn HarmDetector>>,
    image_reader: Option<Arc<dyn ImageReader>>,
    detoxifier: Arc<dyn Detoxifier>,
    fallback: TemplateDetoxifier,
    config: ProtectorConfig,
    threshold: f32,
}

impl std::fmt::Debug for Protector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protector")
            .field("detector", &self.detector.name())
            .field("detoxifier", &self.detoxifier.name())
            .field("threshold", &self.threshold)
            .field("config", &self.config)
            .finish()
    }
}

impl Protector {
    /// The default protector: the all-MiniLM-L6-v2 detector with the embedded head, reading canonical views
    /// ([`CanonicalDetector`]); the template detoxifier (a fixed refusal: it can never be worse than the harmful
    /// answer it replaces); fail-closed. The LLM rewriter is opt-in: [`ProtectorBuilder::rewriter`].
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// A builder with the defaults of [`Protector::new`].
    pub fn builder() -> ProtectorBuilder {
        ProtectorBuilder::default()
    }

    /// The threshold in use.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The detector in use.
    pub fn detector(&self) -> &Arc<dyn HarmDetector> {
        &self.detector
    }

    /// The detector that reads an image's text as a request, if any.
    pub fn request_detector(&self) -> Option<&Arc<dyn HarmDetector>> {
        self.request_detector.as_ref()
    }

    /// The detoxifier in use.
    pub fn detoxifier(&self) -> &Arc<dyn Detoxifier> {
        &self.detoxifier
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProtectorConfig {
        &self.config
    }

    /// Guards one response: scores it, and shows it, rewrites it or replaces it.
    ///
    /// Bad input (empty or oversized response, oversized prompt, unreadable image) is an `Err`, never a verdict.
    /// A detector that fails or returns a non-finite score leaves the response [`Verdict::Undecided`], and the
    /// [`FailurePolicy`] decides what is shown.
    pub fn guard(&self, image: Option<&Image>, prompt: &str, response: &str) -> Result<GuardOutcome> {
        let mut outcomes = self.guard_batch(&[GuardRequest {
            image,
            prompt,
            response,
        }]);
        outcomes
            .pop()
            .unwrap_or_else(|| Err(Error::InvalidInput("no outcome".into())))
    }

    /// Guards many responses, scoring them in one batch. Each item gets its own result, so one bad input does not
    /// cost the others their verdicts.
    pub fn guard_batch(&self, requests: &[GuardRequest<'_>]) -> Vec<Result<GuardOutcome>> {
        let checked: Vec<Result<Option<ImageInfo>>> = requests.iter().map(|r| self.validate(r)).collect();
        let valid: Vec<usize> = (0..requests.len()).filter(|&i| checked[i].is_ok()).collect();
        // The text in each image, read before scoring (an image without a reader, or without text, has none).
        let texts: Vec<Option<Result<ImageText, String>>> =
            valid.iter().map(|&i| self.read_image(requests[i].image)).collect();
        let readings: Vec<Vec<(String, String)>> = valid
            .iter()
            .zip(&texts)
            .map(|(&i, text)| self.image_readings(requests[i].prompt, requests[i].response, text))
            .collect();
        let mut inputs: Vec<DetectionInput<'_>> = Vec::new();
        for (&i, extra) in valid.iter().zip(&readings) {
            inputs.push(DetectionInput::new(requests[i].prompt, requests[i].response));
            inputs.extend(extra.iter().map(|(p, r)| DetectionInput::new(p, r)));
        }
        let scores: Result<Vec<HarmScore>> = if inputs.is_empty() {
            Ok(Vec::new())
        } else {
            self.detector.score_batch(&inputs).and_then(|s| {
                if s.len() == inputs.len() {
                    Ok(s)
                } else {
                    Err(Error::ShapeMismatch {
                        what: format!("scores from {}", self.detector.name()),
                        expected: inputs.len().to_string(),
                        actual: s.len().to_string(),
                    })
                }
            })
        };
        let mut scores: Vec<Result<HarmScore, String>> = match scores {
            Ok(s) => s.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e.to_string()); inputs.len()],
        };
        let mut next = scores.drain(..);
        let request_scores = self.request_scores(&texts.iter().collect::<Vec<_>>());
        let mut judged = Vec::with_capacity(valid.len());
        for ((text, extra), request) in texts.into_iter().zip(&readings).zip(request_scores) {
            let main = next.next().unwrap_or_else(|| Err("no score returned".into()));
            let extra: Vec<Result<HarmScore, String>> = extra
                .iter()
                .map(|_| next.next().unwrap_or_else(|| Err("no score returned".into())))
                .collect();
            judged.push(self.with_image_text(main, &extra, request, text));
        }
        drop(next);
        // The openings of the answers that need one read (`ProtectorConfig::opening`), in one more batch.
        let openings: Vec<(usize, DetectionInput<'_>)> = valid
            .iter()
            .zip(&judged)
            .enumerate()
            .filter_map(|(k, (&i, j))| {
                let text = self.opening_to_read(requests[i].response, j)?;
                Some((k, DetectionInput::new(requests[i].prompt, text)))
            })
            .collect();
        if !openings.is_empty() {
            let inputs: Vec<DetectionInput<'_>> = openings.iter().map(|(_, input)| *input).collect();
            if let Ok(scores) = self.detector.score_batch(&inputs)
                && scores.len() == inputs.len()
            {
                for ((k, _), score) in openings.iter().zip(&scores) {
                    self.apply_opening(&mut judged[*k], Some(score));
                }
            }
        }
        let mut judged = judged.into_iter();
        let mut out = Vec::with_capacity(requests.len());
        for (request, check) in requests.iter().zip(checked) {
            out.push(check.map(|image| {
                let judgement = judged
                    .next()
                    .unwrap_or_else(|| Judgement::new(Err("no score returned".into()), self.threshold, None));
                self.decide(request, image, judgement)
            }));
        }
        out
    }

    /// The opening of `response` when the guard reads it: the protector reads openings, the answer goes on after
    /// its opening, the whole answer is not harmful, and it scores at least [`OpeningReading::min_whole_score`].
    pub(crate) fn opening_to_read<'a>(&self, response: &'a str, judged: &Judgement) -> Option<&'a str> {
        let config = self.config.opening?;
        let whole = judged.score.as_ref().ok().filter(|s| Self::valid(s))?;
        if whole.probability < config.min_whole_score || whole.probability >= judged.threshold {
            return None;
        }
        config.opening_of(response)
    }

    /// Makes the answer harmful when the whole answer is not and its opening ([`ProtectorConfig::opening`]), read
    /// alone, reaches the opening threshold. An opening that could not be scored changes nothing: the whole answer's
    /// reading stands.
    pub(crate) fn apply_opening(&self, judged: &mut Judgement, opening: Option<&HarmScore>) {
        let (Some(config), Some(s)) = (self.config.opening, opening) else {
            return;
        };
        if self.verdict_of(&judged.score, judged.threshold) != Verdict::Harmful
            && Self::valid(s)
            && s.probability >= config.threshold
        {
            judged.score = Ok(*s);
            judged.threshold = config.threshold;
            judged.opening = true;
        }
    }

    /// The image's text, when there is an image and a reader: `Err` when the reader failed.
    fn read_image(&self, image: Option<&Image>) -> Option<Result<ImageText, String>> {
        let reader = self.image_reader.as_ref()?;
        let image = image?;
        Some(
            reader
                .read(image)
                .map_err(|e| format!("{} failed ({e})", reader.name())),
        )
    }

    /// The readings scored besides the answer itself, as (prompt, text), for [`ImageTextUse`].
    fn image_readings(
        &self,
        prompt: &str,
        response: &str,
        text: &Option<Result<ImageText, String>>,
    ) -> Vec<(String, String)> {
        let Some(Ok(text)) = text.as_ref().filter(|t| t.as_ref().is_ok_and(|t| !t.is_empty())) else {
            return Vec::new();
        };
        match self.config.image_text {
            ImageTextUse::Prepend => vec![(prompt.to_string(), format!("{}\n\n{response}", text.text))],
            // Read as a request, once, by `request_scores`.
            ImageTextUse::Report | ImageTextUse::LowerThreshold { .. } => Vec::new(),
        }
    }

    /// The images' texts scored as requests, for [`ImageTextUse::LowerThreshold`]: by the request detector, or by the
    /// answer detector when there is none. `None` where there is no text, or for another use.
    fn request_scores(&self, texts: &[&Option<Result<ImageText, String>>]) -> Vec<Option<Result<HarmScore, String>>> {
        let mut out = vec![None; texts.len()];
        let ImageTextUse::LowerThreshold { .. } = self.config.image_text else {
            return out;
        };
        let requests = self.request_detector.as_ref().unwrap_or(&self.detector);
        let read: Vec<(usize, &str)> = texts
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match t {
                Some(Ok(t)) if !t.is_empty() => Some((i, t.text.as_str())),
                _ => None,
            })
            .collect();
        if read.is_empty() {
            return out;
        }
        let inputs: Vec<DetectionInput<'_>> = read.iter().map(|(_, t)| DetectionInput::response(t)).collect();
        match requests.score_batch(&inputs) {
            Ok(scores) if scores.len() == inputs.len() => {
                for ((i, _), score) in read.iter().zip(scores) {
                    out[*i] = Some(Ok(score));
                }
            }
            Ok(_) => {
                let reason = format!("{} did not return one score per image text", requests.name());
                read.iter().for_each(|(i, _)| out[*i] = Some(Err(reason.clone())));
            }
            Err(e) => read.iter().for_each(|(i, _)| out[*i] = Some(Err(e.to_string()))),
        }
        out
    }

    /// The answer's score, the threshold it is held to, and the report of the image's text, after
    /// [`ImageTextUse`]. A reader that failed leaves the answer undecided (the failure policy decides).
    fn with_image_text(
        &self,
        main: Result<HarmScore, String>,
        extra: &[Result<HarmScore, String>],
        request: Option<Result<HarmScore, String>>,
        text: Option<Result<ImageText, String>>,
    ) -> Judgement {
        let reader = self
            .image_reader
            .as_ref()
            .map(|r| r.name().to_string())
            .unwrap_or_default();
        let text = match text {
            None => return Judgement::new(main, self.threshold, None),
            Some(Err(reason)) => {
                return Judgement::new(
                    Err(format!("the image could not be read: {reason}")),
                    self.threshold,
                    None,
                );
            }
            Some(Ok(text)) => text,
        };
        let mut report = ImageTextReport {
            text: text.text,
            reader,
            seconds: text.seconds,
            used: false,
            request_score: None,
        };
        let mut threshold = self.threshold;
        let mut score = main;
        match (self.config.image_text, extra.first(), request) {
            (ImageTextUse::Prepend, Some(joined), _) => {
                let higher = match (&score, joined) {
                    (Ok(s), Ok(j)) => j.probability.is_nan() || j.probability > s.probability,
                    (Ok(_), Err(_)) => true,
                    _ => false,
                };
                if higher {
                    score = joined.clone();
                    report.used = true;
                }
            }
            (
                ImageTextUse::LowerThreshold {
                    request_threshold,
                    threshold: lowered,
                },
                _,
                Some(request),
            ) => {
                let p = request.as_ref().map(|r| r.probability).unwrap_or(f32::NAN);
                report.request_score = Some(p);
                // A request that cannot be scored counts as harmful: the stricter bar is the safe side.
                if p.is_nan() || p >= request_threshold {
                    threshold = threshold.min(lowered);
                    report.used = true;
                }
            }
            _ => {}
        }
        Judgement::new(score, threshold, Some(report))
    }

    fn validate(&self, r: &GuardRequest<'_>) -> Result<Option<ImageInfo>> {
        let limits = &self.config.limits;
        if r.response.trim().is_empty() {
            return Err(Error::InvalidInput(
                "the response is empty: there is nothing to guard".into(),
            ));
        }
        if r.response.len() > limits.max_response_bytes {
            return Err(Error::InputTooLarge {
                what: "response".into(),
                len: r.response.len(),
                max: limits.max_response_bytes,
            });
        }
        if r.prompt.len() > limits.max_prompt_bytes {
            return Err(Error::InputTooLarge {
                what: "prompt".into(),
                len: r.prompt.len(),
                max: limits.max_prompt_bytes,
            });
        }
        r.image.map(Image::inspect).transpose()
    }

    /// The score when it can be used (a probability in `[0, 1]`), else why the detector could not decide.
    fn usable(score: Result<HarmScore, String>) -> Result<HarmScore, String> {
        score.and_then(|s| {
            if Self::valid(&s) {
                Ok(s)
            } else if let (Some(language), true) = (s.language, s.probability.is_nan()) {
                Err(format!(
                    "the response is in {}, and the detector reads English only",
                    language.eng_name()
                ))
            } else {
                Err(format!(
                    "the detector returned an invalid probability ({})",
                    s.probability
                ))
            }
        })
    }

    /// Harmless, harmful or undecided, as [`guard`](Self::guard) would judge this score.
    fn verdict_of(&self, score: &Result<HarmScore, String>, threshold: f32) -> Verdict {
        match score {
            Ok(s) if Self::valid(s) && s.probability >= threshold => Verdict::Harmful,
            Ok(s) if Self::valid(s) => Verdict::Harmless,
            _ => Verdict::Undecided,
        }
    }

    /// A probability the guard can act on.
    fn valid(s: &HarmScore) -> bool {
        s.probability.is_finite() && (0.0..=1.0).contains(&s.probability)
    }

    fn decide(&self, r: &GuardRequest<'_>, image: Option<ImageInfo>, judgement: Judgement) -> GuardOutcome {
        let Judgement {
            score,
            threshold,
            image_text,
            opening,
        } = judgement;
        let language = score.as_ref().ok().and_then(|s| s.language);
        let view = score.as_ref().map(|s| s.view).unwrap_or_default();
        let score = Self::usable(score);
        let mut outcome = GuardOutcome {
            harm_score: None,
            threshold,
            verdict: Verdict::Undecided,
            action: Action::Passed,
            response: r.response.to_string(),
            original_response: r.response.to_string(),
            detector: self.detector.name().to_string(),
            detoxifier: None,
            note: None,
            fallback: None,
            rewrite_score: None,
            windows: 0,
            category: None,
            image,
            view,
            language,
            image_text,
            opening,
        };
        match score {
            Err(reason) => {
                outcome.note = Some(format!(
                    "detector could not decide ({reason}); policy {:?} applied",
                    self.config.on_undecided
                ));
                if self.config.on_undecided == FailurePolicy::FailClosed {
                    self.replace_with_fallback(&mut outcome, FallbackReason::Undecided);
                }
            }
            Ok(s) => {
                outcome.harm_score = Some(s.probability);
                outcome.windows = s.windows;
                outcome.category = s.category;
                if s.probability >= threshold {
                    outcome.verdict = Verdict::Harmful;
                    if opening {
                        outcome.note = Some(format!(
                            "the answer's opening, read alone, scored {:.3} (opening threshold {threshold})",
                            s.probability
                        ));
                    }
                    self.detoxify(r, s, &mut outcome);
                } else {
                    outcome.verdict = Verdict::Harmless;
                }
            }
        }
        outcome
    }

    fn detoxify(&self, r: &GuardRequest<'_>, score: HarmScore, outcome: &mut GuardOutcome) {
        let request = DetoxRequest {
            prompt: r.prompt,
            response: r.response,
            score: Some(score),
        };
        let name = self.detoxifier.name().to_string();
        let detoxified = match self.detoxifier.detoxify(&request) {
            Ok(d) => d,
            Err(e) => {
                let reason = if matches!(e, Error::Timeout { .. }) {
                    FallbackReason::TimedOut
                } else {
                    FallbackReason::DetoxifierFailed
                };
                outcome.note = Some(format!("{name} failed ({e}); template used"));
                return self.replace_with_fallback(outcome, reason);
            }
        };
        let text = detoxified.text.trim();
        if text.is_empty() {
            outcome.note = Some(format!("{name} returned an empty text; template used"));
            return self.replace_with_fallback(outcome, FallbackReason::Empty);
        }
        if detoxified.kind == DetoxKind::Rewrite {
            match self.verify_rewrite(r.prompt, r.response, text) {
                Ok(score) => outcome.rewrite_score = score,
                Err(reason) => {
                    outcome.note = Some(format!("{name}'s rewrite rejected ({reason:?}); template used"));
                    return self.replace_with_fallback(outcome, reason);
                }
            }
        }
        outcome.response = text.to_string();
        outcome.action = match detoxified.kind {
            DetoxKind::Rewrite => Action::Rewritten,
            DetoxKind::Replacement => Action::Replaced,
        };
        outcome.detoxifier = Some(name);
    }

    /// Checks a rewrite of `response` the way [`guard`](Self::guard) does before showing it: not degenerate, not
    /// copied from the response (ROUGE-L), declining rather than complying, and (when `rescore` is on) scored
    /// harmless by the detector. Returns the rewrite's harm score (when rescored) or why it must not be shown.
    pub fn verify_rewrite(
        &self,
        prompt: &str,
        response: &str,
        rewrite: &str,
    ) -> std::result::Result<Option<f32>, FallbackReason> {
        let checks = &self.config.verification;
        if rewrite.trim().is_empty() {
            return Err(FallbackReason::Empty);
        }
        if is_degenerate(rewrite) {
            return Err(FallbackReason::Degenerate);
        }
        if rouge_l_f1(rewrite, response) >= checks.max_rouge_l {
            return Err(FallbackReason::CopiedOriginal);
        }
        if checks.must_decline && complies(rewrite) {
            return Err(FallbackReason::Complied);
        }
        if !checks.rescore {
            return Ok(None);
        }
        match self.detector.score(DetectionInput::new(prompt, rewrite)) {
            Ok(s) if s.probability.is_finite() && s.probability < self.threshold => Ok(Some(s.probability)),
            _ => Err(FallbackReason::StillHarmful),
        }
    }

    fn replace_with_fallback(&self, outcome: &mut GuardOutcome, reason: FallbackReason) {
        let category = if outcome.verdict == Verdict::Harmful {
            outcome.category
        } else {
            None
        };
        outcome.response = self.fallback.message_for(category);
        outcome.action = Action::Replaced;
        outcome.fallback = Some(reason);
        outcome.detoxifier = Some(format!("{} (fallback)", self.fallback.name_static()));
    }
}

/// Builds a [`Protector`]; every setting has a default.
///
/// ```no_run
/// use mllm_protector::{DeviceChoice, FailurePolicy, Protector};
/// let protector = Protector::builder()
///     .device(DeviceChoice::Cpu)
///     .models_dir("models")
///     .threshold(0.6)
///     .on_undecided(FailurePolicy::FailClosed)
///     .build()?;
/// # Ok::<(), mllm_protector::Error>(())
/// ```
#[derive(Default)]
pub struct ProtectorBuilder {
    use_llm: bool,
    image_reader: ImageReaderChoice,
    detector: Option<Arc<dyn HarmDetector>>,
    request_detector: RequestDetectorChoice,
    detoxifier: Option<Arc<dyn Detoxifier>>,
    fallback: TemplateDetoxifier,
    detector_config: DetectorConfig,
    config: ProtectorConfig,
}

/// Which request detector a builder gives the protector.
#[derive(Default)]
enum RequestDetectorChoice {
    /// The embedded request head beside the default detector's encoder; none beside a detector of the caller's.
    #[default]
    Default,
    None,
    Given(Arc<dyn HarmDetector>),
}

/// Which image reader a builder gives the protector.
#[derive(Default)]
enum ImageReaderChoice {
    /// Tesseract with the `ocr` feature, none without it.
    #[default]
    Default,
    None,
    Given(Arc<dyn ImageReader>),
}

impl ProtectorBuilder {
    /// Reads the text in images with this reader (with the `ocr` feature the default is
    /// [`TesseractReader`](crate::image::TesseractReader); without it, images are checked but not read).
    pub fn image_reader(mut self, reader: impl ImageReader + 'static) -> Self {
        self.image_reader = ImageReaderChoice::Given(Arc::new(reader));
        self
    }

    /// Does not read the text in images (they are still checked to be real, bounded images).
    pub fn without_image_reader(mut self) -> Self {
        self.image_reader = ImageReaderChoice::None;
        self
    }

    /// Scores the text read from an image as a request with this detector (by default the embedded request head,
    /// [`ClassifierHead::embedded_request`](crate::detector::ClassifierHead::embedded_request), beside the default
    /// detector's encoder).
    pub fn request_detector(mut self, detector: Arc<dyn HarmDetector>) -> Self {
        self.request_detector = RequestDetectorChoice::Given(detector);
        self
    }

    /// Scores the text read from an image with the answer detector, as a request (no request head).
    pub fn without_request_detector(mut self) -> Self {
        self.request_detector = RequestDetectorChoice::None;
        self
    }

    /// How the text read from an image is used (default [`ImageTextUse::default`]).
    pub fn image_text(mut self, using: ImageTextUse) -> Self {
        self.config.image_text = using;
        self
    }

    /// Uses the template only (the default; undoes [`rewriter`](Self::rewriter) and [`detoxifier`](Self::detoxifier)).
    pub fn template_only(mut self) -> Self {
        self.use_llm = false;
        self.detoxifier = None;
        self
    }

    /// Opts in to the LLM rewriter: [`LlmDetoxifier::load_default`] (SmolLM2-135M-Instruct from the models folder)
    /// rewrites harmful answers, each rewrite verified and replaced by the template when it fails. Not the default:
    /// measured on the JailbreakBench test answers it is accepted for about a quarter of them, and a hand check found
    /// accepted rewrites that were still harmful (README, Limitations). A missing model file is an error at
    /// [`build`](Self::build).
    pub fn rewriter(mut self) -> Self {
        self.use_llm = true;
        self.detoxifier = None;
        self
    }

    /// Uses this detector instead of loading the default one.
    pub fn detector(mut self, detector: impl HarmDetector + 'static) -> Self {
        self.detector = Some(Arc::new(detector));
        self
    }

    /// Uses an already shared detector.
    pub fn shared_detector(mut self, detector: Arc<dyn HarmDetector>) -> Self {
        self.detector = Some(detector);
        self
    }

    /// Configures the default detector (ignored when [`detector`](Self::detector) is set).
    pub fn detector_config(mut self, config: DetectorConfig) -> Self {
        self.detector_config = config;
        self
    }

    /// Reads the default models from this folder (what `scripts/fetch_models.sh` fills).
    pub fn models_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.detector_config.encoder = ModelSource::Dir(dir.as_ref().join(pins::MINILM_DIR_NAME));
        self
    }

    /// Runs the default models on this device.
    pub fn device(mut self, device: DeviceChoice) -> Self {
        self.detector_config.device = device;
        self
    }

    /// Uses an already shared detoxifier.
    pub fn shared_detoxifier(mut self, detoxifier: Arc<dyn Detoxifier>) -> Self {
        self.detoxifier = Some(detoxifier);
        self
    }

    /// Uses this detoxifier (default: the [`TemplateDetoxifier`]; [`rewriter`](Self::rewriter) for the LLM one).
    pub fn detoxifier(mut self, detoxifier: impl Detoxifier + 'static) -> Self {
        self.detoxifier = Some(Arc::new(detoxifier));
        self
    }

    /// The fixed text used when detoxification fails or the policy fails closed.
    pub fn fallback(mut self, fallback: TemplateDetoxifier) -> Self {
        self.fallback = fallback;
        self
    }

    /// Overrides the detector's threshold.
    pub fn threshold(mut self, threshold: f32) -> Self {
        self.config.threshold = Some(threshold);
        self
    }

    /// What to do when the detector cannot decide.
    pub fn on_undecided(mut self, policy: FailurePolicy) -> Self {
        self.config.on_undecided = policy;
        self
    }

    /// Input size limits.
    pub fn limits(mut self, limits: InputLimits) -> Self {
        self.config.limits = limits;
        self
    }

    /// All protector settings at once (e.g. deserialised from a file).
    pub fn config(mut self, config: ProtectorConfig) -> Self {
        self.config = config;
        self
    }

    /// Loads what is needed and builds the protector.
    pub fn build(self) -> Result<Protector> {
        let mut default_request = None;
        let detector: Arc<dyn HarmDetector> = match self.detector {
            Some(d) => d,
            None => {
                let canonical = CanonicalDetector::load(&self.detector_config)?;
                if matches!(self.request_detector, RequestDetectorChoice::Default) {
                    let device = self.detector_config.device.to_device()?;
                    let head = ClassifierHead::embedded_request(&device)?;
                    let requests = canonical.inner().beside(head, "request head")?;
                    default_request = Some(Arc::new(CanonicalDetector::new(
                        requests,
                        self.detector_config.canonical.clone(),
                        self.detector_config.language_policy,
                    )) as Arc<dyn HarmDetector>);
                }
                Arc::new(canonical)
            }
        };
        let request_detector = match self.request_detector {
            RequestDetectorChoice::Given(d) => Some(d),
            RequestDetectorChoice::None => None,
            RequestDetectorChoice::Default => default_request,
        };
        let threshold = self.config.threshold.unwrap_or_else(|| detector.threshold());
        if !(threshold.is_finite() && threshold > 0.0 && threshold <= 1.0) {
            return Err(Error::BadConfig {
                what: "protector threshold".into(),
                reason: format!("{threshold} is not in (0, 1]"),
            });
        }
        if self.fallback.message.trim().is_empty() {
            return Err(Error::BadConfig {
                what: "fallback".into(),
                reason: "the fallback message is empty".into(),
            });
        }
        let detoxifier: Arc<dyn Detoxifier> = match self.detoxifier {
            Some(d) => d,
            // The LLM rewriter only when asked for; then a missing or broken model file is an error, not a silent
            // downgrade.
            None if self.use_llm => Arc::new(LlmDetoxifier::load_default()?),
            None => Arc::new(self.fallback.clone()),
        };
        let image_reader: Option<Arc<dyn ImageReader>> = match self.image_reader {
            ImageReaderChoice::Given(reader) => Some(reader),
            ImageReaderChoice::None => None,
            #[cfg(feature = "ocr")]
            ImageReaderChoice::Default => Some(Arc::new(crate::image::TesseractReader::new()?)),
            #[cfg(not(feature = "ocr"))]
            ImageReaderChoice::Default => None,
        };
        if let ImageTextUse::LowerThreshold {
            request_threshold,
            threshold,
        } = self.config.image_text
        {
            for (what, t) in [("request_threshold", request_threshold), ("threshold", threshold)] {
                if !(t.is_finite() && t > 0.0 && t <= 1.0) {
                    return Err(Error::BadConfig {
                        what: format!("image_text.{what}"),
                        reason: format!("{t} is not in (0, 1]"),
                    });
                }
            }
        }
        Ok(Protector {
            detector,
            request_detector,
            image_reader,
            detoxifier,
            fallback: self.fallback,
            config: self.config,
            threshold,
        })
    }
}
