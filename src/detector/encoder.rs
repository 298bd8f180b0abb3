//! Sentence encoder: candle-transformers' BERT on all-MiniLM-L6-v2, mean pooling over the attention mask, then L2
//! normalisation (the sentence-transformers recipe), with overlapping token windows so a long response is read whole.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::fused_bert::{FusedBert, Precision};
use super::segments::{Segmenting, topic_cuts};
use crate::error::{Error, Result};
use crate::loading::{ModelSource, checksum};

/// How a text longer than one window is cut: windows of `max_tokens` (special tokens included) that overlap by
/// `overlap` tokens, so a sentence cut at one window's edge is whole in the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windowing {
    /// Tokens per window, `[CLS]` and `[SEP]` included (all-MiniLM-L6-v2 was trained at 256).
    pub max_tokens: usize,
    /// Tokens shared by consecutive windows.
    pub overlap: usize,
    /// In a text longer than one window, each paragraph of at least this many tokens (and at most one window) is
    /// also read on its own; 0 turns paragraph reading off. Shorter fragments (headings, list items) are read only
    /// inside the fixed windows: alone they carry too little context to be judged.
    #[serde(default)]
    pub min_paragraph_tokens: usize,
    /// In a text longer than one window, spans of this many consecutive sentences (each sentence shared by two
    /// neighbouring spans) are also read on their own, so one harmful sentence inside a long harmless answer is not
    /// diluted by its neighbours; 0 turns span reading off. A text that fits one window is not split: its whole
    /// text is one window already, and most answers are that short, so they pay nothing for spans.
    #[serde(default)]
    pub span_sentences: usize,
}

impl Default for Windowing {
    fn default() -> Self {
        Windowing {
            max_tokens: 256,
            overlap: 64,
            min_paragraph_tokens: 48,
            span_sentences: 0,
        }
    }
}

impl Windowing {
    fn validate(&self, max_positions: usize) -> Result<()> {
        if self.max_tokens < 8 || self.max_tokens > max_positions {
            return Err(Error::BadConfig {
                what: "windowing".into(),
                reason: format!("max_tokens {} must be in 8..={max_positions}", self.max_tokens),
            });
        }
        if self.overlap >= self.max_tokens - 2 {
            return Err(Error::BadConfig {
                what: "windowing".into(),
                reason: format!("overlap {} must be below max_tokens - 2", self.overlap),
            });
        }
        Ok(())
    }
}

/// Fine-tuned weights stored as differences from a base model: each tensor is added to the base tensor of the same
/// name at load. Only the tuned tensors are stored, so a model whose top layers were fine-tuned ships as a few MB over
/// the pinned base instead of a whole copy.
#[derive(Debug, Clone, Default)]
pub struct WeightDelta {
    /// Differences by the base model's tensor names (any float dtype; applied in the base's dtype).
    pub tensors: HashMap<String, Tensor>,
    /// A stable identity of the delta (sha256 of its tensors), recorded with the head trained over it.
    pub id: String,
}

impl WeightDelta {
    /// Adds every difference to `base`; a name the base lacks, or a shape that differs, is an error.
    pub fn apply(&self, base: &mut HashMap<String, Tensor>, what: &str) -> Result<()> {
        self.check_names(|name| base.contains_key(name), what)?;
        for name in self.tensors.keys() {
            if let Some(tensor) = base.get(name) {
                let tuned = self.apply_to(name, tensor, what)?;
                base.insert(name.clone(), tuned);
            }
        }
        Ok(())
    }

    /// Every tensor the delta names must exist in the base model ([`Error::BadWeights`] otherwise).
    fn check_names(&self, base_has: impl Fn(&str) -> bool, what: &str) -> Result<()> {
        match self.tensors.keys().find(|name| !base_has(name)) {
            Some(name) => Err(Error::BadWeights {
                what: what.to_string(),
                reason: format!("the weight delta names `{name}`, which the base model lacks"),
            }),
            None => Ok(()),
        }
    }

    /// `tensor` (the base tensor called `name`) plus its difference, if the delta has one.
    fn apply_to(&self, name: &str, tensor: &Tensor, what: &str) -> Result<Tensor> {
        let Some(diff) = self.tensors.get(name) else {
            return Ok(tensor.clone());
        };
        if tensor.dims() != diff.dims() {
            return Err(Error::ShapeMismatch {
                what: format!("{what}: weight delta `{name}`"),
                expected: format!("{:?}", tensor.dims()),
                actual: format!("{:?}", diff.dims()),
            });
        }
        Ok((tensor + diff.to_dtype(tensor.dtype())?.to_device(tensor.device())?)?)
    }

    /// The identity of a set of difference tensors: sha256 over their sorted names, shapes and f32 values.
    pub fn identity(tensors: &HashMap<String, Tensor>) -> Result<String> {
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let mut bytes = Vec::new();
        for name in names {
            let t = &tensors[name];
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(format!("{:?}", t.dims()).as_bytes());
            for v in t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(checksum::sha256_hex(&bytes))
    }

    /// The delta in 8 bits per weight: for each tensor, `(codes, scales)` with `codes` u8 of the tensor's shape and
    /// one f32 scale per row (the first dimension; a vector is one row), `value = (code - 128) * scale`. Halves an f16
    /// delta's size. Each scale is the smallest power of two that fits the row's largest change in ±127 steps, so the
    /// rounding error is at most 1/127 of that change, and quantising a restored delta gives back the same codes and
    /// scales exactly (the identity recorded at training is the one found at load).
    pub fn quantize_u8(&self) -> Result<HashMap<String, (Tensor, Tensor)>> {
        let mut out = HashMap::with_capacity(self.tensors.len());
        for (name, t) in &self.tensors {
            let rows = as_rows(t)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            let mut codes = Vec::with_capacity(t.elem_count());
            let mut scales = Vec::with_capacity(rows.len());
            for row in rows {
                let largest = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = power_of_two_step(largest / 127.0);
                codes.extend(
                    row.iter()
                        .map(|v| ((v / scale).round().clamp(-127.0, 127.0) + 128.0) as u8),
                );
                scales.push(scale);
            }
            let device = t.device();
            let n = scales.len();
            out.insert(
                name.clone(),
                (
                    Tensor::from_vec(codes, t.dims(), device)?,
                    Tensor::from_vec(scales, n, device)?,
                ),
            );
        }
        Ok(out)
    }

    /// Rebuilds a delta from [`quantize_u8`](Self::quantize_u8)'s codes and scales (f32 values, identity recomputed);
    /// a scale count that does not match the codes' rows is a [`Error::ShapeMismatch`].
    pub fn dequantize_u8(parts: &HashMap<String, (Tensor, Tensor)>, what: &str) -> Result<Self> {
        let mut tensors = HashMap::with_capacity(parts.len());
        for (name, (codes, scales)) in parts {
            let rows = as_rows(codes)?;
            if codes.dtype() != DType::U8 || scales.dims() != [rows.dim(0)?] {
                return Err(Error::ShapeMismatch {
                    what: format!("{what}: 8-bit weight delta `{name}`"),
                    expected: format!("u8 codes with {} f32 row scales", rows.dim(0)?),
                    actual: format!("{:?} codes, scales {:?}", codes.dtype(), scales.dims()),
                });
            }
            let values = (rows.to_dtype(DType::F32)? - 128.0)?
                .broadcast_mul(&scales.to_dtype(DType::F32)?.unsqueeze(1)?)?
                .reshape(codes.dims())?;
            tensors.insert(name.clone(), values);
        }
        let id = Self::identity(&tensors)?;
        Ok(WeightDelta { tensors, id })
    }

    /// This delta as an 8-bit file will reproduce it: quantised and restored. Train a head over this, not over the
    /// original, so that the head matches the encoder it is shipped with exactly.
    pub fn rounded_to_u8(&self) -> Result<Self> {
        Self::dequantize_u8(&self.quantize_u8()?, "weight delta")
    }
}

/// The smallest power of two at or above `at_least` (1.0 for zero or a non-finite value, which no row should have).
fn power_of_two_step(at_least: f32) -> f32 {
    if !(at_least.is_finite() && at_least > 0.0) {
        return 1.0;
    }
    let mut step = 2f32.powi(at_least.log2().ceil() as i32);
    // log2 may land a hair off at exact powers of two; settle on the smallest one that is not below `at_least`.
    while step < at_least {
        step *= 2.0;
    }
    while step / 2.0 >= at_least && step / 2.0 > 0.0 {
        step /= 2.0;
    }
    step
}

/// A tensor as a matrix of rows: `[d0, rest]`, a vector or scalar as one row.
fn as_rows(t: &Tensor) -> Result<Tensor> {
    let dims = t.dims();
    Ok(match dims.len() {
        0 | 1 => t.reshape((1, t.elem_count()))?,
        _ => t.reshape((dims[0], t.elem_count() / dims[0].max(1)))?,
    })
}

/// Embeddings of every window of a batch of texts: row `i` of `embeddings` belongs to text `owner[i]`.
#[derive(Debug, Clone)]
pub struct WindowEmbeddings {
    /// `(windows, dim)`, each row L2-normalised.
    pub embeddings: Tensor,
    /// For each row, the index of the text it came from.
    pub owner: Vec<usize>,
    /// For each row, what part of its text it read: a detector may hold short spans and topic segments, read out
    /// of their context, to a stricter threshold.
    pub kind: Vec<WindowKind>,
}

/// What part of a text a window read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// A fixed window (the whole text, when it fits in one).
    Fixed,
    /// A paragraph of a longer text, on its own.
    Paragraph,
    /// A short span of sentences ([`Windowing::span_sentences`]).
    Span,
    /// A topic segment of a long text with no paragraph breaks ([`Segmenting`]).
    Segment,
}

impl WindowEmbeddings {
    /// Rows with their owners, all of them fixed windows.
    pub fn new(embeddings: Tensor, owner: Vec<usize>) -> Self {
        let kind = vec![WindowKind::Fixed; owner.len()];
        WindowEmbeddings {
            embeddings,
            owner,
            kind,
        }
    }
}

/// Something that turns texts into fixed-size vectors, window by window. The harm detector's head sits on top.
pub trait TextEncoder: Send + Sync {
    /// Width of one embedding.
    fn dim(&self) -> usize;
    /// A stable identity of the weights (their sha256), recorded with any head trained on this encoder.
    fn weights_sha256(&self) -> &str;
    /// Embeds every window of every text, in one batched pass.
    fn embed_windows(&self, texts: &[&str]) -> Result<WindowEmbeddings>;
    /// How the weights are held when they run ("f32", "f16", "int8"...): embeddings of the same weights at another
    /// precision differ slightly, so caches of embeddings key on it.
    fn precision(&self) -> &str {
        "f32"
    }

    /// [`embed_windows`](Self::embed_windows), taking windows already embedded from `cache` and adding the new
    /// ones, so a text read again as it grows (a streamed answer) pays only for the windows that changed. The
    /// default ignores the cache.
    fn embed_windows_cached(&self, texts: &[&str], cache: &mut WindowCache) -> Result<WindowEmbeddings> {
        let _ = cache;
        self.embed_windows(texts)
    }
}

/// Embeddings of token windows already read, keyed by the window's token ids: one per stream (or per caller that
/// reads the same text again), never shared between users, so a benchmark or a guard call never gets another's
/// work for free. Bounded: when full it starts over.
///
/// ```
/// use mllm_protector::detector::WindowCache;
/// let cache = WindowCache::new(1024);
/// assert_eq!((cache.hits(), cache.misses(), cache.len()), (0, 0, 0));
/// ```
#[derive(Debug, Clone)]
pub struct WindowCache {
    rows: HashMap<Vec<u32>, Vec<f32>>,
    max_entries: usize,
    hits: usize,
    misses: usize,
}

impl Default for WindowCache {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl WindowCache {
    /// An empty cache holding at most `max_entries` windows.
    pub fn new(max_entries: usize) -> Self {
        WindowCache {
            rows: HashMap::new(),
            max_entries: max_entries.max(1),
            hits: 0,
            misses: 0,
        }
    }

    /// Windows found in the cache so far.
    pub fn hits(&self) -> usize {
        self.hits
    }

    /// Windows that had to be embedded so far.
    pub fn misses(&self) -> usize {
        self.misses
    }

    /// Windows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn get(&mut self, window: &[u32]) -> Option<&Vec<f32>> {
        let row = self.rows.get(window);
        if row.is_some() {
            self.hits += 1;
        }
        row
    }

    fn insert(&mut self, window: Vec<u32>, row: Vec<f32>) {
        self.misses += 1;
        if self.rows.len() >= self.max_entries {
            self.rows.clear();
        }
        self.rows.insert(window, row);
    }
}

/// all-MiniLM-L6-v2 (or any BERT sentence-transformer): a fused forward pass on the CPU, candle-transformers' BERT on
/// other devices ([`WeightLayout`]).
pub struct SentenceEncoder {
    model: Forward,
    tokenizer: Tokenizer,
    device: Device,
    hidden: usize,
    cls: u32,
    sep: u32,
    pad: u32,
    windowing: Windowing,
    batch_size: usize,
    max_batch_tokens: usize,
    segmenting: Option<Segmenting>,
    weights_sha256: String,
}

/// How the encoder's weights are held in memory and run. The float layouts give the same embeddings to float
/// rounding (within 1e-4); the default holds int8 weights where the CPU has AVX-512 VNNI, which moves embeddings by
/// about 1% (cosine ≥ 0.99 to the f32 model's) and leaves the evaluation within a few answers
/// (BENCHMARKS.md, change 8). The candle variants stay for comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightLayout {
    /// What runs fastest on the device: on the CPU, a fused forward pass (`fused_bert`: element-wise work fused and
    /// spread over the cores, windows packed without padding) over int8 weights where the CPU has AVX-512 VNNI, else
    /// as [`WeightLayout::FusedFloat`]; elsewhere candle-transformers' BERT with the weights as stored. A model the
    /// fused pass does not implement (relative positions) runs as [`WeightLayout::CandleBert`].
    #[default]
    ForDevice,
    /// The fused forward pass on float weights: f16 where the CPU has AVX-512, f32 elsewhere. For embeddings that
    /// match the f32 model's to 1e-4 at some cost in speed; other devices as [`WeightLayout::ForDevice`].
    FusedFloat,
    /// candle-transformers' BERT with the linear weights column-major on the CPU, so that candle's matmul reads each
    /// weight in place instead of packing all of them on every call: the CPU path before the fused pass.
    CandleBert,
    /// candle-transformers' BERT with the weights as stored in `model.safetensors` (row-major).
    AsStored,
}

impl WeightLayout {
    /// The fused pass's precision for this layout, or `None` where candle-transformers' BERT runs.
    fn fused_precision(self) -> Option<Precision> {
        match self {
            WeightLayout::ForDevice => Some(Precision::Fastest),
            WeightLayout::FusedFloat => Some(Precision::Float),
            WeightLayout::CandleBert | WeightLayout::AsStored => None,
        }
    }
}

/// The forward pass an encoder runs.
enum Forward {
    Fused(FusedBert),
    Candle(BertModel),
}

/// The three files of a sentence-transformers model.
struct ModelFiles<'a> {
    config: &'a Path,
    tokenizer: &'a Path,
    weights: &'a Path,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("hidden", &self.hidden)
            .field("windowing", &self.windowing)
            .field("weights_sha256", &self.weights_sha256)
            .finish()
    }
}

impl SentenceEncoder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `source`. With `expected_sha256`, the
    /// weights must hash to it ([`Error::ChecksumMismatch`] otherwise).
    pub fn load(
        source: &ModelSource,
        device: &Device,
        windowing: Windowing,
        expected_sha256: Option<&str>,
    ) -> Result<Self> {
        Self::load_with_delta(source, device, windowing, expected_sha256, None)
    }

    /// Like [`load`](Self::load), then adds a fine-tuned [`WeightDelta`] to the base weights (the checksum is the
    /// base's). The encoder's identity becomes `<base sha256>+<delta id>`.
    pub fn load_with_delta(
        source: &ModelSource,
        device: &Device,
        windowing: Windowing,
        expected_sha256: Option<&str>,
        delta: Option<&WeightDelta>,
    ) -> Result<Self> {
        Self::load_with_layout(
            source,
            device,
            windowing,
            expected_sha256,
            delta,
            WeightLayout::default(),
        )
    }

    /// Like [`load_with_delta`](Self::load_with_delta), with the weights' layout and precision chosen (see
    /// [`WeightLayout`]).
    ///
    /// ```no_run
    /// use mllm_protector::detector::{SentenceEncoder, WeightLayout, Windowing};
    /// use mllm_protector::loading::{ModelSource, default_models_dir, pins};
    /// let source = ModelSource::Dir(default_models_dir().join(pins::MINILM_DIR_NAME));
    /// let cpu = candle_core::Device::Cpu;
    /// let as_stored =
    ///     SentenceEncoder::load_with_layout(&source, &cpu, Windowing::default(), None, None, WeightLayout::AsStored)?;
    /// # Ok::<(), mllm_protector::Error>(())
    /// ```
    pub fn load_with_layout(
        source: &ModelSource,
        device: &Device,
        windowing: Windowing,
        expected_sha256: Option<&str>,
        delta: Option<&WeightDelta>,
        layout: WeightLayout,
    ) -> Result<Self> {
        let (config, tokenizer, weights) = (
            source.resolve("config.json")?,
            source.resolve("tokenizer.json")?,
            source.resolve("model.safetensors")?,
        );
        let files = ModelFiles {
            config: &config,
            tokenizer: &tokenizer,
            weights: &weights,
        };
        Self::build(&files, device, windowing, expected_sha256, delta, layout)
    }

    /// Loads from three explicit files.
    pub fn from_files(
        config_path: &Path,
        tokenizer_path: &Path,
        weights_path: &Path,
        device: &Device,
        windowing: Windowing,
        expected_sha256: Option<&str>,
    ) -> Result<Self> {
        let files = ModelFiles {
            config: config_path,
            tokenizer: tokenizer_path,
            weights: weights_path,
        };
        Self::build(
            &files,
            device,
            windowing,
            expected_sha256,
            None,
            WeightLayout::default(),
        )
    }

    fn build(
        files: &ModelFiles<'_>,
        device: &Device,
        windowing: Windowing,
        expected_sha256: Option<&str>,
        delta: Option<&WeightDelta>,
        layout: WeightLayout,
    ) -> Result<Self> {
        let (config_path, tokenizer_path, weights_path) = (files.config, files.tokenizer, files.weights);
        let config_text = std::fs::read_to_string(config_path).map_err(|e| Error::io(config_path, e))?;
        let config: BertConfig = serde_json::from_str(&config_text).map_err(|e| Error::BadConfig {
            what: config_path.display().to_string(),
            reason: e.to_string(),
        })?;
        windowing.validate(config.max_position_embeddings)?;

        let mut tokenizer = Tokenizer::from_file(tokenizer_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
        // The packaged tokenizer.json pads and truncates to 128; windows and batches are built here instead.
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let special = |name: &str| {
            tokenizer
                .token_to_id(name)
                .ok_or_else(|| Error::Tokenizer(format!("{}: no {name} token", tokenizer_path.display())))
        };
        let (cls, sep, pad) = (special("[CLS]")?, special("[SEP]")?, special("[PAD]")?);

        let what = weights_path.display().to_string();
        let fused = layout
            .fused_precision()
            .filter(|_| device.is_cpu() && FusedBert::supports(&config));
        let relayout = device.is_cpu() && fused.is_none() && layout != WeightLayout::AsStored;
        let (mut weights_sha256, tensors) = read_tensors(weights_path, expected_sha256, device, delta, relayout)?;
        if let Some(delta) = delta {
            weights_sha256 = format!("{weights_sha256}+{}", delta.id);
        }
        let model = match fused {
            Some(precision) => Forward::Fused(FusedBert::from_tensors(tensors, &config, &what, precision)?),
            None => {
                let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
                Forward::Candle(BertModel::load(vb, &config).map_err(|e| Error::from_load(&what, e))?)
            }
        };
        Ok(SentenceEncoder {
            model,
            tokenizer,
            device: device.clone(),
            hidden: config.hidden_size,
            cls,
            sep,
            pad,
            windowing,
            batch_size: 32,
            max_batch_tokens: MAX_BATCH_TOKENS,
            segmenting: None,
            weights_sha256,
        })
    }

    /// Batches at most `tokens` padded tokens (windows × longest window) at a time, and 32 windows at most
    /// (default [`MAX_BATCH_TOKENS`]). The embeddings do not depend on it, only the speed; `usize::MAX` batches by
    /// 32 windows whatever their length.
    pub fn with_max_batch_tokens(mut self, tokens: usize) -> Self {
        self.max_batch_tokens = tokens.max(1);
        self
    }

    /// The tokenizer (padding and truncation off).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The windowing in use.
    pub fn windowing(&self) -> Windowing {
        self.windowing
    }

    /// Token windows of `text`, each `[CLS] … [SEP]`. A text that fits in one window gives exactly the ids
    /// sentence-transformers would feed BERT.
    ///
    /// A text longer than one window is read twice: in overlapping fixed windows, and paragraph by paragraph
    /// (blank-line separated; each paragraph of `min_paragraph_tokens` up to one window, on its own). Fixed windows cut paragraphs at
    /// arbitrary points and mix them with their neighbours; a harmful paragraph inside a long harmless text would be
    /// diluted in every fixed window, but read alone it is not.
    pub fn token_windows(&self, text: &str) -> Result<Vec<Vec<u32>>> {
        Ok(self.windows_and_kinds(text)?.windows)
    }

    /// Also reads the topic segments of a text longer than one window that has no paragraph breaks ([`Segmenting`];
    /// `None`, the default here, reads none). A segment costs a second pass: the cuts come from sentence embeddings.
    pub fn with_segmenting(mut self, segmenting: Option<Segmenting>) -> Self {
        self.segmenting = segmenting;
        self
    }

    /// Every window of every text, with its owner and kind, and the texts to be read in topic segments.
    #[allow(clippy::type_complexity)]
    fn all_windows(&self, texts: &[&str]) -> Result<(Vec<Vec<u32>>, Vec<usize>, Vec<WindowKind>, Vec<usize>)> {
        let mut all = Vec::new();
        let mut owner = Vec::new();
        let mut kind = Vec::new();
        let mut to_segment = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let read = self.windows_and_kinds(text)?;
            owner.extend(std::iter::repeat_n(i, read.windows.len()));
            kind.extend(read.kinds);
            all.extend(read.windows);
            if read.one_long_paragraph && self.segmenting.is_some() {
                to_segment.push(i);
            }
        }
        Ok((all, owner, kind, to_segment))
    }

    /// Fixed windows over `ids` (at least one), each `[CLS] … [SEP]`.
    fn fixed_windows(&self, ids: &[u32]) -> Vec<Vec<u32>> {
        let body = self.windowing.max_tokens - 2;
        let step = body - self.windowing.overlap;
        let mut windows = Vec::with_capacity(ids.len() / step + 1);
        let mut start = 0;
        loop {
            let end = (start + body).min(ids.len());
            windows.push(self.wrap(&ids[start..end]));
            if end >= ids.len() {
                break;
            }
            start += step;
        }
        windows
    }

    /// [`token_windows`](Self::token_windows) with each window's kind, and whether the text is longer than one
    /// window with no paragraph breaks (a candidate for topic segments).
    fn windows_and_kinds(&self, text: &str) -> Result<TextWindows> {
        let ids = self.encode(text)?;
        let body = self.windowing.max_tokens - 2;
        let mut windows = self.fixed_windows(&ids);
        let long = windows.len() > 1;
        let mut kinds = vec![WindowKind::Fixed; windows.len()];
        let mut one_long_paragraph = false;
        if long {
            let paragraphs: Vec<&str> = text.split("\n\n").filter(|p| !p.trim().is_empty()).collect();
            one_long_paragraph = paragraphs.len() <= 1;
            if paragraphs.len() > 1 && self.windowing.min_paragraph_tokens > 0 {
                for paragraph in paragraphs {
                    let ids = self.encode(paragraph)?;
                    if ids.len() >= self.windowing.min_paragraph_tokens && ids.len() <= body {
                        windows.push(self.wrap(&ids));
                        kinds.push(WindowKind::Paragraph);
                    }
                }
            }
        }
        if long && self.windowing.span_sentences > 0 {
            for span in sentence_spans(text, self.windowing.span_sentences) {
                let mut ids = self.encode(span)?;
                ids.truncate(body);
                let window = self.wrap(&ids);
                if ids.len() >= MIN_SPAN_TOKENS && !windows.contains(&window) {
                    windows.push(window);
                    kinds.push(WindowKind::Span);
                }
            }
        }
        Ok(TextWindows {
            windows,
            kinds,
            one_long_paragraph,
        })
    }

    /// The windows of `text`'s topic segments (none when it has a single topic): each sentence is embedded (its
    /// first window), cut where the topic changes ([`topic_cuts`]), and each segment read in fixed windows.
    fn segment_windows(
        &self,
        text: &str,
        segmenting: &Segmenting,
        cache: Option<&mut WindowCache>,
    ) -> Result<Vec<Vec<u32>>> {
        let sentences = sentence_spans(text, 1);
        if sentences.len() < 2 {
            return Ok(Vec::new());
        }
        let body = self.windowing.max_tokens - 2;
        let mut sentence_windows = Vec::with_capacity(sentences.len());
        for sentence in &sentences {
            let mut ids = self.encode(sentence)?;
            ids.truncate(body);
            sentence_windows.push(self.wrap(&ids));
        }
        let rows = match cache {
            Some(cache) => self.embed_rows_cached(&sentence_windows, cache)?,
            None => self.embed_token_windows(&sentence_windows)?.to_vec2::<f32>()?,
        };
        let cuts = topic_cuts(&rows, segmenting.context_sentences, segmenting.max_similarity);
        if cuts.is_empty() {
            return Ok(Vec::new());
        }
        let offset = |s: &str| s.as_ptr() as usize - text.as_ptr() as usize;
        let mut windows = Vec::new();
        let mut first = 0;
        for end in cuts.into_iter().chain([sentences.len()]) {
            let (a, b) = (sentences[first], sentences[end - 1]);
            let segment = &text[offset(a)..offset(b) + b.len()];
            windows.extend(self.fixed_windows(&self.encode(segment)?));
            first = end;
        }
        Ok(windows)
    }

    /// Every window of `texts` (topic segments included), embedded through `cache` when one is given.
    fn read(&self, texts: &[&str], mut cache: Option<&mut WindowCache>) -> Result<WindowEmbeddings> {
        let (mut all, mut owner, mut kind, to_segment) = self.all_windows(texts)?;
        if let Some(segmenting) = self.segmenting {
            for i in to_segment {
                for window in self.segment_windows(texts[i], &segmenting, cache.as_deref_mut())? {
                    all.push(window);
                    owner.push(i);
                    kind.push(WindowKind::Segment);
                }
            }
        }
        let embeddings = match cache {
            Some(cache) => {
                let flat: Vec<f32> = self.embed_rows_cached(&all, cache)?.into_iter().flatten().collect();
                Tensor::from_vec(flat, (all.len(), self.hidden), &self.device)?
            }
            None => self.embed_token_windows(&all)?,
        };
        Ok(WindowEmbeddings {
            embeddings,
            owner,
            kind,
        })
    }

    /// Rows for `windows`, taking those already in `cache` and adding the others.
    fn embed_rows_cached(&self, windows: &[Vec<u32>], cache: &mut WindowCache) -> Result<Vec<Vec<f32>>> {
        let mut rows: Vec<Option<Vec<f32>>> = windows.iter().map(|w| cache.get(w).cloned()).collect();
        let missing: Vec<usize> = (0..windows.len()).filter(|&i| rows[i].is_none()).collect();
        if !missing.is_empty() {
            let to_embed: Vec<Vec<u32>> = missing.iter().map(|&i| windows[i].clone()).collect();
            let embedded = self.embed_token_windows(&to_embed)?.to_vec2::<f32>()?;
            for ((i, window), row) in missing.into_iter().zip(to_embed).zip(embedded) {
                cache.insert(window, row.clone());
                rows[i] = Some(row);
            }
        }
        Ok(rows.into_iter().flatten().collect())
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn wrap(&self, ids: &[u32]) -> Vec<u32> {
        let mut window = Vec::with_capacity(ids.len() + 2);
        window.push(self.cls);
        window.extend_from_slice(ids);
        window.push(self.sep);
        window
    }

    /// Embeds each text as sentence-transformers does (first window only, i.e. truncated at `max_tokens`).
    pub fn embed_truncated(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut firsts = Vec::with_capacity(texts.len());
        for text in texts {
            let mut windows = self.token_windows(text)?;
            windows.truncate(1);
            firsts.extend(windows);
        }
        self.embed_token_windows(&firsts)?.to_vec2::<f32>().map_err(Error::from)
    }

    /// Embeds token windows (each already `[CLS] … [SEP]`), batched by similar length; rows keep input order.
    pub fn embed_token_windows(&self, windows: &[Vec<u32>]) -> Result<Tensor> {
        if windows.is_empty() {
            return Ok(Tensor::zeros((0, self.hidden), DType::F32, &self.device)?);
        }
        // Sorting by length keeps padding (wasted compute) small inside each batch.
        let mut order: Vec<usize> = (0..windows.len()).collect();
        order.sort_by_key(|&i| windows[i].len());
        let model = match &self.model {
            Forward::Fused(fused) => return self.embed_fused(fused, windows, &order),
            Forward::Candle(model) => model,
        };
        let mut rows: Vec<Option<Tensor>> = vec![None; windows.len()];
        for chunk in token_budget_batches(&order, |i| windows[i].len(), self.batch_size, self.max_batch_tokens) {
            let longest = chunk.iter().map(|&i| windows[i].len()).max().unwrap_or(0);
            let mut ids = Vec::with_capacity(chunk.len() * longest);
            let mut mask = Vec::with_capacity(chunk.len() * longest);
            for &i in chunk {
                let w = &windows[i];
                ids.extend_from_slice(w);
                ids.extend(std::iter::repeat_n(self.pad, longest - w.len()));
                mask.extend(std::iter::repeat_n(1u32, w.len()));
                mask.extend(std::iter::repeat_n(0u32, longest - w.len()));
            }
            let shape = (chunk.len(), longest);
            let ids = Tensor::from_vec(ids, shape, &self.device)?;
            let mask = Tensor::from_vec(mask, shape, &self.device)?;
            let token_types = ids.zeros_like()?;
            let hidden = model.forward(&ids, &token_types, Some(&mask))?;
            let pooled = mean_pool_normalized(&hidden, &mask)?;
            for (row, &i) in chunk.iter().enumerate() {
                rows[i] = Some(pooled.get(row)?);
            }
        }
        let rows: Vec<Tensor> = rows.into_iter().flatten().collect();
        Ok(Tensor::stack(&rows, 0)?)
    }

    /// The fused CPU pass: windows of a batch are packed without padding, so the batches only bound memory.
    fn embed_fused(&self, fused: &FusedBert, windows: &[Vec<u32>], order: &[usize]) -> Result<Tensor> {
        let h = self.hidden;
        let mut out = vec![0.0f32; windows.len() * h];
        for chunk in token_budget_batches(order, |i| windows[i].len(), self.batch_size, self.max_batch_tokens) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| windows[i].as_slice()).collect();
            let rows = fused.embed(&batch)?;
            for (row, &i) in rows.chunks_exact(h).zip(chunk) {
                out[i * h..(i + 1) * h].copy_from_slice(row);
            }
        }
        Ok(Tensor::from_vec(out, (windows.len(), h), &self.device)?)
    }
}

impl TextEncoder for SentenceEncoder {
    fn dim(&self) -> usize {
        self.hidden
    }

    fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }

    fn embed_windows(&self, texts: &[&str]) -> Result<WindowEmbeddings> {
        self.read(texts, None)
    }

    fn precision(&self) -> &str {
        match &self.model {
            Forward::Fused(fused) => fused.precision(),
            Forward::Candle(_) => "f32",
        }
    }

    fn embed_windows_cached(&self, texts: &[&str], cache: &mut WindowCache) -> Result<WindowEmbeddings> {
        self.read(texts, Some(cache))
    }
}

/// The windows of one text.
struct TextWindows {
    windows: Vec<Vec<u32>>,
    kinds: Vec<WindowKind>,
    /// Longer than one window, with no paragraph breaks.
    one_long_paragraph: bool,
}

/// A span shorter than this (a heading, a list number) carries too little to be judged alone.
const MIN_SPAN_TOKENS: usize = 8;

/// Default for the most tokens in one batch of windows ([`SentenceEncoder::with_max_batch_tokens`]). Attention's
/// score matrices grow with batch × length²: 32 windows of 256 tokens hold 100 MB of scores per layer, far past the
/// caches, while short windows gain from large batches (BENCHMARKS.md, "Against PyTorch and ONNX Runtime").
pub const MAX_BATCH_TOKENS: usize = 2048;

/// Cuts `order` (sorted by length, shortest first) into batches of at most `max_windows` windows whose padded size
/// (windows × longest) stays within `max_tokens`; a window longer than that goes alone.
fn token_budget_batches(
    order: &[usize],
    len: impl Fn(usize) -> usize,
    max_windows: usize,
    max_tokens: usize,
) -> Vec<&[usize]> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        // Sorted ascending, so the last window of a batch is its longest.
        while end < order.len()
            && end - start < max_windows
            && (end + 1 - start).saturating_mul(len(order[end])) <= max_tokens
        {
            end += 1;
        }
        batches.push(&order[start..end]);
        start = end;
    }
    batches
}

/// Spans of `n` consecutive sentences, starting every `n - 1` sentences (so each pair of neighbouring sentences is
/// whole in some span), as slices of `text`. A sentence ends after `.`, `!` or `?` followed by whitespace, or at a
/// line break.
///
/// ```
/// use mllm_protector::detector::encoder::sentence_spans;
/// let spans = sentence_spans("One. Two! Three? Four.\nFive", 2);
/// assert_eq!(spans, ["One. Two!", "Two! Three?", "Three? Four.", "Four.\nFive"]);
/// ```
pub fn sentence_spans(text: &str, n: usize) -> Vec<&str> {
    // Sentence boundaries as byte ranges of `text`, whitespace between sentences excluded.
    let mut sentences: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if start.is_none() && !c.is_whitespace() {
            start = Some(i);
        }
        let next_is_space = chars.peek().is_none_or(|&(_, n)| n.is_whitespace());
        let ends = c == '\n' || (matches!(c, '.' | '!' | '?') && next_is_space);
        if let (true, Some(s)) = (ends, start) {
            let end = if c == '\n' { i } else { i + c.len_utf8() };
            if text[s..end].trim().is_empty() {
                start = None;
                continue;
            }
            sentences.push((s, end));
            start = None;
        }
    }
    if let Some(s) = start {
        let end = text.trim_end().len();
        if end > s {
            sentences.push((s, end));
        }
    }
    if n == 0 || sentences.is_empty() {
        return Vec::new();
    }
    let step = n.saturating_sub(1).max(1);
    let mut spans = Vec::new();
    let mut first = 0;
    loop {
        let last = (first + n).min(sentences.len()) - 1;
        spans.push(&text[sentences[first].0..sentences[last].1]);
        if last + 1 >= sentences.len() {
            break;
        }
        first += step;
    }
    spans
}

/// The largest safetensors header read (the format's own limit).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Reads a safetensors file tensor by tensor, hashing every byte as it is read, and returns its sha256 and the
/// tensors, each with its fine-tuned difference added and, with `relayout`, stored column-major if it is a linear
/// layer's weight ([`is_linear_weight`]).
///
/// Why one tensor at a time: only one tensor's raw bytes are in memory beside the model, never a second copy of the
/// whole file (a freed whole-model copy would stay in the allocator's pools). What is checked is exactly what was
/// loaded. With `expected_sha256`, a file that differs is an [`Error::ChecksumMismatch`] whatever else is wrong
/// with it (a truncated download is reported as one); without it, a damaged file is an [`Error::BadWeights`].
fn read_tensors(
    path: &Path,
    expected_sha256: Option<&str>,
    device: &Device,
    delta: Option<&WeightDelta>,
    relayout: bool,
) -> Result<(String, HashMap<String, Tensor>)> {
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut reader = checksum::HashingReader::new(std::io::BufReader::with_capacity(1 << 20, file));
    let parsed = parse_tensors(&mut reader, len, &what, device, delta, relayout);
    let sha256 = reader.finish().map_err(|e| Error::io(path, e))?;
    if let Some(expected) = expected_sha256 {
        checksum::verify_digest(path, sha256.clone(), expected)?;
    }
    Ok((sha256, parsed?))
}

/// The parsing half of [`read_tensors`]: header, then every tensor in the order of its bytes.
fn parse_tensors(
    reader: &mut impl std::io::Read,
    len: u64,
    what: &str,
    device: &Device,
    delta: Option<&WeightDelta>,
    relayout: bool,
) -> Result<HashMap<String, Tensor>> {
    let bad = |reason: String| Error::BadWeights {
        what: what.to_string(),
        reason,
    };
    let read_err = |e: std::io::Error| bad(format!("reading the file: {e}"));
    let mut n = [0u8; 8];
    reader.read_exact(&mut n).map_err(read_err)?;
    let n = u64::from_le_bytes(n);
    if n > MAX_SAFETENSORS_HEADER || n.saturating_add(8) > len {
        return Err(bad(format!("a {n}-byte header does not fit the {len}-byte file")));
    }
    let mut header = vec![0u8; n as usize];
    reader.read_exact(&mut header).map_err(read_err)?;
    // `Metadata`'s own deserialisation checks that the tensors lie back to back and match their dtypes and shapes.
    let metadata: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| bad(format!("safetensors header: {e}")))?;
    let names = metadata.offset_keys();
    let data_len = names
        .last()
        .and_then(|name| metadata.info(name))
        .map_or(0, |info| info.data_offsets.1 as u64);
    let described = 8u64.saturating_add(n).saturating_add(data_len);
    if described != len {
        return Err(bad(format!(
            "the header describes {described} bytes, the file has {len}"
        )));
    }
    if let Some(delta) = delta {
        delta.check_names(|name| metadata.info(name).is_some(), what)?;
    }
    let mut tensors = HashMap::with_capacity(names.len());
    let mut raw = Vec::new();
    for name in names {
        let Some(info) = metadata.info(&name) else {
            continue;
        };
        let dtype = match info.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::U8 => DType::U8,
            safetensors::Dtype::U32 => DType::U32,
            safetensors::Dtype::I64 => DType::I64,
            other => return Err(bad(format!("tensor {name}: dtype {other:?} is not supported"))),
        };
        raw.resize(info.data_offsets.1 - info.data_offsets.0, 0);
        reader.read_exact(&mut raw).map_err(read_err)?;
        let mut tensor =
            Tensor::from_raw_buffer(&raw, dtype, &info.shape, device).map_err(|e| Error::from_load(what, e))?;
        if let Some(delta) = delta {
            tensor = delta.apply_to(&name, &tensor, what)?;
        }
        if relayout && is_linear_weight(&name, &tensor) {
            tensor = column_major(&tensor).map_err(|e| Error::from_load(what, e))?;
        }
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

/// A linear layer's `(out, in)` weight: embedding tables are gathered by row, not multiplied, and stay as stored.
fn is_linear_weight(name: &str, tensor: &Tensor) -> bool {
    tensor.rank() == 2 && name.ends_with(".weight") && !name.contains("embeddings")
}

/// The same matrix, stored column-major (the same shape, transposed strides).
///
/// Why: `Linear` multiplies by the weight's transpose. Stored row-major, that transpose reaches candle's CPU matmul
/// (the `gemm` crate) as a row-major left operand, which `gemm` copies into its packed layout on every call: for a
/// short window that copy of all 10.6 M linear weights costs more than the arithmetic. Column-major, it is read in place.
/// The values, and therefore the embeddings, are unchanged.
fn column_major(weight: &Tensor) -> candle_core::Result<Tensor> {
    weight.t()?.contiguous()?.t()
}

/// Mean over the tokens the mask keeps, then L2 normalisation (sentence-transformers' Pooling + Normalize).
/// `hidden` is `(batch, tokens, dim)`, `mask` `(batch, tokens)` of 0/1.
pub fn mean_pool_normalized(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-tensor safetensors file, as bytes.
    fn small_safetensors() -> Vec<u8> {
        let a = Tensor::from_vec((0..6).map(|i| i as f32).collect::<Vec<_>>(), (2, 3), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(vec![7u32, 8], 2, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        candle_core::safetensors::save(&HashMap::from([("a.weight", a), ("b", b)]), &path).unwrap();
        std::fs::read(&path).unwrap()
    }

    fn parse(bytes: &[u8], relayout: bool) -> Result<HashMap<String, Tensor>> {
        parse_tensors(
            &mut &bytes[..],
            bytes.len() as u64,
            "test",
            &Device::Cpu,
            None,
            relayout,
        )
    }

    #[test]
    fn tensors_are_read_one_by_one_with_their_values() {
        let bytes = small_safetensors();
        let t = parse(&bytes, true).unwrap();
        assert_eq!(
            t["a.weight"].to_vec2::<f32>().unwrap(),
            [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
        );
        assert!(
            !t["a.weight"].is_contiguous(),
            "a linear weight is laid out column-major"
        );
        assert_eq!(t["b"].to_vec1::<u32>().unwrap(), [7, 8]);
        // The file's sha256 is that of every byte, read in one pass.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let (sha, _) = read_tensors(&path, None, &Device::Cpu, None, false).unwrap();
        assert_eq!(sha, checksum::sha256_hex(&bytes));
    }

    #[test]
    fn a_file_longer_shorter_or_lying_about_its_header_is_bad_weights() {
        let bytes = small_safetensors();
        let mut longer = bytes.clone();
        longer.push(0);
        let short = &bytes[..bytes.len() - 1];
        let mut huge_header = bytes.clone();
        huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        for (name, b) in [
            ("longer", &longer[..]),
            ("shorter", short),
            ("huge header", &huge_header[..]),
        ] {
            let err = parse(b, false).unwrap_err();
            assert!(matches!(err, Error::BadWeights { .. }), "{name}: {err}");
        }
        // With a pinned sha256, the same damage is a checksum mismatch.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        std::fs::write(&path, short).unwrap();
        let pinned = checksum::sha256_hex(&bytes);
        let err = read_tensors(&path, Some(&pinned), &Device::Cpu, None, false).unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    }

    #[test]
    fn batches_keep_to_the_token_budget_and_the_window_count() {
        // Lengths sorted ascending: 40 short windows, then 20 of 256 tokens, then one over the budget.
        let lens: Vec<usize> = [vec![16; 40], vec![256; 20], vec![4096]].concat();
        let order: Vec<usize> = (0..lens.len()).collect();
        let batches = token_budget_batches(&order, |i| lens[i], 32, MAX_BATCH_TOKENS);
        assert_eq!(
            batches.iter().map(|b| b.len()).sum::<usize>(),
            lens.len(),
            "every window once"
        );
        for b in &batches {
            let longest = b.iter().map(|&i| lens[i]).max().unwrap();
            assert!(b.len() <= 32);
            assert!(
                b.len() == 1 || b.len() * longest <= MAX_BATCH_TOKENS,
                "{} x {longest}",
                b.len()
            );
        }
        assert_eq!(batches[0].len(), 32, "short windows fill the window count");
        assert_eq!(batches.last().unwrap().len(), 1, "a window over the budget goes alone");
        assert!(
            batches.iter().any(|b| b.len() == 8 && lens[b[0]] == 256),
            "8 windows of 256 = 2,048 tokens"
        );
    }

    #[test]
    fn a_weight_delta_adds_and_rejects_unknown_names_and_shapes() {
        let dev = Device::Cpu;
        let mut base = HashMap::from([("a".to_string(), Tensor::new(&[1f32, 2.0], &dev).unwrap())]);
        let delta = WeightDelta {
            tensors: HashMap::from([(
                "a".to_string(),
                Tensor::new(&[0.5f32, -1.0], &dev)
                    .unwrap()
                    .to_dtype(DType::F16)
                    .unwrap(),
            )]),
            id: "d".into(),
        };
        delta.apply(&mut base, "test").unwrap();
        assert_eq!(base["a"].to_vec1::<f32>().unwrap(), vec![1.5, 1.0]);
        let unknown = WeightDelta {
            tensors: HashMap::from([("b".to_string(), Tensor::new(&[1f32], &dev).unwrap())]),
            id: "u".into(),
        };
        assert!(matches!(
            unknown.apply(&mut base, "test"),
            Err(Error::BadWeights { .. })
        ));
        let misshapen = WeightDelta {
            tensors: HashMap::from([("a".to_string(), Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap())]),
            id: "m".into(),
        };
        assert!(matches!(
            misshapen.apply(&mut base, "test"),
            Err(Error::ShapeMismatch { .. })
        ));
        let id = WeightDelta::identity(&delta.tensors).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, WeightDelta::identity(&misshapen.tensors).unwrap());
    }

    #[test]
    fn an_8_bit_delta_restores_within_a_step_is_stable_and_rejects_wrong_scales() {
        let dev = Device::Cpu;
        let matrix = Tensor::new(&[[0.5f32, -0.25, 0.001], [0.0, 0.0, 0.0]], &dev).unwrap();
        let vector = Tensor::new(&[-3f32, 1.0], &dev).unwrap();
        let delta = WeightDelta {
            tensors: HashMap::from([("m".to_string(), matrix.clone()), ("v".to_string(), vector.clone())]),
            id: "d".into(),
        };
        let parts = delta.quantize_u8().unwrap();
        assert_eq!(parts["m"].0.dtype(), DType::U8);
        assert_eq!(parts["m"].1.dims(), [2]);
        let restored = WeightDelta::dequantize_u8(&parts, "test").unwrap();
        let m = restored.tensors["m"].to_vec2::<f32>().unwrap();
        assert!((m[0][0] - 0.5).abs() <= 0.5 / 127.0, "{}", m[0][0]);
        assert!((m[0][1] + 0.25).abs() <= 0.5 / 127.0);
        assert!(
            (m[0][2] - 0.001).abs() <= 0.5 / 127.0,
            "small changes round within a step: {}",
            m[0][2]
        );
        assert_eq!(m[1], vec![0.0, 0.0, 0.0], "an all-zero row stays zero");
        let v = restored.tensors["v"].to_vec1::<f32>().unwrap();
        assert!((v[0] + 3.0).abs() <= 3.0 / 127.0 && (v[1] - 1.0).abs() <= 3.0 / 127.0);
        // Restoring twice gives the same values, so the identity recorded at training matches the loaded delta.
        let again = restored.rounded_to_u8().unwrap();
        assert_eq!(again.id, restored.id);
        let mut wrong = parts.clone();
        wrong.insert("m".into(), (parts["m"].0.clone(), Tensor::new(&[1f32], &dev).unwrap()));
        assert!(matches!(
            WeightDelta::dequantize_u8(&wrong, "test"),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
