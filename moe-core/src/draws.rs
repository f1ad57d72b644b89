//! Seeded random draws (a model's initial weights, a conversion's routers, noise and
//! re-initialised units), made on the host by a generator of their own.
//!
//! Why not the backend's generator (`B::seed` then `Tensor::random` or a lazy initializer): it
//! is one per process, so whatever else draws or seeds meanwhile (another thread, a test
//! running beside) changes what is drawn, and seeding it resets the caller's own stream. Two
//! upcycled experts once drew the same noise that way. A ChaCha stream per use gives the same
//! values for a seed whatever runs beside it, on every backend and thread count.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// Values drawn per parallel chunk; each chunk is its own ChaCha stream, so the values do not
/// depend on how many threads fill them.
const CHUNK: usize = 1 << 16;

/// One conversion's generator.
pub(crate) struct Draws {
    rng: ChaCha8Rng,
}

impl Draws {
    pub(crate) fn new(seed: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// A `[rows, cols]` matrix of independent `N(mean, std^2)` values, in the device's default
    /// float dtype.
    pub(crate) fn normal<B: Backend>(
        &mut self,
        shape: [usize; 2],
        mean: f64,
        std: f64,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let (mean, std) = (mean as f32, std as f32);
        self.fill(shape, device, |rng| mean + std * rng.sample::<f32, _>(StandardNormal))
    }

    /// A `[rows, cols]` matrix of `value(rng)`s, chunk by chunk in parallel.
    fn fill<B: Backend>(
        &mut self,
        [rows, cols]: [usize; 2],
        device: &B::Device,
        value: impl Fn(&mut ChaCha8Rng) -> f32 + Sync,
    ) -> Tensor<B, 2> {
        let key = self.rng.random::<u64>();
        let mut values = vec![0f32; rows * cols];
        values.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| {
            let mut rng = ChaCha8Rng::seed_from_u64(key);
            rng.set_stream(i as u64);
            for v in chunk {
                *v = value(&mut rng);
            }
        });
        Tensor::from_data(TensorData::new(values, [rows, cols]), device)
    }

    /// A `[rows, cols]` matrix of independent values uniform in `[-bound, bound)`, in the
    /// device's default float dtype.
    pub(crate) fn uniform<B: Backend>(&mut self, shape: [usize; 2], bound: f64, device: &B::Device) -> Tensor<B, 2> {
        let bound = bound as f32;
        self.fill(shape, device, |rng| rng.random_range(-bound..bound))
    }

    /// Which of `len` items are in a uniformly drawn subset of `n` of them (`n <= len`).
    pub(crate) fn subset(&mut self, len: usize, n: usize) -> Vec<bool> {
        let mut chosen = vec![false; len];
        for i in rand::seq::index::sample(&mut self.rng, len, n) {
            chosen[i] = true;
        }
        chosen
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::backend::Flex;

    fn host(t: Tensor<Flex, 2>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// A seed gives the same values every time, two draws differ, and the values have the
    /// moments asked for.
    #[test]
    fn draws_are_seeded_and_have_the_moments_asked_for() {
        let device = Default::default();
        let draw = |seed| {
            let mut draws = Draws::new(seed);
            let a = host(draws.normal::<Flex>([300, 500], 0.5, 2.0, &device));
            (a, host(draws.normal::<Flex>([3, 5], 0.0, 1.0, &device)), draws.subset(10, 4))
        };
        let (a, b, s) = draw(7);
        assert_eq!((a.clone(), b.clone(), s.clone()), draw(7));
        assert_ne!(a, draw(8).0);
        assert_ne!(a[..15], b[..]);
        assert_eq!(s.iter().filter(|&&c| c).count(), 4);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((mean - 0.5).abs() < 0.02 && (std - 2.0).abs() < 0.02, "mean {mean}, std {std}");
        // The chunks are separate streams, not one stream repeated.
        assert_ne!(a[..100], a[CHUNK..CHUNK + 100]);
        let u = host(Draws::new(7).uniform::<Flex>([200, 100], 0.25, &device));
        assert!(u.iter().all(|v| v.abs() <= 0.25), "uniform values out of [-0.25, 0.25)");
        let (lo, hi) = (u.iter().filter(|&&v| v < 0.0).count(), u.iter().filter(|&&v| v >= 0.0).count());
        assert!(lo.abs_diff(hi) < 600 && u.iter().any(|v| v.abs() > 0.24), "{lo} below 0, {hi} above");
    }
}
