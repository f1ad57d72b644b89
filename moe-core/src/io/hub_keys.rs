//! The one table between HuggingFace Hub checkpoint keys and the model's parameters
//! ([`ParamId`], the model's own list of them).
//!
//! Import, export and the gradient tests all go through it: [`HubKeys::keys`],
//! [`HubKeys::layout`] and [`parse_hub_key`] say, once, which checkpoint tensor is which
//! parameter and how it is laid out.
//!
//! | checkpoint key                                            | [`ParamId`]                | layout |
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

use burn::tensor::backend::Backend;

use crate::config::MixtralConfig;
use crate::model::{AnyTensor, AttentionProj, ExpertProj, ParamId};

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

/// A parameter's names and layout in a Hub checkpoint (implemented for [`ParamId`]).
pub trait HubKeys: Copy {
    /// How the checkpoint lays this parameter out.
    fn layout(self) -> HubLayout;
    /// The checkpoint key of the parameter, or of part `part` of a fused one.
    fn key(self, part: usize) -> String;
    /// Its checkpoint keys: one, or the parts of a fused parameter in order.
    fn keys(self) -> Vec<String> {
        match self.layout() {
            HubLayout::FusedLinear => vec![self.key(0), self.key(1)],
            _ => vec![self.key(0)],
        }
    }
    /// The shape of one checkpoint tensor of this parameter in a model of shape `config`.
    fn hub_shape(self, config: &MixtralConfig) -> Vec<usize>;
}

impl HubKeys for ParamId {
    /// How the checkpoint lays this parameter out.
    fn layout(self) -> HubLayout {
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
    fn key(self, part: usize) -> String {
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

    /// The shape of one checkpoint tensor of this parameter.
    fn hub_shape(self, config: &MixtralConfig) -> Vec<usize> {
        let shape = self.shape(config);
        match self.layout() {
            HubLayout::AsIs => shape,
            HubLayout::Linear => vec![shape[1], shape[0]],
            HubLayout::FusedLinear => vec![shape[1] / 2, shape[0]],
        }
    }
}

/// The parameter (and, for a fused one, the part) a checkpoint key names.
pub fn parse_hub_key(key: &str) -> Option<(ParamId, usize)> {
    use AttentionProj::*;
    use ExpertProj::*;
    let parts: Vec<&str> = key.split('.').collect();
    let param = match parts.as_slice() {
        ["model", "embed_tokens", "weight"] => ParamId::Embedding,
        ["model", "norm", "weight"] => ParamId::FinalNorm,
        ["lm_head", "weight"] => ParamId::LmHead,
        ["model", "layers", n, rest @ ..] => {
            let n: usize = n.parse().ok()?;
            match rest {
                ["input_layernorm", "weight"] => ParamId::InputNorm(n),
                ["post_attention_layernorm", "weight"] => ParamId::PostAttentionNorm(n),
                ["self_attn", proj, "weight"] => ParamId::Attention(
                    n,
                    match *proj {
                        "q_proj" => Q,
                        "k_proj" => K,
                        "v_proj" => V,
                        "o_proj" => O,
                        _ => return None,
                    },
                ),
                ["block_sparse_moe", "gate", "weight"] => ParamId::Router(n),
                ["block_sparse_moe", "gate", "e_score_correction_bias"] => ParamId::RouterBias(n),
                ["block_sparse_moe", "gate_noise", "weight"] => ParamId::RouterNoise(n),
                ["block_sparse_moe", "shared_expert_gate", "weight"] => ParamId::SharedExpertGate(n),
                ["mlp", proj, "weight"] => {
                    let (proj, part) = match *proj {
                        "gate_proj" => (GateUp, 0),
                        "up_proj" => (GateUp, 1),
                        "down_proj" => (Down, 0),
                        _ => return None,
                    };
                    return Some((ParamId::Mlp(n, proj), part));
                }
                ["block_sparse_moe", "shared_experts", w, "weight"] => {
                    let (proj, part) = match *w {
                        "w1" => (GateUp, 0),
                        "w3" => (GateUp, 1),
                        "w2" => (Down, 0),
                        _ => return None,
                    };
                    return Some((ParamId::SharedExpert(n, proj), part));
                }
                ["block_sparse_moe", "experts", x, w, "weight"] => {
                    let x = x.parse().ok()?;
                    let (proj, part) = match *w {
                        "w1" => (GateUp, 0),
                        "w3" => (GateUp, 1),
                        "w2" => (Down, 0),
                        _ => return None,
                    };
                    return Some((ParamId::Expert(n, x, proj), part));
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    Some((param, 0))
}

/// One checkpoint tensor of a parameter's value or gradient `t`, of layout `layout` (part
/// `part` of a fused one), read from the device and laid out as the checkpoint stores it:
/// `(shape, values)`.
pub fn hub_tensor<B: Backend>(t: &AnyTensor<B>, layout: HubLayout, part: usize) -> (Vec<usize>, Vec<f32>) {
    let host = |data: burn::tensor::TensorData| -> Vec<f32> { data.iter::<f32>().collect() };
    match (t, layout) {
        (AnyTensor::Rank1(t), _) => (t.dims().to_vec(), host(t.to_data())),
        (AnyTensor::Rank2(t), HubLayout::AsIs) => (t.dims().to_vec(), host(t.to_data())),
        (AnyTensor::Rank2(t), HubLayout::Linear) => {
            let [d_in, d_out] = t.dims();
            (vec![d_out, d_in], transpose(&host(t.to_data()), d_in, d_out))
        }
        (AnyTensor::Rank2(t), HubLayout::FusedLinear) => {
            let [d_in, both] = t.dims();
            let d_out = both / 2;
            let one = t.clone().narrow(1, part * d_out, d_out);
            (vec![d_out, d_in], transpose(&host(one.into_data()), d_in, d_out))
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
        let params = ParamId::all(&config);
        assert_eq!(params.len(), 1 + config.n_layers * (7 + 2 * config.n_experts) + 2);
        for p in params {
            for (x, key) in p.keys().iter().enumerate() {
                assert_eq!(parse_hub_key(key), Some((p, x)), "{key}");
            }
        }
        assert_eq!(parse_hub_key("model.layers.0.block_sparse_moe.experts.1.w4.weight"), None);
        assert_eq!(parse_hub_key("model.layers.x.input_layernorm.weight"), None);
    }

    #[test]
    fn transpose_is_its_own_inverse() {
        let v: Vec<f32> = (0..35).map(|i| i as f32).collect();
        let t = transpose(&v, 5, 7);
        assert_eq!(t[1], 7.0); // [0, 1] of the transpose is [1, 0] of the original
        assert_eq!(transpose(&t, 7, 5), v);
    }
}
