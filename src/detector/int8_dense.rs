//! Linear-layer weights quantized to 8 bits, and a product that quantizes its inputs per row and multiplies in
//! integers on AVX-512 VNNI.
//!
//! Why: VNNI's `vpdpbusd` does 64 byte products a cycle where an f32 FMA does 16, and int8 weights are half the bytes
//! of f16 ones, so both long products (bound by arithmetic) and short ones (bound by reading the weights) run faster
//! (BENCHMARKS.md, change 8). Each weight column gets its own scale (symmetric, ±127); each input row is quantized
//! when the product runs, with its own scale and zero point (asymmetric, 0..=255, so the mostly positive GELU
//! outputs keep all 256 levels). Sums are exact in i32; scales, biases and everything outside the products stay in
//! f32. The fused pass uses these weights only where VNNI is present (`fused_bert::Precision`).

use rayon::prelude::*;

use super::tiles::{ColumnTile, LANES, TILE_ROWS, column_tiles, share};
use crate::error::{Error, Result};

/// Inputs per group: `vpdpbusd` adds four byte products into each 32-bit lane.
const GROUP: usize = 4;

/// A `(rows, cols)` matrix of weights quantized per column.
pub(crate) struct Int8Matrix {
    /// Weights in groups of four input rows: byte `(g · cols + c) · 4 + j` holds row `4g + j`, column `c`, so one
    /// 64-byte load gives 16 columns × 4 rows. Rows are padded with zeros to a multiple of four.
    packed: Vec<i8>,
    /// Per column: a weight is `scale · q`.
    scales: Vec<f32>,
    /// Per column: `Σ q` over the rows, which removes the inputs' zero point from the integer sums.
    sums: Vec<i32>,
    rows: usize,
    cols: usize,
}

impl Int8Matrix {
    /// Quantizes `values` (`rows × cols`, row-major): each column to 255 levels, ±127 times its own scale.
    pub(crate) fn from_f32(values: &[f32], rows: usize, cols: usize) -> Result<Self> {
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::InvalidInput(format!(
                "internal: {} weights for a {rows}×{cols} matrix",
                values.len()
            )));
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!("a weight of {bad} cannot be quantized")));
        }
        let mut scales = vec![0.0f32; cols];
        for row in values.chunks_exact(cols.max(1)) {
            for (s, v) in scales.iter_mut().zip(row) {
                *s = s.max(v.abs());
            }
        }
        for s in &mut scales {
            // An all-zero column quantizes to zeros with any scale.
            *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
        }
        let padded = rows.next_multiple_of(GROUP);
        let mut packed = vec![0i8; padded * cols];
        let mut sums = vec![0i32; cols];
        for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
            for (c, (&v, &s)) in row.iter().zip(&scales).enumerate() {
                let q = (v / s).round().clamp(-127.0, 127.0) as i8;
                packed[((r / GROUP) * cols + c) * GROUP + r % GROUP] = q;
                sums[c] += i32::from(q);
            }
        }
        Ok(Int8Matrix {
            packed,
            scales,
            sums,
            rows,
            cols,
        })
    }

    /// Input rows rounded up to whole groups.
    fn padded_rows(&self) -> usize {
        self.rows.next_multiple_of(GROUP)
    }

    /// The weights as the integer product sees them (`scale · q`), `rows × cols` row-major.
    #[cfg(test)]
    fn dequantized(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            for c in 0..self.cols {
                out[r * self.cols + c] =
                    f32::from(self.packed[((r / GROUP) * self.cols + c) * GROUP + r % GROUP]) * self.scales[c];
            }
        }
        out
    }
}

/// Whether this CPU runs the integer product (AVX-512 F, BW and VNNI).
pub(crate) fn available() -> bool {
    Vnni::detect().is_some()
}

/// Proof that the CPU has AVX-512 F, BW and VNNI: only [`Vnni::detect`] makes one.
#[derive(Clone, Copy)]
struct Vnni(());

impl Vnni {
    fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return Some(Vnni(()));
        }
        None
    }
}

/// Input rows quantized for one product: row `r` is `scale[r] · (bytes[r] - zero[r])`, each row padded with its
/// zero point to whole groups (the padded weights are zero, so the padding adds nothing).
struct QuantizedRows {
    bytes: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
    /// Bytes per row.
    width: usize,
}

impl QuantizedRows {
    fn new(cpu: Vnni, x: &[f32], k: usize, width: usize) -> Self {
        let m = x.len() / k;
        let mut bytes = vec![0u8; m * width];
        let mut scale = vec![0.0f32; m];
        let mut zero = vec![0i32; m];
        bytes
            .par_chunks_mut(width)
            .zip(scale.par_iter_mut().zip(zero.par_iter_mut()))
            .zip(x.par_chunks(k))
            .with_min_len(16)
            .for_each(|((q, (s, z)), row)| {
                let (step, zero_point) = quantize_row(cpu, row, q);
                if let Some(padding) = q.get_mut(row.len()..) {
                    padding.fill(zero_point as u8);
                }
                (*s, *z) = (step, zero_point);
            });
        QuantizedRows {
            bytes,
            scale,
            zero,
            width,
        }
    }
}

/// The step and zero point that map `[lo, hi]` (which holds 0, so a zero input and the padding are exact) onto
/// 0..=255; `None` for a range that is not finite.
fn step_for(lo: f32, hi: f32) -> Option<(f32, i32)> {
    let step = (hi - lo) / 255.0;
    if !step.is_finite() {
        return None;
    }
    if step == 0.0 {
        return Some((1.0, 0));
    }
    Some((step, (-lo / step).round().clamp(0.0, 255.0) as i32))
}

/// Quantizes one row into `q` (at least as long): returns its step and zero point. A non-finite input must not
/// vanish into a byte: its row gets a NaN step, which carries it to the output.
fn quantize_row(cpu: Vnni, row: &[f32], q: &mut [u8]) -> (f32, i32) {
    let Vnni(()) = cpu;
    #[cfg(target_arch = "x86_64")]
    if q.len() >= row.len() {
        // SAFETY: AVX-512 F and BW are present (`cpu`); `q` holds at least `row.len()` bytes (checked).
        return unsafe { x86::quantize_row(row, q) };
    }
    quantize_plain(row, q)
}

/// [`quantize_row`] in plain code (and its tail).
fn quantize_plain(row: &[f32], q: &mut [u8]) -> (f32, i32) {
    let (lo, hi) = row.iter().fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    match step_for(lo, hi) {
        Some((step, zero)) if row.iter().all(|v| !v.is_nan()) => {
            for (b, &v) in q.iter_mut().zip(row) {
                *b = (v / step + zero as f32).round().clamp(0.0, 255.0) as u8;
            }
            (step, zero)
        }
        _ => (f32::NAN, 0),
    }
}

/// `out (m × cols) += x (m × rows) · w`, with `x` quantized per row and the sums taken in integers (AVX-512 VNNI).
/// Errors when the shapes do not fit or the CPU lacks VNNI (check [`available`] first).
pub(crate) fn accumulate(x: &[f32], w: &Int8Matrix, out: &mut [f32]) -> Result<()> {
    let (k, n) = (w.rows, w.cols);
    if k == 0
        || !x.len().is_multiple_of(k)
        || out.len() != x.len() / k * n
        || w.packed.len() != w.padded_rows() * n
        || w.scales.len() != n
        || w.sums.len() != n
    {
        return Err(Error::InvalidInput(format!(
            "internal: a product of {} inputs by a {k}×{n} matrix into {} outputs",
            x.len(),
            out.len()
        )));
    }
    let cpu = Vnni::detect().ok_or_else(|| Error::Device("the int8 product needs AVX-512 VNNI".into()))?;
    let m = x.len() / k;
    let quantized = QuantizedRows::new(cpu, x, k, w.padded_rows());
    share(m, n, out, |rows, cols, part, stride| {
        block(cpu, &quantized, rows, w, cols, part, stride)
    })
}

/// Up to [`TILE_ROWS`] rows: `out[r][c - cols.start] += x[r] · w[.., c]` for `c` in `cols`, `out` rows of
/// `out_stride`. Whole 48- and 16-column tiles go through the kernel, the last few columns through plain code.
fn block(
    cpu: Vnni,
    x: &QuantizedRows,
    rows: std::ops::Range<usize>,
    w: &Int8Matrix,
    cols: std::ops::Range<usize>,
    out: &mut [f32],
    out_stride: usize,
) -> Result<()> {
    for column in column_tiles(cols.clone()) {
        match column {
            ColumnTile::Wide(c) => tile::<3>(cpu, x, rows.clone(), w, c, out, out_stride, c - cols.start)?,
            ColumnTile::Narrow(c) => tile::<1>(cpu, x, rows.clone(), w, c, out, out_stride, c - cols.start)?,
            ColumnTile::Plain(col) => {
                for (r, o) in rows.clone().zip(out.chunks_exact_mut(out_stride)) {
                    let q = &x.bytes[r * x.width..][..x.width];
                    let sum: i32 = q
                        .iter()
                        .enumerate()
                        .map(|(i, &b)| {
                            i32::from(b) * i32::from(w.packed[((i / GROUP) * w.cols + col) * GROUP + i % GROUP])
                        })
                        .sum();
                    o[col - cols.start] += (sum - x.zero[r] * w.sums[col]) as f32 * w.scales[col] * x.scale[r];
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
    cpu: Vnni,
    x: &QuantizedRows,
    rows: std::ops::Range<usize>,
    w: &Int8Matrix,
    col: usize,
    out: &mut [f32],
    stride: usize,
    at: usize,
) -> Result<()> {
    let count = rows.len();
    let width = C * LANES;
    let fits = (1..=TILE_ROWS).contains(&count)
        && x.width == w.padded_rows()
        && x.width.is_multiple_of(GROUP)
        && rows.end * x.width <= x.bytes.len()
        && rows.end <= x.scale.len()
        && rows.end <= x.zero.len()
        && w.packed.len() == x.width * w.cols
        && col + width <= w.cols
        && w.scales.len() == w.cols
        && w.sums.len() == w.cols
        && at + width <= stride
        && out.len() >= (count - 1) * stride + at + width;
    if !fits {
        return Err(Error::InvalidInput(format!(
            "internal: an int8 tile of {count} rows at column {col} does not fit a {}×{} matrix",
            w.rows, w.cols
        )));
    }
    let Vnni(()) = cpu;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: AVX-512 F, BW and VNNI are present (`cpu` exists only once they were detected). Every read lies
        // inside its slice: input rows `rows`, each `x.width` bytes, and their scales and zero points; weight groups
        // `0..x.width / 4`, columns `col..col + width` (`col + width <= cols`), and those columns' scales and sums;
        // every write lies inside `out`, rows `0..count` at `at..at + width` (all checked above).
        unsafe {
            x86::tile::<C>(
                x86::Tile {
                    x: x.bytes.as_ptr().add(rows.start * x.width),
                    scale: x.scale.as_ptr().add(rows.start),
                    zero: x.zero.as_ptr().add(rows.start),
                    rows: count,
                    width: x.width,
                    w: w.packed.as_ptr(),
                    w_scales: w.scales.as_ptr(),
                    w_sums: w.sums.as_ptr(),
                    n: w.cols,
                    col,
                },
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

    use super::super::tiles::{LANES, TILE_ROWS};
    use super::GROUP;

    /// [`super::quantize_row`] on AVX-512: the range, then 16 inputs a step (rounded to nearest, saturated to
    /// 0..=255).
    ///
    /// # Safety
    /// AVX-512 F and BW must be present, and `q` at least as long as `row`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_row(row: &[f32], q: &mut [u8]) -> (f32, i32) {
        unsafe {
            let whole = row.len() / LANES * LANES;
            let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut nan: __mmask16 = 0;
            for i in (0..whole).step_by(LANES) {
                let v = _mm512_loadu_ps(row.as_ptr().add(i));
                lo = _mm512_min_ps(lo, v);
                hi = _mm512_max_ps(hi, v);
                nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            }
            let tail = &row[whole..];
            let lo = tail.iter().fold(_mm512_reduce_min_ps(lo), |a, &v| a.min(v));
            let hi = tail.iter().fold(_mm512_reduce_max_ps(hi), |a, &v| a.max(v));
            let Some((step, zero)) = super::step_for(lo, hi).filter(|_| nan == 0 && tail.iter().all(|v| !v.is_nan()))
            else {
                return (f32::NAN, 0);
            };
            let inverse = _mm512_set1_ps(1.0 / step);
            let offset = _mm512_set1_ps(zero as f32);
            let (floor, ceiling) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
            for i in (0..whole).step_by(LANES) {
                let v = _mm512_fmadd_ps(_mm512_loadu_ps(row.as_ptr().add(i)), inverse, offset);
                let n = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(v), floor), ceiling);
                _mm_storeu_si128(q.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi8(n));
            }
            for (b, &v) in q[whole..row.len()].iter_mut().zip(tail) {
                *b = (v / step + zero as f32).round().clamp(0.0, 255.0) as u8;
            }
            (step, zero)
        }
    }

    /// Where one tile reads: `rows` quantized input rows of `width` bytes, with their scales and zero points, and
    /// the packed weights (`n` columns) from column `col`, with the columns' scales and sums.
    pub(super) struct Tile {
        pub(super) x: *const u8,
        pub(super) scale: *const f32,
        pub(super) zero: *const i32,
        pub(super) rows: usize,
        pub(super) width: usize,
        pub(super) w: *const i8,
        pub(super) w_scales: *const f32,
        pub(super) w_sums: *const i32,
        pub(super) n: usize,
        pub(super) col: usize,
    }

    /// The kernel: integer accumulators for 8 rows × `C` registers stay in registers over the whole input; each
    /// step loads `C` registers of weights (16 columns × 4 inputs each) and adds their products with four broadcast
    /// input bytes per row. At the end each sum loses the zero point's share and is scaled into `out`. Rows past
    /// `rows` repeat the last row's inputs and are not stored.
    ///
    /// # Safety
    /// AVX-512 F, BW and VNNI must be present; `t.x` must hold `t.rows × t.width` bytes (`t.width` a multiple of
    /// 4), `t.scale` and `t.zero` `t.rows` values, `t.w` `t.width · t.n` bytes, `t.w_scales` and `t.w_sums` at least
    /// `t.col + C · 16` values, and `out` at least `(t.rows - 1) · stride + at + C · 16` floats, with
    /// `1 <= t.rows <= 8` and `t.col + C · 16 <= t.n`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile<const C: usize>(t: Tile, out: *mut f32, stride: usize, at: usize) {
        unsafe {
            let x: [*const u8; TILE_ROWS] = std::array::from_fn(|r| t.x.add(r.min(t.rows - 1) * t.width));
            let mut acc = [[_mm512_setzero_si512(); C]; TILE_ROWS];
            for g in 0..t.width / GROUP {
                let wrow = t.w.add((g * t.n + t.col) * GROUP);
                let wv: [__m512i; C] = std::array::from_fn(|c| _mm512_loadu_si512(wrow.add(c * LANES * GROUP).cast()));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_epi32(x[r].add(g * GROUP).cast::<i32>().read_unaligned());
                    for (v, wc) in a.iter_mut().zip(&wv) {
                        *v = _mm512_dpbusd_epi32(*v, xv, *wc);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate().take(t.rows) {
                let zero = _mm512_set1_epi32(*t.zero.add(r));
                let scale = _mm512_set1_ps(*t.scale.add(r));
                for (c, v) in a.iter().enumerate() {
                    let at_col = t.col + c * LANES;
                    let sums = _mm512_loadu_si512(t.w_sums.add(at_col).cast());
                    let exact = _mm512_sub_epi32(*v, _mm512_mullo_epi32(zero, sums));
                    let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_loadu_ps(t.w_scales.add(at_col)));
                    let o = out.add(r * stride + at + c * LANES);
                    _mm512_storeu_ps(o, _mm512_fmadd_ps(scaled, scale, _mm512_loadu_ps(o)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tiles::{TEST_SHAPES, test_values as values};
    use super::*;

    /// The product on the quantized values, in f64: what the kernel must compute up to f32 rounding.
    fn reference(x: &[f32], w: &Int8Matrix, out: &mut [f32]) {
        let (k, n) = (w.rows, w.cols);
        let weights = w.dequantized();
        let q = QuantizedRows::new(Vnni::detect().unwrap(), x, k, w.padded_rows());
        for (r, orow) in out.chunks_exact_mut(n).enumerate() {
            let inputs: Vec<f64> = (0..k)
                .map(|i| f64::from(q.scale[r]) * f64::from(i32::from(q.bytes[r * q.width + i]) - q.zero[r]))
                .collect();
            for (c, o) in orow.iter_mut().enumerate() {
                *o += (0..k).map(|i| inputs[i] * f64::from(weights[i * n + c])).sum::<f64>() as f32;
            }
        }
    }

    #[test]
    fn integer_product_matches_the_quantized_values_and_stays_near_f32() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        // Besides the shared shapes (inputs not a multiple of 4 among them), MiniLM's down-projection; each with an
        // all-zero row.
        for (m, k, n) in TEST_SHAPES.into_iter().chain([(70, 1536, 384)]) {
            let mut x = values(m * k, 1);
            x[..k].iter_mut().for_each(|v| *v = 0.0);
            let w32 = values(k * n, 2);
            let w = Int8Matrix::from_f32(&w32, k, n).unwrap();
            let start = values(m * n, 3);
            let mut expected = start.clone();
            reference(&x, &w, &mut expected);
            let mut got = start.clone();
            accumulate(&x, &w, &mut got).unwrap();
            for (a, b) in got.iter().zip(&expected) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{m}×{k}×{n}: {a} against {b}");
            }
            // Against the f32 product: each term is off by at most half a step of each operand.
            let mut exact = start.clone();
            for (xr, orow) in x.chunks_exact(k).zip(exact.chunks_exact_mut(n)) {
                for (c, o) in orow.iter_mut().enumerate() {
                    *o += (0..k).map(|i| xr[i] * w32[i * n + c]).sum::<f32>();
                }
            }
            for (a, b) in got.iter().zip(&exact) {
                assert!((a - b).abs() <= 0.01 * k as f32, "{m}×{k}×{n}: {a} against f32 {b}");
            }
        }
    }

    #[test]
    fn a_non_finite_input_reaches_the_output() {
        if !available() {
            return;
        }
        let w = Int8Matrix::from_f32(&values(16 * 48, 0), 16, 48).unwrap();
        let mut x = values(2 * 16, 1);
        x[20] = f32::NAN;
        let mut out = vec![0.0; 2 * 48];
        accumulate(&x, &w, &mut out).unwrap();
        assert!(out[..48].iter().all(|v| v.is_finite()));
        assert!(out[48..].iter().all(|v| v.is_nan()));
    }

    #[test]
    fn bad_shapes_and_weights_are_errors() {
        let w = Int8Matrix::from_f32(&values(12, 0), 3, 4).unwrap();
        assert_eq!((w.rows, w.cols, w.packed.len()), (3, 4, 16));
        assert!(Int8Matrix::from_f32(&values(11, 0), 3, 4).is_err());
        assert!(Int8Matrix::from_f32(&[f32::INFINITY, 0.0], 1, 2).is_err());
        assert!(Int8Matrix::from_f32(&[f32::NAN, 0.0], 1, 2).is_err());
        let mut out = vec![0.0; 8];
        assert!(accumulate(&values(7, 0), &w, &mut out).is_err());
        assert!(accumulate(&values(6, 0), &w, &mut out[..7]).is_err());
    }
}
