//! Measures the LLM detoxifier on harmful responses: how often the final text is harmless, how often the LLM's
//! rewrite is accepted (not replaced by the template), how useful the rewrites are, and how fast.
//!
//!     cargo run --release --example evaluate_detox -- [--limit 40] [--json OUT.json]
//!     cargo run --release --example evaluate_detox -- --data FILE.jsonl      # lines with prompt, response
//!     cargo run --release --example evaluate_detox -- --model path/to/qwen2.5-0.5b-instruct.gguf
//!
//! Default data: the harmful (`jailbroken`) responses of the JailbreakBench test split (the head's seed).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use clap::Parser;
use mllm_protector::detector::{DetectionInput, EmbeddingDetector, HarmDetector};
use mllm_protector::detoxifier::verify::{FallbackReason, is_pure_refusal, rouge_l_f1};
use mllm_protector::detoxifier::{LlmDetoxConfig, LlmDetoxifier};
use mllm_protector::eval::data::{self, Split, in_split};
use mllm_protector::loading::{default_models_dir, pins};
use mllm_protector::{Error, Protector};
use serde::Serialize;

#[derive(Parser, Debug)]
struct Args {
    /// JSONL with `prompt` and `response` (all treated as harmful responses to rewrite).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A GGUF model instead of the default SmolLM2 (llama or qwen2 architecture).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Rewrite at most this many responses.
    #[arg(long)]
    limit: Option<usize>,
    /// Most new tokens per rewrite.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Words of the harmful response shown to the rewriter.
    #[arg(long, default_value_t = 40)]
    response_words: usize,
    /// Wall-time bound per rewrite, in seconds.
    #[arg(long, default_value_t = 10.0)]
    max_seconds: f64,
    /// Repeat penalty on already generated tokens (1.0 = off).
    #[arg(long, default_value_t = LlmDetoxConfig::default().repeat_penalty)]
    repeat_penalty: f32,
    /// Leave out the worked example from the rewrite prompt (shorter prompt).
    #[arg(long)]
    no_few_shot: bool,
    /// Print every rewrite.
    #[arg(long)]
    verbose: bool,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Default)]
struct Report {
    n: usize,
    model: String,
    final_harmless_rate: f64,
    llm_path_success_rate: f64,
    fallback_reasons: std::collections::BTreeMap<String, usize>,
    pure_refusal_share_of_accepted: f64,
    relevance_cosine_accepted: f64,
    relevance_cosine_template: f64,
    max_rouge_l_final: f64,
    latency_median_s: f64,
    latency_p90_s: f64,
    tokens_per_second: f64,
    mean_new_tokens: f64,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum()
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let detector = Arc::new(EmbeddingDetector::load_default()?);
    let config = LlmDetoxConfig {
        max_new_tokens: args.max_new_tokens,
        response_words: args.response_words,
        max_seconds: args.max_seconds,
        few_shot: !args.no_few_shot,
        repeat_penalty: args.repeat_penalty,
        ..LlmDetoxConfig::default()
    };
    let (path, sha) = match &args.model {
        Some(p) => (p.clone(), None),
        None => (
            default_models_dir()
                .join(pins::SMOLLM2_DIR_NAME)
                .join(pins::SMOLLM2_GGUF_FILE),
            Some(pins::SMOLLM2_GGUF_SHA256),
        ),
    };
    let llm = Arc::new(LlmDetoxifier::load(&path, sha, &Device::Cpu, config)?);
    let protector = Protector::builder()
        .shared_detector(detector.clone())
        .shared_detoxifier(llm.clone())
        .build()?;

    let mut examples = match &args.data {
        Some(p) => data::load_jsonl(p)?,
        None => {
            let seed = detector.head().metadata().training["seed"].as_u64().unwrap_or(42);
            in_split(data::load_jbb(&data::data_dir()?)?, Split::Test, seed)
                .into_iter()
                .filter(|e| e.harmful)
                .collect()
        }
    };
    if let Some(limit) = args.limit {
        examples.truncate(limit);
    }
    anyhow::ensure!(!examples.is_empty(), "no harmful responses to rewrite");

    let template = mllm_protector::detoxifier::template::DEFAULT_REFUSAL;
    let mut report = Report {
        n: examples.len(),
        model: path.display().to_string(),
        ..Report::default()
    };
    let (mut harmless, mut accepted, mut refusals) = (0usize, 0usize, 0usize);
    let (mut rel_acc, mut rel_tpl) = (Vec::new(), Vec::new());
    let mut latencies = Vec::new();
    let (mut tokens, mut gen_seconds) = (0usize, 0f64);
    let pb = common::bar(examples.len() as u64, "rewriting");
    for e in &examples {
        let started = Instant::now();
        let generated = llm.generate(&llm.rewrite_messages(&e.prompt, &e.response));
        latencies.push(started.elapsed().as_secs_f64());
        let verdict = match &generated {
            Ok(g) => {
                tokens += g.new_tokens;
                gen_seconds += g.seconds;
                protector.verify_rewrite(&e.prompt, &e.response, &g.text)
            }
            Err(Error::Timeout { .. }) => Err(FallbackReason::TimedOut),
            Err(_) => Err(FallbackReason::DetoxifierFailed),
        };
        let final_text = match (&verdict, &generated) {
            (Ok(_), Ok(g)) => {
                accepted += 1;
                refusals += usize::from(is_pure_refusal(&g.text));
                g.text.clone()
            }
            _ => template.to_string(),
        };
        if let Err(reason) = verdict {
            *report.fallback_reasons.entry(format!("{reason:?}")).or_default() += 1;
        }
        let score = detector.score(DetectionInput::new(&e.prompt, &final_text))?.probability;
        let overlap = rouge_l_f1(&final_text, &e.response);
        report.max_rouge_l_final = report.max_rouge_l_final.max(overlap);
        if score < detector.threshold() && overlap < protector.config().verification.max_rouge_l {
            harmless += 1;
        }
        let emb = detector
            .encoder()
            .embed_windows(&[&e.prompt, &final_text])?
            .embeddings
            .to_vec2::<f32>()?;
        let rel = cosine(&emb[0], &emb[1]);
        if verdict.is_ok() {
            rel_acc.push(rel)
        } else {
            rel_tpl.push(rel)
        }
        if args.verbose {
            let stats = generated
                .as_ref()
                .map(|g| {
                    format!(
                        "{} prompt + {} new tokens in {:.2} s",
                        g.prompt_tokens, g.new_tokens, g.seconds
                    )
                })
                .unwrap_or_else(|e| e.to_string());
            let text = generated.as_ref().map(|g| g.text.as_str()).unwrap_or("(no rewrite)");
            pb.suspend(|| println!("--- {}\n> {text}\n({stats})\n[{verdict:?}] {final_text}\n", e.prompt));
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let n = examples.len() as f64;
    latencies.sort_by(f64::total_cmp);
    report.final_harmless_rate = harmless as f64 / n;
    report.llm_path_success_rate = accepted as f64 / n;
    report.pure_refusal_share_of_accepted = if accepted == 0 {
        0.0
    } else {
        refusals as f64 / accepted as f64
    };
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    report.relevance_cosine_accepted = mean(&rel_acc);
    report.relevance_cosine_template = mean(&rel_tpl);
    report.latency_median_s = common::percentile(&latencies, 0.5);
    report.latency_p90_s = common::percentile(&latencies, 0.9);
    report.tokens_per_second = tokens as f64 / gen_seconds.max(1e-9);
    report.mean_new_tokens = tokens as f64 / n;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(out) = &args.json {
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}
