//! Incremental decoding with the KV cache equals full recomputation. (That cached greedy
//! decoding reproduces transformers' `generate` is tested through `moe_infer::generate`.)

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use moe_core::config::MixtralConfig;
use moe_core::model::Mixtral;

use crate::common::*;

fn ids(v: Vec<i64>, b: usize) -> Tensor<Cpu, 2, Int> {
    let s = v.len() / b;
    Tensor::from_data(TensorData::new(v, [b, s]), &Default::default())
}

/// Logits of `tokens` fed in chunks of the given sizes through the cache.
fn chunked_logits(model: &Mixtral<Cpu>, tokens: &[i64], b: usize, chunks: &[usize]) -> Vec<f32> {
    let s = tokens.len() / b;
    let mut cache = model.new_cache(b, s);
    let mut start = 0;
    let mut outs = Vec::new();
    for &len in chunks {
        let chunk: Vec<i64> = (0..b)
            .flat_map(|row| tokens[row * s + start..row * s + start + len].to_vec())
            .collect();
        outs.push(model.forward_cached(ids(chunk, b), &mut cache, model.config().top_k).logits);
        start += len;
    }
    assert_eq!(start, s);
    host(Tensor::cat(outs, 1))
}

#[test]
fn incremental_decoding_equals_full_recompute() {
    let device = Default::default();
    for window in [None, Some(1), Some(3), Some(5), Some(64)] {
        let config = MixtralConfig {
            vocab_size: 97,
            d_model: 32,
            d_ff: 48,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            max_seq_len: 64,
            sliding_window: window,
            ..MixtralConfig::tiny()
        };
        let model = config.init::<Cpu>(&device);
        let (b, s) = (2, 13);
        let tokens: Vec<i64> = Tensor::<Cpu, 1>::random([b * s], Distribution::Uniform(0.0, 97.0), &device)
            .int()
            .into_data()
            .iter::<i64>()
            .collect();
        let full = host(model.forward(ids(tokens.clone(), b)).logits);
        // A prompt then single tokens (crossing every window boundary), and uneven chunks.
        let mut one_by_one = vec![4];
        one_by_one.extend([1; 9]);
        for chunks in [one_by_one, vec![13], vec![2, 5, 1, 5]] {
            let inc = chunked_logits(&model, &tokens, b, &chunks);
            let diff = max_abs_diff(&inc, &full);
            assert!(diff <= 1e-5, "window {window:?}, chunks {chunks:?}: {diff}");
        }
    }
}
