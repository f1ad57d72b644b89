//! The register tiles the prompt kernels share ([`super::blocked`] on panels of packed weights,
//! [`super::packed`] on weights laid out in strips): a block of up to [`ROWS`] activation rows by
//! [`TILE`] (AVX2) or `2 * TILE` (AVX-512) output columns held in registers over [`DEPTH`] steps of
//! `K`, and the activations packed for them ([`pack_rows`]).

// Without the x86 kernels nothing runs the tiles, and no product packs its activations
// ([`super::blocked`] and [`super::packed`] check the CPU first); the layout stays compiled for
// its tests.
#![cfg_attr(not(x86_simd), allow(dead_code))]

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

/// Output rows held in registers at once: 6 x 2 accumulators + 2 weight vectors + 1 broadcast
/// fit the 16 AVX2 registers.
pub(super) const ROWS: usize = 6;
/// Columns per tile: two 8-lane vectors.
pub(super) const TILE: usize = 16;
/// Rows of `w` packed at once: a packed tile (`DEPTH x TILE` f32, 16 KB) stays in L1 while every
/// row block runs over it.
#[cfg(x86_simd)]
pub(super) const DEPTH: usize = 256;
/// From this many values of `x` up, [`pack_rows`] packs its blocks in parallel.
const PARALLEL_PACK: usize = 1 << 16;

/// `x` packed for the register tiles ([`pack_rows`]).
pub(super) struct RowBlocks {
    /// Block `b`, step `kk`: the block's rows' values at `values[(b * K + kk) * ROWS..]`, the
    /// slots past its rows zeros.
    pub values: Vec<f32>,
    /// The rows of each block, in order.
    pub blocks: Vec<Range<usize>>,
}

/// `x` (`[M, K]`) in blocks of at most [`ROWS`] rows, step by step, so the kernel's broadcasts
/// read one contiguous stream instead of rows `K` apart. The blocks are as even as they go
/// (`M = 32`: 6, 6, 5, 5, 5, 5, not five of 6 and one of 2): a tile of `R` rows keeps `2R`
/// independent multiply-add chains, and the two FMA units (4 cycles of latency) need 8 to stay
/// busy, so a block of 1-3 rows runs at 25-75% of their speed. An expert's share of a prompt
/// is any number of rows; the sums are the same either way.
pub(super) fn pack_rows(x: &[f32], m: usize, k: usize) -> RowBlocks {
    let count = m.div_ceil(ROWS);
    let (base, extra) = (m / count.max(1), m % count.max(1));
    let mut blocks = Vec::with_capacity(count);
    for b in 0..count {
        let start = blocks.last().map_or(0, |r: &Range<usize>| r.end);
        blocks.push(start..start + base + usize::from(b < extra));
    }
    // Not zero-filled first (on the calling thread that fill was 1.7% of the MoE layer's packed
    // forward, `perf`, 2026-11-25, Zen 3): each block writes all its slots, its padding as zeros.
    let len = count * k * ROWS;
    let mut values = Vec::<f32>::with_capacity(len);
    let pack = |(block, rows): (&mut [MaybeUninit<f32>], &Range<usize>)| {
        let (x, n) = (&x[rows.start * k..rows.end * k], rows.len());
        for (kk, step) in block.chunks_exact_mut(ROWS).enumerate() {
            for (i, slot) in step.iter_mut().enumerate() {
                slot.write(if i < n { x[i * k + kk] } else { 0.0 });
            }
        }
    };
    // Blocks in parallel for long inputs: on the calling thread, packing an expert's 512 rows
    // of a `[512, 1408]` input took the packed kernel from 137 to 152 GFLOP/s (harness, medians
    // of eight alternating runs, 2026-11-25, Zen 3) while the other core waited.
    let spare = &mut values.spare_capacity_mut()[..len];
    if m * k < PARALLEL_PACK {
        spare.chunks_exact_mut((k * ROWS).max(1)).zip(&blocks).for_each(pack);
    } else {
        spare.par_chunks_exact_mut((k * ROWS).max(1)).zip(&blocks).for_each(pack);
    }
    // SAFETY: the blocks cover `values` (`count` blocks of `k * ROWS` slots) and wrote every slot.
    unsafe { values.set_len(len) };
    RowBlocks { values, blocks }
}

#[cfg(x86_simd)]
pub(super) use x86::{tile, tile_pair};

#[cfg(x86_simd)]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::weights::Load;
    use super::{ROWS, TILE};

    /// `min(rows, ROWS)` rows by 16 columns of the output, accumulated in registers over `depth`
    /// rows of a packed tile of `w` (`tile_w`: `TILE` weights per row, widened to f32 as they are
    /// read) and of `x` (`xp`: `ROWS` values per step, the block's rows), stored into `out` (row
    /// stride `width`), or added to what it holds when `add`.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `tile_w` holds `depth * TILE` weights, `xp`
    /// `depth * ROWS` values and `out` the rows and columns written (initialised when `add`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::kernels) unsafe fn tile<W: Load>(
        rows: usize,
        xp: *const f32,
        tile_w: *const W,
        depth: usize,
        out: *mut f32,
        width: usize,
        add: bool,
    ) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            match rows {
                1 => tile_rows::<1, W>(xp, tile_w, depth, out, width, add),
                2 => tile_rows::<2, W>(xp, tile_w, depth, out, width, add),
                3 => tile_rows::<3, W>(xp, tile_w, depth, out, width, add),
                4 => tile_rows::<4, W>(xp, tile_w, depth, out, width, add),
                5 => tile_rows::<5, W>(xp, tile_w, depth, out, width, add),
                _ => tile_rows::<ROWS, W>(xp, tile_w, depth, out, width, add),
            }
        }
    }

    /// [`tile`] for `R` rows.
    ///
    /// # Safety
    /// As [`tile`], for `R` rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_rows<const R: usize, W: Load>(
        xp: *const f32,
        tile_w: *const W,
        depth: usize,
        out: *mut f32,
        width: usize,
        add: bool,
    ) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let mut lo = [_mm256_setzero_ps(); R];
            let mut hi = [_mm256_setzero_ps(); R];
            if add {
                for r in 0..R {
                    lo[r] = _mm256_loadu_ps(out.add(r * width));
                    hi[r] = _mm256_loadu_ps(out.add(r * width + 8));
                }
            }
            let mut wp = tile_w;
            let mut xs = xp;
            for _ in 0..depth {
                let w_lo = W::load8(wp);
                let w_hi = W::load8(wp.add(8));
                for r in 0..R {
                    let a = _mm256_broadcast_ss(&*xs.add(r));
                    lo[r] = _mm256_fmadd_ps(a, w_lo, lo[r]);
                    hi[r] = _mm256_fmadd_ps(a, w_hi, hi[r]);
                }
                wp = wp.add(TILE);
                xs = xs.add(ROWS);
            }
            for r in 0..R {
                _mm256_storeu_ps(out.add(r * width), lo[r]);
                _mm256_storeu_ps(out.add(r * width + 8), hi[r]);
            }
        }
    }

    /// [`tile`] over two tiles side by side on AVX-512: `min(rows, ROWS)` rows by 32 columns,
    /// the weights of columns 0-15 at `w0` and of 16-31 at `w1` (each `TILE` per row, e.g. two
    /// packed strips), one 16-lane register per row and tile. The same `2 * R` chains of
    /// multiply-adds as [`tile`], each lane summed over `k` in the same order, so the same
    /// values to the bit, at twice the work per instruction.
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX2, FMA and F16C; `w0` and `w1` hold `depth * TILE` weights, `xp`
    /// `depth * ROWS` values and `out` the rows and 32 columns written (initialised when `add`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(in crate::kernels) unsafe fn tile_pair<W: Load>(
        rows: usize,
        xp: *const f32,
        w0: *const W,
        w1: *const W,
        depth: usize,
        out: *mut f32,
        width: usize,
        add: bool,
    ) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            match rows {
                1 => tile_pair_rows::<1, W>(xp, w0, w1, depth, out, width, add),
                2 => tile_pair_rows::<2, W>(xp, w0, w1, depth, out, width, add),
                3 => tile_pair_rows::<3, W>(xp, w0, w1, depth, out, width, add),
                4 => tile_pair_rows::<4, W>(xp, w0, w1, depth, out, width, add),
                5 => tile_pair_rows::<5, W>(xp, w0, w1, depth, out, width, add),
                _ => tile_pair_rows::<ROWS, W>(xp, w0, w1, depth, out, width, add),
            }
        }
    }

    /// [`tile_pair`] for `R` rows.
    ///
    /// # Safety
    /// As [`tile_pair`], for `R` rows.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn tile_pair_rows<const R: usize, W: Load>(
        xp: *const f32,
        w0: *const W,
        w1: *const W,
        depth: usize,
        out: *mut f32,
        width: usize,
        add: bool,
    ) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let mut left = [_mm512_setzero_ps(); R];
            let mut right = [_mm512_setzero_ps(); R];
            if add {
                for r in 0..R {
                    left[r] = _mm512_loadu_ps(out.add(r * width));
                    right[r] = _mm512_loadu_ps(out.add(r * width + TILE));
                }
            }
            let (mut p0, mut p1, mut xs) = (w0, w1, xp);
            for _ in 0..depth {
                let (a0, a1) = (W::load16(p0), W::load16(p1));
                for r in 0..R {
                    let a = _mm512_set1_ps(*xs.add(r));
                    left[r] = _mm512_fmadd_ps(a, a0, left[r]);
                    right[r] = _mm512_fmadd_ps(a, a1, right[r]);
                }
                p0 = p0.add(TILE);
                p1 = p1.add(TILE);
                xs = xs.add(ROWS);
            }
            for r in 0..R {
                _mm512_storeu_ps(out.add(r * width), left[r]);
                _mm512_storeu_ps(out.add(r * width + TILE), right[r]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_blocks_are_as_even_as_they_go() {
        let sizes = |m: usize| pack_rows(&vec![1.0; m * 3], m, 3).blocks.iter().map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(sizes(32), [6, 6, 5, 5, 5, 5]);
        assert_eq!(sizes(7), [4, 3]);
        assert_eq!(sizes(12), [6, 6]);
        assert_eq!(sizes(1), [1]);
        assert!(sizes(0).is_empty());
        // Row `r` of block `b`, step `kk`, at `(b * K + kk) * ROWS + i`.
        let x: Vec<f32> = (0..7 * 2).map(|v| v as f32).collect();
        let packed = pack_rows(&x, 7, 2);
        assert_eq!(packed.values[..ROWS], [0.0, 2.0, 4.0, 6.0, 0.0, 0.0]);
        assert_eq!(packed.values[2 * ROWS..3 * ROWS], [8.0, 10.0, 12.0, 0.0, 0.0, 0.0]);
    }
}
