//! Reading a quantized GGUF model file: checksum, the CPU-friendly re-quantization, the tokenizer rebuilt from its
//! metadata and its architecture. Shared by the LLM detoxifier and the LLM-backbone detector.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek, SeekFrom};
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
    pub reader: TensorData,
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
        Self::parse(bytes, sha256, path.display().to_string(), device)
    }

    /// Parses a GGUF file already in memory (`what` names it in errors): the same checks as [`GgufFile::read`]
    /// but the checksum. Every byte may come from an attacker: a damaged or lying file is an [`Error`], never a
    /// panic or an allocation of what the header claims.
    pub fn from_bytes(bytes: Vec<u8>, what: &str, device: &Device) -> Result<Self> {
        let sha256 = checksum::sha256_hex(&bytes);
        Self::parse(bytes, sha256, what.to_string(), device)
    }

    fn parse(bytes: Vec<u8>, sha256: String, what: String, device: &Device) -> Result<Self> {
        let len = bytes.len() as u64;
        // candle 0.11 divides by `general.alignment` unchecked: a 0 there is refused before it parses anything.
        check_header(&bytes, &what)?;
        let mut reader = TensorData::File(Cursor::new(bytes));
        // Any other panic its parser still has on a hostile file must not take the host down: it becomes this
        // file's error (with `panic = "unwind"`, the default; SECURITY.md).
        let mut content = no_panic(&what, || {
            gguf_file::Content::read(&mut reader).map_err(|e| Error::from_load(&what, e))
        })?;
        check_tensor_bounds(&content, len, &what)?;
        if device.is_cpu() && content.tensor_infos.values().any(|t| lacks_cpu_simd(t.ggml_dtype)) {
            (content, reader) = no_panic(&what, || {
                requantize_to_q8_0(content, reader).map_err(|e| Error::from_load(&what, e))
            })?;
        }
        let tokenizer = no_panic(&what, || gguf_tokenizer::from_gguf(&content)).map_err(|e| match e {
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
    pub fn dequantize_all(self) -> Result<Self> {
        // Every tensor stays readable: the LLM-backbone detector reads the output matrix before the model does.
        let (content, reader) = rewrite(
            self.content,
            self.reader,
            |qt| {
                if qt.dtype() == GgmlDType::F32 {
                    Ok(qt)
                } else {
                    QTensor::quantize(&qt.dequantize(&Device::Cpu)?, GgmlDType::F32)
                }
            },
            |_| true,
        )
        .map_err(|e| Error::from_load(&self.what, e))?;
        Ok(GgufFile {
            content,
            reader,
            ..self
        })
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

/// Runs a parsing step of a dependency (candle's GGUF reader, the tokenizers builder), turning a panic inside it
/// into this file's [`Error`].
fn no_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::BadWeights {
                what: what.to_string(),
                reason: format!("reading this file failed inside a dependency ({message})"),
            })
        }
    }
}

/// GGUF metadata value types (the GGUF specification's `gguf_metadata_value_type`).
mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// A bounds-checked little-endian reader over the header (every read is `None` past the end).
struct HeaderCursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// GGUF v1 stores counts and string lengths as u32, later versions as u64.
    v1: bool,
}

/// How deep the walk follows nested metadata arrays: as deep as candle's parser does (its `GGUF_MAX_VALUE_DEPTH`),
/// which refuses deeper ones itself.
const MAX_ARRAY_NESTING: u32 = 65;

impl HeaderCursor<'_> {
    fn take(&mut self, n: u64) -> Option<&[u8]> {
        let end = self.at.checked_add(usize::try_from(n).ok()?)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn count(&mut self) -> Option<u64> {
        if self.v1 { self.u32().map(u64::from) } else { self.u64() }
    }
    fn string(&mut self) -> Option<&[u8]> {
        let len = self.count()?;
        self.take(len)
    }
    /// Skips one value of type `t`; arrays nest at most `depth` deep.
    fn skip_value(&mut self, t: u32, depth: u32) -> Option<()> {
        use value_type::*;
        match t {
            STRING => self.string().map(drop),
            ARRAY if depth > 0 => {
                let elem = self.u32()?;
                let n = self.count()?;
                match elem {
                    STRING | ARRAY => (0..n).try_for_each(|_| self.skip_value(elem, depth - 1)),
                    // n numbers at once: a long array is one bounds check, not n.
                    _ => self.take(fixed_width(elem)?.checked_mul(n)?).map(drop),
                }
            }
            _ => self.take(fixed_width(t)?).map(drop),
        }
    }
}

/// Bytes of one value of a fixed-width metadata type (`None` for strings, arrays and unknown types).
fn fixed_width(t: u32) -> Option<u64> {
    use value_type::*;
    match t {
        U8 | I8 | BOOL => Some(1),
        U16 | I16 => Some(2),
        U32 | I32 | F32 => Some(4),
        U64 | I64 | F64 => Some(8),
        _ => None,
    }
}

/// Refuses a header whose `general.alignment` is 0, the one value candle's parser divides by without a check (a key
/// given twice counts as candle reads it: the last one). The walk stops at the first thing it cannot read, and candle
/// then reports the damage.
fn check_header(bytes: &[u8], what: &str) -> Result<()> {
    let mut cursor = HeaderCursor {
        bytes,
        at: 0,
        v1: false,
    };
    let mut zero_alignment = false;
    let mut walk = |c: &mut HeaderCursor| -> Option<()> {
        if c.take(4)? != b"GGUF" {
            return None;
        }
        c.v1 = c.u32()? == 1;
        let _tensors = c.count()?;
        let entries = c.count()?;
        for _ in 0..entries {
            let is_alignment = c.string()? == b"general.alignment";
            let t = c.u32()?;
            // candle reads the alignment from the integer types up to 32 bits, and falls back to its default for
            // any other.
            use value_type::*;
            if is_alignment && matches!(t, U8 | I8 | U16 | I16 | U32 | I32) {
                zero_alignment = c.take(fixed_width(t)?)?.iter().all(|b| *b == 0);
            } else {
                if is_alignment {
                    zero_alignment = false;
                }
                c.skip_value(t, MAX_ARRAY_NESTING)?;
            }
        }
        Some(())
    };
    let _ = walk(&mut cursor);
    if zero_alignment {
        return Err(Error::BadWeights {
            what: what.to_string(),
            reason: "general.alignment is 0".into(),
        });
    }
    Ok(())
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
/// then 8-bit quantized: a finer grid than the 4- or 5-bit original, so no quality is lost). Each rewritten tensor is
/// freed once the model has read it, except the token embedding, which a tied `qwen2` model reads twice.
fn requantize_to_q8_0(
    content: gguf_file::Content,
    reader: TensorData,
) -> candle_core::Result<(gguf_file::Content, TensorData)> {
    rewrite(
        content,
        reader,
        |qt| {
            let cols = qt.shape().dims().last().copied().unwrap_or(0);
            if lacks_cpu_simd(qt.dtype()) && cols % GgmlDType::Q8_0.block_size() == 0 {
                QTensor::quantize(&qt.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)
            } else {
                Ok(qt)
            }
        },
        |name| name == "token_embd.weight",
    )
}

/// Rewrites every tensor through `f`, in memory, largest first, then frees the original file's bytes. The result
/// has no header: a [`gguf_file::Content`] whose offsets index [`TensorData::Rewritten`]. Tensors for which `keep`
/// is false are freed once read to their end.
fn rewrite(
    content: gguf_file::Content,
    mut reader: TensorData,
    f: impl Fn(QTensor) -> candle_core::Result<QTensor>,
    keep: impl Fn(&str) -> bool,
) -> candle_core::Result<(gguf_file::Content, TensorData)> {
    // Largest first: the biggest transient (a tensor dequantized to f32) then comes before the rewritten tensors pile up.
    let mut names: Vec<(String, usize)> = content
        .tensor_infos
        .iter()
        .map(|(name, info)| (name.clone(), info.shape.elem_count()))
        .collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut infos = HashMap::with_capacity(names.len());
    let mut chunks = Vec::with_capacity(names.len());
    let mut offset = 0u64;
    for (name, _) in names {
        let qt = f(content.tensor(&mut reader, &name, &Device::Cpu)?)?;
        let bytes = qt.data()?.into_owned();
        let len = bytes.len() as u64;
        infos.insert(
            name.clone(),
            gguf_file::TensorInfo {
                ggml_dtype: qt.dtype(),
                shape: qt.shape().clone(),
                offset,
            },
        );
        if len > 0 {
            chunks.push(Chunk {
                keep: keep(&name),
                name,
                start: offset,
                len,
                bytes: Some(bytes),
            });
        }
        offset += len;
    }
    drop(reader);
    let content = gguf_file::Content {
        magic: content.magic,
        metadata: content.metadata,
        tensor_infos: infos,
        tensor_data_offset: 0,
    };
    Ok((
        content,
        TensorData::Rewritten(RewrittenTensors {
            chunks,
            len: offset,
            pos: 0,
        }),
    ))
}

/// The tensor data a [`GgufFile`] hands to a model loader (`Read + Seek`, as candle's `Content::tensor` wants).
pub enum TensorData {
    /// The file as read.
    File(Cursor<Vec<u8>>),
    /// Tensors rewritten at load (re-quantized or dequantized), back to back.
    Rewritten(RewrittenTensors),
}

/// Rewritten tensors, one buffer each. A buffer not marked to keep is freed when its last byte is read, so a model
/// loaded from it never holds its weights twice; reading a freed tensor again is an I/O error naming it.
pub struct RewrittenTensors {
    chunks: Vec<Chunk>,
    len: u64,
    pos: u64,
}

struct Chunk {
    name: String,
    start: u64,
    len: u64,
    bytes: Option<Vec<u8>>,
    keep: bool,
}

impl Read for TensorData {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            TensorData::File(file) => file.read(buf),
            TensorData::Rewritten(tensors) => tensors.read(buf),
        }
    }
}

impl Seek for TensorData {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match self {
            TensorData::File(file) => file.seek(to),
            TensorData::Rewritten(tensors) => tensors.seek(to),
        }
    }
}

impl Read for RewrittenTensors {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Chunks are sorted by start and back to back: the last one starting at or before `pos` holds it.
        let i = self.chunks.partition_point(|c| c.start <= self.pos);
        let Some(chunk) = i.checked_sub(1).and_then(|i| self.chunks.get_mut(i)) else {
            return Ok(0);
        };
        let at = self.pos - chunk.start;
        if at >= chunk.len {
            return Ok(0);
        }
        let Some(bytes) = &chunk.bytes else {
            return Err(std::io::Error::other(format!(
                "tensor {} was read once and freed; the model loader read it again",
                chunk.name
            )));
        };
        let at = at as usize;
        let n = buf.len().min(bytes.len() - at);
        buf[..n].copy_from_slice(&bytes[at..at + n]);
        self.pos += n as u64;
        if at + n == bytes.len() && !chunk.keep {
            chunk.bytes = None;
        }
        Ok(n)
    }
}

impl Seek for RewrittenTensors {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            target.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    /// A GGUF file in memory holding two Q4_1 tensors (a format without CPU SIMD kernels) and one f32 tensor.
    fn q4_1_file() -> (gguf_file::Content, TensorData, Vec<(String, Tensor)>) {
        let device = Device::Cpu;
        let values = |n: usize, k: f32| -> Tensor {
            let v: Vec<f32> = (0..n * 64).map(|i| ((i as f32 * k).sin()) * 0.5).collect();
            Tensor::from_vec(v, (n, 64), &device).unwrap()
        };
        let originals = [
            ("token_embd.weight".to_string(), values(8, 0.37)),
            ("blk.0.ffn_up.weight".to_string(), values(4, 0.11)),
        ];
        let mut tensors: Vec<(String, QTensor)> = originals
            .iter()
            .map(|(n, t)| (n.clone(), QTensor::quantize(t, GgmlDType::Q4_1).unwrap()))
            .collect();
        let norm = Tensor::ones(64, candle_core::DType::F32, &device).unwrap();
        tensors.push((
            "output_norm.weight".into(),
            QTensor::quantize(&norm, GgmlDType::F32).unwrap(),
        ));
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let arch = gguf_file::Value::String("llama".into());
        let mut out = Cursor::new(Vec::new());
        gguf_file::write(&mut out, &[("general.architecture", &arch)], &refs).unwrap();
        out.set_position(0);
        let content = gguf_file::Content::read(&mut out).unwrap();
        // What the model should see: the Q4_1 values, dequantized.
        let expected = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.dequantize(&device).unwrap()))
            .collect();
        (content, TensorData::File(out), expected)
    }

    #[test]
    fn requantized_tensors_read_back_as_q8_0_with_the_same_values() {
        let (content, reader, expected) = q4_1_file();
        let (content, mut reader) = requantize_to_q8_0(content, reader).unwrap();
        for (name, want) in &expected {
            let got = content.tensor(&mut reader, name, &Device::Cpu).unwrap();
            let dtype = if name == "output_norm.weight" {
                GgmlDType::F32
            } else {
                GgmlDType::Q8_0
            };
            assert_eq!(got.dtype(), dtype, "{name}");
            let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (got, want) = (values(&got.dequantize(&Device::Cpu).unwrap()), values(want));
            let gap = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            // Q8_0's step for values within ±0.5 is at most 0.5/127.
            assert!(gap <= 0.5 / 127.0 + 1e-6, "{name}: {gap}");
        }
    }

    #[test]
    fn a_rewritten_tensor_is_freed_once_read_but_the_token_embedding_is_kept() {
        let (content, reader) = {
            let (c, r, _) = q4_1_file();
            requantize_to_q8_0(c, r).unwrap()
        };
        let mut reader = reader;
        for _ in 0..2 {
            assert!(content.tensor(&mut reader, "token_embd.weight", &Device::Cpu).is_ok());
        }
        assert!(content.tensor(&mut reader, "blk.0.ffn_up.weight", &Device::Cpu).is_ok());
        let again = content
            .tensor(&mut reader, "blk.0.ffn_up.weight", &Device::Cpu)
            .expect_err("a freed tensor cannot be read again");
        assert!(again.to_string().contains("blk.0.ffn_up.weight"), "{again}");
    }

    #[test]
    fn rewritten_tensors_seek_like_a_file() {
        let (content, reader) = {
            let (c, r, _) = q4_1_file();
            requantize_to_q8_0(c, r).unwrap()
        };
        let TensorData::Rewritten(mut t) = reader else {
            panic!("the Q4_1 file was not rewritten");
        };
        let total: u64 = content
            .tensor_infos
            .values()
            .map(|i| (i.shape.elem_count() / i.ggml_dtype.block_size() * i.ggml_dtype.type_size()) as u64)
            .sum();
        assert_eq!(t.seek(SeekFrom::End(0)).unwrap(), total);
        assert_eq!(t.read(&mut [0u8; 8]).unwrap(), 0, "nothing past the end");
        assert!(t.seek(SeekFrom::Current(-(total as i64) - 1)).is_err());
        assert_eq!(t.seek(SeekFrom::Start(0)).unwrap(), 0);
        assert!(t.read(&mut [0u8; 8]).unwrap() > 0);
    }
}
