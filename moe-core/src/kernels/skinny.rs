//! `out = x · w` for a few rows of activations and a large weight matrix: the matrix-vector work
//! of decoding, where the time goes into reading `w` once and the arithmetic is free.
//!
//! Why not `gemm` (which burn-flex calls): below 7M multiply-adds burn-flex runs `gemm` on one
//! thread, so a decode step used one of the machine's cores for every expert, attention and router
//! product; and its bf16 path converts the whole weight matrix to f32 on every call. Here `w`
//! (layout `[K, N]`: row `w[k]` is contiguous) is cut into blocks of whole rows where the
//! accumulators allow, so each of rayon's threads reads one long contiguous stretch of memory,
//! the access pattern the hardware prefetchers serve best; the partial sums of the blocks are
//! added at the end. f16/bf16 weights are widened to f32 in registers.

use rayon::prelude::*;

#[cfg(x86_simd)]
use super::isa::avx2;
use super::weights::{accumulate, Weights};

/// Below this many weights (`K * N`) the product runs on the calling thread: handing out the
/// work costs more than it saves.
const PARALLEL_WEIGHTS: usize = 1 << 16;
/// Accumulators of one task (`M x band` f32) stay within this many floats (128 KB, in L2), so a
/// task reads whole rows of `w` unless there are many activation rows and wide outputs.
const MAX_ACCUMULATORS: usize = 32 * 1024;

/// `out[m, n] = Σ_k x[m, k] · w[k, n]` with f32 accumulation.
///
/// # Shapes
/// - `x`: `[M, K]` row-major, `w`: `[K, N]` row-major -> `out`: `[M, N]` row-major
///
/// # Panics
/// If the slice lengths disagree with `m`, `k` and `n`.
pub fn skinny_matmul(x: &[f32], w: Weights<'_>, m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    assert_eq!(w.len(), k * n, "w is not [{k}, {n}]");
    if m == 0 || n == 0 {
        return vec![0.0; m * n];
    }
    if k * n < PARALLEL_WEIGHTS {
        return block(x, w, m, k, n, 0..n, 0..k);
    }
    // Column bands as wide as the accumulator budget allows (whole rows when it can), then
    // enough row blocks to give every thread two tasks.
    let width = n.min((MAX_ACCUMULATORS / m).max(64).next_multiple_of(8));
    let bands: Vec<_> = (0..n).step_by(width).map(|c0| c0..(c0 + width).min(n)).collect();
    let splits = (2 * rayon::current_num_threads()).div_ceil(bands.len()).min(k.div_ceil(16));
    let height = k.div_ceil(splits).next_multiple_of(4);
    let tasks: Vec<_> = bands
        .iter()
        .flat_map(|cols| (0..k).step_by(height).map(move |r0| (cols.clone(), r0..(r0 + height).min(k))))
        .collect();
    let partials: Vec<_> =
        tasks.into_par_iter().map(|(cols, rows)| (cols.start, block(x, w, m, k, n, cols, rows))).collect();
    let mut out = vec![0.0; m * n];
    for (c0, values) in partials {
        let width = values.len() / m;
        for (row, chunk) in out.chunks_exact_mut(n).zip(values.chunks_exact(width)) {
            row[c0..c0 + width].iter_mut().zip(chunk).for_each(|(o, v)| *o += v);
        }
    }
    out
}

/// Columns `cols` of the product summed over the rows `rows` of `w` only, `[M, cols.len()]`
/// row-major.
fn block(
    x: &[f32],
    w: Weights<'_>,
    m: usize,
    k: usize,
    n: usize,
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
) -> Vec<f32> {
    let mut acc = vec![0.0f32; m * cols.len()];
    #[cfg(x86_simd)]
    if avx2() {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { x86::block(x, w, k, n, cols, rows, &mut acc) };
        return acc;
    }
    accumulate(x, w, k, n, cols, rows, &mut acc);
    acc
}

/// AVX2 + FMA + F16C: four weight rows per pass over the accumulators, eight columns per
/// instruction.
#[cfg(x86_simd)]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::weights::{Load, Weights};

    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `x` is `[M, K]`, `w` `[K, N]` and `acc` `[M, cols.len()]`,
    /// with `cols` within `N` and `rows` within `K`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn block(
        x: &[f32],
        w: Weights<'_>,
        k: usize,
        n: usize,
        cols: std::ops::Range<usize>,
        rows: std::ops::Range<usize>,
        acc: &mut [f32],
    ) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            match w {
                Weights::F32(w) => block_typed(x, w, k, n, cols, rows, acc),
                Weights::F16(w) => block_typed(x, w, k, n, cols, rows, acc),
                Weights::Bf16(w) => block_typed(x, w, k, n, cols, rows, acc),
            }
        }
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C; as [`block`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_typed<W: Load>(
        x: &[f32],
        w: &[W],
        k: usize,
        n: usize,
        cols: std::ops::Range<usize>,
        rows: std::ops::Range<usize>,
        acc: &mut [f32],
    ) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let width = cols.len();
            let m = acc.len() / width.max(1);
            let vectorised = width - width % 8;
            let mut kk = rows.start;
            // Four rows of `w` at a time: one load and one store of each accumulator per four
            // multiply-adds.
            while kk + 4 <= rows.end {
                let base = w.as_ptr().add(kk * n + cols.start);
                let rows = [base, base.add(n), base.add(2 * n), base.add(3 * n)];
                for mm in 0..m {
                    let a = [x[mm * k + kk], x[mm * k + kk + 1], x[mm * k + kk + 2], x[mm * k + kk + 3]];
                    let av = [_mm256_set1_ps(a[0]), _mm256_set1_ps(a[1]), _mm256_set1_ps(a[2]), _mm256_set1_ps(a[3])];
                    let out = acc.as_mut_ptr().add(mm * width);
                    let mut j = 0;
                    while j < vectorised {
                        let mut s = _mm256_loadu_ps(out.add(j));
                        s = _mm256_fmadd_ps(av[0], W::load8(rows[0].add(j)), s);
                        s = _mm256_fmadd_ps(av[1], W::load8(rows[1].add(j)), s);
                        s = _mm256_fmadd_ps(av[2], W::load8(rows[2].add(j)), s);
                        s = _mm256_fmadd_ps(av[3], W::load8(rows[3].add(j)), s);
                        _mm256_storeu_ps(out.add(j), s);
                        j += 8;
                    }
                    for j in vectorised..width {
                        *out.add(j) += (0..4).map(|r| a[r] * (*rows[r].add(j)).to_f32()).sum::<f32>();
                    }
                }
                kk += 4;
            }
            while kk < rows.end {
                let row = w.as_ptr().add(kk * n + cols.start);
                for mm in 0..m {
                    let a = x[mm * k + kk];
                    let av = _mm256_set1_ps(a);
                    let out = acc.as_mut_ptr().add(mm * width);
                    let mut j = 0;
                    while j < vectorised {
                        _mm256_storeu_ps(
                            out.add(j),
                            _mm256_fmadd_ps(av, W::load8(row.add(j)), _mm256_loadu_ps(out.add(j))),
                        );
                        j += 8;
                    }
                    for j in vectorised..width {
                        *out.add(j) += a * (*row.add(j)).to_f32();
                    }
                }
                kk += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check_every_dtype, reference, values};
    use super::*;

    #[test]
    fn every_dtype_matches_the_reference_on_odd_shapes() {
        // n = 1 and a ragged tail; k not a multiple of 4; a large n split into bands and threads;
        // many rows with wide outputs (several column bands).
        check_every_dtype(
            skinny_matmul,
            &[
                (1, 1, 1),
                (1, 7, 13),
                (3, 9, 21),
                (2, 64, 1037),
                (1, 130, 2600),
                (5, 33, 4099),
                (8, 40, 9000),
                (1, 300, 300),
            ],
        );
    }

    #[test]
    fn the_portable_loop_agrees_with_the_reference() {
        let (m, k, n) = (2, 11, 37);
        let x = values(m * k, 3);
        let w = values(k * n, 4);
        let mut portable = vec![0.0; m * n];
        accumulate(&x, Weights::F32(&w), k, n, 0..n, 0..k, &mut portable);
        let want = reference(&x, &w, m, k, n);
        for (g, r) in portable.iter().zip(&want) {
            assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()));
        }
    }

    #[test]
    fn empty_shapes_give_zeros() {
        assert_eq!(skinny_matmul(&[], Weights::F32(&[]), 0, 3, 0), Vec::<f32>::new());
        assert_eq!(skinny_matmul(&[], Weights::F32(&[]), 2, 0, 3), vec![0.0; 6]);
    }
}
