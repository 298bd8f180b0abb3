//! The classifier head over sentence embeddings: a small stack of linear layers (logistic regression is one layer),
//! stored as safetensors with everything needed to trust it in the file's metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use serde::{Deserialize, Serialize};

use crate::detector::category::HarmCategory;
use crate::detector::encoder::Windowing;
use crate::error::{Error, Result};
use crate::loading::read_file;

/// Key of the JSON metadata inside the safetensors header.
pub const METADATA_KEY: &str = "mllm_protector.head";
/// Metadata format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The head shipped with the crate, trained by `examples/train_detector.rs` on all-MiniLM-L6-v2.
pub(crate) static EMBEDDED_HEAD: &[u8] = include_bytes!("../../assets/minilm-harm-head.safetensors");

/// Which encoder a head was trained on. A head is only meaningful over that encoder's embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderIdentity {
    /// Human name, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub name: String,
    /// sha256 of the encoder's weight file.
    pub weights_sha256: String,
    /// Embedding width.
    pub dim: usize,
    /// The windowing used in training and to be used at inference.
    pub windowing: Windowing,
}

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
    /// `(categories, dim)`, unit rows: the mean embedding of each category's harmful training responses.
    centroids: Option<Tensor>,
    metadata: HeadMetadata,
}

/// Name of the category centroid tensor in a head file.
pub const CENTROIDS_TENSOR: &str = "categories.centroids";

impl ClassifierHead {
    /// The head embedded in the crate.
    pub fn embedded(device: &Device) -> Result<Self> {
        Self::from_bytes(EMBEDDED_HEAD, "embedded head", device)
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
        let valid_temperature = metadata.temperature.is_finite() && metadata.temperature > 0.0;
        if sizes.len() < 2 || sizes.last() != Some(&1) || !valid_probability || !valid_temperature {
            return Err(Error::BadConfig {
                what: format!("{what} metadata"),
                reason: format!(
                    "layer_sizes {sizes:?} must end in 1, threshold {} must be in [0, 1], temperature {} > 0",
                    metadata.threshold, metadata.temperature
                ),
            });
        }
        if sizes[0] != metadata.encoder.dim {
            return Err(Error::ShapeMismatch {
                what: format!("{what}: input width vs encoder"),
                expected: metadata.encoder.dim.to_string(),
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
        Ok(ClassifierHead {
            layers,
            centroids,
            metadata,
        })
    }

    /// The nearest category (cosine to the category centroids) of each embedding row; `None` when the head has no
    /// categories.
    pub fn categorize(&self, embeddings: &Tensor) -> Result<Option<Vec<HarmCategory>>> {
        let Some(centroids) = &self.centroids else {
            return Ok(None);
        };
        if embeddings.dim(0)? == 0 {
            return Ok(Some(Vec::new()));
        }
        let best = embeddings.matmul(&centroids.t()?)?.argmax(1)?.to_vec1::<u32>()?;
        Ok(Some(
            best.into_iter().map(|i| self.metadata.categories[i as usize]).collect(),
        ))
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

    /// Calibrated harm probabilities, `sigmoid(logit / temperature)`, one per embedding row.
    pub fn probabilities(&self, embeddings: &Tensor) -> Result<Vec<f32>> {
        let logits = (self.logits(embeddings)? / self.metadata.temperature as f64)?;
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
