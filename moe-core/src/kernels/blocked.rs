//! `out = x · w` for tens of rows of activations: the per-expert products of a prompt, where each
//! expert sees a few dozen tokens.
//!
//! Why not `gemm`: at a few dozen rows burn-flex's `gemm` calls ran at about half this kernel's
//! speed (see BENCHMARKS.md). This kernel keeps a block of `ROWS x 16` outputs in registers while
//! it walks `K`, so each weight loaded from cache feeds `ROWS` multiply-adds per lane. The 16
//! columns of a tile are one cache line per row of `w`, and consecutive rows are `N` floats
//! apart, a new 4 KB page on nearly every step: walking that directly stalled on every load (no
//! prefetcher crosses pages). So each task first copies a panel of `PANEL` tiles by `DEPTH` rows
//! into a contiguous buffer (reading `w` a row stretch at a time, widened to f32), then runs
//! every row block over the packed tiles, which are read sequentially from L1/L2. Column panels
//! are split between rayon's threads.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::weights::has_avx2_fma_f16c;
use super::weights::{accumulate, Weights};

/// Output rows held in registers at once: 6 x 2 accumulators + 2 weight vectors + 1 broadcast
/// fit the 16 AVX2 registers.
const ROWS: usize = 6;
/// Columns per tile: two 8-lane vectors.
const TILE: usize = 16;
/// Tiles packed together: a row stretch of `PANEL * TILE` weights is read at once.
const PANEL: usize = 8;
/// Rows of `w` packed at once: a packed tile (`DEPTH x TILE` f32, 16 KB) stays in L1 while every
/// row block runs over it.
const DEPTH: usize = 256;
/// Rows of `w` fetched ahead of the packing.
const PREFETCH_ROWS: usize = 8;

/// `out[m, n] = Σ_k x[m, k] · w[k, n]` with f32 accumulation, for any `M` (it is meant for
/// `M` up to [`super::BLOCKED_ROWS`]; beyond that `gemm`'s packing pays for itself).
///
/// # Shapes
/// - `x`: `[M, K]` row-major, `w`: `[K, N]` row-major -> `[M, N]` row-major
///
/// # Panics
/// If the slice lengths disagree with `m`, `k` and `n`.
pub fn blocked_matmul(x: &[f32], w: Weights<'_>, m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    assert_eq!(w.len(), k * n, "w is not [{k}, {n}]");
    let mut out = vec![0.0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    // Whole panels per task, enough tasks for every thread to take several.
    let tiles = n.div_ceil(TILE);
    let per_task = tiles.div_ceil(4 * rayon::current_num_threads()).clamp(1, PANEL);
    let tasks: Vec<_> = (0..tiles).step_by(per_task).map(|t| t * TILE..((t + per_task) * TILE).min(n)).collect();
    let bands: Vec<(usize, Vec<f32>)> =
        tasks.into_par_iter().map(|cols| (cols.start, columns(x, w, m, k, n, cols))).collect();
    for (c0, band) in bands {
        let width = band.len() / m;
        for (row, values) in out.chunks_exact_mut(n).zip(band.chunks_exact(width)) {
            row[c0..c0 + width].copy_from_slice(values);
        }
    }
    out
}

/// Columns `cols` of the product, `[M, cols.len()]` row-major.
fn columns(x: &[f32], w: Weights<'_>, m: usize, k: usize, n: usize, cols: std::ops::Range<usize>) -> Vec<f32> {
    let mut band = vec![0.0f32; m * cols.len()];
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma_f16c() {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { x86::columns(x, w, m, k, n, cols, &mut band) };
        return band;
    }
    accumulate(x, w, k, n, cols, 0..k, &mut band);
    band
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::weights::{Load, Weights};
    use super::{DEPTH, PREFETCH_ROWS, ROWS, TILE};

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn columns(
        x: &[f32],
        w: Weights<'_>,
        m: usize,
        k: usize,
        n: usize,
        cols: std::ops::Range<usize>,
        band: &mut [f32],
    ) {
        match w {
            Weights::F32(w) => columns_typed(x, w, m, k, n, cols, band),
            Weights::F16(w) => columns_typed(x, w, m, k, n, cols, band),
            Weights::Bf16(w) => columns_typed(x, w, m, k, n, cols, band),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn columns_typed<W: Load>(
        x: &[f32],
        w: &[W],
        m: usize,
        k: usize,
        n: usize,
        cols: std::ops::Range<usize>,
        band: &mut [f32],
    ) {
        let width = cols.len();
        let full_tiles = width / TILE;
        let mut packed = vec![0.0f32; full_tiles.max(1) * DEPTH * TILE];
        for k0 in (0..k).step_by(DEPTH) {
            let depth = DEPTH.min(k - k0);
            // Pack: tile t, row r at packed[(t * depth + r) * TILE ..]. Each row's stretch is
            // on another page, where the hardware prefetcher does not follow: fetch the stretch
            // `PREFETCH_ROWS` rows ahead explicitly (the packing stores stalled on these loads).
            for r in 0..depth {
                let src = w.as_ptr().add((k0 + r) * n + cols.start);
                if k0 + r + PREFETCH_ROWS < k {
                    let ahead = src.add(PREFETCH_ROWS * n).cast::<i8>();
                    for byte in (0..full_tiles * TILE * std::mem::size_of::<W>()).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.add(byte));
                    }
                }
                for t in 0..full_tiles {
                    let dst = packed.as_mut_ptr().add((t * depth + r) * TILE);
                    _mm256_storeu_ps(dst, W::load8(src.add(t * TILE)));
                    _mm256_storeu_ps(dst.add(8), W::load8(src.add(t * TILE + 8)));
                }
            }
            for t in 0..full_tiles {
                let tile_w = &packed[t * depth * TILE..(t + 1) * depth * TILE];
                let c = t * TILE;
                let mut r = 0;
                while r + ROWS <= m {
                    tile::<ROWS>(x, tile_w, k, k0, depth, r, band, width, c);
                    r += ROWS;
                }
                match m - r {
                    1 => tile::<1>(x, tile_w, k, k0, depth, r, band, width, c),
                    2 => tile::<2>(x, tile_w, k, k0, depth, r, band, width, c),
                    3 => tile::<3>(x, tile_w, k, k0, depth, r, band, width, c),
                    4 => tile::<4>(x, tile_w, k, k0, depth, r, band, width, c),
                    5 => tile::<5>(x, tile_w, k, k0, depth, r, band, width, c),
                    _ => {}
                }
            }
        }
        // The last columns when the band is not a whole number of tiles.
        if full_tiles * TILE == width {
            return;
        }
        for kk in 0..k {
            for mm in 0..m {
                let a = x[mm * k + kk];
                for j in full_tiles * TILE..width {
                    band[mm * width + j] += a * w[kk * n + cols.start + j].to_f32();
                }
            }
        }
    }

    /// `R` rows by 16 columns of the output, accumulated in registers over the `depth` packed
    /// rows of `w` starting at row `k0`, added to what `band` holds.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize>(
        x: &[f32],
        tile_w: &[f32],
        k: usize,
        k0: usize,
        depth: usize,
        row: usize,
        band: &mut [f32],
        width: usize,
        col: usize,
    ) {
        let out = band.as_mut_ptr().add(row * width + col);
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        for r in 0..R {
            lo[r] = _mm256_loadu_ps(out.add(r * width));
            hi[r] = _mm256_loadu_ps(out.add(r * width + 8));
        }
        let xs = x.as_ptr().add(row * k + k0);
        let mut wp = tile_w.as_ptr();
        for kk in 0..depth {
            let w_lo = _mm256_loadu_ps(wp);
            let w_hi = _mm256_loadu_ps(wp.add(8));
            for r in 0..R {
                let a = _mm256_broadcast_ss(&*xs.add(r * k + kk));
                lo[r] = _mm256_fmadd_ps(a, w_lo, lo[r]);
                hi[r] = _mm256_fmadd_ps(a, w_hi, hi[r]);
            }
            wp = wp.add(TILE);
        }
        for r in 0..R {
            _mm256_storeu_ps(out.add(r * width), lo[r]);
            _mm256_storeu_ps(out.add(r * width + 8), hi[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::check_every_dtype;
    use super::*;

    #[test]
    fn every_dtype_matches_the_reference_on_odd_shapes() {
        // Row counts around the 6-row block, column tails, K over several packed panels, a wide
        // N split between threads.
        check_every_dtype(blocked_matmul, &[(1, 3, 16), (7, 5, 17), (13, 33, 200), (32, 600, 1411), (64, 16, 5000)]);
    }
}
