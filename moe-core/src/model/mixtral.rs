use burn::module::Module;
use burn::nn::{EmbeddingConfig, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::{DecoderLayer, FeedForward};
use crate::config::MixtralConfig;
use crate::error::Result;
use crate::kernels::matmul_weight;
use crate::moe::{ImportanceLoad, LayerRouting};
use crate::nn::{attention_mask, KvCache, Projection, RmsNorm, RmsNormConfig, RotaryEmbedding, TokenEmbedding};

/// A decoder-only causal language model: HF `MixtralForCausalLM`, or with
/// [`MixtralConfig::dense`] its dense sibling (`MistralForCausalLM`: the same attention, norms
/// and embeddings with one SwiGLU per layer), or with the options of another
/// [`Family`](crate::config::Family) `Qwen2MoeForCausalLM`, `Qwen3MoeForCausalLM`,
/// `OlmoeForCausalLM` or `GraniteMoeForCausalLM`.
///
/// Field names mirror the checkpoint keys (`model.embed_tokens`, `model.layers.N.*`,
/// `model.norm`, `lm_head`) so that import is one short table.
#[derive(Module, Debug)]
pub struct Mixtral<B: Backend> {
    /// Token embedding `[V, D]`.
    pub embed_tokens: TokenEmbedding<B>,
    /// The decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
    /// `[D, V]`; `None` when the output projection is tied to `embed_tokens`.
    pub lm_head: Option<Projection<B>>,
    /// RoPE frequencies; each forward pass builds the rows of its positions once, for all layers.
    #[module(skip)]
    pub rope: RotaryEmbedding,
    /// The shape this model was built with (kept for export and inference).
    #[module(skip)]
    pub config: MixtralConfig,
}

/// Output of [`Mixtral::forward`].
#[derive(Debug, Clone)]
pub struct MixtralOutput<B: Backend> {
    /// `[B, S, V]`
    pub logits: Tensor<B, 3>,
    /// What each MoE layer's router decided, in layer order (`T = B*S` tokens, batch-major):
    /// all of a Mixtral's layers, none of a dense model's.
    pub routing: Vec<LayerRouting<B>>,
}

impl<B: Backend> MixtralOutput<B> {
    /// One `[T, E]` f32 tensor per MoE layer, as HF's `router_logits`: what the
    /// load-balancing and z losses take.
    pub fn router_logits(&self) -> Vec<Tensor<B, 2>> {
        self.routing.iter().map(|r| r.router_logits.clone()).collect()
    }

    /// Per MoE layer, the assignments routed to each expert, `[L][E]`.
    pub fn expert_counts(&self) -> Vec<Vec<usize>> {
        self.routing.iter().map(|r| r.counts.clone()).collect()
    }

    /// Per MoE layer, the importance and load of noisy gating (for
    /// [`importance_load_loss`](crate::loss::importance_load_loss)); empty without it.
    pub fn importance_load(&self) -> Vec<ImportanceLoad<B>> {
        self.routing.iter().filter_map(|r| r.importance_load.clone()).collect()
    }
}

impl MixtralConfig {
    /// A randomly initialised model of this shape.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mixtral<B> {
        Mixtral {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, self.d_model).init(device).into(),
            layers: (0..self.n_layers).map(|n| DecoderLayer::init(self, n, device)).collect(),
            norm: RmsNormConfig::new(self.d_model).with_epsilon(self.rms_norm_eps).init(device),
            lm_head: (!self.tie_word_embeddings)
                .then(|| LinearConfig::new(self.d_model, self.vocab_size).with_bias(false).init(device).into()),
            rope: RotaryEmbedding::new(self.head_dim, self.rope_theta),
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
        let [_, s] = input_ids.dims();
        let device = input_ids.device();
        let mask = attention_mask::<B>(s, s, 0, self.config.sliding_window, &device);
        let rope = self.rope.range(0, s, &device);
        let mut x = self.embed(input_ids); // [B, S, D]
        let mut routing = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let out = layer.forward(x, &rope, mask.clone());
            routing.extend(out.routing);
            x = out.hidden;
        }
        MixtralOutput { logits: self.lm_logits(x), routing }
    }

    /// Experts each token is routed to (the config's `top_k` unless changed with
    /// [`Self::set_experts_per_token`]).
    pub fn experts_per_token(&self) -> usize {
        self.layers.iter().find_map(|l| l.moe()).map_or(self.config.top_k, |moe| moe.top_k())
    }

    /// One auxiliary-loss-free balancing step for every layer (see
    /// [`SparseMoe::update_expert_bias`](crate::moe::SparseMoe::update_expert_bias)): `loads[l][e]`
    /// is the assignments layer `l` routed to expert `e` over a training step. Does nothing
    /// unless `routing.bias_update_rate` is above 0.
    pub fn update_expert_biases(&mut self, loads: &[Vec<usize>]) {
        let moes = self.layers.iter_mut().filter_map(|l| l.moe_mut());
        for (moe, load) in moes.zip(loads) {
            moe.update_expert_bias(load);
        }
    }

    /// Routes every token to `k` experts instead of the config's `top_k` from now on
    /// (llama.cpp's "experts per token" override); an error unless `1 <= k <= n_experts`.
    /// A dense model takes only `k = 1`.
    pub fn set_experts_per_token(&mut self, k: usize) -> Result<()> {
        if self.config.dense && k != 1 {
            return Err(crate::error::MoeError::ExpertsPerToken { got: k, n_experts: 1 });
        }
        for moe in self.layers.iter_mut().filter_map(|l| l.moe_mut()) {
            moe.set_top_k(k)?;
        }
        Ok(())
    }

    /// An empty KV cache for `batch` sequences of up to `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> KvCache<B> {
        let c = &self.config;
        KvCache::new(c.n_layers, batch, c.n_kv_heads, capacity, c.head_dim, &self.embed_tokens.weight.lazy_device())
    }

    /// Forward pass of the next `S` tokens of each sequence, continuing after the positions
    /// already in `cache` (a prompt in one call, then one token at a time). Computes the same
    /// function as [`Self::forward`] on the whole sequence. Batches of prompts of different
    /// lengths run left-padded: see [`KvCache::with_left_padding`].
    ///
    /// Panics if the cache has no room for the new positions or they run past the config's
    /// `max_seq_len`; callers size the cache from the prompt and the number of tokens to generate.
    ///
    /// # Shapes
    /// - `input_ids`: `[B, S]` -> `logits` `[B, S, V]`
    pub fn forward_cached(&self, input_ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> MixtralOutput<B> {
        let (hidden, routing) = self.hidden_cached(input_ids, cache);
        MixtralOutput { logits: self.lm_logits(hidden), routing }
    }

    /// [`Self::forward_cached`] that computes the logits of each sequence's last position
    /// only: what generation needs. The head is `V x D` per position, so on a prompt this saves
    /// most of the head's work (as transformers' `logits_to_keep=1` does).
    ///
    /// # Shapes
    /// - `input_ids`: `[B, S]` -> `[B, V]`
    pub fn next_token_logits(&self, input_ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Tensor<B, 2> {
        let [b, s] = input_ids.dims();
        let (hidden, _) = self.hidden_cached(input_ids, cache);
        let last = hidden.narrow(1, s - 1, 1); // [B, 1, D]
        self.lm_logits(last).reshape([b, self.config.vocab_size])
    }

    /// The decoder stack over new positions, appending them to `cache`: hidden states before
    /// the final norm, and the router outputs.
    fn hidden_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> (Tensor<B, 3>, Vec<LayerRouting<B>>) {
        let [_, s] = input_ids.dims();
        let start = cache.len();
        assert!(
            start + s <= cache.capacity() && start + s <= self.config.max_seq_len,
            "{} positions do not fit the KV cache ({}) or the context ({})",
            start + s,
            cache.capacity(),
            self.config.max_seq_len
        );
        let device = input_ids.device();
        let step = cache.step(s, self.config.sliding_window, &device);
        let rope = match &step.positions {
            Some(positions) => self.rope.rows(positions, &device),
            None => self.rope.range(step.start, s, &device),
        };
        let mut x = self.embed(input_ids); // [B, S, D]
        let mut routing = Vec::with_capacity(self.layers.len());
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let out = layer.forward_cached(x, &rope, layer_cache, &step);
            routing.extend(out.routing);
            x = out.hidden;
        }
        cache.advance(s);
        (x, routing)
    }

    /// The token embeddings, times the embedding multiplier (Granite-MoE).
    ///
    /// # Shapes
    /// - `input_ids`: `[B, S]` -> `[B, S, D]`
    fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = self.embed_tokens.forward(input_ids);
        let m = self.config.multipliers.embedding;
        if m == 1.0 {
            x
        } else {
            x.mul_scalar(m)
        }
    }

    /// Final norm and output projection (the logits divided by Granite-MoE's `logits_scaling`).
    ///
    /// # Shapes
    /// - `hidden`: `[B, S, D]` -> `[B, S, V]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = self.norm.forward(hidden);
        let logits = match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let [b, s, d] = hidden.dims();
                let weight = self.embed_tokens.weight.val().transpose(); // [D, V], a strided view
                matmul_weight(hidden.reshape([b * s, d]), weight).reshape([b, s, self.config.vocab_size])
            }
        };
        let m = self.config.multipliers.logits_scaling;
        if m == 1.0 {
            logits
        } else {
            logits.div_scalar(m)
        }
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &MixtralConfig {
        &self.config
    }

    /// Lays every float projection's weight out for this crate's CPU kernels
    /// ([`Projection::pack_for_cpu`]), for inference on burn-flex: prompts then multiply without
    /// copying weights for each product (on the 8x7B shape in f16 that copying was 28% of a
    /// prefill). Does nothing on other backends or under autodiff; quantized weights stay as
    /// they are. Returns how many projections it packed.
    pub fn pack_for_cpu(&mut self) -> usize {
        let mut projections: Vec<&mut Projection<B>> = Vec::new();
        let mut packed = 0;
        for layer in &mut self.layers {
            let attn = &mut layer.self_attn;
            projections.extend([&mut attn.q_proj, &mut attn.k_proj, &mut attn.v_proj, &mut attn.o_proj]);
            match &mut layer.feed_forward {
                FeedForward::Dense(mlp) => projections.extend([&mut mlp.gate_up, &mut mlp.down]),
                FeedForward::Sparse(moe) => packed += moe.pack_for_cpu(),
            }
        }
        projections.extend(self.lm_head.as_mut());
        packed + projections.into_iter().map(Projection::pack_for_cpu).filter(|&packed| packed).count()
    }
}
