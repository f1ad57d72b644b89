//! Allocator settings for the binaries.

/// Keeps glibc's `malloc` from returning every large buffer to the OS after each use.
///
/// A decode step allocates and frees buffers of a few hundred KB (KV-cache updates, expert
/// activations, logits). glibc serves anything above its mmap threshold (128 KB until a larger
/// mmapped block is freed, which raises it) with a fresh `mmap`: every step then page-faults
/// and zeroes new pages. Measured on CPU-2 (`moe-infer generate`, flex, V32000 D512 L4 E8,
/// 128-token prompt) with the same two thresholds set through `GLIBC_TUNABLES`
/// (`glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456`): 13 -> 40-47
/// tok/s decode and 260 -> 450-514 tok/s prompt. Serving up to 32 MB from the heap and trimming it back to the OS
/// only past 256 MB free keeps those pages mapped. A no-op where the C library is not glibc.
///
/// Call it first thing in `main`, before any allocation worth keeping.
pub fn keep_freed_memory_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called before other threads
    // exist, with parameter names and values glibc documents.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
