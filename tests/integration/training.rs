//! llm.c-style training parity: six AdamW steps give transformers' losses.

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use moe_core::io::load_hub_checkpoint;

use crate::common::*;
use crate::gradients::hf_loss;

fn check_training(name: &str) {
    let device = Default::default();
    let mut model = load_hub_checkpoint::<CpuAutodiff>(fixture(name), &device).unwrap();
    let reference = Reference::load(name);
    let input_ids = reference.input_ids::<CpuAutodiff>(&device);
    let (_, want) = reference.f32("train_losses");

    // The fixture's torch.optim.AdamW settings. Burn's defaults differ (eps 1e-5, decay 1e-4),
    // the update rule is the same.
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(0.1)
        .init();
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let loss = hf_loss(&model, input_ids.clone());
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
