//! Linear-layer weights held in half precision (IEEE f16), and a product that reads them directly for few rows.
//!
//! Why: a short answer (16 tokens) is bound by reading the weights, not by arithmetic. MiniLM's linear weights are
//! 42 MB in f32, more than this machine kind's 32 MB L3 cache, so every call streams them from memory; in f16 they
//! are 21 MB and stay cached between calls (BENCHMARKS.md, change 7). Products of few rows read the f16 weights in an
//! AVX-512 kernel that widens them in registers; larger products widen the weights into an f32 buffer and use the
//! `gemm` crate, whose kernels are faster there. On CPUs without AVX-512 the fused pass keeps f32 weights (widening
//! on every product would cost more than the bytes save). Activations and sums stay in f32.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::tiles::{ColumnTile, LANES, TILE_ROWS, column_tiles, share};
use crate::error::{Error, Result};

/// The most rows a product reads through the direct kernel; above this `gemm` on widened weights is faster
/// (BENCHMARKS.md, change 7).
pub(crate) const DIRECT_ROWS: usize = 1536;

/// A `(rows, cols)` row-major matrix of f16 weights.
pub(crate) struct HalfMatrix {
    bits: Vec<f16>,
    rows: usize,
    cols: usize,
}

impl HalfMatrix {
    /// Rounds `values` (`rows × cols`, row-major) to f16.
    pub(crate) fn from_f32(values: &[f32], rows: usize, cols: usize) -> Result<Self> {
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::InvalidInput(format!(
                "internal: {} weights for a {rows}×{cols} matrix",
                values.len()
            )));
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite() || v.abs() > f32::from(f16::MAX)) {
            return Err(Error::InvalidInput(format!(
                "a weight of {bad} does not fit half precision; load this model with f32 weights (WeightLayout::CandleBert)"
            )));
        }
        Ok(HalfMatrix {
            bits: values.iter().map(|&v| f16::from_f32(v)).collect(),
            rows,
            cols,
        })
    }

    /// Writes the weights widened to f32 into `out` (resized to `rows × cols`).
    pub(crate) fn widen_into(&self, out: &mut Vec<f32>) {
        out.resize(self.bits.len(), 0.0);
        const CHUNK: usize = 1 << 14;
        out.par_chunks_mut(CHUNK)
            .zip(self.bits.par_chunks(CHUNK))
            .for_each(|(o, b)| b.convert_to_f32_slice(o));
    }
}

/// Whether a product of `rows` rows goes through the direct kernel on this CPU.
pub(crate) fn direct_applies(rows: usize) -> bool {
    rows <= DIRECT_ROWS && direct_available()
}

/// Whether this CPU runs the direct kernel at all (AVX-512F).
pub(crate) fn direct_available() -> bool {
    Avx512::detect().is_some()
}

/// Proof that the CPU has AVX-512F: only [`Avx512::detect`] makes one, so the kernel checks once per product, not
/// once per tile.
#[derive(Clone, Copy)]
struct Avx512(());

impl Avx512 {
    fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Avx512(()));
        }
        None
    }
}

/// `out (m × cols) += x (m × rows) · w`, reading the f16 weights directly (AVX-512). Errors when the shapes do not
/// fit or the CPU lacks AVX-512 (check [`direct_applies`] first).
pub(crate) fn accumulate_direct(x: &[f32], w: &HalfMatrix, out: &mut [f32]) -> Result<()> {
    let (k, n) = (w.rows, w.cols);
    if k == 0 || !x.len().is_multiple_of(k) || out.len() != x.len() / k * n || w.bits.len() != k * n {
        return Err(Error::InvalidInput(format!(
            "internal: a product of {} inputs by a {k}×{n} matrix into {} outputs",
            x.len(),
            out.len()
        )));
    }
    let cpu = Avx512::detect().ok_or_else(|| Error::Device("the direct f16 product needs AVX-512".into()))?;
    let m = x.len() / k;
    share(m, n, out, |rows, cols, part, stride| {
        block(cpu, &x[rows.start * k..rows.end * k], k, w, cols, part, stride)
    })
}

/// Up to [`TILE_ROWS`] rows: `out[r][c - cols.start] += Σ_k xs[r][k] · w[k][c]` for `c` in `cols`, `out` rows of
/// `out_stride`. Whole 48- and 16-column tiles go through the kernel, the last few columns through plain code.
fn block(
    cpu: Avx512,
    xs: &[f32],
    k: usize,
    w: &HalfMatrix,
    cols: std::ops::Range<usize>,
    out: &mut [f32],
    out_stride: usize,
) -> Result<()> {
    for column in column_tiles(cols.clone()) {
        match column {
            ColumnTile::Wide(c) => tile::<3>(cpu, xs, k, w, c, out, out_stride, c - cols.start)?,
            ColumnTile::Narrow(c) => tile::<1>(cpu, xs, k, w, c, out, out_stride, c - cols.start)?,
            ColumnTile::Plain(col) => {
                for (r, o) in out.chunks_exact_mut(out_stride).enumerate() {
                    let x = &xs[r * k..][..k];
                    o[col - cols.start] += x
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| v * w.bits[i * w.cols + col].to_f32())
                        .sum::<f32>();
                }
            }
        }
    }
    Ok(())
}

/// One tile of up to 8 rows × `C · 16` columns, weight column `col`, output column `at`; checks every bound, then
/// runs the kernel.
#[allow(clippy::too_many_arguments)]
fn tile<const C: usize>(
    cpu: Avx512,
    xs: &[f32],
    k: usize,
    w: &HalfMatrix,
    col: usize,
    out: &mut [f32],
    stride: usize,
    at: usize,
) -> Result<()> {
    let rows = xs.len() / k;
    let width = C * LANES;
    let fits = (1..=TILE_ROWS).contains(&rows)
        && xs.len() == rows * k
        && w.bits.len() == w.rows * w.cols
        && w.rows == k
        && col + width <= w.cols
        && at + width <= stride
        && out.len() >= (rows - 1) * stride + at + width;
    if !fits {
        return Err(Error::InvalidInput(format!(
            "internal: a tile of {rows} rows at column {col} does not fit a {k}×{} matrix",
            w.cols
        )));
    }
    let Avx512(()) = cpu;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: AVX-512F is present (`cpu` exists only once it was detected). Every read lies inside its slice:
        // rows `0..rows` of `xs`, each `k` long; weight rows `0..k`, columns `col..col + width` (`col + width <=
        // cols`); and every write lies inside `out`, rows `0..rows` at `at..at + width` (all checked above).
        unsafe {
            x86::tile::<C>(
                xs.as_ptr(),
                rows,
                k,
                w.bits.as_ptr(),
                w.cols,
                col,
                out.as_mut_ptr(),
                stride,
                at,
            )
        };
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::super::tiles::{LANES, TILE_ROWS};

    /// The kernel: accumulators for 8 rows × `C` registers stay in registers over the whole `k` loop; each step
    /// widens `C` registers of f16 weights and adds them times one broadcast input per row. Rows past `rows` repeat
    /// the last row's inputs and are not stored.
    ///
    /// # Safety
    /// AVX-512F must be present; `xs` must hold `rows × k` floats, `w` at least `(k - 1) · n + col + C · 16` halves,
    /// `out` at least `(rows - 1) · stride + at + C · 16` floats, with `1 <= rows <= 8`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile<const C: usize>(
        xs: *const f32,
        rows: usize,
        k: usize,
        w: *const f16,
        n: usize,
        col: usize,
        out: *mut f32,
        stride: usize,
        at: usize,
    ) {
        unsafe {
            let row_of = |r: usize| xs.add(r.min(rows - 1) * k);
            let x: [*const f32; TILE_ROWS] = std::array::from_fn(row_of);
            let mut acc = [[_mm512_setzero_ps(); C]; TILE_ROWS];
            for (r, a) in acc.iter_mut().enumerate().take(rows) {
                for (c, v) in a.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(out.add(r * stride + at + c * LANES));
                }
            }
            for i in 0..k {
                let wrow = w.add(i * n + col);
                let wv: [__m512; C] =
                    std::array::from_fn(|c| _mm512_cvtph_ps(_mm256_loadu_si256(wrow.add(c * LANES).cast())));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*x[r].add(i));
                    for (v, wc) in a.iter_mut().zip(&wv) {
                        *v = _mm512_fmadd_ps(xv, *wc, *v);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate().take(rows) {
                for (c, v) in a.iter().enumerate() {
                    _mm512_storeu_ps(out.add(r * stride + at + c * LANES), *v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tiles::{TEST_SHAPES, test_values as values};
    use super::*;

    fn reference(x: &[f32], w: &[f32], k: usize, n: usize, out: &mut [f32]) {
        for (xr, orow) in x.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
            for (c, o) in orow.iter_mut().enumerate() {
                *o += (0..k).map(|i| xr[i] * w[i * n + c]).sum::<f32>();
            }
        }
    }

    #[test]
    fn direct_product_matches_f32_on_rounded_weights() {
        if !direct_available() {
            eprintln!("skipped: no AVX-512 on this CPU (the widened path is tested through fused_bert)");
            return;
        }
        for (m, k, n) in TEST_SHAPES {
            let x = values(m * k, 1);
            let w32 = values(k * n, 2);
            let w = HalfMatrix::from_f32(&w32, k, n).unwrap();
            let mut widened = Vec::new();
            w.widen_into(&mut widened);
            let start = values(m * n, 3);
            let mut expected = start.clone();
            reference(&x, &widened, k, n, &mut expected);
            let mut got = start.clone();
            accumulate_direct(&x, &w, &mut got).unwrap();
            for (a, b) in got.iter().zip(&expected) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{m}×{k}×{n}: {a} against {b}");
            }
        }
    }

    #[test]
    fn bad_shapes_and_weights_are_errors() {
        let w = HalfMatrix::from_f32(&values(12, 0), 3, 4).unwrap();
        assert_eq!((w.rows, w.cols), (3, 4));
        assert!(HalfMatrix::from_f32(&values(11, 0), 3, 4).is_err());
        assert!(HalfMatrix::from_f32(&[1e6, 0.0], 1, 2).is_err());
        assert!(HalfMatrix::from_f32(&[f32::NAN, 0.0], 1, 2).is_err());
        let mut out = vec![0.0; 8];
        assert!(accumulate_direct(&values(7, 0), &w, &mut out).is_err());
        assert!(accumulate_direct(&values(6, 0), &w, &mut out[..7]).is_err());
    }
}
