//! The main job: guard one MLLM response.
//!
//!     cargo run --release --example guard -- --prompt P --response R [--image FILE] [--json]
//!
//! Prints the verdict, the harm score and the text to show (JSON with `--json`:
//! `{"harm_score", "harmful", "action", "response", ...}`). Exit code 0 when it guarded (harmful or not), 2 with a
//! clear message on bad input (empty response, unreadable image, missing models).

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mllm_protector::canonical::ViewKind;
use mllm_protector::{DeviceChoice, FailurePolicy, Image, Protector, Verdict};

#[derive(Parser, Debug)]
#[command(about = "Guard one multimodal-LLM response with mllm-protector")]
struct Args {
    /// The user's prompt.
    #[arg(long, default_value = "")]
    prompt: String,
    /// The model's response to guard.
    #[arg(long)]
    response: String,
    /// The image sent with the prompt (PNG, JPEG, WebP, BMP, GIF).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Override the detector's threshold.
    #[arg(long)]
    threshold: Option<f32>,
    /// Rewrite harmful responses with the LLM rewriter (opt-in; default: the fixed template).
    #[arg(long)]
    rewriter: bool,
    /// Show the response unchanged when the detector cannot decide (default: fail closed).
    #[arg(long)]
    fail_open: bool,
    /// Folder with the models (default: $MLLM_PROTECTOR_MODELS or ./models).
    #[arg(long)]
    models_dir: Option<PathBuf>,
}

fn run(args: &Args) -> mllm_protector::Result<()> {
    let mut builder = Protector::builder().device(DeviceChoice::Cpu);
    if let Some(dir) = &args.models_dir {
        builder = builder.models_dir(dir);
    }
    if let Some(t) = args.threshold {
        builder = builder.threshold(t);
    }
    if args.rewriter {
        builder = builder.rewriter();
    }
    if args.fail_open {
        builder = builder.on_undecided(FailurePolicy::FailOpen);
    }
    let protector = builder.build()?;
    if !args.json {
        println!("detector:  {}", protector.detector().name());
        println!("rewriter:  {}", protector.detoxifier().name());
    }
    let image = args.image.as_ref().map(Image::open).transpose()?;
    let outcome = protector.guard(image.as_ref(), &args.prompt, &args.response)?;
    if args.json {
        let value = serde_json::json!({
            "harm_score": outcome.harm_score,
            "harmful": outcome.verdict == Verdict::Harmful,
            "verdict": outcome.verdict,
            "action": outcome.action,
            "response": outcome.response,
            "threshold": outcome.threshold,
            "detector": outcome.detector,
            "detoxifier": outcome.detoxifier,
            "fallback": outcome.fallback,
            "rewrite_score": outcome.rewrite_score,
            "note": outcome.note,
            "image": outcome.image,
            "view": outcome.view,
            "language": outcome.language,
            "category": outcome.category,
            "image_text": outcome.image_text,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
        );
    } else {
        let score = outcome
            .harm_score
            .map(|s| format!("{s:.4}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "verdict:   {:?} (harm score {score}, threshold {:.4})",
            outcome.verdict, outcome.threshold
        );
        println!("action:    {:?}", outcome.action);
        if outcome.view != ViewKind::Original {
            println!("read as:   {} (the view that scored highest)", outcome.view);
        }
        if let Some(language) = outcome.language {
            println!("language:  {}", language.eng_name());
        }
        if let Some(image) = &outcome.image {
            println!("image:     {}x{} {}", image.width, image.height, image.format);
        }
        if let Some(text) = &outcome.image_text {
            let used = if text.used { "used" } else { "not used" };
            println!("image text: {:?} ({used}, read by {})", text.text, text.reader);
        }
        if outcome.was_changed() {
            println!("by:        {}", outcome.detoxifier.as_deref().unwrap_or("-"));
        }
        if let Some(note) = &outcome.note {
            println!("note:      {note}");
        }
        println!("response:  {}", outcome.response);
    }
    Ok(())
}

fn main() -> ExitCode {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
