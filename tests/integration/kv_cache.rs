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

/// Continuous batching: sequences join a running batch (`KvCache::join`) and leave it
/// (`KvCache::retain`) between decode steps, and each still gets, at every step, the logits it
/// gets alone.
#[test]
fn sequences_joining_and_leaving_a_batch_equal_each_sequence_alone() {
    struct Row {
        seq: usize,
        consumed: usize,
    }
    for window in [None, Some(3)] {
        let model = small_model(window);
        let prompts = [6usize, 3, 12, 1, 2];
        let total = 20;
        let sequences: Vec<Vec<i64>> =
            (0..prompts.len()).map(|i| (0..total).map(|j| ((11 * i + 17 * j + 3) % 97) as i64).collect()).collect();
        let logits_alone = |i: usize, consumed: usize| {
            let mut cache = model.new_cache(1, consumed);
            host(model.next_token_logits(ids(sequences[i][..consumed].to_vec(), 1), &mut cache))
        };
        let check = |rows: &[Row], logits: Vec<f32>, what: &str| {
            for (row, got) in rows.iter().zip(logits.chunks(97)) {
                let diff = max_abs_diff(got, &logits_alone(row.seq, row.consumed));
                assert!(diff <= 1e-5, "window {window:?}, {what}: sequence {} at {}: {diff}", row.seq, row.consumed);
            }
        };
        // New sequences: their prompts as one left-padded batch of their own.
        let prefill = |new: &[usize]| {
            let p = new.iter().map(|&i| prompts[i]).max().unwrap();
            let padding: Vec<usize> = new.iter().map(|&i| p - prompts[i]).collect();
            let mut cache = model.new_cache(new.len(), total).with_left_padding(padding.clone());
            let input: Vec<i64> = new
                .iter()
                .zip(&padding)
                .flat_map(|(&i, &pad)| std::iter::repeat_n(0, pad).chain(sequences[i][..prompts[i]].iter().copied()))
                .collect();
            let logits = host(model.next_token_logits(ids(input, new.len()), &mut cache));
            let rows: Vec<Row> = new.iter().map(|&i| Row { seq: i, consumed: prompts[i] }).collect();
            check(&rows, logits, "prefill");
            (cache, rows)
        };
        let step = |cache: &mut moe_core::nn::KvCache<Cpu>, rows: &mut Vec<Row>| {
            let input: Vec<i64> = rows.iter().map(|r| sequences[r.seq][r.consumed]).collect();
            let logits = host(model.next_token_logits(ids(input, rows.len()), cache));
            rows.iter_mut().for_each(|r| r.consumed += 1);
            check(rows, logits, "decode");
        };

        let (mut cache, mut rows) = prefill(&[0]);
        step(&mut cache, &mut rows);
        step(&mut cache, &mut rows);
        // A short newcomer: left-padded to the running batch's length.
        let (new_cache, new_rows) = prefill(&[1]);
        cache = cache.join(new_cache, 2 * total);
        rows.extend(new_rows);
        step(&mut cache, &mut rows);
        // Two at once, one with a longer prompt than the batch has run: the batch is padded.
        let (new_cache, new_rows) = prefill(&[3, 2]);
        cache = cache.join(new_cache, 2 * total);
        rows.extend(new_rows);
        step(&mut cache, &mut rows);
        step(&mut cache, &mut rows);
        // The longest leaves (the positions only it used are dropped), then one in the middle.
        let before = cache.len();
        cache.retain(&[0, 1, 2]);
        rows.remove(3);
        assert!(cache.len() < before, "positions that are padding everywhere are dropped");
        step(&mut cache, &mut rows);
        cache.retain(&[0, 2]);
        rows.remove(1);
        step(&mut cache, &mut rows);
        let (new_cache, new_rows) = prefill(&[4]);
        cache = cache.join(new_cache, 2 * total);
        rows.extend(new_rows);
        step(&mut cache, &mut rows);
        assert_eq!(cache.batch_size(), 3);
    }
}
