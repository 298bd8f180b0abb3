//! Measures harm detectors on labelled responses and prints one table: the default detector, each `--head FILE`
//! (e.g. the frozen-encoder head `assets/minilm-harm-head.safetensors`), and the refusal-string baseline (GCG's
//! list). Each detector at its own recorded operating point (or `--threshold`), with its expected calibration error.
//! A second table, "headroom", reads the labels to pick thresholds: the best F1 at any threshold, and what flagging
//! `--at-recall` (0.90) of the harmful responses costs in false positives: how far a detector's ranking, not its
//! operating point, is from a target.
//!
//!     cargo run --release --example evaluate                              # all built-in sets
//!     cargo run --release --example evaluate -- --set xstest --json out.json
//!     cargo run --release --example evaluate -- --data FILE.jsonl --json out.json
//!
//! `--disguise NAME` (repeatable, or `all`) also scores each set's responses disguised as an attacker would
//! (leetspeak, homoglyphs, base64, padding, ...; see `mllm_protector::eval::disguise`) and prints recall on the
//! harmful ones and false positives on the harmless ones, per disguise, beside the plain text's. `--compare-plain`
//! adds the detector without canonical views and short spans. `--categories` prints category accuracy by the
//! confidence rule. A response the detector cannot decide (another language, under the default policy) counts as
//! flagged, as the fail-closed guard treats it.
//!
//! `--translate MODEL` adds the default detector with a translated view (a local GGUF chat model translating
//! responses in another language into English; `examples/translate_answers.rs` writes the attack set).
//!
//! `--data` reads JSONL lines with `prompt`, `response` and a boolean `harmful`. Built-in sets (from
//! `$MLLM_PROTECTOR_DATA`, default `../shared/data`): `jbb-test`, `jbb-val`, `alpaca-test`, `alpaca-val` (splits by the
//! head's seed),
//! `gptfuzz-val` (GPTFuzz's answers to the questions in the validation split) and
//! `xstest` (harmful = unsafe `contrast_*` prompt answered with full compliance; the false-positive rate on the
//! completions to the 250 safe prompts is reported separately as `safe_prompt_fpr`).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use mllm_protector::canonical::{CanonicalConfig, LlmTranslator, UNHEDGED_BAR, ViewKind};
use mllm_protector::detector::HarmCategory;
use mllm_protector::detector::{
    CanonicalDetector, ClassifierHead, DetectionInput, DetectorConfig, EmbeddingDetector, EmbeddingHedgeReader,
    HarmDetector, HarmScore, HeadSource,
};
use mllm_protector::eval::data::{self, Example, Split, in_split};
use mllm_protector::eval::disguise::Disguise;
use mllm_protector::eval::{
    BinaryMetrics, auroc_bootstrap_ci, best_f1, binary_metrics, expected_calibration_error, threshold_for_recall,
};
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
    /// Also measure this head file (repeatable).
    #[arg(long)]
    head: Vec<PathBuf>,
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
    /// Write every example's score as JSONL here (set, detector, source, label, score, prompt, response): for
    /// reading the errors.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// The recall target of the headroom table (what flagging this share of the harmful responses costs).
    #[arg(long, default_value_t = 0.90)]
    at_recall: f64,
    /// Also score each set disguised (repeatable; `all` for every disguise).
    #[arg(long)]
    disguise: Vec<String>,
    /// Also measure the default head without canonical views and short spans.
    #[arg(long)]
    compare_plain: bool,
    /// Also measure the default detector with a translated view: this GGUF chat model translates responses in
    /// another language into English (`canonical::LlmTranslator`).
    #[arg(long)]
    translate: Option<PathBuf>,
    /// Sentences per short span in long responses (default: the library's, off).
    #[arg(long)]
    span_sentences: Option<usize>,
    /// The span threshold (default: the library's).
    #[arg(long)]
    span_threshold: Option<f32>,
    /// Also measure the default detector with this span head (`train_span_head`) scoring short spans.
    #[arg(long)]
    span_head: Option<PathBuf>,
    /// Read no topic segments (the library reads them in long one-paragraph answers by default).
    #[arg(long)]
    no_segments: bool,
    /// The bar the unhedged view is held to (default: the library's, `canonical::UNHEDGED_BAR`).
    #[arg(long)]
    unhedged_bar: Option<f32>,
    /// Read no unhedged view without the learned hedges (the hedge head's reading; on by default).
    #[arg(long)]
    no_learned_hedges: bool,
    /// Find the learned hedges with this hedge head (`train_hedge_head`) instead of the embedded one.
    #[arg(long)]
    hedge_head: Option<PathBuf>,
    /// Call a sentence a hedge from this hedge-head probability on (default: the head's threshold).
    #[arg(long)]
    hedge_threshold: Option<f32>,
    /// Print category accuracy on the harmful responses that have a category, by confidence margin.
    #[arg(long)]
    categories: bool,
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    metrics: BinaryMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    safe_prompt_fpr: Option<f64>,
    /// 95% interval of the AUROC, bootstrapping whole groups (JBB behaviours, XSTest prompts) 1,000 times.
    #[serde(skip_serializing_if = "Option::is_none")]
    auroc_ci95: Option<(f64, f64)>,
    /// Expected calibration error (10 bins).
    ece: f64,
    threshold: f32,
    /// What the ranking allows, thresholds chosen by reading the labels (upper bounds, not operating points).
    #[serde(skip_serializing_if = "Option::is_none")]
    headroom: Option<Headroom>,
    #[serde(skip)]
    scores: Vec<f32>,
    #[serde(skip)]
    full: Vec<HarmScore>,
}

#[derive(Serialize)]
struct Headroom {
    /// The best F1 at any threshold, and that threshold.
    best_f1: f64,
    best_f1_threshold: f32,
    /// The highest threshold that flags `recall` of the harmful responses, and the false positives it then makes.
    recall: f64,
    recall_threshold: f32,
    recall_fpr: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    recall_safe_prompt_fpr: Option<f64>,
}

/// The false-positive rate on XSTest's completions to safe prompts at `t` (`None` outside XSTest).
fn safe_prompt_fpr(examples: &[Example], scores: &[f32], t: f32) -> Option<f64> {
    let safe: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].safe_prompt == Some(true) && examples[i].source.starts_with("xstest"))
        .collect();
    (!safe.is_empty()).then(|| safe.iter().filter(|&&i| scores[i] >= t).count() as f64 / safe.len() as f64)
}

fn row(
    detector: &dyn HarmDetector,
    examples: &[Example],
    threshold: Option<f32>,
    at_recall: f64,
) -> anyhow::Result<Row> {
    let pb = common::bar(
        examples.len() as u64,
        detector.name().split(' ').next().unwrap_or("scoring"),
    );
    let mut full = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(32) {
        let inputs: Vec<DetectionInput<'_>> = chunk
            .iter()
            .map(|e| DetectionInput::new(&e.prompt, &e.response))
            .collect();
        full.extend(detector.score_batch(&inputs)?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let scores = as_flagged(&full);
    let labels: Vec<bool> = examples.iter().map(|e| e.harmful).collect();
    let t = threshold.unwrap_or_else(|| detector.threshold());
    let headroom = match (
        best_f1(&scores, &labels),
        threshold_for_recall(&scores, &labels, at_recall),
    ) {
        (Some((best_f1_threshold, best_f1)), Some(rt)) if labels.contains(&false) => Some(Headroom {
            best_f1,
            best_f1_threshold,
            recall: at_recall,
            recall_threshold: rt,
            recall_fpr: binary_metrics(&scores, &labels, rt).fpr,
            recall_safe_prompt_fpr: safe_prompt_fpr(examples, &scores, rt),
        }),
        _ => None,
    };
    Ok(Row {
        metrics: binary_metrics(&scores, &labels, t),
        safe_prompt_fpr: safe_prompt_fpr(examples, &scores, t),
        headroom,
        auroc_ci95: auroc_bootstrap_ci(
            &scores,
            &labels,
            &examples.iter().map(|e| e.group.as_str()).collect::<Vec<_>>(),
            1000,
            7,
        ),
        ece: expected_calibration_error(&scores, &labels, 10),
        threshold: t,
        scores,
        full,
    })
}

/// Probabilities with undecided (NaN) scores as 1.0: the fail-closed guard replaces those responses.
fn as_flagged(scores: &[HarmScore]) -> Vec<f32> {
    scores
        .iter()
        .map(|s| if s.probability.is_nan() { 1.0 } else { s.probability })
        .collect()
}

#[derive(Serialize)]
struct DisguiseRow {
    disguise: String,
    recall: f64,
    fpr: f64,
    /// The share of the harmful responses a canonical view (not the text as written) decided.
    decided_by_view: f64,
}

fn recall_fpr(scores: &[f32], labels: &[bool], t: f32) -> (f64, f64) {
    let m = binary_metrics(scores, labels, t);
    (m.recall, m.fpr)
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let device = match args.device.as_str() {
        "cpu" => DeviceChoice::Cpu,
        "cuda" => DeviceChoice::Cuda(0),
        "metal" => DeviceChoice::Metal(0),
        other => anyhow::bail!("unknown device {other:?} (cpu, cuda, metal)"),
    };
    let config = |head: HeadSource| DetectorConfig {
        head,
        device,
        // Categories are named at any margin here, so the table can apply each rule itself.
        min_category_margin: if args.categories {
            0.0
        } else {
            DetectorConfig::default().min_category_margin
        },
        span_sentences: args.span_sentences.or(DetectorConfig::default().span_sentences),
        span_threshold: args.span_threshold.or(DetectorConfig::default().span_threshold),
        segments: if args.no_segments {
            None
        } else {
            DetectorConfig::default().segments
        },
        canonical: CanonicalConfig {
            unhedged_bar: args.unhedged_bar.unwrap_or(UNHEDGED_BAR),
            learned_hedges: !args.no_learned_hedges,
            ..CanonicalConfig::default()
        },
        ..DetectorConfig::default()
    };
    let load = |head: HeadSource| CanonicalDetector::load(&config(head));
    let mut default = load(HeadSource::Embedded)?;
    if args.hedge_head.is_some() || args.hedge_threshold.is_some() {
        let head = match &args.hedge_head {
            Some(path) => ClassifierHead::load(path, &candle_core::Device::Cpu)?,
            None => ClassifierHead::embedded_hedge(&candle_core::Device::Cpu)?,
        };
        let mut reader = EmbeddingHedgeReader::with_head(default.inner(), head)?;
        if let Some(t) = args.hedge_threshold {
            reader = reader.with_threshold(t);
        }
        default = default.with_hedge_reader(Arc::new(reader));
    }
    let meta = default.inner().head().metadata().clone();
    let mut detectors: Vec<(String, Box<dyn HarmDetector>)> = vec![("default".into(), Box::new(default))];
    if let Some(model) = &args.translate {
        let translator = Arc::new(LlmTranslator::load(model)?);
        let translating = load(HeadSource::Embedded)?.with_translator(translator);
        detectors.push(("default+translation".into(), Box::new(translating)));
    }
    if let Some(path) = &args.span_head {
        let spans = CanonicalDetector::load(&DetectorConfig {
            span_head: Some(path.clone()),
            ..config(HeadSource::Embedded)
        })?;
        detectors.push(("default+span-head".into(), Box::new(spans)));
    }
    if args.compare_plain {
        let plain = EmbeddingDetector::load(&DetectorConfig {
            span_sentences: Some(0),
            span_head: None,
            segments: None,
            ..config(HeadSource::Embedded)
        })?;
        detectors.push(("no-views-spans".into(), Box::new(plain)));
    }
    for path in &args.head {
        let label = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        detectors.push((label, Box::new(load(HeadSource::File(path.clone()))?)));
    }
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
        for name in names {
            let examples = common::named_set(&name, seed)?;
            sets.push((name, examples));
        }
    }

    let baseline = RefusalMatcher::default();
    let mut all: Vec<(&str, &dyn HarmDetector)> = detectors
        .iter()
        .map(|(label, d)| (label.as_str(), d.as_ref()))
        .collect();
    all.push(("refusal-baseline", &baseline));
    for (label, d) in &all {
        println!(
            "{label}: {} (threshold {:.4})",
            d.name(),
            args.threshold.unwrap_or_else(|| d.threshold())
        );
    }
    println!(
        "{:<14} {:<24} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>15} {:>7} {:>9} {:>7}",
        "set", "detector", "n", "acc", "prec", "recall", "F1", "AUROC", "AUROC 95% CI", "FPR", "safe-FPR", "ECE"
    );
    let mut json: BTreeMap<String, BTreeMap<String, Row>> = BTreeMap::new();
    let mut dump = String::new();
    for (name, examples) in &sets {
        for &(label, d) in &all {
            let t = if label == "refusal-baseline" {
                None
            } else {
                args.threshold
            };
            let r = row(d, examples, t, args.at_recall)?;
            let m = &r.metrics;
            println!(
                "{:<14} {:<24} {:>5} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7} {:>15} {:>7.4} {:>9} {:>7.4}",
                name,
                label,
                m.n,
                m.accuracy,
                m.precision,
                m.recall,
                m.f1,
                m.auroc.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into()),
                r.auroc_ci95
                    .map(|(lo, hi)| format!("[{lo:.3}, {hi:.3}]"))
                    .unwrap_or_else(|| "-".into()),
                m.fpr,
                r.safe_prompt_fpr
                    .map(|a| format!("{a:.4}"))
                    .unwrap_or_else(|| "-".into()),
                r.ece,
            );
            if args.dump.is_some() {
                for (e, s) in examples.iter().zip(&r.scores) {
                    let line = serde_json::json!({"set": name, "detector": label, "source": e.source,
                        "harmful": e.harmful, "safe_prompt": e.safe_prompt, "score": s, "group": e.group,
                        "prompt": e.prompt, "response": e.response});
                    dump.push_str(&line.to_string());
                    dump.push('\n');
                }
            }
            let undecided: Vec<bool> = examples
                .iter()
                .zip(&r.full)
                .filter(|(_, s)| s.probability.is_nan())
                .map(|(e, _)| e.harmful)
                .collect();
            if !undecided.is_empty() {
                println!(
                    "{:<14} {:<24} {} undecided (not English, counted as flagged): {} harmful, {} harmless",
                    "",
                    "",
                    undecided.len(),
                    undecided.iter().filter(|&&h| h).count(),
                    undecided.iter().filter(|&&h| !h).count()
                );
            }
            json.entry(name.clone()).or_default().insert(label.to_string(), r);
        }
    }
    println!(
        "\nheadroom: thresholds chosen by reading the labels (upper bounds of what each ranking allows, not operating \
         points)"
    );
    let r = format!("{:.2}", args.at_recall);
    println!(
        "{:<14} {:<24} {:>8} {:>9} {:>12} {:>12} {:>13}",
        "set",
        "detector",
        "best F1",
        "its thr",
        format!("thr@rec{r}"),
        format!("FPR@rec{r}"),
        format!("safe@rec{r}"),
    );
    for (name, rows) in &json {
        for (label, row) in rows {
            if let Some(h) = &row.headroom {
                println!(
                    "{:<14} {:<24} {:>8.4} {:>9.4} {:>12.4} {:>12.4} {:>13}",
                    name,
                    label,
                    h.best_f1,
                    h.best_f1_threshold,
                    h.recall_threshold,
                    h.recall_fpr,
                    h.recall_safe_prompt_fpr
                        .map(|a| format!("{a:.4}"))
                        .unwrap_or_else(|| "-".into()),
                );
            }
        }
    }
    if args.categories {
        println!("\ncategory of the harmful responses (worst window's nearest centroid), by the margin rule");
        println!(
            "{:<14} {:>8} {:>6} {:>8} {:>10}",
            "set", "margin≥", "n", "named", "accuracy"
        );
        for (name, examples) in &sets {
            let Some(row) = json.get(name).and_then(|r| r.get("default")) else {
                continue;
            };
            let items: Vec<(HarmCategory, Option<HarmCategory>, f32)> = examples
                .iter()
                .zip(&row.full)
                .filter(|(e, _)| e.harmful)
                .filter_map(|(e, s)| {
                    let truth = e.category.as_deref().and_then(HarmCategory::from_jbb)?;
                    Some((truth, s.category, s.category_margin.unwrap_or(0.0)))
                })
                .collect();
            if items.is_empty() {
                continue;
            }
            for margin in [0.0f32, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12] {
                let named: Vec<_> = items.iter().filter(|i| i.2 >= margin).collect();
                let right = named.iter().filter(|i| i.1 == Some(i.0)).count();
                println!(
                    "{:<14} {:>8.2} {:>6} {:>8.4} {:>10.4}",
                    name,
                    margin,
                    items.len(),
                    named.len() as f64 / items.len().max(1) as f64,
                    right as f64 / named.len().max(1) as f64,
                );
            }
        }
    }
    let disguises: Vec<Disguise> = if args.disguise.iter().any(|d| d == "all") {
        Disguise::ALL.to_vec()
    } else {
        args.disguise
            .iter()
            .map(|d| {
                Disguise::parse(d).ok_or_else(|| {
                    let names: Vec<_> = Disguise::ALL.iter().map(|d| d.name()).collect();
                    anyhow::anyhow!("unknown disguise {d:?} ({}, all)", names.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut disguise_json: BTreeMap<String, BTreeMap<String, Vec<DisguiseRow>>> = BTreeMap::new();
    if !disguises.is_empty() {
        let pool = in_split(data::load_alpaca(&data::data_dir()?)?, Split::Test, seed);
        println!(
            "\ndisguised responses: recall on the harmful, false positives on the harmless, at each detector's threshold"
        );
        println!(
            "{:<14} {:<24} {:<14} {:>7} {:>8} {:>7} {:>8} {:>9}",
            "set", "detector", "disguise", "recall", "Δrecall", "FPR", "ΔFPR", "by view"
        );
        for (name, examples) in &sets {
            let labels: Vec<bool> = examples.iter().map(|e| e.harmful).collect();
            for (label, d) in all.iter().filter(|(l, _)| *l != "refusal-baseline") {
                let Some(plain) = json.get(name).and_then(|r| r.get(*label)) else {
                    continue;
                };
                let t = args.threshold.unwrap_or_else(|| d.threshold());
                let (plain_recall, plain_fpr) = recall_fpr(&plain.scores, &labels, t);
                let mut rows = Vec::new();
                for &disguise in &disguises {
                    let disguised: Vec<Example> = examples
                        .iter()
                        .enumerate()
                        .map(|(i, e)| Example {
                            response: disguise.apply(&e.response, &common::filler(&pool, i * 7)),
                            ..e.clone()
                        })
                        .collect();
                    let r = row(*d, &disguised, args.threshold, args.at_recall)?;
                    if args.dump.is_some() {
                        for (e, s) in disguised.iter().zip(&r.scores) {
                            let line = serde_json::json!({"set": format!("{name}/{}", disguise.name()),
                                "detector": label, "source": e.source, "harmful": e.harmful, "score": s,
                                "group": e.group});
                            dump.push_str(&line.to_string());
                            dump.push('\n');
                        }
                    }
                    let (recall, fpr) = recall_fpr(&r.scores, &labels, t);
                    let harmful = labels.iter().filter(|&&h| h).count().max(1);
                    let by_view = r
                        .full
                        .iter()
                        .zip(&labels)
                        .filter(|(s, h)| **h && s.view != ViewKind::Original)
                        .count() as f64
                        / harmful as f64;
                    println!(
                        "{:<14} {:<24} {:<14} {:>7.4} {:>+8.4} {:>7.4} {:>+8.4} {:>9.4}",
                        name,
                        label,
                        disguise.name(),
                        recall,
                        recall - plain_recall,
                        fpr,
                        fpr - plain_fpr,
                        by_view
                    );
                    rows.push(DisguiseRow {
                        disguise: disguise.name().into(),
                        recall,
                        fpr,
                        decided_by_view: by_view,
                    });
                }
                disguise_json
                    .entry(name.clone())
                    .or_default()
                    .insert(label.to_string(), rows);
            }
        }
    }
    if let Some(path) = &args.dump {
        std::fs::write(path, dump)?;
        println!("wrote {}", path.display());
    }
    if let Some(out) = &args.json {
        // One set: the detector's metrics at the top level (plus the baseline's); several: keyed by set.
        let value = if json.len() == 1 {
            let (_, mut rows) = json.into_iter().next().unwrap_or_default();
            let mut top = serde_json::to_value(rows.remove("default"))?;
            if let (Some(obj), Some(b)) = (top.as_object_mut(), rows.remove("refusal-baseline")) {
                obj.insert("baseline".into(), serde_json::to_value(b)?);
            }
            top
        } else {
            serde_json::to_value(json)?
        };
        let value = if disguise_json.is_empty() {
            value
        } else {
            serde_json::json!({"sets": value, "disguises": disguise_json})
        };
        std::fs::write(out, serde_json::to_string_pretty(&value)? + "\n")?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
