//! Trains the harm detector's head over frozen all-MiniLM-L6-v2 embeddings, with candle-nn, and writes it (with its
//! metadata: threshold, encoder identity, data, metrics) to `assets/minilm-harm-head.safetensors`.
//!
//! Data (`$MLLM_PROTECTOR_DATA`, default `../shared/data`): JailbreakBench responses (label `jailbroken`), AlpacaEval
//! benign answers, AdvBench harmful strings; split 70/15/15 by behaviour / instruction / string so nothing is in two
//! splits. XSTest is never used here (evaluation only).
//!
//!     cargo run --release --example train_detector -- [--seed 42] [--out FILE]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use clap::Parser;
use mllm_protector::detector::head::CENTROIDS_TENSOR;
use mllm_protector::detector::{
    ClassifierHead, EncoderIdentity, HarmCategory, HeadMetadata, ScoringContext, SentenceEncoder,
};
use mllm_protector::eval::data::{self, Example, Split, in_split, split_of};
use mllm_protector::eval::{BinaryMetrics, binary_metrics};
use mllm_protector::loading::{ModelSource, checksum::sha256_hex, default_models_dir, pins};

#[derive(Parser, Debug)]
struct Args {
    /// Seed for splits, sub-sampling and initialisation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write the head.
    #[arg(long, default_value = "assets/minilm-harm-head.safetensors")]
    out: PathBuf,
    /// AlpacaEval answers kept per instruction (of 12 generators) in train and validation.
    #[arg(long, default_value_t = 4)]
    alpaca_per_instruction: usize,
    /// Leave out AdvBench harmful strings.
    #[arg(long)]
    no_advbench: bool,
    /// Highest false-positive rate on benign validation answers allowed when choosing the threshold.
    #[arg(long, default_value_t = 0.02)]
    max_val_fpr: f64,
    /// Maximum full-batch epochs per candidate head.
    #[arg(long, default_value_t = 2000)]
    epochs: usize,
}

/// A labelled set embedded window by window.
struct Embedded {
    x: Tensor,
    owner: Vec<usize>,
    labels: Vec<bool>,
    /// Whether each response comes from JailbreakBench (the hard part: refusals and partial answers vs harm).
    is_jbb: Vec<bool>,
    /// JailbreakBench's harm category of each response, where it has one.
    categories: Vec<Option<HarmCategory>>,
}

impl Embedded {
    /// AUROC over the JailbreakBench responses only (model selection: benign AlpacaEval answers are easy).
    fn jbb_auroc(&self, response_scores: &[f32]) -> f64 {
        let idx: Vec<usize> = (0..self.labels.len()).filter(|&i| self.is_jbb[i]).collect();
        let s: Vec<f32> = idx.iter().map(|&i| response_scores[i]).collect();
        let l: Vec<bool> = idx.iter().map(|&i| self.labels[i]).collect();
        mllm_protector::eval::auroc(&s, &l).unwrap_or(0.0)
    }

    /// Per-window loss weights: harmful windows carry half the total weight, JailbreakBench's harmless
    /// responses (refusals, evasions) a quarter, other harmless text a quarter, so neither source of negatives
    /// drowns the other.
    fn window_weights(&self) -> Vec<f32> {
        let group = |o: usize| {
            if self.labels[o] {
                0
            } else if self.is_jbb[o] {
                1
            } else {
                2
            }
        };
        let mut n = [0f32; 3];
        for &o in &self.owner {
            n[group(o)] += 1.0;
        }
        let share = [0.5f32, 0.25, 0.25];
        self.owner
            .iter()
            .map(|&o| share[group(o)] / n[group(o)].max(1.0))
            .collect()
    }

    /// Index of each response's highest-scoring window.
    fn worst_windows(&self, window_probs: &[f32]) -> Vec<usize> {
        let mut best = vec![(f32::NEG_INFINITY, 0usize); self.labels.len()];
        for (row, (&o, &p)) in self.owner.iter().zip(window_probs).enumerate() {
            if p > best[o].0 {
                best[o] = (p, row);
            }
        }
        best.into_iter().map(|b| b.1).collect()
    }

    fn window_labels(&self) -> Vec<f32> {
        self.owner
            .iter()
            .map(|&o| if self.labels[o] { 1.0 } else { 0.0 })
            .collect()
    }

    /// Response score = the highest window's (the detector's inference rule).
    fn response_scores(&self, window_probs: &[f32]) -> Vec<f32> {
        let mut out = vec![f32::NEG_INFINITY; self.labels.len()];
        for (&o, &p) in self.owner.iter().zip(window_probs) {
            out[o] = out[o].max(p);
        }
        out
    }
}

/// Deterministic uniform numbers for initialisation (candle's CPU RNG cannot be seeded).
struct SplitMix(u64);
impl SplitMix {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

struct Trained {
    sizes: Vec<usize>,
    tensors: HashMap<String, Tensor>,
    val_auroc: f64,
    epochs: usize,
}

fn forward(layers: &[(Var, Var)], x: &Tensor) -> candle_core::Result<Tensor> {
    let mut h = x.clone();
    for (i, (w, b)) in layers.iter().enumerate() {
        h = h.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
        if i + 1 < layers.len() {
            h = h.relu()?;
        }
    }
    h.squeeze(1)
}

fn sigmoid_vec(logits: &Tensor) -> candle_core::Result<Vec<f32>> {
    candle_nn::ops::sigmoid(logits)?.to_vec1::<f32>()
}

/// Class-balanced logistic loss on logits `z` for targets `y` with per-example weights `w`.
fn weighted_bce(z: &Tensor, y: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    // softplus(z) - y z, computed stably as relu(z) + log1p(exp(-|z|)) - y z.
    let softplus = (z.relu()? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    let per = (softplus - (y * z)?)?;
    (per * w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64
}

fn train_head(sizes: &[usize], train: &Embedded, val: &Embedded, args: &Args, lr: f64) -> anyhow::Result<Trained> {
    let device = Device::Cpu;
    let mut rng = SplitMix(args.seed ^ (sizes.len() as u64) << 32);
    let mut layers = Vec::new();
    for pair in sizes.windows(2) {
        let (inp, out) = (pair[0], pair[1]);
        let bound = (6.0 / (inp + out) as f32).sqrt(); // Glorot uniform
        let w: Vec<f32> = (0..inp * out).map(|_| (rng.next_f32() * 2.0 - 1.0) * bound).collect();
        layers.push((
            Var::from_tensor(&Tensor::from_vec(w, (out, inp), &device)?)?,
            Var::from_tensor(&Tensor::zeros(out, DType::F32, &device)?)?,
        ));
    }
    let y_vec = train.window_labels();
    let weights = train.window_weights();
    let y = Tensor::new(y_vec, &device)?;
    let w = Tensor::new(weights, &device)?;
    let vars: Vec<Var> = layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect();
    let mut opt = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut best = (f64::MIN, 0usize, HashMap::new());
    let pb = common::bar(args.epochs as u64, &format!("head {sizes:?}"));
    for epoch in 1..=args.epochs {
        let loss = weighted_bce(&forward(&layers, &train.x)?, &y, &w)?;
        opt.backward_step(&loss)?;
        pb.inc(1);
        if epoch % 10 == 0 {
            let probs = sigmoid_vec(&forward(&layers, &val.x)?)?;
            let auroc = val.jbb_auroc(&val.response_scores(&probs));
            if auroc > best.0 + 1e-5 {
                let mut t = HashMap::new();
                for (i, (wv, bv)) in layers.iter().enumerate() {
                    t.insert(format!("layers.{i}.weight"), wv.as_tensor().copy()?);
                    t.insert(format!("layers.{i}.bias"), bv.as_tensor().copy()?);
                }
                best = (auroc, epoch, t);
            } else if epoch >= best.1 + 300 {
                break; // early stopping: no validation gain for 300 epochs
            }
        }
    }
    pb.finish_and_clear();
    Ok(Trained {
        sizes: sizes.to_vec(),
        tensors: best.2,
        val_auroc: best.0,
        epochs: best.1,
    })
}

/// Highest-F1 threshold whose false-positive rate on the benign (non-JailbreakBench) validation answers is at most
/// `max_fpr`. JailbreakBench's own harmless side (refusals) is left to F1: flagging a refusal costs little.
fn choose_threshold(val: &Embedded, scores: &[f32], max_fpr: f64) -> f32 {
    let benign: Vec<usize> = (0..scores.len())
        .filter(|&i| !val.is_jbb[i] && !val.labels[i])
        .collect();
    let mut candidates: Vec<f32> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let mut best = (f64::MIN, 0.5f32);
    for &t in &candidates {
        let fpr = benign.iter().filter(|&&i| scores[i] >= t).count() as f64 / benign.len().max(1) as f64;
        let m = binary_metrics(scores, &val.labels, t);
        if fpr <= max_fpr && m.f1 > best.0 {
            best = (m.f1, t);
        }
    }
    best.1
}

fn alpaca_subset(all: Vec<Example>, per_instruction: usize, seed: u64) -> Vec<Example> {
    let mut by_instruction: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    for e in all {
        by_instruction.entry(e.group.clone()).or_default().push(e);
    }
    let mut out = Vec::new();
    for (instruction, mut answers) in by_instruction {
        answers.sort_by_key(|e| sha256_hex(format!("{seed}|{instruction}|{}", e.source).as_bytes()));
        out.extend(answers.into_iter().take(per_instruction));
    }
    out
}

fn embed(encoder: &SentenceEncoder, examples: &[Example], what: &str) -> anyhow::Result<Embedded> {
    let texts: Vec<&str> = examples.iter().map(|e| e.response.as_str()).collect();
    let (x, owner) = common::embed_cached(encoder, &texts, what)?;
    Ok(Embedded {
        x,
        owner,
        labels: examples.iter().map(|e| e.harmful).collect(),
        is_jbb: examples.iter().map(|e| e.source.starts_with("jbb/")).collect(),
        categories: examples
            .iter()
            .map(|e| e.category.as_deref().and_then(HarmCategory::from_jbb))
            .collect(),
    })
}

fn counts(examples: &[Example]) -> serde_json::Value {
    let pos = examples.iter().filter(|e| e.harmful).count();
    serde_json::json!({"n": examples.len(), "harmful": pos, "harmless": examples.len() - pos})
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data_dir = data::data_dir()?;
    let seed = args.seed;
    let jbb = data::load_jbb(&data_dir)?;
    let alpaca_all = data::load_alpaca(&data_dir)?;
    let alpaca_sub = alpaca_subset(alpaca_all.clone(), args.alpaca_per_instruction, seed);
    let advbench = if args.no_advbench {
        Vec::new()
    } else {
        data::load_advbench_strings(&data_dir)?
    };

    let pick = |split: Split| -> Vec<Example> {
        let mut v = in_split(jbb.clone(), split, seed);
        v.extend(in_split(alpaca_sub.clone(), split, seed));
        v.extend(in_split(advbench.clone(), split, seed));
        v
    };
    let (train, val) = (pick(Split::Train), pick(Split::Validation));
    let jbb_test = in_split(jbb.clone(), Split::Test, seed);
    let alpaca_test = in_split(alpaca_all, Split::Test, seed);
    for (name, set) in [
        ("train", &train),
        ("validation", &val),
        ("jbb-test", &jbb_test),
        ("alpaca-test", &alpaca_test),
    ] {
        eprintln!("{name:>12}: {}", counts(set));
    }
    // No group may sit in two splits.
    for e in train.iter().chain(&val) {
        anyhow::ensure!(split_of(&e.group, seed) != Split::Test, "leak: {}", e.group);
    }

    let weights = default_models_dir().join(pins::MINILM_DIR_NAME);
    let encoder = SentenceEncoder::load(
        &ModelSource::Dir(weights.clone()),
        &Device::Cpu,
        Default::default(),
        Some(pins::MINILM_WEIGHTS_SHA256),
    )
    .with_context(|| {
        format!(
            "loading the encoder from {} (run scripts/fetch_models.sh)",
            weights.display()
        )
    })?;

    let train_e = embed(&encoder, &train, "train")?;
    let val_e = embed(&encoder, &val, "validation")?;
    let jbb_e = embed(&encoder, &jbb_test, "jbb-test")?;
    let alpaca_e = embed(&encoder, &alpaca_test, "alpaca-test")?;

    let dim = 384;
    let candidates = [(vec![dim, 1], 3e-2), (vec![dim, 256, 1], 1e-3)];
    let mut trained = Vec::new();
    for (sizes, lr) in candidates {
        let t = train_head(&sizes, &train_e, &val_e, &args, lr)?;
        eprintln!(
            "head {:?}: best JBB-validation AUROC {:.4} at epoch {}",
            t.sizes, t.val_auroc, t.epochs
        );
        trained.push(t);
    }
    // The simpler head wins unless the larger one is clearly better on validation.
    let best = trained
        .into_iter()
        .reduce(|a, b| if b.val_auroc > a.val_auroc + 0.002 { b } else { a })
        .context("no head trained")?;

    // Category centroids: the mean first-window embedding of each category's harmful training responses.
    let x_train = train_e.x.to_vec2::<f32>()?;
    let mut sums: BTreeMap<usize, (Vec<f32>, usize)> = BTreeMap::new();
    let mut seen = vec![false; train_e.labels.len()];
    for (row, &o) in train_e.owner.iter().enumerate() {
        if seen[o] || !train_e.labels[o] {
            continue;
        }
        seen[o] = true;
        if let Some(c) = train_e.categories[o] {
            let k = HarmCategory::ALL.iter().position(|x| *x == c).unwrap_or(0);
            let entry = sums.entry(k).or_insert_with(|| (vec![0.0; dim], 0));
            entry.0.iter_mut().zip(&x_train[row]).for_each(|(a, b)| *a += b);
            entry.1 += 1;
        }
    }
    let categories: Vec<HarmCategory> = sums.keys().map(|&k| HarmCategory::ALL[k]).collect();
    let mut centroid_rows = Vec::new();
    for (sum, _) in sums.values() {
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        centroid_rows.extend(sum.iter().map(|v| v / norm));
    }
    let mut tensors = best.tensors.clone();
    tensors.insert(
        CENTROIDS_TENSOR.to_string(),
        Tensor::from_vec(centroid_rows, (categories.len(), dim), &Device::Cpu)?,
    );

    let mut metadata = HeadMetadata {
        format_version: mllm_protector::detector::head::FORMAT_VERSION,
        layer_sizes: best.sizes.clone(),
        threshold: 0.5,
        temperature: 1.0,
        encoder: EncoderIdentity {
            name: pins::MINILM_HUB_REPO.to_string(),
            weights_sha256: pins::MINILM_WEIGHTS_SHA256.to_string(),
            dim,
            windowing: encoder.windowing(),
        },
        context: ScoringContext::Response,
        categories,
        training: serde_json::Value::Null,
        metrics: serde_json::Value::Null,
    };
    let head = ClassifierHead::from_tensors(tensors.clone(), metadata.clone(), "trained head")?;
    let score = |e: &Embedded| -> anyhow::Result<Vec<f32>> { Ok(e.response_scores(&head.probabilities(&e.x)?)) };
    let val_scores = score(&val_e)?;
    metadata.threshold = choose_threshold(&val_e, &val_scores, args.max_val_fpr);
    let metrics = |e: &Embedded| -> anyhow::Result<BinaryMetrics> {
        Ok(binary_metrics(&score(e)?, &e.labels, metadata.threshold))
    };
    let table = [
        ("validation", metrics(&val_e)?),
        ("jbb-test", metrics(&jbb_e)?),
        ("alpaca-test", metrics(&alpaca_e)?),
    ];
    // Category accuracy on the harmful JBB test responses (category of the worst window, as at inference).
    let probs = head.probabilities(&jbb_e.x)?;
    let predicted = head.categorize(&jbb_e.x)?.unwrap_or_default();
    let (mut right, mut total) = (0usize, 0usize);
    for (i, &w) in jbb_e.worst_windows(&probs).iter().enumerate() {
        if let (true, Some(truth)) = (jbb_e.labels[i], jbb_e.categories[i]) {
            total += 1;
            right += usize::from(predicted.get(w) == Some(&truth));
        }
    }
    let category_accuracy = right as f64 / total.max(1) as f64;
    println!("category accuracy on harmful jbb-test responses: {category_accuracy:.4} ({right}/{total})");
    println!(
        "head {:?}, threshold {:.4} (benign validation FPR ≤ {})",
        best.sizes, metadata.threshold, args.max_val_fpr
    );
    println!(
        "{:<12} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "set", "n", "AUROC", "F1", "prec", "recall", "FPR"
    );
    for (name, m) in &table {
        println!(
            "{name:<12} {:>5} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4}",
            m.n,
            m.auroc.unwrap_or(f64::NAN),
            m.f1,
            m.precision,
            m.recall,
            m.fpr
        );
    }
    let mut metrics = serde_json::json!(
        table
            .iter()
            .map(|(n, m)| (n.to_string(), m))
            .collect::<BTreeMap<_, _>>()
    );
    metrics["jbb-test-category-accuracy"] = serde_json::json!(category_accuracy);
    metadata.metrics = metrics;
    metadata.training = serde_json::json!({
        "command": "cargo run --release --example train_detector",
        "seed": seed,
        "split": "70/15/15 by group (JBB behaviour, AlpacaEval instruction, AdvBench string), sha256(seed, group)",
        "data": {
            "jbb": "JailbreakBench artifacts, label `jailbroken`",
            "alpacaeval": format!("{} answers per instruction (of 12 generators)", args.alpaca_per_instruction),
            "advbench": if args.no_advbench { "not used" } else { "harmful_strings.csv as positives" },
            "xstest": "not used (evaluation only)",
        },
        "counts": {"train": counts(&train), "validation": counts(&val)},
        "optimiser": "AdamW, full batch, class-balanced logistic loss, weight decay 1e-4, early stopping on JBB-validation AUROC; loss weights: harmful 1/2, JBB harmless 1/4, other harmless 1/4",
        "candidates": "logistic [384, 1] (lr 3e-2) vs MLP [384, 256, 1] (lr 1e-3); MLP kept only if JBB-validation AUROC +0.002",
        "best_epoch": best.epochs,
        "categories": "nearest centroid (cosine) of the worst window; centroids = mean first-window embedding of each JBB category's harmful training responses",
        "threshold_rule": format!("highest validation F1 with FPR ≤ {} on benign (AlpacaEval) validation answers", args.max_val_fpr),
    });
    let head = ClassifierHead::from_tensors(tensors, metadata, "trained head")?;
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, head.to_bytes()?)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
