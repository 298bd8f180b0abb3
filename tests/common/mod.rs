//! Shared set-up for the integration tests: the real models (fetched by `scripts/fetch_models.sh`) and the data
//! folder (`$MLLM_PROTECTOR_DATA`, default `../shared/data`). Missing ones fail loudly with what to do.

#![allow(dead_code)]

// candle allocates large, short-lived tensors; mimalloc reuses them instead of mapping fresh pages each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use mllm_protector::detector::{EmbeddingDetector, SentenceEncoder, Windowing};
use mllm_protector::loading::{ModelSource, default_models_dir, pins};

pub fn models_dir() -> PathBuf {
    let dir = default_models_dir();
    assert!(
        dir.join(pins::MINILM_DIR_NAME).join("model.safetensors").is_file(),
        "models missing in {}: run `bash scripts/fetch_models.sh` (make test does it)",
        dir.display()
    );
    dir
}

pub fn minilm_dir() -> PathBuf {
    models_dir().join(pins::MINILM_DIR_NAME)
}

pub fn data_dir() -> PathBuf {
    mllm_protector::eval::data_dir().unwrap_or_else(|e| panic!("{e}"))
}

pub fn encoder() -> SentenceEncoder {
    SentenceEncoder::load(
        &ModelSource::Dir(minilm_dir()),
        &candle_core::Device::Cpu,
        Windowing::default(),
        Some(pins::MINILM_WEIGHTS_SHA256),
    )
    .expect("load all-MiniLM-L6-v2")
}

/// The default detector, loaded once per test binary.
pub fn detector() -> Arc<EmbeddingDetector> {
    static DETECTOR: OnceLock<Arc<EmbeddingDetector>> = OnceLock::new();
    DETECTOR
        .get_or_init(|| {
            models_dir();
            Arc::new(EmbeddingDetector::load_default().expect("load the default detector"))
        })
        .clone()
}
