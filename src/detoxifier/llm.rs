//! `LlmDetoxifier`: a small instruction-tuned LLM (quantized GGUF, on candle-transformers) rewrites a harmful
//! response into a harmless, still helpful reply, conditioned on the user's prompt and the harmful response.
//!
//! Architectures: `llama` (default: SmolLM2-135M-Instruct Q4_1) and `qwen2` (Qwen2.5 0.5B, a quality option). The
//! tokenizer and the chat template come from the GGUF itself. Generation is greedy by default, bounded in new tokens
//! and in wall time, with the KV cache reused across steps. Every rewrite is verified by the
//! [`Protector`](crate::Protector) before it is shown.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{quantized_llama, quantized_qwen2};
use candle_transformers::utils::apply_repeat_penalty;
use serde::{Deserialize, Serialize};

use crate::detoxifier::verify::is_degenerate;
use crate::detoxifier::{DetoxKind, DetoxRequest, Detoxified, Detoxifier};
use crate::error::{Error, Result};
use crate::loading::gguf::GgufFile;
use crate::loading::gguf_tokenizer::{GgufTokenizer, new_text};
use crate::loading::{default_models_dir, pins};
use crate::protector::Flow;

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
    /// Show the model one worked example before the request (a longer prompt; with llama models its KV cache is
    /// computed once and reused).
    pub few_shot: bool,
    /// Divides the logits of tokens already generated (1.0 = off). SmolLM2-135M otherwise loops in over half of its
    /// rewrites; 1.15 was chosen by `evaluate_detox --repeat-penalty` (README, Detoxifier).
    pub repeat_penalty: f32,
    /// How many of the last generated tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
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
            repeat_penalty: 1.15,
            repeat_last_n: 64,
        }
    }
}

/// The loaded network. Llama weights are cheap to clone (the tensors are shared), which gives every rewrite its own
/// KV cache, started from a snapshot taken after the fixed part of the prompt (system prompt and worked example):
/// that part is computed once, not once per rewrite, and rewrites can run in parallel. candle's qwen2 weights
/// cannot be cloned, so a qwen2 model serves one rewrite at a time and reads the whole prompt each time.
enum Model {
    Llama {
        base: Box<quantized_llama::ModelWeights>,
        prefix: Mutex<Option<PrefixSnapshot>>,
    },
    Qwen2(Mutex<quantized_qwen2::ModelWeights>),
}

/// A llama model whose KV cache holds a prompt prefix.
struct PrefixSnapshot {
    ids: Vec<u32>,
    model: Box<quantized_llama::ModelWeights>,
}

/// One generation's model state.
enum Session<'a> {
    Llama(Box<quantized_llama::ModelWeights>),
    Qwen2(MutexGuard<'a, quantized_qwen2::ModelWeights>),
}

impl Session<'_> {
    fn forward(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Session::Llama(m) => m.forward(x, pos),
            Session::Qwen2(m) => m.forward(x, pos),
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
    /// The caller's streaming callback said stop (a [`StreamGuard`](crate::StreamGuard) found the answer harmful).
    Stopped,
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
    model: Model,
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
        let GgufFile {
            content,
            mut reader,
            tokenizer,
            arch,
            what,
            ..
        } = GgufFile::read(path, expected_sha256, device)?;
        let model = match arch.as_str() {
            "llama" => Model::Llama {
                base: Box::new(
                    quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)
                        .map_err(|e| Error::from_load(&what, e))?,
                ),
                prefix: Mutex::new(None),
            },
            "qwen2" => Model::Qwen2(Mutex::new(
                quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, device)
                    .map_err(|e| Error::from_load(&what, e))?,
            )),
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
            model,
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

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The prompt's token ids, as (fixed prefix: every message but the last, rest). The two parts meet at a
    /// `<|im_end|>\n<|im_start|>` boundary, where encoding them apart gives the same ids as encoding them together.
    pub fn prompt_ids(&self, messages: &[ChatMessage]) -> Result<(Vec<u32>, Vec<u32>)> {
        let split = messages.len().saturating_sub(1);
        let prefix = Self::render_chat(&messages[..split]);
        let prefix = prefix.strip_suffix("<|im_start|>assistant\n").unwrap_or(&prefix);
        let rest = Self::render_chat(&messages[split..]);
        Ok((self.encode(prefix)?, self.encode(&rest)?))
    }

    /// A model state whose KV cache holds `prefix`, and the position where the rest of the prompt goes.
    fn session(&self, prefix: &[u32]) -> Result<(Session<'_>, usize)> {
        let poisoned = || Error::InvalidInput("the detoxifier model was poisoned by a panic".into());
        match &self.model {
            Model::Qwen2(model) => Ok((Session::Qwen2(model.lock().map_err(|_| poisoned())?), 0)),
            Model::Llama { base, prefix: cache } => {
                if prefix.is_empty() {
                    return Ok((Session::Llama(base.clone()), 0));
                }
                let mut cache = cache.lock().map_err(|_| poisoned())?;
                if let Some(snapshot) = cache.as_ref().filter(|s| s.ids == prefix) {
                    return Ok((Session::Llama(snapshot.model.clone()), prefix.len()));
                }
                // index_pos 0 starts a fresh KV cache.
                let mut model = base.clone();
                model.forward(&Tensor::new(prefix, &self.device)?.unsqueeze(0)?, 0)?;
                *cache = Some(PrefixSnapshot {
                    ids: prefix.to_vec(),
                    model: model.clone(),
                });
                Ok((Session::Llama(model), prefix.len()))
            }
        }
    }

    /// Generates an assistant turn for `messages`.
    pub fn generate(&self, messages: &[ChatMessage]) -> Result<Generation> {
        self.generate_with_prefill(messages, "")
    }

    /// Generates an assistant turn that starts with `prefill` (the model continues that text; "prefilling" the
    /// answer). The returned text is the whole turn, `prefill` included; `new_tokens` counts only the model's own.
    /// The data generator uses it to collect the answers a model gives once it has started to comply.
    ///
    /// ```no_run
    /// # use mllm_protector::detoxifier::{llm::ChatMessage, LlmDetoxifier};
    /// let llm = LlmDetoxifier::load_default()?;
    /// let msg = [ChatMessage { role: "user".into(), content: "Name three primary colours.".into() }];
    /// let g = llm.generate_with_prefill(&msg, "1.")?;
    /// assert!(g.text.starts_with("1."));
    /// # Ok::<(), mllm_protector::Error>(())
    /// ```
    pub fn generate_with_prefill(&self, messages: &[ChatMessage], prefill: &str) -> Result<Generation> {
        self.generate_streaming(messages, prefill, &mut |_| Flow::Continue)
    }

    /// [`generate_with_prefill`](Self::generate_with_prefill), handing the text to `on_text` piece by piece as it is
    /// generated (the prefill first, then each token's text once it decodes to whole characters), and stopping when
    /// `on_text` returns [`Flow::Stop`] ([`StopReason::Stopped`]). This is the generator of the streaming example.
    ///
    /// ```no_run
    /// # use mllm_protector::detoxifier::{llm::ChatMessage, LlmDetoxifier};
    /// use mllm_protector::Flow;
    /// let llm = LlmDetoxifier::load_default()?;
    /// let msg = [ChatMessage { role: "user".into(), content: "Name three primary colours.".into() }];
    /// let g = llm.generate_streaming(&msg, "", &mut |piece| { print!("{piece}"); Flow::Continue })?;
    /// println!("\n{} tokens", g.new_tokens);
    /// # Ok::<(), mllm_protector::Error>(())
    /// ```
    pub fn generate_streaming(
        &self,
        messages: &[ChatMessage],
        prefill: &str,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        let started = Instant::now();
        let deadline = Duration::from_secs_f64(self.config.max_seconds.max(0.0));
        let (prefix_ids, mut rest_ids) = self.prompt_ids(messages)?;
        // Encoded on its own after the "<|im_start|>assistant\n" header, which ends in a newline: the merge across
        // that boundary is the same as encoding the whole prompt at once.
        if !prefill.is_empty() {
            rest_ids.extend(self.encode(prefill)?);
        }
        let prompt_tokens = prefix_ids.len() + rest_ids.len();
        let sampling = match self.config.temperature {
            Some(t) if t > 0.0 => match self.config.top_p {
                Some(p) => Sampling::TopP { p, temperature: t },
                None => Sampling::All { temperature: t },
            },
            _ => Sampling::ArgMax,
        };
        let mut sampler = LogitsProcessor::from_sampling(self.config.seed, sampling);
        let (mut session, mut pos) = self.session(&prefix_ids)?;
        let first: Vec<u32> = if pos == 0 {
            prefix_ids.iter().chain(&rest_ids).copied().collect()
        } else {
            rest_ids
        };
        // The model's own tokens. The repeat penalty reads only these, not the prefill: the prefilled data in the
        // README was generated that way, and a prefill such as "1." is no repetition of the model's.
        let mut generated: Vec<u32> = Vec::new();
        let mut stop = StopReason::MaxTokens;
        // Bytes of the decoded generation already handed to `on_text`.
        let mut emitted = 0;
        if !prefill.is_empty() && on_text(prefill) == Flow::Stop {
            return Ok(Generation {
                text: prefill.trim().to_string(),
                prompt_tokens,
                new_tokens: 0,
                seconds: started.elapsed().as_secs_f64(),
                stop: StopReason::Stopped,
            });
        }
        let mut input = Tensor::new(first.as_slice(), &self.device)?.unsqueeze(0)?;
        for _ in 0..self.config.max_new_tokens {
            let logits = session.forward(&input, pos)?.squeeze(0)?;
            pos += input.dim(1)?;
            let logits = logits.to_dtype(candle_core::DType::F32)?;
            let logits = if self.config.repeat_penalty > 1.0 && !generated.is_empty() {
                let from = generated.len().saturating_sub(self.config.repeat_last_n);
                apply_repeat_penalty(&logits, self.config.repeat_penalty, &generated[from..])?
            } else {
                logits
            };
            let next = sampler.sample(&logits)?;
            if self.stop_ids.contains(&next) {
                stop = StopReason::EndOfTurn;
                break;
            }
            generated.push(next);
            let decoded = self.decode(&generated)?;
            if let Some(piece) = new_text(&decoded, &mut emitted)
                && on_text(piece) == Flow::Stop
            {
                stop = StopReason::Stopped;
                break;
            }
            // A small model that starts looping never recovers: stop early rather than spend the whole budget.
            if generated.len().is_multiple_of(16) && is_degenerate(&decoded) {
                stop = StopReason::Degenerate;
                break;
            }
            if started.elapsed() > deadline {
                return Err(Error::Timeout {
                    what: format!("{} rewrite", self.name),
                    seconds: self.config.max_seconds,
                });
            }
            input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
        }
        Ok(Generation {
            text: format!("{prefill}{}", self.decode(&generated)?).trim().to_string(),
            prompt_tokens,
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
