//! Dense models (MistralForCausalLM), sparse upcycling and distillation: the Hub layout both
//! ways, cached decoding, the upcycled model's logits at initialisation, Drop-Upcycling's
//! re-initialised units, the distillation loss against its formula, and gradients through each
//! against finite differences or closed forms.

use burn::module::Param;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use moe_core::config::MixtralConfig;
use moe_core::convert::{merge_branches, upcycle, MergeConfig, RouterInit, UpcycleConfig};
use moe_core::io::{
    load_hub_checkpoint, load_hub_weights, save_hub_checkpoint, HubWeights, QuantizeOnLoad, WeightDtype,
};
use moe_core::loss::distillation_loss;
use moe_core::model::Mixtral;
use moe_core::model::{ExpertProj, ParamId, ParamMut, ParamRef};

use crate::common::{host, max_abs_diff, Cpu, CpuAutodiff};

fn dense_config() -> MixtralConfig {
    MixtralConfig { vocab_size: 61, max_seq_len: 32, ..MixtralConfig::tiny() }.to_dense(96)
}

fn ids<B: burn::tensor::backend::Backend>(b: usize, s: usize) -> Tensor<B, 2, Int> {
    let tokens: Vec<i64> = (0..b * s).map(|i| (i as i64 * 37 + 11) % 61).collect();
    Tensor::from_data(TensorData::new(tokens, [b, s]), &Default::default())
}

/// A dense model with its weights drawn (run once, so clones share them).
fn dense_model<B: burn::tensor::backend::Backend>() -> Mixtral<B> {
    let model = dense_config().init::<B>(&Default::default());
    let _ = model.forward(ids(1, 2));
    model
}

/// A dense model is written as transformers writes a MistralForCausalLM (`mlp.gate_proj`,
/// `up_proj`, `down_proj`; no router), reloads to the same logits, decodes through the KV cache
/// as the full forward computes, and reports no routing.
#[test]
fn dense_model_round_trips_through_the_hub_layout() {
    let device = Default::default();
    let model = dense_model::<Cpu>();
    let out = model.forward(ids(2, 9));
    assert!(out.routing.is_empty());
    let full = host(out.logits);

    let dir = tempfile::tempdir().unwrap();
    save_hub_checkpoint(&model, dir.path(), WeightDtype::F32).unwrap();
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (hf["model_type"].as_str(), hf["architectures"][0].as_str()),
        (Some("mistral"), Some("MistralForCausalLM"))
    );
    let weights = HubWeights::open(dir.path()).unwrap();
    let gate = weights.read_f32("model.layers.1.mlp.gate_proj.weight").unwrap().expect("gate_proj");
    assert_eq!(gate.shape, vec![96, 64]);
    assert!(weights.read_f32("model.layers.1.mlp.down_proj.weight").unwrap().is_some());
    assert!(weights.read_f32("model.layers.1.block_sparse_moe.gate.weight").unwrap().is_none());

    let again = load_hub_checkpoint::<Cpu>(dir.path(), &device).unwrap();
    assert_eq!(again.config(), model.config());
    assert_eq!(host(again.forward(ids(2, 9)).logits), full);

    let mut cache = model.new_cache(2, 9);
    let all = ids::<Cpu>(2, 9);
    let mut outs = vec![model.forward_cached(all.clone().narrow(1, 0, 5), &mut cache).logits];
    for p in 5..9 {
        outs.push(model.forward_cached(all.clone().narrow(1, p, 1), &mut cache).logits);
    }
    let diff = max_abs_diff(&host(Tensor::cat(outs, 1)), &full);
    assert!(diff <= 1e-5, "cached decoding differs by {diff}");
    assert!(model.clone().set_experts_per_token(2).is_err());
}

/// A dense model goes to GGUF as llama.cpp writes a Mistral/Llama (`llama` architecture, no
/// expert keys, `blk.N.ffn_{gate,up,down}`) and comes back the same model: exactly in f32, and
/// within Q8_0's rounding with the FFN and attention kept in their blocks.
#[test]
fn dense_model_round_trips_through_gguf() {
    use moe_core::gguf::{load_gguf, save_gguf, GgmlType, GgufExport, GgufFile};
    let device = Default::default();
    let model = dense_model::<Cpu>();
    let full = host(model.forward(ids(2, 9)).logits);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dense.gguf");
    save_gguf(&model, &path, &GgufExport::new(GgmlType::F32)).unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert!(file.get("llama.expert_count").is_none() && file.get("llama.expert_used_count").is_none());
    let gate = file.tensor("blk.1.ffn_gate.weight").expect("the dense FFN's gate");
    assert_eq!(gate.shape(), vec![96, 64]);
    assert!(file.tensor("blk.1.ffn_up.weight").is_some() && file.tensor("blk.1.ffn_down.weight").is_some());
    assert!(file.tensor("blk.0.ffn_gate_inp.weight").is_none(), "a dense model has no router");
    let again = load_gguf::<Cpu>(&path, &device).unwrap();
    assert!(again.config().dense && !again.config().shape_differs(model.config()), "{:?}", again.config());
    let diff = max_abs_diff(&host(again.forward(ids(2, 9)).logits), &full);
    assert!(diff <= 1e-5, "f32 GGUF logits differ by {diff}");

    let q8 = dir.path().join("dense-q8_0.gguf");
    save_gguf(&model, &q8, &GgufExport::new(GgmlType::Q8_0)).unwrap();
    let quantized = load_gguf::<Cpu>(&q8, &device).unwrap();
    let diff = max_abs_diff(&host(quantized.forward(ids(2, 9)).logits), &full);
    assert!(diff > 0.0 && diff <= 2e-2, "Q8_0 GGUF logits differ by {diff}");

    // The FFN alone in Q8_0 (`--experts-only`), from a file and quantized as it loads
    // (`--quantize-experts-only`): the same blocks, so the same logits.
    let ffn_q8 = dir.path().join("dense-ffn-q8_0.gguf");
    save_gguf(&model, &ffn_q8, &GgufExport::experts_only(GgmlType::Q8_0, GgmlType::F32)).unwrap();
    let from_file = load_gguf::<Cpu>(&ffn_q8, &device).unwrap();
    save_hub_checkpoint(&model, dir.path().join("hub"), WeightDtype::F32).unwrap();
    let weights = QuantizeOnLoad::experts_only(HubWeights::open(dir.path().join("hub")).unwrap(), GgmlType::Q8_0);
    let on_load = load_hub_weights::<Cpu>(model.config(), &weights.unwrap(), &device).unwrap();
    for m in [&from_file, &on_load] {
        assert!(m.layers[1].feed_forward.mlp().expect("dense").gate_up.blocks().is_some());
        assert!(m.layers[1].self_attn.q_proj.blocks().is_none());
    }
    assert_eq!(host(on_load.forward(ids(2, 9)).logits), host(from_file.forward(ids(2, 9)).logits));
}

/// With exact copies the upcycled model computes the dense logits, whatever the router says
/// (random routers here, top-2 of 4, top-3 of 4 whose weights are thirds, and one expert); the
/// dense FFN itself is a one-expert MoE.
#[test]
fn upcycled_model_computes_the_dense_logits() {
    let dense = dense_model::<Cpu>();
    let want = host(dense.forward(ids(2, 7)).logits);
    for (e, k) in [(4, 2), (4, 3), (1, 1)] {
        let config = UpcycleConfig { router_init: RouterInit::Normal(0.5), ..UpcycleConfig::new(e, k) };
        let moe = upcycle(dense.clone(), &config).unwrap();
        assert_eq!((moe.config().n_experts, moe.config().top_k, moe.config().dense), (e, k, false));
        let out = moe.forward(ids(2, 7));
        assert_eq!(out.routing.len(), 2);
        let diff = max_abs_diff(&host(out.logits), &want);
        assert!(diff <= 1e-5, "E{e} K{k}: the upcycled logits differ by {diff}");
    }
    let err = upcycle(dense.clone(), &UpcycleConfig::new(4, 5)).unwrap_err().to_string();
    assert!(err.contains("num_experts_per_tok"), "{err}");
    let moe = upcycle(dense, &UpcycleConfig::new(4, 2)).unwrap();
    let err = upcycle(moe, &UpcycleConfig::new(8, 2)).unwrap_err().to_string();
    assert!(err.contains("must be dense"), "{err}");
}

/// Drop-Upcycling re-draws `round(r * F)` hidden units of each expert (a gate and an up column
/// and a down row each), a different subset per expert; the rest stay the dense FFN's. Noise
/// moves every weight by about `noise * std`.
#[test]
fn drop_upcycling_redraws_a_fraction_of_each_experts_units() {
    let dense = dense_model::<Cpu>();
    let f = dense.config().d_ff;
    let weight = |m: &Mixtral<Cpu>, p: ParamId| match m.param(p).unwrap() {
        ParamRef::Rank2(w) => host(w.val()),
        ParamRef::Rank1(_) => unreachable!(),
    };
    let down = weight(&dense, ParamId::Mlp(0, ExpertProj::Down)); // [F, D]
    let gate_up = weight(&dense, ParamId::Mlp(0, ExpertProj::GateUp)); // [D, 2F]
    let d = down.len() / f;
    let config = UpcycleConfig { reinit_fraction: 0.25, seed: 7, ..UpcycleConfig::new(4, 2) };
    let moe = upcycle(dense.clone(), &config).unwrap();
    let mut subsets = Vec::new();
    for x in 0..4 {
        let new_down = weight(&moe, ParamId::Expert(0, x, ExpertProj::Down));
        let new_gate_up = weight(&moe, ParamId::Expert(0, x, ExpertProj::GateUp));
        let redrawn: Vec<usize> =
            (0..f).filter(|&u| new_down[u * d..(u + 1) * d] != down[u * d..(u + 1) * d]).collect();
        assert_eq!(redrawn.len(), f / 4, "expert {x}");
        for u in 0..f {
            let column = |w: &[f32], c: usize| (0..d).map(|r| w[r * 2 * f + c]).collect::<Vec<_>>();
            for c in [u, f + u] {
                let same = column(&new_gate_up, c) == column(&gate_up, c);
                assert_eq!(same, !redrawn.contains(&u), "expert {x}, unit {u}, column {c}");
            }
        }
        subsets.push(redrawn);
    }
    assert!(subsets.windows(2).any(|w| w[0] != w[1]), "every expert re-drew the same units");
    // The draws are the conversion's own: a seed gives the same experts whatever else draws
    // from the backend's generator meanwhile (tests beside this one do).
    let _ = Tensor::<Cpu, 1>::random([64], Distribution::Default, &Default::default());
    let again = upcycle(dense.clone(), &config).unwrap();
    for x in 0..4 {
        let p = ParamId::Expert(0, x, ExpertProj::GateUp);
        assert_eq!(weight(&again, p), weight(&moe, p), "expert {x} drawn again");
    }

    let noisy = upcycle(dense, &UpcycleConfig { expert_noise: 0.1, ..UpcycleConfig::new(2, 1) }).unwrap();
    let moved = weight(&noisy, ParamId::Expert(0, 1, ExpertProj::Down));
    let mean = down.iter().sum::<f32>() / down.len() as f32;
    let std = (down.iter().map(|w| (w - mean).powi(2)).sum::<f32>() / down.len() as f32).sqrt();
    let rms = (moved.iter().zip(&down).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / down.len() as f32).sqrt();
    assert!((rms / std - 0.1).abs() < 0.02, "noise of {} std, asked 0.1", rms / std);
    assert_ne!(moved, weight(&noisy, ParamId::Expert(0, 0, ExpertProj::Down)), "the copies differ");
}

/// Autodiff gradients of the training loss (LM + load balancing) against central differences
/// at the largest entries of each parameter checked: the dense FFN's, and in an upcycled model
/// (noised, so its experts differ) a router's and an expert's. Each expert has parameters of its
/// own: the copies' gradients differ.
#[test]
fn dense_and_upcycled_gradients_match_finite_differences() {
    let dense = dense_model::<CpuAutodiff>();
    check(&dense, &[ParamId::Mlp(0, ExpertProj::GateUp), ParamId::Mlp(1, ExpertProj::Down)], "dense");
    let config = UpcycleConfig { expert_noise: 0.2, router_init: RouterInit::Normal(0.3), ..UpcycleConfig::new(4, 2) };
    let moe = upcycle(dense, &config).unwrap();
    let _ = moe.forward(ids(1, 2));
    check(&moe, &[ParamId::Router(0), ParamId::Expert(1, 2, ExpertProj::Down)], "upcycled");

    let grads = crate::gradients::hf_loss(&moe, ids(2, 6)).backward();
    let grad = |x| match moe.param(ParamId::Expert(0, x, ExpertProj::Down)).unwrap() {
        ParamRef::Rank2(w) => w.val().grad(&grads).map(host),
        ParamRef::Rank1(_) => unreachable!(),
    };
    let taken: Vec<Vec<f32>> = (0..4).filter_map(grad).collect();
    assert!(taken.len() >= 2 && taken.windows(2).all(|w| w[0] != w[1]), "experts share gradients");
}

fn check(model: &Mixtral<CpuAutodiff>, params: &[ParamId], name: &str) {
    let loss = |m: &Mixtral<CpuAutodiff>| crate::gradients::hf_loss(m, ids(2, 6));
    let grads = loss(model).backward();
    for &param in params {
        let ParamRef::Rank2(p) = model.param(param).unwrap() else { unreachable!() };
        let (value, shape) = (host(p.val()), p.val().dims());
        let analytic = host(p.val().grad(&grads).unwrap_or_else(|| panic!("{name}: {param:?} gets no gradient")));
        let mut order: Vec<usize> = (0..analytic.len()).collect();
        order.sort_by(|&a, &b| analytic[b].abs().total_cmp(&analytic[a].abs()));
        let eps = 1e-3;
        for &i in &order[..3] {
            let at = |delta: f32| {
                let mut w = value.clone();
                w[i] += delta;
                let mut moved = model.clone();
                let Some(ParamMut::Rank2(p)) = moved.param_mut(param) else { unreachable!() };
                *p = Param::from_tensor(Tensor::from_data(TensorData::new(w, shape), &Default::default()));
                host(loss(&moved))[0]
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() <= 2e-3 + 2e-2 * analytic[i].abs(),
                "{name}, {param:?}[{i}]: autodiff {} vs finite differences {numeric}",
                analytic[i]
            );
        }
    }
}

/// `T² · KL(softmax(t / T) ‖ softmax(s / T))` averaged over positions, computed by hand in
/// f64; its gradient with respect to the student's logits is `T · (q - p) / positions`
/// (q the student's tempered distribution, p the teacher's), and the teacher gets none.
#[test]
fn distillation_loss_is_the_tempered_kl() {
    let device = Default::default();
    let (student, teacher, t) = ([[1.0f32, 2.0, 3.0], [0.5, -1.0, 0.0]], [[3.0f32, 1.0, 0.0], [0.0, 0.0, 2.0]], 2.0);
    let softmax = |row: &[f32]| {
        let e: Vec<f64> = row.iter().map(|&x| (x as f64 / t).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect::<Vec<f64>>()
    };
    let mut want = 0.0;
    let mut grad = Vec::new();
    for (s, te) in student.iter().zip(&teacher) {
        let (q, p) = (softmax(s), softmax(te));
        want += p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum::<f64>() * t * t / 2.0;
        grad.extend(q.iter().zip(&p).map(|(q, p)| t * (q - p) / 2.0));
    }
    let s = Tensor::<CpuAutodiff, 2>::from_floats(student, &device).reshape([1, 2, 3]).require_grad();
    let te = Tensor::<CpuAutodiff, 2>::from_floats(teacher, &device).reshape([1, 2, 3]).require_grad();
    let loss = distillation_loss(s.clone(), te.clone(), t);
    let got = host(loss.clone())[0] as f64;
    assert!((got - want).abs() <= 1e-6 * (1.0 + want), "{got} vs {want}");
    let grads = loss.backward();
    let g = host(s.grad(&grads).unwrap());
    for (g, w) in g.iter().zip(&grad) {
        assert!((*g as f64 - w).abs() <= 1e-6, "{g} vs {w}");
    }
    assert!(te.grad(&grads).is_none(), "the teacher is not trained");
    // Equal distributions: nothing to learn.
    let same = distillation_loss(s.clone().inner(), s.inner(), t);
    assert!(host(same)[0].abs() < 1e-7);
}

/// Branch-Train-MiX's merge: N identical branches make the model upcycling makes (the same
/// experts, the same logits); different branches give their FFNs as experts in order and the
/// mean of everything else.
#[test]
fn btx_merge_of_identical_branches_is_the_upcycled_model() {
    let dense = dense_model::<Cpu>();
    let upcycled = upcycle(dense.clone(), &UpcycleConfig { seed: 3, ..UpcycleConfig::new(3, 2) }).unwrap();
    let merged = merge_branches(
        vec![dense.clone(), dense.clone(), dense.clone()],
        &MergeConfig { seed: 3, ..MergeConfig::new(2) },
    )
    .unwrap();
    assert_eq!(merged.config(), upcycled.config());
    let weight = |m: &Mixtral<Cpu>, p: ParamId| match m.param(p).unwrap() {
        ParamRef::Rank2(w) => host(w.val()),
        ParamRef::Rank1(w) => host(w.val()),
    };
    for p in ParamId::all(merged.config()) {
        if !matches!(p, ParamId::Router(_)) {
            // The mean of three equal values is that value to an ulp.
            let diff = max_abs_diff(&weight(&merged, p), &weight(&upcycled, p));
            assert!(diff <= 1e-6, "{p:?} differs by {diff}");
        }
    }
    let want = host(dense.forward(ids(2, 7)).logits);
    for m in [&merged, &upcycled] {
        assert!(max_abs_diff(&host(m.forward(ids(2, 7)).logits), &want) <= 1e-5);
    }

    let other = dense_model::<Cpu>();
    let merged = merge_branches(vec![dense.clone(), other.clone()], &MergeConfig::new(1)).unwrap();
    let q = ParamId::Attention(0, moe_core::model::AttentionProj::Q);
    let mean: Vec<f32> = weight(&dense, q).iter().zip(weight(&other, q)).map(|(a, b)| (a + b) / 2.0).collect();
    assert!(max_abs_diff(&weight(&merged, q), &mean) <= 1e-7);
    assert_eq!(
        weight(&merged, ParamId::Expert(1, 1, ExpertProj::Down)),
        weight(&other, ParamId::Mlp(1, ExpertProj::Down))
    );
    assert_eq!(
        weight(&merged, ParamId::Expert(1, 0, ExpertProj::Down)),
        weight(&dense, ParamId::Mlp(1, ExpertProj::Down))
    );
    let err = merge_branches(vec![merged], &MergeConfig::new(1)).unwrap_err().to_string();
    assert!(err.contains("must be dense"), "{err}");
    let wider = dense_config().to_dense(64).init::<Cpu>(&Default::default());
    let err = merge_branches(vec![dense, wider], &MergeConfig::new(1)).unwrap_err().to_string();
    assert!(err.contains("branch 1"), "{err}");
}
