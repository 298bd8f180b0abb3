//! Trains the harm detector's head over frozen all-MiniLM-L6-v2 embeddings, with candle-nn, and writes it (with its
//! metadata: threshold, encoder identity, data, metrics) to `assets/minilm-harm-head.safetensors`.
//!
//! Data (`$MLLM_PROTECTOR_DATA`, default `../shared/data`): JailbreakBench responses (label `jailbroken`), AlpacaEval
//! benign answers, AdvBench harmful strings; split 70/15/15 by behaviour / instruction / string so nothing is in two
//! splits. XSTest is never used here (evaluation only). Optional hard negatives and positives: `--extra toxigen
//! --extra hhrlhf-refusals --extra advbench-targets` (from the same folder) and `--generated FILE` (JSONL from
//! `generate_hard_examples`); their test split is reported per source.
//!
//!     cargo run --release --example train_detector -- [--seed 42] [--out FILE]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use clap::Parser;
use mllm_protector::detector::DetectionInput;
use mllm_protector::detector::head::CENTROIDS_TENSOR;
use mllm_protector::detector::llm_backbone::LLM_WINDOWING;
use mllm_protector::detector::{
    ClassifierHead, DeltaStorage, EncoderIdentity, EncoderKind, HarmCategory, HeadMetadata, LlmBackboneEncoder,
    ScoringContext, SentenceEncoder, TextEncoder, WeightDelta, WindowEmbeddings, Windowing, context,
};
use mllm_protector::eval::binary_metrics;
use mllm_protector::eval::data::Example;
use mllm_protector::loading::{ModelSource, default_models_dir, pins};

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
    /// A weight delta written by `finetune_encoder` (or `embedded`: the shipped head's own): the head is trained over
    /// the fine-tuned encoder and the delta is stored in the head file.
    #[arg(long)]
    encoder_delta: Option<PathBuf>,
    /// How the head file stores that delta: `u8-rows` (8 bits per weight, one power-of-two scale per row; the head
    /// is trained over the delta as rounded) or `float` (f16, as `finetune_encoder` wrote it; twice the size).
    #[arg(long, value_parser = parse_storage, default_value = "u8-rows")]
    delta_storage: DeltaStorage,
    /// AlpacaEval test answers per instruction in the report (of 12; fewer for the slow LLM backbone).
    #[arg(long, default_value_t = 12)]
    alpaca_test_per_instruction: usize,
    /// Train over SmolLM2-135M-Instruct's last-token hidden state instead of MiniLM (the paper's design).
    #[arg(long, conflicts_with = "encoder_delta")]
    llm_backbone: bool,
    /// What the head reads: `response` (the paper's inference setting), `prompt-and-response` (its training format,
    /// one text) or `response-beside-prompt` (the response's embedding next to the prompt's).
    #[arg(long, value_parser = parse_context, default_value = "response")]
    context: ScoringContext,
    #[command(flatten)]
    data: common::ExtraData,
    /// Validation responses the Platt scaling is fitted on: `all`, or `jbb` (JailbreakBench's mix only).
    #[arg(long, default_value = "all")]
    calibrate_on: String,
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
    /// Whether each response is an AlpacaEval answer (the benign answers the operating point is set on).
    is_alpaca: Vec<bool>,
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
        let groups: Vec<usize> = self
            .owner
            .iter()
            .map(|&o| common::loss_group(self.labels[o], self.is_jbb[o]))
            .collect();
        common::group_weights(&groups)
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

fn train_head(sizes: &[usize], train: &Embedded, val: &Embedded, args: &Args, lr: f64) -> anyhow::Result<Trained> {
    let device = Device::Cpu;
    let mut rng = mllm_protector::eval::SplitMix64(args.seed ^ (sizes.len() as u64) << 32);
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
    let mut opt = common::adamw(vars, lr)?;
    let mut best = (f64::MIN, 0usize, HashMap::new());
    let pb = common::bar(args.epochs as u64, &format!("head {sizes:?}"));
    for epoch in 1..=args.epochs {
        let loss = common::weighted_bce(&forward(&layers, &train.x)?, &y, &w)?;
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

/// Highest-F1 threshold whose false-positive rate on the benign AlpacaEval validation answers is at most
/// `max_fpr`. JailbreakBench's own harmless side (refusals) is left to F1: flagging a refusal costs little.
fn choose_threshold(val: &Embedded, scores: &[f32], max_fpr: f64) -> f32 {
    let benign: Vec<usize> = (0..scores.len())
        .filter(|&i| val.is_alpaca[i] && !val.labels[i])
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

fn embed(
    encoder: &dyn TextEncoder,
    windowing: Windowing,
    context: ScoringContext,
    examples: &[Example],
    what: &str,
) -> anyhow::Result<Embedded> {
    let texts: Vec<String> = examples
        .iter()
        .map(|e| context.text(&DetectionInput::new(&e.prompt, &e.response)).into_owned())
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (mut x, owner) = common::embed_cached(encoder, windowing, &texts, what)?;
    if context.embeds_prompt() {
        // The detector's own pairing code, over cached prompt embeddings.
        let cached = CachedEncoder {
            inner: encoder,
            windowing,
        };
        let prompts: Vec<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
        let prompts = context::prompt_embeddings(&cached, &prompts)?;
        x = context::beside_prompt(&WindowEmbeddings::new(x, owner.clone()), &prompts)?;
    }
    Ok(Embedded {
        x,
        owner,
        labels: examples.iter().map(|e| e.harmful).collect(),
        is_jbb: examples.iter().map(|e| e.source.starts_with("jbb/")).collect(),
        is_alpaca: examples.iter().map(|e| e.source.starts_with("alpacaeval/")).collect(),
        categories: examples
            .iter()
            .map(|e| e.category.as_deref().and_then(HarmCategory::from_jbb))
            .collect(),
    })
}

/// An encoder whose embeddings go through the on-disk cache (prompts repeat across runs and variants).
struct CachedEncoder<'a> {
    inner: &'a dyn TextEncoder,
    windowing: Windowing,
}

impl TextEncoder for CachedEncoder<'_> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn weights_sha256(&self) -> &str {
        self.inner.weights_sha256()
    }

    fn precision(&self) -> &str {
        self.inner.precision()
    }

    fn embed_windows(&self, texts: &[&str]) -> mllm_protector::Result<WindowEmbeddings> {
        let (embeddings, owner) = common::embed_cached(self.inner, self.windowing, texts, "prompts")
            .map_err(|e| mllm_protector::Error::Data(format!("embedding cache: {e:#}")))?;
        Ok(WindowEmbeddings::new(embeddings, owner))
    }
}

fn parse_storage(s: &str) -> Result<DeltaStorage, String> {
    match s {
        "u8-rows" => Ok(DeltaStorage::U8Rows),
        "float" => Ok(DeltaStorage::Float),
        other => Err(format!("{other:?}: u8-rows or float")),
    }
}

fn parse_context(s: &str) -> Result<ScoringContext, String> {
    match s {
        "response" => Ok(ScoringContext::Response),
        "prompt-and-response" => Ok(ScoringContext::PromptAndResponse),
        "response-beside-prompt" => Ok(ScoringContext::ResponseBesidePrompt),
        other => Err(format!(
            "{other:?}: response, prompt-and-response or response-beside-prompt"
        )),
    }
}

/// Reads a delta file from `finetune_encoder`, checking that it was made over the pinned base encoder.
fn read_delta(path: &std::path::Path) -> anyhow::Result<WeightDelta> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let info: serde_json::Value = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("mllm_protector.encoder_delta"))
        .map(|j| serde_json::from_str(j))
        .transpose()?
        .context("not an encoder delta (no mllm_protector.encoder_delta metadata)")?;
    anyhow::ensure!(
        info["base_sha256"] == pins::MINILM_WEIGHTS_SHA256,
        "the delta was trained over another base: {}",
        info["base_sha256"]
    );
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let id = WeightDelta::identity(&tensors)?;
    Ok(WeightDelta { tensors, id })
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let seed = args.seed;
    let sets = common::TrainingSets::load(&common::SetOptions {
        seed,
        alpaca_per_instruction: args.alpaca_per_instruction,
        alpaca_test_per_instruction: args.alpaca_test_per_instruction,
        advbench: !args.no_advbench,
        extra: args.data.clone(),
    })?;
    let (train, val, jbb_test, alpaca_test) = (&sets.train, &sets.val, &sets.jbb_test, &sets.alpaca_test);
    let delta = match &args.encoder_delta {
        // Train over the delta exactly as the head file will store it.
        // The shipped head's own delta: a new head over the shipped fine-tuned encoder.
        Some(path) if path.as_os_str() == "embedded" => {
            let shipped = ClassifierHead::embedded(&Device::Cpu)?
                .encoder_delta()
                .context("the embedded head carries no encoder delta")?;
            Some(match args.delta_storage {
                DeltaStorage::Float => shipped,
                DeltaStorage::U8Rows => shipped.rounded_to_u8()?,
                DeltaStorage::Shared => anyhow::bail!("a detector head stores its own delta (u8-rows or float)"),
            })
        }
        Some(path) => Some(match args.delta_storage {
            DeltaStorage::Float => read_delta(path)?,
            DeltaStorage::U8Rows => read_delta(path)?.rounded_to_u8()?,
            DeltaStorage::Shared => anyhow::bail!("a detector head stores its own delta (u8-rows or float)"),
        }),
        None => None,
    };

    let (encoder, windowing, identity): (Box<dyn TextEncoder>, Windowing, EncoderIdentity) = if args.llm_backbone {
        let e = LlmBackboneEncoder::load_default().context("loading SmolLM2 (run scripts/fetch_models.sh)")?;
        let identity = EncoderIdentity {
            name: format!("{} (last-token hidden state)", pins::SMOLLM2_HUB_REPO),
            kind: EncoderKind::LlmLastToken,
            weights_sha256: pins::SMOLLM2_GGUF_SHA256.to_string(),
            dim: e.dim(),
            windowing: e.windowing(),
            delta_sha256: None,
            delta_storage: DeltaStorage::Float,
        };
        (Box::new(e), LLM_WINDOWING, identity)
    } else {
        let weights = default_models_dir().join(pins::MINILM_DIR_NAME);
        let e = SentenceEncoder::load_with_delta(
            &ModelSource::Dir(weights.clone()),
            &Device::Cpu,
            Default::default(),
            Some(pins::MINILM_WEIGHTS_SHA256),
            delta.as_ref(),
        )
        .with_context(|| {
            format!(
                "loading the encoder from {} (run scripts/fetch_models.sh)",
                weights.display()
            )
        })?;
        let identity = EncoderIdentity {
            name: if delta.is_some() {
                format!("{} (top layers fine-tuned)", pins::MINILM_HUB_REPO)
            } else {
                pins::MINILM_HUB_REPO.to_string()
            },
            kind: EncoderKind::SentenceTransformer,
            weights_sha256: pins::MINILM_WEIGHTS_SHA256.to_string(),
            dim: e.dim(),
            windowing: e.windowing(),
            delta_sha256: None,                 // set with the delta's tensors by `with_encoder_delta`
            delta_storage: DeltaStorage::Float, // likewise
        };
        (Box::new(e), Windowing::default(), identity)
    };
    let encoder = encoder.as_ref();

    let train_e = embed(encoder, windowing, args.context, train, "train")?;
    let val_e = embed(encoder, windowing, args.context, val, "validation")?;
    let jbb_e = embed(encoder, windowing, args.context, jbb_test, "jbb-test")?;
    let alpaca_e = embed(encoder, windowing, args.context, alpaca_test, "alpaca-test")?;
    let extra_e = if sets.extra_test.is_empty() {
        None
    } else {
        Some(embed(encoder, windowing, args.context, &sets.extra_test, "extra-test")?)
    };

    let dim = encoder.dim();
    let width = args.context.feature_dim(dim);
    let candidates = [(vec![width, 1], 3e-2), (vec![width, 256, 1], 1e-3)];
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
            // The response's own embedding: the first `dim` columns of the head's input.
            entry.0.iter_mut().zip(&x_train[row][..dim]).for_each(|(a, b)| *a += b);
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
        logit_bias: 0.0,
        encoder: identity,
        context: args.context,
        categories,
        training: serde_json::Value::Null,
        metrics: serde_json::Value::Null,
    };
    // Calibration: Platt scaling (temperature and bias) of the response logit (the worst window's), fitted on
    // validation; monotone, so the ranking is unchanged.
    let raw = ClassifierHead::from_tensors(tensors.clone(), metadata.clone(), "trained head")?;
    let val_logits = val_e.response_scores(&raw.logits(&val_e.x)?.to_vec1::<f32>()?);
    let calibration_rows: Vec<usize> = match args.calibrate_on.as_str() {
        "all" => (0..val_logits.len()).collect(),
        "jbb" => (0..val_logits.len()).filter(|&i| val_e.is_jbb[i]).collect(),
        other => anyhow::bail!("--calibrate-on {other:?}: all or jbb"),
    };
    let (temperature, logit_bias) = mllm_protector::eval::fit_platt(
        &calibration_rows.iter().map(|&i| val_logits[i]).collect::<Vec<_>>(),
        &calibration_rows.iter().map(|&i| val_e.labels[i]).collect::<Vec<_>>(),
    );
    metadata.temperature = temperature;
    metadata.logit_bias = logit_bias;
    eprintln!("calibration on validation: temperature {temperature:.4}, bias {logit_bias:.4}");
    let head = ClassifierHead::from_tensors(tensors.clone(), metadata.clone(), "trained head")?;
    let score = |e: &Embedded| -> anyhow::Result<Vec<f32>> { Ok(e.response_scores(&head.probabilities(&e.x)?)) };
    let val_scores = score(&val_e)?;
    metadata.threshold = choose_threshold(&val_e, &val_scores, args.max_val_fpr);
    let mut evaluated = vec![("validation", &val_e), ("jbb-test", &jbb_e), ("alpaca-test", &alpaca_e)];
    if let Some(e) = &extra_e {
        evaluated.push(("extra-test", e));
    }
    // Each set scored once: its metrics at the threshold and its calibration error.
    let mut table = Vec::new();
    let mut eces = BTreeMap::new();
    let mut set_scores = BTreeMap::new();
    for &(name, e) in &evaluated {
        let s = if name == "validation" {
            val_scores.clone()
        } else {
            score(e)?
        };
        table.push((name, binary_metrics(&s, &e.labels, metadata.threshold)));
        eces.insert(
            name,
            mllm_protector::eval::expected_calibration_error(&s, &e.labels, 10),
        );
        set_scores.insert(name, s);
    }
    // Category accuracy on the harmful JBB test responses (category of the worst window, as at inference).
    let probs = head.probabilities(&jbb_e.x)?;
    let predicted = head.categorize(&jbb_e.x.narrow(1, 0, dim)?)?.unwrap_or_default();
    let (mut right, mut total) = (0usize, 0usize);
    for (i, &w) in jbb_e.worst_windows(&probs).iter().enumerate() {
        if let (true, Some(truth)) = (jbb_e.labels[i], jbb_e.categories[i]) {
            total += 1;
            right += usize::from(predicted.get(w).map(|p| p.0) == Some(truth));
        }
    }
    let category_accuracy = right as f64 / total.max(1) as f64;
    println!("category accuracy on harmful jbb-test responses: {category_accuracy:.4} ({right}/{total})");
    println!(
        "head {:?}, threshold {:.4} (benign validation FPR ≤ {})",
        best.sizes, metadata.threshold, args.max_val_fpr
    );
    println!(
        "{:<12} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "set", "n", "AUROC", "F1", "prec", "recall", "FPR", "ECE"
    );
    for (name, m) in &table {
        println!(
            "{name:<12} {:>5} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4}",
            m.n,
            m.auroc.unwrap_or(f64::NAN),
            m.f1,
            m.precision,
            m.recall,
            m.fpr,
            eces[name]
        );
    }
    let mut metrics = serde_json::json!(
        table
            .iter()
            .map(|(n, m)| (n.to_string(), m))
            .collect::<BTreeMap<_, _>>()
    );
    if let Some(scores) = set_scores.get("extra-test") {
        // Per source of the extra test split: the share flagged (recall for harmful sources, FPR for harmless ones).
        let mut by_source: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (i, ex) in sets.extra_test.iter().enumerate() {
            let source = ex.source.splitn(3, '/').take(2).collect::<Vec<_>>().join("/");
            let entry = by_source.entry(source).or_default();
            entry.0 += usize::from(scores[i] >= metadata.threshold);
            entry.1 += 1;
        }
        for (source, (flagged, n)) in &by_source {
            println!(
                "extra-test {source:<36} flagged {flagged}/{n} ({:.3})",
                *flagged as f64 / *n as f64
            );
        }
        metrics["extra-test-flagged"] = serde_json::json!(by_source);
    }
    metrics["jbb-test-category-accuracy"] = serde_json::json!(category_accuracy);
    metrics["ece"] = serde_json::json!(eces);
    metadata.metrics = metrics;
    metadata.training = serde_json::json!({
        // The exact arguments this head was trained with.
        "command": format!(
            "cargo run --release --example train_detector -- {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        ),
        "seed": seed,
        "split": "70/15/15 by group (JBB behaviour, AlpacaEval instruction, AdvBench string), sha256(seed, group)",
        "data": {
            "jbb": "JailbreakBench artifacts, label `jailbroken`",
            "alpacaeval": format!("{} answers per instruction (of 12 generators)", args.alpaca_per_instruction),
            "advbench": if args.no_advbench { "not used" } else { "harmful_strings.csv as positives" },
            "extras": format!("{:?} (toxigen: {} per label)", args.data.extra, args.data.toxigen_per_label),
            "generated": args.data.generated.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "xstest": "not used (evaluation only)",
        },
        "counts": {"train": common::counts(train), "validation": common::counts(val)},
        "optimiser": "AdamW, full batch, class-balanced logistic loss, weight decay 1e-4, early stopping on JBB-validation AUROC; loss weights: harmful 1/2, JBB harmless 1/4, other harmless 1/4",
        "candidates": format!("logistic [{width}, 1] (lr 3e-2) vs MLP [{width}, 256, 1] (lr 1e-3); MLP kept only if JBB-validation AUROC +0.002"),
        "best_epoch": best.epochs,
        "categories": "nearest centroid (cosine) of the worst window; centroids = mean first-window embedding of each JBB category's harmful training responses",
        "calibration": format!("Platt scaling (temperature, bias) of the worst window's logit, fitted on validation ({})", args.calibrate_on),
        "encoder_delta": delta.as_ref().map(|d| d.id.clone()),
        "encoder_delta_storage": args.delta_storage,
        "threshold_rule": format!("highest validation F1 with FPR ≤ {} on benign (AlpacaEval) validation answers", args.max_val_fpr),
    });
    let mut head = ClassifierHead::from_tensors(tensors, metadata, "trained head")?;
    if let Some(delta) = delta {
        let id = delta.id.clone();
        head = head.with_encoder_delta(delta, args.delta_storage)?;
        anyhow::ensure!(
            head.metadata().encoder.delta_sha256.as_deref() == Some(id.as_str()),
            "the stored delta differs from the one the head was trained over"
        );
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, head.to_bytes()?)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
