//! What the guard's opening reading (`ProtectorConfig::opening`: the answer's opening read alone at a strict
//! threshold, which is what the stream's first check reads) flags that the reading of the whole answer passes, per
//! set and label, at several strict thresholds. It is how the opening threshold was chosen (on validation sets) and
//! what it costs on the others (docs/EVALUATION.md, "Streaming").
//!
//!     cargo run --release --example opening_probe -- jbb-val alpaca-val gptfuzz-train
//!     cargo run --release --example opening_probe -- jbb-test alpaca-test gptfuzz-val xstest
//!
//! `gptfuzz-train` and `gptfuzz-val` are every 10th GPTFuzz answer to the questions of that split; the other sets are
//! `evaluate`'s.

mod common;

use std::collections::BTreeMap;

use mllm_protector::detector::DetectionInput;
use mllm_protector::{DeviceChoice, OpeningReading, Protector};

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let protector = Protector::builder().device(DeviceChoice::Cpu).build()?;
    let detector = protector.detector();
    let threshold = protector.threshold();
    let opening = OpeningReading::default();
    let seed = common::head_split_seed()?;
    let names: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        !names.is_empty(),
        "name at least one set (e.g. jbb-val alpaca-val gptfuzz-train)"
    );
    for name in names {
        let mut examples = common::named_set(&name, seed)?;
        if name.starts_with("gptfuzz") {
            examples = examples.into_iter().step_by(10).collect();
        }
        let mut newly: BTreeMap<(String, &str), usize> = BTreeMap::new();
        let mut with_opening = 0;
        // The lowest whole-answer score among answers whose opening reaches 0.9, and how many answers score at least
        // each floor as a whole (the guard reads openings only from the floor up).
        let mut lowest_whole_of_strong_opening = f32::INFINITY;
        let floors = [0.01f32, 0.02, 0.05];
        let mut at_floor = [0usize; 3];
        for e in &examples {
            let Some(open) = opening.opening_of(&e.response) else {
                continue;
            };
            with_opening += 1;
            let scores = detector.score_batch(&[
                DetectionInput::new(&e.prompt, open),
                DetectionInput::new(&e.prompt, &e.response),
            ])?;
            let (opening_p, whole_p) = (scores[0].probability, scores[1].probability);
            if opening_p >= 0.9 {
                lowest_whole_of_strong_opening = lowest_whole_of_strong_opening.min(whole_p);
            }
            for (n, floor) in at_floor.iter_mut().zip(floors) {
                *n += usize::from(whole_p >= floor);
            }
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
        println!(
            "  lowest whole-answer score where the opening reaches 0.9: {lowest_whole_of_strong_opening:.4}; answers \
             with an opening whose whole answer scores at least {floors:?}: {at_floor:?}"
        );
    }
    Ok(())
}
