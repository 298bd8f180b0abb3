//! The paper-faithful detector's features: a decoder LLM's last-token hidden state (MLLM-Protector puts a
//! classification head on OpenLLaMA-3B; here SmolLM2-135M-Instruct, the detoxifier's GGUF, through the same loading
//! code). An opt-in quality mode: it costs an LLM forward pass per window, far more than MiniLM (see BENCHMARKS.md).
//!
//! candle-transformers' quantized llama returns only the logits of the last position. With a tied (or any
//! full-column-rank) output matrix `E` (vocab × hidden), the final hidden state is recovered exactly from them:
//! `h = (EᵀE)⁻¹ Eᵀ logits`, so the model's code is reused unchanged.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::quantized_llama;
use tokenizers::Tokenizer;

use crate::detector::encoder::{TextEncoder, WindowEmbeddings, Windowing};
use crate::error::{Error, Result};
use crate::loading::gguf::GgufFile;
use crate::loading::{default_models_dir, pins};

/// A llama-architecture GGUF model as a [`TextEncoder`]: each window of a response (its tokens inside an assistant
/// turn) is embedded as the L2-normalised hidden state of its last token.
pub struct LlmBackboneEncoder {
    model: quantized_llama::ModelWeights,
    tokenizer: Tokenizer,
    /// `E`, `(vocab, hidden)`, f32: the output matrix.
    output: Tensor,
    /// `(EᵀE)⁻¹`, `(hidden, hidden)`.
    gram_inverse: Tensor,
    hidden: usize,
    windowing: Windowing,
    opening: Vec<u32>,
    closing: Vec<u32>,
    device: Device,
    weights_sha256: String,
}

impl std::fmt::Debug for LlmBackboneEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmBackboneEncoder")
            .field("hidden", &self.hidden)
            .field("windowing", &self.windowing)
            .field("weights_sha256", &self.weights_sha256)
            .finish()
    }
}

/// Windows for the LLM backbone: consecutive 128-token chunks, no overlap, no paragraph pass (each window costs a
/// forward pass of the LLM).
pub const LLM_WINDOWING: Windowing = Windowing {
    max_tokens: 128,
    overlap: 0,
    min_paragraph_tokens: 0,
    span_sentences: 0,
};

impl LlmBackboneEncoder {
    /// SmolLM2-135M-Instruct from `<models dir>/SmolLM2-135M-Instruct/`, sha256-checked.
    pub fn load_default() -> Result<Self> {
        let path = default_models_dir()
            .join(pins::SMOLLM2_DIR_NAME)
            .join(pins::SMOLLM2_GGUF_FILE);
        Self::load(&path, Some(pins::SMOLLM2_GGUF_SHA256), &Device::Cpu, LLM_WINDOWING)
    }

    /// Loads a llama-architecture GGUF with a ChatML template.
    pub fn load(path: &Path, expected_sha256: Option<&str>, device: &Device, windowing: Windowing) -> Result<Self> {
        if windowing.max_tokens < 8 || windowing.overlap >= windowing.max_tokens {
            return Err(Error::BadConfig {
                what: "LLM backbone windowing".into(),
                reason: format!(
                    "max_tokens {} (≥ 8) must exceed overlap {}",
                    windowing.max_tokens, windowing.overlap
                ),
            });
        }
        let mut file = GgufFile::read(path, expected_sha256, device)?;
        let weights_sha256 = file.sha256.clone();
        if device.is_cpu() {
            file = file.dequantize_all()?;
        }
        if file.arch != "llama" {
            return Err(Error::BadConfig {
                what: file.what,
                reason: format!("architecture `{}`: the LLM backbone supports llama", file.arch),
            });
        }
        // The same choice as quantized_llama: `output.weight`, else the tied token embedding.
        let output_name = if file.content.tensor_infos.contains_key("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let output = file.dequantized(output_name, device)?.to_dtype(DType::F32)?;
        let (_, hidden) = output.dims2()?;
        let gram = output.t()?.matmul(&output)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let gram_inverse = invert(gram).ok_or_else(|| Error::BadWeights {
            what: file.what.clone(),
            reason: "the output matrix is rank-deficient: hidden states cannot be recovered from logits".into(),
        })?;
        let gram_inverse = Tensor::new(gram_inverse, device)?.to_dtype(DType::F32)?;
        let tokenizer = file.tokenizer.tokenizer.clone();
        let ids = |text: &str| -> Result<Vec<u32>> {
            Ok(tokenizer
                .encode(text, false)
                .map_err(|e| Error::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec())
        };
        let (opening, closing) = (ids("<|im_start|>assistant\n")?, ids("<|im_end|>")?);
        let what = file.what.clone();
        let model = quantized_llama::ModelWeights::from_gguf(file.content, &mut file.reader, device)
            .map_err(|e| Error::from_load(&what, e))?;
        Ok(LlmBackboneEncoder {
            model,
            tokenizer,
            output,
            gram_inverse,
            hidden,
            windowing,
            opening,
            closing,
            device: device.clone(),
            weights_sha256,
        })
    }

    /// The windowing in use.
    pub fn windowing(&self) -> Windowing {
        self.windowing
    }

    /// Token windows of `text`: chunks of `max_tokens` response tokens (overlapping by `overlap`), each inside an
    /// assistant turn.
    pub fn token_windows(&self, text: &str) -> Result<Vec<Vec<u32>>> {
        let ids = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec();
        let step = self.windowing.max_tokens - self.windowing.overlap;
        let mut windows = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + self.windowing.max_tokens).min(ids.len());
            let mut w = self.opening.clone();
            w.extend_from_slice(&ids[start..end]);
            w.extend_from_slice(&self.closing);
            windows.push(w);
            if end >= ids.len() {
                break;
            }
            start += step;
        }
        Ok(windows)
    }

    /// The final hidden state of the last token of `ids`, `(hidden,)`, and the model's logits there, `(vocab,)`.
    pub fn last_hidden_state(&self, ids: &[u32]) -> Result<(Tensor, Tensor)> {
        if ids.is_empty() {
            return Err(Error::InvalidInput("no tokens to read".into()));
        }
        // A clone shares the weights and starts with an empty KV cache, so calls are independent and thread-safe.
        let mut model = self.model.clone();
        let logits = model.forward(&Tensor::new(ids, &self.device)?.unsqueeze(0)?, 0)?;
        let logits = logits.to_dtype(DType::F32)?.reshape((1, ()))?;
        let projected = logits.matmul(&self.output)?; // Eᵀ logits
        let hidden = projected.matmul(&self.gram_inverse)?.squeeze(0)?; // (EᵀE)⁻¹ is symmetric
        Ok((hidden, logits.squeeze(0)?))
    }

    /// The output matrix `E`, `(vocab, hidden)`.
    pub fn output_matrix(&self) -> &Tensor {
        &self.output
    }
}

impl TextEncoder for LlmBackboneEncoder {
    fn dim(&self) -> usize {
        self.hidden
    }

    fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }

    fn precision(&self) -> &str {
        "gguf"
    }

    fn embed_windows(&self, texts: &[&str]) -> Result<WindowEmbeddings> {
        let mut rows = Vec::new();
        let mut owner = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            for window in self.token_windows(text)? {
                let (h, _) = self.last_hidden_state(&window)?;
                let norm = h.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?.max(1e-12);
                rows.push((h / norm as f64)?);
                owner.push(i);
            }
        }
        let embeddings = if rows.is_empty() {
            Tensor::zeros((0, self.hidden), DType::F32, &self.device)?
        } else {
            Tensor::stack(&rows, 0)?
        };
        Ok(WindowEmbeddings::new(embeddings, owner))
    }
}

/// Inverse of a symmetric positive-definite matrix by Gauss–Jordan elimination with partial pivoting; `None` when
/// singular.
fn invert(mut a: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut inv: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    let scale = a
        .iter()
        .map(|r| r.iter().fold(0f64, |m, v| m.max(v.abs())))
        .fold(0f64, f64::max);
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[pivot][col].abs() <= scale * 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let p = a[col][col];
        for j in 0..n {
            a[col][j] /= p;
            inv[col][j] /= p;
        }
        for row in 0..n {
            if row != col {
                let f = a[row][col];
                if f != 0.0 {
                    for j in 0..n {
                        a[row][j] -= f * a[col][j];
                        inv[row][j] -= f * inv[col][j];
                    }
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::invert;

    #[test]
    fn inverts_and_refuses_singular() {
        let inv = invert(vec![vec![4.0, 1.0], vec![1.0, 3.0]]).unwrap();
        // [[4,1],[1,3]]⁻¹ = 1/11 [[3,-1],[-1,4]]
        assert!((inv[0][0] - 3.0 / 11.0).abs() < 1e-12 && (inv[0][1] + 1.0 / 11.0).abs() < 1e-12);
        assert!(invert(vec![vec![1.0, 2.0], vec![2.0, 4.0]]).is_none());
    }
}
