//! The one table between HuggingFace Hub checkpoint keys and the model's parameters
//! ([`ParamId`], the model's own list of them), for every [`Family`].
//!
//! Import, export and the gradient tests all go through it: [`HubKeys::keys`],
//! [`HubKeys::layout`] and [`parse_hub_key`] say, once, which checkpoint tensor is which
//! parameter and how it is laid out. `M` is the MoE block's name: `block_sparse_moe` in Mixtral
//! and Granite-MoE, `mlp` in Qwen-MoE and OLMoE.
//!
//! | checkpoint key                                            | [`ParamId`]                | layout |
//! |-----------------------------------------------------------|----------------------------|--------|
//! | `model.embed_tokens.weight` `[V, D]`                      | `Embedding`                | as is |
//! | `model.layers.N.input_layernorm.weight` `[D]`             | `InputNorm(N)`             | as is |
//! | `model.layers.N.self_attn.{q,k,v,o}_proj.weight`          | `Attention(N, Q/K/V/O)`    | Linear |
//! | `model.layers.N.self_attn.{q,k,v,o}_proj.bias`            | `AttentionBias(N, Q/K/V/O)` (`attention.qkv_bias`, `o_bias`) | as is |
//! | `model.layers.N.self_attn.{q,k}_norm.weight`              | `QNorm(N)`, `KNorm(N)` (`attention.qk_norm`) | as is |
//! | `model.layers.N.post_attention_layernorm.weight` `[D]`    | `PostAttentionNorm(N)`     | as is |
//! | `model.layers.N.M.gate.weight` `[E, D]` (Granite: `M.router.layer.weight`) | `Router(N)` | Linear |
//! | Mixtral: `model.layers.N.M.experts.X.w1.weight` `[F, D]`; others: `...experts.X.gate_proj.weight` | `Expert(N, X, GateUp)` `[D, 2F]` | fused Linear, part 0 |
//! | Mixtral: `...experts.X.w3.weight` `[F, D]`; others: `...experts.X.up_proj.weight` | `Expert(N, X, GateUp)` `[D, 2F]` | fused Linear, part 1 |
//! | Mixtral: `...experts.X.w2.weight` `[D, F]`; others: `...experts.X.down_proj.weight` | `Expert(N, X, Down)` `[F, D]` | Linear |
//! | `model.layers.N.M.gate.e_score_correction_bias` `[E]` | `RouterBias(N)` (`routing.expert_bias`) | as is |
//! | `model.layers.N.M.gate_noise.weight` `[E, D]` | `RouterNoise(N)` (`routing.noisy_gating`) | Linear |
//! | Mixtral: `model.layers.N.M.shared_experts.w1/w3/w2.weight`; Qwen2-MoE: `mlp.shared_expert.{gate,up,down}_proj.weight`; others: `M.shared_experts.{gate,up,down}_proj.weight` | `SharedExpert(N, GateUp/Down)` (`routing.n_shared_experts`) | as the experts' |
//! | `model.layers.N.M.shared_expert_gate.weight` `[1, D]` | `SharedExpertGate(N)` (`routing.shared_expert_gate`) | Linear |
//! | `model.layers.N.mlp.gate_proj.weight` `[F, D]` | `Mlp(N, GateUp)` `[D, 2F]` (dense layers) | fused Linear, part 0 |
//! | `model.layers.N.mlp.up_proj.weight` `[F, D]` | `Mlp(N, GateUp)` `[D, 2F]` | fused Linear, part 1 |
//! | `model.layers.N.mlp.down_proj.weight` `[D, F]` | `Mlp(N, Down)` `[F, D]` | Linear |
//! | `model.norm.weight`                                       | `FinalNorm`                | as is |
//! | `lm_head.weight` `[V, D]`                                 | `LmHead` (absent when tied) | Linear |
//!
//! "Linear": PyTorch stores `[out, in]`, Burn's `Linear` `[in, out]`, so the values are
//! transposed both ways. "Fused": two checkpoint tensors of the same input (an expert's gate
//! `w1` and up `w3` projections) are one `[in, 2 * out]` parameter here, side by side along the
//! output axis, in that order.
//!
//! Granite-MoE's checkpoints store each layer's experts stacked (`M.input_linear.weight`
//! `[E, 2F, D]`, `M.output_linear.weight` `[E, D, F]`), and transformers 5 can save any family's
//! that way (`M.experts.gate_up_proj`, `M.experts.down_proj`): [`super::CanonicalKeys`] shows
//! such files under the per-expert keys above, and the exporter writes Granite's stacked.

use burn::tensor::backend::Backend;

use crate::config::{Family, MixtralConfig};
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
    /// The checkpoint key of the parameter, or of part `part` of a fused one, in `family`'s
    /// names.
    fn key(self, part: usize, family: Family) -> String;
    /// Its checkpoint keys: one, or the parts of a fused parameter in order.
    fn keys(self, family: Family) -> Vec<String> {
        match self.layout() {
            HubLayout::FusedLinear => vec![self.key(0, family), self.key(1, family)],
            _ => vec![self.key(0, family)],
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
            | Self::AttentionBias(..)
            | Self::QNorm(_)
            | Self::KNorm(_)
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
    fn key(self, part: usize, family: Family) -> String {
        let attn = |p| match p {
            AttentionProj::Q => "q_proj",
            AttentionProj::K => "k_proj",
            AttentionProj::V => "v_proj",
            AttentionProj::O => "o_proj",
        };
        let moe = match family {
            Family::Mixtral | Family::GraniteMoe => "block_sparse_moe",
            Family::Qwen2Moe | Family::Qwen3Moe | Family::Olmoe => "mlp",
        };
        // An expert's projections: Mixtral's `w1`/`w3`/`w2`, or Llama's MLP names.
        let w = |p| match (family, p, part) {
            (Family::Mixtral, ExpertProj::GateUp, 0) => "w1",
            (Family::Mixtral, ExpertProj::GateUp, _) => "w3",
            (Family::Mixtral, ExpertProj::Down, _) => "w2",
            (_, ExpertProj::GateUp, 0) => "gate_proj",
            (_, ExpertProj::GateUp, _) => "up_proj",
            (_, ExpertProj::Down, _) => "down_proj",
        };
        match self {
            Self::Embedding => "model.embed_tokens.weight".into(),
            Self::InputNorm(n) => format!("model.layers.{n}.input_layernorm.weight"),
            Self::Attention(n, p) => format!("model.layers.{n}.self_attn.{}.weight", attn(p)),
            Self::AttentionBias(n, p) => format!("model.layers.{n}.self_attn.{}.bias", attn(p)),
            Self::QNorm(n) => format!("model.layers.{n}.self_attn.q_norm.weight"),
            Self::KNorm(n) => format!("model.layers.{n}.self_attn.k_norm.weight"),
            Self::PostAttentionNorm(n) => format!("model.layers.{n}.post_attention_layernorm.weight"),
            Self::Router(n) if family == Family::GraniteMoe => format!("model.layers.{n}.{moe}.router.layer.weight"),
            Self::Router(n) => format!("model.layers.{n}.{moe}.gate.weight"),
            Self::Expert(n, x, p) => format!("model.layers.{n}.{moe}.experts.{x}.{}.weight", w(p)),
            Self::RouterBias(n) => format!("model.layers.{n}.{moe}.gate.e_score_correction_bias"),
            Self::RouterNoise(n) => format!("model.layers.{n}.{moe}.gate_noise.weight"),
            Self::SharedExpert(n, p) if family == Family::Qwen2Moe => {
                format!("model.layers.{n}.{moe}.shared_expert.{}.weight", w(p))
            }
            Self::SharedExpert(n, p) => format!("model.layers.{n}.{moe}.shared_experts.{}.weight", w(p)),
            Self::SharedExpertGate(n) => format!("model.layers.{n}.{moe}.shared_expert_gate.weight"),
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

/// The parameter (and, for a fused one, the part) a checkpoint key names, in any family's
/// names (they do not collide).
pub fn parse_hub_key(key: &str) -> Option<(ParamId, usize)> {
    use AttentionProj::*;
    use ExpertProj::*;
    let attn = |proj: &str| match proj {
        "q_proj" => Some(Q),
        "k_proj" => Some(K),
        "v_proj" => Some(V),
        "o_proj" => Some(O),
        _ => None,
    };
    // An FFN's projection in Mixtral's names or Llama's.
    let ffn = |w: &str| match w {
        "w1" | "gate_proj" => Some((GateUp, 0)),
        "w3" | "up_proj" => Some((GateUp, 1)),
        "w2" | "down_proj" => Some((Down, 0)),
        _ => None,
    };
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
                ["self_attn", "q_norm", "weight"] => ParamId::QNorm(n),
                ["self_attn", "k_norm", "weight"] => ParamId::KNorm(n),
                ["self_attn", proj, "weight"] => ParamId::Attention(n, attn(proj)?),
                ["self_attn", proj, "bias"] => ParamId::AttentionBias(n, attn(proj)?),
                ["block_sparse_moe" | "mlp", "gate", "weight"] | ["block_sparse_moe", "router", "layer", "weight"] => {
                    ParamId::Router(n)
                }
                ["block_sparse_moe" | "mlp", "gate", "e_score_correction_bias"] => ParamId::RouterBias(n),
                ["block_sparse_moe" | "mlp", "gate_noise", "weight"] => ParamId::RouterNoise(n),
                ["block_sparse_moe" | "mlp", "shared_expert_gate", "weight"] => ParamId::SharedExpertGate(n),
                ["mlp", proj @ ("gate_proj" | "up_proj" | "down_proj"), "weight"] => {
                    let (proj, part) = ffn(proj)?;
                    return Some((ParamId::Mlp(n, proj), part));
                }
                ["block_sparse_moe" | "mlp", "shared_experts" | "shared_expert", w, "weight"] => {
                    let (proj, part) = ffn(w)?;
                    return Some((ParamId::SharedExpert(n, proj), part));
                }
                ["block_sparse_moe" | "mlp", "experts", x, w, "weight"] => {
                    let (proj, part) = ffn(w)?;
                    return Some((ParamId::Expert(n, x.parse().ok()?, proj), part));
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
        for config in Family::ALL.map(MixtralConfig::tiny_of) {
            for p in ParamId::all(&config) {
                for (x, key) in p.keys(config.family).iter().enumerate() {
                    assert_eq!(parse_hub_key(key), Some((p, x)), "{key}");
                }
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
