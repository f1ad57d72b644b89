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

use std::ops::Range;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::weights::has_avx2_fma_f16c;
use super::weights::{accumulate, Weights};

/// Output rows held in registers at once: 6 x 2 accumulators + 2 weight vectors + 1 broadcast
/// fit the 16 AVX2 registers.
const ROWS: usize = 6;
/// Columns per tile: two 8-lane vectors.
pub(super) const TILE: usize = 16;
/// Tiles packed together: a row stretch of `PANEL * TILE` weights is read at once.
const PANEL: usize = 8;
/// Rows of `w` packed at once: a packed tile (`DEPTH x TILE` f32, 16 KB) stays in L1 while every
/// row block runs over it.
pub(super) const DEPTH: usize = 256;
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
    assert_eq!(w.len(), k * n, "w is not [{k}, {n}]");
    tiled(x, &Dense { w, n }, m, k, n)
}

/// Where the tiles of `w` (`[K, N]`) come from: its storage read as f32 panels. Dense weights
/// here; GGUF blocks in the quantized kernel.
pub(super) trait Panels: Sync {
    /// Writes columns `cols` (whole tiles of [`TILE`]) of rows `k0..k0 + depth` of `w` as
    /// packed tiles: tile `t`, row `r` at `packed[(t * depth + r) * TILE..][..TILE]`. `k0` and
    /// `depth` are multiples of [`DEPTH`] but for the last panel, which ends at `K`.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    unsafe fn pack(&self, cols: Range<usize>, k0: usize, depth: usize, packed: &mut [f32]);

    /// Adds columns `cols` of `x · w` into `band` (`[M, width]`, column `cols.start` at
    /// `first`): the columns past the last whole tile, and all of them on CPUs without AVX2.
    #[allow(clippy::too_many_arguments)]
    fn columns(&self, x: &[f32], m: usize, k: usize, cols: Range<usize>, band: &mut [f32], width: usize, first: usize);
}

/// A dense `[K, N]` weight matrix as panels.
struct Dense<'a> {
    w: Weights<'a>,
    n: usize,
}

impl Panels for Dense<'_> {
    unsafe fn pack(&self, cols: Range<usize>, k0: usize, depth: usize, packed: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        x86::pack_dense(self.w, self.n, cols, k0, depth, packed);
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("packing is the x86 kernel's ({cols:?} {k0} {depth} {})", packed.len())
    }

    fn columns(&self, x: &[f32], m: usize, k: usize, cols: Range<usize>, band: &mut [f32], width: usize, first: usize) {
        let mut acc = vec![0.0f32; m * cols.len()];
        accumulate(x, self.w, k, self.n, cols.clone(), 0..k, &mut acc);
        for (row, values) in band.chunks_exact_mut(width).zip(acc.chunks_exact(cols.len())) {
            row[first..first + cols.len()].iter_mut().zip(values).for_each(|(o, v)| *o += v);
        }
    }
}

/// `x · w` for `w` given as [`Panels`]: column panels split between rayon's threads, each run
/// by the register-blocked kernel.
///
/// # Shapes
/// - `x`: `[M, K]` row-major -> `[M, N]` row-major
///
/// # Panics
/// If `x` is not `[M, K]`.
pub(super) fn tiled<P: Panels>(x: &[f32], w: &P, m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    let mut out = vec![0.0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    // Whole panels per task, enough tasks for every thread to take several.
    let tiles = n.div_ceil(TILE);
    let per_task = tiles.div_ceil(4 * rayon::current_num_threads()).clamp(1, PANEL);
    let tasks: Vec<_> = (0..tiles).step_by(per_task).map(|t| t * TILE..((t + per_task) * TILE).min(n)).collect();
    // `x` packed once for every task: block `b` of `ROWS` rows, step `kk` at
    // `xp[(b * k + kk) * ROWS..]`, so the kernel's broadcasts read one contiguous stream instead
    // of `ROWS` rows `K` apart. (In a throwaway harness, `[128, 4096] x [4096, 14336]` f32, this
    // took the kernel from 65 to 100-109 GFLOP/s; packing it per task instead repeated it for
    // each of the dozens of tasks.)
    let xp = pack_rows(x, m, k);
    let bands: Vec<(usize, Vec<f32>)> =
        tasks.into_par_iter().map(|cols| (cols.start, columns(x, &xp, w, m, k, cols))).collect();
    for (c0, band) in bands {
        let width = band.len() / m;
        for (row, values) in out.chunks_exact_mut(n).zip(band.chunks_exact(width)) {
            row[c0..c0 + width].copy_from_slice(values);
        }
    }
    out
}

/// `x` (`[M, K]`) in blocks of [`ROWS`] rows, step by step: row `b * ROWS + i`, column `kk` at
/// `[(b * K + kk) * ROWS + i]`; the rows past `M` in the last block are zeros.
fn pack_rows(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let mut xp = vec![0.0f32; m.div_ceil(ROWS) * k * ROWS];
    for (r, row) in x.chunks_exact(k).enumerate() {
        let block = &mut xp[r / ROWS * k * ROWS..][..k * ROWS];
        for (kk, v) in row.iter().enumerate() {
            block[kk * ROWS + r % ROWS] = *v;
        }
    }
    xp
}

/// Columns `cols` of the product, `[M, cols.len()]` row-major; `xp` is `x` by [`pack_rows`].
fn columns<P: Panels>(x: &[f32], xp: &[f32], w: &P, m: usize, k: usize, cols: Range<usize>) -> Vec<f32> {
    let width = cols.len();
    let mut band = vec![0.0f32; m * width];
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma_f16c() {
        // SAFETY: the CPU has the features the function is compiled for.
        let done = unsafe { x86::columns(xp, w, m, k, cols.clone(), &mut band) };
        if done < width {
            w.columns(x, m, k, cols.start + done..cols.end, &mut band, width, done);
        }
        return band;
    }
    w.columns(x, m, k, cols, &mut band, width, 0);
    band
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::weights::{Load, Weights};
    use super::{Panels, DEPTH, PREFETCH_ROWS, ROWS, TILE};

    thread_local! {
        /// Each thread's buffer for packed tiles, kept between calls: a fresh zero-filled one
        /// per task was 3.4% of a 128-token prefill (`memset`), all of it overwritten by the
        /// packing before it is read.
        static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Runs the whole tiles of `cols` into `band`; returns how many columns that covered. `xp`
    /// is `x` by [`super::pack_rows`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn columns<P: Panels>(
        xp: &[f32],
        w: &P,
        m: usize,
        k: usize,
        cols: Range<usize>,
        band: &mut [f32],
    ) -> usize {
        let width = cols.len();
        let full_tiles = width / TILE;
        if full_tiles == 0 {
            return 0;
        }
        PACKED.with_borrow_mut(|packed| {
            if packed.len() < full_tiles * DEPTH * TILE {
                packed.resize(full_tiles * DEPTH * TILE, 0.0);
            }
            // SAFETY: the caller's CPU features, passed on.
            unsafe { panels(xp, w, m, k, cols.start, full_tiles, band, packed) };
        });
        full_tiles * TILE
    }

    /// [`columns`] over `full_tiles` tiles from column `c0`, packing into `packed`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn panels<P: Panels>(
        xp: &[f32],
        w: &P,
        m: usize,
        k: usize,
        c0: usize,
        full_tiles: usize,
        band: &mut [f32],
        packed: &mut [f32],
    ) {
        let width = band.len() / m;
        let blocks = m.div_ceil(ROWS);
        for k0 in (0..k).step_by(DEPTH) {
            let depth = DEPTH.min(k - k0);
            w.pack(c0..c0 + full_tiles * TILE, k0, depth, packed);
            for t in 0..full_tiles {
                let tile_w = &packed[t * depth * TILE..(t + 1) * depth * TILE];
                for b in 0..blocks {
                    let (xs, out) =
                        (xp.as_ptr().add((b * k + k0) * ROWS), band.as_mut_ptr().add(b * ROWS * width + t * TILE));
                    match m - b * ROWS {
                        1 => tile::<1>(xs, tile_w, depth, out, width),
                        2 => tile::<2>(xs, tile_w, depth, out, width),
                        3 => tile::<3>(xs, tile_w, depth, out, width),
                        4 => tile::<4>(xs, tile_w, depth, out, width),
                        5 => tile::<5>(xs, tile_w, depth, out, width),
                        _ => tile::<ROWS>(xs, tile_w, depth, out, width),
                    }
                }
            }
        }
    }

    /// Packs dense weights, widened to f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn pack_dense(
        w: Weights<'_>,
        n: usize,
        cols: Range<usize>,
        k0: usize,
        depth: usize,
        packed: &mut [f32],
    ) {
        match w {
            Weights::F32(w) => pack_typed(w, n, cols, k0, depth, packed),
            Weights::F16(w) => pack_typed(w, n, cols, k0, depth, packed),
            Weights::Bf16(w) => pack_typed(w, n, cols, k0, depth, packed),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pack_typed<W: Load>(w: &[W], n: usize, cols: Range<usize>, k0: usize, depth: usize, packed: &mut [f32]) {
        let (k, tiles) = (w.len() / n, cols.len() / TILE);
        // Tile t, row r at packed[(t * depth + r) * TILE ..]. Each row's stretch is on another
        // page, where the hardware prefetcher does not follow: fetch the stretch
        // `PREFETCH_ROWS` rows ahead explicitly (the packing stores stalled on these loads).
        for r in 0..depth {
            let src = w.as_ptr().add((k0 + r) * n + cols.start);
            if k0 + r + PREFETCH_ROWS < k {
                let ahead = src.add(PREFETCH_ROWS * n).cast::<i8>();
                for byte in (0..tiles * TILE * std::mem::size_of::<W>()).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(byte));
                }
            }
            for t in 0..tiles {
                let dst = packed.as_mut_ptr().add((t * depth + r) * TILE);
                _mm256_storeu_ps(dst, W::load8(src.add(t * TILE)));
                _mm256_storeu_ps(dst.add(8), W::load8(src.add(t * TILE + 8)));
            }
        }
    }

    /// `R` rows by 16 columns of the output, accumulated in registers over `depth` packed rows
    /// of `w` (`tile_w`) and of `x` (`xp`: `ROWS` values per step, the block's rows), added to
    /// what `out` (row stride `width`) holds.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const R: usize>(xp: *const f32, tile_w: &[f32], depth: usize, out: *mut f32, width: usize) {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        for r in 0..R {
            lo[r] = _mm256_loadu_ps(out.add(r * width));
            hi[r] = _mm256_loadu_ps(out.add(r * width + 8));
        }
        let mut wp = tile_w.as_ptr();
        let mut xs = xp;
        for _ in 0..depth {
            let w_lo = _mm256_loadu_ps(wp);
            let w_hi = _mm256_loadu_ps(wp.add(8));
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
