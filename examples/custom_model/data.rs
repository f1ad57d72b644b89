//! The synthetic task: which of several "topics" dominates a token sequence.
//!
//! Every topic owns a block of the vocabulary and a shared block holds noise tokens. A sequence
//! mixes a dominant topic (the label), a minor one and noise, so a single token does not give the
//! answer away: the model has to weigh the evidence over the whole sequence. Topic tokens are
//! natural expert food: the router can send each topic's tokens to its own experts.

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Shape of the generated task.
#[derive(Debug, Clone, Copy)]
pub struct TopicTask {
    /// Number of classes.
    pub topics: usize,
    /// Vocabulary block per topic.
    pub tokens_per_topic: usize,
    /// Shared noise tokens (ids `0..noise_tokens`).
    pub noise_tokens: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
}

impl Default for TopicTask {
    fn default() -> Self {
        Self { topics: 4, tokens_per_topic: 12, noise_tokens: 16, seq_len: 16 }
    }
}

/// One example: token ids and the dominant topic.
#[derive(Debug, Clone)]
pub struct TopicItem {
    /// `[S]` token ids.
    pub tokens: Vec<i64>,
    /// The dominant topic, `0..topics`.
    pub label: usize,
}

impl TopicTask {
    /// Vocabulary size the model needs.
    pub fn vocab_size(&self) -> usize {
        self.noise_tokens + self.topics * self.tokens_per_topic
    }

    /// `n` examples, the same for the same seed.
    pub fn generate(&self, n: usize, seed: u64) -> Vec<TopicItem> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let label = rng.random_range(0..self.topics);
                let minor = (label + rng.random_range(1..self.topics)) % self.topics;
                let tokens = (0..self.seq_len)
                    .map(|_| {
                        // 45% dominant topic, 30% minor topic, 25% noise.
                        let draw: f32 = rng.random();
                        let topic = if draw < 0.45 {
                            label
                        } else if draw < 0.75 {
                            minor
                        } else {
                            return rng.random_range(0..self.noise_tokens) as i64;
                        };
                        (self.noise_tokens + topic * self.tokens_per_topic + rng.random_range(0..self.tokens_per_topic))
                            as i64
                    })
                    .collect();
                TopicItem { tokens, label }
            })
            .collect()
    }
}

/// A batch on the device.
#[derive(Debug, Clone)]
pub struct TopicBatch<B: Backend> {
    /// `[B, S]` token ids.
    pub tokens: Tensor<B, 2, Int>,
    /// `[B]` labels.
    pub labels: Tensor<B, 1, Int>,
}

/// Stacks [`TopicItem`]s into a [`TopicBatch`].
#[derive(Debug, Clone, Default)]
pub struct TopicBatcher;

impl<B: Backend> Batcher<B, TopicItem, TopicBatch<B>> for TopicBatcher {
    fn batch(&self, items: Vec<TopicItem>, device: &B::Device) -> TopicBatch<B> {
        let (b, s) = (items.len(), items[0].tokens.len());
        let tokens: Vec<i64> = items.iter().flat_map(|item| item.tokens.iter().copied()).collect();
        let labels: Vec<i64> = items.iter().map(|item| item.label as i64).collect();
        TopicBatch {
            tokens: Tensor::from_data(TensorData::new(tokens, [b, s]), device),
            labels: Tensor::from_data(TensorData::new(labels, [b]), device),
        }
    }
}
