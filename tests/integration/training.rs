//! llm.c-style training parity: six AdamW steps of moe-train's objective and optimizer give
//! transformers' losses, so the trainer's loss assembly and update are exactly HF's.

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use moe_core::io::load_hub_checkpoint;
use moe_train::{objective, MoeOptimizer, TrainingSettings};

use crate::common::*;

fn check_training(name: &str) {
    let device = Default::default();
    let mut model = load_hub_checkpoint::<CpuAutodiff>(fixture(name), &device).unwrap();
    let reference = Reference::load(name);
    let input_ids = reference.input_ids::<CpuAutodiff>(&device);
    let (_, want) = reference.f32("train_losses");

    // The fixture's torch.optim.AdamW settings: decay on every parameter, no clipping. (Burn's
    // AdamW defaults differ, eps 1e-5 and decay 1e-4; the update rule is the same.)
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
    let mut optim = MoeOptimizer::new(&settings, &model);
    let aux_coef = model.config().router_aux_loss_coef;
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let loss = objective(&model, input_ids.clone(), aux_coef, 0.0).total;
        got.push(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    let diff = max_abs_diff(&got, &want);
    eprintln!("{name}: train losses {got:?}, max diff {diff:e}");
    assert!(diff <= 1e-4, "{name}: train losses {got:?} vs transformers {want:?}");
    // The trained model still works without autodiff.
    let _ = model.valid();
}

#[test]
fn tiny_mixtral_adamw_steps_match_transformers() {
    check_training("tiny-mixtral");
}

#[test]
fn sliding_window_adamw_steps_match_transformers() {
    check_training("tiny-swa-bf16-sharded");
}
