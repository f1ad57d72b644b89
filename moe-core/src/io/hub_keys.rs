//! The one table between HuggingFace Hub checkpoint keys and the parameters of [`Mixtral`].
//!
//! Import, export and the gradient tests all go through [`HubParam`]: its [`HubParam::keys`],
//! [`HubParam::layout`] and [`Mixtral::hub_param`] say, once, which checkpoint tensor is which
//! parameter and how it is laid out.
//!
//! | checkpoint key                                            | [`HubParam`]               | layout |
//! |-----------------------------------------------------------|----------------------------|--------|
//! | `model.embed_tokens.weight` `[V, D]`                      | `Embedding`                | as is |
//! | `model.layers.N.input_layernorm.weight` `[D]`             | `InputNorm(N)`             | as is |
//! | `model.layers.N.self_attn.{q,k,v,o}_proj.weight`          | `Attention(N, Q/K/V/O)`    | Linear |
//! | `model.layers.N.post_attention_layernorm.weight` `[D]`    | `PostAttentionNorm(N)`     | as is |
//! | `model.layers.N.block_sparse_moe.gate.weight` `[E, D]`    | `Router(N)`                | Linear |
//! | `model.layers.N.block_sparse_moe.experts.X.w1.weight` `[F, D]` | `Experts(N, W1)` `[E, D, F]` | stacked Linear |
//! | `model.layers.N.block_sparse_moe.experts.X.w3.weight` `[F, D]` | `Experts(N, W3)` `[E, D, F]` | stacked Linear |
//! | `model.layers.N.block_sparse_moe.experts.X.w2.weight` `[D, F]` | `Experts(N, W2)` `[E, F, D]` | stacked Linear |
//! | `model.norm.weight` `[D]`                                 | `FinalNorm`                | as is |
//! | `lm_head.weight` `[V, D]`                                 | `LmHead` (absent when tied) | Linear |
//!
//! "Linear": PyTorch stores `[out, in]`, Burn's `Linear` `[in, out]`, so the values are
//! transposed both ways. "Stacked": the `E` experts of a layer, one checkpoint tensor each, are
//! one `[E, in, out]` parameter here.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::MixtralConfig;
use crate::model::Mixtral;

/// One of the attention projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttentionProj {
    /// `q_proj` `[D, H*Dh]`
    Q,
    /// `k_proj` `[D, G*Dh]`
    K,
    /// `v_proj` `[D, G*Dh]`
    V,
    /// `o_proj` `[H*Dh, D]`
    O,
}

/// One of the stacked expert projections (Mixtral's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpertProj {
    /// Gate projection `[E, D, F]`.
    W1,
    /// Down projection `[E, F, D]`.
    W2,
    /// Up projection `[E, D, F]`.
    W3,
}

/// A parameter of [`Mixtral`], named as the Hub checkpoint names it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubParam {
    /// `model.embed_tokens.weight`
    Embedding,
    /// `model.layers.N.input_layernorm.weight`
    InputNorm(usize),
    /// `model.layers.N.self_attn.*_proj.weight`
    Attention(usize, AttentionProj),
    /// `model.layers.N.post_attention_layernorm.weight`
    PostAttentionNorm(usize),
    /// `model.layers.N.block_sparse_moe.gate.weight`
    Router(usize),
    /// `model.layers.N.block_sparse_moe.experts.X.w*.weight`, every `X`.
    Experts(usize, ExpertProj),
    /// `model.norm.weight`
    FinalNorm,
    /// `lm_head.weight` (only when the head is not tied to the embedding).
    LmHead,
}

/// How a checkpoint stores a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubLayout {
    /// The same shape and element order (embedding, norm weights).
    AsIs,
    /// A PyTorch `Linear` weight `[out, in]` of a Burn `[in, out]` parameter.
    Linear,
    /// `E` PyTorch `Linear` weights `[out, in]`, one key per expert, of a Burn `[E, in, out]`.
    StackedLinear,
}

/// A model parameter of any rank, borrowed.
pub enum ParamRef<'a, B: Backend> {
    /// Norm weights.
    Rank1(&'a Param<Tensor<B, 1>>),
    /// Embedding and linear weights.
    Rank2(&'a Param<Tensor<B, 2>>),
    /// Stacked expert weights.
    Rank3(&'a Param<Tensor<B, 3>>),
}

/// A model parameter of any rank, mutably borrowed (to load it).
pub enum ParamMut<'a, B: Backend> {
    /// Norm weights.
    Rank1(&'a mut Param<Tensor<B, 1>>),
    /// Embedding and linear weights.
    Rank2(&'a mut Param<Tensor<B, 2>>),
    /// Stacked expert weights.
    Rank3(&'a mut Param<Tensor<B, 3>>),
}

/// A tensor of rank 1, 2 or 3: a parameter's value or its gradient.
#[derive(Debug, Clone)]
pub enum AnyTensor<B: Backend> {
    /// Rank 1.
    Rank1(Tensor<B, 1>),
    /// Rank 2.
    Rank2(Tensor<B, 2>),
    /// Rank 3.
    Rank3(Tensor<B, 3>),
}

impl HubParam {
    /// Every parameter of a model of shape `config`, in checkpoint order.
    pub fn all(config: &MixtralConfig) -> Vec<HubParam> {
        use AttentionProj::*;
        use ExpertProj::*;
        let mut out = vec![Self::Embedding];
        for n in 0..config.n_layers {
            out.push(Self::InputNorm(n));
            out.extend([Q, K, V, O].map(|p| Self::Attention(n, p)));
            out.push(Self::PostAttentionNorm(n));
            out.push(Self::Router(n));
            out.extend([W1, W2, W3].map(|p| Self::Experts(n, p)));
        }
        out.push(Self::FinalNorm);
        if !config.tie_word_embeddings {
            out.push(Self::LmHead);
        }
        out
    }

    /// How the checkpoint lays this parameter out.
    pub fn layout(self) -> HubLayout {
        match self {
            Self::Embedding | Self::InputNorm(_) | Self::PostAttentionNorm(_) | Self::FinalNorm => HubLayout::AsIs,
            Self::Attention(..) | Self::Router(_) | Self::LmHead => HubLayout::Linear,
            Self::Experts(..) => HubLayout::StackedLinear,
        }
    }

    /// The checkpoint key of the parameter, or of expert `expert` of a stacked one.
    pub fn key(self, expert: usize) -> String {
        let attn = |p| match p {
            AttentionProj::Q => "q_proj",
            AttentionProj::K => "k_proj",
            AttentionProj::V => "v_proj",
            AttentionProj::O => "o_proj",
        };
        let w = |p| match p {
            ExpertProj::W1 => "w1",
            ExpertProj::W2 => "w2",
            ExpertProj::W3 => "w3",
        };
        match self {
            Self::Embedding => "model.embed_tokens.weight".into(),
            Self::InputNorm(n) => format!("model.layers.{n}.input_layernorm.weight"),
            Self::Attention(n, p) => format!("model.layers.{n}.self_attn.{}.weight", attn(p)),
            Self::PostAttentionNorm(n) => format!("model.layers.{n}.post_attention_layernorm.weight"),
            Self::Router(n) => format!("model.layers.{n}.block_sparse_moe.gate.weight"),
            Self::Experts(n, p) => format!("model.layers.{n}.block_sparse_moe.experts.{expert}.{}.weight", w(p)),
            Self::FinalNorm => "model.norm.weight".into(),
            Self::LmHead => "lm_head.weight".into(),
        }
    }

    /// Its checkpoint keys: one, or one per expert for stacked parameters.
    pub fn keys(self, n_experts: usize) -> Vec<String> {
        match self.layout() {
            HubLayout::StackedLinear => (0..n_experts).map(|e| self.key(e)).collect(),
            _ => vec![self.key(0)],
        }
    }

    /// The parameter's shape in this crate (Burn layout) for a model of shape `config`.
    pub fn shape(self, config: &MixtralConfig) -> Vec<usize> {
        let c = config;
        let (d, f, e) = (c.d_model, c.d_ff, c.n_experts);
        let (q, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        match self {
            Self::Embedding => vec![c.vocab_size, d],
            Self::InputNorm(_) | Self::PostAttentionNorm(_) | Self::FinalNorm => vec![d],
            Self::Attention(_, AttentionProj::Q) => vec![d, q],
            Self::Attention(_, AttentionProj::K | AttentionProj::V) => vec![d, kv],
            Self::Attention(_, AttentionProj::O) => vec![q, d],
            Self::Router(_) => vec![d, e],
            Self::Experts(_, ExpertProj::W1 | ExpertProj::W3) => vec![e, d, f],
            Self::Experts(_, ExpertProj::W2) => vec![e, f, d],
            Self::LmHead => vec![d, c.vocab_size],
        }
    }

    /// The shape of one checkpoint tensor of this parameter.
    pub fn hub_shape(self, config: &MixtralConfig) -> Vec<usize> {
        let shape = self.shape(config);
        match self.layout() {
            HubLayout::AsIs => shape,
            HubLayout::Linear => vec![shape[1], shape[0]],
            HubLayout::StackedLinear => vec![shape[2], shape[1]],
        }
    }

    /// The parameter (and, for stacked experts, the expert) a checkpoint key names.
    pub fn parse(key: &str) -> Option<(HubParam, usize)> {
        use AttentionProj::*;
        use ExpertProj::*;
        let parts: Vec<&str> = key.split('.').collect();
        let param = match parts.as_slice() {
            ["model", "embed_tokens", "weight"] => Self::Embedding,
            ["model", "norm", "weight"] => Self::FinalNorm,
            ["lm_head", "weight"] => Self::LmHead,
            ["model", "layers", n, rest @ ..] => {
                let n: usize = n.parse().ok()?;
                match rest {
                    ["input_layernorm", "weight"] => Self::InputNorm(n),
                    ["post_attention_layernorm", "weight"] => Self::PostAttentionNorm(n),
                    ["self_attn", proj, "weight"] => Self::Attention(
                        n,
                        match *proj {
                            "q_proj" => Q,
                            "k_proj" => K,
                            "v_proj" => V,
                            "o_proj" => O,
                            _ => return None,
                        },
                    ),
                    ["block_sparse_moe", "gate", "weight"] => Self::Router(n),
                    ["block_sparse_moe", "experts", x, w, "weight"] => {
                        let proj = match *w {
                            "w1" => W1,
                            "w2" => W2,
                            "w3" => W3,
                            _ => return None,
                        };
                        return Some((Self::Experts(n, proj), x.parse().ok()?));
                    }
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some((param, 0))
    }
}

/// Selects the field of `$model` that a [`HubParam`] names, borrowed with `$($borrow)+`
/// (`&` or `&mut`) and wrapped in `$wrap::Rank*`. Written once for both borrows, so the
/// mapping exists in one place.
macro_rules! select_param {
    ($model:expr, $param:expr, $wrap:ident, $($borrow:tt)+) => {{
        let model = $model;
        let layer = match $param {
            HubParam::InputNorm(n)
            | HubParam::Attention(n, _)
            | HubParam::PostAttentionNorm(n)
            | HubParam::Router(n)
            | HubParam::Experts(n, _) => Some(n),
            _ => None,
        };
        if layer.is_some_and(|n| n >= model.layers.len()) {
            None
        } else {
            match $param {
                HubParam::Embedding => Some($wrap::Rank2($($borrow)+ model.embed_tokens.weight)),
                HubParam::FinalNorm => Some($wrap::Rank1($($borrow)+ model.norm.weight)),
                HubParam::LmHead => match $($borrow)+ model.lm_head {
                    Some(head) => Some($wrap::Rank2($($borrow)+ head.weight)),
                    None => None,
                },
                HubParam::InputNorm(n) => Some($wrap::Rank1($($borrow)+ model.layers[n].input_layernorm.weight)),
                HubParam::PostAttentionNorm(n) => {
                    Some($wrap::Rank1($($borrow)+ model.layers[n].post_attention_layernorm.weight))
                }
                HubParam::Attention(n, p) => {
                    let attn = $($borrow)+ model.layers[n].self_attn;
                    Some($wrap::Rank2(match p {
                        AttentionProj::Q => $($borrow)+ attn.q_proj.weight,
                        AttentionProj::K => $($borrow)+ attn.k_proj.weight,
                        AttentionProj::V => $($borrow)+ attn.v_proj.weight,
                        AttentionProj::O => $($borrow)+ attn.o_proj.weight,
                    }))
                }
                HubParam::Router(n) => Some($wrap::Rank2($($borrow)+ model.layers[n].block_sparse_moe.router.gate.weight)),
                HubParam::Experts(n, p) => {
                    let experts = $($borrow)+ model.layers[n].block_sparse_moe.experts;
                    Some($wrap::Rank3(match p {
                        ExpertProj::W1 => $($borrow)+ experts.w1,
                        ExpertProj::W2 => $($borrow)+ experts.w2,
                        ExpertProj::W3 => $($borrow)+ experts.w3,
                    }))
                }
            }
        }
    }};
}

impl<B: Backend> Mixtral<B> {
    /// The parameter a [`HubParam`] names; `None` for the LM head of a tied model or a layer
    /// the model does not have.
    pub fn hub_param(&self, param: HubParam) -> Option<ParamRef<'_, B>> {
        select_param!(self, param, ParamRef, &)
    }

    /// [`Self::hub_param`], mutably (to replace a parameter while loading).
    pub fn hub_param_mut(&mut self, param: HubParam) -> Option<ParamMut<'_, B>> {
        select_param!(self, param, ParamMut, &mut)
    }
}

impl<B: Backend> ParamRef<'_, B> {
    /// The parameter's current value.
    pub fn value(&self) -> AnyTensor<B> {
        match self {
            Self::Rank1(p) => AnyTensor::Rank1(p.val()),
            Self::Rank2(p) => AnyTensor::Rank2(p.val()),
            Self::Rank3(p) => AnyTensor::Rank3(p.val()),
        }
    }
}

impl<B: Backend> AnyTensor<B> {
    /// One checkpoint tensor of a parameter of layout `layout` (expert `expert` of a stacked
    /// one), read from the device and laid out as the checkpoint stores it: `(shape, values)`.
    pub fn to_hub(&self, layout: HubLayout, expert: usize) -> (Vec<usize>, Vec<f32>) {
        let host = |data: burn::tensor::TensorData| -> Vec<f32> { data.iter::<f32>().collect() };
        match (self, layout) {
            (Self::Rank1(t), _) => (t.dims().to_vec(), host(t.to_data())),
            (Self::Rank2(t), HubLayout::AsIs) => (t.dims().to_vec(), host(t.to_data())),
            (Self::Rank2(t), _) => {
                let [d_in, d_out] = t.dims();
                (vec![d_out, d_in], transpose(&host(t.to_data()), d_in, d_out))
            }
            (Self::Rank3(t), _) => {
                let [_, d_in, d_out] = t.dims();
                let one = t.clone().narrow(0, expert, 1);
                (vec![d_out, d_in], transpose(&host(one.into_data()), d_in, d_out))
            }
        }
    }
}

/// Row-major `[rows, cols]` -> `[cols, rows]`, in cache-friendly tiles.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_back_to_its_parameter() {
        let config = MixtralConfig::tiny();
        let params = HubParam::all(&config);
        assert_eq!(params.len(), 1 + config.n_layers * 10 + 2);
        for p in params {
            for (x, key) in p.keys(config.n_experts).iter().enumerate() {
                assert_eq!(HubParam::parse(key), Some((p, x)), "{key}");
            }
        }
        assert_eq!(HubParam::parse("model.layers.0.block_sparse_moe.experts.1.w4.weight"), None);
        assert_eq!(HubParam::parse("model.layers.x.input_layernorm.weight"), None);
    }

    #[test]
    fn transpose_is_its_own_inverse() {
        let v: Vec<f32> = (0..35).map(|i| i as f32).collect();
        let t = transpose(&v, 5, 7);
        assert_eq!(t[1], 7.0); // [0, 1] of the transpose is [1, 0] of the original
        assert_eq!(transpose(&t, 7, 5), v);
    }
}
