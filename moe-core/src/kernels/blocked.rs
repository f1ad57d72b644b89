//! `out = x · w` for tens of rows of activations: the per-expert products of a prompt, where each
//! expert sees a few dozen tokens. The register tiles it runs are [`super::tiles`]'.
//!
//! Why not `gemm`: at a few dozen rows burn-flex's `gemm` calls ran at about half this kernel's
//! speed (see docs/benchmarks-history.md). This kernel keeps a block of `ROWS x 16` outputs in registers while
//! it walks `K`, so each weight loaded from cache feeds `ROWS` multiply-adds per lane. The 16
//! columns of a tile are one cache line per row of `w`, and consecutive rows are `N` floats
//! apart, a new 4 KB page on nearly every step: walking that directly stalled on every load (no
//! prefetcher crosses pages). So each task first copies a panel of `PANEL` tiles by `DEPTH` rows
//! into a contiguous buffer (reading `w` a row stretch at a time, widened to f32), then runs
//! every row block over the packed tiles, which are read sequentially from L1/L2. Column panels
//! are split between rayon's threads.

use std::ops::Range;

use rayon::prelude::*;

#[cfg(x86_simd)]
use super::isa::avx2;
#[cfg(x86_simd)]
use super::tiles::pack_rows;
use super::tiles::{RowBlocks, TILE};
use super::weights::{accumulate, Weights};

/// Tiles packed together: a row stretch of `PANEL * TILE` weights is read at once.
const PANEL: usize = 8;
/// Rows of `w` fetched ahead of the packing.
#[cfg(x86_simd)]
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
    /// The CPU has AVX2, FMA and F16C; `cols` are whole tiles of `w`'s `N` columns, rows
    /// `k0..k0 + depth` are within `K` and `packed` has room for `cols.len() * depth` values.
    #[cfg(x86_simd)]
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
    #[cfg(x86_simd)]
    unsafe fn pack(&self, cols: Range<usize>, k0: usize, depth: usize, packed: &mut [f32]) {
        // SAFETY: `Panels::pack`'s contract is `pack_dense`'s.
        unsafe { x86::pack_dense(self.w, self.n, cols, k0, depth, packed) };
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
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0f32; m * n];
    }
    // Whole panels per task, enough tasks for every thread to take several.
    let tiles = n.div_ceil(TILE);
    let per_task = tiles.div_ceil(4 * rayon::current_num_threads()).clamp(1, PANEL);
    let tasks: Vec<_> = (0..tiles).step_by(per_task).map(|t| t * TILE..((t + per_task) * TILE).min(n)).collect();
    // `x` packed once for every task. (In a throwaway harness, `[128, 4096] x [4096, 14336]`
    // f32, packing took the kernel from 65 to 100-109 GFLOP/s; packing it per task instead
    // repeated it for each of the dozens of tasks.)
    // Only where the x86 tiles read it.
    #[cfg(x86_simd)]
    let xp = avx2().then(|| pack_rows(x, m, k));
    #[cfg(not(x86_simd))]
    let xp = None;
    let bands = tasks.into_par_iter().map(|cols| (cols.start, columns(x, xp.as_ref(), w, m, k, cols))).collect();
    assemble(bands, m, n)
}

/// The `[M, N]` product from bands of its columns: `(first column, [M, width] row-major)`; a
/// band's columns past `N` (a packed strip's padding) are dropped.
pub(super) fn assemble(bands: Vec<(usize, Vec<f32>)>, m: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    for (c0, band) in bands {
        let width = band.len() / m;
        let cols = width.min(n - c0);
        for (row, values) in out.chunks_exact_mut(n).zip(band.chunks_exact(width)) {
            row[c0..c0 + cols].copy_from_slice(&values[..cols]);
        }
    }
    out
}

/// Columns `cols` of the product, `[M, cols.len()]` row-major; `xp` is `x` by `pack_rows` where
/// the x86 tiles run (`None` elsewhere).
fn columns<P: Panels>(x: &[f32], xp: Option<&RowBlocks>, w: &P, m: usize, k: usize, cols: Range<usize>) -> Vec<f32> {
    let width = cols.len();
    let mut band = vec![0.0f32; m * width];
    #[cfg(x86_simd)]
    if let Some(xp) = xp {
        // SAFETY: the CPU has the features the function is compiled for.
        let done = unsafe { x86::columns(xp, w, m, k, cols.clone(), &mut band) };
        if done < width {
            w.columns(x, m, k, cols.start + done..cols.end, &mut band, width, done);
        }
        return band;
    }
    #[cfg(not(x86_simd))]
    debug_assert!(xp.is_none(), "nothing packs the activations without the x86 tiles");
    w.columns(x, m, k, cols, &mut band, width, 0);
    band
}

#[cfg(x86_simd)]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::tiles::tile;
    use super::super::tiles::{DEPTH, ROWS};
    use super::super::weights::{Load, Weights};
    use super::{Panels, RowBlocks, PREFETCH_ROWS, TILE};

    thread_local! {
        /// Each thread's buffer for packed tiles, kept between calls: a fresh zero-filled one
        /// per task was 3.4% of a 128-token prefill (`memset`), all of it overwritten by the
        /// packing before it is read.
        static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Runs the whole tiles of `cols` into `band`; returns how many columns that covered. `xp`
    /// is `x` by [`super::pack_rows`].
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `band` is `[M, cols.len()]` and `xp` is `[M, K]` by
    /// `pack_rows`; `w` covers `cols` and `K`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn columns<P: Panels>(
        xp: &RowBlocks,
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
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `band` is `[M, width]` with `full_tiles` whole tiles from
    /// `c0` within `w`'s columns, `packed` has room for `full_tiles * DEPTH * TILE` values and `xp`
    /// is `[M, K]` by `pack_rows`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn panels<P: Panels>(
        xp: &RowBlocks,
        w: &P,
        m: usize,
        k: usize,
        c0: usize,
        full_tiles: usize,
        band: &mut [f32],
        packed: &mut [f32],
    ) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let width = band.len() / m;
            for k0 in (0..k).step_by(DEPTH) {
                let depth = DEPTH.min(k - k0);
                w.pack(c0..c0 + full_tiles * TILE, k0, depth, packed);
                for t in 0..full_tiles {
                    let tile_w = &packed[t * depth * TILE..(t + 1) * depth * TILE];
                    for (b, rows) in xp.blocks.iter().enumerate() {
                        let xs = xp.values.as_ptr().add((b * k + k0) * ROWS);
                        let out = band.as_mut_ptr().add(rows.start * width + t * TILE);
                        tile(rows.len(), xs, tile_w.as_ptr(), depth, out, width, true);
                    }
                }
            }
        }
    }

    /// Packs dense weights, widened to f32.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `cols` are whole tiles of `w`'s `N` columns, rows `k0..k0 +
    /// depth` are within `K` and `packed` has room for `cols.len() * depth` values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn pack_dense(
        w: Weights<'_>,
        n: usize,
        cols: Range<usize>,
        k0: usize,
        depth: usize,
        packed: &mut [f32],
    ) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            match w {
                Weights::F32(w) => pack_typed(w, n, cols, k0, depth, packed),
                Weights::F16(w) => pack_typed(w, n, cols, k0, depth, packed),
                Weights::Bf16(w) => pack_typed(w, n, cols, k0, depth, packed),
            }
        }
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C; as [`pack_dense`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pack_typed<W: Load>(w: &[W], n: usize, cols: Range<usize>, k0: usize, depth: usize, packed: &mut [f32]) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
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
