//! What a post-hoc guard that also read an answer's opening, as the stream's first check reads it, would newly
//! flag: the measurement behind the idea for making `StreamGuard` and `guard` agree by construction
//! (docs/EVALUATION.md, "Streaming").
//!
//!     cargo run --release --example opening_probe -- jbb-val alpaca-val gptfuzz-train
//!
//! The opening is the text up to the stream's first check with the default schedule (32 words, waiting up to 12
//! more for a sentence end). For each set it counts the answers whose opening scores at or above a strict threshold
//! (0.9, 0.95, 0.98) while the whole answer passes the guard, by label. `gptfuzz-train` is every 10th GPTFuzz answer
//! to a training question.

mod common;

use std::collections::BTreeMap;

use mllm_protector::detector::{DetectionInput, HarmDetector};
use mllm_protector::eval::data::{self, Split, in_split};
use mllm_protector::{DeviceChoice, Protector, StreamConfig};

/// The text the stream's first check reads, or `None` when the answer ends before it.
fn opening<'a>(text: &'a str, config: &StreamConfig) -> Option<&'a str> {
    let mut words = 0;
    let mut prev: Option<char> = None;
    for (at, c) in text.char_indices() {
        if c.is_whitespace()
            && let Some(p) = prev.filter(|p| !p.is_whitespace())
        {
            words += 1;
            let sentence_end = matches!(p, '.' | '!' | '?' | ':' | ';') || c == '\n';
            let first = config.first_check_words;
            if words >= first && (sentence_end || words >= first + config.sentence_wait_words) {
                return Some(&text[..at]);
            }
        }
        prev = Some(c);
    }
    None
}

fn main() -> anyhow::Result<()> {
    let protector = Protector::builder().device(DeviceChoice::Cpu).build()?;
    let detector = protector.detector();
    let threshold = protector.threshold();
    let config = StreamConfig::default();
    let seed = common::head_split_seed()?;
    let dir = data::data_dir()?;
    for name in std::env::args().skip(1) {
        let examples = match name.as_str() {
            "jbb-val" => in_split(data::load_jbb(&dir)?, Split::Validation, seed),
            "alpaca-val" => in_split(data::load_alpaca(&dir)?, Split::Validation, seed),
            "gptfuzz-train" => in_split(data::load_gptfuzz(&dir)?, Split::Train, seed)
                .into_iter()
                .step_by(10)
                .collect(),
            other => anyhow::bail!("unknown set {other:?} (jbb-val, alpaca-val, gptfuzz-train)"),
        };
        let mut newly: BTreeMap<(String, &str), usize> = BTreeMap::new();
        let mut with_opening = 0;
        for e in &examples {
            let Some(open) = opening(&e.response, &config) else {
                continue;
            };
            with_opening += 1;
            let scores = detector.score_batch(&[
                DetectionInput::new(&e.prompt, open),
                DetectionInput::new(&e.prompt, &e.response),
            ])?;
            let (opening_p, whole_p) = (scores[0].probability, scores[1].probability);
            for strict in [0.9f32, 0.95, 0.98] {
                if opening_p >= strict && whole_p < threshold {
                    let label = if e.harmful { "harmful" } else { "harmless" };
                    *newly.entry((format!("{strict}"), label)).or_default() += 1;
                }
            }
        }
        println!(
            "{name}: {} answers, {with_opening} longer than the opening; newly flagged (strict threshold, label): {newly:?}",
            examples.len()
        );
    }
    Ok(())
}
