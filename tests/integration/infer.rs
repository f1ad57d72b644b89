//! moe-infer's engine against transformers: greedy `generate` and scoring.

use moe_core::io::load_hub_checkpoint;
use moe_core::MoeError;
use moe_infer::{generate, score, GenerateError, GenerationConfig, InferError, SamplingConfig};

use crate::common::*;

fn greedy(max_new_tokens: usize) -> GenerationConfig {
    GenerationConfig { max_new_tokens, sampling: SamplingConfig::default(), stop_tokens: vec![2] }
}

#[test]
fn greedy_generation_reproduces_transformers() {
    let device = Default::default();
    for name in MODELS {
        let model = load_hub_checkpoint::<Cpu>(fixture(name), &device).unwrap();
        let reference = Reference::load(name);
        let prompt: Vec<u32> = reference.i64("gen_prompt").1.iter().map(|&t| t as u32).collect();
        let want: Vec<u32> = reference.i64("gen_tokens").1.iter().map(|&t| t as u32).collect();
        let mut streamed = Vec::new();
        let out = generate(&model, std::slice::from_ref(&prompt), &greedy(want.len() - prompt.len()), |_, t| {
            streamed.push(t);
            true
        })
        .unwrap();
        assert_eq!(out.sequences[0], want, "{name}");
        assert_eq!(streamed, want[prompt.len()..], "{name}");

        // A batch of the same prompt twice gives the same tokens for both.
        let out = generate(&model, &[prompt.clone(), prompt.clone()], &greedy(8), |_, _| true).unwrap();
        assert_eq!(out.sequences[0], want[..prompt.len() + 8]);
        assert_eq!(out.sequences[1], want[..prompt.len() + 8]);

        // Prompts of different lengths in one (left-padded) batch: each gets what it gets alone,
        // the transformers prompt included (its continuation is known).
        let short: Vec<u32> = prompt[..3].to_vec();
        let longer: Vec<u32> = want[..prompt.len() + 4].to_vec();
        let batch = [short.clone(), prompt.clone(), longer.clone()];
        let together = generate(&model, &batch, &greedy(10), |_, _| true).unwrap();
        assert_eq!(together.prompt_tokens, 3 + prompt.len() + longer.len());
        assert_eq!(together.sequences[1], want[..prompt.len() + 10], "{name}");
        for (i, p) in batch.iter().enumerate() {
            let alone = generate(&model, std::slice::from_ref(p), &greedy(10), |_, _| true).unwrap();
            assert_eq!(together.sequences[i], alone.sequences[0], "{name}: prompt {i}");
        }
    }
}

/// Weights packed for the CPU kernels (what `moe-infer` does on flex) compute the same model:
/// every projection packed, the logits within f32 rounding of the unpacked model's and of
/// transformers', the same greedy tokens, and a weight asked for afterwards is the original.
#[test]
fn packed_weights_on_flex_compute_the_same_model() {
    use burn::tensor::Tensor;
    use moe_core::backend::Flex;
    let device = Default::default();
    for name in MODELS {
        let reference = Reference::load(name);
        let mut model = load_hub_checkpoint::<Flex>(fixture(name), &device).unwrap();
        let ids = reference.input_ids::<Flex>(&device);
        let before = host(model.forward(ids.clone()).logits);
        let down = model.layers[0].feed_forward.moe().map(|moe| moe.experts.ffns[1].down.weight.val().into_data());
        let c = model.config().clone();
        let projections = 1 + c.n_layers * (4 + 1 + 2 * c.n_experts); // head; attention, router, experts
                                                                      // Only where the CPU runs the kernels that read the layout.
        let x86 = moe_core::kernels::isa::has(moe_core::kernels::isa::Isa::Avx2);
        assert_eq!(model.pack_for_cpu(), if x86 { projections } else { 0 }, "{name}");
        assert_eq!(model.pack_for_cpu(), 0, "{name}: packing twice does nothing");
        let after = host(model.forward(ids).logits);
        assert!(max_abs_diff(&after, &before) <= 1e-5, "{name}: {}", max_abs_diff(&after, &before));
        assert!(max_abs_diff(&after, &reference.f32("logits").1) <= 1e-4, "{name}: vs transformers");

        let prompt: Vec<u32> = reference.i64("gen_prompt").1.iter().map(|&t| t as u32).collect();
        let want: Vec<u32> = reference.i64("gen_tokens").1.iter().map(|&t| t as u32).collect();
        let out = generate(&model, std::slice::from_ref(&prompt), &greedy(want.len() - prompt.len()), |_, _| true);
        assert_eq!(out.unwrap().sequences[0], want, "{name}");

        if let (Some(want), Some(moe), true) = (down, model.layers[0].feed_forward.moe(), x86) {
            let down = &moe.experts.ffns[1].down;
            assert!(down.packed().is_some());
            let got: Tensor<Flex, 2> = down.weight.val();
            assert_eq!(got.into_data(), want, "{name}: the unpacked weight");
            assert!(down.packed().is_none(), "{name}: materialised, the weight is what products read");
        }
    }
}

#[test]
fn scores_match_transformers() {
    let device = Default::default();
    for name in MODELS {
        let model = load_hub_checkpoint::<Cpu>(fixture(name), &device).unwrap();
        let reference = Reference::load(name);
        let (shape, ids) = reference.i64("input_ids");
        let batch: Vec<Vec<u32>> = ids.chunks(shape[1]).map(|r| r.iter().map(|&t| t as u32).collect()).collect();
        let out = score(&model, &batch).unwrap();
        assert!((out.mean_nll - reference.scalar("lm_loss") as f64).abs() <= 1e-5, "{name}");
        assert!((out.aux_loss - reference.scalar("aux_loss") as f64).abs() <= 1e-5, "{name}");
        let per_seq_mean = out.sequence_nll.iter().sum::<f64>() / out.sequence_nll.len() as f64;
        assert!((per_seq_mean - out.mean_nll).abs() <= 1e-5);
        assert!(max_abs_diff(&host(out.logits), &reference.f32("logits").1) <= 1e-4);
    }
}

#[test]
fn bad_inputs_are_errors() {
    let device = Default::default();
    let model = load_hub_checkpoint::<Cpu>(fixture("tiny-mixtral"), &device).unwrap();
    let err = generate(&model, &[vec![1, 512]], &greedy(4), |_, _| true).unwrap_err();
    assert!(matches!(err, GenerateError::TokenOutOfVocab { id: 512, .. }), "{err}");
    let err = generate(&model, &[vec![1; 250]], &greedy(10), |_, _| true).unwrap_err();
    assert!(matches!(err, GenerateError::ContextOverflow { needed: 260, max: 256 }), "{err}");
    let err = generate(&model, &[vec![]], &greedy(10), |_, _| true).unwrap_err();
    assert!(matches!(err, GenerateError::EmptyPrompt), "{err}");
    let err = generate(&model, &[vec![1, 2], vec![]], &greedy(1), |_, _| true).unwrap_err();
    assert!(matches!(err, GenerateError::EmptyPrompt), "{err}");
    let err = score(&model, &[vec![1, 2], vec![1, 2, 3]]).unwrap_err();
    assert!(matches!(err, InferError::RaggedBatch(_)), "{err}");
    let err = score(&model, &[vec![1, 600]]).unwrap_err();
    assert!(matches!(err, InferError::Generate(GenerateError::TokenOutOfVocab { id: 600, .. })), "{err}");
    assert!(matches!(score(&model, &[vec![7]]).unwrap_err(), InferError::TooShortToScore));
    // Experts per token outside 1..=E: an error, and the model keeps its setting.
    let mut model = model;
    for k in [0, 5] {
        let err = model.set_experts_per_token(k).unwrap_err();
        assert!(matches!(err, MoeError::ExpertsPerToken { got, n_experts: 4 } if got == k), "{err}");
    }
    assert_eq!(model.experts_per_token(), 2);
}

#[test]
fn experts_per_token_override_changes_the_function() {
    let device = Default::default();
    let mut model = load_hub_checkpoint::<Cpu>(fixture("tiny-mixtral"), &device).unwrap();
    let ids = Reference::load("tiny-mixtral").input_ids::<Cpu>(&device);
    let top2 = host(model.forward(ids.clone()).logits);
    model.set_experts_per_token(1).unwrap();
    let top1 = model.forward(ids.clone());
    assert_eq!(top1.routing[0].experts.dims()[1], 1, "one expert per token");
    model.set_experts_per_token(4).unwrap();
    let all = host(model.forward(ids.clone()).logits);
    assert!(max_abs_diff(&host(top1.logits), &top2) > 1e-3 && max_abs_diff(&all, &top2) > 1e-3);
    // Back to the config's value: the same function as before.
    model.set_experts_per_token(2).unwrap();
    assert_eq!(host(model.forward(ids).logits), top2);
}
