//! How a real vision-language model plugs into the guard: candle-transformers' LLaVA behind the crate's
//! [`Generate`] trait, wrapped by a [`GuardLayer`]. No LLaVA weights can be had offline where this crate is
//! developed, so this example is compiled by the test suite but only runs where the weights are:
//!
//!     cargo run --release --example llava_generate -- --model-dir DIR --image question.png --prompt "..."
//!
//! `DIR` holds an original-format LLaVA checkpoint (e.g. `liuhaotian/llava-v1.6-vicuna-7b`): `config.json`,
//! `tokenizer.json` and `*.safetensors`. The prompt may contain `<image>` where the image goes (default: before it).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::Cache;
use candle_transformers::models::llava::LLaVA;
use candle_transformers::models::llava::config::LLaVAConfig;
use clap::Parser;
use mllm_protector::protector::Generate;
use mllm_protector::{GuardLayer, Image, Protector};
use tokenizers::Tokenizer;

#[derive(Parser, Debug)]
struct Args {
    /// Folder of an original-format LLaVA checkpoint (config.json, tokenizer.json, *.safetensors).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// The image.
    #[arg(long)]
    image: Option<PathBuf>,
    /// The prompt.
    #[arg(long, default_value = "<image>\nWhat does this image say?")]
    prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
}

/// LLaVA as a generate call: image and prompt in, answer out.
struct Llava {
    model: LLaVA,
    config: LLaVAConfig,
    tokenizer: Tokenizer,
    device: Device,
    max_tokens: usize,
}

impl Llava {
    fn load(dir: &Path, max_tokens: usize) -> anyhow::Result<Self> {
        let device = Device::Cpu;
        let config: LLaVAConfig = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(anyhow::Error::msg)?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        // SAFETY: the files are memory-mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &device)? };
        let model = LLaVA::load(vb, &config, None)?;
        Ok(Llava {
            model,
            config,
            tokenizer,
            device,
            max_tokens,
        })
    }

    /// CLIP preprocessing: 336×336, RGB, scaled to [0, 1], normalised with CLIP's mean and deviation.
    fn image_tensor(&self, image: &Image) -> anyhow::Result<(Tensor, (u32, u32))> {
        let img = image::load_from_memory(image.bytes())?;
        let size = (img.width(), img.height());
        let img = img
            .resize_exact(336, 336, image::imageops::FilterType::CatmullRom)
            .to_rgb8();
        let data = Tensor::from_vec(img.into_raw(), (336, 336, 3), &self.device)?.permute((2, 0, 1))?;
        let mean = Tensor::new(&[0.481_454_66f32, 0.457_827_5, 0.408_210_73], &self.device)?.reshape((3, 1, 1))?;
        let std = Tensor::new(&[0.268_629_54f32, 0.261_302_6, 0.275_777_1], &self.device)?.reshape((3, 1, 1))?;
        let pixels = (data.to_dtype(DType::F32)? / 255.0)?
            .broadcast_sub(&mean)?
            .broadcast_div(&std)?;
        Ok((pixels.unsqueeze(0)?, size))
    }

    /// Token ids with the image placeholder where `<image>` stands.
    fn prompt_ids(&self, prompt: &str) -> anyhow::Result<Vec<i64>> {
        let prompt = if prompt.contains("<image>") {
            prompt.to_string()
        } else {
            format!("<image>\n{prompt}")
        };
        let mut ids = vec![self.config.bos_token_id as i64];
        for (i, chunk) in prompt.split("<image>").enumerate() {
            if i > 0 {
                ids.push(self.config.image_token_index as i64);
            }
            let encoding = self.tokenizer.encode(chunk, false).map_err(anyhow::Error::msg)?;
            ids.extend(encoding.get_ids().iter().map(|&t| i64::from(t)));
        }
        Ok(ids)
    }

    fn answer(&self, image: Option<&Image>, prompt: &str) -> anyhow::Result<String> {
        let image = image.ok_or_else(|| anyhow::anyhow!("LLaVA needs an image"))?;
        let (pixels, size) = self.image_tensor(image)?;
        let ids = Tensor::new(self.prompt_ids(prompt)?, &self.device)?.unsqueeze(0)?;
        let mut embeds = self
            .model
            .prepare_inputs_labels_for_multimodal(&ids, &[pixels], &[size])?;
        let mut cache = Cache::new(true, DType::F32, &self.config.to_llama_config(), &self.device)?;
        let (mut position, mut generated) = (0, Vec::new());
        for _ in 0..self.max_tokens {
            let len = embeds.dim(1)?;
            let logits = self.model.forward(&embeds, position, &mut cache)?;
            position += len;
            let logits = logits.squeeze(0)?;
            let logits = if logits.rank() == 2 {
                logits.i(logits.dim(0)? - 1)?
            } else {
                logits
            };
            let next = logits.argmax(0)?.to_scalar::<u32>()?;
            if next as usize == self.config.eos_token_id {
                break;
            }
            generated.push(next);
            embeds = self
                .model
                .llama
                .embed(&Tensor::new(&[next], &self.device)?)?
                .unsqueeze(0)?;
        }
        self.tokenizer.decode(&generated, true).map_err(anyhow::Error::msg)
    }
}

impl Generate for Llava {
    type Error = anyhow::Error;
    fn generate(&self, image: Option<&Image>, prompt: &str) -> Result<String, Self::Error> {
        self.answer(image, prompt)
    }
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let (Some(dir), Some(image)) = (&args.model_dir, &args.image) else {
        eprintln!(
            "llava_generate: pass --model-dir (a LLaVA checkpoint) and --image; no LLaVA weights ship with the \
             crate, so this example only shows the wiring where none are at hand"
        );
        return Ok(());
    };
    let llava = Llava::load(dir, args.max_tokens)?;
    let guarded = GuardLayer::new(Arc::new(Protector::new()?)).layer(llava);
    let outcome = guarded.generate(Some(&Image::open(image)?), &args.prompt)?;
    println!("{}", outcome.response);
    eprintln!("[{:?}, score {:?}]", outcome.verdict, outcome.harm_score);
    Ok(())
}
