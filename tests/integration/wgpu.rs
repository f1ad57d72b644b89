//! The same model on the WGPU backend (Lavapipe on CI machines).

use moe_core::backend::{wgpu_device, Wgpu};
use moe_core::io::load_hub_checkpoint;

use crate::common::*;

#[test]
fn wgpu_logits_match_transformers() {
    let device = wgpu_device();
    for name in MODELS {
        let model = load_hub_checkpoint::<Wgpu>(fixture(name), &device).unwrap();
        let reference = Reference::load(name);
        let out = model.forward(reference.input_ids(&device));
        let diff = max_abs_diff(&host(out.logits), &reference.f32("logits").1);
        eprintln!("wgpu {name}: logits max-abs diff {diff:e}");
        assert!(diff <= 1e-3, "{name}: wgpu logits max-abs diff {diff}");
    }
}
