//! `Seq2SeqDetoxifier`: an encoder-decoder (T5 / flan-T5, candle-transformers' `t5`) that maps
//! "prompt + harmful response" to a harmless reply, as the design card's seq2seq rewriter.
//!
//! No T5 weights are available offline in this project's environment, so this rewriter is tested only for its
//! loading and generation plumbing, on a tiny randomly initialised T5 that the test writes itself
//! (`tests/seq2seq_plumbing.rs`); its output there is noise. With real weights (a folder or the hub, e.g.
//! `google/flan-t5-base`) it runs as is, and the protector verifies its rewrites like any other.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::t5;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::detoxifier::{DetoxKind, DetoxRequest, Detoxified, Detoxifier};
use crate::error::{Error, Result};
use crate::loading::{ModelSource, read_file};

/// Settings of the seq2seq rewriter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Seq2SeqConfig {
    /// Most new tokens per rewrite.
    pub max_new_tokens: usize,
    /// Wall-time bound per rewrite, in seconds.
    pub max_seconds: f64,
    /// Most input tokens (the input is cut there).
    pub max_input_tokens: usize,
    /// The instruction put before the prompt and response.
    pub instruction: String,
}

impl Default for Seq2SeqConfig {
    fn default() -> Self {
        Seq2SeqConfig {
            max_new_tokens: 128,
            max_seconds: 10.0,
            max_input_tokens: 512,
            instruction: "Rewrite the answer so that it is harmless and still helpful.".into(),
        }
    }
}

/// A T5 rewriter.
pub struct Seq2SeqDetoxifier {
    model: Mutex<t5::T5ForConditionalGeneration>,
    tokenizer: Tokenizer,
    config: t5::Config,
    settings: Seq2SeqConfig,
    device: Device,
}

impl std::fmt::Debug for Seq2SeqDetoxifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seq2SeqDetoxifier")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Seq2SeqDetoxifier {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from a folder or the hub.
    pub fn load(source: &ModelSource, device: &Device, settings: Seq2SeqConfig) -> Result<Self> {
        let config_path = source.resolve("config.json")?;
        let config: t5::Config = serde_json::from_slice(&read_file(&config_path)?).map_err(|e| Error::BadConfig {
            what: config_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let tokenizer_path = source.resolve("tokenizer.json")?;
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let weights_path = source.resolve("model.safetensors")?;
        let what = weights_path.display().to_string();
        let vb = VarBuilder::from_buffered_safetensors(read_file(&weights_path)?, DType::F32, device)
            .map_err(|e| Error::from_load(&what, e))?;
        let model = t5::T5ForConditionalGeneration::load(vb, &config).map_err(|e| Error::from_load(&what, e))?;
        Ok(Seq2SeqDetoxifier {
            model: Mutex::new(model),
            tokenizer,
            config,
            settings,
            device: device.clone(),
        })
    }

    /// Greedy decoding of the reply to `input`; returns the text and the number of new tokens.
    pub fn generate(&self, input: &str) -> Result<(String, usize)> {
        let started = Instant::now();
        let deadline = Duration::from_secs_f64(self.settings.max_seconds.max(0.0));
        let encoding = self
            .tokenizer
            .encode(input, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        ids.truncate(self.settings.max_input_tokens);
        if ids.is_empty() {
            return Err(Error::InvalidInput("nothing to rewrite".into()));
        }
        let mut model = self
            .model
            .lock()
            .map_err(|_| Error::InvalidInput("the seq2seq model was poisoned by a panic".into()))?;
        model.clear_kv_cache();
        let input_ids = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let encoded = model.encode(&input_ids)?;
        let start = self.config.decoder_start_token_id.unwrap_or(self.config.pad_token_id) as u32;
        let eos = self.config.eos_token_id as u32;
        let mut output: Vec<u32> = Vec::new();
        let mut next = start;
        for _ in 0..self.settings.max_new_tokens {
            // With the decoder's KV cache, each step feeds only the newest token.
            let step = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
            let logits = model.decode(&step, &encoded)?.squeeze(0)?;
            next = logits.argmax(0)?.to_scalar::<u32>()?;
            if next == eos {
                break;
            }
            output.push(next);
            if started.elapsed() > deadline {
                return Err(Error::Timeout {
                    what: "seq2seq rewrite".into(),
                    seconds: self.settings.max_seconds,
                });
            }
        }
        model.clear_kv_cache();
        let text = self
            .tokenizer
            .decode(&output, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok((text.trim().to_string(), output.len()))
    }
}

impl Detoxifier for Seq2SeqDetoxifier {
    fn name(&self) -> &str {
        "seq2seq:t5"
    }

    fn detoxify(&self, request: &DetoxRequest<'_>) -> Result<Detoxified> {
        let input = format!(
            "{}\nQuestion: {}\nAnswer: {}",
            self.settings.instruction, request.prompt, request.response
        );
        let (text, _) = self.generate(&input)?;
        Ok(Detoxified {
            text,
            kind: DetoxKind::Rewrite,
        })
    }
}
