//! How the direct kernels (`half_dense`, `int8_dense`) share one product's output among the threads.

use std::ops::Range;

use rayon::prelude::*;

use crate::error::Result;

/// Rows per tile of the direct kernels (8 rows × 48 columns keep 24 accumulators in AVX-512 registers).
pub(crate) const TILE_ROWS: usize = 8;
/// 32-bit lanes of an AVX-512 register.
pub(crate) const LANES: usize = 16;

/// Runs `block(rows, cols, part, stride)` over every tile of an `m × n` output `out` (row-major), with at most
/// [`TILE_ROWS`] rows a call: `part` holds those rows of the output for columns `cols`, `stride` apart, column
/// `cols.start` at offset 0. With enough row blocks for the threads each task owns whole rows of `out`; with fewer
/// (a short window) the tasks share the columns, each into its own buffer, copied back at the end.
pub(crate) fn share<F>(m: usize, n: usize, out: &mut [f32], block: F) -> Result<()>
where
    F: Fn(Range<usize>, Range<usize>, &mut [f32], usize) -> Result<()> + Sync,
{
    if m == 0 || n == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads().max(1);
    if m.div_ceil(TILE_ROWS) >= threads {
        return out
            .par_chunks_mut(TILE_ROWS * n)
            .enumerate()
            .try_for_each(|(b, part)| block(b * TILE_ROWS..b * TILE_ROWS + part.len() / n, 0..n, part, n));
    }
    let per_task = n.div_ceil(threads).next_multiple_of(3 * LANES);
    let ranges: Vec<Range<usize>> = (0..n).step_by(per_task).map(|c| c..(c + per_task).min(n)).collect();
    let parts: Vec<Vec<f32>> = ranges
        .par_iter()
        .map(|cols| -> Result<Vec<f32>> {
            let width = cols.len();
            let mut part: Vec<f32> = out
                .chunks_exact(n)
                .flat_map(|row| row[cols.clone()].iter().copied())
                .collect();
            for (b, p) in part.chunks_mut(TILE_ROWS * width).enumerate() {
                block(b * TILE_ROWS..b * TILE_ROWS + p.len() / width, cols.clone(), p, width)?;
            }
            Ok(part)
        })
        .collect::<Result<_>>()?;
    for (cols, part) in ranges.iter().zip(&parts) {
        for (row, p) in out.chunks_exact_mut(n).zip(part.chunks_exact(cols.len())) {
            row[cols.clone()].copy_from_slice(p);
        }
    }
    Ok(())
}
