//! Wall-clock medians with warm-up, synchronising the device around each run.

use std::time::Instant;

use burn::tensor::backend::Backend;

/// Runs `f` `warmup` times untimed (autotune, caches, allocator), then `repeats` times timed;
/// returns the median in milliseconds. The device is synchronised before and after each run, so
/// queued GPU work is counted where it belongs; `f`'s result is held until after the sync, so a
/// lazy (fusion) backend cannot skip work whose output was dropped unread.
pub fn median_ms<B: Backend, T>(device: &B::Device, warmup: usize, repeats: usize, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..warmup {
        let out = f();
        sync::<B>(device);
        drop(out);
    }
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            sync::<B>(device);
            let started = Instant::now();
            let out = f();
            sync::<B>(device);
            let ms = started.elapsed().as_secs_f64() * 1e3;
            drop(out);
            ms
        })
        .collect();
    median(&mut times)
}

/// The middle value (the upper of the two middle values for an even count); `values` must not
/// be empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn sync<B: Backend>(device: &B::Device) {
    // A failed sync means the device died; the next op reports it properly.
    let _ = B::sync(device);
}
