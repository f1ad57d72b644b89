//! SwiGLU's activation `silu(gate) * up` on the output of a fused gate/up product, in one pass.
//!
//! Why not Burn's ops: the gate and the up halves of a `[M, 2F]` product are strided views, and
//! burn-flex runs element-wise ops on strided views through a generic per-element index iterator
//! (`StridedIter`, 6% of a `moe-layer --tokens 2048` profile on the same views in the
//! all-experts reference, which keeps Burn's ops). Here each row is read once, contiguously, on
//! every core, with no intermediate `silu` tensor.
//!
//! Why a hand-written `exp`: the scalar loop (libm's `expf` and a scalar division per element)
//! was 17% of the sparse layer's forward at `T = 2048` (`perf`, 2026-11-24, Zen 3: 13.2% in the loop,
//! 3.4% in `expf`), about as much as all of the layer's work besides the expert products. The
//! SIMD crates already in the build (`pulp` under `gemm`, `macerator` under burn-flex) have no
//! `exp`; [`x86::exp8`] is Cephes' `expf` on eight lanes (within 2 ulp of libm's).

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Rows per rayon task: enough work (~16K elements at the usual widths) to pay for a task.
const ROWS_PER_TASK: usize = 8;
/// Elements widened to f32 at a time (two stack buffers that stay in L1).
const CHUNK: usize = 256;

/// `out[m, j] = silu(h[m, j]) * h[m, F + j]`, computed in f32 and stored as `E`; `to_f32` and
/// `from_f32` convert slices of equal length (`half`'s slice conversions use F16C).
///
/// # Shapes
/// - `h`: `[M, 2F]` row-major -> `[M, F]` row-major
///
/// # Panics
/// If `h` is not a whole number of `2F`-wide rows.
pub fn swiglu<E: Copy + Send + Sync + Default>(
    h: &[E],
    f: usize,
    to_f32: impl Fn(&[E], &mut [f32]) + Sync,
    from_f32: impl Fn(&[f32], &mut [E]) + Sync,
) -> Vec<E> {
    assert!(f > 0 && h.len().is_multiple_of(2 * f), "h is not [M, 2 * {f}]");
    // Not zero-filled first: on the calling thread that fill was 0.9% of the MoE layer's
    // forward at `T = 2048` (`perf`, 2026-11-25, Zen 3), every element of it overwritten below.
    let mut out = Vec::<E>::with_capacity(h.len() / 2);
    let row = |(h, out): (&[E], &mut [MaybeUninit<E>])| {
        let (gate, up) = h.split_at(f);
        let (mut g, mut u, mut e) = ([0.0f32; CHUNK], [0.0f32; CHUNK], [E::default(); CHUNK]);
        for ((gate, up), out) in gate.chunks(CHUNK).zip(up.chunks(CHUNK)).zip(out.chunks_mut(CHUNK)) {
            let len = gate.len();
            to_f32(gate, &mut g[..len]);
            to_f32(up, &mut u[..len]);
            silu_mul(&mut g[..len], &u[..len]);
            from_f32(&g[..len], &mut e[..len]);
            out.iter_mut().zip(&e).for_each(|(out, &v)| {
                out.write(v);
            });
        }
    };
    let spare = &mut out.spare_capacity_mut()[..h.len() / 2];
    if h.len() < 2 * f * ROWS_PER_TASK {
        h.chunks_exact(2 * f).zip(spare.chunks_exact_mut(f)).for_each(row);
    } else {
        h.par_chunks(2 * f * ROWS_PER_TASK).zip(spare.par_chunks_mut(f * ROWS_PER_TASK)).for_each(|(h, out)| {
            h.chunks_exact(2 * f).zip(out.chunks_exact_mut(f)).for_each(row);
        });
    }
    // SAFETY: the rows above wrote every one of the `h.len() / 2` elements.
    unsafe { out.set_len(h.len() / 2) };
    out
}

/// `g[j] = silu(g[j]) * u[j]`.
///
/// # Shapes
/// - `g`, `u`: `[L]`
fn silu_mul(g: &mut [f32], u: &[f32]) {
    // The elements the vector loop covered; the rest (all of them without it) run below.
    #[cfg(x86_simd)]
    let done = match super::isa::avx2() {
        // SAFETY: the CPU has the features the function is compiled for.
        true => unsafe { x86::silu_mul(g, u) },
        false => 0,
    };
    #[cfg(not(x86_simd))]
    let done = 0;
    for (g, &u) in g[done..].iter_mut().zip(&u[done..]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

#[cfg(x86_simd)]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::silu_mul`] on the whole 8-lane groups; returns how many elements that covered.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(g: &mut [f32], u: &[f32]) -> usize {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let whole = g.len().min(u.len()) / 8 * 8;
            let one = _mm256_set1_ps(1.0);
            for j in (0..whole).step_by(8) {
                let x = _mm256_loadu_ps(g.as_ptr().add(j));
                // An exact division, as the scalar `g / (1 + e^-g)` (no approximate reciprocal).
                let silu = _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
                _mm256_storeu_ps(g.as_mut_ptr().add(j), _mm256_mul_ps(silu, _mm256_loadu_ps(u.as_ptr().add(j))));
            }
            whole
        }
    }

    /// `e^x` on eight lanes: Cephes' `expf`. `x = n ln 2 + r` with `|r| <= ln 2 / 2` (`ln 2`
    /// split in two so `n ln 2` is exact), a degree-7 polynomial for `e^r`, and `2^n` built in
    /// the exponent bits. Inputs are clamped to `[-87.3, 88.3]`, where `2^n` stays a normal
    /// float: below, the result is about 1e-38 instead of 0, above, 2e38 instead of infinity;
    /// in `silu` both give the same values to f32 precision. A NaN stays NaN.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp8(x: __m256) -> __m256 {
        // `min`/`max` return their second operand when either is NaN: x goes second.
        let x = _mm256_max_ps(_mm256_set1_ps(-87.3), _mm256_min_ps(_mm256_set1_ps(88.3), x));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let e_r = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_mul_ps(e_r, two_n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(from: &[f32], to: &mut [f32]) {
        to.copy_from_slice(from);
    }

    fn check(h: &[f32], got: &[f32], f: usize) {
        for (r, (h, got)) in h.chunks_exact(2 * f).zip(got.chunks_exact(f)).enumerate() {
            for j in 0..f {
                let (g, u) = (h[j] as f64, h[f + j] as f64);
                let want = g / (1.0 + (-g).exp()) * u;
                let got = got[j] as f64;
                assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "row {r} col {j}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn matches_the_definition_on_every_row() {
        // Widths with and without a tail past the 8-lane groups, over a chunk boundary.
        for f in [5, 37, CHUNK + 3] {
            for m in [1, 3, ROWS_PER_TASK * 3 + 1] {
                let h: Vec<f32> = (0..m * 2 * f).map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0).collect();
                check(&h, &swiglu(&h, f, copy, copy), f);
            }
        }
    }

    #[test]
    fn extreme_gates_saturate_and_nan_propagates() {
        let f = 16;
        let gates =
            [-1e30, -200.0, -88.5, -87.0, -20.0, -1e-3, 0.0, 1e-30, 0.5, 20.0, 87.0, 88.5, 200.0, 1e30, -0.0, 3.0];
        let h: Vec<f32> = gates.iter().copied().chain((0..f).map(|i| 0.25 + i as f32)).collect();
        let got = swiglu(&h, f, copy, copy);
        check(&h, &got, f);
        let mut nan = h.clone();
        nan[2] = f32::NAN;
        assert!(swiglu(&nan, f, copy, copy)[2].is_nan());
    }

    #[cfg(x86_simd)]
    #[test]
    fn the_vector_exp_is_within_two_ulp_of_libm() {
        if !super::super::test_support::simd_kernel_runs(super::super::isa::Isa::Avx2) {
            return;
        }
        use std::arch::x86_64::*;
        let mut worst = 0u32;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3 + 0.000_37;
            let mut out = [0.0f32; 8];
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), x86::exp8(_mm256_set1_ps(x))) };
            worst = worst.max(out[0].to_bits().abs_diff(x.exp().to_bits()));
        }
        assert!(worst <= 2, "{worst} ulp");
    }
}
