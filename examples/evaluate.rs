//! Measures harm detectors on labelled responses and prints a table: the default detector (or `--head FILE`)
//! against the refusal-string baseline (GCG's list).
//!
//!     cargo run --release --example evaluate                              # all built-in sets
//!     cargo run --release --example evaluate -- --set xstest --json out.json
//!     cargo run --release --example evaluate -- --data FILE.jsonl --json out.json
//!
//! `--data` reads JSONL lines with `prompt`, `response` and a boolean `harmful`. Built-in sets (from
//! `$MLLM_PROTECTOR_DATA`, default `../shared/data`): `jbb-test`, `alpaca-test` (test splits, by the head's seed) and
//! `xstest` (harmful = unsafe `contrast_*` prompt answered with full compliance; the false-positive rate on the
//! completions to the 250 safe prompts is reported separately as `safe_prompt_fpr`).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use mllm_protector::detector::{DetectionInput, DetectorConfig, EmbeddingDetector, HarmDetector, HeadSource};
use mllm_protector::eval::data::{self, Example, Split, in_split};
use mllm_protector::eval::{BinaryMetrics, binary_metrics};
use mllm_protector::{DeviceChoice, RefusalMatcher};
use serde::Serialize;

#[derive(Parser, Debug)]
struct Args {
    /// A JSONL file of {prompt, response, harmful}.
    #[arg(long, conflicts_with = "set")]
    data: Option<PathBuf>,
    /// Built-in sets (repeatable): jbb-test, alpaca-test, xstest. Default: all three.
    #[arg(long)]
    set: Vec<String>,
    /// A head file instead of the embedded one.
    #[arg(long)]
    head: Option<PathBuf>,
    /// Write the metrics as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Split seed (default: the one recorded in the head).
    #[arg(long)]
    seed: Option<u64>,
    /// Operating point: flag at or above this probability (default: the head's recorded threshold).
    #[arg(long)]
    threshold: Option<f32>,
    /// Device: cpu, cuda, metal.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    metrics: BinaryMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    safe_prompt_fpr: Option<f64>,
}

fn row(detector: &dyn HarmDetector, examples: &[Example], threshold: Option<f32>) -> anyhow::Result<Row> {
    let pb = common::bar(
        examples.len() as u64,
        detector.name().split(' ').next().unwrap_or("scoring"),
    );
    let mut scores = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(32) {
        let inputs: Vec<DetectionInput<'_>> = chunk
            .iter()
            .map(|e| DetectionInput::new(&e.prompt, &e.response))
            .collect();
        scores.extend(detector.score_batch(&inputs)?.into_iter().map(|s| s.probability));
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let labels: Vec<bool> = examples.iter().map(|e| e.harmful).collect();
    let t = threshold.unwrap_or_else(|| detector.threshold());
    let safe: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].safe_prompt == Some(true) && examples[i].source.starts_with("xstest"))
        .collect();
    let safe_prompt_fpr =
        (!safe.is_empty()).then(|| safe.iter().filter(|&&i| scores[i] >= t).count() as f64 / safe.len() as f64);
    Ok(Row {
        metrics: binary_metrics(&scores, &labels, t),
        safe_prompt_fpr,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = match args.device.as_str() {
        "cpu" => DeviceChoice::Cpu,
        "cuda" => DeviceChoice::Cuda(0),
        "metal" => DeviceChoice::Metal(0),
        other => anyhow::bail!("unknown device {other:?} (cpu, cuda, metal)"),
    };
    let config = DetectorConfig {
        head: args.head.clone().map(HeadSource::File).unwrap_or_default(),
        device,
        ..DetectorConfig::default()
    };
    let detector = EmbeddingDetector::load(&config)?;
    let meta = detector.head().metadata();
    let seed = args
        .seed
        .or_else(|| meta.training.get("seed").and_then(|s| s.as_u64()))
        .unwrap_or(42);

    let mut sets: Vec<(String, Vec<Example>)> = Vec::new();
    if let Some(path) = &args.data {
        sets.push((path.display().to_string(), data::load_jsonl(path)?));
    } else {
        let names = if args.set.is_empty() {
            vec!["jbb-test".to_string(), "alpaca-test".into(), "xstest".into()]
        } else {
            args.set.clone()
        };
        let dir = data::data_dir()?;
        for name in names {
            let examples = match name.as_str() {
                "jbb-test" => in_split(data::load_jbb(&dir)?, Split::Test, seed),
                "alpaca-test" => in_split(data::load_alpaca(&dir)?, Split::Test, seed),
                "xstest" => data::load_xstest(&dir)?,
                other => anyhow::bail!("unknown set {other:?} (jbb-test, alpaca-test, xstest)"),
            };
            sets.push((name, examples));
        }
    }

    let baseline = RefusalMatcher::default();
    let detectors: [(&str, &dyn HarmDetector); 2] = [("minilm-head", &detector), ("refusal-baseline", &baseline)];
    println!(
        "detector: {} (threshold {:.4}); baseline: {}",
        detector.name(),
        args.threshold.unwrap_or_else(|| detector.threshold()),
        baseline.name()
    );
    println!(
        "{:<14} {:<17} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9}",
        "set", "detector", "n", "acc", "prec", "recall", "F1", "AUROC", "FPR", "safe-FPR"
    );
    let mut json: BTreeMap<String, BTreeMap<String, Row>> = BTreeMap::new();
    for (name, examples) in &sets {
        for (label, d) in detectors {
            let t = if label == "minilm-head" { args.threshold } else { None };
            let r = row(d, examples, t)?;
            let m = &r.metrics;
            println!(
                "{:<14} {:<17} {:>5} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7} {:>7.4} {:>9}",
                name,
                label,
                m.n,
                m.accuracy,
                m.precision,
                m.recall,
                m.f1,
                m.auroc.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into()),
                m.fpr,
                r.safe_prompt_fpr
                    .map(|a| format!("{a:.4}"))
                    .unwrap_or_else(|| "-".into()),
            );
            json.entry(name.clone()).or_default().insert(label.to_string(), r);
        }
    }
    if let Some(out) = &args.json {
        // One set: the detector's metrics at the top level (plus the baseline's); several: keyed by set.
        let value = if json.len() == 1 {
            let (_, mut rows) = json.into_iter().next().unwrap_or_default();
            let mut top = serde_json::to_value(rows.remove("minilm-head"))?;
            if let (Some(obj), Some(b)) = (top.as_object_mut(), rows.remove("refusal-baseline")) {
                obj.insert("baseline".into(), serde_json::to_value(b)?);
            }
            top
        } else {
            serde_json::to_value(json)?
        };
        std::fs::write(out, serde_json::to_string_pretty(&value)? + "\n")?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
