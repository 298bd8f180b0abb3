//! The classifier head over sentence embeddings: a small stack of linear layers (logistic regression is one layer),
//! stored as safetensors with everything needed to trust it in the file's metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use serde::{Deserialize, Serialize};

use crate::detector::category::HarmCategory;
use crate::detector::encoder::{WeightDelta, Windowing};
use crate::error::{Error, Result};
use crate::loading::read_file;

/// Key of the JSON metadata inside the safetensors header.
pub const METADATA_KEY: &str = "mllm_protector.head";
/// Metadata format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The head shipped with the crate: trained by `examples/train_detector.rs --encoder-delta` over all-MiniLM-L6-v2
/// whose top four layers were fine-tuned by `examples/finetune_encoder.rs`; the file carries that weight delta in 8 bits
/// ([`DeltaStorage::U8Rows`]).
/// The frozen-encoder head it replaced stays in `assets/minilm-harm-head.safetensors` for comparison.
pub(crate) static EMBEDDED_HEAD: &[u8] = include_bytes!("../../assets/minilm-tuned-head.safetensors");

/// The request head shipped with the crate: trained by `examples/train_request_head.rs` over the same fine-tuned
/// encoder as [`EMBEDDED_HEAD`] (its delta is recorded as [`DeltaStorage::Shared`]), on requests rather than answers.
pub(crate) static EMBEDDED_REQUEST_HEAD: &[u8] = include_bytes!("../../assets/minilm-request-head.safetensors");

/// The hedge head shipped with the crate: trained by `examples/train_hedge_head.rs` over the same fine-tuned encoder
/// as [`EMBEDDED_HEAD`] (delta [`DeltaStorage::Shared`]), on sentences: is this one a hedge rather than content?
pub(crate) static EMBEDDED_HEDGE_HEAD: &[u8] = include_bytes!("../../assets/minilm-hedge-head.safetensors");

/// What kind of encoder produces a head's input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderKind {
    /// A BERT sentence-transformer (all-MiniLM-L6-v2): mean-pooled, normalised token states.
    #[default]
    SentenceTransformer,
    /// A llama GGUF LLM's last-token hidden state ([`LlmBackboneEncoder`](crate::detector::LlmBackboneEncoder)).
    LlmLastToken,
}

/// Which encoder a head was trained on. A head is only meaningful over that encoder's embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderIdentity {
    /// Human name, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub name: String,
    /// The encoder's kind (default: sentence-transformer).
    #[serde(default)]
    pub kind: EncoderKind,
    /// sha256 of the encoder's weight file.
    pub weights_sha256: String,
    /// Embedding width.
    pub dim: usize,
    /// The windowing used in training and to be used at inference.
    pub windowing: Windowing,
    /// When the encoder was fine-tuned: the identity (sha256) of the weight delta, whose tensors are stored in the
    /// head file under [`ENCODER_DELTA_PREFIX`] and added to the base weights (checked against `weights_sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_sha256: Option<String>,
    /// How the delta's tensors are stored in the file (float unless recorded otherwise).
    #[serde(default)]
    pub delta_storage: DeltaStorage,
}

/// How a head file stores its encoder delta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaStorage {
    /// Float tensors (f16 in the files `finetune_encoder` writes).
    #[default]
    Float,
    /// 8-bit codes with one power-of-two scale per row ([`WeightDelta::quantize_u8`]): half the size of f16. The
    /// scales are stored under [`ENCODER_DELTA_SCALE_PREFIX`].
    U8Rows,
    /// Not in this file: the head reads through the fine-tuned encoder of another head, whose delta has the recorded
    /// identity (the request head reads through the harm head's encoder). Such a head is only used beside that
    /// encoder ([`EmbeddingDetector::new`](crate::detector::EmbeddingDetector::new) checks it when given the other
    /// head's identity; loading it alone is an error).
    Shared,
}

/// Prefix of the encoder-delta tensors inside a head file (`encoder_delta.encoder.layer.5.output.dense.weight`, …).
pub const ENCODER_DELTA_PREFIX: &str = "encoder_delta.";
/// Prefix of the row scales of an 8-bit encoder delta ([`DeltaStorage::U8Rows`]).
pub const ENCODER_DELTA_SCALE_PREFIX: &str = "encoder_delta_scale.";

/// Everything recorded with a head: shape, operating point, provenance and measured quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMetadata {
    /// Metadata format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Widths of the layers: `[input, hidden…, 1]`. `[384, 1]` is logistic regression.
    pub layer_sizes: Vec<usize>,
    /// Decision threshold on the probability, chosen on validation data.
    pub threshold: f32,
    /// Logits are divided by this before the sigmoid (temperature scaling; 1.0 = none).
    pub temperature: f32,
    /// Added to the scaled logit before the sigmoid (with `temperature`, Platt scaling fitted on validation data;
    /// 0.0 = none).
    #[serde(default)]
    pub logit_bias: f32,
    /// The encoder the head was trained on.
    pub encoder: EncoderIdentity,
    /// Which text the head was trained to read.
    #[serde(default)]
    pub context: crate::detector::ScoringContext,
    /// Harm categories, in the row order of the `categories.centroids` tensor (empty: no categories).
    #[serde(default)]
    pub categories: Vec<HarmCategory>,
    /// How the head was trained (data, splits, seed, hyper-parameters), free-form.
    pub training: serde_json::Value,
    /// Metrics measured at training time, by split name (e.g. `"jbb-test": {"auroc": …}`).
    pub metrics: serde_json::Value,
}

/// A trained classifier head.
#[derive(Debug, Clone)]
pub struct ClassifierHead {
    layers: Vec<Linear>,
    /// Fine-tuned encoder weights, as differences from the base (empty for a frozen encoder).
    encoder_delta: HashMap<String, Tensor>,
    /// `(categories, dim)`, unit rows: the mean embedding of each category's harmful training responses.
    centroids: Option<Tensor>,
    metadata: HeadMetadata,
}

/// Name of the category centroid tensor in a head file.
pub const CENTROIDS_TENSOR: &str = "categories.centroids";

impl ClassifierHead {
    /// The head embedded in the crate (over the fine-tuned MiniLM; see `EMBEDDED_HEAD`).
    pub fn embedded(device: &Device) -> Result<Self> {
        Self::from_bytes(EMBEDDED_HEAD, "embedded head", device)
    }

    /// The request head embedded in the crate: is *answering* a request harmful? Read through the default
    /// detector's encoder ([`EmbeddingDetector::beside`](crate::detector::EmbeddingDetector::beside)); the protector
    /// scores the text read from an image with it.
    pub fn embedded_request(device: &Device) -> Result<Self> {
        Self::from_bytes(EMBEDDED_REQUEST_HEAD, "embedded request head", device)
    }

    /// The hedge head embedded in the crate: is a sentence a hedge (a refusal, a warning, a disclaimer) rather than
    /// content? Read through the default detector's encoder
    /// ([`EmbeddingHedgeReader`](crate::detector::EmbeddingHedgeReader)).
    pub fn embedded_hedge(device: &Device) -> Result<Self> {
        Self::from_bytes(EMBEDDED_HEDGE_HEAD, "embedded hedge head", device)
    }

    /// Reads a head file written by [`ClassifierHead::to_bytes`] / the training example.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = read_file(path)?;
        Self::from_bytes(&bytes, &path.display().to_string(), device)
    }

    /// Parses a head from safetensors bytes; `what` names it in errors.
    pub fn from_bytes(bytes: &[u8], what: &str, device: &Device) -> Result<Self> {
        let bad = |reason: String| Error::BadWeights {
            what: what.to_string(),
            reason,
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or_else(|| bad(format!("no `{METADATA_KEY}` metadata")))?;
        let metadata: HeadMetadata = serde_json::from_str(json).map_err(|e| Error::BadConfig {
            what: format!("{what} metadata"),
            reason: e.to_string(),
        })?;
        if metadata.format_version != FORMAT_VERSION {
            return Err(Error::BadConfig {
                what: format!("{what} metadata"),
                reason: format!(
                    "format version {} (this crate reads {FORMAT_VERSION})",
                    metadata.format_version
                ),
            });
        }
        let tensors = candle_core::safetensors::load_buffer(bytes, device).map_err(|e| Error::from_load(what, e))?;
        Self::from_tensors(tensors, metadata, what)
    }

    /// Builds a head from named tensors `layers.{i}.weight` / `layers.{i}.bias`, checking every shape against the
    /// metadata's `layer_sizes`.
    pub fn from_tensors(mut tensors: HashMap<String, Tensor>, metadata: HeadMetadata, what: &str) -> Result<Self> {
        let sizes = &metadata.layer_sizes;
        let valid_probability = metadata.threshold.is_finite() && (0.0..=1.0).contains(&metadata.threshold);
        let valid_temperature =
            metadata.temperature.is_finite() && metadata.temperature > 0.0 && metadata.logit_bias.is_finite();
        if sizes.len() < 2 || sizes.last() != Some(&1) || !valid_probability || !valid_temperature {
            return Err(Error::BadConfig {
                what: format!("{what} metadata"),
                reason: format!(
                    "layer_sizes {sizes:?} must end in 1, threshold {} must be in [0, 1], temperature {} > 0",
                    metadata.threshold, metadata.temperature
                ),
            });
        }
        let input_width = metadata.context.feature_dim(metadata.encoder.dim);
        if sizes[0] != input_width {
            return Err(Error::ShapeMismatch {
                what: format!("{what}: input width vs encoder and context"),
                expected: input_width.to_string(),
                actual: sizes[0].to_string(),
            });
        }
        let mut layers = Vec::with_capacity(sizes.len() - 1);
        for (i, pair) in sizes.windows(2).enumerate() {
            let (inp, out) = (pair[0], pair[1]);
            let mut take = |name: String, dims: &[usize]| -> Result<Tensor> {
                let t = tensors.remove(&name).ok_or_else(|| Error::BadWeights {
                    what: what.to_string(),
                    reason: format!("missing tensor `{name}`"),
                })?;
                if t.dims() != dims {
                    return Err(Error::ShapeMismatch {
                        what: format!("{what}: {name}"),
                        expected: format!("{dims:?}"),
                        actual: format!("{:?}", t.dims()),
                    });
                }
                Ok(t.to_dtype(DType::F32)?)
            };
            let weight = take(format!("layers.{i}.weight"), &[out, inp])?;
            let bias = take(format!("layers.{i}.bias"), &[out])?;
            layers.push(Linear::new(weight, Some(bias)));
        }
        let centroids = if metadata.categories.is_empty() {
            None
        } else {
            let t = tensors.remove(CENTROIDS_TENSOR).ok_or_else(|| Error::BadWeights {
                what: what.to_string(),
                reason: format!("metadata names categories but there is no `{CENTROIDS_TENSOR}`"),
            })?;
            let dims = [metadata.categories.len(), metadata.encoder.dim];
            if t.dims() != dims {
                return Err(Error::ShapeMismatch {
                    what: format!("{what}: {CENTROIDS_TENSOR}"),
                    expected: format!("{dims:?}"),
                    actual: format!("{:?}", t.dims()),
                });
            }
            Some(t.to_dtype(DType::F32)?)
        };
        let encoder_delta = take_encoder_delta(&mut tensors, &metadata.encoder, what)?;
        Ok(ClassifierHead {
            layers,
            encoder_delta,
            centroids,
            metadata,
        })
    }

    /// The fine-tuned encoder weights this head was trained over, if any.
    pub fn encoder_delta(&self) -> Option<WeightDelta> {
        if self.metadata.encoder.delta_storage == DeltaStorage::Shared {
            return None;
        }
        let id = self.metadata.encoder.delta_sha256.clone()?;
        Some(WeightDelta {
            tensors: self.encoder_delta.clone(),
            id,
        })
    }

    /// Stores fine-tuned encoder weights with the head, in `storage` (recorded in the metadata with the delta's
    /// identity). With [`DeltaStorage::U8Rows`] the delta is first rounded as the file will hold it
    /// ([`WeightDelta::rounded_to_u8`]; train the head over that rounded delta).
    pub fn with_encoder_delta(mut self, delta: WeightDelta, storage: DeltaStorage) -> Result<Self> {
        let delta = match storage {
            DeltaStorage::Float => delta,
            DeltaStorage::U8Rows => delta.rounded_to_u8()?,
            DeltaStorage::Shared => {
                self.metadata.encoder.delta_sha256 = Some(delta.id);
                self.metadata.encoder.delta_storage = storage;
                self.encoder_delta = HashMap::new();
                return Ok(self);
            }
        };
        self.metadata.encoder.delta_sha256 = Some(delta.id);
        self.metadata.encoder.delta_storage = storage;
        self.encoder_delta = delta.tensors;
        Ok(self)
    }

    /// The nearest category (cosine to the category centroids) of each embedding row, with its margin: how far its
    /// cosine is ahead of the second nearest (1.0 when the head has one category); `None` when the head has no
    /// categories.
    pub fn categorize(&self, embeddings: &Tensor) -> Result<Option<Vec<(HarmCategory, f32)>>> {
        let Some(centroids) = &self.centroids else {
            return Ok(None);
        };
        if embeddings.dim(0)? == 0 {
            return Ok(Some(Vec::new()));
        }
        let cosines = embeddings.matmul(&centroids.t()?)?.to_vec2::<f32>()?;
        let mut out = Vec::with_capacity(cosines.len());
        for row in cosines {
            let (mut best, mut first, mut second) = (0usize, f32::NEG_INFINITY, f32::NEG_INFINITY);
            for (i, &c) in row.iter().enumerate() {
                if c > first {
                    (second, first, best) = (first, c, i);
                } else if c > second {
                    second = c;
                }
            }
            let category = self
                .metadata
                .categories
                .get(best)
                .copied()
                .ok_or_else(|| Error::ShapeMismatch {
                    what: "category centroids".into(),
                    expected: format!("{} rows", self.metadata.categories.len()),
                    actual: format!("row {best}"),
                })?;
            let margin = if second.is_finite() { first - second } else { 1.0 };
            out.push((category, margin));
        }
        Ok(Some(out))
    }

    /// The head's metadata.
    pub fn metadata(&self) -> &HeadMetadata {
        &self.metadata
    }

    /// Input width.
    pub fn input_dim(&self) -> usize {
        self.metadata.layer_sizes[0]
    }

    /// Raw logits, `(n,)`, for embeddings `(n, input_dim)`.
    pub fn logits(&self, embeddings: &Tensor) -> Result<Tensor> {
        let (_, width) = embeddings.dims2()?;
        if width != self.input_dim() {
            return Err(Error::ShapeMismatch {
                what: "embeddings given to the classifier head".into(),
                expected: format!("(n, {})", self.input_dim()),
                actual: format!("{:?}", embeddings.dims()),
            });
        }
        let mut x = embeddings.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x.squeeze(1)?)
    }

    /// Calibrated harm probabilities, `sigmoid(logit / temperature + logit_bias)`, one per embedding row.
    pub fn probabilities(&self, embeddings: &Tensor) -> Result<Vec<f32>> {
        let logits =
            ((self.logits(embeddings)? / self.metadata.temperature as f64)? + self.metadata.logit_bias as f64)?;
        Ok(candle_nn::ops::sigmoid(&logits)?.to_vec1::<f32>()?)
    }

    /// Serialises the head (weights + metadata) to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            named.push((format!("layers.{i}.weight"), layer.weight().clone()));
            if let Some(b) = layer.bias() {
                named.push((format!("layers.{i}.bias"), b.clone()));
            }
        }
        if let Some(c) = &self.centroids {
            named.push((CENTROIDS_TENSOR.to_string(), c.clone()));
        }
        match self.metadata.encoder.delta_storage {
            DeltaStorage::Float => {
                for (name, t) in &self.encoder_delta {
                    named.push((format!("{ENCODER_DELTA_PREFIX}{name}"), t.clone()));
                }
            }
            DeltaStorage::U8Rows => {
                let delta = WeightDelta {
                    tensors: self.encoder_delta.clone(),
                    id: String::new(),
                };
                for (name, (codes, scales)) in delta.quantize_u8()? {
                    named.push((format!("{ENCODER_DELTA_PREFIX}{name}"), codes));
                    named.push((format!("{ENCODER_DELTA_SCALE_PREFIX}{name}"), scales));
                }
            }
            DeltaStorage::Shared => {} // the delta lives with the other head
        }
        let json = serde_json::to_string(&self.metadata).map_err(|e| Error::BadConfig {
            what: "head metadata".into(),
            reason: e.to_string(),
        })?;
        let info = HashMap::from([(METADATA_KEY.to_string(), json)]);
        safetensors::serialize(named, Some(info)).map_err(|e| Error::BadWeights {
            what: "head".into(),
            reason: e.to_string(),
        })
    }
}
/// Takes the encoder delta out of a head file's tensors (restoring an 8-bit one) and checks it against the identity the
/// metadata records, so that a corrupt or altered delta is an error rather than a silently different encoder.
fn take_encoder_delta(
    tensors: &mut HashMap<String, Tensor>,
    encoder: &EncoderIdentity,
    what: &str,
) -> Result<HashMap<String, Tensor>> {
    let bad = |reason: String| Error::BadWeights {
        what: what.to_string(),
        reason,
    };
    let mut take = |prefix: &str| -> HashMap<String, Tensor> {
        let names: Vec<String> = tensors.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        names
            .into_iter()
            .filter_map(|name| tensors.remove(&name).map(|t| (name[prefix.len()..].to_string(), t)))
            .collect()
    };
    let stored = take(ENCODER_DELTA_PREFIX);
    let mut scales = take(ENCODER_DELTA_SCALE_PREFIX);
    let recorded = match &encoder.delta_sha256 {
        None if stored.is_empty() && scales.is_empty() => return Ok(stored),
        Some(_) if encoder.delta_storage == DeltaStorage::Shared && stored.is_empty() && scales.is_empty() => {
            return Ok(stored);
        }
        Some(recorded) if !stored.is_empty() => recorded,
        _ => {
            return Err(bad(
                "the metadata's encoder.delta_sha256 and the encoder_delta tensors must come together".into(),
            ));
        }
    };
    let delta = match encoder.delta_storage {
        DeltaStorage::Float if scales.is_empty() => WeightDelta {
            id: WeightDelta::identity(&stored)?,
            tensors: stored,
        },
        DeltaStorage::Float => return Err(bad("row scales for a delta recorded as float".into())),
        DeltaStorage::Shared => return Err(bad("delta tensors in a head whose delta is recorded as shared".into())),
        DeltaStorage::U8Rows => {
            let mut parts = HashMap::with_capacity(stored.len());
            for (name, codes) in stored {
                let scale = scales.remove(&name).ok_or_else(|| {
                    bad(format!(
                        "8-bit delta `{name}` has no `{ENCODER_DELTA_SCALE_PREFIX}{name}`"
                    ))
                })?;
                parts.insert(name, (codes, scale));
            }
            if let Some(name) = scales.keys().next() {
                return Err(bad(format!("row scales `{name}` without an 8-bit delta tensor")));
            }
            WeightDelta::dequantize_u8(&parts, what)?
        }
    };
    if &delta.id != recorded {
        return Err(bad(format!(
            "the encoder delta's identity {} is not the recorded {recorded}: the file is corrupt or was altered",
            delta.id
        )));
    }
    Ok(delta.tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_round_trips_through_a_head_file_in_either_storage() {
        let dev = Device::Cpu;
        let tensors = HashMap::from([(
            "x".to_string(),
            Tensor::new(&[[0.3f32, -0.1, 0.0], [1e-3, 2e-3, -4e-3]], &dev).unwrap(),
        )]);
        let delta = WeightDelta {
            id: WeightDelta::identity(&tensors).unwrap(),
            tensors,
        };
        for storage in [DeltaStorage::Float, DeltaStorage::U8Rows] {
            let head = ClassifierHead::embedded(&dev)
                .unwrap()
                .with_encoder_delta(delta.clone(), storage)
                .unwrap();
            let bytes = head.to_bytes().unwrap();
            let raw = candle_core::safetensors::load_buffer(&bytes, &dev).unwrap();
            let stored = &raw[&format!("{ENCODER_DELTA_PREFIX}x")];
            let loaded = ClassifierHead::from_bytes(&bytes, "round trip", &dev).unwrap();
            let back = loaded.encoder_delta().unwrap();
            assert_eq!(back.id, head.encoder_delta().unwrap().id, "{storage:?}");
            assert_eq!(loaded.metadata().encoder.delta_storage, storage);
            let values = back.tensors["x"].to_vec2::<f32>().unwrap();
            match storage {
                DeltaStorage::Float => {
                    assert_eq!(stored.dtype(), DType::F32);
                    assert_eq!(back.id, delta.id, "float storage keeps the delta as trained");
                }
                DeltaStorage::U8Rows => {
                    assert_eq!(stored.dtype(), DType::U8);
                    assert!(raw.contains_key(&format!("{ENCODER_DELTA_SCALE_PREFIX}x")));
                    assert!((values[0][0] - 0.3).abs() <= 0.3 / 127.0);
                    assert!(
                        (values[1][2] + 4e-3).abs() <= 4e-3 / 127.0,
                        "each row has its own scale"
                    );
                }
                DeltaStorage::Shared => unreachable!("not in this loop"),
            }
        }
    }

    #[test]
    fn a_shared_delta_records_its_identity_and_stores_nothing() {
        let dev = Device::Cpu;
        let tensors = HashMap::from([("x".to_string(), Tensor::new(&[[0.5f32, -0.5]], &dev).unwrap())]);
        let delta = WeightDelta {
            id: WeightDelta::identity(&tensors).unwrap(),
            tensors,
        };
        let head = ClassifierHead::embedded(&dev)
            .unwrap()
            .with_encoder_delta(delta.clone(), DeltaStorage::Shared)
            .unwrap();
        let bytes = head.to_bytes().unwrap();
        let raw = candle_core::safetensors::load_buffer(&bytes, &dev).unwrap();
        assert!(
            !raw.keys().any(|k| k.starts_with(ENCODER_DELTA_PREFIX)),
            "no delta tensors stored"
        );
        let loaded = ClassifierHead::from_bytes(&bytes, "shared", &dev).unwrap();
        assert_eq!(
            loaded.metadata().encoder.delta_sha256.as_deref(),
            Some(delta.id.as_str())
        );
        assert!(
            loaded.encoder_delta().is_none(),
            "a shared delta is not this head's to apply"
        );
        // Delta tensors in a file that records its delta as shared: refused.
        let mut named: HashMap<String, Tensor> = raw.clone();
        named.insert(
            format!("{ENCODER_DELTA_PREFIX}x"),
            Tensor::new(&[[0.5f32, -0.5]], &dev).unwrap(),
        );
        let err = ClassifierHead::from_tensors(named, loaded.metadata().clone(), "shared").unwrap_err();
        assert!(err.to_string().contains("shared"), "{err}");
    }
}
