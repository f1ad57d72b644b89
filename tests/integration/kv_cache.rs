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
        let chunk: Vec<i64> = (0..b).flat_map(|row| tokens[row * s + start..row * s + start + len].to_vec()).collect();
        outs.push(model.forward_cached(ids(chunk, b), &mut cache).logits);
        start += len;
    }
    assert_eq!(start, s);
    host(Tensor::cat(outs, 1))
}

/// A random model small enough to test many windows quickly (vocabulary 97).
fn small_model(sliding_window: Option<usize>) -> Mixtral<Cpu> {
    let config = MixtralConfig {
        vocab_size: 97,
        d_model: 32,
        d_ff: 48,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        max_seq_len: 64,
        sliding_window,
        ..MixtralConfig::tiny()
    };
    config.init::<Cpu>(&Default::default())
}

#[test]
fn incremental_decoding_equals_full_recompute() {
    let device = Default::default();
    for window in [None, Some(1), Some(3), Some(5), Some(64)] {
        let model = small_model(window);
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

/// A left-padded batch gives each sequence the logits it gets alone: padding keys are masked,
/// RoPE positions start at each sequence's first real token, and the sliding window (counted in
/// cache indices, as transformers does) behaves the same across the padding.
#[test]
fn left_padded_batches_equal_each_sequence_alone() {
    for window in [None, Some(3), Some(6)] {
        let model = small_model(window);
        let lengths = [9usize, 4, 1, 7];
        let p = *lengths.iter().max().unwrap();
        let (decode, capacity) = (5, p + 5);
        let sequences: Vec<Vec<i64>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n + decode).map(|j| ((7 * i + 13 * j + 5) % 97) as i64).collect())
            .collect();

        // Each sequence alone: prompt, then one token at a time.
        let alone: Vec<Vec<f32>> = sequences
            .iter()
            .zip(lengths)
            .map(|(seq, n)| {
                let mut cache = model.new_cache(1, capacity);
                // The last-position-only head that generation uses (the batch below takes the
                // last row of the full logits, so the two paths are compared too).
                let last = model.next_token_logits(ids(seq[..n].to_vec(), 1), &mut cache);
                let mut outs = vec![last.unsqueeze_dim::<3>(1)];
                for &t in &seq[n..n + decode - 1] {
                    outs.push(model.forward_cached(ids(vec![t], 1), &mut cache).logits);
                }
                host(Tensor::cat(outs, 1)) // [1, decode, V]
            })
            .collect();

        // All together, left-padded (pad id 0), the same steps.
        let padding: Vec<usize> = lengths.iter().map(|&n| p - n).collect();
        let mut cache = model.new_cache(lengths.len(), capacity).with_left_padding(padding.clone());
        let prompt: Vec<i64> = sequences
            .iter()
            .zip(&padding)
            .flat_map(|(seq, &pad)| std::iter::repeat_n(0, pad).chain(seq[..p - pad].iter().copied()))
            .collect();
        let mut outs = vec![model.forward_cached(ids(prompt, lengths.len()), &mut cache).logits.narrow(1, p - 1, 1)];
        for step in 0..decode - 1 {
            let next: Vec<i64> = sequences.iter().zip(lengths).map(|(seq, n)| seq[n + step]).collect();
            outs.push(model.forward_cached(ids(next, lengths.len()), &mut cache).logits);
        }
        let batched = host(Tensor::cat(outs, 1)); // [B, decode, V]
        let per_row = decode * 97;
        for (i, want) in alone.iter().enumerate() {
            let got = &batched[i * per_row..(i + 1) * per_row];
            assert!(got.iter().all(|v| v.is_finite()), "window {window:?}, sequence {i}: non-finite");
            let diff = max_abs_diff(got, want);
            assert!(diff <= 1e-5, "window {window:?}, sequence {i} (padding {}): {diff}", padding[i]);
        }
    }
}
