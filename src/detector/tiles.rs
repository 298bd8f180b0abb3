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

/// Where one column of a product goes: the first of a whole tile of 48 or 16 columns for a kernel, or one column
/// left for plain code.
pub(crate) enum ColumnTile {
    Wide(usize),
    Narrow(usize),
    Plain(usize),
}

/// The tiles of columns `cols`, in order: 48-column tiles while they fit, then 16-column ones, then single columns.
pub(crate) fn column_tiles(cols: Range<usize>) -> impl Iterator<Item = ColumnTile> {
    let start = cols.start;
    let wide = cols.len() / (3 * LANES);
    let narrow_start = start + wide * 3 * LANES;
    let narrow = (cols.end - narrow_start) / LANES;
    let plain_start = narrow_start + narrow * LANES;
    (0..wide)
        .map(move |i| ColumnTile::Wide(start + i * 3 * LANES))
        .chain((0..narrow).map(move |i| ColumnTile::Narrow(narrow_start + i * LANES)))
        .chain((plain_start..cols.end).map(ColumnTile::Plain))
}

/// Shapes `(rows, inputs, columns)` that the kernels' tests run: 48- and 16-column tiles, the plain tail, inputs of
/// any count, short and long row counts, and the column split (fewer row blocks than threads).
#[cfg(test)]
pub(crate) const TEST_SHAPES: [(usize, usize, usize); 6] = [
    (1, 7, 5),
    (3, 24, 70),
    (8, 16, 48),
    (9, 33, 100),
    (16, 384, 1152),
    (40, 64, 17),
];

/// Deterministic test values in [-1, 1].
#[cfg(test)]
pub(crate) fn test_values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_tiles_cover_each_column_once_in_order() {
        for (start, end) in [(0, 0), (0, 5), (0, 48), (3, 70), (0, 100), (16, 1152)] {
            let mut next = start;
            for tile in column_tiles(start..end) {
                let (at, width) = match tile {
                    ColumnTile::Wide(c) => (c, 3 * LANES),
                    ColumnTile::Narrow(c) => (c, LANES),
                    ColumnTile::Plain(c) => (c, 1),
                };
                assert_eq!(at, next);
                next += width;
            }
            assert_eq!(next, end);
        }
    }
}
