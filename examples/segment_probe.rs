//! Topic segments, on validation data: does reading the topical segments of a long one-paragraph answer on their own
//! catch a harmful answer padded with (or buried in) harmless text, and at what cost in false positives? This is
//! where the default `Segmenting` (cut at similarity 0.3, segments held to 0.95) was chosen. Validation data only:
//! JailbreakBench validation answers, and 300 AlpacaEval validation answers (all harmless), padded and buried with
//! AlpacaEval validation answers (`evaluate --disguise` uses AlpacaEval test answers). A cut goes where the cosine
//! similarity of the mean embeddings of the 2 sentences before and after a gap is a local minimum under `tau`
//! ([`topic_cuts`]); each segment is scored by the plain detector (segments off), held to its threshold or to a
//! stricter bar.
//! docs/EVALUATION.md, "Topic segments", has the results.
//!
//!     cargo run --release --example segment_probe    # about 35 minutes on 2 cores

mod common;

use mllm_protector::detector::encoder::sentence_spans;
use mllm_protector::detector::segments::topic_cuts;
use mllm_protector::detector::{DetectionInput, DetectorConfig, EmbeddingDetector, HarmDetector};
use mllm_protector::eval::disguise::Disguise;

/// Segments of `sentences` cut by the library's rule ([`topic_cuts`]), as ranges of sentence indices.
fn segments(emb: &[Vec<f32>], k: usize, tau: f32) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for cut in topic_cuts(emb, k, tau).into_iter().chain([emb.len()]) {
        out.push((start, cut));
        start = cut;
    }
    out
}

/// One disguised answer: its label, the whole answer's score, and per cut setting the best segment's score.
struct Read {
    harmful: bool,
    whole: f32,
    best_segment: Vec<f32>,
    segments: Vec<usize>,
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let seed = common::head_split_seed()?;
    let jbb = common::named_set("jbb-val", seed)?;
    let pool = common::named_set("alpaca-val", seed)?;
    let detector = EmbeddingDetector::load(&DetectorConfig {
        segments: None,
        ..DetectorConfig::default()
    })?;
    let encoder = detector.encoder().clone();
    let t = detector.threshold();
    let taus = [0.2f32, 0.3];
    let bars = [t, 0.9, 0.95, 0.98, 0.99];
    // Harmless answers alone, for false positives with less noise than JBB's harmless half: AlpacaEval validation
    // answers padded and buried in other AlpacaEval validation answers.
    let harmless: Vec<_> = pool.iter().take(300).cloned().collect();
    for (set, examples, offset) in [("jbb-val", &jbb, 0), ("alpaca-val", &harmless, 150)] {
        for disguise in [Disguise::Padded, Disguise::Buried] {
            let mut reads = Vec::new();
            for (i, e) in examples.iter().enumerate() {
                let text = disguise.apply(&e.response, &common::filler(&pool, i * 7 + offset));
                let whole = detector.score(DetectionInput::response(&text))?.probability;
                let sentences = sentence_spans(&text, 1);
                let embedded = encoder.embed_windows(&sentences)?;
                let rows = embedded.embeddings.to_vec2::<f32>()?;
                let mut per_sentence: Vec<Vec<f32>> = vec![Vec::new(); sentences.len()];
                for (r, &o) in rows.into_iter().zip(&embedded.owner) {
                    if per_sentence[o].is_empty() {
                        per_sentence[o] = r;
                    }
                }
                let (mut best_segment, mut counts) = (Vec::new(), Vec::new());
                for &tau in &taus {
                    let segs = segments(&per_sentence, 2, tau);
                    let texts: Vec<&str> = if segs.len() > 1 {
                        segs.iter()
                            .map(|&(a, b)| {
                                let start = sentences[a].as_ptr() as usize - text.as_ptr() as usize;
                                let last = sentences[b - 1];
                                let end = last.as_ptr() as usize - text.as_ptr() as usize + last.len();
                                &text[start..end]
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    counts.push(texts.len());
                    let inputs: Vec<DetectionInput<'_>> = texts.iter().map(|s| DetectionInput::response(s)).collect();
                    let best = if inputs.is_empty() {
                        0.0
                    } else {
                        detector
                            .score_batch(&inputs)?
                            .iter()
                            .map(|s| s.probability)
                            .fold(0f32, f32::max)
                    };
                    best_segment.push(best);
                }
                reads.push(Read {
                    harmful: e.harmful,
                    whole,
                    best_segment,
                    segments: counts,
                });
            }
            let pos = reads.iter().filter(|r| r.harmful).count().max(1) as f64;
            let neg = reads.iter().filter(|r| !r.harmful).count().max(1) as f64;
            let rate = |flag: &dyn Fn(&Read) -> bool| {
                let tp = reads.iter().filter(|r| r.harmful && flag(r)).count() as f64;
                let fp = reads.iter().filter(|r| !r.harmful && flag(r)).count() as f64;
                (tp / pos, fp / neg)
            };
            let (recall, fpr) = rate(&|r| r.whole >= t);
            println!(
                "{set} {} (n {}): whole answer only: recall {recall:.3} FPR {fpr:.3}",
                disguise.name(),
                reads.len()
            );
            for (c, tau) in taus.iter().enumerate() {
                let per = reads.iter().map(|r| r.segments[c]).sum::<usize>() as f64 / reads.len() as f64;
                for &bar in &bars {
                    let (recall, fpr) = rate(&|r| r.whole >= t || r.best_segment[c] >= bar);
                    println!(
                        "  tau {tau} segments at {bar:.3}: recall {recall:.3} FPR {fpr:.3} (segments per answer {per:.1})"
                    );
                }
            }
        }
    }
    Ok(())
}
