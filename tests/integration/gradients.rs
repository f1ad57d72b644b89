//! The gradient of every parameter against what transformers recorded, under `Autodiff<NdArray>`.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use moe_core::io::load_hub_checkpoint;
use moe_core::io::{hub_tensor, parse_hub_key, HubKeys};
use moe_core::loss::{causal_lm_loss, load_balancing_loss};
use moe_core::model::Mixtral;
use moe_core::model::{AnyTensor, ParamId, ParamRef};

use crate::common::*;

/// HF's training loss (`lm_loss + router_aux_loss_coef * aux_loss`) on the fixture batch.
pub fn hf_loss<B: burn::tensor::backend::Backend>(
    model: &Mixtral<B>,
    input_ids: Tensor<B, 2, burn::tensor::Int>,
) -> Tensor<B, 1> {
    let out = model.forward(input_ids.clone());
    let config = model.config();
    let router_logits = out.router_logits();
    let lm = causal_lm_loss(out.logits, input_ids);
    if router_logits.is_empty() {
        return lm; // A dense model: no router to balance.
    }
    let aux = load_balancing_loss(&router_logits, config.top_k, None);
    lm + aux.mul_scalar(config.router_aux_loss_coef)
}

/// The gradient of a checkpoint tensor, in the checkpoint's layout (through the same key table
/// as import and export). An expert no token reached has no gradient: zeros, as in
/// transformers' stacked experts.
fn hub_grad<B: AutodiffBackend>(model: &Mixtral<B>, grads: &B::Gradients, key: &str) -> Vec<f32> {
    let (param, part) = parse_hub_key(key).unwrap_or_else(|| panic!("unknown key {key}"));
    let grad = match model.param(param).unwrap_or_else(|| panic!("the model has no {key}")) {
        ParamRef::Rank1(p) => AnyTensor::Rank1(p.val().grad(grads).unwrap_or_else(|| p.val().inner().zeros_like())),
        ParamRef::Rank2(p) => AnyTensor::Rank2(p.val().grad(grads).unwrap_or_else(|| p.val().inner().zeros_like())),
    };
    hub_tensor(&grad, param.layout(), part).1
}

/// The gradient of every parameter of fixture `name` against transformers'.
pub fn check_gradients(name: &str) {
    let device = Default::default();
    let model = load_hub_checkpoint::<CpuAutodiff>(fixture(name), &device).unwrap();
    let reference = Reference::load(name);
    let loss = hf_loss(&model, reference.input_ids(&device));
    let grads = loss.backward();

    // Every parameter of the model, by its checkpoint key: transformers recorded them all.
    let config = model.config();
    let keys: Vec<String> = ParamId::all(config).into_iter().flat_map(|p| p.keys(config.family)).collect();
    let mut recorded: Vec<String> =
        reference.names().into_iter().filter_map(|n| n.strip_prefix("grad.").map(str::to_string)).collect();
    let mut listed = keys.clone();
    recorded.sort();
    listed.sort();
    assert_eq!(listed, recorded, "{name}: the model's parameters are the ones transformers has");
    let mut worst = (0.0, String::new());
    for key in keys {
        let (_, want) = reference.f32(&format!("grad.{key}"));
        let got = hub_grad(&model, &grads, &key);
        if want.iter().all(|&w| w == 0.0) {
            // An expert no token was routed to: no gradient on either side.
            assert_eq!(max_abs_diff(&got, &want), 0.0, "{name}: grad of {key} should be zero");
            continue;
        }
        let err = rel_l2(&got, &want);
        assert!(err <= 1e-4, "{name}: grad of {key}: relative L2 error {err:e}");
        if err > worst.0 {
            worst = (err, key);
        }
    }
    eprintln!("{name}: every gradient within rel L2 {:e} (worst: {})", worst.0, worst.1);
}

#[test]
fn tiny_mixtral_gradients_match_transformers() {
    check_gradients("tiny-mixtral");
}

#[test]
fn sliding_window_gradients_match_transformers() {
    check_gradients("tiny-swa-bf16-sharded");
}
