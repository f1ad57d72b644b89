//! Q4_0 and Q8_0 weights times Q8 activations, eight weight rows at a time: the integer
//! kernel for prompts, and for decoding Q4_0. Compiled for x86 only (`cfg(x86_simd)`): it is
//! AVX2 through and through, and other CPUs take the quantized products' portable path.
//!
//! [`super::int_dot`] dots one weight row with one activation row: every block of 32 products
//! ends in its own widening, conversion and scaling, about 13 instructions per 32
//! multiply-adds. llama.cpp's fast x86 path (its `Q4_0x8` repacking) lays out 8 rows' blocks
//! side by side, so that one `maddubs` multiplies 4 values of each of the 8 rows by the same 4
//! activations, and one conversion and scaling per block serves 8 rows. This kernel does the
//! same, but interleaves the rows as it goes (a 4×4 transpose of 32-bit words per half
//! register), instead of keeping a second, repacked copy of the weights: the file's pages stay
//! the only copy (a 26 GB model must fit in 24 GiB). For prompts the group's blocks are
//! interleaved once into a scratch buffer and shared by every activation row; for one or two
//! rows (decoding) they are interleaved in registers and used at once.
//!
//! Levels: Q4_0 stores `u - 8` with `u` a nibble; `maddubs` takes `u` as it is (unsigned) against
//! the signed activation levels, and `8 · Σ q_x` (kept with the activations) is subtracted once
//! per block; 16-bit sums cannot overflow (8 steps of 2 products of at most `15 · 127`). Q8_0
//! levels are signed: `maddubs` gets `|w|` and the activations with `w`'s signs, and each step's
//! pairs widen to 32 bits at once (two products of `127 · 127` fill 16 bits).
//!
//! Measured (`[14336, 4096]` Q4_0, 2 threads, 2026-11-24, Zen 3): 21-23 GB/s of blocks for one row
//! (`int_dot`: 18-19), 261 GFLOP/s for 32 rows (f32 panels of dequantized weights: 84).

use super::int_dot::Q8Rows;
use crate::quant::GgmlType;

/// Weight rows interleaved per group.
pub(super) const GROUP: usize = 8;

/// Activation rows that share one pass over a group's interleaved blocks (4 row accumulators in
/// 16 or 32 bits and in f32, the weights and a temporary fit AVX2's 16 registers).
const TILE_ROWS: usize = 4;

/// Up to this many activation rows (decoding), Q4_0 rows are interleaved in registers and used
/// at once, without the scratch buffer's store and load.
const DIRECT_ROWS: usize = 2;

/// Whether this CPU runs the kernel for `ty`.
pub(super) fn available(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0) && super::isa::has(super::isa::Isa::Avx2)
}

/// `out[c * 8 + j] = Σ_k x[c, k] · w[j, k]` for the 8 rows of `w` and every activation row.
///
/// # Shapes
/// - `w`: 8 consecutive rows of `K` values in `ty`'s blocks; `x`: `[M, K]`; `out`: `[M, 8]`
///
/// # Panics
/// If [`available`] is false for `ty`, or the lengths disagree.
pub(super) fn rows_x8(ty: GgmlType, w: &[u8], x: &Q8Rows, scratch: &mut Vec<u8>, out: &mut [f32]) {
    let k = x.k;
    let blocks = k / 32;
    let m = x.q.len() / k;
    assert!(available(ty), "no x8 kernel for {ty} on this CPU");
    assert_eq!(w.len(), GROUP * blocks * ty.type_size(), "w is not 8 {ty} rows of {k} values");
    assert_eq!(out.len(), m * GROUP, "out is not [{m}, 8]");
    // SAFETY: the CPU has AVX2, FMA and F16C (asserted); the lengths were checked above.
    unsafe {
        let q8 = ty == GgmlType::Q8_0;
        if !q8 && m <= DIRECT_ROWS {
            match m {
                1 => x86::direct::<1>(w, x, out),
                _ => x86::direct::<2>(w, x, out),
            }
            return;
        }
        scratch.resize(blocks * if q8 { x86::STRIDE_Q8 } else { x86::STRIDE_Q4 }, 0);
        if q8 {
            x86::interleave_q8(w, blocks, scratch);
        } else {
            x86::interleave_q4(w, blocks, scratch);
        }
        let mut c = 0;
        while c < m {
            let out = &mut out[c * GROUP..];
            match ((m - c).min(TILE_ROWS), q8) {
                (4, false) => x86::tile::<4, false>(scratch, x, c, out),
                (3, false) => x86::tile::<3, false>(scratch, x, c, out),
                (2, false) => x86::tile::<2, false>(scratch, x, c, out),
                (_, false) => x86::tile::<1, false>(scratch, x, c, out),
                (4, true) => x86::tile::<4, true>(scratch, x, c, out),
                (3, true) => x86::tile::<3, true>(scratch, x, c, out),
                (2, true) => x86::tile::<2, true>(scratch, x, c, out),
                (_, true) => x86::tile::<1, true>(scratch, x, c, out),
            }
            c += TILE_ROWS;
        }
    }
}

mod x86 {
    use std::arch::x86_64::*;

    use super::super::weights::prefetch_next;
    use super::{Q8Rows, GROUP};

    /// Bytes of one interleaved Q4_0 block: 8 vectors of 32 levels, then 8 f32 scales.
    pub(super) const STRIDE_Q4: usize = 256 + 32;
    /// Bytes of one interleaved Q8_0 block: 8 vectors of `|w|`, 8 of `w`, then 8 f32 scales.
    pub(super) const STRIDE_Q8: usize = 512 + 32;

    /// Four 16-byte pieces of each of the 8 rows, `piece(j)` at row `j`, as 4 vectors: vector `s`
    /// holds bytes `4s..4s + 4` of rows 0..8 in that order (rows 0-3 in the low half, 4-7 in the
    /// high), so lane `j` of a 32-bit sum belongs to row `j`.
    ///
    /// # Safety
    /// The CPU has AVX2; `piece(j)` points at 16 readable bytes for each `j` in `0..8`.
    #[inline(always)]
    unsafe fn transpose(piece: impl Fn(usize) -> *const u8) -> [__m256i; 4] {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let pair = |j: usize| _mm256_loadu2_m128i(piece(j + 4).cast(), piece(j).cast());
            let (a0, a1, a2, a3) = (pair(0), pair(1), pair(2), pair(3));
            let (t0, t1) = (_mm256_unpacklo_epi32(a0, a1), _mm256_unpackhi_epi32(a0, a1));
            let (t2, t3) = (_mm256_unpacklo_epi32(a2, a3), _mm256_unpackhi_epi32(a2, a3));
            [
                _mm256_unpacklo_epi64(t0, t2),
                _mm256_unpackhi_epi64(t0, t2),
                _mm256_unpacklo_epi64(t1, t3),
                _mm256_unpackhi_epi64(t1, t3),
            ]
        }
    }

    /// The f16 scales at `scale(j)` of the 8 rows, as f32.
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C; `scale(j)` points at 2 readable bytes for each `j` in `0..8`.
    #[inline(always)]
    unsafe fn scales(scale: impl Fn(usize) -> *const u8) -> __m256 {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            // Assembled in general-purpose registers and moved over in two 64-bit halves: the
            // integer units are idle here, and eight 16-bit inserts would queue on the vector
            // shuffle units with the transposes.
            let d = |j: usize| scale(j).cast::<u16>().read_unaligned() as i64;
            let lo = d(0) | d(1) << 16 | d(2) << 32 | d(3) << 48;
            let hi = d(4) | d(5) << 16 | d(6) << 32 | d(7) << 48;
            _mm256_cvtph_ps(_mm_set_epi64x(hi, lo))
        }
    }

    /// Block `b` of the 8 Q4_0 rows as 8 vectors of levels (vector `s`: values `4s..4s + 4` of
    /// each row; low nibbles are values 0..16, high nibbles 16..32) and the rows' scales.
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C; `p` points at 8 rows of `row_bytes` bytes of Q4_0 blocks, each
    /// with a block `b`.
    #[inline(always)]
    unsafe fn q4_block(p: *const u8, row_bytes: usize, b: usize) -> ([__m256i; 8], __m256) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let mask = _mm256_set1_epi8(0x0F);
            let at = |j: usize| p.add(j * row_bytes + b * 18);
            let words = transpose(|j| at(j).add(2));
            let lo = |v: __m256i| _mm256_and_si256(v, mask);
            let hi = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
            let levels = [
                lo(words[0]),
                lo(words[1]),
                lo(words[2]),
                lo(words[3]),
                hi(words[0]),
                hi(words[1]),
                hi(words[2]),
                hi(words[3]),
            ];
            (levels, scales(at))
        }
    }

    /// The group's Q4_0 blocks into `scratch`, [`STRIDE_Q4`] bytes per block.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `w` is 8 rows of `blocks` Q4_0 blocks and `scratch` holds
    /// `blocks * STRIDE_Q4` bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn interleave_q4(w: &[u8], blocks: usize, scratch: &mut [u8]) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            for b in 0..blocks {
                prefetch_next(w, b * GROUP * 18, GROUP * 18);
                let (levels, d) = q4_block(w.as_ptr(), blocks * 18, b);
                let dst = scratch.as_mut_ptr().add(b * STRIDE_Q4);
                for (s, v) in levels.into_iter().enumerate() {
                    _mm256_storeu_si256(dst.add(32 * s).cast(), v);
                }
                _mm256_storeu_ps(dst.add(256).cast(), d);
            }
        }
    }

    /// The group's Q8_0 blocks into `scratch`, [`STRIDE_Q8`] bytes per block: vector `t` holds
    /// values `4t..4t + 4` of each row, as `|w|` and as `w`.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `w` is 8 rows of `blocks` Q8_0 blocks and `scratch` holds
    /// `blocks * STRIDE_Q8` bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn interleave_q8(w: &[u8], blocks: usize, scratch: &mut [u8]) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let row_bytes = blocks * 34;
            let at = |j: usize, b: usize| w.as_ptr().add(j * row_bytes + b * 34);
            for b in 0..blocks {
                prefetch_next(w, b * GROUP * 34, GROUP * 34);
                let dst = scratch.as_mut_ptr().add(b * STRIDE_Q8);
                for half in 0..2 {
                    for (s, v) in transpose(|j| at(j, b).add(2 + 16 * half)).into_iter().enumerate() {
                        let t = 4 * half + s;
                        _mm256_storeu_si256(dst.add(32 * t).cast(), _mm256_abs_epi8(v));
                        _mm256_storeu_si256(dst.add(256 + 32 * t).cast(), v);
                    }
                }
                _mm256_storeu_ps(dst.add(512).cast(), scales(|j| at(j, b)));
            }
        }
    }

    /// Every activation row (`R` of them) against the group of Q4_0 rows, interleaving in
    /// registers.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `w` is 8 Q4_0 rows of `x.k` values, `x` has at least `R`
    /// rows and `out` room for `[R, 8]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn direct<const R: usize>(w: &[u8], x: &Q8Rows, out: &mut [f32]) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let k = x.k;
            let blocks = k / 32;
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_ps(); R];
            let q: [*const u8; R] = std::array::from_fn(|r| x.q.as_ptr().add(r * k).cast());
            for b in 0..blocks {
                prefetch_next(w, b * GROUP * 18, GROUP * 18);
                let (levels, dw) = q4_block(w.as_ptr(), blocks * 18, b);
                let mut sums = [_mm256_setzero_si256(); R];
                for (s, w) in levels.into_iter().enumerate() {
                    for r in 0..R {
                        let xs = _mm256_set1_epi32(q[r].add(32 * b + 4 * s).cast::<i32>().read_unaligned());
                        sums[r] = _mm256_add_epi16(sums[r], _mm256_maddubs_epi16(w, xs));
                    }
                }
                for r in 0..R {
                    let xb = r * blocks + b;
                    let dot = _mm256_madd_epi16(sums[r], ones);
                    let dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(8 * *x.sums.get_unchecked(xb)));
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*x.scales.get_unchecked(xb)));
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[r]);
                }
            }
            for (r, acc) in acc.into_iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(r * GROUP), acc);
            }
        }
    }

    /// Activation rows `c0..c0 + R` against the interleaved group (Q8_0 if `Q8`, else Q4_0):
    /// `out[r * 8 + j]`.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `scratch` holds the group as `interleave_q8` (`Q8`) or
    /// `interleave_q4` left it, `x` has rows `c0..c0 + R` and `out` room for `[R, 8]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile<const R: usize, const Q8: bool>(scratch: &[u8], x: &Q8Rows, c0: usize, out: &mut [f32]) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let k = x.k;
            let blocks = k / 32;
            let stride = if Q8 { STRIDE_Q8 } else { STRIDE_Q4 };
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_ps(); R];
            let q: [*const u8; R] = std::array::from_fn(|r| x.q.as_ptr().add((c0 + r) * k).cast());
            let sp = scratch.as_ptr();
            for b in 0..blocks {
                let levels = sp.add(b * stride);
                let mut sums = [_mm256_setzero_si256(); R];
                for s in 0..8 {
                    let w = _mm256_loadu_si256(levels.add(32 * s).cast());
                    let signs = if Q8 { _mm256_loadu_si256(levels.add(256 + 32 * s).cast()) } else { w };
                    for r in 0..R {
                        let xs = _mm256_set1_epi32(q[r].add(32 * b + 4 * s).cast::<i32>().read_unaligned());
                        if Q8 {
                            let pairs = _mm256_maddubs_epi16(w, _mm256_sign_epi8(xs, signs));
                            sums[r] = _mm256_add_epi32(sums[r], _mm256_madd_epi16(pairs, ones));
                        } else {
                            sums[r] = _mm256_add_epi16(sums[r], _mm256_maddubs_epi16(w, xs));
                        }
                    }
                }
                let dw = _mm256_loadu_ps(levels.add(stride - 32).cast());
                for r in 0..R {
                    let xb = (c0 + r) * blocks + b;
                    let dot = if Q8 {
                        sums[r]
                    } else {
                        let dot = _mm256_madd_epi16(sums[r], ones);
                        _mm256_sub_epi32(dot, _mm256_set1_epi32(8 * *x.sums.get_unchecked(xb)))
                    };
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*x.scales.get_unchecked(xb)));
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[r]);
                }
            }
            for (r, acc) in acc.into_iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(r * GROUP), acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::int_dot::int_dot;
    use crate::quant::quantize;

    /// Each of the 8 rows against each activation row, Q4_0 in registers (1-2 rows) and both
    /// types through the scratch buffer (whole and partial tiles): the same sums as one row
    /// dotted with one activation row, up to the order of the f32 additions.
    #[test]
    fn equals_one_row_at_a_time() {
        use crate::kernels::isa::Isa;
        use crate::kernels::test_support::simd_kernel_runs;
        if simd_kernel_runs(Isa::Avx2) {
            for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
                assert!(available(ty), "{ty}");
                for_type(ty);
            }
        }
    }

    /// Without the x86 kernel nothing is routed to it: prompts of Q4_0 and Q8_0 take the
    /// portable path of `quantized_matmul`.
    #[test]
    fn is_offered_only_where_it_runs() {
        let x86 = crate::kernels::isa::has(crate::kernels::isa::Isa::Avx2);
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
            assert_eq!(available(ty), x86, "{ty}");
        }
        assert!(!available(GgmlType::Q4K), "no x8 kernel for Q4_K");
    }

    fn for_type(ty: GgmlType) {
        let k = 256;
        let w: Vec<f32> = (0..GROUP * k).map(|i| ((i * 7919 % 1001) as f32 / 500.0 - 1.0) * 0.3).collect();
        let blocks = quantize(ty, &w).unwrap();
        let row_bytes = blocks.len() / GROUP;
        let mut scratch = Vec::new();
        for m in [1, 2, 3, 4, 5, 9] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0 + (i % 5) as f32 * 0.01).collect();
            let q8 = Q8Rows::new(&x, m, k);
            let mut out = vec![f32::NAN; m * GROUP];
            rows_x8(ty, &blocks, &q8, &mut scratch, &mut out);
            for c in 0..m {
                for j in 0..GROUP {
                    let want = int_dot(ty, &blocks[j * row_bytes..(j + 1) * row_bytes], q8.row(c));
                    let got = out[c * GROUP + j];
                    assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "{ty} m={m} [{c}, {j}]: {got} vs {want}");
                }
            }
        }
    }
}
