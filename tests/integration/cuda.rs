//! The same parity checks on the CUDA backend. Compiled with `--features cuda` (CI checks that
//! it builds); run on a machine with an NVIDIA GPU:
//! `cargo test --features cuda --test integration cuda -- --nocapture`.

use moe_core::backend::Cuda;
use moe_core::io::load_hub_checkpoint;
use moe_core::loss::{causal_lm_loss, load_balancing_loss};

use crate::common::*;

#[test]
fn cuda_forward_and_losses_match_transformers() {
    let device = Default::default();
    for name in MODELS {
        let model = load_hub_checkpoint::<Cuda>(fixture(name), &device).unwrap();
        let reference = Reference::load(name);
        let ids = reference.input_ids::<Cuda>(&device);
        let out = model.forward(ids.clone());
        let logits = max_abs_diff(&host(out.logits.clone()), &reference.f32("logits").1);
        let router = max_abs_diff(
            &host(burn::tensor::Tensor::stack::<3>(out.router_logits(), 0)),
            &reference.f32("router_logits").1,
        );
        let aux = load_balancing_loss(&out.router_logits(), model.config().top_k, None).into_scalar();
        let lm = causal_lm_loss(out.logits, ids).into_scalar();
        let lm_diff = (lm - reference.scalar("lm_loss")).abs();
        let aux_diff = (aux - reference.scalar("aux_loss")).abs();
        eprintln!("cuda {name}: logits {logits:e}, router {router:e}, lm {lm_diff:e}, aux {aux_diff:e}");
        assert!(logits <= 1e-3 && router <= 1e-3, "{name}");
        assert!(lm_diff <= 1e-4 && aux_diff <= 1e-4, "{name}");
    }
}
