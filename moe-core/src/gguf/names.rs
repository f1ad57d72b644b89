//! The one table between GGUF tensor names (llama.cpp's `llama` architecture, which Mixtral
//! and dense Mistral/Llama files use) and this crate's [`ParamId`]s, and llama.cpp's q/k row
//! order.
//!
//! | GGUF tensor                                  | [`ParamId`] (part)           |
//! |----------------------------------------------|-------------------------------|
//! | `token_embd.weight`                          | `Embedding`                   |
//! | `blk.N.attn_norm.weight`                     | `InputNorm(N)`                |
//! | `blk.N.attn_{q,k,v,output}.weight`           | `Attention(N, Q/K/V/O)`       |
//! | `blk.N.ffn_norm.weight`                      | `PostAttentionNorm(N)`        |
//! | `blk.N.ffn_gate_inp.weight`                  | `Router(N)`                   |
//! | `blk.N.ffn_gate_exps.weight` `[E, F, D]`, or `blk.N.ffn_gate.X.weight` | `Expert(N, X, GateUp)` (0) |
//! | `blk.N.ffn_up_exps.weight`, or `blk.N.ffn_up.X.weight`                | `Expert(N, X, GateUp)` (1) |
//! | `blk.N.ffn_down_exps.weight`, or `blk.N.ffn_down.X.weight`            | `Expert(N, X, Down)`       |
//! | `blk.N.ffn_{gate,up}.weight` (a dense model's)                         | `Mlp(N, GateUp)` (0, 1)    |
//! | `blk.N.ffn_down.weight` (a dense model's)                              | `Mlp(N, Down)`             |
//! | `output_norm.weight`                         | `FinalNorm`                   |
//! | `output.weight` (absent when tied)           | `LmHead`                      |
//!
//! Shapes are the Hub's (`[out, in]`, GGUF dims reversed). Newer files merge each layer's
//! experts into one 3-D tensor (`_exps`), older ones store one tensor per expert; both are read.
//!
//! llama.cpp rotates interleaved pairs `(2i, 2i + 1)`, transformers rotate-half pairs
//! `(i, i + Dh/2)`: its converter reorders the rows of `attn_q` and `attn_k` within each head so
//! that both compute the same function. [`permute_rows`] applies and undoes that reordering.

use crate::model::{AttentionProj, ExpertProj, ParamId};

/// Where the values of one Hub tensor sit in a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufSource {
    /// The GGUF tensor.
    pub tensor: String,
    /// For a merged experts tensor `[E, rows, cols]`: which expert's `[rows, cols]` slice.
    pub expert: Option<usize>,
    /// For `attn_q` / `attn_k`: heads whose rows llama.cpp reordered.
    pub permuted_heads: Option<usize>,
}

/// The GGUF source of part `part` of `param`; `merged` picks the `_exps` layout for experts.
/// `n_heads`/`n_kv_heads` are the config's.
pub fn gguf_source(param: ParamId, part: usize, merged: bool, n_heads: usize, n_kv_heads: usize) -> GgufSource {
    let plain = |tensor: String| GgufSource { tensor, expert: None, permuted_heads: None };
    match param {
        ParamId::Embedding => plain("token_embd.weight".into()),
        ParamId::FinalNorm => plain("output_norm.weight".into()),
        ParamId::LmHead => plain("output.weight".into()),
        ParamId::InputNorm(n) => plain(format!("blk.{n}.attn_norm.weight")),
        ParamId::PostAttentionNorm(n) => plain(format!("blk.{n}.ffn_norm.weight")),
        ParamId::Router(n) => plain(format!("blk.{n}.ffn_gate_inp.weight")),
        // llama.cpp's names for DeepSeek / Qwen-MoE tensors (its `llama` architecture has none).
        ParamId::RouterBias(n) => plain(format!("blk.{n}.exp_probs_b.bias")),
        ParamId::SharedExpertGate(n) => plain(format!("blk.{n}.ffn_gate_inp_shexp.weight")),
        // Training-only weights that no GGUF runtime reads; never written (see `save_gguf`).
        ParamId::RouterNoise(n) => plain(format!("blk.{n}.ffn_gate_inp_noise.weight")),
        // llama.cpp's dense FFN.
        ParamId::Mlp(n, p) => plain(match (p, part) {
            (ExpertProj::GateUp, 0) => format!("blk.{n}.ffn_gate.weight"),
            (ExpertProj::GateUp, _) => format!("blk.{n}.ffn_up.weight"),
            (ExpertProj::Down, _) => format!("blk.{n}.ffn_down.weight"),
        }),
        ParamId::SharedExpert(n, p) => plain(match (p, part) {
            (ExpertProj::GateUp, 0) => format!("blk.{n}.ffn_gate_shexp.weight"),
            (ExpertProj::GateUp, _) => format!("blk.{n}.ffn_up_shexp.weight"),
            (ExpertProj::Down, _) => format!("blk.{n}.ffn_down_shexp.weight"),
        }),
        ParamId::Attention(n, p) => {
            let (name, heads) = match p {
                AttentionProj::Q => ("attn_q", Some(n_heads)),
                AttentionProj::K => ("attn_k", Some(n_kv_heads)),
                AttentionProj::V => ("attn_v", None),
                AttentionProj::O => ("attn_output", None),
            };
            GgufSource { tensor: format!("blk.{n}.{name}.weight"), expert: None, permuted_heads: heads }
        }
        // llama.cpp's names in its `qwen2moe`, `qwen3moe` and `olmoe` architectures.
        ParamId::AttentionBias(n, p) => plain(match p {
            AttentionProj::Q => format!("blk.{n}.attn_q.bias"),
            AttentionProj::K => format!("blk.{n}.attn_k.bias"),
            AttentionProj::V => format!("blk.{n}.attn_v.bias"),
            AttentionProj::O => format!("blk.{n}.attn_output.bias"),
        }),
        ParamId::QNorm(n) => plain(format!("blk.{n}.attn_q_norm.weight")),
        ParamId::KNorm(n) => plain(format!("blk.{n}.attn_k_norm.weight")),
        ParamId::Expert(n, x, p) => {
            let ffn = match (p, part) {
                (ExpertProj::GateUp, 0) => "ffn_gate",
                (ExpertProj::GateUp, _) => "ffn_up",
                (ExpertProj::Down, _) => "ffn_down",
            };
            if merged {
                GgufSource { tensor: format!("blk.{n}.{ffn}_exps.weight"), expert: Some(x), permuted_heads: None }
            } else {
                plain(format!("blk.{n}.{ffn}.{x}.weight"))
            }
        }
    }
}

/// Reorders the rows of a `[heads * Dh, cols]` q or k weight between the Hub's rotate-half
/// order and llama.cpp's interleaved one: Hub row `h*Dh + j*Dh/2 + i` is GGUF row
/// `h*Dh + 2i + j` (`j` in 0..2, `i` < Dh/2). `to_gguf` picks the direction. `None` when the
/// rows are not `heads` heads of even size.
pub fn permute_rows(values: &[f32], heads: usize, cols: usize, to_gguf: bool) -> Option<Vec<f32>> {
    let rows = values.len().checked_div(cols)?;
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) || rows * cols != values.len() {
        return None;
    }
    let (dh, half) = (rows / heads, rows / heads / 2);
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let (hub, gguf) = (h * dh + j * half + i, h * dh + 2 * i + j);
                let (from, to) = if to_gguf { (hub, gguf) } else { (gguf, hub) };
                out[to * cols..(to + 1) * cols].copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_llama_cpp_and_inverts() {
        // One head of size 4, one column: Hub rows [a0 a1 b0 b1] (halves a, b) are interleaved
        // as [a0 b0 a1 b1], as convert_hf_to_gguf.py's `permute` writes them.
        let hub = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0, 30.0, 31.0];
        let gguf = permute_rows(&hub, 2, 1, true).unwrap();
        assert_eq!(gguf, [0.0, 10.0, 1.0, 11.0, 20.0, 30.0, 21.0, 31.0]);
        assert_eq!(permute_rows(&gguf, 2, 1, false).unwrap(), hub);
        let wide: Vec<f32> = (0..48).map(|v| v as f32).collect();
        assert_eq!(permute_rows(&permute_rows(&wide, 3, 2, true).unwrap(), 3, 2, false).unwrap(), wide);
        assert_eq!(permute_rows(&wide, 5, 2, true), None);
    }

    #[test]
    fn experts_have_both_layouts() {
        let p = ParamId::Expert(3, 5, ExpertProj::GateUp);
        assert_eq!(gguf_source(p, 1, true, 8, 2).tensor, "blk.3.ffn_up_exps.weight");
        assert_eq!(gguf_source(p, 1, true, 8, 2).expert, Some(5));
        assert_eq!(gguf_source(p, 0, false, 8, 2).tensor, "blk.3.ffn_gate.5.weight");
        let k = gguf_source(ParamId::Attention(0, AttentionProj::K), 0, true, 8, 2);
        assert_eq!((k.tensor.as_str(), k.permuted_heads), ("blk.0.attn_k.weight", Some(2)));
    }
}
