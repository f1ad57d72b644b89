//! The `routing` section of the model config: each option against its formula, its gradient
//! against finite differences, and its trip through the checkpoint formats.

use burn::module::Param;
use burn::tensor::{Distribution, Tensor, TensorData};
use moe_core::config::MixtralConfig;
use moe_core::moe::{RoutingConfig, SparseMoeConfig};

use crate::common::{host, Cpu, CpuAutodiff};

fn softmax_row(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// Top-k weights are the chosen experts' softmax probabilities, divided by their sum only when
/// `normalize_top_k` (Mixtral) and left as they are otherwise (Switch, Qwen2-MoE).
#[test]
fn top_k_weights_are_the_probabilities_renormalised_or_not() {
    let device = Default::default();
    let (t, e, k) = (7, 5, 2);
    let x = Tensor::<Cpu, 2>::random([t, 6], Distribution::Normal(0.0, 1.0), &device);
    for normalize in [true, false] {
        let moe = SparseMoeConfig::new(6, 8, e).with_top_k(k).with_normalize_top_k(normalize).init::<Cpu>(&device);
        let route = moe.router.forward(x.clone());
        let (logits, weights) = (host(route.logits), host(route.weights));
        let experts: Vec<i64> = route.experts.into_data().iter::<i64>().collect();
        for token in 0..t {
            let probs = softmax_row(&logits[token * e..(token + 1) * e]);
            let chosen: Vec<f32> = (0..k).map(|j| probs[experts[token * k + j] as usize]).collect();
            // The chosen experts are the k most probable.
            let kth = chosen.iter().cloned().fold(f32::INFINITY, f32::min);
            assert_eq!(probs.iter().filter(|&&p| p > kth).count(), k - 1, "token {token}: {probs:?}");
            let sum: f32 = chosen.iter().sum();
            for j in 0..k {
                let want = if normalize { chosen[j] / sum } else { chosen[j] };
                let got = weights[token * k + j];
                assert!((got - want).abs() < 1e-6, "normalize {normalize}, token {token}: {got} vs {want}");
            }
        }
    }
}

/// The router's gradient without renormalisation, and with a capacity that drops assignments,
/// against central differences of the same loss: every entry of the gate.
#[test]
fn router_gradients_match_finite_differences() {
    let (d, e) = (4, 4);
    let base = SparseMoeConfig::new(d, 6, e).with_top_k(2);
    router_gradient_matches_finite_differences(base.clone().with_normalize_top_k(false), "raw top-k weights");
    // 12 assignments over 4 experts, 2 places each (factor 0.5 of the average 3): some dropped.
    router_gradient_matches_finite_differences(base.with_capacity_factor(Some(0.5)), "capacity 0.5");
}

fn router_gradient_matches_finite_differences(config: SparseMoeConfig, name: &str) {
    let device = Default::default();
    let (t, d, e) = (6, config.d_model, config.n_experts);
    // The gate and the inputs are fixed (the experts' random weights cannot change which experts
    // are chosen), so no perturbation below crosses a top-k boundary on any run.
    let mut moe = config.init::<CpuAutodiff>(&device);
    let fixed = |n: usize, scale: f32, shape: [usize; 2]| {
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * 1.37 + 0.4).sin() * scale).collect();
        Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(values, shape), &device)
    };
    moe.router.gate.weight = Param::from_tensor(fixed(d * e, 0.9, [d, e]).require_grad());
    let x = fixed(t * d, 1.0, [t, d]).mul_scalar(1.5);
    let r = fixed(t * d, 1.0, [t, d]).flip([0]);
    let loss = |moe: &moe_core::moe::SparseMoe<CpuAutodiff>| (moe.forward(x.clone()).hidden * r.clone()).sum();
    if name.starts_with("capacity") {
        assert!(moe.forward(x.clone()).dropped > 0, "{name}: nothing dropped");
    }
    let grads = loss(&moe).backward();
    let analytic = host(moe.router.gate.weight.val().grad(&grads).expect("the gate gets a gradient"));
    let weight = host(moe.router.gate.weight.val().inner());
    let eps = 1e-3;
    for i in 0..weight.len() {
        let at = |delta: f32| {
            let mut w = weight.clone();
            w[i] += delta;
            let mut moved = moe.clone();
            moved.router.gate.weight =
                Param::from_tensor(Tensor::from_data(TensorData::new(w, [d, e]), &device).require_grad());
            host(loss(&moved))[0]
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (numeric - analytic[i]).abs() <= 1e-2 * (1.0 + analytic[i].abs()),
            "{name}, gate[{i}]: autodiff {} vs finite differences {numeric}",
            analytic[i]
        );
    }
}

/// Jitter multiplies the layer's input by noise from `[1 - j, 1 + j]` on an autodiff backend
/// (training), seen through a one-wide, one-expert router (`logit = w · x · u`), and does
/// nothing on an inference backend.
#[test]
fn jitter_scales_the_input_while_training_only() {
    let device = Default::default();
    let j = 0.25;
    let t = 256;
    let config = SparseMoeConfig::new(1, 4, 1).with_top_k(1).with_jitter_noise(j);
    let x: Vec<f32> = (0..t).map(|i| 0.5 + i as f32 / t as f32).collect();

    let training = config.init::<CpuAutodiff>(&device);
    let w = host(training.router.gate.weight.val())[0];
    let input = Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(x.clone(), [t, 1]), &device);
    let logits = host(training.forward(input).router_logits);
    let u: Vec<f32> = logits.iter().zip(&x).map(|(l, x)| l / (w * x)).collect();
    let (lo, hi) = u.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &u| (lo.min(u), hi.max(u)));
    assert!(lo >= 1.0 - j as f32 - 1e-5 && hi <= 1.0 + j as f32 + 1e-5, "noise outside [1 - j, 1 + j]: {lo}..{hi}");
    // 256 uniform draws cover most of the interval.
    assert!(lo < 1.0 - 0.8 * j as f32 && hi > 1.0 + 0.8 * j as f32, "noise too narrow: {lo}..{hi}");

    let inference = config.init::<Cpu>(&device);
    let w = host(inference.router.gate.weight.val())[0];
    let input = Tensor::<Cpu, 2>::from_data(TensorData::new(x.clone(), [t, 1]), &device);
    let logits = host(inference.forward(input).router_logits);
    for (l, x) in logits.iter().zip(&x) {
        assert!((l - w * x).abs() <= 1e-6 * (1.0 + l.abs()), "inference jittered: {l} vs {}", w * x);
    }
}

/// The section round-trips through the native config (serde), a config without it is
/// Mixtral's routing, the Hub `config.json` carries it (`router_jitter_noise`, and
/// `norm_topk_prob` only when false), bad values are refused by name, and GGUF, whose `llama`
/// architecture always renormalises, refuses a model that does not.
#[test]
fn routing_section_round_trips_and_is_validated() {
    use moe_core::config::HfMixtralConfig;
    let routing = RoutingConfig {
        normalize_top_k: false,
        jitter_noise: 0.01,
        capacity_factor: Some(1.25),
        eval_capacity_factor: Some(2.0),
    };
    let config = MixtralConfig { routing: routing.clone(), ..MixtralConfig::tiny() };
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<MixtralConfig>(&json).unwrap(), config);

    let mut old: serde_json::Value = serde_json::to_value(MixtralConfig::tiny()).unwrap();
    old.as_object_mut().unwrap().remove("routing");
    assert_eq!(serde_json::from_value::<MixtralConfig>(old).unwrap().routing, RoutingConfig::default());

    let hf = serde_json::to_value(HfMixtralConfig::from_mixtral(&config, "float32")).unwrap();
    assert_eq!(hf["norm_topk_prob"], false);
    assert_eq!(hf["router_jitter_noise"], 0.01);
    assert_eq!(hf["capacity_factor"], 1.25);
    assert_eq!(hf["eval_capacity_factor"], 2.0);
    let back: HfMixtralConfig = serde_json::from_value(hf).unwrap();
    assert_eq!(back.to_mixtral().unwrap().routing, routing);
    let mixtral = serde_json::to_value(HfMixtralConfig::from_mixtral(&MixtralConfig::tiny(), "float32")).unwrap();
    for key in ["norm_topk_prob", "capacity_factor", "eval_capacity_factor"] {
        assert!(mixtral.get(key).is_none(), "{key}: {mixtral}");
    }

    for bad in [-0.1, 1.0, f64::NAN] {
        let config = MixtralConfig {
            routing: RoutingConfig { jitter_noise: bad, ..Default::default() },
            ..MixtralConfig::tiny()
        };
        let err = config.validate().expect_err("refused").to_string();
        assert!(err.contains("routing.jitter_noise"), "{err}");
        let routing = RoutingConfig { eval_capacity_factor: Some(bad.min(0.0)), ..Default::default() };
        let err = MixtralConfig { routing, ..MixtralConfig::tiny() }.validate().expect_err("refused").to_string();
        assert!(err.contains("routing.eval_capacity_factor"), "{err}");
    }
    let unknown = r#"{"normalize_top_k": true, "jitter": 0.1}"#;
    assert!(serde_json::from_str::<RoutingConfig>(unknown).unwrap_err().to_string().contains("jitter"));

    let model = config.init::<Cpu>(&Default::default());
    let dir = tempfile::tempdir().unwrap();
    let options = moe_core::gguf::GgufExport::new(moe_core::gguf::GgmlType::F32);
    let err = moe_core::gguf::save_gguf(&model, dir.path().join("m.gguf"), &options).expect_err("refused").to_string();
    assert!(err.contains("normalize_top_k"), "{err}");
    let capped = MixtralConfig {
        routing: RoutingConfig { capacity_factor: Some(1.0), ..Default::default() },
        ..MixtralConfig::tiny()
    };
    let model = capped.init::<Cpu>(&Default::default());
    let err = moe_core::gguf::save_gguf(&model, dir.path().join("m.gguf"), &options).expect_err("refused").to_string();
    assert!(err.contains("dropless"), "{err}");
}

/// A layer whose router is the identity on 2-wide inputs: `[a, 0]` goes to expert 0, `[0, b]`
/// to expert 1 (top-1).
fn two_expert_layer<B: burn::tensor::backend::Backend>(config: SparseMoeConfig) -> moe_core::moe::SparseMoe<B> {
    let device = Default::default();
    let mut moe = config.init::<B>(&device);
    moe.router.gate.weight =
        Param::from_tensor(Tensor::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2]), &device));
    moe
}

/// Capacity `ceil(factor · T · K / E)`: with factor 1, 4 tokens, top-1 and 2 experts, each expert
/// takes 2. Three tokens choose expert 0: the first two (token order) run, the third is dropped
/// (zero output: only the residual carries it), the fourth runs on expert 1. The inference
/// factor applies without autodiff, the training one with it; a factor large enough for every
/// assignment is exactly dropless.
#[test]
fn capacity_drops_the_latest_tokens_of_a_full_expert() {
    let device = Default::default();
    let x = vec![1.0f32, 0.0, 2.0, 0.0, 3.0, 0.0, 0.0, 1.0];
    let base = SparseMoeConfig::new(2, 4, 2).with_top_k(1);
    let dropless = two_expert_layer::<Cpu>(base.clone());
    let input = || Tensor::<Cpu, 2>::from_data(TensorData::new(x.clone(), [4, 2]), &device);
    let free = dropless.forward(input());
    assert_eq!(free.dropped, 0);
    let free = host(free.hidden);

    let mut capped = dropless.clone();
    capped.capacity = [Some(10.0), Some(1.0)]; // [training, inference]
    let out = capped.forward(input());
    assert_eq!(moe_core::moe::expert_capacity(1.0, 4, 1, 2), 2);
    assert_eq!(out.dropped, 1);
    let got = host(out.hidden);
    for token in [0, 1, 3] {
        assert_eq!(&got[2 * token..2 * token + 2], &free[2 * token..2 * token + 2], "token {token}");
    }
    assert_eq!(&got[4..6], &[0.0, 0.0], "the third token of expert 0 is dropped");

    // Factor 2 = E / K: every expert can take every token.
    capped.capacity = [None, Some(2.0)];
    let out = capped.forward(input());
    assert_eq!(out.dropped, 0);
    assert_eq!(host(out.hidden), free);

    // While training the training factor counts (10: nothing dropped), then 1 drops one.
    let training =
        two_expert_layer::<CpuAutodiff>(base.with_capacity_factor(Some(10.0)).with_eval_capacity_factor(Some(1.0)));
    let input = || Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(x.clone(), [4, 2]), &device);
    assert_eq!(training.forward(input()).dropped, 0);
    let mut training = training;
    training.capacity[0] = Some(1.0);
    assert_eq!(training.forward(input()).dropped, 1);
}
