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
//! | `model.layers.N.block_sparse_moe.experts.X.w1.weight` `[F, D]` | `Expert(N, X, GateUp)` `[D, 2F]` | fused Linear, part 0 |
//! | `model.layers.N.block_sparse_moe.experts.X.w3.weight` `[F, D]` | `Expert(N, X, GateUp)` `[D, 2F]` | fused Linear, part 1 |
//! | `model.layers.N.block_sparse_moe.experts.X.w2.weight` `[D, F]` | `Expert(N, X, Down)` `[F, D]` | Linear |
//! | `model.layers.N.block_sparse_moe.gate.e_score_correction_bias` `[E]` | `RouterBias(N)` (`routing.expert_bias`) | as is |
//! | `model.layers.N.block_sparse_moe.gate_noise.weight` `[E, D]` | `RouterNoise(N)` (`routing.noisy_gating`) | Linear |
//! | `model.layers.N.block_sparse_moe.shared_experts.w1/w3/w2.weight` | `SharedExpert(N, GateUp/Down)` (`routing.n_shared_experts`) | as the experts' |
//! | `model.layers.N.block_sparse_moe.shared_expert_gate.weight` `[1, D]` | `SharedExpertGate(N)` (`routing.shared_expert_gate`) | Linear |
//! | `model.layers.N.mlp.gate_proj.weight` `[F, D]` | `Mlp(N, GateUp)` `[D, 2F]` (dense models) | fused Linear, part 0 |
//! | `model.layers.N.mlp.up_proj.weight` `[F, D]` | `Mlp(N, GateUp)` `[D, 2F]` | fused Linear, part 1 |
//! | `model.layers.N.mlp.down_proj.weight` `[D, F]` | `Mlp(N, Down)` `[F, D]` | Linear |
//! | `model.norm.weight` `[D]`                                 | `FinalNorm`                | as is |
//! | `lm_head.weight` `[V, D]`                                 | `LmHead` (absent when tied) | Linear |
//!
//! "Linear": PyTorch stores `[out, in]`, Burn's `Linear` `[in, out]`, so the values are
//! transposed both ways. "Fused": two checkpoint tensors of the same input (an expert's gate
//! `w1` and up `w3` projections) are one `[in, 2 * out]` parameter here, side by side along the
//! output axis, in that order.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::MixtralConfig;
use crate::model::{FeedForward, Mixtral};
use crate::nn::Projection;

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

/// One of an expert's two parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpertProj {
    /// Gate and up projections `[D, 2F]` (checkpoint `w1` and `w3`).
    GateUp,
    /// Down projection `[F, D]` (checkpoint `w2`).
    Down,
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
    /// `model.layers.N.block_sparse_moe.experts.X.w*.weight`: layer `N`, expert `X`.
    Expert(usize, usize, ExpertProj),
    /// `model.layers.N.block_sparse_moe.gate.e_score_correction_bias`: the selection bias.
    RouterBias(usize),
    /// `model.layers.N.block_sparse_moe.gate_noise.weight`: noisy gating's noise weights.
    RouterNoise(usize),
    /// `model.layers.N.block_sparse_moe.shared_experts.w*.weight`
    SharedExpert(usize, ExpertProj),
    /// `model.layers.N.block_sparse_moe.shared_expert_gate.weight`
    SharedExpertGate(usize),
    /// `model.layers.N.mlp.*_proj.weight`: a dense model's FFN.
    Mlp(usize, ExpertProj),
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
    /// Two PyTorch `Linear` weights `[out, in]` of the same input, one Burn `[in, 2 * out]`
    /// parameter (the first key's outputs first).
    FusedLinear,
}

/// A model parameter of any rank, borrowed.
pub enum ParamRef<'a, B: Backend> {
    /// Norm weights.
    Rank1(&'a Param<Tensor<B, 1>>),
    /// Embedding and linear weights.
    Rank2(&'a Param<Tensor<B, 2>>),
}

/// A model parameter of any rank, mutably borrowed (to load it).
pub enum ParamMut<'a, B: Backend> {
    /// Norm weights.
    Rank1(&'a mut Param<Tensor<B, 1>>),
    /// Embedding and linear weights.
    Rank2(&'a mut Param<Tensor<B, 2>>),
}

/// A tensor of rank 1 or 2: a parameter's value or its gradient.
#[derive(Debug, Clone)]
pub enum AnyTensor<B: Backend> {
    /// Rank 1.
    Rank1(Tensor<B, 1>),
    /// Rank 2.
    Rank2(Tensor<B, 2>),
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
            if config.dense {
                out.extend([GateUp, Down].map(|p| Self::Mlp(n, p)));
                continue;
            }
            out.push(Self::Router(n));
            if config.routing.has_expert_bias() {
                out.push(Self::RouterBias(n));
            }
            if config.routing.noisy_gating {
                out.push(Self::RouterNoise(n));
            }
            for x in 0..config.n_experts {
                out.extend([GateUp, Down].map(|p| Self::Expert(n, x, p)));
            }
            if config.routing.n_shared_experts > 0 {
                out.extend([GateUp, Down].map(|p| Self::SharedExpert(n, p)));
                if config.routing.shared_expert_gate {
                    out.push(Self::SharedExpertGate(n));
                }
            }
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
            Self::Embedding
            | Self::InputNorm(_)
            | Self::PostAttentionNorm(_)
            | Self::FinalNorm
            | Self::RouterBias(_) => HubLayout::AsIs,
            Self::Attention(..)
            | Self::Router(_)
            | Self::RouterNoise(_)
            | Self::LmHead
            | Self::Expert(.., ExpertProj::Down)
            | Self::SharedExpert(_, ExpertProj::Down)
            | Self::Mlp(_, ExpertProj::Down)
            | Self::SharedExpertGate(_) => HubLayout::Linear,
            Self::Expert(.., ExpertProj::GateUp)
            | Self::SharedExpert(_, ExpertProj::GateUp)
            | Self::Mlp(_, ExpertProj::GateUp) => HubLayout::FusedLinear,
        }
    }

    /// The checkpoint key of the parameter, or of part `part` of a fused one.
    pub fn key(self, part: usize) -> String {
        let attn = |p| match p {
            AttentionProj::Q => "q_proj",
            AttentionProj::K => "k_proj",
            AttentionProj::V => "v_proj",
            AttentionProj::O => "o_proj",
        };
        let w = |p| match (p, part) {
            (ExpertProj::GateUp, 0) => "w1",
            (ExpertProj::GateUp, _) => "w3",
            (ExpertProj::Down, _) => "w2",
        };
        match self {
            Self::Embedding => "model.embed_tokens.weight".into(),
            Self::InputNorm(n) => format!("model.layers.{n}.input_layernorm.weight"),
            Self::Attention(n, p) => format!("model.layers.{n}.self_attn.{}.weight", attn(p)),
            Self::PostAttentionNorm(n) => format!("model.layers.{n}.post_attention_layernorm.weight"),
            Self::Router(n) => format!("model.layers.{n}.block_sparse_moe.gate.weight"),
            Self::Expert(n, x, p) => format!("model.layers.{n}.block_sparse_moe.experts.{x}.{}.weight", w(p)),
            Self::RouterBias(n) => format!("model.layers.{n}.block_sparse_moe.gate.e_score_correction_bias"),
            Self::RouterNoise(n) => format!("model.layers.{n}.block_sparse_moe.gate_noise.weight"),
            Self::SharedExpert(n, p) => format!("model.layers.{n}.block_sparse_moe.shared_experts.{}.weight", w(p)),
            Self::SharedExpertGate(n) => format!("model.layers.{n}.block_sparse_moe.shared_expert_gate.weight"),
            Self::Mlp(n, p) => {
                let proj = match (p, part) {
                    (ExpertProj::GateUp, 0) => "gate_proj",
                    (ExpertProj::GateUp, _) => "up_proj",
                    (ExpertProj::Down, _) => "down_proj",
                };
                format!("model.layers.{n}.mlp.{proj}.weight")
            }
            Self::FinalNorm => "model.norm.weight".into(),
            Self::LmHead => "lm_head.weight".into(),
        }
    }

    /// Its checkpoint keys: one, or the parts of a fused parameter in order.
    pub fn keys(self) -> Vec<String> {
        match self.layout() {
            HubLayout::FusedLinear => vec![self.key(0), self.key(1)],
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
            Self::Router(_) | Self::RouterNoise(_) => vec![d, e],
            Self::Expert(.., ExpertProj::GateUp) | Self::Mlp(_, ExpertProj::GateUp) => vec![d, 2 * f],
            Self::Expert(.., ExpertProj::Down) | Self::Mlp(_, ExpertProj::Down) => vec![f, d],
            Self::RouterBias(_) => vec![e],
            Self::SharedExpert(_, p) => {
                let s = c.routing.shared_width(f).unwrap_or(0);
                match p {
                    ExpertProj::GateUp => vec![d, 2 * s],
                    ExpertProj::Down => vec![s, d],
                }
            }
            Self::SharedExpertGate(_) => vec![d, 1],
            Self::LmHead => vec![d, c.vocab_size],
        }
    }

    /// The shape of one checkpoint tensor of this parameter.
    pub fn hub_shape(self, config: &MixtralConfig) -> Vec<usize> {
        let shape = self.shape(config);
        match self.layout() {
            HubLayout::AsIs => shape,
            HubLayout::Linear => vec![shape[1], shape[0]],
            HubLayout::FusedLinear => vec![shape[1] / 2, shape[0]],
        }
    }

    /// The parameter (and, for a fused one, the part) a checkpoint key names.
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
                    ["block_sparse_moe", "gate", "e_score_correction_bias"] => Self::RouterBias(n),
                    ["block_sparse_moe", "gate_noise", "weight"] => Self::RouterNoise(n),
                    ["block_sparse_moe", "shared_expert_gate", "weight"] => Self::SharedExpertGate(n),
                    ["mlp", proj, "weight"] => {
                        let (proj, part) = match *proj {
                            "gate_proj" => (GateUp, 0),
                            "up_proj" => (GateUp, 1),
                            "down_proj" => (Down, 0),
                            _ => return None,
                        };
                        return Some((Self::Mlp(n, proj), part));
                    }
                    ["block_sparse_moe", "shared_experts", w, "weight"] => {
                        let (proj, part) = match *w {
                            "w1" => (GateUp, 0),
                            "w3" => (GateUp, 1),
                            "w2" => (Down, 0),
                            _ => return None,
                        };
                        return Some((Self::SharedExpert(n, proj), part));
                    }
                    ["block_sparse_moe", "experts", x, w, "weight"] => {
                        let x = x.parse().ok()?;
                        let (proj, part) = match *w {
                            "w1" => (GateUp, 0),
                            "w3" => (GateUp, 1),
                            "w2" => (Down, 0),
                            _ => return None,
                        };
                        return Some((Self::Expert(n, x, proj), part));
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
            | HubParam::RouterBias(n)
            | HubParam::RouterNoise(n)
            | HubParam::SharedExpert(n, _)
            | HubParam::SharedExpertGate(n)
            | HubParam::Mlp(n, _)
            | HubParam::Expert(n, ..) => Some(n),
            _ => None,
        };
        let expert_missing = match $param {
            HubParam::Expert(n, x, _) => {
                model.layers.get(n).is_some_and(|l| l.moe().is_none_or(|moe| x >= moe.experts.ffns.len()))
            }
            _ => false,
        };
        if layer.is_some_and(|n| n >= model.layers.len()) || expert_missing {
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
                HubParam::Mlp(n, p) => match $($borrow)+ model.layers[n].feed_forward {
                    FeedForward::Dense(ffn) => Some($wrap::Rank2(match p {
                        ExpertProj::GateUp => $($borrow)+ ffn.gate_up.weight,
                        ExpertProj::Down => $($borrow)+ ffn.down.weight,
                    })),
                    FeedForward::Sparse(_) => None,
                },
                HubParam::Router(n)
                | HubParam::Expert(n, ..)
                | HubParam::RouterBias(n)
                | HubParam::RouterNoise(n)
                | HubParam::SharedExpert(n, _)
                | HubParam::SharedExpertGate(n) => match $($borrow)+ model.layers[n].feed_forward {
                    FeedForward::Dense(_) => None,
                    FeedForward::Sparse(moe) => match $param {
                        HubParam::Router(_) => Some($wrap::Rank2($($borrow)+ moe.router.gate.weight)),
                        HubParam::Expert(_, x, p) => {
                            let ffn = $($borrow)+ moe.experts.ffns[x];
                            Some($wrap::Rank2(match p {
                                ExpertProj::GateUp => $($borrow)+ ffn.gate_up.weight,
                                ExpertProj::Down => $($borrow)+ ffn.down.weight,
                            }))
                        }
                        HubParam::RouterBias(_) => match $($borrow)+ moe.router.bias {
                            Some(bias) => Some($wrap::Rank1(bias)),
                            None => None,
                        },
                        HubParam::RouterNoise(_) => match $($borrow)+ moe.router.noise {
                            Some(noise) => Some($wrap::Rank2($($borrow)+ noise.weight)),
                            None => None,
                        },
                        HubParam::SharedExpert(_, p) => match $($borrow)+ moe.shared {
                            Some(shared) => Some($wrap::Rank2(match p {
                                ExpertProj::GateUp => $($borrow)+ shared.ffn.gate_up.weight,
                                ExpertProj::Down => $($borrow)+ shared.ffn.down.weight,
                            })),
                            None => None,
                        },
                        _ => match $($borrow)+ moe.shared {
                            Some(shared) => match $($borrow)+ shared.gate {
                                Some(gate) => Some($wrap::Rank2($($borrow)+ gate.weight)),
                                None => None,
                            },
                            None => None,
                        },
                    },
                },
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

    /// The projection whose weight `param` is (attention, expert, dense FFN, LM head); `None` for other
    /// parameters and for layers or experts the model does not have.
    pub fn projection_mut(&mut self, param: HubParam) -> Option<&mut Projection<B>> {
        match param {
            HubParam::Attention(n, p) => {
                let attn = &mut self.layers.get_mut(n)?.self_attn;
                Some(match p {
                    AttentionProj::Q => &mut attn.q_proj,
                    AttentionProj::K => &mut attn.k_proj,
                    AttentionProj::V => &mut attn.v_proj,
                    AttentionProj::O => &mut attn.o_proj,
                })
            }
            HubParam::Mlp(n, p) => {
                let ffn = self.layers.get_mut(n)?.feed_forward.mlp_mut()?;
                Some(match p {
                    ExpertProj::GateUp => &mut ffn.gate_up,
                    ExpertProj::Down => &mut ffn.down,
                })
            }
            HubParam::Expert(n, x, p) => {
                let ffn = self.layers.get_mut(n)?.moe_mut()?.experts.ffns.get_mut(x)?;
                Some(match p {
                    ExpertProj::GateUp => &mut ffn.gate_up,
                    ExpertProj::Down => &mut ffn.down,
                })
            }
            HubParam::SharedExpert(n, p) => {
                let ffn = &mut self.layers.get_mut(n)?.moe_mut()?.shared.as_mut()?.ffn;
                Some(match p {
                    ExpertProj::GateUp => &mut ffn.gate_up,
                    ExpertProj::Down => &mut ffn.down,
                })
            }
            HubParam::LmHead => self.lm_head.as_mut(),
            _ => None,
        }
    }
}

impl<B: Backend> ParamRef<'_, B> {
    /// The parameter's current value.
    pub fn value(&self) -> AnyTensor<B> {
        match self {
            Self::Rank1(p) => AnyTensor::Rank1(p.val()),
            Self::Rank2(p) => AnyTensor::Rank2(p.val()),
        }
    }
}

impl<B: Backend> AnyTensor<B> {
    /// One checkpoint tensor of a parameter of layout `layout` (part `part` of a fused one),
    /// read from the device and laid out as the checkpoint stores it: `(shape, values)`.
    pub fn to_hub(&self, layout: HubLayout, part: usize) -> (Vec<usize>, Vec<f32>) {
        let host = |data: burn::tensor::TensorData| -> Vec<f32> { data.iter::<f32>().collect() };
        match (self, layout) {
            (Self::Rank1(t), _) => (t.dims().to_vec(), host(t.to_data())),
            (Self::Rank2(t), HubLayout::AsIs) => (t.dims().to_vec(), host(t.to_data())),
            (Self::Rank2(t), HubLayout::Linear) => {
                let [d_in, d_out] = t.dims();
                (vec![d_out, d_in], transpose(&host(t.to_data()), d_in, d_out))
            }
            (Self::Rank2(t), HubLayout::FusedLinear) => {
                let [d_in, both] = t.dims();
                let d_out = both / 2;
                let one = t.clone().narrow(1, part * d_out, d_out);
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
        assert_eq!(params.len(), 1 + config.n_layers * (7 + 2 * config.n_experts) + 2);
        for p in params {
            for (x, key) in p.keys().iter().enumerate() {
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
