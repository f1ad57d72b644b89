//! Noisy top-k gating (Shazeer et al. 2017): the noisy choice, importance and load against the
//! paper's formulas computed here in f64, the gradients of the gate and noise weights against
//! finite differences, inference by the clean logits, and the trip through export.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use moe_core::config::MixtralConfig;
use moe_core::loss::{cv_squared, importance_load_loss};
use moe_core::moe::{Router, RouterConfig, RoutingConfig, SparseMoeConfig, NOISE_FLOOR};

use crate::common::{host, Cpu, CpuAutodiff};

const T: usize = 6;
const D: usize = 3;
const E: usize = 4;
const K: usize = 2;

fn noisy() -> RoutingConfig {
    RoutingConfig { noisy_gating: true, ..Default::default() }
}

/// Deterministic values in `[-scale, scale]`.
fn fixed(n: usize, scale: f32, salt: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 1.37 + salt).sin() * scale).collect()
}

/// The inputs of one case: tokens, gate and noise weights (`[D, E]`), standard-normal draws.
struct Case {
    x: Vec<f32>,
    gate: Vec<f32>,
    noise: Vec<f32>,
    sample: Vec<f32>,
}

impl Case {
    fn new() -> Self {
        Self {
            x: fixed(T * D, 1.5, 0.4),
            gate: fixed(D * E, 0.9, 1.1),
            noise: fixed(D * E, 0.7, 2.3),
            sample: fixed(T * E, 1.2, 0.9),
        }
    }

    fn router<B: Backend>(&self, gate: &[f32], noise: &[f32]) -> Router<B> {
        let device = Default::default();
        let param = |w: &[f32]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(w.to_vec(), [D, E]), &device).require_grad())
        };
        let mut router = RouterConfig::new(D, E, K).with_routing(noisy()).init::<B>(&device);
        router.gate.weight = param(gate);
        router.noise.as_mut().expect("noisy gating has noise weights").weight = param(noise);
        router
    }

    fn tensor<B: Backend>(values: &[f32], shape: [usize; 2]) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
    }
}

/// `erf` through Numerical Recipes' Chebyshev fit of `erfc` (fractional error below 1.2e-7
/// everywhere), independent of the `erf` kernel under test.
fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

fn phi(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

fn cv2(v: &[f64]) -> f64 {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
    var / (mean * mean + 1e-10)
}

/// What the paper's formulas give for a case.
struct Reference {
    /// Chosen experts per token, best first.
    experts: Vec<Vec<usize>>,
    /// Their gates.
    gates: Vec<Vec<f64>>,
    importance: Vec<f64>,
    load: Vec<f64>,
}

/// The paper's gates, importance and load for `case` (noise drawn when `with_noise`).
fn reference(case: &Case, with_noise: bool) -> Reference {
    let dot =
        |w: &[f32], t: usize, e: usize| (0..D).map(|j| case.x[t * D + j] as f64 * w[j * E + e] as f64).sum::<f64>();
    let (mut experts, mut gates) = (vec![], vec![]);
    let (mut importance, mut load) = (vec![0.0; E], vec![0.0; E]);
    for t in 0..T {
        let clean: Vec<f64> = (0..E).map(|e| dot(&case.gate, t, e)).collect();
        let std: Vec<f64> = (0..E).map(|e| (1.0 + dot(&case.noise, t, e).exp()).ln() + NOISE_FLOOR).collect();
        let h: Vec<f64> =
            (0..E).map(|e| clean[e] + if with_noise { case.sample[t * E + e] as f64 * std[e] } else { 0.0 }).collect();
        let mut order: Vec<usize> = (0..E).collect();
        order.sort_by(|&a, &b| h[b].total_cmp(&h[a]));
        let chosen = order[..K].to_vec();
        let z: f64 = chosen.iter().map(|&e| h[e].exp()).sum();
        let g: Vec<f64> = chosen.iter().map(|&e| h[e].exp() / z).collect();
        for (&e, &gate) in chosen.iter().zip(&g) {
            importance[e] += gate;
        }
        for e in 0..E {
            // kth_excluding(H, k, e): the k-th largest entry of H other than e.
            let others: Vec<usize> = order.iter().copied().filter(|&o| o != e).collect();
            let threshold = h[others[K - 1]];
            load[e] += phi((clean[e] - threshold) / std[e]);
        }
        experts.push(chosen);
        gates.push(g);
    }
    Reference { experts, gates, importance, load }
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

/// The router chooses by the noisy logits and weights by their softmax over the chosen k; the
/// importance and load are the paper's sums, the load through `Φ` and `kth_excluding`; the
/// loss is `CV(importance)² + CV(load)²`. Without a draw (inference) the clean logits route.
#[test]
fn importance_and_load_follow_the_paper() {
    let case = Case::new();
    let router = case.router::<Cpu>(&case.gate, &case.noise);
    for with_noise in [true, false] {
        let sample = with_noise.then(|| Case::tensor::<Cpu>(&case.sample, [T, E]));
        let out = router.forward_with_noise(Case::tensor(&case.x, [T, D]), sample);
        let Reference { experts, gates, importance, load } = reference(&case, with_noise);
        let got: Vec<usize> = out.experts.into_data().iter::<i64>().map(|e| e as usize).collect();
        assert_eq!(got, experts.concat(), "noise {with_noise}");
        assert_close(&host(out.weights), &gates.concat(), "gates");
        let stats = out.importance_load.expect("noisy gating reports importance and load");
        assert_close(&host(stats.importance.clone()), &importance, "importance");
        assert_close(&host(stats.load.clone()), &load, "load");
        let loss = host(importance_load_loss(&[stats]))[0] as f64;
        let want = cv2(&importance) + cv2(&load);
        assert!((loss - want).abs() <= 1e-5 * (1.0 + want), "loss {loss} vs {want}");
    }
    // The noise moved some token's choice, or the case tests less than it claims.
    assert_ne!(reference(&case, true).experts, reference(&case, false).experts);
    // Equal entries have no variation.
    let flat = host(cv_squared(Tensor::<Cpu, 1>::from_floats([3.0, 3.0, 3.0], &Default::default())))[0];
    assert_eq!(flat, 0.0);
}

/// With the draws fixed, the gradient of the mixed output plus the importance + load loss,
/// with respect to every entry of the gate and of the noise weights, matches central
/// differences (the noise weights learn through the noisy gates and the load's `Φ`).
#[test]
fn gate_and_noise_gradients_match_finite_differences() {
    let case = Case::new();
    let r = Case::tensor::<CpuAutodiff>(&fixed(T * K, 1.0, 3.1), [T, K]);
    let loss = |router: &Router<CpuAutodiff>| {
        let sample = Case::tensor::<CpuAutodiff>(&case.sample, [T, E]);
        let out = router.forward_with_noise(Case::tensor(&case.x, [T, D]), Some(sample));
        (out.weights * r.clone()).sum() + importance_load_loss(&[out.importance_load.unwrap()])
    };
    let router = case.router::<CpuAutodiff>(&case.gate, &case.noise);
    let grads = loss(&router).backward();
    let gate_grad = host(router.gate.weight.val().grad(&grads).expect("the gate is trained"));
    let noise_grad = host(router.noise.as_ref().unwrap().weight.val().grad(&grads).expect("the noise is trained"));
    assert!(noise_grad.iter().any(|g| g.abs() > 1e-3), "the noise weights learn: {noise_grad:?}");
    let eps = 1e-3;
    for (name, analytic) in [("gate", &gate_grad), ("noise", &noise_grad)] {
        for i in 0..D * E {
            let at = |delta: f32| {
                let (mut gate, mut noise) = (case.gate.clone(), case.noise.clone());
                if name == "gate" {
                    gate[i] += delta;
                } else {
                    noise[i] += delta;
                }
                host(loss(&case.router::<CpuAutodiff>(&gate, &noise)))[0]
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() <= 1e-2 * (1.0 + analytic[i].abs()),
                "{name}[{i}]: autodiff {} vs finite differences {numeric}",
                analytic[i]
            );
        }
    }
}

/// Training (autodiff) draws fresh noise each call, so the choice varies; inference routes by
/// the clean logits and computes exactly what the same layer without noisy gating computes.
/// The noise weights start at zero (the same noise for every expert, `softplus(0) + 0.01`).
#[test]
fn noise_only_while_training_and_zero_at_init() {
    let device = Default::default();
    let config = SparseMoeConfig::new(8, 12, 4).with_top_k(2).with_routing(noisy());
    let x = Tensor::<Cpu, 2>::from_data(TensorData::new(fixed(32 * 8, 1.0, 0.2), [32, 8]), &device);

    let layer = config.init::<Cpu>(&device);
    let noise = host(layer.router.noise.as_ref().unwrap().weight.val());
    assert!(noise.iter().all(|&w| w == 0.0));
    // Run once before cloning: an uninitialised clone would draw weights of its own.
    let out = layer.forward(x.clone());
    assert!(out.routing.importance_load.is_some());
    let mut plain = layer.clone();
    plain.router.noise = None;
    plain.router.routing = RoutingConfig::default();
    let want = plain.forward(x.clone());
    assert!(want.routing.importance_load.is_none());
    assert_eq!(host(out.hidden), host(want.hidden), "inference is Mixtral's routing");
    assert_eq!(host(layer.forward(x.clone()).routing.router_logits), host(want.routing.router_logits));

    let training = config.init::<CpuAutodiff>(&device);
    let x = Tensor::<CpuAutodiff, 2>::from_inner(x);
    let choices: Vec<Vec<i64>> =
        (0..4).map(|_| training.forward(x.clone()).routing.experts.into_data().iter::<i64>().collect()).collect();
    assert!(choices.windows(2).any(|w| w[0] != w[1]), "training draws noise");
}

/// The Hub export carries the option (`noisy_gating`) and the noise weights
/// (`block_sparse_moe.gate_noise`); GGUF, read by runtimes that route by the clean logits as
/// inference here does, is written without them.
#[test]
fn noisy_gating_survives_export() {
    use moe_core::io::{load_hub_checkpoint, save_hub_checkpoint, WeightDtype};
    let device = Default::default();
    let config = MixtralConfig { routing: noisy(), ..MixtralConfig::tiny() };
    let mut model = config.init::<Cpu>(&device);
    let [d, e] = model.layers[1].moe().unwrap().router.noise.as_ref().unwrap().weight.dims();
    let values = fixed(d * e, 0.5, 0.7);
    model.layers[1].moe_mut().unwrap().router.noise.as_mut().unwrap().weight =
        Param::from_tensor(Tensor::from_data(TensorData::new(values.clone(), [d, e]), &device));
    let dir = tempfile::tempdir().unwrap();
    save_hub_checkpoint(&model, dir.path(), WeightDtype::F32).unwrap();
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(hf["noisy_gating"], true);
    let again = load_hub_checkpoint::<Cpu>(dir.path(), &device).unwrap();
    assert_eq!(again.config().routing, config.routing);
    assert_eq!(host(again.layers[1].moe().unwrap().router.noise.as_ref().unwrap().weight.val()), values);

    let options = moe_core::gguf::GgufExport::new(moe_core::gguf::GgmlType::F32);
    let path = dir.path().join("m.gguf");
    moe_core::gguf::save_gguf(&model, &path, &options).expect("inference is Mixtral's");
    let file = moe_core::gguf::GgufFile::open(&path).unwrap();
    let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"blk.1.ffn_gate_inp.weight") && !names.iter().any(|n| n.contains("noise")), "{names:?}");
}
