//! Damaged and lying GGUF files: each is a typed error that names the file, read in bounded memory; none panics.
//! The files are written by the test (a tiny valid GGUF, then altered), so no model is needed.

use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use mllm_protector::Error;
use mllm_protector::loading::gguf::GgufFile;

/// A tiny GGUF: an architecture, an alignment, and one 4×32 f32 tensor (no tokenizer).
fn tiny_gguf(alignment: Option<u32>) -> Vec<u8> {
    let t = QTensor::quantize(
        &Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let arch = gguf_file::Value::String("llama".into());
    let align = alignment.map(gguf_file::Value::U32);
    let mut metadata: Vec<(&str, &gguf_file::Value)> = vec![("general.architecture", &arch)];
    if let Some(a) = &align {
        metadata.push(("general.alignment", a));
    }
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &[("w", &t)]).unwrap();
    out.into_inner()
}

/// `general.alignment` given twice, 32 then 0: candle keeps the last.
fn twice_aligned() -> Vec<u8> {
    let t = QTensor::quantize(
        &Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let (good, zero) = (gguf_file::Value::U32(32), gguf_file::Value::U32(0));
    let metadata = [("general.alignment", &good), ("general.alignment", &zero)];
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &[("w", &t)]).unwrap();
    out.into_inner()
}

fn read(bytes: &[u8], dir: &Path, name: &str) -> mllm_protector::Result<GgufFile> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    GgufFile::read(&path, None, &Device::Cpu)
}

/// Byte offset of the tensor count (after the 4-byte magic and the 4-byte version).
const TENSOR_COUNT: usize = 8;
const KV_COUNT: usize = 16;

#[test]
fn damaged_gguf_files_are_typed_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = tiny_gguf(None);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not gguf", b"this is not a model file at all".to_vec()),
        ("truncated header", good[..20].to_vec()),
        ("truncated data", good[..good.len() - 64].to_vec()),
    ];
    let mut lying = good.clone();
    lying[TENSOR_COUNT..TENSOR_COUNT + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    cases.push(("claims 2^40 tensors", lying));
    let mut lying = good.clone();
    lying[KV_COUNT..KV_COUNT + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("claims u64::MAX metadata entries", lying));
    let mut lying = good.clone();
    // The first key's length: claims a 4 GiB string.
    lying[24..32].copy_from_slice(&(4u64 << 30).to_le_bytes());
    cases.push(("a key that claims 4 GiB", lying));
    let mut past_end = good.clone();
    // The tensor's offset is the last u64 of the header before the padding: point it far past the end.
    let name_at = past_end.windows(2).rposition(|w| w == [1, 0]).unwrap_or(0);
    let _ = name_at;
    let offset_at = find_tensor_offset(&past_end);
    past_end[offset_at..offset_at + 8].copy_from_slice(&(1u64 << 35).to_le_bytes());
    cases.push(("a tensor offset past the end", past_end));
    cases.push(("alignment 0", tiny_gguf(Some(0))));
    cases.push(("alignment 0 after a valid one", twice_aligned()));
    for (what, bytes) in cases {
        let name = format!("{}.gguf", what.replace(' ', "_"));
        let err = match read(&bytes, dir.path(), &name) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e,
        };
        assert!(
            matches!(
                err,
                Error::BadWeights { .. } | Error::ShapeMismatch { .. } | Error::BadConfig { .. } | Error::Tokenizer(_)
            ),
            "{what}: {err:?}"
        );
        assert!(
            err.to_string().contains(&name) || matches!(err, Error::Tokenizer(_)),
            "{what}: {err}"
        );
        if what.starts_with("alignment 0") {
            // Refused by the crate's own header check, not caught as candle's division by zero (which would abort a
            // host built with panic = "abort").
            assert!(err.to_string().contains("general.alignment is 0"), "{what}: {err}");
        }
    }
}

#[test]
fn a_gguf_without_tokenizer_or_with_a_wrong_checksum_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = read(&tiny_gguf(None), dir.path(), "no_tokenizer.gguf")
        .err()
        .expect("refused");
    assert!(matches!(err, Error::Tokenizer(_) | Error::BadConfig { .. }), "{err:?}");
    let path = dir.path().join("checked.gguf");
    std::fs::write(&path, tiny_gguf(None)).unwrap();
    let err = GgufFile::read(&path, Some(&"0".repeat(64)), &Device::Cpu)
        .err()
        .expect("refused");
    assert!(
        matches!(err, Error::ChecksumMismatch { .. }) && err.to_string().contains("checked.gguf"),
        "{err}"
    );
    let err = GgufFile::read(&dir.path().join("missing.gguf"), None, &Device::Cpu)
        .err()
        .expect("refused");
    assert!(matches!(err, Error::MissingModelFile { .. }), "{err}");
}

/// Where the single tensor's offset field sits: the u64 after the tensor name "w", its dims and its dtype.
fn find_tensor_offset(bytes: &[u8]) -> usize {
    // name: u64 length 1, then b"w"; then u32 n_dims (2), two u64 dims, u32 dtype, u64 offset.
    let mut pattern = 1u64.to_le_bytes().to_vec();
    pattern.push(b'w');
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern.as_slice())
        .expect("tensor name");
    at + pattern.len() + 4 + 16 + 4
}
