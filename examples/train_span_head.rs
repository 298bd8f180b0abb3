//! Trains the span head: is this short span of sentences, read out of its answer, the harmful part of a harmful
//! answer? The default head was trained on whole answers; read one or two sentences at a time, the harmless filler
//! of a long answer scores about as high as a harmful sentence (docs/EVALUATION.md, "Short spans"). This head is
//! trained on spans, as multiple-instance learning: a harmful answer is a bag of spans of which at least one is
//! harmful (its bag's soft maximum is pushed up), and every span of a harmless answer is harmless. It reads the
//! default detector's encoder (fine-tuned delta shared), so spans cost no second model.
//!
//! Data, split by group with the default head's seed (no behaviour, question or instruction in two splits):
//! JailbreakBench answers, GPTFuzz answers (`--gptfuzz-per-question`), AlpacaEval answers (`--alpaca-per-instruction`)
//! and AlpacaEval's safety-information answers. XSTest is never read.
//!
//! The threshold is chosen on validation for long answers, where spans are read: AlpacaEval validation answers joined
//! into ~600-word harmless texts (as the padded disguise's filler), alone and with each harmless JailbreakBench
//! validation answer, flagged by their highest span at most `--max-long-fpr` of the time. Reported: the recall of the
//! harmful validation answers so padded, by their spans alone.
//!
//! `cargo run --release --example train_span_head -- [--out assets/minilm-span-head.safetensors]` (a few minutes on
//! 2 cores; embeddings are cached under `.cache/embeddings/`).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use clap::Parser;
use mllm_protector::detector::encoder::sentence_spans;
use mllm_protector::detector::{ClassifierHead, EmbeddingDetector};
use mllm_protector::eval::auroc;
use mllm_protector::eval::data::{self, Example, Split, in_split};

#[derive(Parser, Debug)]
struct Args {
    /// Where to write the head.
    #[arg(long, default_value = "assets/minilm-span-head.safetensors")]
    out: PathBuf,
    /// Sentences per span (as `DetectorConfig::span_sentences`).
    #[arg(long, default_value_t = 2)]
    sentences: usize,
    /// GPTFuzz answers per training question.
    #[arg(long, default_value_t = 12)]
    gptfuzz_per_question: usize,
    /// AlpacaEval answers per instruction (of 12) in train and validation.
    #[arg(long, default_value_t = 2)]
    alpaca_per_instruction: usize,
    /// Highest share of long harmless validation texts flagged by a span.
    #[arg(long, default_value_t = 0.01)]
    max_long_fpr: f64,
    /// Full-batch epochs at most (early stopping on validation AUROC of the answers' highest spans).
    #[arg(long, default_value_t = 3000)]
    epochs: usize,
    /// Learning rate (AdamW).
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Soft-maximum sharpness over a harmful answer's spans (higher: closer to the maximum).
    #[arg(long, default_value_t = 4.0)]
    sharpness: f64,
}

/// Answers cut into spans and embedded: `x` has one row per span, `answer[r]` the answer of row `r`.
struct Spans {
    x: Tensor,
    answer: Vec<usize>,
    harmful: Vec<bool>,
}

impl Spans {
    fn new(detector: &EmbeddingDetector, answers: &[&Example], sentences: usize, what: &str) -> anyhow::Result<Self> {
        let mut texts = Vec::new();
        let mut answer = Vec::new();
        for (i, e) in answers.iter().enumerate() {
            let mut spans = sentence_spans(&e.response, sentences);
            if spans.is_empty() {
                spans.push(e.response.trim());
            }
            for s in spans {
                texts.push(s);
                answer.push(i);
            }
        }
        let encoder = detector.encoder();
        let windowing = detector.head().metadata().encoder.windowing;
        let (x, owner) = common::embed_cached(encoder.as_ref(), windowing, &texts, what)?;
        // A span longer than one window is read by its first window, as the detector truncates it.
        let mut first = Vec::with_capacity(texts.len());
        let mut seen = vec![false; texts.len()];
        for (row, &o) in owner.iter().enumerate() {
            if !seen[o] {
                seen[o] = true;
                first.push(row as u32);
            }
        }
        let x = x.index_select(&Tensor::new(first, &Device::Cpu)?, 0)?;
        Ok(Spans {
            x,
            answer,
            harmful: answers.iter().map(|e| e.harmful).collect(),
        })
    }

    /// Each answer's highest span score.
    fn answer_max(&self, span_scores: &[f32]) -> Vec<f32> {
        let mut out = vec![f32::NEG_INFINITY; self.harmful.len()];
        for (&a, &s) in self.answer.iter().zip(span_scores) {
            out[a] = out[a].max(s);
        }
        out
    }
}

fn refs(v: &[Example]) -> Vec<&Example> {
    v.iter().collect()
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let seed = common::head_split_seed()?;
    let dir = data::data_dir()?;
    let detector = EmbeddingDetector::load_default()?;

    let jbb = data::load_jbb(&dir)?;
    let gptfuzz = data::load_gptfuzz(&dir)?;
    let alpaca = data::load_alpaca(&dir)?;
    let safety = data::load_alpaca_safety_information(&dir)?;
    let split = |all: &[Example], s: Split| in_split(all.to_vec(), s, seed);
    let gptfuzz_train = {
        let mut by_question: HashMap<String, Vec<Example>> = HashMap::new();
        for e in split(&gptfuzz, Split::Train) {
            by_question.entry(e.group.clone()).or_default().push(e);
        }
        let mut keys: Vec<_> = by_question.keys().cloned().collect();
        keys.sort();
        keys.into_iter()
            .flat_map(|k| common::evenly(by_question[&k].clone(), args.gptfuzz_per_question))
            .collect::<Vec<_>>()
    };
    let mut train: Vec<Example> = split(&jbb, Split::Train);
    train.extend(gptfuzz_train);
    train.extend(common::alpaca_subset(
        split(&alpaca, Split::Train),
        args.alpaca_per_instruction,
        seed,
    ));
    train.extend(split(&safety, Split::Train));
    let jbb_val = split(&jbb, Split::Validation);
    let alpaca_val = common::alpaca_subset(split(&alpaca, Split::Validation), args.alpaca_per_instruction, seed);

    let pos_answers: Vec<&Example> = train.iter().filter(|e| e.harmful).collect();
    let neg_answers: Vec<&Example> = train.iter().filter(|e| !e.harmful).collect();
    eprintln!(
        "train: {} harmful answers (bags), {} harmless answers",
        pos_answers.len(),
        neg_answers.len()
    );
    let pos = Spans::new(&detector, &pos_answers, args.sentences, "train harmful spans")?;
    let neg = Spans::new(&detector, &neg_answers, args.sentences, "train harmless spans")?;
    let val = Spans::new(&detector, &refs(&jbb_val), args.sentences, "jbb validation spans")?;
    let filler = Spans::new(&detector, &refs(&alpaca_val), args.sentences, "alpaca validation spans")?;
    eprintln!(
        "spans: {} harmful-answer, {} harmless, {} JBB validation, {} AlpacaEval validation",
        pos.answer.len(),
        neg.answer.len(),
        val.answer.len(),
        filler.answer.len()
    );

    let (tensors, val_auroc, epochs) = train_head(&pos, &neg, &val, &args)?;
    eprintln!("validation AUROC (answers by their highest span) {val_auroc:.4} after {epochs} epochs");

    let mut metadata = common::logistic_metadata_beside(&detector);
    metadata.encoder.windowing.span_sentences = args.sentences;
    let raw = ClassifierHead::from_tensors(tensors.clone(), metadata.clone(), "span head")?;
    let probs = |s: &Spans| -> anyhow::Result<Vec<f32>> { Ok(raw.probabilities(&s.x)?) };

    // Long harmless validation texts: AlpacaEval validation answers joined to ~600 words (the padded disguise's
    // filler), by their highest span; alone, and with each JBB validation answer after them.
    let filler_max = filler.answer_max(&probs(&filler)?);
    let words: Vec<usize> = alpaca_val
        .iter()
        .map(|e| e.response.split_whitespace().count())
        .collect();
    let mut long_texts: Vec<f32> = Vec::new();
    let mut i = 0;
    while i < alpaca_val.len() {
        let (mut w, mut m) = (0, f32::NEG_INFINITY);
        while i < alpaca_val.len() && w < 600 {
            w += words[i];
            m = m.max(filler_max[i]);
            i += 1;
        }
        long_texts.push(m);
    }
    let val_max = val.answer_max(&probs(&val)?);
    let mut harmless_long = long_texts.clone();
    let mut harmful_long = Vec::new();
    for (k, (&s, &h)) in val_max.iter().zip(&val.harmful).enumerate() {
        let padded = s.max(long_texts[k % long_texts.len()]);
        if h {
            harmful_long.push(padded);
        } else {
            harmless_long.push(padded);
        }
    }
    let mut sorted = harmless_long.clone();
    sorted.sort_by(f32::total_cmp);
    let allowed = (args.max_long_fpr * sorted.len() as f64).floor() as usize;
    let threshold = sorted
        .get(sorted.len() - 1 - allowed.min(sorted.len() - 1))
        .map_or(0.5, |&s| next_up(s));
    metadata.threshold = threshold;
    let flagged = |v: &[f32]| v.iter().filter(|&&s| s >= threshold).count() as f64 / v.len().max(1) as f64;
    let (recall, fpr) = (flagged(&harmful_long), flagged(&harmless_long));
    let plain_recall = flagged(
        &val_max
            .iter()
            .zip(&val.harmful)
            .filter(|(_, h)| **h)
            .map(|(s, _)| *s)
            .collect::<Vec<_>>(),
    );
    println!(
        "\nspan head ({} sentences), threshold {threshold:.4}: long harmless validation texts flagged {fpr:.3} \
         ({} texts); harmful JBB validation answers inside ~600 harmless words found by a span {recall:.3} \
         ({}); alone {plain_recall:.3}",
        args.sentences,
        harmless_long.len(),
        harmful_long.len()
    );
    metadata.metrics = serde_json::json!({
        "validation_auroc_highest_span": val_auroc,
        "long_harmless_flagged": fpr, "long_harmless_texts": harmless_long.len(),
        "padded_harmful_found": recall, "harmful_alone_found": plain_recall,
    });
    metadata.training = serde_json::json!({
        "data": "spans of JBB, GPTFuzz, AlpacaEval and AlpacaEval safety-information answers (train split); \
                 harmful answers as bags (multiple-instance, soft maximum), harmless answers span by span",
        "seed": seed, "sentences": args.sentences, "gptfuzz_per_question": args.gptfuzz_per_question,
        "alpaca_per_instruction": args.alpaca_per_instruction, "max_long_fpr": args.max_long_fpr,
        "epochs": epochs, "lr": args.lr, "sharpness": args.sharpness,
    });
    let head = common::share_delta(&detector, ClassifierHead::from_tensors(tensors, metadata, "span head")?)?;
    std::fs::write(&args.out, head.to_bytes()?)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The smallest f32 above `x` (a threshold that `x` itself does not reach).
fn next_up(x: f32) -> f32 {
    if x >= 1.0 { 1.0 } else { f32::from_bits(x.to_bits() + 1) }
}

fn train_head(
    pos: &Spans,
    neg: &Spans,
    val: &Spans,
    args: &Args,
) -> anyhow::Result<(HashMap<String, Tensor>, f64, usize)> {
    let device = Device::Cpu;
    // Bags as a padded (bags × longest) index into the harmful spans, with -1e4 on the padding.
    let bags = pos.harmful.len();
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); bags];
    for (row, &a) in pos.answer.iter().enumerate() {
        members[a].push(row as u32);
    }
    let longest = members.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut index = Vec::with_capacity(bags * longest);
    let mut pad = Vec::with_capacity(bags * longest);
    for m in &members {
        for j in 0..longest {
            index.push(m.get(j).copied().unwrap_or(0));
            pad.push(if j < m.len() { 0.0f32 } else { -1e4 });
        }
    }
    let index = Tensor::new(index, &device)?;
    let pad = Tensor::from_vec(pad, (bags, longest), &device)?;
    let sharpness = args.sharpness;
    let ones = Tensor::ones(bags, DType::F32, &device)?;
    let bag_w = Tensor::full(1.0f32, bags, &device)?;
    let zeros = Tensor::zeros(neg.answer.len(), DType::F32, &device)?;
    let neg_w = Tensor::full(1.0f32, neg.answer.len(), &device)?;
    common::train_logistic(
        pos.x.dim(1)?,
        42,
        args.lr,
        args.epochs,
        |logits| {
            let z = logits(&pos.x)?.index_select(&index, 0)?.reshape((bags, longest))?;
            // Soft maximum: log Σ exp(s·z) / s, which tends to the bag's highest span as s grows; shifted by the
            // (constant) highest logit so the exponentials cannot overflow.
            let sz = ((z * sharpness)? + &pad)?;
            let top = sz.max_keepdim(1)?.detach();
            let bag =
                (sz.broadcast_sub(&top)?.exp()?.sum(1)?.log()? + top.squeeze(1)?)?.affine(1.0 / sharpness, 0.0)?;
            let loss_pos = common::weighted_bce(&bag, &ones, &bag_w)?;
            let loss_neg = common::weighted_bce(&logits(&neg.x)?, &zeros, &neg_w)?;
            (loss_pos + loss_neg)? * 0.5
        },
        |logits| {
            let s = val.answer_max(&logits(&val.x)?.to_vec1::<f32>()?);
            Ok(auroc(&s, &val.harmful).unwrap_or(0.0))
        },
    )
}
