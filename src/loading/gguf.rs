//! Reading a quantized GGUF model file: checksum, the CPU-friendly re-quantization, the tokenizer rebuilt from its
//! metadata and its architecture. Shared by the LLM detoxifier and the LLM-backbone detector.

use std::io::Cursor;
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};

use crate::error::{Error, Result};
use crate::loading::gguf_tokenizer::{self, GgufTokenizer};
use crate::loading::{checksum, read_file};

/// A GGUF file read into memory, ready for a candle-transformers `ModelWeights::from_gguf`.
pub struct GgufFile {
    /// Header and tensor index.
    pub content: gguf_file::Content,
    /// The tensor data.
    pub reader: Cursor<Vec<u8>>,
    /// The tokenizer rebuilt from the metadata (ChatML template checked).
    pub tokenizer: GgufTokenizer,
    /// `general.architecture` (`llama`, `qwen2`, …).
    pub arch: String,
    /// The path, for error messages.
    pub what: String,
    /// sha256 of the file.
    pub sha256: String,
}

impl GgufFile {
    /// Reads `path`, checks its sha256 when given, re-quantizes block formats without CPU SIMD kernels to Q8_0 on
    /// the CPU, and rebuilds the tokenizer. Only ChatML chat templates are accepted.
    pub fn read(path: &Path, expected_sha256: Option<&str>, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingModelFile {
                path: path.to_path_buf(),
                hint: format!(
                    "set {} to a folder holding it (in this crate's repository, `bash scripts/fetch_models.sh` \
                     fetches the pinned file), or pass its path",
                    crate::loading::MODELS_DIR_ENV
                ),
            });
        }
        let bytes = read_file(path)?;
        let sha256 = checksum::sha256_hex(&bytes);
        if let Some(expected) = expected_sha256 {
            checksum::verify_digest(path, sha256.clone(), expected)?;
        }
        let what = path.display().to_string();
        let len = bytes.len() as u64;
        let mut reader = Cursor::new(bytes);
        // candle's parser bounds what a header claims; a panic it still has on a hostile file (e.g. an alignment of
        // 0) must not take the host down: it becomes this file's error.
        let mut content = no_panic(&what, || gguf_file::Content::read(&mut reader))?;
        check_tensor_bounds(&content, len, &what)?;
        if device.is_cpu() && content.tensor_infos.values().any(|t| lacks_cpu_simd(t.ggml_dtype)) {
            (content, reader) = no_panic(&what, || requantize_to_q8_0(&content, &mut reader))?;
        }
        let tokenizer = gguf_tokenizer::from_gguf(&content).map_err(|e| match e {
            Error::BadConfig { what: part, reason } => Error::BadConfig {
                what: format!("{what}: {part}"),
                reason,
            },
            Error::Tokenizer(reason) => Error::Tokenizer(format!("{what}: {reason}")),
            other => other,
        })?;
        match &tokenizer.chat_template {
            Some(t) if t.contains("<|im_start|>") => {}
            _ => {
                return Err(Error::BadConfig {
                    what,
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
        Ok(GgufFile {
            content,
            reader,
            tokenizer,
            arch,
            what,
            sha256,
        })
    }

    /// Dequantizes every tensor to f32 in memory (4 bytes a weight). candle then runs the model's matrix products
    /// through its f32 GEMM, several times faster than the quantized kernels on whole prompts (prefill), which is all
    /// an encoder does; token-by-token generation gains nothing from it.
    pub fn dequantize_all(&mut self) -> Result<()> {
        let (content, reader) = rewrite(&self.content, &mut self.reader, |qt| {
            if qt.dtype() == GgmlDType::F32 {
                Ok(qt)
            } else {
                QTensor::quantize(&qt.dequantize(&Device::Cpu)?, GgmlDType::F32)
            }
        })
        .map_err(|e| Error::from_load(&self.what, e))?;
        self.content = content;
        self.reader = reader;
        Ok(())
    }

    /// A tensor dequantized to f32 (e.g. the token embedding).
    pub fn dequantized(&mut self, name: &str, device: &Device) -> Result<candle_core::Tensor> {
        let t = self
            .content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| Error::from_load(&self.what, e))?;
        Ok(t.dequantize(device)?)
    }
}

/// Runs a candle parsing step, turning its error, or a panic inside it, into this file's [`Error`].
fn no_panic<T>(what: &str, f: impl FnOnce() -> candle_core::Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(|e| Error::from_load(what, e)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::BadWeights {
                what: what.to_string(),
                reason: format!("the GGUF parser failed on this file ({message})"),
            })
        }
    }
}

/// Every tensor the header lists must lie inside the file: checked before any is read, so a header that points
/// past the end (or claims more data than there is) is refused at once.
fn check_tensor_bounds(content: &gguf_file::Content, file_len: u64, what: &str) -> Result<()> {
    for (name, info) in &content.tensor_infos {
        let elems = info
            .shape
            .dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        let block = info.ggml_dtype.block_size() as u64;
        let size = elems.and_then(|n| (n / block.max(1)).checked_mul(info.ggml_dtype.type_size() as u64));
        let end = size.and_then(|s| content.tensor_data_offset.checked_add(info.offset)?.checked_add(s));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(Error::BadWeights {
                    what: what.to_string(),
                    reason: format!(
                        "tensor {name} ({:?}, {:?}) at offset {} lies past the end of the {file_len}-byte file",
                        info.shape.dims(),
                        info.ggml_dtype,
                        info.offset
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Block formats that candle's CPU backend runs on a scalar loop (it has SIMD kernels for Q4_0, Q8_0 and the K
/// formats only): Q4_1 (the packaged SmolLM2) and Q5_0 / Q5_1 (most of the published Qwen2.5 0.5B GGUF) run about
/// 10x slower than Q8_0.
fn lacks_cpu_simd(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

/// Rewrites the tensors in a format without CPU SIMD kernels as Q8_0, once at load, in memory (dequantized exactly,
/// then 8-bit quantized: a finer grid than the 4- or 5-bit original, so no quality is lost).
fn requantize_to_q8_0(
    content: &gguf_file::Content,
    reader: &mut Cursor<Vec<u8>>,
) -> candle_core::Result<(gguf_file::Content, Cursor<Vec<u8>>)> {
    rewrite(content, reader, |qt| {
        let cols = qt.shape().dims().last().copied().unwrap_or(0);
        if lacks_cpu_simd(qt.dtype()) && cols % GgmlDType::Q8_0.block_size() == 0 {
            QTensor::quantize(&qt.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)
        } else {
            Ok(qt)
        }
    })
}

/// Rewrites every tensor through `f`, in memory.
fn rewrite(
    content: &gguf_file::Content,
    reader: &mut Cursor<Vec<u8>>,
    f: impl Fn(QTensor) -> candle_core::Result<QTensor>,
) -> candle_core::Result<(gguf_file::Content, Cursor<Vec<u8>>)> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        tensors.push((name.as_str(), f(content.tensor(reader, name, &Device::Cpu)?)?));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs)?;
    out.set_position(0);
    let content = gguf_file::Content::read(&mut out)?;
    Ok((content, out))
}
