//! Dot products of quantized weight rows with activations rounded to 8 bits: the decoding
//! (matrix-vector) path of [`super::quantized_matmul`].
//!
//! Decoding reads every weight once per token, so its speed is how fast weights come from
//! memory, and a kernel that widens each 4-bit weight to f32 before multiplying cannot keep up
//! with the memory. llama.cpp's answer, taken here: round the activations to Q8_0 blocks (8 bits
//! and a scale per 32 values) and sum the products of weight and activation levels in integers,
//! 32 at a time with AVX2's `maddubs`; the blocks' scales are applied once per block. Q8_0
//! (one or two activation rows), Q4_K and Q6_K rows take this path, and Q4_0 and Q8_0 rows
//! past the last whole group of 8 (groups go through the x8 kernel of `rows_x8.rs`, which
//! rounds activations with [`Q8Rows`] too); the rounding moves logits by about what
//! llama.cpp's does (tests).
//!
//! The activations' blocks of 32 line up with the weights' (sub-)blocks: Q4_K's sub-blocks are 32
//! values, Q6_K's scales cover 16 (half an activation block). llama.cpp rounds activations for
//! the k-quants per 256 values (Q8_K); per 32 is finer, so no less accurate.

use crate::quant::GgmlType;

/// Activations rounded to Q8_0: `q[m][k]` with one scale and one level sum per 32 values.
pub(super) struct Q8Rows {
    /// `[M, K]` levels.
    pub(super) q: Vec<i8>,
    /// `[M, K / 32]`: one per block.
    pub(super) scales: Vec<f32>,
    /// `Σ q` of each block: Q4_K's minimums and Q4_0's offset of 8 multiply it.
    pub(super) sums: Vec<i32>,
    pub(super) k: usize,
}

/// One activation row: levels, scales and sums per block of 32.
#[derive(Clone, Copy)]
pub(super) struct Q8Row<'a> {
    q: &'a [i8],
    scales: &'a [f32],
    sums: &'a [i32],
}

impl Q8Rows {
    /// ggml's `quantize_row_q8_0`: `d = max|x| / 127`, `q = round(x / d)`.
    ///
    /// # Shapes
    /// - `x`: `[M, K]` row-major, `K` a multiple of 32
    pub(super) fn new(x: &[f32], m: usize, k: usize) -> Self {
        assert!(k.is_multiple_of(32) && x.len() == m * k, "x is not [{m}, {k}] in blocks of 32");
        let mut q = vec![0i8; m * k];
        let mut scales = Vec::with_capacity(m * k / 32);
        let mut sums = Vec::with_capacity(m * k / 32);
        for (x, q) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)) {
            #[cfg(x86_simd)]
            if super::isa::avx2() {
                // SAFETY: the CPU has AVX2 (checked); both blocks hold 32 values.
                let (d, sum) = unsafe { x86::quantize_block(x, q) };
                scales.push(d);
                sums.push(sum);
                continue;
            }
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            q.iter_mut().zip(x).for_each(|(q, v)| *q = (v * id).round() as i8);
            scales.push(d);
            sums.push(q.iter().map(|&v| v as i32).sum());
        }
        Self { q, scales, sums, k }
    }

    pub(super) fn row(&self, m: usize) -> Q8Row<'_> {
        let (k, b) = (self.k, self.k / 32);
        Q8Row {
            q: &self.q[m * k..(m + 1) * k],
            scales: &self.scales[m * b..(m + 1) * b],
            sums: &self.sums[m * b..(m + 1) * b],
        }
    }
}

/// Whether rows of `ty` have an integer dot product (on every CPU: AVX2's where it runs, plain
/// Rust elsewhere).
pub(super) fn available(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q4K | GgmlType::Q6K)
}

/// `Σ_k w[k] · x[k]` of one weight row (`blocks`, of type `ty`) and one rounded activation row.
///
/// # Panics
/// If [`available`] is false for `ty`, or the lengths disagree.
pub(super) fn int_dot(ty: GgmlType, blocks: &[u8], x: Q8Row<'_>) -> f32 {
    let values = blocks.len() / ty.type_size() * ty.block_size();
    assert!(available(ty) && values == x.q.len(), "no integer dot for {ty} rows of {} values", x.q.len());
    #[cfg(x86_simd)]
    if super::isa::avx2() {
        // SAFETY: the CPU has AVX2, FMA and F16C, `available` checked the type and the lengths
        // agree.
        return unsafe {
            match ty {
                GgmlType::Q4_0 => x86::q4_0_q8_0::<false>(blocks, x),
                GgmlType::Q8_0 => x86::q4_0_q8_0::<true>(blocks, x),
                GgmlType::Q4K => x86::q4_k(blocks, x),
                _ => x86::q6_k(blocks, x),
            }
        };
    }
    match ty {
        GgmlType::Q4_0 => portable::q4_0(blocks, x),
        GgmlType::Q8_0 => portable::q8_0(blocks, x),
        GgmlType::Q4K => portable::q4_k(blocks, x),
        _ => portable::q6_k(blocks, x),
    }
}

/// The integer dot products in plain Rust, for CPUs without the x86 kernels (ARM among them):
/// each block's integer sum exact, its scales applied in f32, as the vector versions do (only
/// the order of the f32 additions differs). Fixed-size loops over a block's 16 or 32 levels,
/// which LLVM vectorises for the build's baseline (SSE2, NEON). Without them every quantized
/// product dequantized its weights to f32 first: a 1-layer 8x7B-shaped Q4_0 file decoded at 2.3
/// tok/s on the plain paths of a 2-core Zen 3, against 72.6 with AVX2 (BENCHMARKS.md).
mod portable {
    use half::f16;

    use super::Q8Row;
    use crate::quant::scale_min_k4;

    fn half_at(b: &[u8], at: usize) -> f32 {
        f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
    }

    /// Q4_0 blocks (`d: f16, qs: [u8; 16]`): value `j` is the low nibble of `qs[j]` minus 8,
    /// value `j + 16` the high one; the 8s come off once per block through `Σ q_x`.
    pub(super) fn q4_0(blocks: &[u8], x: Q8Row<'_>) -> f32 {
        let mut acc = 0.0f32;
        for (b, (block, q)) in blocks.chunks_exact(18).zip(x.q.chunks_exact(32)).enumerate() {
            let mut sum = 0i32;
            for (j, &w) in block[2..18].iter().enumerate() {
                sum += (w & 0x0F) as i32 * q[j] as i32 + (w >> 4) as i32 * q[j + 16] as i32;
            }
            acc += half_at(block, 0) * x.scales[b] * (sum - 8 * x.sums[b]) as f32;
        }
        acc
    }

    /// Q8_0 blocks (`d: f16, qs: [i8; 32]`).
    pub(super) fn q8_0(blocks: &[u8], x: Q8Row<'_>) -> f32 {
        let mut acc = 0.0f32;
        for (b, (block, q)) in blocks.chunks_exact(34).zip(x.q.chunks_exact(32)).enumerate() {
            let sum: i32 = block[2..34].iter().zip(q).map(|(&w, &q)| w as i8 as i32 * q as i32).sum();
            acc += half_at(block, 0) * x.scales[b] * sum as f32;
        }
        acc
    }

    /// Q4_K super-blocks (`d, dmin: f16, scales: [u8; 12], qs: [u8; 128]`): sub-block `j` of 32
    /// values is `d·sc_j·q - dmin·m_j`, so its dot with activation block `j` is
    /// `d_x·(d·sc_j·Σ q·q_x - dmin·m_j·Σ q_x)`. Each 32 bytes of `qs` hold two sub-blocks, the
    /// low nibbles first.
    pub(super) fn q4_k(blocks: &[u8], x: Q8Row<'_>) -> f32 {
        let mut acc = 0.0f32;
        for (s, block) in blocks.chunks_exact(144).enumerate() {
            let (d, dmin) = (half_at(block, 0), half_at(block, 2));
            let (scales, qs) = (&block[4..16], &block[16..144]);
            for (k, levels) in qs.chunks_exact(32).enumerate() {
                for half in 0..2 {
                    let (j, xb) = (2 * k + half, s * 8 + 2 * k + half);
                    let (sc, m) = scale_min_k4(j, scales);
                    let q = &x.q[32 * xb..32 * xb + 32];
                    let shift = 4 * half;
                    let sum: i32 = levels.iter().zip(q).map(|(&w, &q)| ((w >> shift) & 0x0F) as i32 * q as i32).sum();
                    acc += x.scales[xb] * (d * sc as f32 * sum as f32 - dmin * m as f32 * x.sums[xb] as f32);
                }
            }
        }
        acc
    }

    /// Q6_K super-blocks (`ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`): each half
    /// of 128 values holds four groups of 32 (an activation block each), whose levels are 4 low
    /// bits from `ql` and 2 high bits from `qh`, minus 32; each 16 values have a signed scale.
    pub(super) fn q6_k(blocks: &[u8], x: Q8Row<'_>) -> f32 {
        let mut acc = 0.0f32;
        for (s, block) in blocks.chunks_exact(210).enumerate() {
            let d = half_at(block, 208);
            for half in 0..2 {
                let ql = &block[64 * half..64 * half + 64];
                let qh = &block[128 + 32 * half..160 + 32 * half];
                let sc = &block[192 + 8 * half..200 + 8 * half];
                for g in 0..4 {
                    let xb = s * 8 + half * 4 + g;
                    let q = &x.q[32 * xb..32 * xb + 32];
                    // Groups 0 and 2 take the low and high nibbles of `ql[..32]`, 1 and 3 of
                    // `ql[32..]`; group `g`'s high bits are bits `2g..2g + 2` of `qh`.
                    let (low, shift) = (&ql[32 * (g % 2)..32 * (g % 2) + 32], 4 * (g / 2));
                    let mut sums = [0i32; 2];
                    for (l, ((&lo, &hi), &q)) in low.iter().zip(qh).zip(q).enumerate() {
                        let level = (((lo >> shift) & 0x0F) | (((hi >> (2 * g)) & 3) << 4)) as i32 - 32;
                        sums[l / 16] += level * q as i32;
                    }
                    let scaled = sc[2 * g] as i8 as f32 * sums[0] as f32 + sc[2 * g + 1] as i8 as f32 * sums[1] as f32;
                    acc += d * x.scales[xb] * scaled;
                }
            }
        }
        acc
    }
}

#[cfg(x86_simd)]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::weights::{hsum, prefetch_next};
    use super::Q8Row;
    use crate::quant::GgmlType;

    /// One block of 32 activations to Q8_0 levels, as the portable loop does (the same scale,
    /// `round` half away from zero), 8 values per instruction: `(scale, Σ levels)`. (Rounding
    /// was a `roundf` call per value, 2-4% of a Q8_0 prompt in the profile.)
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            assert!(x.len() == 32 && q.len() == 32);
            let p = x.as_ptr();
            let v = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(p.add(i)));
            let sign = _mm256_set1_ps(-0.0);
            let abs = |v: __m256| _mm256_andnot_ps(sign, v);
            let max = _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])));
            let max = _mm_max_ps(_mm256_castps256_ps128(max), _mm256_extractf128_ps(max, 1));
            let max = _mm_max_ps(max, _mm_movehl_ps(max, max));
            let amax = _mm_cvtss_f32(_mm_max_ss(max, _mm_shuffle_ps(max, max, 1)));
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
            // Half away from zero: add the largest float below 0.5 with the value's sign, then
            // truncate (0.5 itself would carry 0.49999997 up to 1).
            let half = _mm256_set1_ps(0.49999997);
            let level = |v: __m256| {
                let scaled = _mm256_mul_ps(v, id);
                let nudged = _mm256_add_ps(scaled, _mm256_or_ps(half, _mm256_and_ps(scaled, sign)));
                _mm256_cvttps_epi32(nudged)
            };
            let ints = v.map(level);
            let total = _mm256_add_epi32(_mm256_add_epi32(ints[0], ints[1]), _mm256_add_epi32(ints[2], ints[3]));
            let total = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
            let total = _mm_add_epi32(total, _mm_shuffle_epi32(total, 0b01_00_11_10));
            let total = _mm_add_epi32(total, _mm_shuffle_epi32(total, 0b10_11_00_01));
            // 32 -> 16 -> 8 bits; the packs interleave 128-bit halves, which the permute undoes.
            let words = [_mm256_packs_epi32(ints[0], ints[1]), _mm256_packs_epi32(ints[2], ints[3])];
            let bytes = _mm256_packs_epi16(words[0], words[1]);
            let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(q.as_mut_ptr().cast(), bytes);
            (d, _mm_cvtsi128_si32(total))
        }
    }

    /// The f16 at `p` in all 8 lanes, by the F16C instruction. (`half`'s conversion checks the
    /// CPU on every call, which showed in the profile at one call per 32 weights; and moving
    /// the 16 bits into a vector register with `_mm_cvtsi32_si128` compiled to an insert into
    /// whatever register was free, often an accumulator, which chained every block's scale to
    /// the previous block's sum. A broadcast load depends on nothing.)
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C; `p` points at 16 readable bytes (8 f16 values).
    #[inline(always)]
    unsafe fn f16x8_at(p: *const u8) -> __m256 {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe { _mm256_cvtph_ps(_mm_set1_epi16(p.cast::<i16>().read_unaligned())) }
    }

    /// The f16 at `p` as f32 (see [`f16x8_at`]).
    ///
    /// # Safety
    /// `p` points at 2 readable bytes (an f16 value).
    #[inline(always)]
    unsafe fn f16_at(p: *const u8) -> f32 {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(p.cast::<i16>().read_unaligned()))) }
    }

    /// `Σ_j w[j] · x[j]` over 32 signed byte pairs, in eight 32-bit lanes. `maddubs` multiplies
    /// unsigned by signed bytes, so the weights' signs move onto the activations first.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    unsafe fn dot32(w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
            _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
        }
    }

    /// Q4_0's 16 bytes of nibbles as 32 signed levels: low nibbles are values 0..16, high ones
    /// 16..32, both minus 8.
    ///
    /// # Safety
    /// The CPU has AVX2; `p` points at 16 readable bytes.
    #[inline(always)]
    unsafe fn q4_0_levels(p: *const u8) -> __m256i {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let packed = _mm_loadu_si128(p.cast());
            let mask = _mm_set1_epi8(0x0F);
            let (lo, hi) = (_mm_and_si128(packed, mask), _mm_and_si128(_mm_srli_epi16(packed, 4), mask));
            _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8))
        }
    }

    /// Q4_0 or Q8_0 blocks (`d: f16`, then the levels): `Σ_b d_w · d_x · Σ_j q_w · q_x`. Two
    /// blocks per step into two accumulators, so consecutive blocks' multiply-adds do not wait
    /// on each other.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `blocks` are whole blocks of Q4_0 (Q8_0 if `Q8`), as many
    /// values as `x` has.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_0_q8_0<const Q8: bool>(blocks: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let size = if Q8 { GgmlType::Q8_0 } else { GgmlType::Q4_0 }.type_size();
            let n = blocks.len() / size;
            let (p, q, dx) = (blocks.as_ptr(), x.q.as_ptr(), x.scales.as_ptr());
            let block = |b: usize| {
                let at = p.add(b * size);
                let w = if Q8 { _mm256_loadu_si256(at.add(2).cast()) } else { q4_0_levels(at.add(2)) };
                let sums = _mm256_cvtepi32_ps(dot32(w, _mm256_loadu_si256(q.add(32 * b).cast())));
                (_mm256_mul_ps(f16x8_at(at), _mm256_set1_ps(*dx.add(b))), sums)
            };
            let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut b = 0;
            while b + 2 <= n {
                prefetch_next(blocks, b * size, 2 * size);
                let (d0, s0) = block(b);
                let (d1, s1) = block(b + 1);
                acc0 = _mm256_fmadd_ps(d0, s0, acc0);
                acc1 = _mm256_fmadd_ps(d1, s1, acc1);
                b += 2;
            }
            if b < n {
                let (d0, s0) = block(b);
                acc0 = _mm256_fmadd_ps(d0, s0, acc0);
            }
            hsum(_mm256_add_ps(acc0, acc1))
        }
    }

    /// Q4_K super-blocks (`d, dmin: f16, scales: [u8; 12], qs: [u8; 128]`): sub-block `j` of 32
    /// values is `d·sc_j·q - dmin·m_j`, so its dot with an activation block is
    /// `d_x·(d·sc_j·Σ q·q_x - dmin·m_j·Σ q_x)`; the level sums `Σ q_x` were kept with the
    /// activations.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `blocks` are whole Q4_K super-blocks, as many values as `x`
    /// has.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_k(blocks: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let mask = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); 2];
            let mut mins = 0.0f32;
            for (i, b) in blocks.chunks_exact(144).enumerate() {
                prefetch_next(blocks, i * 144, 144);
                let (d, dmin) = (f16_at(b.as_ptr()), f16_at(b.as_ptr().add(2)));
                let scales = &b[4..16];
                for pair in 0..4 {
                    let packed = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * pair).cast());
                    let levels = [_mm256_and_si256(packed, mask), _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask)];
                    for (h, levels) in levels.into_iter().enumerate() {
                        let j = 2 * pair + h;
                        let xb = i * 8 + j;
                        let (sc, m) = crate::quant::scale_min_k4(j, scales);
                        // The levels are 0..16: `maddubs` takes them as they are.
                        let xq = _mm256_loadu_si256(x.q.as_ptr().add(32 * xb).cast());
                        let pairs = _mm256_maddubs_epi16(levels, xq);
                        let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
                        let dx = x.scales[xb];
                        acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(d * sc as f32 * dx), sums, acc[h]);
                        mins += dmin * m as f32 * dx * x.sums[xb] as f32;
                    }
                }
            }
            hsum(_mm256_add_ps(acc[0], acc[1])) - mins
        }
    }

    /// Q6_K super-blocks (`ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`): each half of
    /// 128 values holds four groups of 32 (an activation block each), whose levels are 4 low
    /// bits from `ql` and 2 high bits from `qh`, minus 32; each 16 values have a signed scale.
    /// `madd` with the two scales of a group weighs its halves' pair sums in one step.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `blocks` are whole Q6_K super-blocks, as many values as `x`
    /// has.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q6_k(blocks: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let (m4, m2, off) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3), _mm256_set1_epi8(32));
            let mut acc = [_mm256_setzero_ps(); 2];
            for (i, b) in blocks.chunks_exact(210).enumerate() {
                prefetch_next(blocks, i * 210, 210);
                let d = f16_at(b.as_ptr().add(208));
                for half in 0..2 {
                    let ql = b.as_ptr().add(64 * half);
                    let qh = _mm256_loadu_si256(b.as_ptr().add(128 + 32 * half).cast());
                    let sc = b.as_ptr().add(192 + 8 * half).cast::<i8>();
                    let (lo, hi) = (_mm256_loadu_si256(ql.cast()), _mm256_loadu_si256(ql.add(32).cast()));
                    let high = |shift: i32| {
                        let bits = match shift {
                            0 => qh,
                            2 => _mm256_srli_epi16(qh, 2),
                            4 => _mm256_srli_epi16(qh, 4),
                            _ => _mm256_srli_epi16(qh, 6),
                        };
                        _mm256_slli_epi16(_mm256_and_si256(bits, m2), 4)
                    };
                    let groups = [
                        _mm256_or_si256(_mm256_and_si256(lo, m4), high(0)),
                        _mm256_or_si256(_mm256_and_si256(hi, m4), high(2)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo, 4), m4), high(4)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(hi, 4), m4), high(6)),
                    ];
                    for (g, levels) in groups.into_iter().enumerate() {
                        let xb = i * 8 + half * 4 + g;
                        let w = _mm256_sub_epi8(levels, off);
                        let xq = _mm256_loadu_si256(x.q.as_ptr().add(32 * xb).cast());
                        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xq, w));
                        // Lanes 0..8 of `pairs` are values 0..16 of the group, lanes 8..16 values 16..32.
                        let (s0, s1) = (*sc.add(2 * g) as i16, *sc.add(2 * g + 1) as i16);
                        let scale = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                        let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, scale));
                        acc[g & 1] = _mm256_fmadd_ps(_mm256_set1_ps(d * x.scales[xb]), sums, acc[g & 1]);
                    }
                }
            }
            hsum(_mm256_add_ps(acc[0], acc[1]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector rounding of activations equals ggml's scalar `quantize_row_q8_0`: ordinary
    /// values, exact halves (which round away from zero), the largest float below a half, and
    /// an all-zero block.
    #[test]
    fn activations_round_as_ggml_does() {
        let mut x: Vec<f32> = (0..96).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 3.0).collect();
        // A block whose scale is exactly 1: its values are their own levels.
        let ties = [127.0, -127.0, 2.5, -2.5, 0.5, -0.5, 126.5, -1.5, 0.49999997, -0.49999997, 3.4999998];
        x[32..32 + ties.len()].copy_from_slice(&ties);
        x.extend([0.0; 32]);
        let rows = Q8Rows::new(&x, 1, x.len());
        for (b, x) in x.chunks_exact(32).enumerate() {
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let want: Vec<i8> = x.iter().map(|v| (v * id).round() as i8).collect();
            assert_eq!(&rows.q[32 * b..32 * (b + 1)], &want[..], "block {b}");
            assert_eq!(rows.scales[b], d, "block {b}");
            assert_eq!(rows.sums[b], want.iter().map(|&v| v as i32).sum::<i32>(), "block {b}");
        }
        assert_eq!(&rows.q[32..36], &[127, -127, 3, -3]);
    }

    /// The plain-Rust dot products, for every type with one: the product of the dequantized row
    /// with the rounded activations (the same sum in another order), and on a CPU with AVX2 the
    /// vector kernels' result too.
    #[test]
    fn portable_dots_equal_the_dequantized_products() {
        use crate::quant::{dequantize, quantize};
        let k = 512;
        let w: Vec<f32> = (0..k).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect();
        let x: Vec<f32> = (0..k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0 + (i % 5) as f32 * 0.01).collect();
        let rows = Q8Rows::new(&x, 1, k);
        let rounded: Vec<f32> = rows.q.iter().enumerate().map(|(i, &q)| q as f32 * rows.scales[i / 32]).collect();
        type Dot = fn(&[u8], Q8Row<'_>) -> f32;
        let dots: [(GgmlType, Dot); 4] = [
            (GgmlType::Q4_0, portable::q4_0),
            (GgmlType::Q8_0, portable::q8_0),
            (GgmlType::Q4K, portable::q4_k),
            (GgmlType::Q6K, portable::q6_k),
        ];
        for (ty, dot) in dots {
            let blocks = quantize(ty, &w).unwrap();
            let mut dense = vec![0.0; k];
            dequantize(ty, &blocks, &mut dense);
            let want: f64 = dense.iter().zip(&rounded).map(|(&a, &b)| a as f64 * b as f64).sum();
            let scale: f64 = dense.iter().zip(&rounded).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            let got = dot(&blocks, rows.row(0));
            assert!((got as f64 - want).abs() <= 1e-5 * scale, "{ty}: {got} vs {want}");
            #[cfg(x86_simd)]
            if super::super::isa::detected() >= super::super::isa::Isa::Avx2 {
                // SAFETY: the CPU has AVX2, FMA and F16C (checked); the lengths agree.
                let vector = unsafe {
                    match ty {
                        GgmlType::Q4_0 => x86::q4_0_q8_0::<false>(&blocks, rows.row(0)),
                        GgmlType::Q8_0 => x86::q4_0_q8_0::<true>(&blocks, rows.row(0)),
                        GgmlType::Q4K => x86::q4_k(&blocks, rows.row(0)),
                        _ => x86::q6_k(&blocks, rows.row(0)),
                    }
                };
                assert!((got - vector).abs() as f64 <= 1e-5 * scale, "{ty}: {got} vs AVX2's {vector}");
            }
        }
    }
}
