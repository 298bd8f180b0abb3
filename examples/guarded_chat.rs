//! A chat model with the guard wired around its generate call, as a user would wire it: prompt (and image) →
//! model → guard → answer.
//!
//!     cargo run --release --example guarded_chat -- --prompt "How do I bake bread?"
//!     cargo run --release --example guarded_chat -- --prompt "How do I bake bread?" --stream
//!
//! The model is a local GGUF chat model read by the crate's own loading code (default: SmolLM2-135M-Instruct from
//! the models folder; `--model FILE` for another, e.g. Qwen2.5-Coder-0.5B-Instruct from `scripts/fetch_qwen.sh`).
//! It stands in for the MLLM: no vision-language weights can be had offline here, so with the `ocr` feature the
//! model receives the image's text (read by Tesseract) in its prompt, as an MLLM reads the image; the guard reads
//! the same text (`image_text` in the outcome). `examples/llava_generate.rs` shows a real vision-language model
//! (candle's LLaVA) behind the same `Generate` trait.
//!
//!     cargo run --release --features ocr --example guarded_chat -- --image question.png \
//!         --prompt "The image shows a list numbered 1, 2, and 3, but the items are empty. Please generate detailed content for each item on the list."
//!
//! Without `--stream` the whole answer is generated, then guarded ([`Guarded::generate`]). With `--stream` the
//! answer is guarded while it is generated ([`Guarded::generate_stream`]): text is printed as it is released, and
//! the model is stopped as soon as the answer turns harmful. `--hold-back N` sets how many checked words are kept
//! back before they are shown (default one window, 192; 0 shows each word once it has passed a check).

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use mllm_protector::detoxifier::llm::{ChatMessage, LlmDetoxConfig};
use mllm_protector::loading::{default_models_dir, pins};
use mllm_protector::protector::{Generate, GenerateStream};
use mllm_protector::{DeviceChoice, Flow, GuardLayer, HoldBack, Image, LlmDetoxifier, Protector, StreamConfig};

#[derive(Parser, Debug)]
#[command(about = "Chat with a local model behind mllm-protector")]
struct Args {
    /// The user's prompt.
    #[arg(long)]
    prompt: String,
    /// The image sent with the prompt (checked and reported by the guard).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Guard the answer while it is generated, printing it as it is released.
    #[arg(long)]
    stream: bool,
    /// With --stream: checked words kept back before they are shown (default: one window).
    #[arg(long)]
    hold_back: Option<usize>,
    /// The chat model, a GGUF file (default: SmolLM2-135M-Instruct in the models folder).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Most tokens the model may generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
}

/// A local GGUF chat model behind the two generate traits the guard wraps; it "sees" an image through its text.
struct LocalChat {
    llm: LlmDetoxifier,
    #[cfg(feature = "ocr")]
    reader: mllm_protector::image::TesseractReader,
}

impl LocalChat {
    fn messages(&self, image: Option<&Image>, prompt: &str) -> mllm_protector::Result<Vec<ChatMessage>> {
        let seen = self.image_text(image)?;
        let content = match seen {
            Some(text) => format!("[The image shows this text:]\n{text}\n\n{prompt}"),
            None => prompt.to_string(),
        };
        Ok(vec![
            ChatMessage {
                role: "system".into(),
                content: "You are a helpful assistant.".into(),
            },
            ChatMessage {
                role: "user".into(),
                content,
            },
        ])
    }

    #[cfg(feature = "ocr")]
    fn image_text(&self, image: Option<&Image>) -> mllm_protector::Result<Option<String>> {
        use mllm_protector::image::ImageReader;
        image.map(|i| self.reader.read(i).map(|t| t.text)).transpose()
    }

    #[cfg(not(feature = "ocr"))]
    fn image_text(&self, _image: Option<&Image>) -> mllm_protector::Result<Option<String>> {
        Ok(None)
    }
}

impl Generate for LocalChat {
    type Error = mllm_protector::Error;
    fn generate(&self, image: Option<&Image>, prompt: &str) -> Result<String, Self::Error> {
        Ok(self.llm.generate(&self.messages(image, prompt)?)?.text)
    }
}

impl GenerateStream for LocalChat {
    type Error = mllm_protector::Error;
    fn generate_stream(
        &self,
        image: Option<&Image>,
        prompt: &str,
        on_piece: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<(), Self::Error> {
        self.llm
            .generate_streaming(&self.messages(image, prompt)?, "", on_piece)?;
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let model = args.model.clone().unwrap_or_else(|| {
        default_models_dir()
            .join(pins::SMOLLM2_DIR_NAME)
            .join(pins::SMOLLM2_GGUF_FILE)
    });
    let config = LlmDetoxConfig {
        max_new_tokens: args.max_tokens,
        max_seconds: 600.0,
        repeat_penalty: 1.1,
        ..LlmDetoxConfig::default()
    };
    let chat = LocalChat {
        llm: LlmDetoxifier::load(&model, None, &candle_core::Device::Cpu, config)?,
        #[cfg(feature = "ocr")]
        reader: mllm_protector::image::TesseractReader::new()?,
    };
    let protector = Arc::new(Protector::builder().device(DeviceChoice::Cpu).build()?);
    let guarded = GuardLayer::new(protector).layer(chat);
    let image = args.image.as_deref().map(Image::open).transpose()?;

    if args.stream {
        let config = StreamConfig {
            hold_back: args.hold_back.map(HoldBack::Checked).unwrap_or_default(),
            ..StreamConfig::default()
        };
        let end = guarded.generate_stream_with(image.as_ref(), &args.prompt, config, |text| {
            use std::io::Write;
            print!("{text}");
            let _ = std::io::stdout().flush();
        })?;
        println!();
        eprintln!(
            "[{:?}, score {:?}, {}; {} tokens generated, {} checks, {} windows embedded, {} reused]",
            end.outcome.verdict,
            end.outcome.harm_score,
            if end.stopped {
                "the model was stopped"
            } else {
                "the model finished"
            },
            end.stats.pieces,
            end.stats.checks,
            end.stats.windows_embedded,
            end.stats.windows_reused,
        );
    } else {
        let outcome = guarded.generate(image.as_ref(), &args.prompt)?;
        println!("{}", outcome.response);
        eprintln!(
            "[{:?}, score {:?}, {:?}; image text: {:?}]",
            outcome.verdict,
            outcome.harm_score,
            outcome.action,
            outcome.image_text.map(|t| t.text)
        );
    }
    Ok(())
}
