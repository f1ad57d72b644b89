//! The host's memory read bandwidth: the floor `moe-bench decode` holds batch-1 decoding to.
//!
//! A floor that is too low flatters every figure measured against it, so the probe takes the
//! best of the read patterns that measured fastest on CPU-2 (2 cores of an AMD EPYC, a throwaway
//! harness, 1 GiB, best of 5 each, 2026-11-24):
//! - one contiguous stretch per thread, summed into independent vector accumulators: 24-26 GB/s;
//! - the same over a buffer in 2 MB pages (`MADV_HUGEPAGE` before it is first written, so
//!   reading it misses the TLB once per 2 MB instead of once per 4 KB): 27.4 GB/s;
//! - two or four interleaved stretches per thread (more cache lines in flight than the
//!   hardware prefetcher of one stream asks for), in 2 MB pages: 27.6-28.4 GB/s.
//!
//! The probe it replaced (one stream per thread, 4 KB pages, plain `f32` adds compiled for
//! baseline x86-64) read 21.5-24.9 GB/s, less than llama.cpp was measured to read per decoded
//! token (30.5 GB/s in docs/benchmarks-history.md) and less than this project's own f16 matrix-vector kernel
//! reads on its own (25-32 GB/s): an underestimate.

/// Bytes read per pass: far beyond the last-level cache (32 MB on CPU-2).
const BUFFER_BYTES: usize = 1 << 30;
/// Passes per read pattern; the best is kept.
const PASSES: usize = 5;
/// Interleaved stretches per thread tried.
const STREAMS: [usize; 3] = [1, 2, 4];
/// `f32`s summed per stream per step: one 256-byte run (4 cache lines), 8 vector accumulators.
const STEP: usize = 64;

/// Host memory read bandwidth in GB/s: the best over [`PASSES`] sums of a 1 GiB buffer, split
/// over every core, for each pattern of [`STREAMS`].
pub fn host_read_bandwidth_gbs() -> f64 {
    let buffer = PageAlignedBuffer::ones(BUFFER_BYTES / 4);
    let data = buffer.as_slice();
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let mut best = 0.0f64;
    for streams in STREAMS {
        for _ in 0..PASSES {
            let started = std::time::Instant::now();
            let total: f32 = std::thread::scope(|s| {
                let handles: Vec<_> = data
                    .chunks(data.len().div_ceil(threads))
                    .map(|chunk| s.spawn(move || sum(chunk, streams)))
                    .collect();
                handles.into_iter().map(|h| h.join().expect("the sum does not panic")).sum()
            });
            std::hint::black_box(total);
            best = best.max(BUFFER_BYTES as f64 / started.elapsed().as_secs_f64() / 1e9);
        }
    }
    best
}

/// The sum of `data`, read as `streams` equal stretches in lockstep (the tail past them is
/// skipped: a few KB of a GiB).
fn sum(data: &[f32], streams: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature the function is compiled for.
        return unsafe { sum_avx2(data, streams) };
    }
    sum_portable(data, streams)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(data: &[f32], streams: usize) -> f32 {
    // The same loop, compiled with 256-bit adds: baseline x86-64 (SSE2) read 5-10% slower.
    sum_portable(data, streams)
}

#[inline(always)]
fn sum_portable(data: &[f32], streams: usize) -> f32 {
    // Independent lanes, so the adds form no chain and the loop waits on memory alone.
    let mut acc = [0f32; STEP];
    let len = data.len() / streams / STEP * STEP;
    for i in (0..len).step_by(STEP) {
        for s in 0..streams {
            let run = &data[s * len + i..][..STEP];
            for (a, x) in acc.iter_mut().zip(run) {
                *a += x;
            }
        }
    }
    acc.iter().sum()
}

/// `len` floats set to 1.0 in memory aligned to 2 MB, asked to be backed by 2 MB pages before
/// the first write (Linux serves `MADV_HUGEPAGE` regions that way when transparent huge pages
/// are in `madvise` mode, their default on many distributions; elsewhere the advice is ignored
/// and the buffer is in normal pages).
struct PageAlignedBuffer {
    ptr: std::ptr::NonNull<f32>,
    len: usize,
    layout: std::alloc::Layout,
}

impl PageAlignedBuffer {
    fn ones(len: usize) -> Self {
        let layout =
            std::alloc::Layout::from_size_align(len * 4, 2 << 20).expect("1 GiB in 2 MB alignment is a layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) }.cast::<f32>();
        let Some(ptr) = std::ptr::NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        #[cfg(target_os = "linux")]
        // SAFETY: the range is this allocation; the advice changes how it is backed, not its
        // contents. A failure (no THP support) leaves normal pages, which is fine.
        unsafe {
            libc::madvise(raw.cast(), len * 4, libc::MADV_HUGEPAGE);
        }
        // SAFETY: `raw` is valid for `len` f32 writes (the layout's size) and aligned for f32.
        unsafe { std::slice::from_raw_parts_mut(raw, len) }.fill(1.0);
        Self { ptr, len, layout }
    }

    fn as_slice(&self) -> &[f32] {
        // SAFETY: `ptr` holds `len` initialised f32s (written in `ones`) for `self`'s lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PageAlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `ones` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), self.layout) }
    }
}
