//! The `routing` section of the model config: each option against its formula, its gradient
//! against finite differences, and its trip through the checkpoint formats.

use burn::module::Param;
use burn::tensor::{Distribution, Tensor, TensorData};
use moe_core::config::MixtralConfig;
use moe_core::moe::{RoutingConfig, Scoring, SparseMoe, SparseMoeConfig};

use crate::common::{host, Cpu, CpuAutodiff};

/// `base` with its routing changed by `f`.
fn routed(base: SparseMoeConfig, f: impl FnOnce(&mut RoutingConfig)) -> SparseMoeConfig {
    let mut routing = base.routing.clone();
    f(&mut routing);
    base.with_routing(routing)
}

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
        let moe =
            routed(SparseMoeConfig::new(6, 8, e).with_top_k(k), |r| r.normalize_top_k = normalize).init::<Cpu>(&device);
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

/// The router's gradient without renormalisation, with a capacity that drops assignments, with
/// DeepSeek-V3's sigmoid scores, selection bias, groups and scaling, and with a gated shared
/// block, against central differences of the same loss: every entry of the gate (and of the
/// shared block's gate).
#[test]
fn router_gradients_match_finite_differences() {
    let (d, e) = (4, 4);
    let base = SparseMoeConfig::new(d, 6, e).with_top_k(2);
    router_gradient_matches_finite_differences(
        routed(base.clone(), |r| r.normalize_top_k = false),
        "raw top-k weights",
    );
    // 12 assignments over 4 experts, 2 places each (factor 0.5 of the average 3): some dropped.
    router_gradient_matches_finite_differences(routed(base.clone(), |r| r.capacity_factor = Some(0.5)), "capacity 0.5");
    let deepseek = |r: &mut RoutingConfig| {
        r.scoring = Scoring::Sigmoid;
        r.bias_update_rate = 0.01;
        r.n_groups = 2;
        r.top_k_groups = 1;
        r.scaling_factor = 2.5;
    };
    router_gradient_matches_finite_differences(routed(base.clone(), deepseek), "sigmoid, bias, groups");
    let qwen = |r: &mut RoutingConfig| {
        r.normalize_top_k = false;
        r.n_shared_experts = 1;
        r.shared_expert_gate = true;
    };
    router_gradient_matches_finite_differences(routed(base.clone(), qwen), "shared gate");
    // 6 tokens, top-2 over 4 experts at factor 1: each expert takes its 3 best tokens.
    let expert_choice = |r: &mut RoutingConfig| r.expert_choice = true;
    router_gradient_matches_finite_differences(routed(base, expert_choice), "expert choice");
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
    if let Some(bias) = &mut moe.router.bias {
        // A bias that changes the choice: expert 3 is favoured.
        *bias = Param::from_tensor(Tensor::from_floats([0.0, -0.1, 0.05, 0.3], &device));
    }
    let x = fixed(t * d, 1.0, [t, d]).mul_scalar(1.5);
    let r = fixed(t * d, 1.0, [t, d]).flip([0]);
    let loss = |moe: &SparseMoe<CpuAutodiff>| (moe.forward(x.clone()).hidden * r.clone()).sum();
    if name.starts_with("capacity") {
        assert!(moe.forward(x.clone()).routing.dropped > 0, "{name}: nothing dropped");
    }
    type Pick = fn(&mut SparseMoe<CpuAutodiff>) -> &mut Param<Tensor<CpuAutodiff, 2>>;
    let mut params: Vec<(&str, Pick)> = vec![("gate", |m| &mut m.router.gate.weight)];
    if moe.shared.as_ref().is_some_and(|s| s.gate.is_some()) {
        params.push(("shared gate", |m| &mut m.shared.as_mut().unwrap().gate.as_mut().unwrap().weight));
    }
    let grads = loss(&moe).backward();
    let eps = 1e-3;
    for (param, pick) in params {
        let mut probe = moe.clone();
        let value = pick(&mut probe).val();
        let shape = value.dims();
        let analytic = host(value.grad(&grads).unwrap_or_else(|| panic!("{name}: the {param} gets no gradient")));
        let weight = host(value.inner());
        for i in 0..weight.len() {
            let at = |delta: f32| {
                let mut w = weight.clone();
                w[i] += delta;
                let mut moved = moe.clone();
                *pick(&mut moved) =
                    Param::from_tensor(Tensor::from_data(TensorData::new(w, shape), &device).require_grad());
                host(loss(&moved))[0]
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() <= 1e-2 * (1.0 + analytic[i].abs()),
                "{name}, {param}[{i}]: autodiff {} vs finite differences {numeric}",
                analytic[i]
            );
        }
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
    let config = routed(SparseMoeConfig::new(1, 4, 1).with_top_k(1), |r| r.jitter_noise = j);
    let x: Vec<f32> = (0..t).map(|i| 0.5 + i as f32 / t as f32).collect();

    let training = config.init::<CpuAutodiff>(&device);
    let w = host(training.router.gate.weight.val())[0];
    let input = Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(x.clone(), [t, 1]), &device);
    let logits = host(training.forward(input).routing.router_logits);
    let u: Vec<f32> = logits.iter().zip(&x).map(|(l, x)| l / (w * x)).collect();
    let (lo, hi) = u.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &u| (lo.min(u), hi.max(u)));
    assert!(lo >= 1.0 - j as f32 - 1e-5 && hi <= 1.0 + j as f32 + 1e-5, "noise outside [1 - j, 1 + j]: {lo}..{hi}");
    // 256 uniform draws cover most of the interval.
    assert!(lo < 1.0 - 0.8 * j as f32 && hi > 1.0 + 0.8 * j as f32, "noise too narrow: {lo}..{hi}");

    let inference = config.init::<Cpu>(&device);
    let w = host(inference.router.gate.weight.val())[0];
    let input = Tensor::<Cpu, 2>::from_data(TensorData::new(x.clone(), [t, 1]), &device);
    let logits = host(inference.forward(input).routing.router_logits);
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
        scoring: Scoring::Sigmoid,
        normalize_top_k: false,
        scaling_factor: 2.5,
        jitter_noise: 0.01,
        capacity_factor: Some(1.25),
        eval_capacity_factor: Some(2.0),
        expert_bias: true,
        bias_update_rate: 0.001,
        n_groups: 2,
        top_k_groups: 1,
        expert_choice: false,
        noisy_gating: false,
        n_shared_experts: 2,
        shared_d_ff: Some(40),
        shared_expert_gate: true,
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
    assert_eq!(hf["scoring_func"], "sigmoid");
    assert_eq!(hf["topk_method"], "noaux_tc");
    assert_eq!((hf["n_group"].clone(), hf["topk_group"].clone()), (2.into(), 1.into()));
    assert_eq!(hf["n_shared_experts"], 2);
    assert_eq!(hf["shared_expert_intermediate_size"], 40);
    let back: HfMixtralConfig = serde_json::from_value(hf).unwrap();
    assert_eq!(back.to_mixtral().unwrap().routing, routing);
    let choice = MixtralConfig {
        routing: RoutingConfig { expert_choice: true, capacity_factor: Some(1.5), ..Default::default() },
        ..MixtralConfig::tiny()
    };
    let hf = serde_json::to_value(HfMixtralConfig::from_mixtral(&choice, "float32")).unwrap();
    assert_eq!(hf["expert_choice"], true);
    let back: HfMixtralConfig = serde_json::from_value(hf).unwrap();
    assert_eq!(back.to_mixtral().unwrap().routing, choice.routing);
    let mixtral = serde_json::to_value(HfMixtralConfig::from_mixtral(&MixtralConfig::tiny(), "float32")).unwrap();
    for key in [
        "norm_topk_prob",
        "capacity_factor",
        "eval_capacity_factor",
        "scoring_func",
        "topk_method",
        "n_group",
        "n_shared_experts",
        "routed_scaling_factor",
    ] {
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
    let refused = [
        (RoutingConfig { n_groups: 3, ..Default::default() }, "routing.n_groups"),
        (RoutingConfig { n_groups: 4, top_k_groups: 5, ..Default::default() }, "routing.top_k_groups"),
        // One group of one expert cannot hold top-2.
        (RoutingConfig { n_groups: 4, top_k_groups: 1, ..Default::default() }, "routing.top_k_groups"),
        (RoutingConfig { scaling_factor: 0.0, ..Default::default() }, "routing.scaling_factor"),
        (RoutingConfig { expert_choice: true, n_groups: 2, ..Default::default() }, "routing.expert_choice"),
        (RoutingConfig { bias_update_rate: -1.0, ..Default::default() }, "routing.bias_update_rate"),
        (RoutingConfig { noisy_gating: true, scoring: Scoring::Sigmoid, ..Default::default() }, "routing.noisy_gating"),
        (RoutingConfig { noisy_gating: true, expert_choice: true, ..Default::default() }, "routing.noisy_gating"),
        (RoutingConfig { shared_expert_gate: true, ..Default::default() }, "routing.shared_expert_gate"),
        (RoutingConfig { n_shared_experts: 1, shared_d_ff: Some(0), ..Default::default() }, "routing.shared_d_ff"),
    ];
    for (routing, field) in refused {
        let err = MixtralConfig { routing, ..MixtralConfig::tiny() }.validate().expect_err(field).to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    let unknown = r#"{"normalize_top_k": true, "jitter": 0.1}"#;
    assert!(serde_json::from_str::<RoutingConfig>(unknown).unwrap_err().to_string().contains("jitter"));

    let model = config.init::<Cpu>(&Default::default());
    let dir = tempfile::tempdir().unwrap();
    let options = moe_core::gguf::GgufExport::new(moe_core::gguf::GgmlType::F32);
    let err = moe_core::gguf::save_gguf(&model, dir.path().join("m.gguf"), &options).expect_err("refused").to_string();
    assert!(err.contains("routing.scoring"), "{err}");
    let raw = MixtralConfig {
        routing: RoutingConfig { normalize_top_k: false, ..Default::default() },
        ..MixtralConfig::tiny()
    };
    let model = raw.init::<Cpu>(&Default::default());
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
    assert_eq!(free.routing.dropped, 0);
    let free = host(free.hidden);

    let mut capped = dropless.clone();
    capped.router.routing.capacity_factor = Some(10.0);
    capped.router.routing.eval_capacity_factor = Some(1.0);
    let out = capped.forward(input());
    assert_eq!(moe_core::moe::expert_capacity(1.0, 4, 1, 2), 2);
    assert_eq!(out.routing.dropped, 1);
    let got = host(out.hidden);
    for token in [0, 1, 3] {
        assert_eq!(&got[2 * token..2 * token + 2], &free[2 * token..2 * token + 2], "token {token}");
    }
    assert_eq!(&got[4..6], &[0.0, 0.0], "the third token of expert 0 is dropped");

    // Factor 2 = E / K: every expert can take every token.
    capped.router.routing.eval_capacity_factor = Some(2.0);
    let out = capped.forward(input());
    assert_eq!(out.routing.dropped, 0);
    assert_eq!(host(out.hidden), free);

    // While training the training factor counts (10: nothing dropped), then 1 drops one.
    let training = two_expert_layer::<CpuAutodiff>(routed(base, |r| {
        r.capacity_factor = Some(10.0);
        r.eval_capacity_factor = Some(1.0);
    }));
    let input = || Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(x.clone(), [4, 2]), &device);
    assert_eq!(training.forward(input()).routing.dropped, 0);
    let mut training = training;
    training.router.routing.capacity_factor = Some(1.0);
    assert_eq!(training.forward(input()).routing.dropped, 1);
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()), "{what}: {got:?} vs {want:?}");
    }
}

/// DeepSeek-V3's router by hand, on one token whose gate logits are `[2, -1, 0.5, 1.5]` (an
/// identity gate): sigmoid scores `s = [0.881, 0.269, 0.622, 0.818]`.
#[test]
fn sigmoid_scores_bias_and_groups_choose_and_weight_as_deepseek_v3() {
    let device = Default::default();
    let logits = [2.0f32, -1.0, 0.5, 1.5];
    let s: Vec<f64> = logits.iter().map(|&l| 1.0 / (1.0 + (-(l as f64)).exp())).collect();
    let route = |config: SparseMoeConfig, bias: Option<[f32; 4]>| -> (Vec<i64>, Vec<f32>) {
        let mut moe = config.init::<Cpu>(&device);
        let eye: Vec<f32> = (0..16).map(|i| if i % 5 == 0 { 1.0 } else { 0.0 }).collect();
        moe.router.gate.weight = Param::from_tensor(Tensor::from_data(TensorData::new(eye, [4, 4]), &device));
        if let Some(b) = bias {
            *moe.router.bias.as_mut().expect("a bias") = Param::from_tensor(Tensor::from_floats(b, &device));
        }
        let out = moe.router.forward(Tensor::from_floats([logits], &device));
        (out.experts.into_data().iter::<i64>().collect(), host(out.weights))
    };
    let sigmoid = routed(SparseMoeConfig::new(4, 4, 4).with_top_k(2), |r| r.scoring = Scoring::Sigmoid);

    // The two best scores, renormalised.
    let (experts, weights) = route(sigmoid.clone(), None);
    assert_eq!(experts, [0, 3]);
    assert_close(&weights, &[s[0] / (s[0] + s[3]), s[3] / (s[0] + s[3])], "sigmoid top-2");
    let (_, weights) = route(routed(sigmoid.clone(), |r| r.normalize_top_k = false), None);
    assert_close(&weights, &[s[0], s[3]], "raw sigmoid weights");

    // A bias of 0.3 lifts expert 2 to 0.922, first; it is weighted by its unbiased score.
    let biased = routed(sigmoid, |r| r.expert_bias = true);
    let (experts, weights) = route(biased.clone(), Some([0.0, 0.0, 0.3, 0.0]));
    assert_eq!(experts, [2, 0]);
    assert_close(&weights, &[s[2] / (s[2] + s[0]), s[0] / (s[2] + s[0])], "biased choice");

    // Groups {0, 1} and {2, 3} score 0.881 + 0.269 = 1.150 and 0.922 + 0.818 = 1.740: with one
    // group allowed, both experts come from the second, and the weights are scaled by 2.
    let grouped = routed(biased, |r| {
        r.n_groups = 2;
        r.top_k_groups = 1;
        r.scaling_factor = 2.0;
    });
    let (experts, weights) = route(grouped, Some([0.0, 0.0, 0.3, 0.0]));
    assert_eq!(experts, [2, 3]);
    assert_close(&weights, &[2.0 * s[2] / (s[2] + s[3]), 2.0 * s[3] / (s[2] + s[3])], "group-limited");
}

/// Auxiliary-loss-free balancing: each bias moves by the rate towards the mean load, from the
/// counts a forward pass reports; the bias never gets a gradient.
#[test]
fn expert_bias_moves_towards_the_mean_load_and_is_not_differentiated() {
    let moved = moe_core::moe::updated_expert_bias(&[0.0, 0.1, -0.2, 0.0], &[5, 1, 3, 3], 0.01);
    assert_close(&moved, &[-0.01, 0.11, -0.2, 0.0], "mean 3");

    let device = Default::default();
    let routing = RoutingConfig { scoring: Scoring::Sigmoid, bias_update_rate: 0.01, ..Default::default() };
    let config = MixtralConfig { routing, ..MixtralConfig::tiny() };
    let mut model = config.init::<CpuAutodiff>(&device);
    let ids = Tensor::<CpuAutodiff, 2, burn::tensor::Int>::from_ints([[1, 5, 9, 3, 7, 2]], &device);
    let out = model.forward(ids.clone());
    let expert_counts = out.expert_counts();
    for counts in &expert_counts {
        assert_eq!(counts.iter().sum::<usize>(), 6 * config.top_k);
    }
    let grads = out.logits.sum().backward();
    let bias = |model: &moe_core::model::Mixtral<CpuAutodiff>, l: usize| {
        model.layers[l].moe().unwrap().router.bias.as_ref().expect("a bias").val()
    };
    assert!(bias(&model, 0).grad(&grads).is_none(), "the bias got a gradient");
    model.update_expert_biases(&expert_counts);
    for (l, counts) in expert_counts.iter().enumerate() {
        let want = moe_core::moe::updated_expert_bias(&[0.0; 4], counts, 0.01);
        let want: Vec<f64> = want.iter().map(|&b| b as f64).collect();
        assert_close(&host(bias(&model, l)), &want, &format!("layer {l}"));
    }
}

/// Shared experts add their block's output (times the sigmoid gate when gated) to the routed
/// sum; with every routed expert's output zeroed, the layer is the dense SwiGLU block.
#[test]
fn shared_experts_add_a_dense_block_to_the_routed_sum() {
    use burn::tensor::activation::sigmoid;
    let device = Default::default();
    let x = Tensor::<Cpu, 2>::random([5, 6], Distribution::Normal(0.0, 1.0), &device);
    for gated in [false, true] {
        let config = routed(SparseMoeConfig::new(6, 8, 4).with_top_k(2), |r| {
            r.n_shared_experts = 2;
            r.shared_expert_gate = gated;
        });
        let with = config.init::<Cpu>(&device);
        // Burn initialises parameters on first use, and a clone of an uninitialised module draws
        // its own: run it once before cloning.
        let got = host(with.forward(x.clone()).hidden);
        let shared = with.shared.as_ref().expect("shared experts");
        assert_eq!(shared.ffn.down.weight.val().dims(), [16, 6], "two experts' width, fused");
        let block = host(shared.ffn.forward(x.clone()));
        let gate = match &shared.gate {
            Some(g) => host(sigmoid(g.forward(x.clone()))),
            None => vec![1.0; 5],
        };
        let scaled: Vec<f64> = block.iter().enumerate().map(|(i, &b)| (b * gate[i / 6]) as f64).collect();

        let mut alone = with.clone();
        alone.shared = None;
        let routed_only = host(alone.forward(x.clone()).hidden);
        let want: Vec<f64> = routed_only.iter().zip(&scaled).map(|(&r, s)| r as f64 + s).collect();
        assert!(got.iter().zip(&want).all(|(g, w)| (*g as f64 - w).abs() < 1e-5), "gated {gated}: {got:?} vs {want:?}");

        let mut dense = with.clone();
        for ffn in &mut dense.experts.ffns {
            ffn.down.weight = Param::from_tensor(ffn.down.weight.val().zeros_like());
        }
        let got = host(dense.forward(x.clone()).hidden);
        assert!(got.iter().zip(&scaled).all(|(g, w)| (*g as f64 - w).abs() < 1e-6), "dense, gated {gated}");
    }
}

/// Each routing family in a whole model: decoding one token at a time through the KV cache
/// gives the full forward's logits, and the Hub export (config and tensors, the bias and shared
/// block included) reloads to the same model.
#[test]
fn routing_options_decode_with_the_cache_and_survive_export() {
    use moe_core::io::{load_hub_checkpoint, save_hub_checkpoint, WeightDtype};
    let device = Default::default();
    let deepseek = RoutingConfig {
        scoring: Scoring::Sigmoid,
        bias_update_rate: 0.01,
        n_groups: 2,
        top_k_groups: 1,
        scaling_factor: 2.5,
        n_shared_experts: 1,
        ..Default::default()
    };
    let qwen = RoutingConfig {
        normalize_top_k: false,
        n_shared_experts: 1,
        shared_d_ff: Some(24),
        shared_expert_gate: true,
        ..Default::default()
    };
    for routing in [deepseek, qwen] {
        let config = MixtralConfig { vocab_size: 97, max_seq_len: 32, routing, ..MixtralConfig::tiny() };
        let mut model = config.init::<Cpu>(&device);
        model.update_expert_biases(&vec![vec![5, 0, 1, 2]; config.n_layers]);
        let (b, s) = (2, 9);
        let tokens: Vec<i64> = (0..b * s).map(|i| (i as i64 * 37 + 11) % 97).collect();
        let ids = |v: Vec<i64>, b: usize| {
            let s = v.len() / b;
            Tensor::<Cpu, 2, burn::tensor::Int>::from_data(TensorData::new(v, [b, s]), &device)
        };
        let full = host(model.forward(ids(tokens.clone(), b)).logits);
        let mut cache = model.new_cache(b, s);
        let mut outs =
            vec![model.forward_cached(ids([&tokens[..4], &tokens[s..s + 4]].concat(), b), &mut cache).logits];
        for p in 4..s {
            outs.push(model.forward_cached(ids(vec![tokens[p], tokens[s + p]], b), &mut cache).logits);
        }
        let cached = host(Tensor::cat(outs, 1));
        let diff = crate::common::max_abs_diff(&cached, &full);
        assert!(diff <= 1e-5, "{:?}: cached decoding differs by {diff}", config.routing);

        let dir = tempfile::tempdir().unwrap();
        save_hub_checkpoint(&model, dir.path(), WeightDtype::F32).unwrap();
        let again = load_hub_checkpoint::<Cpu>(dir.path(), &device).unwrap();
        assert_eq!(again.config().routing, config.routing);
        let reloaded = host(again.forward(ids(tokens.clone(), b)).logits);
        assert_eq!(reloaded, full, "{:?}: the export reloads to another model", config.routing);
    }
}

/// Expert choice: with the identity gate on one-hot-ish inputs each expert takes its `C` best
/// tokens by softmax score and weights them by that score; with `C = T` every expert takes
/// every token (the dense mixture by scores); without autodiff it routes by token choice with
/// the raw scores.
#[test]
fn expert_choice_takes_each_experts_best_tokens() {
    let device = Default::default();
    // 4 tokens, 2 experts, top-1, factor 1: C = ceil(4 * 1 / 2) = 2.
    let x = vec![2.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5, 0.0];
    let config = routed(SparseMoeConfig::new(2, 4, 2).with_top_k(1), |r| r.expert_choice = true);
    let moe = two_expert_layer::<CpuAutodiff>(config.clone());
    let input = || Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(x.clone(), [4, 2]), &device);
    let out = moe.forward(input());
    // Scores of expert 0 by token: softmax([2, 0]) = 0.88, [1, 0] = 0.73, [0, 1] = 0.27,
    // [0.5, 0] = 0.62: expert 0 takes tokens 0 and 1, expert 1 (the complements) 2 and 3.
    let experts: Vec<i64> = out.routing.experts.into_data().iter::<i64>().collect();
    assert_eq!(experts, [0, -1, 0, -1, -1, 1, -1, 1]);
    assert_eq!((out.routing.counts, out.routing.dropped), (vec![2, 2], 0));
    let got = host(out.hidden);
    for (token, expert) in [(0usize, 0usize), (1, 0), (2, 1), (3, 1)] {
        let row = &x[2 * token..2 * token + 2];
        let max = row[0].max(row[1]);
        let z: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let score = (row[expert] - max).exp() / z;
        let alone = Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(row.to_vec(), [1, 2]), &device);
        let ffn = host(moe.experts.forward_expert(expert, alone));
        for j in 0..2 {
            let want = score * ffn[j];
            assert!((got[2 * token + j] - want).abs() < 1e-6, "token {token}: {} vs {want}", got[2 * token + j]);
        }
    }

    // Factor 2 = E / K: C = T, every expert on every token, weighted by its score.
    let everyone = two_expert_layer::<CpuAutodiff>(routed(config.clone(), |r| r.capacity_factor = Some(2.0)));
    let out = everyone.forward(input());
    assert_eq!(out.routing.counts, vec![4, 4]);
    let scores = everyone.router.forward(input()).scores.transpose().unsqueeze_dim::<3>(2); // [E, T, 1]
    let dense = host((everyone.experts.forward_all(input()) * scores).sum_dim(0).squeeze_dim::<2>(0));
    assert!(crate::common::max_abs_diff(&host(out.hidden), &dense) < 1e-6);

    // Inference: each token's top-1 expert, weighted by its raw score.
    let inference = two_expert_layer::<Cpu>(config);
    let input = || Tensor::<Cpu, 2>::from_data(TensorData::new(x.clone(), [4, 2]), &device);
    // Run once before cloning: an uninitialised clone would draw experts of its own.
    let out = inference.forward(input());
    let token_choice = {
        let mut m = inference.clone();
        m.router.routing = RoutingConfig { normalize_top_k: false, ..Default::default() };
        m
    };
    assert_eq!(out.routing.experts.dims(), [4, 1]);
    assert_eq!(host(out.hidden), host(token_choice.forward(input()).hidden));
}
