//! `out = x · wᵀ` with `w` a matrix of GGUF-quantized rows, read as the file stores them: decode
//! reads 4.5 bits per weight for Q4_0 and 8.5 for Q8_0 instead of 32.
//!
//! `w` is `[N, K]` in ggml's layout (row `n` holds output `n`'s `K` weights in blocks). Three
//! paths, by type and the number of activation rows `M`:
//! - **Q4_0, and Q8_0 prompts** (`M >= 3`): the activations are rounded to 8 bits and multiplied
//!   with groups of 8 weight rows in integers ([`super::rows_x8`]), llama.cpp's x8 scheme without
//!   its second copy of the weights. Groups are shared among rayon's threads.
//! - **Decoding other types** (`M <= INTEGER_ROWS`, types with an integer dot product): the
//!   activations are rounded to 8 bits and each weight row is dotted with them in integers
//!   ([`super::int_dot`]), bands of rows shared among rayon's threads. The work per weight is a
//!   few instructions, so the weights stream at the memory's speed.
//! - **Prompts of other types** (more rows): the register-blocked kernel of [`super::blocked`],
//!   fed panels of weights decoded to f32 (`16` rows by `256` inputs at a time, transposed into
//!   the kernel's tiles). Each weight is decoded once per call and used by all `M` rows, so the
//!   time is the kernel's arithmetic; the activations stay f32 and the product is exactly the
//!   one with the dequantized weights (the tests hold it to [`crate::quant::dequantize`] + a
//!   plain product).
//!
//! The integer paths round the activations as llama.cpp does, and move logits by about what
//! llama.cpp's own rounding does (tests). Types without a fast path go through the portable
//! dequantizer. CPUs without the x86 kernels (ARM) take the integer path at every `M` for the
//! four types that have one (the dot products in plain Rust), the f32 path for the others.

use std::ops::Range;

use rayon::prelude::*;

use super::blocked::{tiled, Panels};
use super::int_dot::{self, int_dot, Q8Rows};
#[cfg(x86_simd)]
use super::rows_x8::{self, rows_x8, GROUP};
#[cfg(x86_simd)]
use super::tiles::TILE;
use crate::quant::{dequantize, GgmlType, QuantRows};

/// Rows per task of the decoding path: enough work to amortise handing it out, small enough to
/// share among threads.
const BAND: usize = 16;

/// Up to this many rows of activations (decoding) take the integer path; longer inputs
/// (prompts) the f32 one, where the work is arithmetic, not reading.
pub const INTEGER_ROWS: usize = 8;

/// `out[m, n] = Σ_k x[m, k] · w[n, k]`.
///
/// # Shapes
/// - `x`: `[M, K]` row-major, `w`: `[N, K]` quantized rows -> `[M, N]` row-major
///
/// # Panics
/// If `x` is not `[M, w.cols]` or `w.data` is not `w.rows` rows of `w.cols` values of `w.ty`.
pub fn quantized_matmul(x: &[f32], w: QuantRows<'_>, m: usize) -> Vec<f32> {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    let row_bytes = w.ty.row_bytes(k).expect("rows are whole blocks");
    assert_eq!(w.data.len(), n * row_bytes, "w is not {n} rows of {k} {} values", w.ty);
    #[cfg(x86_simd)]
    if x8(w.ty, m) {
        return interleaved(x, w, m, row_bytes);
    }
    if integer_path(w.ty, m) {
        return integer(x, w, m, row_bytes);
    }
    tiled(x, &Rows { w, row_bytes }, m, k, n)
}

/// Whether `m` activation rows against `ty` take the integer dot products: while decoding, and
/// for prompts too where the x86 tiles do not run (there the f32 path decodes every weight row
/// in plain Rust for each product: a 1-layer 8x7B-shaped Q4_0 prefill ran at 5.1 tok/s that way
/// on a 2-core Zen 3).
fn integer_path(ty: GgmlType, m: usize) -> bool {
    int_dot::available(ty) && (m <= INTEGER_ROWS || !super::isa::has(super::isa::Isa::Avx2))
}

/// Whether `m` activation rows against `ty` take [`rows_x8`]: Q4_0 always; Q8_0 from 3 rows on
/// (its x8 kernel does twice Q4_0's work per product; `[14336, 4096]`, 2 threads: one or two
/// rows run 5-10% faster one weight row at a time, 3 rows 1.13x and 8 rows 1.6x faster in x8).
#[cfg(x86_simd)]
fn x8(ty: GgmlType, m: usize) -> bool {
    rows_x8::available(ty) && (ty == GgmlType::Q4_0 || m >= 3)
}

/// The decoding path: Q8 activations, integer dot products.
fn integer(x: &[f32], w: QuantRows<'_>, m: usize, row_bytes: usize) -> Vec<f32> {
    let (n, k) = (w.rows, w.cols);
    let q8 = Q8Rows::new(x, m, k);
    // Transposed output `[N, M]`: each task owns whole rows of it.
    let mut out_t = vec![0.0f32; n * m];
    let work = |(band, out): (usize, &mut [f32])| {
        for (i, out) in out.chunks_exact_mut(m).enumerate() {
            let r = band * BAND + i;
            let blocks = &w.data[r * row_bytes..(r + 1) * row_bytes];
            for (mm, o) in out.iter_mut().enumerate() {
                *o = int_dot(w.ty, blocks, q8.row(mm));
            }
        }
    };
    if n * k < 1 << 16 {
        out_t.chunks_mut(BAND * m).enumerate().for_each(work);
    } else {
        out_t.par_chunks_mut(BAND * m).enumerate().for_each(work);
    }
    if m == 1 {
        return out_t;
    }
    let mut out = vec![0.0f32; m * n];
    for (r, values) in out_t.chunks_exact(m).enumerate() {
        for (mm, v) in values.iter().enumerate() {
            out[mm * n + r] = *v;
        }
    }
    out
}

/// Q8 activations against groups of 8 weight rows ([`rows_x8`]); rows past the last whole
/// group through [`int_dot`].
#[cfg(x86_simd)]
fn interleaved(x: &[f32], w: QuantRows<'_>, m: usize, row_bytes: usize) -> Vec<f32> {
    let (n, k) = (w.rows, w.cols);
    let q8 = Q8Rows::new(x, m, k);
    let groups = n / GROUP;
    // `[groups, M, 8]`: each task owns whole groups.
    let mut grouped = vec![0.0f32; groups * m * GROUP];
    let group_bytes = GROUP * row_bytes;
    let work = |scratch: &mut Vec<u8>, (t, out): (usize, &mut [f32])| {
        for (i, out) in out.chunks_exact_mut(m * GROUP).enumerate() {
            let g = t * GROUPS_PER_TASK + i;
            rows_x8(w.ty, &w.data[g * group_bytes..(g + 1) * group_bytes], &q8, scratch, out);
        }
    };
    if n * k < 1 << 16 {
        let mut scratch = Vec::new();
        grouped.chunks_mut(GROUPS_PER_TASK * m * GROUP).enumerate().for_each(|item| work(&mut scratch, item));
    } else {
        grouped.par_chunks_mut(GROUPS_PER_TASK * m * GROUP).enumerate().for_each_init(Vec::new, work);
    }
    let mut out = if m == 1 {
        // `[groups, 1, 8]` is already `[1, N]` up to the rows past the last group.
        grouped.resize(n, 0.0);
        grouped
    } else {
        let mut out = vec![0.0f32; m * n];
        for (g, values) in grouped.chunks_exact(m * GROUP).enumerate() {
            for (c, values) in values.chunks_exact(GROUP).enumerate() {
                out[c * n + g * GROUP..c * n + (g + 1) * GROUP].copy_from_slice(values);
            }
        }
        out
    };
    for r in groups * GROUP..n {
        let blocks = &w.data[r * row_bytes..(r + 1) * row_bytes];
        for c in 0..m {
            out[c * n + r] = int_dot(w.ty, blocks, q8.row(c));
        }
    }
    out
}

/// Groups of 8 rows per task of [`interleaved`].
#[cfg(x86_simd)]
const GROUPS_PER_TASK: usize = 2;

/// Quantized rows as the blocked kernel's panels: `w`'s rows are the product's columns.
struct Rows<'a> {
    w: QuantRows<'a>,
    row_bytes: usize,
}

impl Rows<'_> {
    /// The blocks of inputs `inputs` of row `r` (whole blocks).
    fn blocks(&self, r: usize, inputs: Range<usize>) -> &[u8] {
        let (bs, ts) = (self.w.ty.block_size(), self.w.ty.type_size());
        &self.w.data[r * self.row_bytes + inputs.start / bs * ts..r * self.row_bytes + inputs.end / bs * ts]
    }
}

impl Panels for Rows<'_> {
    #[cfg(x86_simd)]
    unsafe fn pack(&self, cols: Range<usize>, k0: usize, depth: usize, packed: &mut [f32]) {
        let mut row = vec![0.0f32; depth];
        for (t, c) in cols.step_by(TILE).enumerate() {
            let tile = &mut packed[t * depth * TILE..(t + 1) * depth * TILE];
            for j in 0..TILE {
                decode_row(self.w.ty, self.blocks(c + j, k0..k0 + depth), &mut row);
                for (r, v) in row.iter().enumerate() {
                    tile[r * TILE + j] = *v;
                }
            }
        }
    }

    fn columns(&self, x: &[f32], m: usize, k: usize, cols: Range<usize>, band: &mut [f32], width: usize, first: usize) {
        let mut row = vec![0.0f32; k];
        for (j, r) in cols.enumerate() {
            decode_row(self.w.ty, self.blocks(r, 0..k), &mut row);
            for (out, x) in band.chunks_exact_mut(width).zip(x.chunks_exact(k)).take(m) {
                out[first + j] += dot(x, &row);
            }
        }
    }
}

/// One row's blocks to f32.
fn decode_row(ty: GgmlType, blocks: &[u8], out: &mut [f32]) {
    #[cfg(x86_simd)]
    if super::isa::avx2() && matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0) {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked above); lengths are the caller's.
        unsafe { x86::decode_row(ty, blocks, out) };
        return;
    }
    dequantize(ty, blocks, out);
}

/// `Σ a[i] · b[i]` in f32.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(x86_simd)]
    if super::isa::avx2() {
        // SAFETY: as above.
        return unsafe { x86::dot(a, b) };
    }
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

#[cfg(x86_simd)]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::weights::hsum;

    use crate::quant::GgmlType;

    /// Q4_0 / Q8_0 rows to f32, 32 values (one block) at a time; the same values as
    /// [`crate::quant::dequantize`] (each is `q * d` in f32 either way).
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `ty` is Q4_0 or Q8_0, `blocks` whole blocks of it and `out`
    /// has room for their values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn decode_row(ty: GgmlType, blocks: &[u8], out: &mut [f32]) {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let size = ty.type_size();
            assert_eq!(blocks.len() / size * 32, out.len());
            for (b, y) in blocks.chunks_exact(size).zip(out.chunks_exact_mut(32)) {
                let d = _mm256_set1_ps(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
                let q = b.as_ptr().add(2);
                // Four groups of 8 signed integers.
                let groups: [__m128i; 4] = match ty {
                    GgmlType::Q8_0 => {
                        let lo = _mm_loadu_si128(q.cast());
                        let hi = _mm_loadu_si128(q.add(16).cast());
                        [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)]
                    }
                    _ => {
                        // Q4_0: low nibbles are values 0..16, high nibbles 16..32; both minus 8.
                        let packed = _mm_loadu_si128(q.cast());
                        let mask = _mm_set1_epi8(0x0F);
                        let eight = _mm_set1_epi8(8);
                        let lo = _mm_sub_epi8(_mm_and_si128(packed, mask), eight);
                        let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(packed, 4), mask), eight);
                        [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)]
                    }
                };
                let p = y.as_mut_ptr();
                for (i, g) in groups.into_iter().enumerate() {
                    let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(g));
                    _mm256_storeu_ps(p.add(8 * i), _mm256_mul_ps(v, d));
                }
            }
        }
    }

    /// `Σ a[i] · b[i]` with four 8-wide accumulators.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let n = a.len().min(b.len());
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    *acc =
                        _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * j)), _mm256_loadu_ps(pb.add(i + 8 * j)), *acc);
                }
                i += 32;
            }
            let mut total = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
            while i < n {
                total += a[i] * b[i];
                i += 1;
            }
            total
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;

    /// Every type with a fast path and two without, rows that fill neither a band nor a tile, one
    /// and several activation rows on both paths: the product with the dequantized matrix.
    #[test]
    fn equals_the_product_with_the_dequantized_matrix() {
        let (n, k) = (37, 512);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect();
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K, GgmlType::F16, GgmlType::F32] {
            let data = quantize(ty, &w).unwrap();
            let mut dense = vec![0.0; n * k];
            dequantize(ty, &data, &mut dense);
            for m in [1, 3, INTEGER_ROWS + 1, 20] {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
                let got = quantized_matmul(&x, QuantRows { ty, data: &data, rows: n, cols: k }, m);
                #[cfg(x86_simd)]
                let x8 = x8(ty, m);
                #[cfg(not(x86_simd))]
                let x8 = false;
                let integer = integer_path(ty, m) || x8;
                for mm in 0..m {
                    for r in 0..n {
                        let want: f32 = (0..k).map(|i| x[mm * k + i] * dense[r * k + i]).sum();
                        let weights: f32 = (0..k).map(|i| dense[r * k + i].abs()).sum();
                        let g = got[mm * n + r];
                        // Q8 activations (|x| <= 1 here): each off by at most 1/254 of its block's
                        // largest, times its weight; f32 activations: rounding only.
                        let tolerance = if integer { weights / 254.0 + 1e-4 } else { 1e-4 * (1.0 + want.abs()) };
                        assert!((g - want).abs() <= tolerance, "{ty} m={m} [{mm}, {r}]: {g} vs {want}");
                    }
                }
            }
        }
    }
}
