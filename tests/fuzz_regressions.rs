//! Every input kept from fuzzing (`fuzz/seeds/<target>/`, the starting inputs, and `fuzz/regressions/<target>/`, the
//! inputs that once crashed or hung a target) replayed through the same bodies the fuzz targets run
//! (`fuzz/src/bodies.rs`), on stable: a fixed finding stays fixed. Fuzzing itself: `bash scripts/fuzz.sh`.

mod common;

#[path = "../fuzz/src/bodies.rs"]
mod bodies;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Once;

fn kept_inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) {
            files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

thread_local! {
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// Counts every panic on this thread, also one the crate catches: libFuzzer aborts on those too, and a host built
/// with `panic = "abort"` would die of them.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            default(info);
        }));
    });
}

fn replay(target: &str, body: fn(&[u8])) {
    count_panics();
    let files = kept_inputs(target);
    assert!(!files.is_empty(), "no kept inputs for `{target}` under fuzz/");
    for file in files {
        let data = std::fs::read(&file).unwrap();
        eprintln!("{target}: {}", file.display());
        let before = PANICS.with(Cell::get);
        body(&data);
        assert_eq!(
            PANICS.with(Cell::get),
            before,
            "{}: a panic, even if caught",
            file.display()
        );
    }
}

#[test]
fn canonical_inputs() {
    replay("canonical", bodies::canonical);
}

#[test]
fn gguf_inputs() {
    replay("gguf", bodies::gguf);
}

#[test]
fn gguf_tokenizer_inputs() {
    replay("gguf_tokenizer", bodies::gguf_tokenizer);
}

#[test]
fn image_inputs() {
    replay("image", bodies::image);
}

#[test]
fn head_inputs() {
    // The head's seed is the crate's embedded head (copied in by scripts/fuzz.sh, not kept twice).
    let embedded = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/minilm-harm-head.safetensors");
    bodies::head(&std::fs::read(embedded).unwrap());
    if !kept_inputs("head").is_empty() {
        replay("head", bodies::head);
    }
}

#[test]
fn guard_inputs() {
    common::models_dir();
    replay("guard", bodies::guard);
}

/// The starting inputs must reach past the first check, or the fuzzer starts from nothing: the GGUF seeds load (the
/// one without tokenizer metadata is refused for that reason), the images decode.
#[test]
fn seeds_are_valid_inputs() {
    use candle_core::Device;
    use mllm_protector::loading::gguf::GgufFile;
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for name in ["smollm", "qwen2"] {
        let bytes = std::fs::read(seeds.join("gguf").join(name)).unwrap();
        let file = GgufFile::from_bytes(bytes, name, &Device::Cpu).unwrap();
        let ids = file.tokenizer.tokenizer.encode("<|im_start|>Hi the", false).unwrap();
        assert_eq!(ids.get_ids()[0], 1, "<|im_start|> is one special token");
    }
    let bytes = std::fs::read(seeds.join("gguf/no-tokenizer")).unwrap();
    let err = GgufFile::from_bytes(bytes, "no-tokenizer", &Device::Cpu).err().unwrap();
    assert!(err.to_string().contains("tokenizer"), "{err}");
    for name in ["rgb.png", "grey.png", "tiny.bmp", "tiny.gif"] {
        let image = mllm_protector::Image::from_bytes(std::fs::read(seeds.join("image").join(name)).unwrap());
        image.inspect().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
