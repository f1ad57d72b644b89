use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::{DecoderLayer, DecoderLayerOutput};
use crate::config::MixtralConfig;
use crate::nn::{
    attention_mask, KvCache, RmsNorm, RmsNormConfig, RotaryEmbedding, RotaryEmbeddingConfig,
};

/// A Mixtral-architecture causal language model (HF `MixtralForCausalLM`).
///
/// Field names mirror the checkpoint keys (`model.embed_tokens`, `model.layers.N.*`,
/// `model.norm`, `lm_head`) so that import is one short table.
#[derive(Module, Debug)]
pub struct Mixtral<B: Backend> {
    /// Token embedding `[V, D]`.
    pub embed_tokens: Embedding<B>,
    /// The decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
    /// `[D, V]`; `None` when the output projection is tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    /// RoPE tables shared by all layers.
    pub rope: RotaryEmbedding<B>,
    /// The shape this model was built with (kept for export and inference).
    #[module(skip)]
    pub config: MixtralConfig,
}

/// Output of [`Mixtral::forward`].
#[derive(Debug, Clone)]
pub struct MixtralOutput<B: Backend> {
    /// `[B, S, V]`
    pub logits: Tensor<B, 3>,
    /// One `[T, E]` f32 tensor per layer (`T = B*S`, batch-major), as HF's `router_logits`.
    pub router_logits: Vec<Tensor<B, 2>>,
    /// One `[T, K]` tensor of chosen experts per layer.
    pub experts: Vec<Tensor<B, 2, Int>>,
}

impl MixtralConfig {
    /// A randomly initialised model of this shape.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mixtral<B> {
        Mixtral {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, self.d_model).init(device),
            layers: (0..self.n_layers)
                .map(|_| DecoderLayer::init(self, device))
                .collect(),
            norm: RmsNormConfig::new(self.d_model)
                .with_epsilon(self.rms_norm_eps)
                .init(device),
            lm_head: (!self.tie_word_embeddings).then(|| {
                LinearConfig::new(self.d_model, self.vocab_size)
                    .with_bias(false)
                    .init(device)
            }),
            rope: RotaryEmbeddingConfig::new(self.head_dim, self.max_seq_len)
                .with_theta(self.rope_theta)
                .init(device),
            config: self.clone(),
        }
    }
}

impl<B: Backend> Mixtral<B> {
    /// Full-sequence forward pass.
    ///
    /// # Shapes
    /// - `input_ids`: `[B, S]` -> `logits` `[B, S, V]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> MixtralOutput<B> {
        self.forward_k(input_ids, self.config.top_k)
    }

    /// [`Self::forward`] with `top_k` experts per token instead of the configured number.
    pub fn forward_k(&self, input_ids: Tensor<B, 2, Int>, top_k: usize) -> MixtralOutput<B> {
        let [_, s] = input_ids.dims();
        let mask = attention_mask::<B>(s, s, 0, self.config.sliding_window, &input_ids.device());
        let layers = self.layers.iter().map(|layer| {
            let mask = mask.clone();
            move |x| layer.forward(x, &self.rope, mask, top_k)
        });
        self.run(input_ids, layers)
    }

    /// An empty KV cache for `batch` sequences of up to `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> KvCache<B> {
        let c = &self.config;
        KvCache::new(
            c.n_layers,
            batch,
            c.n_kv_heads,
            capacity,
            c.head_dim,
            &self.embed_tokens.weight.device(),
        )
    }

    /// Forward pass of the next `S` tokens of each sequence, continuing after the positions
    /// already in `cache` (a prompt in one call, then one token at a time). Computes the same
    /// function as [`Self::forward`] on the whole sequence. Batches of prompts of different
    /// lengths run left-padded: see [`KvCache::with_left_padding`].
    ///
    /// Panics if the cache or the RoPE table has no room for the new positions; callers size
    /// the cache from the prompt and the number of tokens to generate.
    ///
    /// # Shapes
    /// - `input_ids`: `[B, S]` -> `logits` `[B, S, V]`
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
        top_k: usize,
    ) -> MixtralOutput<B> {
        let [_, s] = input_ids.dims();
        let start = cache.len();
        assert!(
            start + s <= cache.capacity() && start + s <= self.rope.max_seq_len(),
            "{} positions do not fit the KV cache ({}) or the context ({})",
            start + s,
            cache.capacity(),
            self.rope.max_seq_len()
        );
        let step = cache.step(s, self.config.sliding_window, &input_ids.device());
        let step = &step;
        let layers = self.layers.iter().zip(cache.layers.iter_mut()).map(|(layer, layer_cache)| {
            move |x| layer.forward_cached(x, &self.rope, layer_cache, step, top_k)
        });
        let out = self.run(input_ids, layers);
        cache.advance(s);
        out
    }

    /// Embedding, then each layer step in turn, then the head; collects the router outputs.
    fn run<F>(&self, input_ids: Tensor<B, 2, Int>, layers: impl Iterator<Item = F>) -> MixtralOutput<B>
    where
        F: FnOnce(Tensor<B, 3>) -> DecoderLayerOutput<B>,
    {
        let mut x = self.embed_tokens.forward(input_ids); // [B, S, D]
        let mut router_logits = Vec::with_capacity(self.layers.len());
        let mut experts = Vec::with_capacity(self.layers.len());
        for layer in layers {
            let out = layer(x);
            x = out.hidden;
            router_logits.push(out.router_logits);
            experts.push(out.experts);
        }
        MixtralOutput {
            logits: self.lm_logits(x),
            router_logits,
            experts,
        }
    }

    /// Final norm and output projection.
    ///
    /// # Shapes
    /// - `hidden`: `[B, S, D]` -> `[B, S, V]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = self.norm.forward(hidden);
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let weight = self.embed_tokens.weight.val().transpose(); // [D, V]
                hidden.matmul(weight.unsqueeze::<3>())
            }
        }
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &MixtralConfig {
        &self.config
    }
}
