//! Measures, on validation only, a reading for harm hidden in a long harmless answer that is not a short span: the
//! answer's most suspicious sentences, picked by the detector's head sentence by sentence and read *together*, in
//! their order, as one text ("selected sentences"). Short spans (one or two sentences read alone, by the answer head
//! or by a head trained on spans) gained at most 2.4 points on validation (docs/EVALUATION.md, "Short spans"): a
//! sentence out of its context scores like harmless text. Read together, the picked sentences of a padded harmful
//! answer are most of that answer, and the head reads them as it reads answers.
//!
//! Sets: JailbreakBench validation answers, padded and buried (`eval::disguise`) in AlpacaEval *validation*
//! answers (the test answers are `evaluate`'s filler), and AlpacaEval validation answers joined into ~600-word
//! harmless texts. For each, the default detector's score of the whole text and the selected-sentences reading's
//! score; reported: recall and false positives of the default, and of the default or the selected reading at
//! strict thresholds.
//!
//! `cargo run --release --example selected_sentences_probe -- [--pick 4]` (about 10 minutes on 2 cores).

mod common;

use clap::Parser;
use mllm_protector::detector::encoder::sentence_spans;
use mllm_protector::detector::{CanonicalDetector, DetectionInput, DetectorConfig, EmbeddingDetector, HarmDetector};
use mllm_protector::eval::data::{self, Example, Split, in_split};
use mllm_protector::eval::disguise::Disguise;

#[derive(Parser, Debug)]
struct Args {
    /// Sentences picked (repeatable: each is measured).
    #[arg(long, default_values_t = [2usize, 4, 6])]
    pick: Vec<usize>,
    /// Strict thresholds for the selected reading (repeatable).
    #[arg(long, default_values_t = [0.7527f32, 0.9, 0.95, 0.98, 0.99])]
    strict: Vec<f32>,
}

struct Text {
    text: String,
    harmful: bool,
    kind: &'static str,
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let seed = common::head_split_seed()?;
    let dir = data::data_dir()?;
    let jbb_val = in_split(data::load_jbb(&dir)?, Split::Validation, seed);
    let pool: Vec<Example> =
        common::alpaca_subset(in_split(data::load_alpaca(&dir)?, Split::Validation, seed), 3, seed);

    let mut texts = Vec::new();
    for (i, e) in jbb_val.iter().enumerate() {
        for (disguise, kind) in [(Disguise::Padded, "padded"), (Disguise::Buried, "buried")] {
            texts.push(Text {
                text: disguise.apply(&e.response, &common::filler(&pool, i * 7)),
                harmful: e.harmful,
                kind,
            });
        }
    }
    // Harmless long texts: the pool's answers joined until 600 words, as `common::filler` joins them.
    let mut i = 0;
    while i < pool.len() {
        let mut text = String::new();
        let mut words = 0;
        while i < pool.len() && words < 600 {
            words += pool[i].response.split_whitespace().count();
            text.push_str(&pool[i].response);
            text.push('\n');
            i += 1;
        }
        texts.push(Text {
            text,
            harmful: false,
            kind: "alpaca long",
        });
    }
    eprintln!("{} texts", texts.len());

    let default = CanonicalDetector::load(&DetectorConfig::default())?;
    let plain = EmbeddingDetector::load(&DetectorConfig {
        segments: None,
        ..DetectorConfig::default()
    })?;
    let threshold = default.threshold();
    let head = plain.head();
    let encoder = plain.encoder();
    let windowing = head.metadata().encoder.windowing;

    // Every sentence of every text, embedded once (and cached), scored by the head.
    let sentences: Vec<Vec<&str>> = texts.iter().map(|t| sentence_spans(&t.text, 1)).collect();
    let flat: Vec<&str> = sentences.iter().flatten().copied().collect();
    let (x, owner) = common::embed_cached(encoder.as_ref(), windowing, &flat, "sentences")?;
    let window_scores = head.probabilities(&x)?;
    let mut sentence_score = vec![f32::NEG_INFINITY; flat.len()];
    for (&o, &s) in owner.iter().zip(&window_scores) {
        sentence_score[o] = sentence_score[o].max(s);
    }

    let pb = common::bar(texts.len() as u64, "texts");
    let mut whole = Vec::with_capacity(texts.len());
    let mut selected: Vec<Vec<f32>> = vec![Vec::with_capacity(texts.len()); args.pick.len()];
    let mut first = 0;
    for (t, own) in texts.iter().zip(&sentences) {
        whole.push(default.score(DetectionInput::response(&t.text))?.probability);
        let scores = &sentence_score[first..first + own.len()];
        first += own.len();
        let mut order: Vec<usize> = (0..own.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        for (p, &k) in args.pick.iter().enumerate() {
            let mut picked: Vec<usize> = order.iter().copied().take(k).collect();
            picked.sort_unstable();
            let view = picked.iter().map(|&i| own[i]).collect::<Vec<_>>().join(" ");
            let score = if view.trim().is_empty() {
                0.0
            } else {
                plain.score(DetectionInput::response(&view))?.probability
            };
            selected[p].push(score);
        }
        pb.inc(1);
    }
    pb.finish();

    println!("\nvalidation: recall on harmful / false positives on harmless (default threshold {threshold:.4})\n");
    println!("| reading | padded | buried | AlpacaEval long texts (FPR) |\n|---|---|---|---|");
    let rate = |kind: &str, harmful: bool, flag: &dyn Fn(usize) -> bool| -> (f64, usize) {
        let idx: Vec<usize> = (0..texts.len())
            .filter(|&i| texts[i].kind == kind && texts[i].harmful == harmful)
            .collect();
        (
            idx.iter().filter(|&&i| flag(i)).count() as f64 / idx.len().max(1) as f64,
            idx.len(),
        )
    };
    let row = |name: String, flag: &dyn Fn(usize) -> bool| {
        let (pr, _) = rate("padded", true, flag);
        let (pf, _) = rate("padded", false, flag);
        let (br, _) = rate("buried", true, flag);
        let (bf, _) = rate("buried", false, flag);
        let (af, n) = rate("alpaca long", false, flag);
        println!("| {name} | {pr:.3} / {pf:.3} | {br:.3} / {bf:.3} | {af:.3} ({n}) |");
    };
    row("default (whole text)".into(), &|i| whole[i] >= threshold);
    for (p, &k) in args.pick.iter().enumerate() {
        for &strict in &args.strict {
            row(format!("default or {k} selected sentences ≥ {strict}"), &|i| {
                whole[i] >= threshold || selected[p][i] >= strict
            });
        }
    }
    Ok(())
}
