//! Forward parity with transformers on the shipped fixtures (CPU backend).

use burn::tensor::Tensor;
use moe_core::config::MixtralConfig;
use moe_core::io::{load_hub_checkpoint, load_hub_weights, HubWeights};
use moe_core::loss::{causal_lm_loss, load_balancing_loss};

use crate::common::*;

/// Logits, router logits and the three losses of fixture `name` against transformers'; returns
/// the logits' max-abs difference.
pub fn check_model(name: &str) -> f32 {
    let device = Default::default();
    let model = load_hub_checkpoint::<Cpu>(fixture(name), &device).unwrap();
    let reference = Reference::load(name);
    let input_ids = reference.input_ids::<Cpu>(&device);
    let out = model.forward(input_ids.clone());

    let (shape, want) = reference.f32("logits");
    assert_eq!(out.logits.dims().to_vec(), shape);
    let logits_diff = max_abs_diff(&host(out.logits.clone()), &want);

    let (shape, want) = reference.f32("router_logits");
    let router = Tensor::stack::<3>(out.router_logits(), 0);
    assert_eq!(router.dims().to_vec(), shape);
    let router_diff = max_abs_diff(&host(router), &want);
    eprintln!("{name}: logits diff {logits_diff:e}, router diff {router_diff:e}");
    assert!(logits_diff <= 1e-4, "{name}: logits max-abs diff {logits_diff}");
    assert!(router_diff <= 1e-4, "{name}: router logits max-abs diff {router_diff}");

    let config = model.config();
    let aux = load_balancing_loss(&out.router_logits(), config.top_k, None).into_scalar();
    let lm = causal_lm_loss(out.logits, input_ids).into_scalar();
    let total = lm + config.router_aux_loss_coef as f32 * aux;
    for (what, got, want) in [
        ("lm_loss", lm, reference.scalar("lm_loss")),
        ("aux_loss", aux, reference.scalar("aux_loss")),
        ("loss", total, reference.scalar("loss")),
    ] {
        assert!((got - want).abs() <= 1e-5, "{name}: {what} {got} vs transformers {want}");
    }
    eprintln!("{name}: logits diff {logits_diff:e}, router diff {router_diff:e}, lm {lm}, aux {aux}");
    logits_diff
}

#[test]
fn tiny_mixtral_matches_transformers() {
    check_model("tiny-mixtral");
}

#[test]
fn sliding_window_bf16_sharded_matches_transformers() {
    check_model("tiny-swa-bf16-sharded");
}

#[test]
fn both_config_forms_parse_to_the_same_model() {
    for name in MODELS {
        let v4 = MixtralConfig::from_hf_file(fixture(name).join("config.json")).unwrap();
        let v5 = MixtralConfig::from_hf_file(fixture(name).join("config.transformers-v5.json")).unwrap();
        assert_eq!(v4, v5, "{name}");
    }
    let swa = MixtralConfig::from_hf_file(fixture("tiny-swa-bf16-sharded").join("config.json")).unwrap();
    assert_eq!(swa.sliding_window, Some(6));
    assert_eq!((swa.n_heads, swa.n_kv_heads, swa.head_dim), (4, 1, 16));
    assert_eq!(swa.rope_theta, 5e5);
}

#[test]
fn transformers_v5_config_loads_the_same_logits() {
    let device = Default::default();
    let dir = fixture("tiny-mixtral");
    let config = MixtralConfig::from_hf_file(dir.join("config.transformers-v5.json")).unwrap();
    let model = load_hub_weights::<Cpu>(&config, &HubWeights::open(&dir).unwrap(), &device).unwrap();
    let reference = Reference::load("tiny-mixtral");
    let logits = model.forward(reference.input_ids(&device)).logits;
    assert!(max_abs_diff(&host(logits), &reference.f32("logits").1) <= 1e-4);
}
