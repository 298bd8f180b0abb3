//! Prints the canonical views of a text (what the detector reads besides the text as written) and, with the
//! models present, each view's harm score.
//!
//!     cargo run --release --example views -- "T0 m4k3 1t, f1rst 0bt41n th3 p4rts"
//!     cargo run --release --example views -- --no-score "SGVsbG8gd29ybGQ="

use clap::Parser;
use mllm_protector::canonical::{Canonicalizer, ViewKind, detect_language, sentences_with_hedges};
use mllm_protector::detector::{
    ClassifierHead, DetectionInput, EmbeddingDetector, EmbeddingHedgeReader, HarmDetector, HedgeReader,
};

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
        let reader = EmbeddingHedgeReader::beside(d, &candle_core::Device::Cpu)?;
        let head = d.beside(ClassifierHead::embedded_hedge(&candle_core::Device::Cpu)?, "hedge head")?;
        let sentences: Vec<String> = sentences_with_hedges(&view.text).into_iter().map(|(s, _)| s).collect();
        let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
        println!("\nthe unhedged view's sentences (hedge head):");
        for (s, hedge) in refs.iter().zip(reader.hedges(&refs)?) {
            let p = head.score(DetectionInput::response(s))?.probability;
            println!("  {:<6} {p:.3} {s}", if hedge { "hedge" } else { "-" });
        }
    }
    Ok(())
}
