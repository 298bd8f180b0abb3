//! Prints the canonical views of a text (what the detector reads besides the text as written) and, with the
//! models present, each view's harm score.
//!
//!     cargo run --release --example views -- "T0 m4k3 1t, f1rst 0bt41n th3 p4rts"
//!     cargo run --release --example views -- --no-score "SGVsbG8gd29ybGQ="

use clap::Parser;
use mllm_protector::canonical::{Canonicalizer, ViewKind, detect_language, sentences_with_hedges};
use mllm_protector::detector::{ClassifierHead, DetectionInput, EmbeddingDetector, HarmDetector};

#[derive(Parser, Debug)]
struct Args {
    /// The text to read.
    text: String,
    /// Only print the views (no model needed).
    #[arg(long)]
    no_score: bool,
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let views = Canonicalizer::default().views(&args.text);
    let language = detect_language(&args.text);
    println!("language: {}", language.map(|l| l.eng_name()).unwrap_or("not named"));
    let detector = if args.no_score {
        None
    } else {
        Some(EmbeddingDetector::load_default()?)
    };
    let score = |text: &str| -> anyhow::Result<String> {
        Ok(match &detector {
            Some(d) => format!("{:.4}", d.score(DetectionInput::response(text))?.probability),
            None => "-".into(),
        })
    };
    println!("{:<11} {:>7}  text", "view", "score");
    println!("{:<11} {:>7}  {}", "original", score(&args.text)?, args.text);
    for view in &views {
        println!("{:<11} {:>7}  {}", view.kind.name(), score(&view.text)?, view.text);
    }
    // The unhedged view's sentences as the hedge head reads them (the detector reads the view once more without
    // the ones it calls hedges).
    if let (Some(d), Some(view)) = (&detector, views.iter().find(|v| v.kind == ViewKind::Unhedged)) {
        let head = d.beside(ClassifierHead::embedded_hedge(&candle_core::Device::Cpu)?, "hedge head")?;
        let sentences: Vec<String> = sentences_with_hedges(&view.text).into_iter().map(|(s, _)| s).collect();
        let inputs: Vec<DetectionInput<'_>> = sentences.iter().map(|s| DetectionInput::response(s)).collect();
        println!(
            "\nthe unhedged view's sentences (hedge head, threshold {:.2}):",
            head.threshold()
        );
        for (s, score) in sentences.iter().zip(head.score_batch(&inputs)?) {
            let p = score.probability;
            println!("  {:<6} {p:.3} {s}", if p >= head.threshold() { "hedge" } else { "-" });
        }
    }
    Ok(())
}
