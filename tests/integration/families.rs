//! Qwen2-MoE, Qwen3-MoE, OLMoE and Granite-MoE against transformers (`make_family_fixtures.py`):
//! forward, every gradient, greedy generation, the stacked expert layouts, export in each
//! family's own names, and bad configs.

use std::collections::BTreeSet;

use moe_core::config::{Family, MixtralConfig};
use moe_core::io::{load_hub_checkpoint, save_hub_checkpoint, HubWeights, WeightDtype};
use moe_infer::{generate, GenerationConfig, SamplingConfig};

use crate::common::*;
use crate::gradients::check_gradients;
use crate::parity::check_model;

#[test]
fn every_family_matches_transformers_forward_and_backward() {
    for name in FAMILY_MODELS {
        // The bound for f32 fixtures, tighter than `check_model`'s shared one.
        let diff = check_model(name);
        assert!(diff <= 1e-5, "{name}: logits max-abs diff {diff}");
        check_gradients(name);
    }
}

#[test]
fn every_family_generates_what_transformers_generates() {
    let device = Default::default();
    for name in FAMILY_MODELS {
        let model = load_hub_checkpoint::<Cpu>(fixture(name), &device).unwrap();
        let reference = Reference::load(name);
        let prompt: Vec<u32> = reference.i64("gen_prompt").1.iter().map(|&t| t as u32).collect();
        let want: Vec<u32> = reference.i64("gen_tokens").1.iter().map(|&t| t as u32).collect();
        let greedy = GenerationConfig {
            max_new_tokens: want.len() - prompt.len(),
            sampling: SamplingConfig::default(),
            stop_tokens: vec![],
        };
        let out = generate(&model, std::slice::from_ref(&prompt), &greedy, |_, _| true).unwrap();
        assert_eq!(out.sequences[0], want, "{name}");
    }
}

#[test]
fn configs_name_their_family_and_its_options() {
    let config = |name: &str| MixtralConfig::from_hf_file(fixture(name).join("config.json")).unwrap();
    let qwen2 = config("tiny-qwen2-moe");
    assert_eq!(qwen2.family, Family::Qwen2Moe);
    assert_eq!((qwen2.d_ff, qwen2.dense_d_ff, qwen2.dense_layers.clone()), (128, Some(160), vec![1]));
    assert!(qwen2.attention.qkv_bias && !qwen2.attention.o_bias);
    assert!(qwen2.routing.shared_expert_gate && !qwen2.routing.normalize_top_k);
    assert_eq!(qwen2.routing.shared_width(qwen2.d_ff), Some(96));
    let granite = config("tiny-granitemoe");
    assert_eq!((granite.multipliers.embedding, granite.multipliers.residual), (6.0, 0.5));
    assert_eq!((granite.attention.scale, granite.multipliers.logits_scaling), (Some(0.2), 4.0));
    assert_eq!(config("tiny-olmoe").attention.clip_qkv, Some(0.25));
    // The fixtures have `MixtralConfig::tiny_of`'s shapes (what `moe-train --arch` trains).
    for (name, family) in
        FAMILY_MODELS.into_iter().zip([Family::Qwen2Moe, Family::Qwen3Moe, Family::Olmoe, Family::GraniteMoe])
    {
        let (got, tiny) = (config(name), MixtralConfig::tiny_of(family));
        assert!(!got.shape_differs(&MixtralConfig { attention: got.attention, ..tiny }), "{name}");
    }
}

/// transformers 5's `save_original_format=False` layout (`mlp.experts.gate_up_proj` `[E, 2F, D]`)
/// loads as the same model as the per-expert one.
#[test]
fn stacked_experts_of_transformers_5_load_as_the_per_expert_checkpoint() {
    let device = Default::default();
    let per_expert = load_hub_checkpoint::<Cpu>(fixture("tiny-qwen3-moe"), &device).unwrap();
    let fused = load_hub_checkpoint::<Cpu>(fixture("tiny-qwen3-moe").join("fused"), &device).unwrap();
    let ids = Reference::load("tiny-qwen3-moe").input_ids::<Cpu>(&device);
    let (a, b) = (per_expert.forward(ids.clone()).logits, fused.forward(ids).logits);
    assert_eq!(max_abs_diff(&host(a), &host(b)), 0.0);
}

/// Export writes each family's own layout (the same tensor names transformers saved, Granite's
/// stacked experts included) and a config.json of its `model_type`; both load back to the same
/// logits.
#[test]
fn export_writes_each_family_in_its_own_names() {
    let device = Default::default();
    for name in FAMILY_MODELS {
        let model = load_hub_checkpoint::<Cpu>(fixture(name), &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_hub_checkpoint(&model, dir.path(), WeightDtype::F32).unwrap();
        let names = |d: &std::path::Path| -> BTreeSet<String> {
            HubWeights::open(d).unwrap().names().map(str::to_string).collect()
        };
        assert_eq!(names(dir.path()), names(&fixture(name)), "{name}");
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
        let original: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap()).unwrap();
        assert_eq!(written["model_type"], original["model_type"], "{name}");
        let reloaded = load_hub_checkpoint::<Cpu>(dir.path(), &device).unwrap();
        assert_eq!(reloaded.config(), model.config(), "{name}");
        let ids = Reference::load(name).input_ids::<Cpu>(&device);
        let (a, b) = (model.forward(ids.clone()).logits, reloaded.forward(ids).logits);
        assert_eq!(max_abs_diff(&host(a), &host(b)), 0.0, "{name}");
    }
}

/// A copy of fixture `name` whose config.json has `edit` applied.
fn with_config(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(name).join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn bad_family_configs_and_layouts_are_named() {
    let device = Default::default();
    let err = |name: &str, edit: fn(&mut serde_json::Value)| -> String {
        let dir = with_config(name, edit);
        load_hub_checkpoint::<Cpu>(dir.path(), &device).expect_err("refused").to_string()
    };
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 11] = [
        // Sizes no model has are refused before anything is sized by them.
        ("tiny-qwen2-moe", |c| c["num_hidden_layers"] = 1_000_000_000_000u64.into(), "no model is that large"),
        ("tiny-qwen3-moe", |c| c["num_hidden_layers"] = 1_000_000_000_000u64.into(), "no model is that large"),
        ("tiny-qwen2-moe", |c| c["shared_expert_intermediate_size"] = u64::MAX.into(), "no model is that large"),
        ("tiny-qwen3-moe", |c| c["model_type"] = "deepseek_v3".into(), "qwen3_moe"),
        ("tiny-qwen2-moe", |c| c["decoder_sparse_step"] = 0.into(), "decoder_sparse_step"),
        ("tiny-qwen2-moe", |c| c["mlp_only_layers"] = serde_json::json!([5]), "mlp_only_layers"),
        ("tiny-qwen2-moe", |c| c["use_sliding_window"] = true.into(), "use_sliding_window"),
        ("tiny-qwen2-moe", |c| c["shared_expert_intermediate_size"] = 0.into(), "shared_expert_intermediate_size"),
        ("tiny-olmoe", |c| c["clip_qkv"] = (-1.0).into(), "clip_qkv"),
        ("tiny-granitemoe", |c| c["residual_multiplier"] = 0.0.into(), "residual_multiplier"),
        // Granite's stacked experts of another width than the config's: the stacked tensor is named.
        ("tiny-granitemoe", |c| c["intermediate_size"] = 64.into(), "input_linear.weight"),
    ];
    for (name, edit, needle) in cases {
        let message = err(name, edit);
        assert!(message.contains(needle), "{name}: {message}");
    }
}
