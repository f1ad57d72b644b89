//! Next-token selection from logits, with the knobs and the order of HF `generate`:
//! repetition penalty, then temperature, top-k, top-p and min-p.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How to pick the next token.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`.
    pub top_p: Option<f32>,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: Option<f32>,
    /// > 1 discourages tokens already in the sequence (CTRL / HF semantics); 1 = off.
    pub repetition_penalty: f32,
    /// Same seed, same tokens.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: None, top_p: None, min_p: None, repetition_penalty: 1.0, seed: 0 }
    }
}

/// A seeded sampler; one per sequence, so that batching does not change a sequence's tokens.
pub struct Sampler {
    config: SamplingConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler with its own RNG seeded from `config.seed`.
    pub fn new(config: SamplingConfig) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Self { config, rng }
    }

    /// Picks the next token from `logits` (`[V]`), given the tokens so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let c = &self.config;
        if c.repetition_penalty != 1.0 {
            for &id in history {
                let l = &mut logits[id as usize];
                *l = if *l < 0.0 { *l * c.repetition_penalty } else { *l / c.repetition_penalty };
            }
        }
        if c.temperature <= 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, most likely first.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if let Some(k) = c.top_k {
            order.truncate(k.max(1));
        }
        let max = logits[order[0]] / c.temperature;
        let mut probs: Vec<f64> = order.iter().map(|&i| ((logits[i] / c.temperature - max) as f64).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(top_p) = c.top_p {
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    cumulative += p;
                    cumulative >= top_p as f64
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        if let Some(min_p) = c.min_p {
            let threshold = probs[0] * min_p as f64;
            let keep = probs.iter().take_while(|&&p| p >= threshold).count().max(1);
            probs.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut x = self.rng.random::<f64>() * total;
        for (p, &i) in probs.iter().zip(&order) {
            x -= p;
            if x <= 0.0 {
                return i as u32;
            }
        }
        order[probs.len() - 1] as u32
    }
}

/// Index of the largest logit (the first one on ties, as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(temperature: f32) -> SamplingConfig {
        SamplingConfig { temperature, seed: 7, ..Default::default() }
    }

    #[test]
    fn greedy_is_argmax_and_penalty_can_change_it() {
        let mut s = Sampler::new(config(0.0));
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9], &[]), 1);
        let mut s = Sampler::new(SamplingConfig { repetition_penalty: 2.0, ..config(0.0) });
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9], &[1]), 2);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = || {
            let mut s = Sampler::new(config(1.0));
            (0..20).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        assert!(run().iter().collect::<std::collections::HashSet<_>>().len() > 3);
    }

    #[test]
    fn top_k_top_p_min_p_restrict_the_candidates() {
        let logits = [3.0f32, 2.9, 0.0, -1.0, -2.0];
        for cfg in [
            SamplingConfig { top_k: Some(2), ..config(1.0) },
            SamplingConfig { top_p: Some(0.8), ..config(1.0) },
            SamplingConfig { min_p: Some(0.5), ..config(1.0) },
        ] {
            let mut s = Sampler::new(cfg.clone());
            for _ in 0..200 {
                assert!(s.sample(&mut logits.clone(), &[]) < 2, "{cfg:?}");
            }
        }
    }
}
