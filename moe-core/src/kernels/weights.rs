//! The weight matrices the kernels read, in their storage dtype.

use half::{bf16, f16};

/// A row-major `[K, N]` weight matrix in its storage dtype.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half precision, widened to f32 as it is read.
    F16(&'a [f16]),
    /// bfloat16, widened to f32 as it is read.
    Bf16(&'a [bf16]),
}

impl Weights<'_> {
    /// Elements (`K * N`).
    pub(super) fn len(&self) -> usize {
        match self {
            Self::F32(w) => w.len(),
            Self::F16(w) => w.len(),
            Self::Bf16(w) => w.len(),
        }
    }
}

/// `acc[m, j] += Σ_{k in rows} x[m, k] · w[k, cols.start + j]` in plain Rust: what CPUs without
/// the x86 kernels' features run (LLVM vectorises the inner loop for f32), and the reference the
/// tests hold the kernels to.
///
/// # Shapes
/// - `x`: `[M, K]`, `w`: `[K, N]`, `acc`: `[M, cols.len()]`, all row-major
pub(super) fn accumulate(
    x: &[f32],
    w: Weights<'_>,
    k: usize,
    n: usize,
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
    acc: &mut [f32],
) {
    let width = cols.len();
    for kk in rows {
        let row = kk * n + cols.start..kk * n + cols.end;
        for (mm, out) in acc.chunks_exact_mut(width).enumerate() {
            let a = x[mm * k + kk];
            match w {
                Weights::F32(w) => out.iter_mut().zip(&w[row.clone()]).for_each(|(o, &v)| *o += a * v),
                Weights::F16(w) => out.iter_mut().zip(&w[row.clone()]).for_each(|(o, v)| *o += a * v.to_f32()),
                Weights::Bf16(w) => out.iter_mut().zip(&w[row.clone()]).for_each(|(o, v)| *o += a * v.to_f32()),
            }
        }
    }
}

#[cfg(x86_simd)]
pub(super) use x86::{hsum, prefetch_next, Load};

#[cfg(x86_simd)]
mod x86 {
    use std::arch::x86_64::*;

    /// The sum of the 8 lanes (the kernels' horizontal sum).
    ///
    /// # Safety
    /// The CPU has AVX.
    #[inline(always)]
    pub(in crate::kernels) unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: the caller keeps the `# Safety` contract above.
        unsafe {
            let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
            _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)))
        }
    }

    /// Asks for `bytes` bytes at `offset` past the end of `w`: the next rows of quantized
    /// weights, which follow `w` in memory, fetched while `w` is read. Starting a new stretch
    /// of memory (a row, or a group of 8 rows read as 8 streams) stalls until the hardware
    /// prefetcher catches up, and rows are short (2-18 KB). Measured on the `[14336, 4096]`
    /// Q4_0 product, one activation row, 2 threads: 23 -> 30-31 GB/s (a plain read of
    /// memory: 34). Prefetching reads nothing and cannot fault, so running past the end of the
    /// weights (the last rows) is harmless.
    #[inline(always)]
    pub(in crate::kernels) fn prefetch_next(w: &[u8], offset: usize, bytes: usize) {
        let next = w.as_ptr().wrapping_add(w.len() + offset);
        let mut line = 0;
        while line < bytes {
            // SAFETY: a prefetch is a hint that reads nothing the program sees and cannot fault
            // at any address; it is SSE, which every x86_64 CPU has.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(line).cast()) };
            line += 64;
        }
    }

    /// Eight consecutive weights widened to f32.
    pub(in crate::kernels) trait Load: Copy {
        /// # Safety
        /// `ptr` points at 8 readable values and the CPU has AVX2, FMA and F16C.
        unsafe fn load8(ptr: *const Self) -> __m256;
        /// Sixteen values widened to f32, for the AVX-512 kernels (the CPU has AVX-512F).
        ///
        /// # Safety
        /// `ptr` points at 16 readable values and the CPU has AVX-512F, AVX2, FMA and F16C.
        unsafe fn load16(ptr: *const Self) -> __m512;
        fn to_f32(self) -> f32;
    }

    impl Load for f32 {
        #[inline(always)]
        unsafe fn load8(ptr: *const Self) -> __m256 {
            // SAFETY: `Load`'s contract: `ptr` points at 8 readable values on a CPU with the features.
            unsafe { _mm256_loadu_ps(ptr) }
        }
        #[inline(always)]
        unsafe fn load16(ptr: *const Self) -> __m512 {
            // SAFETY: `Load`'s contract: `ptr` points at 16 readable values on a CPU with the features.
            unsafe { _mm512_loadu_ps(ptr) }
        }
        fn to_f32(self) -> f32 {
            self
        }
    }

    impl Load for half::f16 {
        #[inline(always)]
        unsafe fn load8(ptr: *const Self) -> __m256 {
            // SAFETY: `Load`'s contract: `ptr` points at 8 readable values on a CPU with the features.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(ptr.cast())) }
        }
        #[inline(always)]
        unsafe fn load16(ptr: *const Self) -> __m512 {
            // SAFETY: `Load`'s contract: `ptr` points at 16 readable values on a CPU with the features.
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(ptr.cast())) }
        }
        fn to_f32(self) -> f32 {
            half::f16::to_f32(self)
        }
    }

    impl Load for half::bf16 {
        /// bf16 is the top half of an f32: zero-extend to 32 bits and shift left by 16.
        #[inline(always)]
        unsafe fn load8(ptr: *const Self) -> __m256 {
            // SAFETY: `Load`'s contract: `ptr` points at 8 readable values on a CPU with the features.
            unsafe { _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(ptr.cast())), 16)) }
        }
        #[inline(always)]
        unsafe fn load16(ptr: *const Self) -> __m512 {
            // SAFETY: `Load`'s contract: `ptr` points at 16 readable values on a CPU with the features.
            unsafe { _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(ptr.cast())), 16)) }
        }
        fn to_f32(self) -> f32 {
            half::bf16::to_f32(self)
        }
    }
}
