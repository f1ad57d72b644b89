//! Every gradient transformers recorded, under `Autodiff<NdArray>`.

use burn::module::Param;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use moe_core::io::load_hub_checkpoint;
use moe_core::loss::{causal_lm_loss, load_balancing_loss};
use moe_core::model::Mixtral;

use crate::common::*;

/// HF's training loss (`lm_loss + router_aux_loss_coef * aux_loss`) on the fixture batch.
pub fn hf_loss<B: burn::tensor::backend::Backend>(
    model: &Mixtral<B>,
    input_ids: Tensor<B, 2, burn::tensor::Int>,
) -> Tensor<B, 1> {
    let out = model.forward(input_ids.clone());
    let config = model.config();
    let aux = load_balancing_loss(&out.router_logits, config.top_k, None);
    causal_lm_loss(out.logits, input_ids) + aux.mul_scalar(config.router_aux_loss_coef)
}

fn grad<B: AutodiffBackend, const N: usize>(p: &Param<Tensor<B, N>>, grads: &B::Gradients) -> Tensor<B::InnerBackend, N> {
    p.val().grad(grads).expect("parameter has a gradient")
}

/// The gradient of a checkpoint tensor, in the checkpoint's layout.
fn hub_grad<B: AutodiffBackend>(model: &Mixtral<B>, grads: &B::Gradients, key: &str) -> Vec<f32> {
    let linear = |p: &Param<Tensor<B, 2>>| {
        let g = grad(p, grads);
        let [i, o] = g.dims();
        transposed(&host(g), i, o)
    };
    let expert = |p: &Param<Tensor<B, 3>>, e: usize| {
        let g = grad(p, grads);
        let [_, i, o] = g.dims();
        transposed(&host(g.narrow(0, e, 1).reshape([i, o])), i, o)
    };
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["model", "embed_tokens", "weight"] => host(grad(&model.embed_tokens.weight, grads)),
        ["model", "norm", "weight"] => host(grad(&model.norm.weight, grads)),
        ["lm_head", "weight"] => linear(&model.lm_head.as_ref().unwrap().weight),
        ["model", "layers", n, rest @ ..] => {
            let layer = &model.layers[n.parse::<usize>().unwrap()];
            let moe = &layer.block_sparse_moe;
            let attn = &layer.self_attn;
            match rest {
                ["input_layernorm", "weight"] => host(grad(&layer.input_layernorm.weight, grads)),
                ["post_attention_layernorm", "weight"] => {
                    host(grad(&layer.post_attention_layernorm.weight, grads))
                }
                ["self_attn", "q_proj", "weight"] => linear(&attn.q_proj.weight),
                ["self_attn", "k_proj", "weight"] => linear(&attn.k_proj.weight),
                ["self_attn", "v_proj", "weight"] => linear(&attn.v_proj.weight),
                ["self_attn", "o_proj", "weight"] => linear(&attn.o_proj.weight),
                ["block_sparse_moe", "gate", "weight"] => linear(&moe.router.gate.weight),
                ["block_sparse_moe", "experts", e, w, "weight"] => {
                    let e = e.parse().unwrap();
                    match *w {
                        "w1" => expert(&moe.experts.w1, e),
                        "w2" => expert(&moe.experts.w2, e),
                        "w3" => expert(&moe.experts.w3, e),
                        _ => panic!("unknown key {key}"),
                    }
                }
                _ => panic!("unknown key {key}"),
            }
        }
        _ => panic!("unknown key {key}"),
    }
}

fn check_gradients(name: &str) {
    let device = Default::default();
    let model = load_hub_checkpoint::<CpuAutodiff>(fixture(name), &device).unwrap();
    let reference = Reference::load(name);
    let loss = hf_loss(&model, reference.input_ids(&device));
    let grads = loss.backward();

    let reference_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(name).join("reference.json")).unwrap(),
    )
    .unwrap();
    let keys: Vec<String> = reference_json["grads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert!(keys.len() >= 8, "{name}: expected the 8 recorded gradients");
    for key in keys {
        let (_, want) = reference.f32(&format!("grad.{key}"));
        let got = hub_grad(&model, &grads, &key);
        let err = rel_l2(&got, &want);
        assert!(err <= 1e-4, "{name}: grad of {key}: relative L2 error {err:e}");
        eprintln!("{name}: grad {key}: rel L2 {err:e}");
    }
}

#[test]
fn tiny_mixtral_gradients_match_transformers() {
    check_gradients("tiny-mixtral");
}

#[test]
fn sliding_window_gradients_match_transformers() {
    check_gradients("tiny-swa-bf16-sharded");
}
