use super::functional::softmax;
use burn::config::Config;
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, FloatDType, Tensor};

use super::{AttentionOptions, CacheStep, LayerKvCache, Projection, QkNorm, RmsNorm, RmsNormConfig, RopeTable};
use crate::kernels::contiguous;

/// Configuration of [`Attention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Model width `D`.
    pub d_model: usize,
    /// Query heads `H`.
    pub n_heads: usize,
    /// Key/value heads; each is shared by `n_heads / n_kv_heads` query heads.
    pub n_kv_heads: usize,
    /// Head size `Dh`.
    pub head_dim: usize,
    /// Query/key norms, biases, clipping and score scale (Mixtral's attention by default).
    #[config(default = "AttentionOptions::default()")]
    pub options: AttentionOptions,
    /// Epsilon of the query/key norms.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

impl AttentionConfig {
    /// Attention with freshly initialised projections (and norms, if the options have them).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let o = &self.options;
        let linear = |d_in, d_out, bias| LinearConfig::new(d_in, d_out).with_bias(bias).init(device).into();
        let q_dim = self.n_heads * self.head_dim;
        let kv_dim = self.n_kv_heads * self.head_dim;
        let norm = |width: usize| Some(RmsNormConfig::new(width).with_epsilon(self.norm_eps).init(device));
        let (q_norm, k_norm) = match o.qk_norm {
            QkNorm::None => (None, None),
            QkNorm::PerHead => (norm(self.head_dim), norm(self.head_dim)),
            QkNorm::Whole => (norm(q_dim), norm(kv_dim)),
        };
        Attention {
            q_proj: linear(self.d_model, q_dim, o.qkv_bias),
            k_proj: linear(self.d_model, kv_dim, o.qkv_bias),
            v_proj: linear(self.d_model, kv_dim, o.qkv_bias),
            o_proj: linear(q_dim, self.d_model, o.o_bias),
            q_norm,
            k_norm,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            options: *o,
        }
    }
}

/// Grouped-query self-attention with rotate-half RoPE, as HF `MixtralAttention` (eager), with
/// the families' options ([`AttentionOptions`]): Qwen3-MoE's per-head and OLMoE's whole-vector
/// query/key norms, Qwen2-MoE's biases, OLMoE's clipping, Granite's score scale.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[D, H*Dh]`
    pub q_proj: Projection<B>,
    /// `[D, G*Dh]`
    pub k_proj: Projection<B>,
    /// `[D, G*Dh]`
    pub v_proj: Projection<B>,
    /// `[H*Dh, D]`
    pub o_proj: Projection<B>,
    /// RMSNorm of the queries (`[Dh]` per head or `[H*Dh]` whole), if the options have one.
    pub q_norm: Option<RmsNorm<B>>,
    /// RMSNorm of the keys (`[Dh]` per head or `[G*Dh]` whole).
    pub k_norm: Option<RmsNorm<B>>,
    /// Query heads `H`.
    pub n_heads: usize,
    /// Key/value heads `G`.
    pub n_kv_heads: usize,
    /// Head size `Dh`.
    pub head_dim: usize,
    /// How this block differs from Mixtral's.
    #[module(skip)]
    pub options: AttentionOptions,
}

impl<B: Backend> Attention<B> {
    /// Causal self-attention of a whole sequence (positions `0..S`, `rope`'s).
    ///
    /// # Shapes
    /// - `x`: `[B, S, D]`
    /// - `mask`: `[S, S]`, `true` = masked (see [`crate::nn::attention_mask`])
    /// - returns `[B, S, D]`
    pub fn forward(&self, x: Tensor<B, 3>, rope: &RopeTable<B>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (q, k, v) = self.project(x);
        let (q, k) = (rope.apply(q), rope.apply(k));
        let (q, k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2)); // heads first
        let out = self.attend(q, k, v, mask.unsqueeze::<3>());
        self.merge_heads(out, b, s)
    }

    /// Attention of `S` new positions over themselves and the positions already in `cache`:
    /// their keys and values are appended to the cache, and `step` (from
    /// [`KvCache::step`](super::KvCache::step), shared by every layer) says where they sit,
    /// which cached positions they read and what is masked; `rope` holds the new positions'
    /// rotations.
    ///
    /// # Shapes
    /// - `x`: `[B, S, D]` -> `[B, S, D]`
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTable<B>,
        cache: &mut LayerKvCache<B>,
        step: &CacheStep<B>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (q, k, v) = self.project(x);
        let (q, k) = (rope.apply(q), rope.apply(k));
        let (q, k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2)); // heads first
        let (k, v) = cache.append(k, v, step.start, step.lo);
        let out = self.attend(q, k, v, step.mask.clone());
        self.merge_heads(out, b, s)
    }

    /// q, k, v projections split into heads (before RoPE), positions before heads, with the
    /// query/key norms and clipping of the options in HF's order (OLMoE: norm over the whole
    /// projection, then clip; Qwen3-MoE: split into heads, then norm each).
    ///
    /// # Shapes
    /// - `x`: `[B, S, D]` -> `([B, S, H, Dh], [B, S, G, Dh], [B, S, G, Dh])`
    fn project(&self, x: Tensor<B, 3>) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, s, _] = x.dims();
        let (h, g, dh) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let (mut q, mut k) = (self.q_proj.forward(x.clone()), self.k_proj.forward(x.clone()));
        let mut v = self.v_proj.forward(x);
        let whole = self.options.qk_norm == QkNorm::Whole;
        if let (true, Some(qn), Some(kn)) = (whole, &self.q_norm, &self.k_norm) {
            (q, k) = (qn.forward(q), kn.forward(k));
        }
        if let Some(c) = self.options.clip_qkv {
            (q, k, v) = (q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c));
        }
        let (mut q, mut k) = (q.reshape([b, s, h, dh]), k.reshape([b, s, g, dh]));
        if let (false, Some(qn), Some(kn)) = (whole, &self.q_norm, &self.k_norm) {
            (q, k) = (qn.forward(q), kn.forward(k));
        }
        (q, k, v.reshape([b, s, g, dh]))
    }

    /// Scaled dot-product attention of `q` over `k`/`v` (which may include cached positions).
    ///
    /// # Shapes
    /// - `q`: `[B, H, Sq, Dh]`, `k`/`v`: `[B, G, Sk, Dh]`, `mask`: `[B or 1, Sq, Sk]`
    /// - returns `[B, H, Sq, Dh]`
    fn attend(&self, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, mask: Tensor<B, 3, Bool>) -> Tensor<B, 4> {
        let [b, h, s_q, dh] = q.dims();
        let [_, g, s_k, _] = k.dims();
        let r = h / g;
        // GQA without copying k/v: view the query heads as [G, R] groups and broadcast each
        // kv head over its group in the matmul.
        let q = contiguous(q).reshape([b, g, r * s_q, dh]);
        let scale = self.options.score_scale(dh);
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [B, G, R*Sq, Sk]
        let scores = scores.reshape([b, h, s_q, s_k]);
        let mask = mask.unsqueeze_dim::<4>(1).expand([b, h, s_q, s_k]);
        let dtype = scores.dtype();
        // Softmax in f32 as HF does, whatever the activation dtype. Masked scores get the
        // lowest finite f32, as HF's eager masks do, not -inf: a padding query whose keys are
        // all masked then gets finite (unused) outputs instead of NaNs that would reach real
        // rows through `0 * NaN` in the next layer's attention over its keys and values.
        let scores = scores.cast(FloatDType::F32).mask_fill(mask, f32::MIN);
        let probs = softmax(scores, 3).cast(dtype).reshape([b, g, r * s_q, s_k]);
        probs.matmul(v).reshape([b, h, s_q, dh])
    }

    /// # Shapes
    /// - `out`: `[B, H, S, Dh]` -> `[B, S, D]`
    fn merge_heads(&self, out: Tensor<B, 4>, b: usize, s: usize) -> Tensor<B, 3> {
        let out = contiguous(out.swap_dims(1, 2)).reshape([b, s, self.n_heads * self.head_dim]);
        self.o_proj.forward(out)
    }
}
