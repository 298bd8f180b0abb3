//! Helpers shared by the examples: progress bars and the embedding cache used in training.

#![allow(dead_code)]

// candle allocates large, short-lived tensors; mimalloc reuses them instead of mapping fresh pages each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use mllm_protector::detector::{SentenceEncoder, TextEncoder};
use mllm_protector::loading::checksum::sha256_hex;

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Embeds every window of every text (with a progress bar). Window embeddings are cached on disk per text under
/// `.cache/embeddings/`, keyed by the encoder weights, the windowing and the text's sha256, so re-running training
/// (another seed, another mix) only embeds what is new. Returns `(embeddings (windows, dim), owner per window)`.
pub fn embed_cached(encoder: &SentenceEncoder, texts: &[&str], what: &str) -> anyhow::Result<(Tensor, Vec<usize>)> {
    // "paragraphs" names the windowing rule (fixed windows + paragraphs alone), so a rule change re-embeds.
    let key = format!("{}{:?}paragraphs", encoder.weights_sha256(), encoder.windowing());
    let path = PathBuf::from(".cache/embeddings").join(format!("{}.safetensors", &sha256_hex(key.as_bytes())[..16]));
    let mut cache: HashMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_default();
    let hashes: Vec<String> = texts.iter().map(|t| sha256_hex(t.as_bytes())).collect();
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| !cache.contains_key(&hashes[i])).collect();
    if !missing.is_empty() {
        let pb = bar(missing.len() as u64, what);
        for chunk in missing.chunks(64) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let w = encoder.embed_windows(&batch)?;
            for (j, &i) in chunk.iter().enumerate() {
                let rows: Vec<u32> = (0..w.owner.len())
                    .filter(|&r| w.owner[r] == j)
                    .map(|r| r as u32)
                    .collect();
                let idx = Tensor::new(rows, &Device::Cpu)?;
                cache.insert(hashes[i].clone(), w.embeddings.index_select(&idx, 0)?);
            }
            pb.inc(chunk.len() as u64);
        }
        pb.finish();
        std::fs::create_dir_all(".cache/embeddings")?;
        candle_core::safetensors::save(&cache, &path)?;
    }
    let mut rows = Vec::with_capacity(texts.len());
    let mut owner = Vec::new();
    for (i, h) in hashes.iter().enumerate() {
        let t = cache
            .get(h)
            .ok_or_else(|| anyhow::anyhow!("embedding cache lost {h}"))?;
        owner.extend(std::iter::repeat_n(i, t.dim(0)?));
        rows.push(t.clone());
    }
    Ok((Tensor::cat(&rows, 0)?, owner))
}
