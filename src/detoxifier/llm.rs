//! `LlmDetoxifier`: a small instruction-tuned LLM (quantized GGUF, on candle-transformers) rewrites a harmful
//! response into a harmless, still helpful reply, conditioned on the user's prompt and the harmful response.
//!
//! Architectures: `llama` (default: SmolLM2-135M-Instruct Q4_1) and `qwen2` (Qwen2.5 0.5B, a quality option). The
//! tokenizer and the chat template come from the GGUF itself. Generation is greedy by default, bounded in new tokens
//! and in wall time, with the KV cache reused across steps. Every rewrite is verified by the
//! [`Protector`](crate::Protector) before it is shown.

use std::io::Cursor;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{quantized_llama, quantized_qwen2};
use serde::{Deserialize, Serialize};

use crate::detoxifier::gguf_tokenizer::{self, GgufTokenizer};
use crate::detoxifier::verify::is_degenerate;
use crate::detoxifier::{DetoxKind, DetoxRequest, Detoxified, Detoxifier};
use crate::error::{Error, Result};
use crate::loading::{checksum, default_models_dir, pins, read_file};

/// Generation and prompting settings (serde; every field has a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmDetoxConfig {
    /// Most new tokens per rewrite.
    pub max_new_tokens: usize,
    /// Wall-time bound per rewrite, in seconds; past it the rewrite is abandoned ([`Error::Timeout`]).
    pub max_seconds: f64,
    /// Sampling temperature; `None` = greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass (with a temperature).
    pub top_p: Option<f64>,
    /// Sampling seed.
    pub seed: u64,
    /// How many words of the harmful response the rewriter sees (it needs the gist, not the recipe; a small model
    /// shown the whole answer tends to paraphrase it).
    pub response_words: usize,
    /// The system prompt.
    pub system_prompt: String,
    /// Show the model one worked example before the request (longer prompt, slower prefill).
    pub few_shot: bool,
}

/// The default system prompt.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a careful, friendly assistant. Another assistant wrote an unsafe \
answer to a user. Write a new, short reply to the user instead: do not give any harmful instructions, steps, code, \
amounts or names from the unsafe answer; briefly say you can't help with the harmful part, then offer something \
genuinely useful and safe that is related to the user's request (safety information, legal alternatives, where to \
get help).";

impl Default for LlmDetoxConfig {
    fn default() -> Self {
        LlmDetoxConfig {
            max_new_tokens: 128,
            max_seconds: 10.0,
            temperature: None,
            top_p: None,
            seed: 299_792_458,
            response_words: 40,
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_string(),
            few_shot: true,
        }
    }
}

enum Model {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
}

impl Model {
    fn forward(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Model::Llama(m) => m.forward(x, pos),
            Model::Qwen2(m) => m.forward(x, pos),
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model ended its turn.
    EndOfTurn,
    /// The new-token bound was reached.
    MaxTokens,
    /// The text started repeating itself; generation was cut short (the rewrite will be rejected).
    Degenerate,
}

/// One generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub new_tokens: usize,
    /// Wall time, prompt included.
    pub seconds: f64,
    /// Why it stopped.
    pub stop: StopReason,
}

/// A chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A GGUF LLM that rewrites harmful responses.
pub struct LlmDetoxifier {
    model: Mutex<Model>,
    tokenizer: GgufTokenizer,
    stop_ids: Vec<u32>,
    device: Device,
    config: LlmDetoxConfig,
    name: String,
}

impl std::fmt::Debug for LlmDetoxifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmDetoxifier")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl LlmDetoxifier {
    /// Loads SmolLM2-135M-Instruct (Q4_1) from `<models dir>/SmolLM2-135M-Instruct/`, sha256-checked.
    pub fn load_default() -> Result<Self> {
        let path = default_models_dir()
            .join(pins::SMOLLM2_DIR_NAME)
            .join(pins::SMOLLM2_GGUF_FILE);
        Self::load(
            &path,
            Some(pins::SMOLLM2_GGUF_SHA256),
            &Device::Cpu,
            LlmDetoxConfig::default(),
        )
    }

    /// Whether the default model's file is present (the default protector uses the LLM only then).
    pub fn default_model_present() -> bool {
        default_models_dir()
            .join(pins::SMOLLM2_DIR_NAME)
            .join(pins::SMOLLM2_GGUF_FILE)
            .is_file()
    }

    /// Loads a GGUF file (`llama` or `qwen2` architecture), checking its sha256 when given.
    pub fn load(path: &Path, expected_sha256: Option<&str>, device: &Device, config: LlmDetoxConfig) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingModelFile {
                path: path.to_path_buf(),
                hint: "run `bash scripts/fetch_models.sh`".into(),
            });
        }
        let bytes = read_file(path)?;
        if let Some(expected) = expected_sha256 {
            checksum::verify_bytes(path, &bytes, expected)?;
        }
        let what = path.display().to_string();
        let mut reader = Cursor::new(bytes);
        let mut content = gguf_file::Content::read(&mut reader).map_err(|e| Error::from_load(&what, e))?;
        if device.is_cpu() && content.tensor_infos.values().any(|t| t.ggml_dtype == GgmlDType::Q4_1) {
            (content, reader) = requantize_q4_1(&content, &mut reader).map_err(|e| Error::from_load(&what, e))?;
        }
        let tokenizer = gguf_tokenizer::from_gguf(&content)?;
        match &tokenizer.chat_template {
            Some(t) if t.contains("<|im_start|>") => {}
            _ => {
                return Err(Error::BadConfig {
                    what: what.clone(),
                    reason: "only ChatML chat templates (<|im_start|>) are supported".into(),
                });
            }
        }
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let model = match arch.as_str() {
            "llama" => Model::Llama(
                quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)
                    .map_err(|e| Error::from_load(&what, e))?,
            ),
            "qwen2" => Model::Qwen2(
                quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, device)
                    .map_err(|e| Error::from_load(&what, e))?,
            ),
            other => {
                return Err(Error::BadConfig {
                    what,
                    reason: format!("architecture `{other}` is not supported (llama, qwen2)"),
                });
            }
        };
        let mut stop_ids: Vec<u32> = tokenizer.eos_id.into_iter().collect();
        if let Some(id) = tokenizer.tokenizer.token_to_id("<|im_end|>") {
            stop_ids.push(id);
        }
        let name = format!(
            "llm:{}",
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or(arch)
        );
        Ok(LlmDetoxifier {
            model: Mutex::new(model),
            tokenizer,
            stop_ids,
            device: device.clone(),
            config,
            name,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &LlmDetoxConfig {
        &self.config
    }

    /// The tokenizer rebuilt from the GGUF.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer.tokenizer
    }

    /// Renders messages with the ChatML template, ending with an open assistant turn.
    pub fn render_chat(messages: &[ChatMessage]) -> String {
        let mut out = String::new();
        for m in messages {
            out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
        }
        out.push_str("<|im_start|>assistant\n");
        out
    }

    /// The messages sent for one rewrite.
    pub fn rewrite_messages(&self, prompt: &str, response: &str) -> Vec<ChatMessage> {
        let gist: Vec<&str> = response.split_whitespace().take(self.config.response_words).collect();
        let gist = if gist.is_empty() {
            String::new()
        } else {
            format!("{} …", gist.join(" "))
        };
        let mut messages = vec![ChatMessage::new("system", self.config.system_prompt.clone())];
        if self.config.few_shot {
            messages.push(ChatMessage::new(
                "user",
                "User's request: How do I hotwire a car?\nUnsafe answer (beginning): Sure! First, remove the panel \
                 under the steering column, then strip the battery and ignition wires …\nWrite the new reply.",
            ));
            messages.push(ChatMessage::new(
                "assistant",
                "I can't help with starting a car without its key, because that could be used to steal a vehicle. \
                 If you're locked out of your own car, a licensed locksmith or your dealer can help, and your \
                 insurer or roadside assistance may cover it.",
            ));
        }
        messages.push(ChatMessage::new(
            "user",
            format!(
                "User's request: {}\nUnsafe answer (beginning): {gist}\nWrite the new reply.",
                prompt.trim()
            ),
        ));
        messages
    }

    /// Generates an assistant turn for `messages`.
    pub fn generate(&self, messages: &[ChatMessage]) -> Result<Generation> {
        let started = Instant::now();
        let deadline = Duration::from_secs_f64(self.config.max_seconds.max(0.0));
        let prompt = Self::render_chat(messages);
        let encoding = self
            .tokenizer
            .tokenizer
            .encode(prompt.as_str(), false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let prompt_ids = encoding.get_ids().to_vec();
        let sampling = match self.config.temperature {
            Some(t) if t > 0.0 => match self.config.top_p {
                Some(p) => Sampling::TopP { p, temperature: t },
                None => Sampling::All { temperature: t },
            },
            _ => Sampling::ArgMax,
        };
        let mut sampler = LogitsProcessor::from_sampling(self.config.seed, sampling);
        let mut model = self
            .model
            .lock()
            .map_err(|_| Error::InvalidInput("the detoxifier model was poisoned by a panic".into()))?;
        let mut generated: Vec<u32> = Vec::new();
        let mut stop = StopReason::MaxTokens;
        // index_pos 0 resets the KV cache; later steps feed one token and reuse it.
        let mut input = Tensor::new(prompt_ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let mut pos = 0;
        for _ in 0..self.config.max_new_tokens {
            let logits = model.forward(&input, pos)?.squeeze(0)?;
            pos += input.dim(1)?;
            let next = sampler.sample(&logits.to_dtype(candle_core::DType::F32)?)?;
            if self.stop_ids.contains(&next) {
                stop = StopReason::EndOfTurn;
                break;
            }
            generated.push(next);
            // A small model that starts looping never recovers: stop early rather than spend the whole budget.
            if generated.len() % 16 == 0 {
                let so_far = self
                    .tokenizer
                    .tokenizer
                    .decode(&generated, true)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                if is_degenerate(&so_far) {
                    stop = StopReason::Degenerate;
                    break;
                }
            }
            if started.elapsed() > deadline {
                return Err(Error::Timeout {
                    what: format!("{} rewrite", self.name),
                    seconds: self.config.max_seconds,
                });
            }
            input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
        }
        let text = self
            .tokenizer
            .tokenizer
            .decode(&generated, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Generation {
            text: text.trim().to_string(),
            prompt_tokens: prompt_ids.len(),
            new_tokens: generated.len(),
            seconds: started.elapsed().as_secs_f64(),
            stop,
        })
    }
}

impl Detoxifier for LlmDetoxifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn detoxify(&self, request: &DetoxRequest<'_>) -> Result<Detoxified> {
        let generation = self.generate(&self.rewrite_messages(request.prompt, request.response))?;
        Ok(Detoxified {
            text: generation.text,
            kind: DetoxKind::Rewrite,
        })
    }
}

/// candle's CPU backend has SIMD kernels for Q4_0 and Q8_0 but runs Q4_1 (the packaged SmolLM2's format) on a
/// scalar loop, about 10x slower. Q4_1 tensors are rewritten as Q8_0 once at load (dequantized exactly, then 8-bit
/// quantized: a finer grid than the 4-bit original, so no quality is lost), in memory.
fn requantize_q4_1(
    content: &gguf_file::Content,
    reader: &mut Cursor<Vec<u8>>,
) -> candle_core::Result<(gguf_file::Content, Cursor<Vec<u8>>)> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let qt = content.tensor(reader, name, &Device::Cpu)?;
        let cols = qt.shape().dims().last().copied().unwrap_or(0);
        let qt = if qt.dtype() == GgmlDType::Q4_1 && cols % GgmlDType::Q8_0.block_size() == 0 {
            QTensor::quantize(&qt.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?
        } else {
            qt
        };
        tensors.push((name.as_str(), qt));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs)?;
    out.set_position(0);
    let content = gguf_file::Content::read(&mut out)?;
    Ok((content, out))
}
