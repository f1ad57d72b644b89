//! GGUF metadata <-> [`MixtralConfig`] (llama.cpp's `llama.*` keys, which Mixtral files use).

use super::{GgufFile, GgufValue};
use crate::config::MixtralConfig;
use crate::error::Result;

/// Architectures whose files describe a Mixtral-shaped model (or, without experts, a dense
/// Llama/Mistral one).
const ARCHITECTURES: [&str; 2] = ["llama", "mixtral"];

/// The model shape a GGUF file describes, validated.
///
/// Reads `general.architecture` (`llama`, as llama.cpp writes Mixtral) and its
/// `{arch}.block_count`, `embedding_length`, `feed_forward_length`, `attention.head_count(_kv)`,
/// `attention.key_length`, `expert_count`, `expert_used_count`, `context_length`,
/// `rope.freq_base`, `attention.layer_norm_rms_epsilon`; the vocabulary size from the
/// embedding; the special ids from `tokenizer.ggml.*`. A file without `expert_count` (or with
/// 0) is a dense model ([`MixtralConfig::dense`]). A file with RoPE scaling or partial rotary
/// dimensions, or whose vocabulary disagrees with its embedding, is an error naming the key.
pub fn mixtral_config(file: &GgufFile) -> Result<MixtralConfig> {
    let arch = file
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| file.error("no `general.architecture` string: not a model file"))?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(file.error(format!(
            "architecture `{arch}` is not one this crate runs (Mixtral-style: {})",
            ARCHITECTURES.join(", ")
        )));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let uint = |k: &str| -> Result<Option<usize>> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| file.error(format!("`{}` is {v}, not a non-negative integer", key(k)))),
        }
    };
    let need = |k: &str| uint(k)?.ok_or_else(|| file.error(format!("missing metadata `{}`", key(k))));
    let float = |k: &str, default: f64| -> Result<f64> {
        match file.get(&key(k)) {
            None => Ok(default),
            // f32 in the file: take the shortest decimal that rounds to it (1e-5, not
            // 9.99999974738e-6), the value the file's writer meant.
            Some(GgufValue::F32(v)) => Ok(v.to_string().parse().expect("a float prints as a float")),
            Some(v) => v.as_f64().ok_or_else(|| file.error(format!("`{}` is {v}, not a number", key(k)))),
        }
    };

    // No experts: a dense Llama/Mistral, one FFN per layer (`blk.N.ffn_{gate,up,down}`).
    let n_experts = uint("expert_count")?.unwrap_or(0);
    let dense = n_experts == 0;
    if dense && file.tensor("blk.0.ffn_gate_inp.weight").is_some() {
        return Err(file.error(format!(
            "`{}` is missing or 0, yet the file has routers (`blk.0.ffn_gate_inp.weight`): a MoE without its \
             expert count",
            key("expert_count")
        )));
    }
    if let Some(scaling) = file.get(&key("rope.scaling.type")).and_then(GgufValue::as_str) {
        if scaling != "none" {
            return Err(file.error(format!("RoPE scaling `{scaling}` is not supported")));
        }
    }
    let d_model = need("embedding_length")?;
    let n_heads = need("attention.head_count")?;
    let head_dim = match uint("attention.key_length")? {
        Some(d) => d,
        None => d_model.checked_div(n_heads).unwrap_or(0),
    };
    let embedding = file.tensor("token_embd.weight").ok_or_else(|| file.error("no `token_embd.weight` tensor"))?;
    let vocab_size = *embedding.shape().first().expect("tensors have at least one dimension");
    if let Some(tokens) = file.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array) {
        if tokens.len() != vocab_size {
            return Err(file.error(format!(
                "the vocabulary (`tokenizer.ggml.tokens`) has {} tokens but the embedding {vocab_size} rows",
                tokens.len()
            )));
        }
    }
    let id = |k: &str| -> Result<Option<u32>> {
        match file.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| file.error(format!("`{k}` is {v}, not a token id"))),
        }
    };
    let config = MixtralConfig {
        vocab_size,
        d_model,
        d_ff: match uint("expert_feed_forward_length")? {
            Some(f) => f,
            None => need("feed_forward_length")?,
        },
        n_layers: need("block_count")?,
        n_heads,
        n_kv_heads: uint("attention.head_count_kv")?.unwrap_or(n_heads),
        head_dim,
        n_experts: n_experts.max(1),
        top_k: if dense { 1 } else { need("expert_used_count")? },
        max_seq_len: need("context_length")?,
        rope_theta: float("rope.freq_base", 10_000.0)?,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5)?,
        // Not a llama.cpp key: this crate writes it for models trained with a window (llama.cpp
        // ignores it, as it ignores Mistral's window).
        sliding_window: uint("attention.sliding_window")?,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        router_aux_loss_coef: MixtralConfig::tiny().router_aux_loss_coef,
        bos_token_id: id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
        pad_token_id: id("tokenizer.ggml.padding_token_id")?,
        // llama.cpp's `llama` architecture renormalises the top-k weights and never jitters.
        routing: Default::default(),
        dense,
        family: crate::config::Family::Mixtral,
        attention: Default::default(),
        dense_layers: Vec::new(),
        dense_d_ff: None,
        multipliers: Default::default(),
    };
    config.validate().map_err(|e| file.error(format!("the metadata describes an invalid model: {e}")))?;
    if let Some(rot) = uint("rope.dimension_count")? {
        if rot != head_dim {
            return Err(file.error(format!(
                "`{}` is {rot} but heads have {head_dim} dimensions: partial rotary embeddings are not supported",
                key("rope.dimension_count")
            )));
        }
    }
    Ok(config)
}

/// The metadata llama.cpp needs to run a model of shape `config` (architecture `llama`; no
/// expert keys for a dense model).
pub fn mixtral_metadata(config: &MixtralConfig, name: &str) -> Vec<(String, GgufValue)> {
    let c = config;
    let u = |v: usize| GgufValue::U32(u32::try_from(v).unwrap_or(u32::MAX));
    let mut out = vec![
        ("general.architecture".to_string(), GgufValue::String("llama".into())),
        ("general.name".to_string(), GgufValue::String(name.into())),
    ];
    let llama = [
        ("context_length", u(c.max_seq_len)),
        ("embedding_length", u(c.d_model)),
        ("block_count", u(c.n_layers)),
        ("feed_forward_length", u(c.d_ff)),
        ("rope.dimension_count", u(c.head_dim)),
        ("attention.head_count", u(c.n_heads)),
        ("attention.head_count_kv", u(c.n_kv_heads)),
        ("attention.key_length", u(c.head_dim)),
        ("attention.value_length", u(c.head_dim)),
        ("attention.layer_norm_rms_epsilon", GgufValue::F32(c.rms_norm_eps as f32)),
        ("rope.freq_base", GgufValue::F32(c.rope_theta as f32)),
        ("vocab_size", u(c.vocab_size)),
    ];
    out.extend(llama.into_iter().map(|(k, v)| (format!("llama.{k}"), v)));
    // llama.cpp reads a file without these as a dense model.
    if !c.dense {
        out.push(("llama.expert_count".into(), u(c.n_experts)));
        out.push(("llama.expert_used_count".into(), u(c.top_k)));
    }
    if let Some(w) = c.sliding_window {
        out.push(("llama.attention.sliding_window".into(), u(w)));
    }
    let ids = [
        ("tokenizer.ggml.bos_token_id", c.bos_token_id),
        ("tokenizer.ggml.eos_token_id", c.eos_token_ids.first().copied()),
        ("tokenizer.ggml.padding_token_id", c.pad_token_id),
    ];
    out.extend(ids.into_iter().filter_map(|(k, id)| Some((k.to_string(), GgufValue::U32(id?)))));
    out
}
