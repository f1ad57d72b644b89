//! Wall-clock medians with warm-up, synchronising the device around each run.

use std::time::Instant;

use burn::tensor::backend::Backend;

/// Runs `f` `warmup` times untimed (autotune, caches, allocator), then `repeats` times timed;
/// returns the median in milliseconds. The device is synchronised before and after each run, so
/// queued GPU work is counted where it belongs.
pub fn median_ms<B: Backend>(device: &B::Device, warmup: usize, repeats: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
        sync::<B>(device);
    }
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            sync::<B>(device);
            let started = Instant::now();
            f();
            sync::<B>(device);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

pub fn sync<B: Backend>(device: &B::Device) {
    // A failed sync means the device died; the next op reports it properly.
    let _ = B::sync(device);
}
