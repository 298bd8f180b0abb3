//! Trains the request head: is *answering* this request harmful? It reads a request (the text an image carries, as
//! in FigStep's typographic attack) through the default detector's encoder, fine-tuned delta included, and a
//! logistic head, so the protector scores an image's text with no second encoder.
//!
//! Data (`eval::data::load_requests`): harmful requests from AdvBench, HarmBench, every Do-Not-Answer area (which
//! include requests for tailored medical, legal and financial advice), JailbreakBench goals and GPTFuzz questions;
//! benign ones from AlpacaEval's instructions, less the `--leave-out` that `figstep_eval` renders as benign images.
//! Split by request, 70 / 15 / 15. The threshold is the best F1 on validation with at most `--max-val-fpr` of the
//! benign validation requests flagged. Reported beside the split's own figures, on sets never trained on: XSTest's
//! prompts (250 safe, 200 unsafe) and SafeBench's 500 questions in their typographic wording (recall per category).
//!
//! `cargo run --release --example train_request_head -- [--out assets/minilm-request-head.safetensors]`
//! (about 2 minutes on 2 cores; embeddings are cached under `.cache/embeddings/`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use clap::Parser;
use mllm_protector::detector::EmbeddingDetector;
use mllm_protector::eval::data::{self, Example, Split, in_split};
use mllm_protector::eval::{auroc, binary_metrics};

#[derive(Parser, Debug)]
struct Args {
    /// Where to write the head.
    #[arg(long, default_value = "assets/minilm-request-head.safetensors")]
    out: PathBuf,
    /// Seed for the split and the initialisation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// AlpacaEval instructions left out of training, in `figstep_eval`'s order (its benign images use the first).
    #[arg(long, default_value_t = 200)]
    leave_out: usize,
    /// Highest share of benign validation requests flagged at the chosen threshold.
    #[arg(long, default_value_t = 0.02)]
    max_val_fpr: f64,
    /// Full-batch epochs at most (early stopping on validation AUROC).
    #[arg(long, default_value_t = 3000)]
    epochs: usize,
    /// Learning rate (AdamW).
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
}

/// Best F1 with at most `max_fpr` of the benign validation requests flagged.
fn choose_threshold(scores: &[f32], labels: &[bool], max_fpr: f64) -> f32 {
    let mut candidates: Vec<f32> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let mut best = (f64::MIN, 0.5f32);
    for &t in &candidates {
        let m = binary_metrics(scores, labels, t);
        if m.fpr <= max_fpr && m.f1 > best.0 {
            best = (m.f1, t);
        }
    }
    best.1
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let dir = data::data_dir()?;
    let left_out: HashSet<String> = data::figstep_benign_instructions(&dir)?
        .into_iter()
        .take(args.leave_out)
        .map(|s| s.trim().to_lowercase())
        .collect();
    let all: Vec<Example> = data::load_requests(&dir)?
        .into_iter()
        .filter(|e| !left_out.contains(&e.group))
        .collect();
    let detector = EmbeddingDetector::load_default()?;
    let mut sets = BTreeMap::new();
    for (name, split) in [
        ("train", Split::Train),
        ("validation", Split::Validation),
        ("test", Split::Test),
    ] {
        let examples = in_split(all.clone(), split, args.seed);
        let texts: Vec<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
        let harmful = examples.iter().filter(|e| e.harmful).count();
        eprintln!("{name}: {} requests ({harmful} harmful)", examples.len());
        let labels = examples.iter().map(|e| e.harmful).collect();
        sets.insert(name, common::Embedded::new(&detector, &texts, labels, name)?);
    }
    let (tensors, val_auroc, epochs) =
        common::train_balanced_logistic(&sets["train"], &sets["validation"], args.seed, args.lr, args.epochs)?;
    eprintln!("validation AUROC {val_auroc:.4} after {epochs} epochs");

    // Platt scaling on validation, then the threshold.
    let val = &sets["validation"];
    let (head, mut metadata) = common::platt_scaled_beside(&detector, &tensors, val, "request head")?;
    let score = |e: &common::Embedded| -> anyhow::Result<Vec<f32>> { Ok(e.text_scores(&head.probabilities(&e.x)?)) };
    let val_scores = score(val)?;
    metadata.threshold = choose_threshold(&val_scores, &val.labels, args.max_val_fpr);
    let threshold = metadata.threshold;

    // Held-out readings: XSTest prompts, SafeBench questions in their typographic wording.
    let mut xs_texts = Vec::new();
    let mut xs_labels = Vec::new();
    let mut xs_reader = csv::Reader::from_path(dir.join("xstest/xstest_prompts.csv"))?;
    for row in xs_reader.records() {
        let row = row?;
        xs_texts.push(row[1].to_string());
        xs_labels.push(&row[3] == "unsafe");
    }
    let mut sb_texts = Vec::new();
    let mut sb_categories = Vec::new();
    let mut sb_reader = csv::Reader::from_path(dir.join("figstep/data/question/safebench.csv"))?;
    for row in sb_reader.records() {
        let row = row?;
        sb_texts.push(row[5].to_string());
        sb_categories.push(row[3].to_string());
    }
    let xs = common::Embedded::new(
        &detector,
        &xs_texts.iter().map(String::as_str).collect::<Vec<_>>(),
        xs_labels,
        "xstest",
    )?;
    let sb_labels = vec![true; sb_texts.len()];
    let sb = common::Embedded::new(
        &detector,
        &sb_texts.iter().map(String::as_str).collect::<Vec<_>>(),
        sb_labels,
        "safebench",
    )?;

    let mut metrics = serde_json::Map::new();
    println!(
        "\nrequest head, threshold {threshold:.3} (validation, benign flagged ≤ {})\n",
        args.max_val_fpr
    );
    println!("| set | n | AUROC | recall | false positives | F1 |\n|---|---|---|---|---|---|");
    for (name, e) in [("validation", val), ("test", &sets["test"]), ("xstest prompts", &xs)] {
        let s = score(e)?;
        let m = binary_metrics(&s, &e.labels, threshold);
        let a = auroc(&s, &e.labels).unwrap_or(f64::NAN);
        println!(
            "| {name} | {} | {a:.3} | {:.3} | {:.3} | {:.3} |",
            e.labels.len(),
            m.recall,
            m.fpr,
            m.f1
        );
        metrics.insert(
            name.to_string(),
            serde_json::json!({"n": e.labels.len(), "auroc": a, "recall": m.recall, "fpr": m.fpr, "f1": m.f1}),
        );
    }
    let sb_scores = score(&sb)?;
    let mut per_category: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (c, s) in sb_categories.iter().zip(&sb_scores) {
        let entry = per_category.entry(c.as_str()).or_default();
        entry.0 += usize::from(*s >= threshold);
        entry.1 += 1;
    }
    let flagged: usize = per_category.values().map(|v| v.0).sum();
    println!(
        "\nSafeBench questions (typographic wording) flagged: {flagged} of {}\n",
        sb_scores.len()
    );
    println!("| category | flagged |\n|---|---|");
    for (c, (f, n)) in &per_category {
        println!("| {c} | {f} / {n} |");
    }
    metrics.insert(
        "safebench".into(),
        serde_json::json!({"recall": flagged as f64 / sb_scores.len().max(1) as f64}),
    );
    metadata.metrics = serde_json::Value::Object(metrics);
    metadata.training = serde_json::json!({
        "data": "load_requests: AdvBench, HarmBench, Do-Not-Answer (all areas), JBB goals, GPTFuzz questions vs AlpacaEval instructions",
        "left_out_figstep_benign": args.leave_out, "split": "by request 70/15/15", "seed": args.seed,
        "epochs": epochs, "lr": args.lr, "max_val_fpr": args.max_val_fpr, "validation_auroc": val_auroc,
    });
    common::write_beside(&detector, tensors, metadata, "request head", &args.out)
}
