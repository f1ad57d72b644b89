//! The model's own table of its parameters: [`ParamId`] names each one, [`Mixtral::param`]
//! and [`Mixtral::param_mut`] reach it, and [`ParamId::all`] lists a model's in checkpoint
//! order. Import, export, GGUF, the conversions and the gradient tests all go through it; the
//! names a file format gives them (Hub keys, llama.cpp's tensor names) are in that format's
//! module (`io::hub_keys`, `gguf::names`).

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::{FeedForward, Mixtral};
use crate::config::MixtralConfig;
use crate::nn::{Projection, QkNorm};

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

/// A parameter of [`Mixtral`] (the Hub checkpoint key of each beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamId {
    /// `model.embed_tokens.weight`
    Embedding,
    /// `model.layers.N.input_layernorm.weight`
    InputNorm(usize),
    /// `model.layers.N.self_attn.*_proj.weight`
    Attention(usize, AttentionProj),
    /// `model.layers.N.self_attn.*_proj.bias` (`attention.qkv_bias`, `attention.o_bias`).
    AttentionBias(usize, AttentionProj),
    /// `model.layers.N.self_attn.q_norm.weight` (`attention.qk_norm`).
    QNorm(usize),
    /// `model.layers.N.self_attn.k_norm.weight` (`attention.qk_norm`).
    KNorm(usize),
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
    /// `model.layers.N.mlp.*_proj.weight`: a dense layer's FFN.
    Mlp(usize, ExpertProj),
    /// `model.norm.weight`
    FinalNorm,
    /// `lm_head.weight` (only when the head is not tied to the embedding).
    LmHead,
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

impl ParamId {
    /// Every parameter of a model of shape `config`, in checkpoint order.
    pub fn all(config: &MixtralConfig) -> Vec<ParamId> {
        use AttentionProj::*;
        use ExpertProj::*;
        let mut out = vec![Self::Embedding];
        for n in 0..config.n_layers {
            out.push(Self::InputNorm(n));
            out.extend([Q, K, V, O].map(|p| Self::Attention(n, p)));
            let a = &config.attention;
            out.extend([Q, K, V].into_iter().filter(|_| a.qkv_bias).map(|p| Self::AttentionBias(n, p)));
            out.extend(a.o_bias.then_some(Self::AttentionBias(n, O)));
            if a.qk_norm != QkNorm::None {
                out.extend([Self::QNorm(n), Self::KNorm(n)]);
            }
            out.push(Self::PostAttentionNorm(n));
            if config.is_dense_layer(n) {
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

    /// The parameter's shape in this crate (Burn layout) for a model of shape `config`.
    pub fn shape(self, config: &MixtralConfig) -> Vec<usize> {
        let c = config;
        let (d, f, e) = (c.d_model, c.d_ff, c.n_experts);
        let (q, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let whole = c.attention.qk_norm == QkNorm::Whole;
        match self {
            Self::Embedding => vec![c.vocab_size, d],
            Self::InputNorm(_) | Self::PostAttentionNorm(_) | Self::FinalNorm => vec![d],
            Self::Attention(_, AttentionProj::Q) => vec![d, q],
            Self::Attention(_, AttentionProj::K | AttentionProj::V) => vec![d, kv],
            Self::Attention(_, AttentionProj::O) => vec![q, d],
            Self::AttentionBias(_, AttentionProj::Q) => vec![q],
            Self::AttentionBias(_, AttentionProj::K | AttentionProj::V) => vec![kv],
            Self::AttentionBias(_, AttentionProj::O) => vec![d],
            Self::QNorm(_) => vec![if whole { q } else { c.head_dim }],
            Self::KNorm(_) => vec![if whole { kv } else { c.head_dim }],
            Self::Router(_) | Self::RouterNoise(_) => vec![d, e],
            Self::Expert(.., ExpertProj::GateUp) => vec![d, 2 * f],
            Self::Expert(.., ExpertProj::Down) => vec![f, d],
            Self::Mlp(_, ExpertProj::GateUp) => vec![d, 2 * c.dense_width()],
            Self::Mlp(_, ExpertProj::Down) => vec![c.dense_width(), d],
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
}

/// Selects the field of `$model` that a [`ParamId`] names, borrowed with `$($borrow)+`
/// (`&` or `&mut`) and wrapped in `$wrap::Rank*`. Written once for both borrows, so the
/// mapping exists in one place.
macro_rules! select_param {
    ($model:expr, $param:expr, $wrap:ident, $($borrow:tt)+) => {{
        let model = $model;
        let layer = match $param {
            ParamId::InputNorm(n)
            | ParamId::Attention(n, _)
            | ParamId::AttentionBias(n, _)
            | ParamId::QNorm(n)
            | ParamId::KNorm(n)
            | ParamId::PostAttentionNorm(n)
            | ParamId::Router(n)
            | ParamId::RouterBias(n)
            | ParamId::RouterNoise(n)
            | ParamId::SharedExpert(n, _)
            | ParamId::SharedExpertGate(n)
            | ParamId::Mlp(n, _)
            | ParamId::Expert(n, ..) => Some(n),
            _ => None,
        };
        let expert_missing = match $param {
            ParamId::Expert(n, x, _) => {
                model.layers.get(n).is_some_and(|l| l.moe().is_none_or(|moe| x >= moe.experts.ffns.len()))
            }
            _ => false,
        };
        if layer.is_some_and(|n| n >= model.layers.len()) || expert_missing {
            None
        } else {
            match $param {
                ParamId::Embedding => Some($wrap::Rank2($($borrow)+ model.embed_tokens.weight)),
                ParamId::FinalNorm => Some($wrap::Rank1($($borrow)+ model.norm.weight)),
                ParamId::LmHead => match $($borrow)+ model.lm_head {
                    Some(head) => Some($wrap::Rank2($($borrow)+ head.weight)),
                    None => None,
                },
                ParamId::InputNorm(n) => Some($wrap::Rank1($($borrow)+ model.layers[n].input_layernorm.weight)),
                ParamId::PostAttentionNorm(n) => {
                    Some($wrap::Rank1($($borrow)+ model.layers[n].post_attention_layernorm.weight))
                }
                ParamId::Attention(n, p) => {
                    let attn = $($borrow)+ model.layers[n].self_attn;
                    Some($wrap::Rank2(match p {
                        AttentionProj::Q => $($borrow)+ attn.q_proj.weight,
                        AttentionProj::K => $($borrow)+ attn.k_proj.weight,
                        AttentionProj::V => $($borrow)+ attn.v_proj.weight,
                        AttentionProj::O => $($borrow)+ attn.o_proj.weight,
                    }))
                }
                ParamId::AttentionBias(n, p) => {
                    let attn = $($borrow)+ model.layers[n].self_attn;
                    let bias = match p {
                        AttentionProj::Q => $($borrow)+ attn.q_proj.bias,
                        AttentionProj::K => $($borrow)+ attn.k_proj.bias,
                        AttentionProj::V => $($borrow)+ attn.v_proj.bias,
                        AttentionProj::O => $($borrow)+ attn.o_proj.bias,
                    };
                    match bias {
                        Some(bias) => Some($wrap::Rank1(bias)),
                        None => None,
                    }
                }
                ParamId::QNorm(n) => match $($borrow)+ model.layers[n].self_attn.q_norm {
                    Some(norm) => Some($wrap::Rank1($($borrow)+ norm.weight)),
                    None => None,
                },
                ParamId::KNorm(n) => match $($borrow)+ model.layers[n].self_attn.k_norm {
                    Some(norm) => Some($wrap::Rank1($($borrow)+ norm.weight)),
                    None => None,
                },
                ParamId::Mlp(n, p) => match $($borrow)+ model.layers[n].feed_forward {
                    FeedForward::Dense(ffn) => Some($wrap::Rank2(match p {
                        ExpertProj::GateUp => $($borrow)+ ffn.gate_up.weight,
                        ExpertProj::Down => $($borrow)+ ffn.down.weight,
                    })),
                    FeedForward::Sparse(_) => None,
                },
                ParamId::Router(n)
                | ParamId::Expert(n, ..)
                | ParamId::RouterBias(n)
                | ParamId::RouterNoise(n)
                | ParamId::SharedExpert(n, _)
                | ParamId::SharedExpertGate(n) => match $($borrow)+ model.layers[n].feed_forward {
                    FeedForward::Dense(_) => None,
                    FeedForward::Sparse(moe) => match $param {
                        ParamId::Router(_) => Some($wrap::Rank2($($borrow)+ moe.router.gate.weight)),
                        ParamId::Expert(_, x, p) => {
                            let ffn = $($borrow)+ moe.experts.ffns[x];
                            Some($wrap::Rank2(match p {
                                ExpertProj::GateUp => $($borrow)+ ffn.gate_up.weight,
                                ExpertProj::Down => $($borrow)+ ffn.down.weight,
                            }))
                        }
                        ParamId::RouterBias(_) => match $($borrow)+ moe.router.bias {
                            Some(bias) => Some($wrap::Rank1(bias)),
                            None => None,
                        },
                        ParamId::RouterNoise(_) => match $($borrow)+ moe.router.noise {
                            Some(noise) => Some($wrap::Rank2($($borrow)+ noise.weight)),
                            None => None,
                        },
                        ParamId::SharedExpert(_, p) => match $($borrow)+ moe.shared {
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
    /// The parameter a [`ParamId`] names; `None` for the LM head of a tied model or a layer
    /// the model does not have.
    pub fn param(&self, param: ParamId) -> Option<ParamRef<'_, B>> {
        select_param!(self, param, ParamRef, &)
    }

    /// [`Self::param`], mutably (to replace a parameter while loading).
    pub fn param_mut(&mut self, param: ParamId) -> Option<ParamMut<'_, B>> {
        select_param!(self, param, ParamMut, &mut)
    }

    /// The projection whose weight `param` is (attention, expert, dense FFN, LM head); `None` for other
    /// parameters and for layers or experts the model does not have.
    pub fn projection_mut(&mut self, param: ParamId) -> Option<&mut Projection<B>> {
        match param {
            ParamId::Attention(n, p) => {
                let attn = &mut self.layers.get_mut(n)?.self_attn;
                Some(match p {
                    AttentionProj::Q => &mut attn.q_proj,
                    AttentionProj::K => &mut attn.k_proj,
                    AttentionProj::V => &mut attn.v_proj,
                    AttentionProj::O => &mut attn.o_proj,
                })
            }
            ParamId::Mlp(n, p) => {
                let ffn = self.layers.get_mut(n)?.feed_forward.mlp_mut()?;
                Some(match p {
                    ExpertProj::GateUp => &mut ffn.gate_up,
                    ExpertProj::Down => &mut ffn.down,
                })
            }
            ParamId::Expert(n, x, p) => {
                let ffn = self.layers.get_mut(n)?.moe_mut()?.experts.ffns.get_mut(x)?;
                Some(match p {
                    ExpertProj::GateUp => &mut ffn.gate_up,
                    ExpertProj::Down => &mut ffn.down,
                })
            }
            ParamId::SharedExpert(n, p) => {
                let ffn = &mut self.layers.get_mut(n)?.moe_mut()?.shared.as_mut()?.ffn;
                Some(match p {
                    ExpertProj::GateUp => &mut ffn.gate_up,
                    ExpertProj::Down => &mut ffn.down,
                })
            }
            ParamId::LmHead => self.lm_head.as_mut(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every listed parameter exists in a model of that shape, with the shape the table gives,
    /// and a layer or expert past the model's is `None`.
    #[test]
    fn every_listed_parameter_exists_with_its_shape() {
        type B = burn::backend::NdArray;
        let config = MixtralConfig::tiny();
        let mut model = config.init::<B>(&Default::default());
        for id in ParamId::all(&config) {
            let dims = match model.param(id).unwrap_or_else(|| panic!("{id:?}")) {
                ParamRef::Rank1(p) => p.val().dims().to_vec(),
                ParamRef::Rank2(p) => p.val().dims().to_vec(),
            };
            assert_eq!(dims, id.shape(&config), "{id:?}");
            assert!(model.param_mut(id).is_some(), "{id:?}");
        }
        assert!(model.param(ParamId::InputNorm(config.n_layers)).is_none());
        assert!(model.param(ParamId::Expert(0, config.n_experts, ExpertProj::Down)).is_none());
        assert!(model.projection_mut(ParamId::Expert(0, config.n_experts, ExpertProj::Down)).is_none());
        assert!(model.projection_mut(ParamId::Attention(0, AttentionProj::Q)).is_some());
    }
}
