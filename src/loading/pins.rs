//! Pinned identities of the models this crate ships defaults for. The set-up script checks the same digests.

/// Hub id of the default harm-detector encoder.
pub const MINILM_HUB_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Folder name under the models dir that holds the default encoder.
pub const MINILM_DIR_NAME: &str = "all-MiniLM-L6-v2";
/// sha256 of all-MiniLM-L6-v2's `model.safetensors` (identical on the hub and in the offline package).
pub const MINILM_WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// sha256 of the offline package's `tokenizer.json`.
pub const MINILM_TOKENIZER_SHA256: &str = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037";

/// Hub id of the default detoxifier LLM.
pub const SMOLLM2_HUB_REPO: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";
/// Folder name under the models dir that holds the default detoxifier GGUF.
pub const SMOLLM2_DIR_NAME: &str = "SmolLM2-135M-Instruct";
/// File name of the quantized detoxifier.
pub const SMOLLM2_GGUF_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of that GGUF file.
pub const SMOLLM2_GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
