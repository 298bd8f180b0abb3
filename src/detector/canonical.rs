//! A detector that reads a response the way a person would: the original and each of its canonical views
//! ([`crate::canonical`]), keeping the highest score and naming the view that decided it.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::canonical::{
    CanonicalConfig, Canonicalizer, Language, Translator, ViewKind, detect_language, view_sentences, without_sentences,
};
use crate::detector::{
    DetectionInput, DetectorConfig, EmbeddingDetector, EmbeddingHedgeReader, HarmDetector, HarmScore, HedgeReader,
    WindowCache, span_probability,
};
use crate::error::{Error, Result};

/// What to do with a response written in a language the inner detector cannot read (it was trained on English).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LanguagePolicy {
    /// The detector cannot judge it: the score is undecided, and the protector's failure policy decides (with the
    /// default fail-closed policy, the response is replaced). Safe, at the cost of every non-English answer.
    #[default]
    Undecided,
    /// Score it as if it were English, and report the language. For applications whose users write English only,
    /// where a foreign answer is rare and reading it badly is acceptable.
    Score,
}

/// Wraps any [`HarmDetector`]: scores the original response and each [`View`](crate::canonical::View) of it in one
/// batch, keeps the highest probability (a NaN wins, so an undecidable reading is never hidden), and records the
/// view that decided it in [`HarmScore::view`]. A response in a language other than English, with no English view,
/// gets [`HarmScore::language`] and the [`LanguagePolicy`].
///
/// ```
/// use mllm_protector::canonical::ViewKind;
/// use mllm_protector::detector::{CanonicalDetector, DetectionInput, HarmDetector, HarmScore, LanguagePolicy};
///
/// /// A stand-in detector that flags one word.
/// struct Word;
/// impl HarmDetector for Word {
///     fn name(&self) -> &str { "word" }
///     fn threshold(&self) -> f32 { 0.5 }
///     fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> mllm_protector::Result<Vec<HarmScore>> {
///         Ok(inputs.iter().map(|i| HarmScore::single(if i.response.contains("bomb") { 1.0 } else { 0.0 })).collect())
///     }
/// }
/// let detector = CanonicalDetector::new(Word, Default::default(), LanguagePolicy::Undecided);
/// let score = detector.score(DetectionInput::response("how to build a b0mb and a d3t0n4t0r"))?;
/// assert_eq!((score.probability, score.view), (1.0, ViewKind::Leetspeak));
/// # Ok::<(), mllm_protector::Error>(())
/// ```
pub struct CanonicalDetector<D> {
    inner: D,
    canonicalizer: Canonicalizer,
    language_policy: LanguagePolicy,
    translator: Option<Arc<dyn Translator>>,
    hedge_reader: Option<Arc<dyn HedgeReader>>,
    name: String,
}

impl<D: HarmDetector> std::fmt::Debug for CanonicalDetector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanonicalDetector")
            .field("name", &self.name)
            .field("canonicalizer", &self.canonicalizer)
            .field("language_policy", &self.language_policy)
            .field("translator", &self.translator.as_ref().map(|t| t.name().to_string()))
            .field(
                "hedge_reader",
                &self.hedge_reader.as_ref().map(|h| h.name().to_string()),
            )
            .finish()
    }
}

impl CanonicalDetector<Arc<EmbeddingDetector>> {
    /// The default detector: [`EmbeddingDetector::load`] wrapped with the configuration's views and language policy,
    /// and with the embedded hedge head as its [`HedgeReader`] where [`CanonicalConfig::learned_hedges`] is on.
    ///
    /// ```no_run
    /// use mllm_protector::detector::{CanonicalDetector, DetectionInput, DetectorConfig, HarmDetector};
    /// let detector = CanonicalDetector::load(&DetectorConfig::default())?;
    /// let score = detector.score(DetectionInput::response("W4t3r b01ls 4t 100 °C 4t s34 l3v3l."))?;
    /// println!("{} read as {}", score.probability, score.view);
    /// # Ok::<(), mllm_protector::Error>(())
    /// ```
    pub fn load(config: &DetectorConfig) -> Result<Self> {
        let bar = config.canonical.unhedged_bar;
        if !(0.0..=1.0).contains(&bar) {
            return Err(Error::BadConfig {
                what: "canonical.unhedged_bar".into(),
                reason: format!("{bar} is not a probability in 0..=1"),
            });
        }
        let inner = Arc::new(EmbeddingDetector::load(config)?);
        let c = &config.canonical;
        let reader = if c.enabled && c.unhedged && c.learned_hedges {
            let device = config.device.to_device()?;
            Some(Arc::new(EmbeddingHedgeReader::beside(&inner, &device)?))
        } else {
            None
        };
        let detector = CanonicalDetector::new(inner, c.clone(), config.language_policy);
        Ok(match reader {
            Some(reader) => detector.with_hedge_reader(reader),
            None => detector,
        })
    }
}

impl<D: HarmDetector> CanonicalDetector<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, canonical: CanonicalConfig, language_policy: LanguagePolicy) -> Self {
        let name = if canonical.enabled {
            format!("{} + canonical views", inner.name())
        } else {
            inner.name().to_string()
        };
        CanonicalDetector {
            inner,
            canonicalizer: Canonicalizer::new(canonical),
            language_policy,
            translator: None,
            hedge_reader: None,
            name,
        }
    }

    /// Also reads each unhedged view without the hedges `reader` finds among its sentences (one more reading, of
    /// kind [`ViewKind::Unhedged`], held to the same bar). The reader runs only for answers that have an unhedged
    /// view, and only when [`CanonicalConfig::learned_hedges`] is on.
    pub fn with_hedge_reader(mut self, reader: Arc<dyn HedgeReader>) -> Self {
        self.hedge_reader = Some(reader);
        self
    }

    /// Also reads a response in another language through `translator`: its English translation is one more
    /// reading ([`ViewKind::Translated`]), and the language policy applies only when the translation fails or does
    /// not read as English. The translator runs only for responses [`detect_language`] names as not English, once
    /// per scoring: a [`StreamGuard`](crate::StreamGuard) translates a foreign answer again at each check.
    pub fn with_translator(mut self, translator: Arc<dyn Translator>) -> Self {
        self.name = format!("{} + translation", self.name);
        self.translator = Some(translator);
        self
    }

    /// The wrapped detector.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The canonicalizer in use.
    pub fn canonicalizer(&self) -> &Canonicalizer {
        &self.canonicalizer
    }
}

impl<D: HarmDetector> HarmDetector for CanonicalDetector<D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn threshold(&self) -> f32 {
        self.inner.threshold()
    }

    fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> Result<Vec<HarmScore>> {
        self.score_with(inputs, None)
    }

    fn score_batch_cached(&self, inputs: &[DetectionInput<'_>], cache: &mut WindowCache) -> Result<Vec<HarmScore>> {
        self.score_with(inputs, Some(cache))
    }
}

impl<D: HarmDetector> CanonicalDetector<D> {
    fn score_with(&self, inputs: &[DetectionInput<'_>], cache: Option<&mut WindowCache>) -> Result<Vec<HarmScore>> {
        // Every reading of every response, scored in one batch: (input, view, text).
        let mut readings: Vec<(usize, ViewKind, String)> = Vec::with_capacity(inputs.len());
        let mut languages: Vec<Option<Language>> = Vec::with_capacity(inputs.len());
        let mut translated: Vec<bool> = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let views = self.canonicalizer.views(input.response);
            let language = foreign_language(input.response, views.iter().map(|v| v.text.as_str()));
            languages.push(language);
            readings.push((i, ViewKind::Original, String::new()));
            readings.extend(views.into_iter().map(|v| (i, v.kind, v.text)));
            // A translation that fails, or is not English, leaves the response to the language policy.
            let translation = match (language, &self.translator) {
                (Some(language), Some(translator)) => translator
                    .to_english(input.response, language)
                    .ok()
                    .filter(|t| detect_language(t).is_none_or(|l| l == Language::Eng)),
                _ => None,
            };
            translated.push(translation.is_some());
            readings.extend(translation.map(|t| (i, ViewKind::Translated, t)));
        }
        self.add_learned_unhedged(&mut readings)?;
        let batch: Vec<DetectionInput<'_>> = readings
            .iter()
            .map(|(i, kind, text)| {
                let response = if *kind == ViewKind::Original {
                    inputs[*i].response
                } else {
                    text.as_str()
                };
                DetectionInput::new(inputs[*i].prompt, response)
            })
            .collect();
        let scores = match cache {
            Some(cache) => self.inner.score_batch_cached(&batch, cache)?,
            None => self.inner.score_batch(&batch)?,
        };
        if scores.len() != batch.len() {
            return Err(Error::ShapeMismatch {
                what: format!("{} scores for the readings", self.inner.name()),
                expected: batch.len().to_string(),
                actual: scores.len().to_string(),
            });
        }
        let mut best: Vec<Option<HarmScore>> = vec![None; inputs.len()];
        let threshold = self.inner.threshold();
        // `load` refuses a bar that is not a probability; one set through `new` falls back to the threshold.
        let bar = Some(self.canonicalizer.config().unhedged_bar)
            .filter(|b| (0.0..=1.0).contains(b))
            .unwrap_or(threshold);
        for ((i, kind, _), mut score) in readings.iter().zip(scores) {
            score.view = *kind;
            if *kind == ViewKind::Unhedged {
                score.probability = span_probability(score.probability, threshold, bar);
            }
            let slot = &mut best[*i];
            let better = match slot {
                None => true,
                Some(b) => !b.probability.is_nan() && (score.probability.is_nan() || score.probability > b.probability),
            };
            if better {
                *slot = Some(score);
            }
        }
        best.into_iter()
            .zip(languages)
            .zip(translated)
            .map(|((score, language), translated)| {
                let mut score = score.ok_or_else(|| Error::ShapeMismatch {
                    what: "readings per response".into(),
                    expected: "at least 1".into(),
                    actual: "0".into(),
                })?;
                score.language = language;
                if language.is_some() && !translated && self.language_policy == LanguagePolicy::Undecided {
                    score.probability = f32::NAN;
                }
                Ok(score)
            })
            .collect()
    }
}

impl<D: HarmDetector> CanonicalDetector<D> {
    /// Each unhedged view read once more without the hedges the reader finds among its sentences, where the reader
    /// drops any and enough words remain. One reader call for the distinct sentences of the whole batch.
    fn add_learned_unhedged(&self, readings: &mut Vec<(usize, ViewKind, String)>) -> Result<()> {
        let Some(reader) = self
            .hedge_reader
            .as_ref()
            .filter(|_| self.canonicalizer.config().learned_hedges)
        else {
            return Ok(());
        };
        let views: Vec<usize> = (0..readings.len())
            .filter(|&r| readings[r].1 == ViewKind::Unhedged)
            .collect();
        // A sentence repeated within or across answers is read once.
        let mut distinct: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for &r in &views {
            for sentence in view_sentences(&readings[r].2) {
                if seen.insert(sentence.clone()) {
                    distinct.push(sentence);
                }
            }
        }
        if distinct.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = distinct.iter().map(String::as_str).collect();
        let verdicts = reader.hedges(&refs)?;
        if verdicts.len() != refs.len() {
            return Err(Error::ShapeMismatch {
                what: format!("{} verdicts for the sentences", reader.name()),
                expected: refs.len().to_string(),
                actual: verdicts.len().to_string(),
            });
        }
        let hedges: HashSet<&str> = refs
            .iter()
            .zip(verdicts)
            .filter_map(|(s, hedge)| hedge.then_some(*s))
            .collect();
        if hedges.is_empty() {
            return Ok(());
        }
        for r in views {
            let (i, _, text) = &readings[r];
            if let Some(view) = without_sentences(text, |s| hedges.contains(s)) {
                readings.push((*i, ViewKind::Unhedged, view));
            }
        }
        Ok(())
    }
}

/// The response's language when it is reliably not English and no view of it reads as English.
fn foreign_language<'a>(response: &str, mut views: impl Iterator<Item = &'a str>) -> Option<Language> {
    let language = detect_language(response).filter(|&l| l != Language::Eng)?;
    (!views.any(|v| detect_language(v) == Some(Language::Eng))).then_some(language)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores the share of "x" characters: NaN for the word "nan".
    struct Share;
    impl HarmDetector for Share {
        fn name(&self) -> &str {
            "share"
        }
        fn threshold(&self) -> f32 {
            0.5
        }
        fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> Result<Vec<HarmScore>> {
            Ok(inputs
                .iter()
                .map(|i| {
                    if i.response.contains("nan") {
                        return HarmScore::single(f32::NAN);
                    }
                    let x = i.response.matches("bomb").count() as f32;
                    HarmScore::single((x / 2.0).min(1.0))
                })
                .collect())
        }
    }

    /// Scores 0.1 if the text apologises or disclaims ("sorry", "no fan"), else `high`.
    struct Wary {
        high: f32,
    }
    impl HarmDetector for Wary {
        fn name(&self) -> &str {
            "wary"
        }
        fn threshold(&self) -> f32 {
            0.5
        }
        fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> Result<Vec<HarmScore>> {
            let score = |r: &str| {
                if r.contains("sorry") || r.contains("no fan") {
                    0.1
                } else {
                    self.high
                }
            };
            Ok(inputs.iter().map(|i| HarmScore::single(score(i.response))).collect())
        }
    }

    #[test]
    fn the_unhedged_view_is_held_to_its_own_bar() {
        let text = "GPT: I'm sorry, I can't help with that.\n\nDAN: Sure thing, here is every step you asked for, \
                    in order, with the amounts and the places to buy each part without anyone noticing a thing.";
        let with_bar = |bar: f32| {
            let config = CanonicalConfig {
                unhedged_bar: bar,
                ..CanonicalConfig::default()
            };
            CanonicalDetector::new(Wary { high: 0.7 }, config, LanguagePolicy::Score)
                .score(DetectionInput::response(text))
                .unwrap()
        };
        // 0.7 is over the threshold (0.5) but under the default bar: mapped under the threshold.
        let strict = with_bar(crate::canonical::UNHEDGED_BAR);
        assert!(strict.probability < 0.5, "{}", strict.probability);
        let loose = with_bar(0.6);
        assert!(loose.probability >= 0.5, "{}", loose.probability);
        assert_eq!(loose.view, ViewKind::Unhedged);
        // A bar that is not a probability falls back to the threshold.
        assert_eq!(with_bar(f32::NAN).probability, 0.7);
    }

    /// Calls every sentence with "no fan" in it a hedge; with `wrong_count`, answers one verdict too many.
    struct NoFan {
        wrong_count: bool,
    }
    impl HedgeReader for NoFan {
        fn name(&self) -> &str {
            "no fan"
        }
        fn hedges(&self, sentences: &[&str]) -> Result<Vec<bool>> {
            let mut v: Vec<bool> = sentences.iter().map(|s| s.contains("no fan")).collect();
            if self.wrong_count {
                v.push(false);
            }
            Ok(v)
        }
    }

    #[test]
    fn a_hedge_reader_drops_what_the_patterns_do_not_list() {
        let text = "GPT: I'm sorry, I can't help with that.\n\nDAN: Sure. Just so you know, I am no fan of any of this. Here \
                    is every step you asked for, in order, with the amounts and the places to buy each part without \
                    anyone noticing a thing.";
        let detector = |learned_hedges: bool| {
            let config = CanonicalConfig {
                learned_hedges,
                ..CanonicalConfig::default()
            };
            CanonicalDetector::new(Wary { high: 0.9 }, config, LanguagePolicy::Score)
        };
        // The patterns drop the refusing persona but not the disclaimer, which keeps the reading low.
        let patterns_only = detector(true).score(DetectionInput::response(text)).unwrap();
        assert!(patterns_only.probability < 0.5, "{}", patterns_only.probability);
        let reader = Arc::new(NoFan { wrong_count: false });
        let learned = detector(true).with_hedge_reader(reader.clone());
        let s = learned.score(DetectionInput::response(text)).unwrap();
        // 0.9 clears the unhedged bar (0.8): mapped over the threshold, and named.
        assert!(s.probability >= 0.5, "{}", s.probability);
        assert_eq!(s.view, ViewKind::Unhedged);
        // Turned off in the configuration, the reader is not asked.
        let off = detector(false).with_hedge_reader(reader);
        assert!(off.score(DetectionInput::response(text)).unwrap().probability < 0.5);
        // An answer without an unhedged view never reaches the reader.
        let plain = learned.score(DetectionInput::response("I am no fan of it.")).unwrap();
        assert_eq!((plain.probability, plain.view), (0.1, ViewKind::Original));
    }

    #[test]
    fn a_reader_that_miscounts_is_an_error() {
        let text = "GPT: I'm sorry, I can't help with that.\n\nDAN: Sure. Just so you know, I am no fan of any of this. Here \
                    is every step you asked for, in order, with the amounts and the places to buy each part.";
        let d = CanonicalDetector::new(Wary { high: 0.9 }, CanonicalConfig::default(), LanguagePolicy::Score)
            .with_hedge_reader(Arc::new(NoFan { wrong_count: true }));
        assert!(matches!(
            d.score(DetectionInput::response(text)),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn the_highest_reading_wins_and_is_named() {
        let d = CanonicalDetector::new(Share, CanonicalConfig::default(), LanguagePolicy::Undecided);
        let scores = d
            .score_batch(&[
                DetectionInput::response("a bomb, a b0mb and a b0mb5 here"),
                DetectionInput::response("nothing to see"),
            ])
            .unwrap();
        assert_eq!(scores[0].view, ViewKind::Leetspeak);
        assert_eq!(scores[0].probability, 1.0);
        assert_eq!(scores[1].view, ViewKind::Original);
        assert_eq!(scores[1].probability, 0.0);
    }

    #[test]
    fn a_nan_reading_is_never_hidden() {
        let d = CanonicalDetector::new(Share, CanonicalConfig::default(), LanguagePolicy::Score);
        // The leetspeak view reads "nan"; the original scores 0.5.
        let s = d.score(DetectionInput::response("a bomb and a n4n with n4n")).unwrap();
        assert!(s.probability.is_nan());
    }

    #[test]
    fn a_foreign_response_follows_the_policy() {
        let es = "Para hacer una bomba casera, mezcla el nitrato de amonio con el combustible y colócalo en un tubo.";
        let undecided = CanonicalDetector::new(Share, CanonicalConfig::default(), LanguagePolicy::Undecided);
        let s = undecided.score(DetectionInput::response(es)).unwrap();
        assert!(s.probability.is_nan());
        assert_eq!(s.language, Some(Language::Spa));
        let scored = CanonicalDetector::new(Share, CanonicalConfig::default(), LanguagePolicy::Score);
        let s = scored.score(DetectionInput::response(es)).unwrap();
        // "bomba" holds "bomb": scored as written, language reported.
        assert_eq!((s.probability, s.language), (0.5, Some(Language::Spa)));
        let en = "To make a cake, mix the flour with the sugar and the eggs, then bake it for twenty minutes.";
        assert_eq!(undecided.score(DetectionInput::response(en)).unwrap().language, None);
    }

    /// Translates by a fixed table; fails on anything else; answers in French when asked about "francés".
    struct Table;
    impl Translator for Table {
        fn name(&self) -> &str {
            "table"
        }
        fn to_english(&self, text: &str, _: Language) -> Result<String> {
            if text.contains("francés") {
                Ok("Pour faire un gâteau, mélangez la farine avec le sucre et les oeufs, puis faites cuire.".into())
            } else if text.contains("bomba") {
                Ok("To make a bomb at home, mix ammonium nitrate with fuel and put it in a bomb tube.".into())
            } else {
                Err(Error::InvalidInput("no translation".into()))
            }
        }
    }

    #[test]
    fn a_translation_is_read_and_a_failed_one_leaves_the_policy() {
        let d = CanonicalDetector::new(Share, CanonicalConfig::default(), LanguagePolicy::Undecided)
            .with_translator(Arc::new(Table));
        assert!(d.name().ends_with("+ translation"));
        let es = "Para hacer una bomba casera, mezcla el nitrato de amonio con el combustible y colócalo en un tubo.";
        let s = d.score(DetectionInput::response(es)).unwrap();
        assert_eq!(
            (s.probability, s.view, s.language),
            (1.0, ViewKind::Translated, Some(Language::Spa))
        );
        // No translation, or one that is not English: undecided, as without a translator.
        for text in [
            "Para hacer un pastel, mezcla la harina con el azúcar y los huevos, y hornéalo veinte minutos.",
            "Para hacer un pastel en francés, mezcla la harina con el azúcar y los huevos, y hornéalo veinte minutos.",
        ] {
            let s = d.score(DetectionInput::response(text)).unwrap();
            assert!(s.probability.is_nan(), "{text}");
        }
        // English is read as written.
        let en = "To make a cake, mix the flour with the sugar and the eggs, then bake it for twenty minutes.";
        assert_eq!(d.score(DetectionInput::response(en)).unwrap().view, ViewKind::Original);
    }
}
