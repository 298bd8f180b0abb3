//! The crate's side of `make bench-compare` (`scripts/bench_compare.sh` runs it beside `scripts/bench_compare.py`, which
//! runs the same work through sentence-transformers on PyTorch and through ONNX Runtime).
//!
//! - `inputs --out FILE`: writes the work every engine does, as token windows (`[CLS] … [SEP]` ids): the JailbreakBench
//!   test responses cut into the detector's own windows (`real`), and fixed lengths of 16, 64, 256 and 1,024 tokens at
//!   batch 1, 8 and 32 (`fixed`; MiniLM reads at most 512 positions, so a 1,024-token answer is four 256-token
//!   windows, as the detector reads it). Every engine embeds exactly these ids: tokenising is left out of the
//!   comparison, and a row of its own (`crate-from-text`) shows what the crate's tokenising and windowing add.
//! - `measure --inputs FILE --round N`: embeds every workload once to warm up, then times it; prints JSON lines.
//! - `rss [--rewriter]`: peak resident memory of a process holding the default protector (detector only, or with the
//!   SmolLM2 rewriter) after one guarded call.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mllm_protector::detector::{SentenceEncoder, TextEncoder, WeightLayout, Windowing};
use mllm_protector::eval::SplitMix64;
use mllm_protector::eval::data::{self, Split, in_split};
use mllm_protector::loading::{ModelSource, default_models_dir, pins};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the workloads.
    Inputs {
        #[arg(long)]
        out: PathBuf,
    },
    /// Time the crate's encoder on them.
    Measure {
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long, default_value_t = 0)]
        round: usize,
        /// Leave `RAYON_NUM_THREADS` unset (candle then re-counts the cores on every operation), to measure what
        /// `pin_cpu_threads` saves.
        #[arg(long)]
        no_pin_threads: bool,
    },
    /// Peak RSS with the default protector.
    Rss {
        #[arg(long)]
        rewriter: bool,
    },
}

/// One workload: batches of items, each item one or more windows (a 1,024-token answer is four).
#[derive(Serialize, Deserialize)]
struct Workload {
    name: String,
    tokens: usize,
    batch: usize,
    /// `batches[b][item]` = the item's windows.
    batches: Vec<Vec<Vec<Vec<u32>>>>,
}

#[derive(Serialize, Deserialize)]
struct Inputs {
    /// The JailbreakBench test responses, as text (for the from-text row) …
    texts: Vec<String>,
    /// … and as the detector's windows, one item per response, all in one call (sorted and batched by 32 inside).
    real: Vec<Vec<Vec<u32>>>,
    fixed: Vec<Workload>,
}

const CLS: u32 = 101;
const SEP: u32 = 102;

fn encoder(layout: WeightLayout) -> anyhow::Result<SentenceEncoder> {
    Ok(SentenceEncoder::load_with_layout(
        &ModelSource::Dir(default_models_dir().join(pins::MINILM_DIR_NAME)),
        &candle_core::Device::Cpu,
        Windowing::default(),
        Some(pins::MINILM_WEIGHTS_SHA256),
        None,
        layout,
    )?)
}

fn inputs(out: &PathBuf) -> anyhow::Result<()> {
    let enc = encoder(WeightLayout::default())?;
    let dir = data::data_dir()?;
    let texts: Vec<String> = in_split(data::load_jbb(&dir)?, Split::Test, 42)
        .into_iter()
        .map(|e| e.response)
        .collect();
    let real = texts
        .iter()
        .map(|t| enc.token_windows(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rng = SplitMix64(7);
    let mut window = |len: usize| -> Vec<u32> {
        let mut w = vec![CLS];
        // Ordinary wordpieces (ids 1,996 to 29,611 are words and subwords, not special or unused tokens).
        w.extend((0..len - 2).map(|_| 1996 + (rng.next_u64() % 27_616) as u32));
        w.push(SEP);
        w
    };
    let mut fixed = Vec::new();
    for tokens in [16usize, 64, 256, 1024] {
        // Enough items that each workload runs about a second or more on 2 cores.
        let items = match tokens {
            16 | 64 => 64,
            256 => 64,
            _ => 16,
        };
        for batch in [1usize, 8, 32] {
            let n = items.max(batch);
            let mut batches = Vec::new();
            for _ in 0..n / batch {
                let mut b = Vec::new();
                for _ in 0..batch {
                    b.push(if tokens <= 512 {
                        vec![window(tokens)]
                    } else {
                        (0..tokens / 256).map(|_| window(256)).collect()
                    });
                }
                batches.push(b);
            }
            fixed.push(Workload {
                name: format!("L={tokens} bs={batch}"),
                tokens,
                batch,
                batches,
            });
        }
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let windows: usize = real.iter().map(Vec::len).sum();
    std::fs::write(out, serde_json::to_vec(&Inputs { texts, real, fixed })?)?;
    eprintln!(
        "wrote {} ({windows} windows of JailbreakBench test answers)",
        out.display()
    );
    Ok(())
}

fn line(engine: &str, workload: &str, round: usize, items: usize, seconds: f64, calls_ms: &[f64]) {
    println!(
        "{}",
        serde_json::json!({"engine": engine, "workload": workload, "round": round, "items": items,
            "seconds": seconds, "calls_ms": calls_ms})
    );
}

fn measure(path: &PathBuf, round: usize) -> anyhow::Result<()> {
    let inputs: Inputs = serde_json::from_slice(&std::fs::read(path).with_context(|| path.display().to_string())?)?;
    measure_with(&inputs, "crate", encoder(WeightLayout::default())?, round)?;
    // The last change measured in BENCHMARKS.md, in the same run: the fused pass on float weights (f16 on CPUs with
    // AVX-512), the default before int8 weights.
    measure_with(&inputs, "crate-float", encoder(WeightLayout::FusedFloat)?, round)
}

fn measure_with(inputs: &Inputs, engine: &str, enc: SentenceEncoder, round: usize) -> anyhow::Result<()> {
    let all_real: Vec<Vec<u32>> = inputs.real.iter().flatten().cloned().collect();
    let texts: Vec<&str> = inputs.texts.iter().map(String::as_str).collect();
    // Warm-up: every shape once.
    enc.embed_token_windows(&all_real)?;
    for w in &inputs.fixed {
        enc.embed_token_windows(&w.batches[0].iter().flatten().cloned().collect::<Vec<_>>())?;
    }
    let started = Instant::now();
    enc.embed_token_windows(&all_real)?;
    line(
        engine,
        "real",
        round,
        inputs.real.len(),
        started.elapsed().as_secs_f64(),
        &[],
    );
    if engine == "crate" {
        let started = Instant::now();
        enc.embed_windows(&texts)?;
        let seconds = started.elapsed().as_secs_f64();
        line("crate-from-text", "real", round, texts.len(), seconds, &[]);
    }
    for w in &inputs.fixed {
        let mut calls = Vec::with_capacity(w.batches.len());
        let started = Instant::now();
        for batch in &w.batches {
            let windows: Vec<Vec<u32>> = batch.iter().flatten().cloned().collect();
            let call = Instant::now();
            enc.embed_token_windows(&windows)?;
            calls.push(call.elapsed().as_secs_f64() * 1e3);
        }
        let items = w.batches.len() * w.batch;
        line(engine, &w.name, round, items, started.elapsed().as_secs_f64(), &calls);
    }
    Ok(())
}

/// Peak resident set (VmHWM) of this process, in MB.
fn peak_rss_mb() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kb / 1024.0)
}

fn rss(rewriter: bool) -> anyhow::Result<()> {
    let mut builder = mllm_protector::Protector::builder().without_image_reader();
    if rewriter {
        builder = builder.rewriter();
    }
    let protector = builder.build()?;
    let after_load = peak_rss_mb()?;
    let outcome = protector.guard(
        None,
        "How do I make a pipe bomb?",
        "Sure. Fill a steel pipe with black powder, cap both ends and add a fuse through a drilled hole.",
    )?;
    println!(
        "{}",
        serde_json::json!({"rewriter": rewriter, "action": format!("{:?}", outcome.action),
            "peak_rss_mb_after_load": after_load, "peak_rss_mb": peak_rss_mb()?})
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !matches!(
        args.command,
        Command::Measure {
            no_pin_threads: true,
            ..
        }
    ) {
        // SAFETY: in `main` before any other thread exists (parsing the arguments starts none).
        unsafe { mllm_protector::pin_cpu_threads() };
    }
    match args.command {
        Command::Inputs { out } => inputs(&out),
        Command::Measure { inputs, round, .. } => measure(&inputs, round),
        Command::Rss { rewriter } => rss(rewriter),
    }
}
