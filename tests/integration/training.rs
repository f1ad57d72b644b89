//! llm.c-style training parity: AdamW steps of moe-train's objective and optimizer give
//! transformers' losses, so the trainer's loss assembly, decay groups, clipping and update are
//! exactly HF's.

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::Tolerance;
use moe_core::io::load_hub_checkpoint;
use moe_train::optim::{clip_global_norm, global_grad_norm};
use moe_train::{objective, MoeOptimizer, TrainingSettings};

use crate::common::*;

/// Six steps on the fixture batch; `grad_clip` as in `TrainingSettings`. Returns the loss
/// before each step and the gradient norm before clipping.
fn train_steps(name: &str, settings: &TrainingSettings, steps: usize) -> (Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let mut model = load_hub_checkpoint::<CpuAutodiff>(fixture(name), &device).unwrap();
    let input_ids = Reference::load(name).input_ids::<CpuAutodiff>(&device);
    let mut optim = MoeOptimizer::new(settings, &model);
    let aux_coef = model.config().router_aux_loss_coef;
    let (mut losses, mut norms) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let loss = objective(&model, input_ids.clone(), aux_coef, 0.0, None).total;
        losses.push(loss.clone().into_scalar());
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = clip_global_norm::<CpuAutodiff, _>(&model, &mut grads, settings.grad_clip);
        if let Some(max) = settings.grad_clip {
            // After clipping, the gradients' global norm is the cap.
            let clipped = global_grad_norm::<CpuAutodiff, _>(&model, &grads) as f64;
            assert!((clipped - max).abs() <= 1e-5 * max, "{name}: clipped norm {clipped} vs {max}");
        }
        norms.push(norm);
        model = optim.step(1e-3, model, grads);
    }
    // The trained model computes the same function without autodiff.
    let with_graph = model.forward(input_ids.clone()).logits.inner();
    let inference = model.valid().forward(input_ids.inner()).logits;
    with_graph.into_data().assert_approx_eq::<f32>(&inference.into_data(), Tolerance::absolute(1e-6));
    (losses, norms)
}

/// The fixture's first torch.optim.AdamW run: decay on every parameter, no clipping. (Burn's
/// AdamW defaults differ, eps 1e-5 and decay 1e-4; the update rule is the same.)
fn check_plain(name: &str) {
    let settings = TrainingSettings {
        beta1: 0.9,
        beta2: 0.95,
        epsilon: 1e-8,
        weight_decay: 0.1,
        decay_norms: true,
        decay_embeddings: true,
        grad_clip: None,
        ..TrainingSettings::default()
    };
    let (_, want) = Reference::load(name).f32("train_losses");
    let (got, _) = train_steps(name, &settings, want.len());
    let diff = max_abs_diff(&got, &want);
    eprintln!("{name}: train losses {got:?}, max diff {diff:e}");
    assert!(diff <= 1e-4, "{name}: train losses {got:?} vs transformers {want:?}");
}

/// The second run: no decay for norms and the embedding (a separate parameter group), and
/// `clip_grad_norm_(0.05)` on every step. A bug in the group split moves these losses by
/// ~1.5e-3 and one in clipping by ~1e-2 (measured with torch), far above the 1e-4 bound.
fn check_grouped(name: &str) {
    let reference = Reference::load(name);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
    let g = &json["adamw_grouped"];
    let settings = TrainingSettings {
        beta1: g["betas"][0].as_f64().unwrap(),
        beta2: g["betas"][1].as_f64().unwrap(),
        epsilon: g["eps"].as_f64().unwrap(),
        weight_decay: g["weight_decay"].as_f64().unwrap(),
        decay_norms: false,
        decay_embeddings: false,
        grad_clip: Some(g["max_grad_norm"].as_f64().unwrap()),
        ..TrainingSettings::default()
    };
    let (_, want_losses) = reference.f32("train_losses_grouped");
    let (_, want_norms) = reference.f32("train_grad_norms_grouped");
    let (losses, norms) = train_steps(name, &settings, want_losses.len());
    let diff = max_abs_diff(&losses, &want_losses);
    eprintln!("{name}: grouped + clipped losses {losses:?}, max diff {diff:e}; norms {norms:?}");
    assert!(diff <= 1e-4, "{name}: losses {losses:?} vs transformers {want_losses:?}");
    let norm_err = rel_l2(&norms, &want_norms);
    assert!(norm_err <= 1e-4, "{name}: gradient norms {norms:?} vs {want_norms:?}");
}

#[test]
fn tiny_mixtral_adamw_steps_match_transformers() {
    check_plain("tiny-mixtral");
    check_grouped("tiny-mixtral");
}

#[test]
fn sliding_window_adamw_steps_match_transformers() {
    check_plain("tiny-swa-bf16-sharded");
    check_grouped("tiny-swa-bf16-sharded");
}
