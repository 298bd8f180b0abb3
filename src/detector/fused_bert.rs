//! BERT's forward pass on the CPU in a few fused passes, for sentence embeddings.
//!
//! Why it exists beside candle-transformers' BERT (which every other device uses): run one operation at a time, that
//! model spends more than half of a window's time outside the matrix products on this machine kind (BENCHMARKS.md,
//! change 6): each bias add, residual, GELU (a scalar `erf` on one core), softmax and head transpose is its own pass
//! over memory with its own allocation, and padded tokens are computed like real ones. Here the weights are the same
//! tensors; the passes are fused, element-wise work is vectorisable and spread over the cores, the windows of a batch
//! are packed without padding (attention runs per window), and the attention heads read the projections in place.
//! The result matches candle's model to float rounding (`tests` below, and `tests/encoder_reference.rs` against
//! sentence-transformers).

use std::collections::HashMap;

use candle_core::{DType, Storage, Tensor};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct, PositionEmbeddingType};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use super::half_dense::{self, HalfMatrix};
use super::int8_dense::{self, Int8Matrix};
use crate::error::{Error, Result};

/// Token rows per parallel task in element-wise steps: fewer, and a short answer's steps would cost more in
/// hand-offs between threads than in arithmetic.
const ROWS_PER_TASK: usize = 32;

/// A linear layer with its weight stored transposed, `(inputs, outputs)` row-major, which the `gemm` crate reads as
/// the right-hand operand.
struct Dense {
    weight_t: Weights,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

/// How a linear layer's weights are held.
enum Weights {
    /// f16 (`half_dense`), where the CPU has AVX-512: the direct kernel reads them in place for few rows; for more,
    /// they are widened into f32 for `gemm`.
    Half(HalfMatrix),
    /// f32, elsewhere: without the direct kernel, f16 weights would be widened on every product.
    Full(Vec<f32>),
    /// int8 per column (`int8_dense`), where the CPU has AVX-512 VNNI: every product in integers.
    Int8(Int8Matrix),
}

/// Which [`Weights`] the fused pass holds, as [`WeightLayout`](super::WeightLayout) asks; the tests name each to run
/// them all on any CPU that has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precision {
    /// int8 where the CPU has AVX-512 VNNI, else as `Float`.
    Fastest,
    /// f16 where the direct kernel runs (AVX-512), else f32.
    Float,
    /// f16, whatever the CPU (products then widen them where the kernel cannot run).
    Half,
    /// f32.
    Full,
    /// int8 (errors at load where the CPU lacks AVX-512 VNNI).
    Int8,
}

impl Precision {
    /// The concrete precision on this CPU (never `Fastest` or `Float`).
    fn resolve(self) -> Result<Self> {
        match self {
            Precision::Fastest if int8_dense::available() => Ok(Precision::Int8),
            Precision::Fastest | Precision::Float if half_dense::direct_available() => Ok(Precision::Half),
            Precision::Fastest | Precision::Float => Ok(Precision::Full),
            Precision::Int8 if !int8_dense::available() => {
                Err(Error::Device("int8 weights need a CPU with AVX-512 VNNI".into()))
            }
            other => Ok(other),
        }
    }

    /// How the linear weights are held, as a word for reports and cache keys.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Precision::Fastest => "fastest",
            Precision::Float => "float",
            Precision::Half => "f16",
            Precision::Full => "f32",
            Precision::Int8 => "int8",
        }
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value in one product: outputs `[q | k | v]`.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    up: Dense,
    down: Dense,
    output_norm: Norm,
}

/// The BERT encoder of a sentence-transformer, run on the CPU in fused passes.
pub(crate) struct FusedBert {
    hidden: usize,
    heads: usize,
    eps: f32,
    activation: HiddenAct,
    vocab: usize,
    max_positions: usize,
    /// The word-embedding table, the largest tensor (a third of MiniLM's weights), is read in place from the loaded
    /// tensor rather than copied, so loading never holds it twice (contiguous f32 on the CPU, checked at load).
    word: Tensor,
    position: Vec<f32>,
    /// Token type 0's row: every window is one segment.
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    precision: Precision,
}

impl FusedBert {
    /// Whether this forward pass implements `config` (absolute positions; any of BERT's activations).
    pub(crate) fn supports(config: &BertConfig) -> bool {
        matches!(config.position_embedding_type, PositionEmbeddingType::Absolute)
            && config.num_attention_heads > 0
            && config.hidden_size.is_multiple_of(config.num_attention_heads)
            && config.type_vocab_size > 0
    }

    /// Takes the model's tensors (as named in `model.safetensors`, linear weights `(out, in)` row-major), freeing
    /// each once copied, and holds the linear weights as `precision` says. `what` names the file in errors.
    pub(crate) fn from_tensors(
        mut tensors: HashMap<String, Tensor>,
        config: &BertConfig,
        what: &str,
        precision: Precision,
    ) -> Result<Self> {
        let precision = precision.resolve()?;
        if !Self::supports(config) {
            return Err(Error::BadConfig {
                what: what.to_string(),
                reason: "the fused CPU forward pass needs absolute positions and heads that divide the width".into(),
            });
        }
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let h = config.hidden_size;
        let mut store = Store {
            tensors: &mut tensors,
            prefix,
            what,
            precision,
        };
        let word = store.take_tensor("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let word = word.to_dtype(DType::F32)?.contiguous()?;
        if !word.device().is_cpu() {
            return Err(Error::Device("the fused forward pass runs on the CPU".into()));
        }
        let position = store.take(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let mut token_type = store.take("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?;
        token_type.truncate(h);
        let embedding_norm = store.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let qkv = store.dense_stacked(
                &[
                    &format!("{p}.attention.self.query"),
                    &format!("{p}.attention.self.key"),
                    &format!("{p}.attention.self.value"),
                ],
                h,
                h,
            )?;
            layers.push(Layer {
                qkv,
                attention_out: store.dense_stacked(&[&format!("{p}.attention.output.dense")], h, h)?,
                attention_norm: store.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                up: store.dense_stacked(&[&format!("{p}.intermediate.dense")], h, config.intermediate_size)?,
                down: store.dense_stacked(&[&format!("{p}.output.dense")], config.intermediate_size, h)?,
                output_norm: store.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(FusedBert {
            hidden: h,
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps as f32,
            activation: config.hidden_act,
            vocab: config.vocab_size,
            max_positions: config.max_position_embeddings,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            precision,
        })
    }

    /// How the linear weights are held on this CPU ("int8", "f16" or "f32").
    pub(crate) fn precision(&self) -> &'static str {
        self.precision.name()
    }

    /// Mean-pooled, L2-normalised embeddings of `windows` (token ids, `[CLS] … [SEP]` already added), `(n, hidden)`
    /// row-major, in input order. Windows are packed without padding.
    pub(crate) fn embed(&self, windows: &[&[u32]]) -> Result<Vec<f32>> {
        // Run on a pool thread: each parallel step issued from outside the pool puts the caller to sleep and wakes it
        // again, which on a short answer cost about a quarter of the time (perf, BENCHMARKS.md change 6).
        rayon::scope(|_| self.embed_on_pool(windows))
    }

    fn embed_on_pool(&self, windows: &[&[u32]]) -> Result<Vec<f32>> {
        let h = self.hidden;
        let mut starts = Vec::with_capacity(windows.len() + 1);
        let mut total = 0usize;
        for w in windows {
            if w.len() > self.max_positions {
                return Err(Error::InvalidInput(format!(
                    "a window of {} tokens is longer than the encoder's {} positions",
                    w.len(),
                    self.max_positions
                )));
            }
            if let Some(&bad) = w.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(Error::InvalidInput(format!(
                    "token id {bad} is outside the encoder's vocabulary of {}",
                    self.vocab
                )));
            }
            starts.push(total);
            total += w.len();
        }
        starts.push(total);
        if total == 0 {
            return Ok(vec![0.0; windows.len() * h]);
        }

        let (storage, layout) = self.word.storage_and_layout();
        let word_table: &[f32] = match &*storage {
            Storage::Cpu(cpu) => &cpu.as_slice::<f32>()?[layout.start_offset()..],
            _ => return Err(Error::Device("the fused forward pass runs on the CPU".into())),
        };
        if word_table.len() < self.vocab * h {
            return Err(Error::InvalidInput(
                "internal: word-embedding table shorter than its shape".into(),
            ));
        }
        let mut x = vec![0.0f32; total * h];
        let tokens: Vec<(u32, usize)> = windows
            .iter()
            .flat_map(|w| w.iter().enumerate().map(|(pos, &id)| (id, pos)))
            .collect();
        x.par_chunks_mut(h)
            .zip(tokens.par_iter())
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(row, &(id, pos))| {
                let word = &word_table[id as usize * h..][..h];
                let position = &self.position[pos * h..][..h];
                for (((v, a), b), c) in row.iter_mut().zip(word).zip(position).zip(&self.token_type) {
                    *v = a + b + c;
                }
                layer_norm(row, &self.embedding_norm, self.eps);
            });

        drop(storage);
        let inter = self.layers.first().map_or(0, |l| l.up.outputs);
        let mut qkv = vec![0.0f32; total * 3 * h];
        let mut context = vec![0.0f32; total * h];
        let mut up = vec![0.0f32; total * inter];
        let mut next = vec![0.0f32; total * h];
        // Widened weights for products too large for the direct kernel, reused from product to product.
        let mut widened = Vec::new();
        for layer in &self.layers {
            dense(&x, &layer.qkv, &mut qkv, None, &mut widened)?;
            self.attention(&qkv, &starts, &mut context)?;
            // x = norm(x + context·W + b): the residual is the product's starting value.
            dense(&context, &layer.attention_out, &mut next, Some(&x), &mut widened)?;
            std::mem::swap(&mut x, &mut next);
            x.par_chunks_mut(h)
                .with_min_len(ROWS_PER_TASK)
                .for_each(|row| layer_norm(row, &layer.attention_norm, self.eps));
            dense(&x, &layer.up, &mut up, None, &mut widened)?;
            let activation = self.activation;
            up.par_chunks_mut(ROWS_PER_TASK * h)
                .for_each(|chunk| activate(chunk, activation));
            dense(&up, &layer.down, &mut next, Some(&x), &mut widened)?;
            std::mem::swap(&mut x, &mut next);
            x.par_chunks_mut(h)
                .with_min_len(ROWS_PER_TASK)
                .for_each(|row| layer_norm(row, &layer.output_norm, self.eps));
        }

        let mut pooled = vec![0.0f32; windows.len() * h];
        pooled.par_chunks_mut(h).enumerate().for_each(|(i, out)| {
            let rows = &x[starts[i] * h..starts[i + 1] * h];
            let n = rows.len() / h;
            for row in rows.chunks_exact(h) {
                for (o, v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
            let inv_n = 1.0 / (n.max(1) as f32);
            out.iter_mut().for_each(|o| *o *= inv_n);
            let norm = sum_of(out, |v| v * v).sqrt().max(1e-12);
            out.iter_mut().for_each(|o| *o /= norm);
        });
        Ok(pooled)
    }

    /// Scaled dot-product attention of every head of every window, reading queries, keys and values in place from
    /// the `[q | k | v]` rows; writes each head's output into its columns of `context`.
    fn attention(&self, qkv: &[f32], starts: &[usize], context: &mut [f32]) -> Result<()> {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let tasks: Vec<(usize, usize)> = (0..starts.len() - 1)
            .flat_map(|w| (0..self.heads).map(move |head| (w, head)))
            .collect();
        let outputs: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(w, head)| -> Result<Vec<f32>> {
                let n = starts[w + 1] - starts[w];
                if n == 0 {
                    return Ok(Vec::new());
                }
                let base = starts[w] * 3 * h + head * d;
                let q = &qkv[base..];
                let k = &qkv[base + h..];
                let v = &qkv[base + 2 * h..];
                let mut scores = vec![0.0f32; n * n];
                // scores (n×n) = scale · q (n×d) · kᵀ (d×n)
                let shape = Product {
                    m: n,
                    n,
                    k: d,
                    accumulate: false,
                    scale,
                    parallel: false,
                };
                matmul(
                    shape,
                    Strided::new(&mut scores, n, 1),
                    Strided::read(q, 3 * h, 1),
                    Strided::read(k, 1, 3 * h),
                )?;
                scores.chunks_exact_mut(n).for_each(softmax);
                let mut out = vec![0.0f32; n * d];
                let shape = Product {
                    m: n,
                    n: d,
                    k: n,
                    accumulate: false,
                    scale: 1.0,
                    parallel: false,
                };
                matmul(
                    shape,
                    Strided::new(&mut out, d, 1),
                    Strided::read(&scores, n, 1),
                    Strided::read(v, 3 * h, 1),
                )?;
                Ok(out)
            })
            .collect::<Result<_>>()?;
        for (&(w, head), out) in tasks.iter().zip(&outputs) {
            for (t, row) in out.chunks_exact(d).enumerate() {
                let at = (starts[w] + t) * h + head * d;
                context[at..at + d].copy_from_slice(row);
            }
        }
        Ok(())
    }
}

/// Names and checks the tensors of one model file.
struct Store<'a> {
    tensors: &'a mut HashMap<String, Tensor>,
    prefix: &'a str,
    what: &'a str,
    /// How linear weights are held (resolved for this CPU).
    precision: Precision,
}

impl Store<'_> {
    /// Removes the tensor, checks its shape and copies it out as f32 (row-major).
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let tensor = self.take_tensor(name, shape)?;
        Ok(tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Removes the tensor and checks its shape.
    fn take_tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let tensor = self.tensors.remove(&full).ok_or_else(|| Error::BadWeights {
            what: self.what.to_string(),
            reason: format!("no tensor {full}"),
        })?;
        if tensor.dims() != shape {
            return Err(Error::ShapeMismatch {
                what: format!("{}: {full}", self.what),
                expected: format!("{shape:?}"),
                actual: format!("{:?}", tensor.dims()),
            });
        }
        Ok(tensor)
    }

    fn norm(&mut self, name: &str, h: usize) -> Result<Norm> {
        let full = |suffix: &str| format!("{}{name}.{suffix}", self.prefix);
        // Older checkpoints name the layer norm's parameters gamma and beta.
        let (g, b) = if self.tensors.contains_key(&full("weight")) {
            ("weight", "bias")
        } else {
            ("gamma", "beta")
        };
        Ok(Norm {
            gamma: self.take(&format!("{name}.{g}"), &[h])?,
            beta: self.take(&format!("{name}.{b}"), &[h])?,
        })
    }

    /// Linear layers with the same input, stacked side by side into one `(inputs, outputs · parts)` product.
    fn dense_stacked(&mut self, names: &[&str], inputs: usize, outputs: usize) -> Result<Dense> {
        let bad = |e: Error| Error::BadWeights {
            what: self.what.to_string(),
            reason: format!("{}: {e}", names.join(", ")),
        };
        let width = outputs * names.len();
        let mut weight_t = vec![0.0f32; inputs * width];
        let mut bias = Vec::with_capacity(width);
        for (part, name) in names.iter().enumerate() {
            let w = self.take(&format!("{name}.weight"), &[outputs, inputs])?;
            for (o, row) in w.chunks_exact(inputs).enumerate() {
                for (i, &value) in row.iter().enumerate() {
                    weight_t[i * width + part * outputs + o] = value;
                }
            }
            bias.extend(self.take(&format!("{name}.bias"), &[outputs])?);
        }
        Ok(Dense {
            weight_t: match self.precision {
                Precision::Half => Weights::Half(HalfMatrix::from_f32(&weight_t, inputs, width).map_err(bad)?),
                Precision::Int8 => Weights::Int8(Int8Matrix::from_f32(&weight_t, inputs, width).map_err(bad)?),
                _ => Weights::Full(weight_t),
            },
            bias,
            inputs,
            outputs: width,
        })
    }
}

/// `out = input · W + b (+ residual)`, for `input` of `rows × inputs`; `widened` is scratch for the weights in f32.
fn dense(
    input: &[f32],
    layer: &Dense,
    out: &mut [f32],
    residual: Option<&[f32]>,
    widened: &mut Vec<f32>,
) -> Result<()> {
    let rows = input.len() / layer.inputs;
    let width = layer.outputs;
    let out = &mut out[..rows * width];
    match residual {
        Some(residual) => out
            .par_chunks_mut(width)
            .zip(residual.par_chunks(width))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(row, res)| {
                for ((o, r), b) in row.iter_mut().zip(res).zip(&layer.bias) {
                    *o = r + b;
                }
            }),
        None => out
            .par_chunks_mut(width)
            .with_min_len(ROWS_PER_TASK)
            .for_each(|row| row.copy_from_slice(&layer.bias)),
    }
    let weight_t: &[f32] = match &layer.weight_t {
        Weights::Half(half) if half_dense::direct_applies(rows) => {
            return half_dense::accumulate_direct(input, half, out);
        }
        Weights::Half(half) => {
            half.widen_into(widened);
            widened
        }
        Weights::Full(full) => full,
        Weights::Int8(int8) => return int8_dense::accumulate(input, int8, out),
    };
    let shape = Product {
        m: rows,
        n: width,
        k: layer.inputs,
        accumulate: true,
        scale: 1.0,
        parallel: true,
    };
    matmul(
        shape,
        Strided::new(out, width, 1),
        Strided::read(input, layer.inputs, 1),
        Strided::read(weight_t, width, 1),
    )
}

/// A matrix inside a slice: element `(r, c)` at `r · row_stride + c · col_stride`.
struct Strided<S> {
    data: S,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Strided<&'a mut [f32]> {
    fn new(data: &'a mut [f32], row_stride: usize, col_stride: usize) -> Self {
        Strided {
            data,
            row_stride,
            col_stride,
        }
    }
}

impl<'a> Strided<&'a [f32]> {
    fn read(data: &'a [f32], row_stride: usize, col_stride: usize) -> Self {
        Strided {
            data,
            row_stride,
            col_stride,
        }
    }
}

/// Whether a `rows × cols` matrix with these strides lies inside `len` elements.
fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(row_stride)
        .zip((cols - 1).checked_mul(col_stride))
        .and_then(|(a, b)| a.checked_add(b));
    matches!(last, Some(last) if last < len && row_stride <= isize::MAX as usize && col_stride <= isize::MAX as usize)
}

#[derive(Clone, Copy)]
struct Product {
    m: usize,
    n: usize,
    k: usize,
    /// Add to what `dst` holds instead of overwriting it.
    accumulate: bool,
    /// Multiplies the product.
    scale: f32,
    /// Spread over the thread pool (the attention heads are already spread, one product per task).
    parallel: bool,
}

/// `dst (m×n) = [dst +] scale · lhs (m×k) · rhs (k×n)` through the `gemm` crate, every operand bounds-checked first.
fn matmul(p: Product, dst: Strided<&mut [f32]>, lhs: Strided<&[f32]>, rhs: Strided<&[f32]>) -> Result<()> {
    let ok = fits(dst.data.len(), p.m, p.n, dst.row_stride, dst.col_stride)
        && fits(lhs.data.len(), p.m, p.k, lhs.row_stride, lhs.col_stride)
        && fits(rhs.data.len(), p.k, p.n, rhs.row_stride, rhs.col_stride);
    if !ok {
        return Err(Error::InvalidInput(format!(
            "internal: a {}×{}×{} product does not fit its buffers",
            p.m, p.n, p.k
        )));
    }
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let parallelism = if p.parallel && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: every element the product reads or writes lies inside its slice (`fits` above, with strides that fit
    // `isize`); `dst` is a unique borrow, so it overlaps neither operand.
    unsafe {
        gemm(
            p.m,
            p.n,
            p.k,
            dst.data.as_mut_ptr(),
            dst.col_stride as isize,
            dst.row_stride as isize,
            p.accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            p.scale,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// A sum in 16 lanes, which the compiler vectorises (a single running float sum cannot be reordered).
fn sum(values: &[f32]) -> f32 {
    sum_of(values, |v| v)
}

/// `Σ f(v)` in 16 lanes (see [`sum`]).
#[inline(always)]
fn sum_of(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = values.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn layer_norm(row: &mut [f32], norm: &Norm, eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let var = sum_of(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

fn activate(values: &mut [f32], activation: HiddenAct) {
    match activation {
        HiddenAct::Gelu => values
            .iter_mut()
            .for_each(|v| *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2))),
        HiddenAct::GeluApproximate => values.iter_mut().for_each(|v| {
            let x = *v;
            *v = 0.5 * x * (1.0 + (0.797_884_6 * x * (1.0 + 0.044_715 * x * x)).tanh());
        }),
        HiddenAct::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

/// Softmax of one row of scores, in place.
fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // Separate passes: a running float sum inside the exp loop would keep it from vectorising.
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let inv = 1.0 / sum(row);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `erf` for f32 as a rational function of `x` (odd numerator, even denominator) on `[-4, 4]`, where f32's `erf`
/// is not yet ±1: the approximation Eigen and XLA use, with no branch and no table, so a loop over it vectorises.
/// Absolute error under 1e-6 (tested against `f64`'s).
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_258_013_06e-10 + 2.770_681_424_959_02e-08;
    p = x2 * p + -2.101_024_020_825_08e-06;
    p = x2 * p + -5.692_506_394_623_46e-05;
    p = x2 * p + -7.349_906_303_268_55e-04;
    p = x2 * p + -2.954_599_808_540_25e-03;
    p = x2 * p + -1.609_603_332_624_15e-02;
    p *= x;
    let mut q = x2 * -1.456_607_184_649_96e-05 + -2.133_740_552_789_05e-04;
    q = x2 * q + -1.682_826_974_382_03e-03;
    q = x2 * q + -7.373_329_167_204_68e-03;
    q = x2 * q + -1.426_473_905_141_89e-02;
    p / q
}

/// `e^x` for f32 without a libm call: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, `e^r` by a degree-6 polynomial and
/// `2^n` written into the exponent bits, so a loop over it vectorises. Inputs are clamped to `[-87, 88]` (softmax
/// only passes values ≤ 0). Relative error under 1e-6 (tested against `f64`'s).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2^23 rounds to the nearest integer in the mantissa, with plain float adds.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // The low mantissa bits of `shifted` hold n (two's complement, offset by ROUND's bits).
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let two_n = f32::from_bits(((n_int + 127) << 23) as u32);
    p * two_n
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::BertModel;

    #[test]
    fn erf_is_within_1e6_of_f64() {
        let mut worst = 0.0f64;
        for i in -80_000..=80_000 {
            let x = i as f32 / 10_000.0;
            let exact = erf_f64(x as f64);
            worst = worst.max((erf(x) as f64 - exact).abs());
        }
        assert!(worst < 1e-6, "worst absolute error {worst}");
    }

    /// erf in f64 by its Taylor series (|x| < 3) and its continued fraction beyond: enough digits for the test.
    fn erf_f64(x: f64) -> f64 {
        if x.abs() >= 3.0 {
            // erfc(x) = exp(-x²)/(x√π) · (1 - 1/(2x²) + 3/(4x⁴) - 15/(8x⁶) + …), asymptotic; at |x| ≥ 3 the terms used
            // are below 1e-9.
            let a = x.abs();
            let t = 1.0 / (2.0 * a * a);
            let series = 1.0 - t + 3.0 * t * t - 15.0 * t * t * t + 105.0 * t.powi(4);
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * series;
            return x.signum() * (1.0 - erfc);
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_is_within_1e6_relative_of_f64() {
        let mut worst = 0.0f64;
        for i in -870_000..=0 {
            let x = i as f32 / 10_000.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut row = vec![1.0, 3.0, -2.0, 0.5];
        softmax(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[1] > row[0] && row[0] > row[3] && row[3] > row[2]);
        let long: Vec<f32> = (0..37).map(|i| i as f32 * 0.25).collect();
        assert_eq!(sum(&long), long.iter().sum::<f32>());
    }

    #[test]
    fn fits_checks_the_last_element_and_overflow() {
        assert!(fits(12, 3, 4, 4, 1));
        assert!(!fits(11, 3, 4, 4, 1));
        assert!(fits(12, 4, 3, 1, 4));
        assert!(!fits(usize::MAX, 3, 3, usize::MAX / 2, 1));
        assert!(fits(0, 0, 5, 5, 1));
    }

    fn tiny_config(act: HiddenAct) -> BertConfig {
        let mut config: BertConfig = serde_json::from_str(
            r#"{"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 40, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
                "max_position_embeddings": 32, "type_vocab_size": 2, "initializer_range": 0.02,
                "layer_norm_eps": 1e-12, "pad_token_id": 0}"#,
        )
        .unwrap();
        config.hidden_act = act;
        // candle finds `bert.`-prefixed tensors through the model type.
        config.model_type = Some("bert".into());
        config
    }

    /// Random tensors with BERT's names and shapes (seeded).
    fn tiny_weights(config: &BertConfig, prefix: &str) -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        let h = config.hidden_size;
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![config.vocab_size, h]),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![config.max_position_embeddings, h],
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                vec![config.type_vocab_size, h],
            ),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            for (name, out, inp) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", config.intermediate_size, h),
                ("output.dense", h, config.intermediate_size),
            ] {
                shapes.push((format!("{p}.{name}.weight"), vec![out, inp]));
                shapes.push((format!("{p}.{name}.bias"), vec![out]));
            }
            for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
                shapes.push((format!("{p}.{name}.weight"), vec![h]));
                shapes.push((format!("{p}.{name}.bias"), vec![h]));
            }
        }
        let mut rng = crate::eval::SplitMix64(7);
        shapes
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let gain = if name.contains("LayerNorm.weight") { 1.0 } else { 0.0 };
                let mut values: Vec<f32> = (0..n).map(|_| gain + (rng.next_f32() - 0.5) * 0.8).collect();
                // Linear weights as the fused pass holds them (f16), so both models compute on the same numbers.
                if shape.len() == 2 && name.starts_with("encoder.") {
                    values.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
                }
                (
                    format!("{prefix}{name}"),
                    Tensor::from_vec(values, shape, &dev).unwrap(),
                )
            })
            .collect()
    }

    fn candle_embeddings(model: &BertModel, windows: &[&[u32]], h: usize) -> Vec<f32> {
        let dev = Device::Cpu;
        let longest = windows.iter().map(|w| w.len()).max().unwrap();
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for w in windows {
            ids.extend_from_slice(w);
            ids.extend(std::iter::repeat_n(0u32, longest - w.len()));
            mask.extend(std::iter::repeat_n(1u32, w.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - w.len()));
        }
        let ids = Tensor::from_vec(ids, (windows.len(), longest), &dev).unwrap();
        let mask = Tensor::from_vec(mask, (windows.len(), longest), &dev).unwrap();
        let hidden = model.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
        let pooled = super::super::encoder::mean_pool_normalized(&hidden, &mask).unwrap();
        let out = pooled.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(out.len(), windows.len() * h);
        out
    }

    #[test]
    fn matches_candle_bert_on_windows_of_different_lengths() {
        for (act, prefix) in [
            (HiddenAct::Gelu, ""),
            (HiddenAct::GeluApproximate, "bert."),
            (HiddenAct::Relu, ""),
        ] {
            let config = tiny_config(act);
            let weights = tiny_weights(&config, prefix);
            let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
            let model = BertModel::load(vb, &config).unwrap();
            let fused = FusedBert::from_tensors(weights.clone(), &config, "tiny", Precision::Fastest).unwrap();
            let float = FusedBert::from_tensors(weights.clone(), &config, "tiny", Precision::Float).unwrap();
            // Both float precisions, whatever this CPU would choose (f16 without AVX-512 widens on every product).
            let half = FusedBert::from_tensors(weights.clone(), &config, "tiny", Precision::Half).unwrap();
            let full = FusedBert::from_tensors(weights, &config, "tiny", Precision::Full).unwrap();
            let mut windows: Vec<Vec<u32>> = vec![
                vec![1, 5, 9, 2],
                vec![1, 7, 3, 3, 11, 40, 2, 8, 9, 13, 2],
                vec![1, 2],
                vec![1, 49, 48, 47, 46, 45, 44, 2],
            ];
            if prefix.is_empty() {
                // Past `half_dense::DIRECT_ROWS` tokens in all: the products widen the weights for `gemm`.
                windows.extend((0..60u32).map(|i| (0..30).map(|t| (i * 7 + t * 3) % 50).collect()));
            }
            let refs: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
            let expected = candle_embeddings(&model, &refs, config.hidden_size);
            let got = fused.embed(&refs).unwrap();
            for (name, other) in [("this CPU's float", &float), ("f16", &half), ("f32", &full)] {
                let got = other.embed(&refs).unwrap();
                let worst = expected
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(worst < 1e-5, "{act:?}, {name} weights: largest difference {worst}");
            }
            // int8 weights (on CPUs with VNNI): near the f32 model, not equal to it.
            if fused.precision == Precision::Int8 {
                for (a, b) in expected
                    .chunks_exact(config.hidden_size)
                    .zip(got.chunks_exact(config.hidden_size))
                {
                    let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                    assert!(cosine > 0.995, "{act:?}, int8 weights: cosine {cosine}");
                }
            }
            // One window alone gives the same row as inside the batch (no padding reaches it; int8 inputs are
            // quantized per token).
            let alone = fused.embed(&refs[1..2]).unwrap();
            let h = config.hidden_size;
            let worst = alone
                .iter()
                .zip(&got[h..2 * h])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "batched against alone: {worst}");
        }
    }

    #[test]
    fn bad_ids_lengths_and_weights_are_errors() {
        let config = tiny_config(HiddenAct::Gelu);
        let fused = FusedBert::from_tensors(tiny_weights(&config, ""), &config, "tiny", Precision::Fastest).unwrap();
        assert!(matches!(fused.embed(&[&[1, 50, 2]]), Err(Error::InvalidInput(_))));
        let long = vec![1u32; 33];
        assert!(matches!(fused.embed(&[&long]), Err(Error::InvalidInput(_))));
        assert_eq!(fused.embed(&[]).unwrap().len(), 0);

        let mut weights = tiny_weights(&config, "");
        let big = Tensor::full(1e6f32, (16, 16), &Device::Cpu).unwrap();
        weights.insert("encoder.layer.0.attention.self.key.weight".into(), big);
        assert!(matches!(
            FusedBert::from_tensors(weights, &config, "tiny", Precision::Half),
            Err(Error::BadWeights { .. })
        ));

        let mut weights = tiny_weights(&config, "");
        weights.remove("encoder.layer.1.output.dense.bias");
        assert!(matches!(
            FusedBert::from_tensors(weights, &config, "tiny", Precision::Half),
            Err(Error::BadWeights { .. })
        ));
        let mut weights = tiny_weights(&config, "");
        weights.insert(
            "encoder.layer.0.intermediate.dense.weight".into(),
            Tensor::zeros((40, 15), DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(matches!(
            FusedBert::from_tensors(weights, &config, "tiny", Precision::Fastest),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
