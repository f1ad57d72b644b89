use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

use super::FeedForward;
use crate::config::MixtralConfig;
use crate::moe::{LayerRouting, SparseMoe};
use crate::nn::{Attention, AttentionConfig, CacheStep, LayerKvCache, RmsNorm, RmsNormConfig, RopeTable};

/// One pre-norm decoder layer: `x + m·attn(norm(x))`, then `h + m·ffn(norm(h))`, where the
/// feed-forward block is the sparse MoE or a dense SwiGLU (Mistral, Qwen-MoE's dense layers)
/// and `m` is the residual multiplier (1 except in Granite-MoE).
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// RMSNorm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// GQA self-attention with RoPE.
    pub self_attn: Attention<B>,
    /// RMSNorm before the feed-forward block.
    pub post_attention_layernorm: RmsNorm<B>,
    /// The checkpoint's `block_sparse_moe` (`mlp` in Qwen-MoE and OLMoE), or a dense layer's `mlp`.
    pub feed_forward: FeedForward<B>,
    /// What each block's output is multiplied by before it joins the residual stream.
    pub residual_multiplier: f64,
}

/// Output of [`DecoderLayer::forward`].
#[derive(Debug, Clone)]
pub struct DecoderLayerOutput<B: Backend> {
    /// `[B, S, D]`
    pub hidden: Tensor<B, 3>,
    /// What the MoE block's router did; `None` in a dense layer.
    pub routing: Option<LayerRouting<B>>,
}

impl<B: Backend> DecoderLayer<B> {
    /// Layer `n` of a model of shape `config`, with freshly initialised weights.
    pub fn init(config: &MixtralConfig, n: usize, device: &B::Device) -> Self {
        let norm = RmsNormConfig::new(config.d_model).with_epsilon(config.rms_norm_eps);
        Self {
            input_layernorm: norm.init(device),
            self_attn: AttentionConfig::new(config.d_model, config.n_heads, config.n_kv_heads, config.head_dim)
                .with_options(config.attention)
                .with_norm_eps(config.rms_norm_eps)
                .init(device),
            post_attention_layernorm: norm.init(device),
            feed_forward: FeedForward::init(config, n, device),
            residual_multiplier: config.multipliers.residual,
        }
    }

    /// `h + m·y`, `m` the residual multiplier (no multiply when it is 1).
    fn residual(&self, h: Tensor<B, 3>, y: Tensor<B, 3>) -> Tensor<B, 3> {
        let m = self.residual_multiplier;
        if m == 1.0 {
            h + y
        } else {
            h + y.mul_scalar(m)
        }
    }

    /// The MoE block, unless the layer is dense.
    pub fn moe(&self) -> Option<&SparseMoe<B>> {
        self.feed_forward.moe()
    }

    /// [`Self::moe`], mutably.
    pub fn moe_mut(&mut self) -> Option<&mut SparseMoe<B>> {
        self.feed_forward.moe_mut()
    }

    /// # Shapes
    /// - `x`: `[B, S, D]`, `mask`: `[S, S]` -> `hidden` `[B, S, D]`
    pub fn forward(&self, x: Tensor<B, 3>, rope: &RopeTable<B>, mask: Tensor<B, 2, Bool>) -> DecoderLayerOutput<B> {
        let attn = self.self_attn.forward(self.input_layernorm.forward(x.clone()), rope, mask);
        self.feed_forward(self.residual(x, attn))
    }

    /// Incremental forward of new positions after the ones in `cache` (see
    /// [`Attention::forward_cached`]).
    ///
    /// # Shapes
    /// - `x`: `[B, S, D]` -> `hidden` `[B, S, D]`
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTable<B>,
        cache: &mut LayerKvCache<B>,
        step: &CacheStep<B>,
    ) -> DecoderLayerOutput<B> {
        let attn = self.self_attn.forward_cached(self.input_layernorm.forward(x.clone()), rope, cache, step);
        self.feed_forward(self.residual(x, attn))
    }

    /// The second half of the layer: `h + m·ffn(norm(h))`.
    fn feed_forward(&self, h: Tensor<B, 3>) -> DecoderLayerOutput<B> {
        let x = self.post_attention_layernorm.forward(h.clone());
        match &self.feed_forward {
            FeedForward::Dense(mlp) => DecoderLayerOutput { hidden: self.residual(h, mlp.forward(x)), routing: None },
            FeedForward::Sparse(moe) => {
                let moe = moe.forward(x);
                DecoderLayerOutput { hidden: self.residual(h, moe.hidden), routing: Some(moe.routing) }
            }
        }
    }
}
