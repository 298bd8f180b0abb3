//! Guarding an answer while it is generated: a [`StreamGuard`] is fed the answer piece by piece (tokens or
//! chunks), checks the growing text at chunk boundaries, shows only text that has passed, and tells the generator
//! to stop as soon as the text is judged harmful, emitting the detoxified or template replacement instead of the
//! rest.
//!
//! Each check reads the whole answer so far through the protector's detector (canonical views and short spans
//! included), with a [`WindowCache`] so that only the windows that changed since the last check are embedded again.
//! The last check reads the finished answer exactly as [`Protector::guard`] would, so a streamed answer that is not
//! stopped early gets the same verdict as the same answer guarded after the fact.

use serde::{Deserialize, Serialize};

use crate::detector::{DetectionInput, HarmScore, WindowCache};
use crate::error::{Error, Result};
use crate::image::{Image, ImageInfo, ImageText};
use crate::protector::opening::word_ends;
use crate::protector::{FailurePolicy, GuardOutcome, GuardRequest, GuardedError, Judgement, Protector, Verdict};

/// What the generator should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Go on generating.
    Continue,
    /// Stop: the answer was judged harmful, or it broke a limit. Whatever the generator produces from now on is
    /// discarded.
    Stop,
}

/// How far text shown to the user may run ahead of, or must lag behind, the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldBack {
    /// Nothing unchecked is ever shown, and a word is shown only once this many checked words follow it: the
    /// checks that come after it may still find that the answer it belongs to is harmful (a harmful answer often
    /// opens with a harmless sentence). `Checked(0)` shows each word as soon as a check has passed it.
    Checked(usize),
    /// Up to this many words may be shown before their check (latency before safety: what is shown cannot be
    /// taken back when a later check fails).
    Unchecked(usize),
}

impl Default for HoldBack {
    /// `Checked(192)`: about one detector window (256 MiniLM tokens), so a harmful answer the detector catches in
    /// its first window shows nothing at all (measured by `examples/stream_eval.rs`).
    fn default() -> Self {
        HoldBack::Checked(DEFAULT_HOLD_BACK_WORDS)
    }
}

/// The default [`HoldBack::Checked`] length in words: about one 256-token window of the default encoder.
pub const DEFAULT_HOLD_BACK_WORDS: usize = 192;

/// When the stream is checked (serde; every field has a default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamConfig {
    /// The first check comes once the answer has this many words (default 32). After it, a check comes once the
    /// answer has grown by as many words as the last check read (the interval doubles, so the checks before the
    /// final one read about as much text as the final one), but never more than `check_every_words` apart.
    pub first_check_words: usize,
    /// Most words between two checks (default 128, about half a window).
    pub check_every_words: usize,
    /// A check that is due waits up to this many words for the end of a sentence, so it reads whole sentences
    /// (default 12; 0: check at once).
    pub sentence_wait_words: usize,
    /// How shown text relates to the checks (default [`HoldBack::Checked`] with one window).
    pub hold_back: HoldBack,
    /// A check before the end stops the generator only when the score reaches this; a lower score over the
    /// protector's threshold holds back everything after it and lets the answer go on, for a later check or the
    /// final one to decide. The beginning of an answer, read alone, can score higher than the whole answer (a
    /// preamble such as "Sure, here is ..." before a harmless text), so a stop on it would disagree with the guard
    /// of the finished answer. The check that reads the guard's opening ([`ProtectorConfig::opening`]; the first
    /// check with the default settings) is held to the opening's threshold instead, which the guard applies too.
    /// `None`: the protector's threshold (stop at once); above 1: only the opening can stop the answer before its
    /// end. See [`DEFAULT_STOP_THRESHOLD`].
    ///
    /// [`ProtectorConfig::opening`]: crate::ProtectorConfig::opening
    pub stop_threshold: Option<f32>,
    /// A check that reaches the stop threshold before the end does not stop the generator at once: it holds back
    /// everything after it, and a second check this many words later must reach the stop threshold too (0: stop at
    /// once). A preamble such as "Sure, here is ..." scores high on its own and lower once the text after it
    /// arrives; a harmful answer keeps scoring high. See [`DEFAULT_CONFIRM_WORDS`].
    pub confirm_words: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            first_check_words: 32,
            check_every_words: 128,
            sentence_wait_words: 12,
            hold_back: HoldBack::default(),
            stop_threshold: Some(DEFAULT_STOP_THRESHOLD),
            confirm_words: DEFAULT_CONFIRM_WORDS,
        }
    }
}

/// The default [`StreamConfig::confirm_words`], chosen on the JailbreakBench validation answers
/// (`examples/stream_eval.rs --set jbb-val --confirm-words ...`): README, "Streaming".
pub const DEFAULT_CONFIRM_WORDS: usize = 0;

/// The default [`StreamConfig::stop_threshold`], chosen on the JailbreakBench validation answers
/// (`examples/stream_eval.rs --set jbb-val --stop-threshold ...`): README, "Streaming".
pub const DEFAULT_STOP_THRESHOLD: f32 = 0.95;

/// What one [`StreamGuard::push`] gives back.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStep {
    /// Text that may now be shown (possibly empty), in order after what was released before.
    pub release: String,
    /// What the generator should do.
    pub flow: Flow,
    /// When the stream was stopped by this push: the outcome, whose `response` is the replacement to show after
    /// everything released so far.
    pub stopped: Option<GuardOutcome>,
}

/// Counters of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStats {
    /// Pieces pushed (tokens, when the generator pushes tokens).
    pub pieces: usize,
    /// Words received.
    pub words: usize,
    /// Checks run (the final one included).
    pub checks: usize,
    /// Windows embedded.
    pub windows_embedded: usize,
    /// Windows taken from earlier checks instead of being embedded again.
    pub windows_reused: usize,
    /// Pieces received when the stream was stopped (absent when it ran to its end).
    pub pieces_at_stop: Option<usize>,
    /// Words shown before the stop, or before the end.
    pub words_released: usize,
}

/// The end of a guarded stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamOutcome {
    /// The verdict on what was generated. `response` is the replacement when the stream was stopped, else the
    /// whole answer; `original_response` is everything the generator produced before the stop.
    pub outcome: GuardOutcome,
    /// Everything the user was shown: the released text, then the replacement when the stream was stopped.
    pub shown: String,
    /// What is left to show after the text released by the pushes: the answer's unreleased tail, or a blank line
    /// and the replacement (`shown` ends with it).
    pub rest: String,
    /// Whether the generator was told to stop before it finished.
    pub stopped: bool,
    /// Counters.
    pub stats: StreamStats,
}

/// Guards one answer while it is generated. Make one with [`Protector::stream`].
///
/// ```no_run
/// use mllm_protector::{Flow, Protector};
/// let protector = Protector::new()?;
/// let mut stream = protector.stream(None, "How do I bake bread?")?;
/// for token in ["Mix ", "flour, ", "water, ", "yeast ", "and ", "salt."] {
///     let step = stream.push(token)?;
///     print!("{}", step.release);
///     if step.flow == Flow::Stop {
///         break;
///     }
/// }
/// let end = stream.finish()?;
/// println!("{}", end.outcome.response);
/// # Ok::<(), mllm_protector::Error>(())
/// ```
pub struct StreamGuard<'p> {
    protector: &'p Protector,
    config: StreamConfig,
    image: Option<ImageInfo>,
    /// The text in the image, read once when the stream starts.
    image_text: Option<std::result::Result<ImageText, String>>,
    /// The image's text scored as a request (`Protector::request_scores`), once per stream.
    request_score: Option<std::result::Result<HarmScore, String>>,
    prompt: String,
    text: String,
    /// Byte offset where each word received so far ends (a word ends where whitespace follows it).
    word_ends: Vec<usize>,
    /// Whether each word ends a sentence.
    sentence_ends: Vec<bool>,
    /// Where the guard's opening ends, once the text has reached it.
    opening_end: Option<usize>,
    /// Words passed by the last check that passed.
    checked_words: usize,
    /// Words read by the last check.
    last_check_words: usize,
    /// The last check reached the stop threshold, and the next one (after `confirm_words`) decides the stop.
    confirming: bool,
    /// Bytes of `text` released.
    released: usize,
    cache: WindowCache,
    undecided: Option<GuardOutcome>,
    stopped: Option<GuardOutcome>,
    failed: Option<String>,
    stats: StreamStats,
}

impl std::fmt::Debug for StreamGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamGuard")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .field("stopped", &self.stopped.is_some())
            .finish()
    }
}

impl Protector {
    /// Starts guarding an answer to `prompt` (and `image`) that will arrive piece by piece, with the default
    /// [`StreamConfig`].
    pub fn stream(&self, image: Option<&Image>, prompt: &str) -> Result<StreamGuard<'_>> {
        self.stream_with(image, prompt, StreamConfig::default())
    }

    /// [`stream`](Self::stream) with its own settings.
    pub fn stream_with(&self, image: Option<&Image>, prompt: &str, config: StreamConfig) -> Result<StreamGuard<'_>> {
        if config.check_every_words == 0 || config.first_check_words == 0 {
            return Err(Error::BadConfig {
                what: "stream".into(),
                reason: "first_check_words and check_every_words must be at least 1".into(),
            });
        }
        let limits = &self.config.limits;
        if prompt.len() > limits.max_prompt_bytes {
            return Err(Error::InputTooLarge {
                what: "prompt".into(),
                len: prompt.len(),
                max: limits.max_prompt_bytes,
            });
        }
        let info = image.map(Image::inspect).transpose()?;
        let image_text = self.read_image(image);
        // The image's text as a request does not change while the answer grows: scored once.
        let request_score = self.request_scores(&[&image_text]).pop().flatten();
        let image = info;
        Ok(StreamGuard {
            protector: self,
            config,
            image,
            image_text,
            request_score,
            prompt: prompt.to_string(),
            text: String::new(),
            word_ends: Vec::new(),
            sentence_ends: Vec::new(),
            opening_end: None,
            checked_words: 0,
            last_check_words: 0,
            confirming: false,
            released: 0,
            cache: WindowCache::default(),
            undecided: None,
            stopped: None,
            failed: None,
            stats: StreamStats::default(),
        })
    }
}

impl StreamGuard<'_> {
    /// Adds the next piece of the answer (a token's text or a longer chunk), checks when a check is due, and says
    /// what may be shown and whether the generator should go on. After a stop, pieces are discarded and the flow
    /// stays [`Flow::Stop`]. An answer longer than the protector's response limit is an error, and the stream
    /// stops.
    pub fn push(&mut self, piece: &str) -> Result<StreamStep> {
        if let Some(reason) = &self.failed {
            return Err(Error::InvalidInput(format!("the stream has failed: {reason}")));
        }
        if self.stopped.is_some() {
            return Ok(self.step(String::new(), Flow::Stop, None));
        }
        self.stats.pieces += 1;
        let max = self.protector.config.limits.max_response_bytes;
        if self.text.len() + piece.len() > max {
            let len = self.text.len() + piece.len();
            self.failed = Some(format!("the response grew past {max} bytes"));
            return Err(Error::InputTooLarge {
                what: "streamed response".into(),
                len,
                max,
            });
        }
        let before = self.word_ends.len();
        self.append(piece);
        // Checks fall on words, wherever the pieces end, so they read the same text however the answer is cut
        // into pieces (the first one reads what `ProtectorConfig::opening` reads).
        for words in before + 1..=self.word_ends.len() {
            let unchecked = words - self.last_check_words;
            let interval = if self.confirming {
                self.config.confirm_words.max(1)
            } else if self.last_check_words == 0 {
                self.config.first_check_words
            } else {
                self.last_check_words.min(self.config.check_every_words)
            };
            let sentence_end = self.sentence_ends.get(words - 1).copied().unwrap_or(false);
            let due =
                unchecked >= interval && (sentence_end || unchecked >= interval + self.config.sentence_wait_words);
            if due && let Some(outcome) = self.check(words) {
                self.stats.pieces_at_stop = Some(self.stats.pieces);
                self.stopped = Some(outcome.clone());
                return Ok(self.step(String::new(), Flow::Stop, Some(outcome)));
            }
        }
        let release = self.release_to(self.release_frontier());
        Ok(self.step(release, Flow::Continue, None))
    }

    /// Ends the stream: checks what has not been checked yet, exactly as [`Protector::guard`] reads a whole answer,
    /// and gives the outcome, with the rest of the text to show (the answer's tail, or the replacement).
    /// An empty answer is an error, as in `guard`.
    pub fn finish(mut self) -> Result<StreamOutcome> {
        if let Some(reason) = self.failed.take() {
            return Err(Error::InvalidInput(format!("the stream has failed: {reason}")));
        }
        let stopped = self.stopped.is_some();
        let outcome = match self.stopped.take() {
            Some(outcome) => outcome,
            None if self.text.trim().is_empty() => {
                return Err(Error::InvalidInput(
                    "the response is empty: there is nothing to guard".into(),
                ));
            }
            // The final check reads the whole text, the last word included.
            None => self.check_all(),
        };
        let released = &self.text[..self.released];
        let (shown, rest) = if outcome.was_changed() {
            let shown = join_shown(released, &outcome.response);
            let rest = shown[released.len()..].to_string();
            self.stats.words_released = count_words(released);
            (shown, rest)
        } else {
            self.stats.words_released = count_words(&self.text);
            (self.text.clone(), self.text[self.released..].to_string())
        };
        Ok(StreamOutcome {
            outcome,
            shown,
            rest,
            stopped,
            stats: self.stats,
        })
    }

    /// Drives the stream from a generator that is an iterator of pieces: pulls pieces until the answer ends or the
    /// guard says stop (a lazy iterator is then no longer pulled, so it generates nothing more), hands released text
    /// to `on_release` (the replacement too, when the stream was stopped), and returns the outcome.
    ///
    /// ```no_run
    /// use mllm_protector::Protector;
    /// let protector = Protector::new()?;
    /// let tokens = ["Water ", "boils ", "at ", "100 ", "°C."].map(Ok::<_, std::io::Error>);
    /// let end = protector.stream(None, "When does water boil?")?.run(tokens, |text| print!("{text}"))?;
    /// assert!(!end.stopped);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run<I, S, E>(
        mut self,
        pieces: I,
        mut on_release: impl FnMut(&str),
    ) -> std::result::Result<StreamOutcome, GuardedError<E>>
    where
        I: IntoIterator<Item = std::result::Result<S, E>>,
        S: AsRef<str>,
    {
        for piece in pieces {
            let step = self.push(piece.map_err(GuardedError::Generate)?.as_ref())?;
            if !step.release.is_empty() {
                on_release(&step.release);
            }
            if step.flow == Flow::Stop {
                break;
            }
        }
        let end = self.finish()?;
        if !end.rest.is_empty() {
            on_release(&end.rest);
        }
        Ok(end)
    }

    /// The answer received so far (kept whole, for audit, whatever was shown).
    pub fn received(&self) -> &str {
        &self.text
    }

    /// The counters so far.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    fn step(&self, release: String, flow: Flow, stopped: Option<GuardOutcome>) -> StreamStep {
        StreamStep { release, flow, stopped }
    }

    /// Appends `piece` and records the words it completes, and which of them end a sentence.
    fn append(&mut self, piece: &str) {
        let start = self.text.len();
        self.text.push_str(piece);
        for (at, sentence) in word_ends(&self.text, start) {
            self.word_ends.push(at);
            self.sentence_ends.push(sentence);
        }
    }

    /// Scores the text up to the end of word `words` (through the cache). Returns the outcome when the stream must
    /// stop (harmful at the stop bar). A check that cannot decide holds back everything after it under fail-closed
    /// (the final check decides) and shows it under fail-open.
    fn check(&mut self, words: usize) -> Option<GuardOutcome> {
        let end = match words.checked_sub(1).and_then(|w| self.word_ends.get(w)) {
            Some(&end) => end,
            None => return None,
        };
        self.last_check_words = words;
        let mut judged = self.score(end);
        let protector = self.protector;
        // The check that reads exactly the guard's opening stops at the opening threshold, as the guard of the whole
        // answer would flag it; any other check stops at the stream's own stop threshold.
        // Where the opening ends does not change once the text reaches it: found once.
        if self.opening_end.is_none() {
            self.opening_end = protector.config.opening.and_then(|o| o.end(&self.text));
        }
        let opening = protector.config.opening.filter(|_| self.opening_end == Some(end));
        let stop_bar = match opening {
            Some(o) => o.threshold,
            None => self.config.stop_threshold.unwrap_or(0.0),
        };
        if let (Some(o), Ok(s)) = (opening, &judged.score)
            && s.probability >= o.threshold
        {
            judged.threshold = judged.threshold.max(o.threshold);
            judged.opening = true;
        }
        let confirming = std::mem::take(&mut self.confirming);
        match protector.verdict_of(&judged.score, judged.threshold) {
            Verdict::Harmless => {
                self.checked_words = words;
                None
            }
            Verdict::Harmful if judged.score.as_ref().is_ok_and(|s| s.probability < stop_bar) => {
                // Harmful so far, but not surely: show nothing more and let the answer go on; a later check, or the
                // final one, decides.
                None
            }
            Verdict::Harmful if !confirming && self.config.confirm_words > 0 => {
                // Surely harmful so far: show nothing more, and stop if the check a few words on agrees.
                self.confirming = true;
                None
            }
            Verdict::Undecided if protector.config.on_undecided == FailurePolicy::FailOpen => {
                // Fail-open: shown, marked undecided in the final outcome.
                self.checked_words = words;
                self.undecided = Some(self.decide(end, judged));
                None
            }
            Verdict::Undecided => {
                // Fail-closed: show nothing more, and let the final check, which reads what the guard reads, decide
                // (a prefix can be undecided where the whole answer is not, e.g. in another language at first).
                None
            }
            _ => Some(self.decide(end, judged)),
        }
    }

    /// The final check over the whole text.
    fn check_all(&mut self) -> GuardOutcome {
        let end = self.text.len();
        let mut judged = self.score(end);
        // The opening, read as the guard reads it (its windows are in the cache when a check read it).
        let protector = self.protector;
        if let Some(text) = protector.opening_to_read(&self.text, &judged) {
            let (embedded, reused) = (self.cache.misses(), self.cache.hits());
            let input = [DetectionInput::new(&self.prompt, text)];
            let score = protector.detector.score_batch_cached(&input, &mut self.cache).ok();
            self.stats.windows_embedded += self.cache.misses() - embedded;
            self.stats.windows_reused += self.cache.hits() - reused;
            protector.apply_opening(&mut judged, score.as_ref().and_then(|s| s.first()));
        }
        let mut outcome = self.decide(end, judged);
        if outcome.verdict == Verdict::Harmless
            && let Some(undecided) = &self.undecided
        {
            outcome.note = undecided.note.clone();
        }
        outcome
    }

    /// Scores `text[..end]` through the cache, with the image's text as the protector uses it.
    fn score(&mut self, end: usize) -> Judgement {
        let protector = self.protector;
        let detector = &protector.detector;
        let (embedded, reused) = (self.cache.misses(), self.cache.hits());
        let response = &self.text[..end];
        let extra = protector.image_readings(&self.prompt, response, &self.image_text);
        let mut inputs = vec![DetectionInput::new(&self.prompt, response)];
        inputs.extend(extra.iter().map(|(p, r)| DetectionInput::new(p, r)));
        let scores: Vec<std::result::Result<HarmScore, String>> =
            match detector.score_batch_cached(&inputs, &mut self.cache) {
                Ok(s) if s.len() == inputs.len() => s.into_iter().map(Ok).collect(),
                Ok(_) => vec![Err(format!("{} did not return one score per reading", detector.name())); inputs.len()],
                Err(e) => vec![Err(e.to_string()); inputs.len()],
            };
        self.stats.checks += 1;
        self.stats.windows_embedded += self.cache.misses() - embedded;
        self.stats.windows_reused += self.cache.hits() - reused;
        let mut scores = scores.into_iter();
        let main = scores.next().unwrap_or_else(|| Err("no score returned".into()));
        let extra: Vec<_> = scores.collect();
        protector.with_image_text(main, &extra, self.request_score.clone(), self.image_text.clone())
    }

    /// The protector's outcome for `text[..end]` as judged (detoxified or replaced when harmful).
    fn decide(&self, end: usize, judged: Judgement) -> GuardOutcome {
        let request = GuardRequest {
            image: None,
            prompt: &self.prompt,
            response: &self.text[..end],
        };
        self.protector.decide(&request, self.image.clone(), judged)
    }

    /// The byte offset up to which text may be shown now.
    fn release_frontier(&self) -> usize {
        let words = match self.config.hold_back {
            HoldBack::Checked(n) => self.checked_words.saturating_sub(n),
            HoldBack::Unchecked(n) => (self.checked_words + n).min(self.word_ends.len()),
        };
        match words.checked_sub(1).and_then(|w| self.word_ends.get(w)) {
            Some(&end) => end,
            None => 0,
        }
    }

    fn release_to(&mut self, frontier: usize) -> String {
        if frontier <= self.released {
            return String::new();
        }
        let release = self.text[self.released..frontier].to_string();
        self.released = frontier;
        release
    }
}

fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// What the user saw: the released text, then the replacement, a blank line between them.
fn join_shown(released: &str, replacement: &str) -> String {
    if released.trim().is_empty() {
        replacement.to_string()
    } else {
        format!("{released}\n\n{replacement}")
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::detector::{HarmDetector, HarmScore};
    use crate::protector::{
        Action, FailurePolicy, GenerateStream, GuardLayer, InputLimits, OpeningReading, ProtectorConfig,
    };

    /// Flags any text that contains "bomb"; NaN for "nan". A short opening that starts with "Sure" also scores
    /// harmful: a preamble that reads harmful alone and not with the text after it.
    struct Word;
    impl HarmDetector for Word {
        fn name(&self) -> &str {
            "word"
        }
        fn threshold(&self) -> f32 {
            0.5
        }
        fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> Result<Vec<HarmScore>> {
            Ok(inputs
                .iter()
                .map(|i| {
                    let preamble = i.response.starts_with("Sure") && i.response.split_whitespace().count() < 12;
                    let p = if i.response.contains("nan") {
                        f32::NAN
                    } else if i.response.contains("bomb") || preamble {
                        0.99
                    } else {
                        0.1
                    };
                    HarmScore::single(p)
                })
                .collect())
        }
    }

    fn protector(policy: FailurePolicy) -> Protector {
        Protector::builder()
            .detector(Word)
            .on_undecided(policy)
            .build()
            .unwrap()
    }

    fn words(n: usize, from: usize) -> Vec<String> {
        (from..from + n).map(|i| format!("w{i} ")).collect()
    }

    /// Pushes every piece until a stop; returns the text released by the pushes.
    fn feed(stream: &mut StreamGuard<'_>, pieces: &[String]) -> String {
        let mut released = String::new();
        for piece in pieces {
            let step = stream.push(piece).unwrap();
            released.push_str(&step.release);
            if step.flow == Flow::Stop {
                break;
            }
        }
        released
    }

    fn config(hold_back: HoldBack) -> StreamConfig {
        StreamConfig {
            first_check_words: 8,
            check_every_words: 8,
            sentence_wait_words: 0,
            hold_back,
            stop_threshold: None,
            confirm_words: 0,
        }
    }

    #[test]
    fn a_harmless_answer_is_released_whole_and_agrees_with_guard() {
        let p = protector(FailurePolicy::FailClosed);
        let pieces = words(300, 0);
        let text: String = pieces.concat();
        let mut stream = p.stream_with(None, "q", config(HoldBack::Checked(20))).unwrap();
        let released = feed(&mut stream, &pieces);
        assert!(
            released.len() < text.len() && text.starts_with(&released),
            "only a prefix is released early"
        );
        assert!(
            count_words(&text) - count_words(&released) >= 20,
            "the hold-back is kept"
        );
        let end = stream.finish().unwrap();
        assert!(!end.stopped);
        assert_eq!(end.shown, text);
        assert_eq!(format!("{released}{}", end.rest), text);
        let post_hoc = p.guard(None, "q", &text).unwrap();
        assert_eq!(end.outcome.verdict, post_hoc.verdict);
        assert_eq!(end.outcome.harm_score, post_hoc.harm_score);
        assert!(end.stats.checks > 10, "checked along the way: {:?}", end.stats);
    }

    #[test]
    fn a_harmful_answer_is_stopped_and_nothing_unchecked_is_shown() {
        let p = protector(FailurePolicy::FailClosed);
        let mut pieces = words(50, 0);
        pieces.push("bomb. ".into());
        pieces.extend(words(300, 50));
        let mut stream = p.stream_with(None, "q", config(HoldBack::Checked(0))).unwrap();
        let released = feed(&mut stream, &pieces);
        assert!(!released.contains("bomb"));
        assert!(
            released.starts_with("w0 ") && count_words(&released) >= 40,
            "{released}"
        );
        // After the stop, pieces are discarded.
        let after = stream.push("more words ").unwrap();
        assert_eq!((after.flow, after.release.as_str()), (Flow::Stop, ""));
        let end = stream.finish().unwrap();
        assert!(end.stopped);
        assert_eq!(end.outcome.verdict, Verdict::Harmful);
        assert_eq!(end.outcome.action, Action::Replaced);
        assert!(
            end.outcome.original_response.contains("bomb"),
            "the answer is kept for audit"
        );
        assert!(
            end.stats.pieces_at_stop.unwrap() < 70,
            "stopped within a check of the harm"
        );
        assert_eq!(end.shown, format!("{released}\n\n{}", end.outcome.response));
        assert!(end.rest.ends_with(&end.outcome.response));
    }

    #[test]
    fn a_confirming_check_keeps_a_preamble_from_stopping_the_stream() {
        let p = protector(FailurePolicy::FailClosed);
        let mut pieces = vec!["Sure, ".to_string()];
        pieces.extend(words(40, 0));
        for (confirm_words, stopped) in [(0, true), (8, false)] {
            let config = StreamConfig {
                confirm_words,
                ..config(HoldBack::Checked(0))
            };
            let mut stream = p.stream_with(None, "q", config).unwrap();
            let released = feed(&mut stream, &pieces);
            let end = stream.finish().unwrap();
            assert_eq!(end.stopped, stopped, "confirm_words {confirm_words}");
            if stopped {
                assert_eq!(released, "", "nothing of the flagged opening is shown");
                assert_eq!(end.stats.pieces_at_stop, Some(8));
            } else {
                assert_eq!(end.outcome.verdict, Verdict::Harmless);
                assert_eq!(end.shown, pieces.concat());
            }
        }
        // A harmful answer keeps scoring high: the confirming check stops it, one interval later.
        let mut pieces = vec!["bomb ".to_string()];
        pieces.extend(words(40, 0));
        let config = StreamConfig {
            confirm_words: 8,
            ..config(HoldBack::Checked(0))
        };
        let mut stream = p.stream_with(None, "q", config).unwrap();
        assert_eq!(feed(&mut stream, &pieces), "");
        let end = stream.finish().unwrap();
        assert!(end.stopped);
        assert_eq!(end.stats.pieces_at_stop, Some(16));
    }

    #[test]
    fn a_stop_at_the_opening_agrees_with_the_guard_however_the_answer_is_cut() {
        // The guard reads a 4-word opening; "Sure here is it." alone reads as harmful (0.99), the whole as harmless.
        let opening = OpeningReading {
            words: 4,
            sentence_wait_words: 0,
            ..Default::default()
        };
        let p = Protector::builder()
            .detector(Word)
            .config(ProtectorConfig {
                opening: Some(opening),
                ..Default::default()
            })
            .build()
            .unwrap();
        let answer = format!("Sure here is it. {}", words(30, 0).concat());
        let guarded = p.guard(None, "q", &answer).unwrap();
        assert_eq!(guarded.verdict, Verdict::Harmful);
        assert!(guarded.opening, "the opening decided: {guarded:?}");
        let stream_config = StreamConfig {
            first_check_words: 4,
            sentence_wait_words: 0,
            // Later checks never stop: only the opening can.
            stop_threshold: Some(2.0),
            ..config(HoldBack::Checked(0))
        };
        // Word by word, and in pieces that do not end where the opening does: the first check reads the opening.
        let by_word: Vec<String> = answer.split_inclusive(' ').map(str::to_string).collect();
        let by_chunk: Vec<String> = by_word.chunks(3).map(|c| c.concat()).collect();
        for pieces in [by_word, by_chunk] {
            let mut stream = p.stream_with(None, "q", stream_config).unwrap();
            assert_eq!(feed(&mut stream, &pieces), "");
            let end = stream.finish().unwrap();
            assert!(end.stopped && end.outcome.opening, "{end:?}");
            assert_eq!(end.outcome.verdict, guarded.verdict);
        }
        // Without the opening reading neither flags it: the whole answer reads as harmless.
        let plain = Protector::builder()
            .detector(Word)
            .config(ProtectorConfig {
                opening: None,
                ..Default::default()
            })
            .build()
            .unwrap();
        assert_eq!(plain.guard(None, "q", &answer).unwrap().verdict, Verdict::Harmless);
        let mut stream = plain.stream_with(None, "q", stream_config).unwrap();
        feed(&mut stream, std::slice::from_ref(&answer));
        let end = stream.finish().unwrap();
        assert!(!end.stopped && end.outcome.verdict == Verdict::Harmless);
        assert_eq!(end.shown, answer);
    }

    #[test]
    fn the_default_hold_back_shows_nothing_of_a_harmful_first_window() {
        let p = protector(FailurePolicy::FailClosed);
        let mut pieces = words(150, 0);
        pieces.push("bomb ".into());
        pieces.extend(words(100, 150));
        let mut stream = p.stream(None, "q").unwrap();
        let released = feed(&mut stream, &pieces);
        assert_eq!(released, "");
        let end = stream.finish().unwrap();
        assert!(end.stopped && end.stats.words_released == 0);
        assert_eq!(end.shown, end.outcome.response);
    }

    #[test]
    fn unchecked_hold_back_shows_text_before_its_check() {
        let p = protector(FailurePolicy::FailClosed);
        let mut pieces = words(20, 0);
        pieces.push("bomb ".into());
        pieces.extend(words(20, 20));
        let mut stream = p
            .stream_with(
                None,
                "q",
                StreamConfig {
                    first_check_words: 30,
                    check_every_words: 30,
                    sentence_wait_words: 0,
                    hold_back: HoldBack::Unchecked(25),
                    stop_threshold: None,
                    confirm_words: 0,
                },
            )
            .unwrap();
        let released = feed(&mut stream, &pieces);
        assert!(released.contains("bomb"), "shown before its check: {released}");
        assert!(stream.finish().unwrap().stopped);
    }

    #[test]
    fn the_final_check_reads_the_last_words() {
        let p = protector(FailurePolicy::FailClosed);
        let mut pieces = words(5, 0);
        pieces.push("bomb".into());
        let mut stream = p.stream_with(None, "q", config(HoldBack::Checked(0))).unwrap();
        assert!(!feed(&mut stream, &pieces).contains("bomb"));
        let end = stream.finish().unwrap();
        assert!(!end.stopped, "the generator had finished");
        assert_eq!(end.outcome.verdict, Verdict::Harmful);
        assert!(!end.shown.contains("bomb") && end.outcome.was_changed());
    }

    #[test]
    fn an_oversized_or_empty_answer_is_an_error() {
        let p = Protector::builder()
            .detector(Word)
            .limits(InputLimits {
                max_response_bytes: 100,
                ..Default::default()
            })
            .build()
            .unwrap();
        let mut stream = p.stream(None, "q").unwrap();
        assert!(stream.push(&"a ".repeat(40)).is_ok());
        assert!(matches!(
            stream.push(&"a ".repeat(40)),
            Err(Error::InputTooLarge { .. })
        ));
        assert!(stream.push("a").is_err(), "a failed stream stays failed");
        assert_eq!(stream.received(), "a ".repeat(40), "what was received is kept");
        assert!(stream.finish().is_err());
        let empty = p.stream(None, "q").unwrap();
        assert!(matches!(empty.finish(), Err(Error::InvalidInput(_))));
        let zero = StreamConfig {
            check_every_words: 0,
            ..Default::default()
        };
        assert!(matches!(p.stream_with(None, "q", zero), Err(Error::BadConfig { .. })));
    }

    #[test]
    fn an_undecided_check_follows_the_failure_policy() {
        let mut pieces = words(10, 0);
        pieces.push("nan ".into());
        pieces.extend(words(30, 10));
        let closed = protector(FailurePolicy::FailClosed);
        let mut stream = closed.stream_with(None, "q", config(HoldBack::Checked(0))).unwrap();
        let released = feed(&mut stream, &pieces);
        let end = stream.finish().unwrap();
        // Nothing after the undecided check is shown; the final check decides, as the guard would.
        assert!(!released.contains("nan") && !end.shown.contains("nan"), "{released:?}");
        assert_eq!(end.outcome.verdict, Verdict::Undecided);
        assert_eq!(
            end.outcome.verdict,
            closed.guard(None, "q", &pieces.concat()).unwrap().verdict
        );
        assert!(end.outcome.was_changed());
        let open = protector(FailurePolicy::FailOpen);
        let mut stream = open.stream_with(None, "q", config(HoldBack::Checked(0))).unwrap();
        feed(&mut stream, &pieces);
        let end = stream.finish().unwrap();
        assert!(!end.stopped);
        assert_eq!(
            end.outcome.verdict,
            Verdict::Undecided,
            "the whole answer holds 'nan' too"
        );
        assert_eq!(end.shown, pieces.concat());
    }

    #[test]
    fn an_iterator_is_no_longer_pulled_after_the_stop() {
        let p = protector(FailurePolicy::FailClosed);
        let pulled = Cell::new(0);
        let pieces = (0..1000).map(|i| {
            pulled.set(pulled.get() + 1);
            Ok::<_, std::io::Error>(if i == 30 { "bomb ".to_string() } else { format!("w{i} ") })
        });
        let mut shown = String::new();
        let stream = p.stream_with(None, "q", config(HoldBack::Checked(0))).unwrap();
        let end = stream.run(pieces, |t| shown.push_str(t)).unwrap();
        assert!(end.stopped && pulled.get() < 50, "pulled {}", pulled.get());
        assert_eq!(
            shown, end.shown,
            "the callback saw exactly what the outcome says was shown"
        );
    }

    /// Streams numbered words, with "bomb" at `harm`, and counts what it generated.
    struct Counting {
        harm: usize,
        generated: Cell<usize>,
    }
    impl GenerateStream for Counting {
        type Error = std::io::Error;
        fn generate_stream(
            &self,
            _image: Option<&Image>,
            _prompt: &str,
            on_piece: &mut dyn FnMut(&str) -> Flow,
        ) -> std::result::Result<(), Self::Error> {
            for i in 0..500 {
                self.generated.set(i + 1);
                let piece = if i == self.harm {
                    "bomb ".to_string()
                } else {
                    format!("w{i} ")
                };
                if on_piece(&piece) == Flow::Stop {
                    break;
                }
            }
            Ok(())
        }
    }

    #[test]
    fn a_streaming_generator_is_stopped_through_the_layer() {
        let guarded = GuardLayer::new(std::sync::Arc::new(protector(FailurePolicy::FailClosed))).layer(Counting {
            harm: 300,
            generated: Cell::new(0),
        });
        let mut shown = String::new();
        let end = guarded.generate_stream(None, "q", |t| shown.push_str(t)).unwrap();
        assert!(end.stopped);
        assert!(
            guarded.inner().generated.get() < 360,
            "generated {}",
            guarded.inner().generated.get()
        );
        assert!(!shown.contains("bomb") && shown.ends_with(&end.outcome.response));
        assert!(
            shown.starts_with("w0 "),
            "text far enough before the harm was shown: {shown}"
        );
    }
}
