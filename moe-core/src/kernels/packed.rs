//! Weight matrices laid out once for this crate's CPU kernels: `[K, N]` cut into strips of
//! [`TILE`] columns, each strip's `K` rows contiguous (`[N / 16, K, 16]`, the last strip padded
//! with zeros), in the weights' own dtype. [`packed_matmul`] multiplies with them.
//!
//! Why: [`super::blocked_matmul`] reads a `[K, N]` matrix 16 to 128 columns at a time, each of
//! those rows on another 4 KB page, so every product first copies ("packs") panels of it into a
//! contiguous buffer. On a 128-token prefill of the 8x7B shape in f16 that copy was 28% of the
//! kernels' time (`perf`, 2026-11-24, Zen 3). Laid out this way when an inference model is loaded
//! ([`crate::model::Mixtral::pack_for_cpu`]), every tile the kernel needs is already
//! contiguous and is read in place: `[32, 4096] x [4096, 28672]` f16 went from 112-125 to
//! 144-151 GFLOP/s in a side harness. The layout costs no memory (it replaces the `[K, N]`
//! matrix) and is read at the memory's speed when decoding: each thread walks four strips at
//! once, four sequential streams (26-28 GB/s where the `[K, N]` kernel [`super::skinny_matmul`]
//! read 22-26 in the same harness run).
//!
//! Every output is summed over `k` in order, one multiply-add at a time, whatever the number of
//! activation rows: the prompt and decoding kernels give the same values to the bit (a token's
//! logits do not depend on what it is batched with), and the same as `blocked_matmul`'s.

use std::fmt;
use std::sync::Arc;

use burn::tensor::TensorData;
use half::{bf16, f16};
use rayon::prelude::*;

use super::tiles::TILE;
use super::weights::Weights;

/// A `[K, N]` weight matrix in strips of [`TILE`] columns (see the module docs); cheap to clone.
#[derive(Clone)]
pub struct PackedWeights {
    strips: Arc<Strips>,
    k: usize,
    n: usize,
}

/// The strips in the weights' dtype.
enum Strips {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl PackedWeights {
    /// `w` (`[K, N]` row-major) in strips.
    ///
    /// # Panics
    /// If `w` is not `K * N` values.
    pub fn pack(w: Weights<'_>, k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "w is not [{k}, {n}]");
        let strips = match w {
            Weights::F32(w) => Strips::F32(to_strips(w, k, n)),
            Weights::F16(w) => Strips::F16(to_strips(w, k, n)),
            Weights::Bf16(w) => Strips::Bf16(to_strips(w, k, n)),
        };
        Self { strips: Arc::new(strips), k, n }
    }

    /// `[K, N]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    /// The values back as `[K, N]` row-major tensor data of their dtype (exactly what was packed).
    pub fn unpack(&self) -> TensorData {
        let (k, n) = (self.k, self.n);
        match &*self.strips {
            Strips::F32(s) => TensorData::new(from_strips(s, k, n), [k, n]),
            Strips::F16(s) => TensorData::new(from_strips(s, k, n), [k, n]),
            Strips::Bf16(s) => TensorData::new(from_strips(s, k, n), [k, n]),
        }
    }
}

impl fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dtype = match &*self.strips {
            Strips::F32(_) => "f32",
            Strips::F16(_) => "f16",
            Strips::Bf16(_) => "bf16",
        };
        write!(f, "PackedWeights([{}, {}], {dtype})", self.k, self.n)
    }
}

/// `[K, N]` row-major -> `[N / TILE, K, TILE]`, a strip per task.
fn to_strips<E: Copy + Default + Send + Sync>(w: &[E], k: usize, n: usize) -> Vec<E> {
    let mut out = vec![E::default(); n.div_ceil(TILE) * k * TILE];
    if k == 0 {
        return out;
    }
    out.par_chunks_mut(k * TILE).enumerate().for_each(|(s, strip)| {
        let (c0, c1) = (s * TILE, ((s + 1) * TILE).min(n));
        for (kk, row) in strip.chunks_exact_mut(TILE).enumerate() {
            row[..c1 - c0].copy_from_slice(&w[kk * n + c0..kk * n + c1]);
        }
    });
    out
}

/// The inverse of [`to_strips`].
fn from_strips<E: Copy + Default + Send + Sync>(strips: &[E], k: usize, n: usize) -> Vec<E> {
    let mut out = vec![E::default(); k * n];
    if n == 0 {
        return out;
    }
    out.par_chunks_mut(n).enumerate().for_each(|(kk, row)| {
        for (s, chunk) in row.chunks_mut(TILE).enumerate() {
            chunk.copy_from_slice(&strips[(s * k + kk) * TILE..][..chunk.len()]);
        }
    });
    out
}

/// `out[m, n] = Σ_k x[m, k] · w[k, n]` with f32 accumulation.
///
/// # Shapes
/// - `x`: `[M, K]` row-major, `w`: `[K, N]` packed -> `[M, N]` row-major
///
/// # Panics
/// If `x` is not `[M, K]`.
pub fn packed_matmul(x: &[f32], w: &PackedWeights, m: usize) -> Vec<f32> {
    let (k, n) = (w.k, w.n);
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    #[cfg(x86_simd)]
    if super::isa::avx2() {
        return match &*w.strips {
            Strips::F32(s) => x86::matmul(x, s, m, k, n),
            Strips::F16(s) => x86::matmul(x, s, m, k, n),
            Strips::Bf16(s) => x86::matmul(x, s, m, k, n),
        };
    }
    match &*w.strips {
        Strips::F32(s) => portable(x, s, m, k, n, |v| v),
        Strips::F16(s) => portable(x, s, m, k, n, f16::to_f32),
        Strips::Bf16(s) => portable(x, s, m, k, n, bf16::to_f32),
    }
}

/// The product in plain Rust, strip by strip: CPUs without AVX2, FMA and F16C.
fn portable<E: Copy>(x: &[f32], strips: &[E], m: usize, k: usize, n: usize, widen: impl Fn(E) -> f32) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    for (s, strip) in strips.chunks_exact(k * TILE).enumerate() {
        let (c0, cols) = (s * TILE, TILE.min(n - s * TILE));
        for (row, out) in x.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
            let mut acc = [0.0f32; TILE];
            for (a, w) in row.iter().zip(strip.chunks_exact(TILE)) {
                acc.iter_mut().zip(w).for_each(|(acc, &w)| *acc += a * widen(w));
            }
            out[c0..c0 + cols].copy_from_slice(&acc[..cols]);
        }
    }
    out
}

/// Below this many weights (`K * N`) the product runs on the calling thread.
#[cfg(x86_simd)]
const PARALLEL_WEIGHTS: usize = 1 << 16;

#[cfg(x86_simd)]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use rayon::prelude::*;

    use super::super::isa::avx512;
    use super::super::tiles::{pack_rows, tile, tile_pair, RowBlocks, DEPTH, ROWS, TILE};
    use super::super::weights::Load;
    use super::super::SKINNY_ROWS;
    use super::PARALLEL_WEIGHTS;

    /// Strips per decoding task.
    const DECODE_STRIPS: usize = 16;
    /// Strips a decoding thread reads at once: four streams kept the memory busier than one
    /// (26-28 vs 17-18 GB/s, `[4096, 28672]` f16, one activation row, 2 threads) and give 8
    /// independent multiply-add chains.
    const STREAMS: usize = 4;
    /// Rows of the strips per pass when several activation rows share them: four strips of
    /// 512 rows (64 KB in f32) stay in L2 while each activation row runs over them.
    const CHUNK: usize = 512;
    /// Strips per prompt task, at most: a task reads `MAX_TASK_STRIPS` tiles of each `DEPTH`
    /// rows of `x`.
    const MAX_TASK_STRIPS: usize = 8;
    /// Activation rows per pass of a prompt task over its strips: their packed `DEPTH` steps
    /// (96 x 256 f32, 96 KB) stay in L2 while every tile of the task runs over them.
    const ROW_CHUNK: usize = 16 * ROWS;

    /// [`super::packed_matmul`] on a CPU with AVX2, FMA and F16C.
    pub(super) fn matmul<W: Load + Send + Sync>(x: &[f32], strips: &[W], m: usize, k: usize, n: usize) -> Vec<f32> {
        if m <= SKINNY_ROWS {
            decode(x, strips, m, k, n)
        } else {
            prompt(x, strips, m, k, n)
        }
    }

    /// A few activation rows: tasks of [`DECODE_STRIPS`] strips, [`STREAMS`] read at once.
    fn decode<W: Load + Send + Sync>(x: &[f32], strips: &[W], m: usize, k: usize, n: usize) -> Vec<f32> {
        let count = n.div_ceil(TILE);
        // `[strips, M, TILE]`: each task owns whole strips of it.
        let mut grouped = vec![0.0f32; count * m * TILE];
        let work = |(t, out): (usize, &mut [f32])| {
            for (g, out) in out.chunks_mut(STREAMS * m * TILE).enumerate() {
                let first = t * DECODE_STRIPS + g * STREAMS;
                let w = &strips[first * k * TILE..(first + out.len() / (m * TILE)) * k * TILE];
                // SAFETY: the caller checked the CPU's features; `w` is the strips of `out`.
                unsafe { streams(x, w, m, k, out) };
            }
        };
        if k * n < PARALLEL_WEIGHTS {
            grouped.chunks_mut(DECODE_STRIPS * m * TILE).enumerate().for_each(work);
        } else {
            grouped.par_chunks_mut(DECODE_STRIPS * m * TILE).enumerate().for_each(work);
        }
        let mut out = vec![0.0f32; m * n];
        for (s, values) in grouped.chunks_exact(m * TILE).enumerate() {
            let (c0, cols) = (s * TILE, TILE.min(n - s * TILE));
            for (row, values) in out.chunks_exact_mut(n).zip(values.chunks_exact(TILE)) {
                row[c0..c0 + cols].copy_from_slice(&values[..cols]);
            }
        }
        out
    }

    /// `out` (`[S, M, TILE]`, zeros) = `x · w` for the `S <= STREAMS` strips `w`.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `out` is `[S, M, TILE]` for `S <= STREAMS` strips, `w` holds
    /// those `S` strips of `k * TILE` weights and `x` is `[M, K]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn streams<W: Load>(x: &[f32], w: &[W], m: usize, k: usize, out: &mut [f32]) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            match out.len() / (m * TILE) {
                1 => streams_of::<1, W>(x, w, m, k, out),
                2 => streams_of::<2, W>(x, w, m, k, out),
                3 => streams_of::<3, W>(x, w, m, k, out),
                _ => streams_of::<STREAMS, W>(x, w, m, k, out),
            }
        }
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `out` is `[S, M, TILE]`, `w` holds `S` strips of `k * TILE`
    /// weights and `x` is `[M, K]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn streams_of<const S: usize, W: Load>(x: &[f32], w: &[W], m: usize, k: usize, out: &mut [f32]) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
            let strip = k * TILE;
            for k0 in (0..k).step_by(CHUNK) {
                let k1 = (k0 + CHUNK).min(k);
                for r in 0..m {
                    let o = op.add(r * TILE);
                    let mut acc = [_mm256_setzero_ps(); 8];
                    for s in 0..S {
                        acc[2 * s] = _mm256_loadu_ps(o.add(s * m * TILE));
                        acc[2 * s + 1] = _mm256_loadu_ps(o.add(s * m * TILE + 8));
                    }
                    let xr = x.as_ptr().add(r * k);
                    for kk in k0..k1 {
                        let a = _mm256_broadcast_ss(&*xr.add(kk));
                        for s in 0..S {
                            let p = wp.add(s * strip + kk * TILE);
                            acc[2 * s] = _mm256_fmadd_ps(a, W::load8(p), acc[2 * s]);
                            acc[2 * s + 1] = _mm256_fmadd_ps(a, W::load8(p.add(8)), acc[2 * s + 1]);
                        }
                    }
                    for s in 0..S {
                        _mm256_storeu_ps(o.add(s * m * TILE), acc[2 * s]);
                        _mm256_storeu_ps(o.add(s * m * TILE + 8), acc[2 * s + 1]);
                    }
                }
            }
        }
    }

    /// Many activation rows: tasks of up to [`MAX_TASK_STRIPS`] strips, each run by the blocked
    /// kernel's register tiles straight from the strips into the product.
    fn prompt<W: Load + Send + Sync>(x: &[f32], strips: &[W], m: usize, k: usize, n: usize) -> Vec<f32> {
        let count = n.div_ceil(TILE);
        let per_task = count.div_ceil(4 * rayon::current_num_threads()).clamp(1, MAX_TASK_STRIPS);
        let tasks: Vec<_> = (0..count).step_by(per_task).map(|s| s..(s + per_task).min(count)).collect();
        let xp = pack_rows(x, m, k);
        // The tasks write their strips' columns of one `[M, count * TILE]` buffer, not bands of
        // their own zeroed, then copied together: in a harness, `[128, 512] x [512, 512]` f32
        // went from 102 to 124 GFLOP/s (medians of six alternating runs). Nothing is zeroed
        // either: the first depth step of each tile stores, the later ones add.
        let width = count * TILE;
        let mut out = Vec::<f32>::with_capacity(m * width);
        let into = Columns(out.as_mut_ptr());
        let run = |task: Range<usize>| {
            // SAFETY: the caller checked the CPU's features; the tasks' strips are disjoint
            // columns of `out`, which has room for `[M, width]`.
            unsafe { band_of(&xp, strips, k, task, into.start(), width) }
        };
        if k * n < PARALLEL_WEIGHTS {
            tasks.into_iter().for_each(run);
        } else {
            tasks.into_par_iter().for_each(run);
        }
        // SAFETY: `k > 0` (the caller returns early otherwise), so every tile of every strip
        // stored its values at its first depth step.
        unsafe { out.set_len(m * width) };
        if width > n {
            // The last strip's padding columns go: rows move down to stride `n`.
            for r in 1..m {
                out.copy_within(r * width..r * width + n, r * n);
            }
            out.truncate(m * n);
        }
        out
    }

    /// The product's buffer, shared by tasks that write disjoint columns of it.
    #[derive(Clone, Copy)]
    struct Columns(*mut f32);

    // SAFETY: the tasks that share it write disjoint elements, and nothing reads the buffer
    // until they are done.
    unsafe impl Send for Columns {}
    // SAFETY: as for `Send`: shared, it is only written at disjoint elements.
    unsafe impl Sync for Columns {}

    impl Columns {
        /// A method, so that closures capture the `Sync` wrapper and not its raw pointer.
        fn start(self) -> *mut f32 {
            self.0
        }
    }

    /// Strips `task` of the product into `out` (`[M, width]`, row-major, column `s * TILE` for
    /// strip `s`); `xp` is `x` by [`pack_rows`]. On AVX-512 CPUs, two strips at a time
    /// ([`tile_pair`]).
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `out` has room for `[M, width]` and `width` covers the
    /// task's strips.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn band_of<W: Load>(
        xp: &RowBlocks,
        strips: &[W],
        k: usize,
        task: Range<usize>,
        out: *mut f32,
        width: usize,
    ) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let wide = avx512();
            for chunk in (0..xp.blocks.len()).step_by(ROW_CHUNK / ROWS) {
                let blocks = chunk..(chunk + ROW_CHUNK / ROWS).min(xp.blocks.len());
                for k0 in (0..k).step_by(DEPTH) {
                    let depth = DEPTH.min(k - k0);
                    let mut s = task.start;
                    while s < task.end {
                        // Two strips at once on AVX-512 (bit-identical to one at a time).
                        let pair = wide && s + 1 < task.end;
                        let w = strips.as_ptr().add((s * k + k0) * TILE);
                        for b in blocks.clone() {
                            let rows = &xp.blocks[b];
                            let xs = xp.values.as_ptr().add((b * k + k0) * ROWS);
                            let o = out.add(rows.start * width + s * TILE);
                            if pair {
                                tile_pair(rows.len(), xs, w, w.add(k * TILE), depth, o, width, k0 > 0);
                            } else {
                                tile(rows.len(), xs, w, depth, o, width, k0 > 0);
                            }
                        }
                        s += 1 + usize::from(pair);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check_every_dtype, values};
    use super::*;

    fn product(x: &[f32], w: Weights<'_>, m: usize, k: usize, n: usize) -> Vec<f32> {
        packed_matmul(x, &PackedWeights::pack(w, k, n), m)
    }

    #[test]
    fn every_dtype_matches_the_reference_on_odd_shapes() {
        // Decoding and prompt rows, strips past the last group of four, a padded last strip,
        // K over several chunks and panels, enough weights to run in parallel, more rows than
        // a row chunk, prompt rows over several depth steps into a padded last strip, prompt
        // tasks of three strips (a pair and one alone on AVX-512) over two depth steps.
        check_every_dtype(
            product,
            &[
                (1, 3, 16),
                (2, 5, 17),
                (8, 600, 70),
                (9, 33, 200),
                (1, 1100, 300),
                (3, 700, 1411),
                (130, 40, 33),
                (20, 600, 50),
                (40, 300, 300),
            ],
        );
    }

    #[test]
    fn unpacks_to_what_was_packed() {
        let w = values(7 * 37, 3);
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v + 1.0 / 1024.0)).collect();
        let packed = PackedWeights::pack(Weights::F16(&w16), 7, 37);
        assert_eq!(packed.dims(), [7, 37]);
        assert_eq!(packed.unpack(), TensorData::new(w16, [7, 37]));
    }

    #[test]
    fn a_row_does_not_depend_on_its_batch() {
        // One row alone (decoding), among 3, and among 20 (prompt): the same sums in the same
        // order, so the same bits; and the same as the blocked kernel's tiles. On an AVX-512
        // CPU the prompt runs pairs of strips on 16-lane registers and the others AVX2's.
        let (k, n) = (700, 150);
        let x: Vec<f32> = (0..20 * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 377.0).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 991.0).collect();
        let packed = PackedWeights::pack(Weights::F32(&w), k, n);
        let all = packed_matmul(&x, &packed, 20);
        assert_eq!(packed_matmul(&x[..k], &packed, 1), all[..n]);
        assert_eq!(packed_matmul(&x[..3 * k], &packed, 3), all[..3 * n]);
        // The blocked kernel runs its whole tiles as the x86 kernels here do and the columns
        // past them in plain Rust, which is what this one runs everywhere without them.
        let blocked = super::super::blocked_matmul(&x, Weights::F32(&w), 20, k, n);
        let x86 = super::super::isa::has(super::super::isa::Isa::Avx2);
        let cols = if x86 { n / TILE * TILE } else { n };
        let tiles = |v: &[f32]| v.chunks_exact(n).map(|row| row[..cols].to_vec()).collect::<Vec<_>>();
        assert_eq!(tiles(&blocked), tiles(&all));
    }
}
