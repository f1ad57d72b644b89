//! Equivalence properties of the MoE layer (megablocks-style).

use burn::module::Param;
use burn::tensor::{Distribution, Tensor, TensorData};
use moe_core::loss::{load_balancing_loss, router_z_loss};
use moe_core::moe::SparseMoeConfig;
use moe_core::nn::SwiGluConfig;

use crate::common::*;

#[test]
fn one_expert_top1_moe_equals_dense_swiglu() {
    let device = Default::default();
    let moe = SparseMoeConfig::new(16, 24, 1).with_top_k(1).init::<Cpu>(&device);
    let mut dense = SwiGluConfig::new(16, 24).init::<Cpu>(&device);
    let expert = &moe.experts.ffns[0];
    dense.gate_up.weight = Param::from_tensor(expert.gate_up.weight.val());
    dense.down.weight = Param::from_tensor(expert.down.weight.val());
    let x = Tensor::<Cpu, 3>::random([2, 7, 16], Distribution::Normal(0.0, 1.0), &device);
    let got = host(moe.forward(x.clone()).hidden);
    let want = host(dense.forward(x));
    assert!(max_abs_diff(&got, &want) <= 1e-5);
}

#[test]
fn sparse_dispatch_equals_all_experts_reference() {
    let device = Default::default();
    for (e, k, t) in [(4, 2, 37), (8, 2, 64), (8, 3, 5), (5, 5, 9), (6, 1, 1)] {
        let moe = SparseMoeConfig::new(12, 20, e).with_top_k(k).init::<Cpu>(&device);
        let x = Tensor::<Cpu, 2>::random([t, 12], Distribution::Normal(0.0, 1.0), &device);
        let sparse = moe.forward(x.clone());
        let reference = moe.forward_all_experts(x);
        let diff = max_abs_diff(&host(sparse.hidden), &host(reference.hidden));
        assert!(diff <= 1e-5, "E={e} K={k} T={t}: {diff}");
    }
}

#[test]
fn sparse_dispatch_gradients_equal_the_reference_and_reach_the_router() {
    let device = Default::default();
    let moe = SparseMoeConfig::new(12, 20, 6).with_top_k(2).init::<CpuAutodiff>(&device);
    let x = Tensor::<CpuAutodiff, 2>::random([33, 12], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let target = Tensor::<CpuAutodiff, 2>::random([33, 12], Distribution::Normal(0.0, 1.0), &device);

    let grads_of = |hidden: Tensor<CpuAutodiff, 2>| {
        let loss = (hidden * target.clone()).sum();
        let grads = loss.backward();
        (
            host(moe.router.gate.weight.val().grad(&grads).unwrap()),
            // Every expert's down projection; one no token chose has none (zeros).
            moe.experts
                .ffns
                .iter()
                .flat_map(|ffn| {
                    let w = ffn.down.weight.val();
                    host(w.grad(&grads).unwrap_or_else(|| w.inner().zeros_like()))
                })
                .collect::<Vec<f32>>(),
            host(x.grad(&grads).unwrap()),
        )
    };
    let sparse = grads_of(moe.forward(x.clone()).hidden);
    let reference = grads_of(moe.forward_all_experts(x.clone()).hidden);
    assert!(sparse.0.iter().any(|g| g.abs() > 1e-6), "router gets no gradient");
    assert!(max_abs_diff(&sparse.0, &reference.0) <= 1e-5);
    assert!(max_abs_diff(&sparse.1, &reference.1) <= 1e-5);
    assert!(max_abs_diff(&sparse.2, &reference.2) <= 1e-5);
}

#[test]
fn load_balancing_loss_is_top_k_under_uniform_routing() {
    let device = Default::default();
    for (e, k) in [(4, 2), (8, 2), (8, 1), (6, 3)] {
        let logits = vec![Tensor::<Cpu, 2>::zeros([10, e], &device); 3];
        let aux = load_balancing_loss(&logits, k, None).into_scalar();
        assert!((aux - k as f32).abs() <= 1e-5, "E={e} K={k}: {aux}");
    }
    // The token-fraction half, by hand: E = 3, two tokens with softmax probabilities
    // [3, 2, 1]/6 and [1, 4, 2]/7 (no ties). Top-2 choices: token 0 -> experts 0, 1; token 1 ->
    // experts 1, 2. Per choice slot, f = [1/2, 1/2, 0] and [0, 1/2, 1/2]; P = the mean probabilities.
    let probs = [[3.0f64 / 6.0, 2.0 / 6.0, 1.0 / 6.0], [1.0 / 7.0, 4.0 / 7.0, 2.0 / 7.0]];
    let logits: Vec<[f32; 3]> = probs.iter().map(|p| p.map(|x| x.ln() as f32)).collect();
    let logits = Tensor::<Cpu, 2>::from_data(TensorData::new(logits.concat(), [2, 3]), &device);
    let p: Vec<f64> = (0..3).map(|e| (probs[0][e] + probs[1][e]) / 2.0).collect();
    let want = 3.0 * (0.5 * (p[0] + p[1]) + 0.5 * (p[1] + p[2]));
    let got = load_balancing_loss(std::slice::from_ref(&logits), 2, None).into_scalar() as f64;
    assert!((got - want).abs() <= 1e-6, "top-2: {got} vs {want}");
    // Top-1: f = [1/2, 1/2, 0].
    let want = 3.0 * 0.5 * (p[0] + p[1]);
    let got = load_balancing_loss(&[logits], 1, None).into_scalar() as f64;
    assert!((got - want).abs() <= 1e-6, "top-1: {got} vs {want}");

    // A router that sends everything to expert 0 is penalised.
    let collapsed = Tensor::<Cpu, 2>::from_floats([[9.0, 0.0, 0.0, 0.0]; 8], &device);
    let aux = load_balancing_loss(&[collapsed], 2, None).into_scalar();
    assert!(aux > 2.5, "{aux}");
}

#[test]
fn load_balancing_loss_leaves_padding_out() {
    let device = Default::default();
    let (b, s, e) = (2, 5, 4);
    let layers: Vec<_> =
        (0..2).map(|_| Tensor::<Cpu, 2>::random([b * s, e], Distribution::Normal(0.0, 2.0), &device)).collect();
    let all_real = Tensor::<Cpu, 2, burn::tensor::Bool>::from_data([[true; 5]; 2], &device);
    let unmasked = load_balancing_loss(&layers, 2, None).into_scalar();
    let masked = load_balancing_loss(&layers, 2, Some(all_real)).into_scalar();
    // Two summation paths (mean vs. weighted sum x reciprocal): a few f32 ulps apart at most.
    assert!((unmasked - masked).abs() <= 2e-6 * unmasked.abs(), "{unmasked} vs {masked}");

    // Padding the second sequence's last 2 tokens = dropping those rows.
    let mask = Tensor::<Cpu, 2, burn::tensor::Bool>::from_data(
        [[true, true, true, true, true], [true, true, true, false, false]],
        &device,
    );
    let kept: Vec<_> = layers.iter().map(|l| l.clone().narrow(0, 0, 8)).collect();
    let want = load_balancing_loss(&kept, 2, None).into_scalar();
    let got = load_balancing_loss(&layers, 2, Some(mask)).into_scalar();
    assert!((got - want).abs() <= 1e-5, "{got} vs {want}");
}

#[test]
fn z_loss_is_mean_squared_logsumexp() {
    let device = Default::default();
    let a = Tensor::<Cpu, 2>::from_floats([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], &device);
    let b = Tensor::<Cpu, 2>::from_floats([[100.0, 100.0, 100.0]], &device);
    let lse = |v: &[f32]| v.iter().map(|x| (*x as f64).exp()).sum::<f64>().ln();
    let want =
        [lse(&[1.0, 2.0, 3.0]), lse(&[0.0, 0.0, 0.0]), 100.0 + 3f64.ln()].iter().map(|l| l * l).sum::<f64>() / 3.0;
    let got = router_z_loss(&[a, b]).into_scalar() as f64;
    assert!((got - want).abs() / want <= 1e-6, "{got} vs {want}");
}
