//! Helpers shared by the examples: progress bars and the embedding cache used in training.

#![allow(dead_code)]

// candle allocates large, short-lived tensors; mimalloc reuses them instead of mapping fresh pages each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use mllm_protector::detector::{TextEncoder, Windowing};
use mllm_protector::eval::data::{self, Example, Split, in_split, split_of};
use mllm_protector::loading::checksum::sha256_hex;

/// Extra training sources beyond JailbreakBench, AlpacaEval and AdvBench strings: hard negatives and positives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Extra {
    /// ToxiGen statements: hate as harmful, neutral statements about the same groups as harmless.
    Toxigen,
    /// HH-RLHF `chosen` final turns that decline (refusals with explanations) as harmless.
    HhrlhfRefusals,
    /// AdvBench's affirmative targets ("Sure, here is …") as harmful (partial compliance).
    AdvbenchTargets,
    /// GPTFuzz: real jailbreak answers of three chat models, human-labelled; split by question.
    Gptfuzz,
    /// OpenAI moderation texts: hate, harassment, violence and sexual content as harmful (see `load_moderation`).
    Moderation,
    /// AlpacaEval answers that give safety information (warnings, why it is illegal, where to get help).
    SafetyInformation,
    /// Fragments of harmless answers (JBB and the AlpacaEval answers in use): up to 3 spans of 2 sentences each,
    /// picked by a seeded hash, as harmless, in their answer's split. A harmless sentence read out of its answer
    /// scores as harmful to a head trained on whole answers only (docs/EVALUATION.md, "Short spans").
    HarmlessFragments,
}

/// The optional hard-example sources, as command-line flags shared by `train_detector` and `finetune_encoder`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExtraData {
    /// Extra hard negatives and positives (repeatable): toxigen, hhrlhf-refusals, advbench-targets, gptfuzz,
    /// moderation, safety-information.
    #[arg(long, value_enum)]
    pub extra: Vec<Extra>,
    /// ToxiGen statements kept at most per label (hate, neutral), picked by a seeded hash (the deduplicated files
    /// hold about 500 per label, so the default 1,500 keeps them all; lower it to weigh ToxiGen less).
    #[arg(long, default_value_t = 1500)]
    pub toxigen_per_label: usize,
    /// GPTFuzz answers kept at most per question, picked by a seeded hash (each question has about 77, one per
    /// jailbreak template and model; fewer keeps training time down while every question stays in).
    #[arg(long)]
    pub gptfuzz_per_question: Option<usize>,
    /// Generated examples (JSONL from `generate_hard_examples`; repeatable), split by their `group` like the rest.
    #[arg(long)]
    pub generated: Vec<PathBuf>,
}

/// What [`TrainingSets::load`] reads.
#[derive(Debug, Clone)]
pub struct SetOptions {
    pub seed: u64,
    /// AlpacaEval answers per instruction in train and validation (of 12).
    pub alpaca_per_instruction: usize,
    /// AlpacaEval answers per instruction in the test split (of 12).
    pub alpaca_test_per_instruction: usize,
    /// AdvBench harmful strings as positives.
    pub advbench: bool,
    pub extra: ExtraData,
}

/// The labelled sets every training example uses (split 70/15/15 by group; XSTest never).
pub struct TrainingSets {
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub jbb_test: Vec<Example>,
    pub alpaca_test: Vec<Example>,
    /// The test split of the extra sources (empty without extras).
    pub extra_test: Vec<Example>,
}

impl TrainingSets {
    /// JailbreakBench responses, AlpacaEval answers (sub-sampled per instruction), AdvBench harmful strings and the
    /// chosen extras, each split by group.
    pub fn load(o: &SetOptions) -> anyhow::Result<Self> {
        let seed = o.seed;
        let data_dir = data::data_dir()?;
        let jbb = data::load_jbb(&data_dir)?;
        let alpaca_all = data::load_alpaca(&data_dir)?;
        let alpaca_sub = alpaca_subset(alpaca_all.clone(), o.alpaca_per_instruction, seed);
        let mut others = if o.advbench {
            data::load_advbench_strings(&data_dir)?
        } else {
            Vec::new()
        };
        let mut extra = Vec::new();
        for x in &o.extra.extra {
            match x {
                Extra::Toxigen => {
                    let all = data::load_toxigen(&data_dir)?;
                    for harmful in [true, false] {
                        let mut side: Vec<Example> = all.iter().filter(|e| e.harmful == harmful).cloned().collect();
                        side.sort_by_key(|e| sha256_hex(format!("{seed}|{}", e.group).as_bytes()));
                        extra.extend(side.into_iter().take(o.extra.toxigen_per_label));
                    }
                }
                Extra::HhrlhfRefusals => extra.extend(data::load_hhrlhf_refusals(&data_dir)?),
                Extra::AdvbenchTargets => extra.extend(data::load_advbench_targets(&data_dir)?),
                Extra::Gptfuzz => {
                    let mut all = data::load_gptfuzz(&data_dir)?;
                    if let Some(keep) = o.extra.gptfuzz_per_question {
                        all.sort_by_key(|e| sha256_hex(format!("{seed}|{}|{}", e.group, e.response).as_bytes()));
                        let mut per_question: HashMap<String, usize> = HashMap::new();
                        all.retain(|e| {
                            let n = per_question.entry(e.group.clone()).or_default();
                            *n += 1;
                            *n <= keep
                        });
                    }
                    extra.extend(all);
                }
                Extra::Moderation => extra.extend(data::load_moderation(&data_dir)?),
                Extra::SafetyInformation => extra.extend(data::load_alpaca_safety_information(&data_dir)?),
                Extra::HarmlessFragments => {
                    for e in jbb.iter().chain(&alpaca_sub).filter(|e| !e.harmful) {
                        let mut spans = mllm_protector::detector::encoder::sentence_spans(&e.response, 2);
                        if spans.len() < 2 {
                            continue; // the whole answer is already an example
                        }
                        spans.sort_by_key(|s| sha256_hex(format!("{seed}|{s}").as_bytes()));
                        extra.extend(spans.into_iter().take(3).map(|span| Example {
                            response: span.to_string(),
                            source: format!("fragments/{}", e.source),
                            ..e.clone()
                        }));
                    }
                }
            }
        }
        for path in &o.extra.generated {
            extra.extend(data::load_jsonl(path)?);
        }
        // Requests from AdvBench / HarmBench often repeat a JBB goal: they go where that behaviour goes.
        let moved = data::adopt_near_duplicate_groups(&mut extra, &jbb, 0.5);
        if moved > 0 {
            eprintln!("{moved} extra examples joined the split of the JBB behaviour whose goal they repeat");
        }
        others.extend(extra.iter().cloned());
        let pick = |split: Split| -> Vec<Example> {
            let mut v = in_split(jbb.clone(), split, seed);
            v.extend(in_split(alpaca_sub.clone(), split, seed));
            v.extend(in_split(others.clone(), split, seed));
            v
        };
        let sets = TrainingSets {
            train: pick(Split::Train),
            val: pick(Split::Validation),
            jbb_test: in_split(jbb, Split::Test, seed),
            alpaca_test: in_split(
                alpaca_subset(alpaca_all, o.alpaca_test_per_instruction, seed),
                Split::Test,
                seed,
            ),
            extra_test: in_split(extra, Split::Test, seed),
        };
        for (name, set) in [
            ("train", &sets.train),
            ("validation", &sets.val),
            ("jbb-test", &sets.jbb_test),
            ("alpaca-test", &sets.alpaca_test),
            ("extra-test", &sets.extra_test),
        ] {
            eprintln!("{name:>12}: {}", counts(set));
        }
        // No group may sit in two splits.
        for e in sets.train.iter().chain(&sets.val) {
            anyhow::ensure!(split_of(&e.group, seed) != Split::Test, "leak: {}", e.group);
        }
        Ok(sets)
    }
}

/// `n`, harmful and harmless counts of a set, as JSON.
pub fn counts(examples: &[Example]) -> serde_json::Value {
    let pos = examples.iter().filter(|e| e.harmful).count();
    serde_json::json!({"n": examples.len(), "harmful": pos, "harmless": examples.len() - pos})
}

/// `per_instruction` of the 12 AlpacaEval answers to each instruction, picked by a seeded hash.
pub fn alpaca_subset(all: Vec<Example>, per_instruction: usize, seed: u64) -> Vec<Example> {
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

/// Loss group of an example: 0 harmful, 1 JailbreakBench harmless (refusals, evasions), 2 other harmless.
pub fn loss_group(harmful: bool, is_jbb: bool) -> usize {
    match (harmful, is_jbb) {
        (true, _) => 0,
        (false, true) => 1,
        (false, false) => 2,
    }
}

/// Loss weights over loss groups: harmful text carries half the total weight, JailbreakBench's harmless responses a
/// quarter, other harmless text a quarter, so neither source of negatives drowns the other.
pub fn group_weights(groups: &[usize]) -> Vec<f32> {
    let mut n = [0f32; 3];
    for &g in groups {
        n[g] += 1.0;
    }
    let share = [0.5f32, 0.25, 0.25];
    groups.iter().map(|&g| share[g] / n[g].max(1.0)).collect()
}

/// [`group_weights`] of a list of examples.
pub fn loss_weights(examples: &[Example]) -> Vec<f32> {
    let groups: Vec<usize> = examples
        .iter()
        .map(|e| loss_group(e.harmful, e.source.starts_with("jbb/")))
        .collect();
    group_weights(&groups)
}

/// Weighted mean binary cross-entropy on logits `z`, labels `y` (0/1) and weights `w`.
pub fn weighted_bce(z: &Tensor, y: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    // log(1 + e^z) - y z, computed stably as max(z, 0) - y z + log(1 + e^{-|z|}).
    let per = ((z.relu()? - (y * z)?)? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (per * w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64
}

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Embeds every window of every text (with a progress bar). Window embeddings are cached on disk per text under
/// `.cache/embeddings/`, keyed by the encoder weights, the windowing and the text's sha256, so re-running training
/// (another seed, another mix) only embeds what is new. Returns `(embeddings (windows, dim), owner per window)`.
pub fn embed_cached(
    encoder: &dyn TextEncoder,
    windowing: Windowing,
    texts: &[&str],
    what: &str,
) -> anyhow::Result<(Tensor, Vec<usize>)> {
    // "paragraphs" names the windowing rule (fixed windows + paragraphs alone), so a rule change re-embeds.
    let key = format!(
        "{}{}{:?}paragraphs",
        encoder.weights_sha256(),
        encoder.precision(),
        windowing
    );
    let path = PathBuf::from(".cache/embeddings").join(format!("{}.safetensors", &sha256_hex(key.as_bytes())[..16]));
    let mut cache: HashMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_default();
    let hashes: Vec<String> = texts.iter().map(|t| sha256_hex(t.as_bytes())).collect();
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| !cache.contains_key(&hashes[i])).collect();
    if !missing.is_empty() {
        let pb = bar(missing.len() as u64, what);
        let mut saved = std::time::Instant::now();
        std::fs::create_dir_all(".cache/embeddings")?;
        for chunk in missing.chunks(64) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let w = encoder.embed_windows(&batch)?;
            for (j, &i) in chunk.iter().enumerate() {
                let rows: Vec<u32> = (0..w.owner.len())
                    .filter(|&r| w.owner[r] == j)
                    .map(|r| r as u32)
                    .collect();
                let idx = Tensor::new(rows, &Device::Cpu)?;
                cache.insert(hashes[i].clone(), w.embeddings.index_select(&idx, 0)?);
            }
            pb.inc(chunk.len() as u64);
            // Slow encoders (the LLM backbone) take an hour per split: keep what is done if the run is stopped.
            if saved.elapsed().as_secs() > 120 {
                candle_core::safetensors::save(&cache, &path)?;
                saved = std::time::Instant::now();
            }
        }
        pb.finish();
        candle_core::safetensors::save(&cache, &path)?;
    }
    let mut rows = Vec::with_capacity(texts.len());
    let mut owner = Vec::new();
    for (i, h) in hashes.iter().enumerate() {
        let t = cache
            .get(h)
            .ok_or_else(|| anyhow::anyhow!("embedding cache lost {h}"))?;
        owner.extend(std::iter::repeat_n(i, t.dim(0)?));
        rows.push(t.clone());
    }
    Ok((Tensor::cat(&rows, 0)?, owner))
}

/// The median (NaN for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The value at quantile `q` of an ascending slice (nearest rank; NaN for none).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Writes `value` as pretty JSON to `path`, creating its folder, and says so on stderr.
pub fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The split seed the embedded head was trained with (42 when it does not say): the examples split the data as the
/// head did, so a test split holds nothing it was trained on.
pub fn head_split_seed() -> anyhow::Result<u64> {
    Ok(
        mllm_protector::detector::ClassifierHead::embedded(&candle_core::Device::Cpu)?
            .metadata()
            .training
            .get("seed")
            .and_then(|s| s.as_u64())
            .unwrap_or(42),
    )
}

/// `n` items spread evenly over `items` (all of them when there are no more than `n`).
pub fn evenly<T: Clone>(items: Vec<T>, n: usize) -> Vec<T> {
    if n == 0 || items.len() <= n {
        return items;
    }
    let step = items.len() as f64 / n as f64;
    (0..n).map(|i| items[(i as f64 * step) as usize].clone()).collect()
}

/// The named evaluation sets: `jbb-test`, `jbb-val`, `alpaca-test`, `alpaca-val`, `gptfuzz-val`, `gptfuzz-train`
/// (GPTFuzz's answers to the questions of each split) and `xstest` (all of it; evaluation only).
pub fn named_set(name: &str, seed: u64) -> anyhow::Result<Vec<mllm_protector::eval::data::Example>> {
    use mllm_protector::eval::data::{self, Split, in_split};
    let dir = data::data_dir()?;
    Ok(match name {
        "jbb-test" => in_split(data::load_jbb(&dir)?, Split::Test, seed),
        "jbb-val" => in_split(data::load_jbb(&dir)?, Split::Validation, seed),
        "alpaca-test" => in_split(data::load_alpaca(&dir)?, Split::Test, seed),
        "alpaca-val" => in_split(data::load_alpaca(&dir)?, Split::Validation, seed),
        "gptfuzz-val" => in_split(data::load_gptfuzz(&dir)?, Split::Validation, seed),
        "gptfuzz-train" => in_split(data::load_gptfuzz(&dir)?, Split::Train, seed),
        "xstest" => data::load_xstest(&dir)?,
        other => anyhow::bail!(
            "unknown set {other:?} (jbb-test, jbb-val, alpaca-test, alpaca-val, gptfuzz-val, gptfuzz-train, xstest)"
        ),
    })
}

/// The harmless text padded and buried disguises put around an answer: the answers of `pool` (AlpacaEval), from the
/// `i`-th on, joined until 600 words.
pub fn filler(pool: &[mllm_protector::eval::data::Example], i: usize) -> String {
    let mut out = String::new();
    let mut words = 0;
    for k in 0..pool.len() {
        let text = &pool[(i + k) % pool.len()].response;
        words += text.split_whitespace().count();
        out.push_str(text);
        out.push('\n');
        if words >= 600 {
            break;
        }
    }
    out
}

/// AdamW with the heads' weight decay (1e-4).
pub fn adamw(vars: Vec<candle_core::Var>, lr: f64) -> candle_core::Result<candle_nn::AdamW> {
    use candle_nn::Optimizer;
    candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )
}

/// The logits of a one-layer (logistic) head: `(n, dim)` embeddings to `(n,)`.
pub type Logits<'a> = &'a dyn Fn(&Tensor) -> candle_core::Result<Tensor>;

/// Trains a logistic head (`layers.0.weight` `(1, dim)`, `layers.0.bias`) full-batch with AdamW on `loss`, keeping
/// the weights with the best `validate` score (higher is better, checked every 10 epochs; stops after 300 epochs
/// without gain). Returns those tensors, their score and epoch.
pub fn train_logistic(
    dim: usize,
    seed: u64,
    lr: f64,
    epochs: usize,
    loss: impl Fn(Logits) -> candle_core::Result<Tensor>,
    validate: impl Fn(Logits) -> anyhow::Result<f64>,
) -> anyhow::Result<(HashMap<String, Tensor>, f64, usize)> {
    use candle_core::{DType, Var};
    use candle_nn::Optimizer;
    let device = Device::Cpu;
    let mut rng = mllm_protector::eval::SplitMix64(seed);
    let bound = (6.0 / (dim + 1) as f32).sqrt();
    let w0: Vec<f32> = (0..dim).map(|_| (rng.next_f32() * 2.0 - 1.0) * bound).collect();
    let w = Var::from_tensor(&Tensor::from_vec(w0, (1, dim), &device)?)?;
    let b = Var::from_tensor(&Tensor::zeros(1, DType::F32, &device)?)?;
    let logits = |x: &Tensor| -> candle_core::Result<Tensor> {
        x.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?.squeeze(1)
    };
    let mut opt = adamw(vec![w.clone(), b.clone()], lr)?;
    let mut best = (f64::MIN, 0usize, HashMap::new());
    for epoch in 1..=epochs {
        opt.backward_step(&loss(&logits)?)?;
        if epoch % 10 == 0 {
            let score = validate(&logits)?;
            if score > best.0 + 1e-5 {
                let tensors = HashMap::from([
                    ("layers.0.weight".to_string(), w.as_tensor().copy()?),
                    ("layers.0.bias".to_string(), b.as_tensor().copy()?),
                ]);
                best = (score, epoch, tensors);
            } else if epoch >= best.1 + 300 {
                break;
            }
        }
    }
    Ok((best.2, best.0, best.1))
}

/// Texts embedded window by window through a detector's encoder (cached, [`embed_cached`]), with each text's label.
pub struct Embedded {
    pub x: Tensor,
    pub owner: Vec<usize>,
    pub labels: Vec<bool>,
}

impl Embedded {
    pub fn new(
        detector: &mllm_protector::detector::EmbeddingDetector,
        texts: &[&str],
        labels: Vec<bool>,
        what: &str,
    ) -> anyhow::Result<Self> {
        let windowing = detector.head().metadata().encoder.windowing;
        let (x, owner) = embed_cached(detector.encoder().as_ref(), windowing, texts, what)?;
        Ok(Embedded { x, owner, labels })
    }

    /// A text's score is its highest window's, as the detector reads it.
    pub fn text_scores(&self, window_scores: &[f32]) -> Vec<f32> {
        let mut out = vec![f32::NEG_INFINITY; self.labels.len()];
        for (&o, &s) in self.owner.iter().zip(window_scores) {
            out[o] = out[o].max(s);
        }
        out
    }
}

/// [`train_logistic`] on `train` with each class carrying half the loss whatever its count, early-stopped on the
/// AUROC of `val`'s texts.
pub fn train_balanced_logistic(
    train: &Embedded,
    val: &Embedded,
    seed: u64,
    lr: f64,
    epochs: usize,
) -> anyhow::Result<(HashMap<String, Tensor>, f64, usize)> {
    let device = Device::Cpu;
    let positives = train.owner.iter().filter(|&&o| train.labels[o]).count().max(1) as f32;
    let negatives = (train.owner.len() as f32 - positives).max(1.0);
    let (y, weights): (Vec<f32>, Vec<f32>) = train
        .owner
        .iter()
        .map(|&o| {
            if train.labels[o] {
                (1.0, 0.5 / positives)
            } else {
                (0.0, 0.5 / negatives)
            }
        })
        .unzip();
    let (y, weights) = (Tensor::new(y, &device)?, Tensor::new(weights, &device)?);
    train_logistic(
        train.x.dim(1)?,
        seed,
        lr,
        epochs,
        |logits| weighted_bce(&logits(&train.x)?, &y, &weights),
        |logits| {
            let s = val.text_scores(&logits(&val.x)?.to_vec1::<f32>()?);
            Ok(mllm_protector::eval::auroc(&s, &val.labels).unwrap_or(0.0))
        },
    )
}

/// The logistic head of `tensors` over `detector`'s encoder, Platt-scaled on `val`'s text scores (monotone: the
/// ranking is unchanged), with its metadata (threshold still 0.5: the caller chooses it).
pub fn platt_scaled_beside(
    detector: &mllm_protector::detector::EmbeddingDetector,
    tensors: &HashMap<String, Tensor>,
    val: &Embedded,
    what: &str,
) -> anyhow::Result<(
    mllm_protector::detector::ClassifierHead,
    mllm_protector::detector::HeadMetadata,
)> {
    use mllm_protector::detector::ClassifierHead;
    let mut metadata = logistic_metadata_beside(detector);
    let raw = ClassifierHead::from_tensors(tensors.clone(), metadata.clone(), what)?;
    let val_logits = val.text_scores(&raw.logits(&val.x)?.to_vec1::<f32>()?);
    (metadata.temperature, metadata.logit_bias) = mllm_protector::eval::fit_platt(&val_logits, &val.labels);
    let head = ClassifierHead::from_tensors(tensors.clone(), metadata.clone(), what)?;
    Ok((head, metadata))
}

/// Writes the head of `tensors` and `metadata` to `out`, its encoder delta recorded as shared with `detector`'s.
pub fn write_beside(
    detector: &mllm_protector::detector::EmbeddingDetector,
    tensors: HashMap<String, Tensor>,
    metadata: mllm_protector::detector::HeadMetadata,
    what: &str,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let head = mllm_protector::detector::ClassifierHead::from_tensors(tensors, metadata, what)?;
    std::fs::write(out, share_delta(detector, head)?.to_bytes()?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Metadata of a logistic head over `detector`'s encoder (threshold 0.5, no calibration, no categories), whose
/// fine-tuned delta [`share_delta`] records as shared.
pub fn logistic_metadata_beside(
    detector: &mllm_protector::detector::EmbeddingDetector,
) -> mllm_protector::detector::HeadMetadata {
    let mut encoder = detector.head().metadata().encoder.clone();
    encoder.delta_sha256 = None; // recorded by `share_delta`
    mllm_protector::detector::HeadMetadata {
        format_version: mllm_protector::detector::head::FORMAT_VERSION,
        layer_sizes: vec![encoder.dim, 1],
        threshold: 0.5,
        temperature: 1.0,
        logit_bias: 0.0,
        encoder,
        context: Default::default(),
        categories: Vec::new(),
        training: serde_json::Value::Null,
        metrics: serde_json::Value::Null,
    }
}

/// `head`, reading through `detector`'s fine-tuned delta without storing it (`DeltaStorage::Shared`).
pub fn share_delta(
    detector: &mllm_protector::detector::EmbeddingDetector,
    head: mllm_protector::detector::ClassifierHead,
) -> anyhow::Result<mllm_protector::detector::ClassifierHead> {
    Ok(match detector.head().encoder_delta() {
        Some(delta) => head.with_encoder_delta(delta, mllm_protector::detector::DeltaStorage::Shared)?,
        None => head,
    })
}
