//! Trains the hedge head: is this sentence a hedge (a refusal, a warning, a disclaimer, an appeal to ethics) rather
//! than content? It reads one sentence through the default detector's encoder, fine-tuned delta included, and a
//! logistic head, so the unhedged view can drop hedges that its patterns do not list (`CanonicalDetector` with a
//! hedge reader).
//!
//! Labels, sentence by sentence (`canonical::sentences_with_hedges`):
//! - hedges: sentences the patterns call hedges, in any answer; every sentence of an answer that opens with a refusal
//!   and is not harmful (JailbreakBench's and GPTFuzz's refusals, HH-RLHF's declining answers);
//! - content: the other sentences of harmful answers (JailbreakBench, GPTFuzz), of AlpacaEval answers, and
//!   AdvBench's affirmative openings ("Sure, here is a script that ...").
//!
//! The rest (harmless answers that do not open with a refusal) is left out: it holds both. The patterns are the
//! teacher; what the head adds is their neighbourhood in the encoder's space, hedges worded another way. Sentences
//! of fewer than 3 words are left out; duplicates (GPTFuzz repeats its refusals) are kept once. Split by the
//! answer's group with the harm head's seed, so GPTFuzz's validation questions stay out of training. The threshold
//! stored in the head (`--threshold`) is chosen end to end, on what the detector then finds and flags in validation
//! sets, since a content sentence taken for a hedge is a piece of the answer the view no longer reads.
//!
//! `cargo run --release --example train_hedge_head -- [--out assets/minilm-hedge-head.safetensors]`
//! (about 2 minutes on 2 cores; embeddings are cached under `.cache/embeddings/`).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Parser;
use mllm_protector::canonical::sentences_with_hedges;
use mllm_protector::detector::EmbeddingDetector;
use mllm_protector::eval::data::{self, Example, Split, split_of};
use mllm_protector::eval::{auroc, binary_metrics};

#[derive(Parser, Debug)]
struct Args {
    /// Where to write the head.
    #[arg(long, default_value = "assets/minilm-hedge-head.safetensors")]
    out: PathBuf,
    /// The threshold stored in the head: a sentence at or above it is a hedge. Chosen end to end on validation
    /// (`evaluate --hedge-threshold T` on GPTFuzz, JailbreakBench and AlpacaEval validation; docs/EVALUATION.md),
    /// not on these sentence labels, whose "content" side holds the unlisted hedges the head is for.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Full-batch epochs at most (early stopping on validation AUROC).
    #[arg(long, default_value_t = 3000)]
    epochs: usize,
    /// Learning rate (AdamW).
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// GPTFuzz answers kept at most per question, picked by a seeded hash (about 77 each).
    #[arg(long, default_value_t = 30)]
    gptfuzz_per_question: usize,
}

/// Labelled sentences of one split, deduplicated (a sentence labelled both ways counts as a hedge).
#[derive(Default)]
struct Sentences {
    labels: HashMap<String, bool>,
}

impl Sentences {
    fn add(&mut self, e: &Example) {
        let all = sentences_with_hedges(&e.response);
        // An answer that declines: its first sentence refuses, or the source is made of declining answers.
        let refusal = all.first().is_some_and(|(_, hedge)| *hedge) || e.source.starts_with("hhrlhf");
        for (text, hedge) in all {
            if text.split_whitespace().count() < 3 {
                continue;
            }
            let label = if hedge || (refusal && !e.harmful) {
                true
            } else if e.harmful || e.source.starts_with("alpaca") {
                false
            } else {
                continue; // a harmless answer that does not refuse: hedges and content alike
            };
            *self.labels.entry(text).or_insert(label) |= label;
        }
    }

    /// The sentences in a fixed order, embedded with their labels.
    fn embed(self, detector: &EmbeddingDetector, what: &str) -> anyhow::Result<(Vec<String>, common::Embedded)> {
        let mut v: Vec<(String, bool)> = self.labels.into_iter().collect();
        v.sort();
        let (texts, labels): (Vec<String>, Vec<bool>) = v.into_iter().unzip();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embedded = common::Embedded::new(detector, &refs, labels, what)?;
        Ok((texts, embedded))
    }
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let seed = common::head_split_seed()?;
    let dir = data::data_dir()?;
    let mut gptfuzz = data::load_gptfuzz(&dir)?;
    gptfuzz.sort_by_key(|e| mllm_protector::loading::checksum::sha256_hex(format!("{seed}|{}", e.response).as_bytes()));
    let mut per_question: HashMap<String, usize> = HashMap::new();
    gptfuzz.retain(|e| {
        let n = per_question.entry(e.group.clone()).or_default();
        *n += 1;
        *n <= args.gptfuzz_per_question
    });
    let mut sources = gptfuzz;
    sources.extend(data::load_jbb(&dir)?);
    sources.extend(common::alpaca_subset(data::load_alpaca(&dir)?, 1, seed));
    sources.extend(data::load_hhrlhf_refusals(&dir)?);
    // AdvBench's affirmative openings ("Sure, here is a script that ...") are content: they restate the request
    // the way a complying answer opens, and a refusal restates it too.
    sources.extend(data::load_advbench_targets(&dir)?);
    let (mut train, mut val) = (Sentences::default(), Sentences::default());
    for e in &sources {
        match split_of(&e.group, seed) {
            Split::Train => train.add(e),
            Split::Validation => val.add(e),
            Split::Test => {}
        }
    }
    let detector = EmbeddingDetector::load_default()?;
    let (_, train) = train.embed(&detector, "train sentences")?;
    let (val_texts, val) = val.embed(&detector, "validation sentences")?;
    for (name, e) in [("train", &train), ("validation", &val)] {
        let hedges = e.labels.iter().filter(|&&l| l).count();
        eprintln!("{name}: {} sentences ({hedges} hedges)", e.labels.len());
    }

    let (tensors, val_auroc, epochs) = common::train_balanced_logistic(&train, &val, seed, args.lr, args.epochs)?;
    eprintln!("validation AUROC {val_auroc:.4} after {epochs} epochs");

    let (head, mut metadata) = common::platt_scaled_beside(&detector, &tensors, &val, "hedge head")?;
    let val_scores = val.text_scores(&head.probabilities(&val.x)?);
    metadata.threshold = args.threshold;
    let threshold = args.threshold;

    println!("\nhedge head (Platt-scaled on validation), sentence labels at several thresholds\n");
    println!(
        "| set | sentences | hedges | AUROC | threshold | precision | recall | F1 |\n|---|---|---|---|---|---|---|---|"
    );
    let mut metrics = serde_json::Map::new();
    let train_scores = train.text_scores(&head.probabilities(&train.x)?);
    for (name, e, s) in [("train", &train, &train_scores), ("validation", &val, &val_scores)] {
        let a = auroc(s, &e.labels).unwrap_or(f64::NAN);
        let hedges = e.labels.iter().filter(|&&l| l).count();
        for t in [0.35, threshold, 0.65, 0.85] {
            let m = binary_metrics(s, &e.labels, t);
            println!(
                "| {name} | {} | {hedges} | {a:.3} | {t:.2} | {:.3} | {:.3} | {:.3} |",
                e.labels.len(),
                m.precision,
                m.recall,
                m.f1
            );
        }
        let m = binary_metrics(s, &e.labels, threshold);
        metrics.insert(
            name.into(),
            serde_json::json!({"n": e.labels.len(), "hedges": hedges, "auroc": a, "precision": m.precision, "recall": m.recall, "f1": m.f1}),
        );
    }
    // What the head adds to the patterns: validation content sentences it calls hedges, for reading by hand.
    let mut added: Vec<(f32, &str)> = val_scores
        .iter()
        .zip(&val.labels)
        .zip(&val_texts)
        .filter(|((s, l), _)| !**l && **s >= threshold)
        .map(|((s, _), t)| (*s, t.as_str()))
        .collect();
    added.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!(
        "\n{} validation sentences labelled content score as hedges; the first 25:",
        added.len()
    );
    for (s, t) in added.iter().take(25) {
        println!("  {s:.2}  {}", t.chars().take(160).collect::<String>());
    }
    metadata.metrics = serde_json::Value::Object(metrics);
    metadata.training = serde_json::json!({
        "data": "sentences of GPTFuzz, JBB, AlpacaEval answers, HH-RLHF declining answers and AdvBench affirmative openings; hedge = pattern hedge or a sentence of a harmless refusing answer; content = other sentences of harmful and AlpacaEval answers, and the AdvBench openings",
        "split": "by the answer's group, the harm head's seed", "seed": seed, "gptfuzz_per_question": args.gptfuzz_per_question,
        "epochs": epochs, "lr": args.lr, "threshold": threshold, "validation_auroc": val_auroc,
    });
    common::write_beside(&detector, tensors, metadata, "hedge head", &args.out)
}
