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

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::weights::has_avx2_fma_f16c;
use super::weights::{accumulate, Weights};

/// Output rows held in registers at once: 6 x 2 accumulators + 2 weight vectors + 1 broadcast
/// fit the 16 AVX2 registers.
pub(super) const ROWS: usize = 6;
/// Columns per tile: two 8-lane vectors.
pub(super) const TILE: usize = 16;
/// Tiles packed together: a row stretch of `PANEL * TILE` weights is read at once.
const PANEL: usize = 8;
/// Rows of `w` packed at once: a packed tile (`DEPTH x TILE` f32, 16 KB) stays in L1 while every
/// row block runs over it.
pub(super) const DEPTH: usize = 256;
/// Rows of `w` fetched ahead of the packing.
const PREFETCH_ROWS: usize = 8;
/// From this many values of `x` up, [`pack_rows`] packs its blocks in parallel.
const PARALLEL_PACK: usize = 1 << 16;

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
    let xp = pack_rows(x, m, k);
    let bands = tasks.into_par_iter().map(|cols| (cols.start, columns(x, &xp, w, m, k, cols))).collect();
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
    // forward, `perf`, session 19): each block writes all its slots, its padding as zeros.
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
    // of eight alternating runs, session 19) while the other core waited.
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

/// Columns `cols` of the product, `[M, cols.len()]` row-major; `xp` is `x` by [`pack_rows`].
fn columns<P: Panels>(x: &[f32], xp: &RowBlocks, w: &P, m: usize, k: usize, cols: Range<usize>) -> Vec<f32> {
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
pub(super) use x86::{tile, tile_pair};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::weights::{Load, Weights};
    use super::{Panels, RowBlocks, DEPTH, PREFETCH_ROWS, ROWS, TILE};

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
        match rows {
            1 => tile_rows::<1, W>(xp, tile_w, depth, out, width, add),
            2 => tile_rows::<2, W>(xp, tile_w, depth, out, width, add),
            3 => tile_rows::<3, W>(xp, tile_w, depth, out, width, add),
            4 => tile_rows::<4, W>(xp, tile_w, depth, out, width, add),
            5 => tile_rows::<5, W>(xp, tile_w, depth, out, width, add),
            _ => tile_rows::<ROWS, W>(xp, tile_w, depth, out, width, add),
        }
    }

    /// [`tile`] for `R` rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_rows<const R: usize, W: Load>(
        xp: *const f32,
        tile_w: *const W,
        depth: usize,
        out: *mut f32,
        width: usize,
        add: bool,
    ) {
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
        match rows {
            1 => tile_pair_rows::<1, W>(xp, w0, w1, depth, out, width, add),
            2 => tile_pair_rows::<2, W>(xp, w0, w1, depth, out, width, add),
            3 => tile_pair_rows::<3, W>(xp, w0, w1, depth, out, width, add),
            4 => tile_pair_rows::<4, W>(xp, w0, w1, depth, out, width, add),
            5 => tile_pair_rows::<5, W>(xp, w0, w1, depth, out, width, add),
            _ => tile_pair_rows::<ROWS, W>(xp, w0, w1, depth, out, width, add),
        }
    }

    /// [`tile_pair`] for `R` rows.
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
