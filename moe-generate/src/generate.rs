//! Batched, KV-cached autoregressive generation.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use moe_core::model::Mixtral;

use crate::error::{check_ids, GenerateError};
use crate::sampling::{Sampler, SamplingConfig};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    /// Tokens to generate per sequence at most.
    pub max_new_tokens: usize,
    /// How each next token is chosen.
    pub sampling: SamplingConfig,
    /// Generation of a sequence ends after it produces one of these (e.g. EOS).
    pub stop_tokens: Vec<u32>,
}

/// The generated sequences and how fast they came.
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    /// Per sequence: the prompt followed by the generated tokens.
    pub sequences: Vec<Vec<u32>>,
    /// Prompt tokens processed (all sequences).
    pub prompt_tokens: usize,
    /// Tokens generated (all sequences).
    pub generated_tokens: usize,
    /// Wall time of the prompt pass, the first token's logits included.
    pub prompt_secs: f64,
    /// Wall time of the decode steps after the prompt.
    pub decode_secs: f64,
}

impl GenerationOutput {
    /// Prompt throughput: prompt tokens over the prompt pass's wall time.
    pub fn prompt_tokens_per_sec(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_secs.max(1e-9)
    }

    /// Decode throughput; the first generated token comes from the prompt pass.
    pub fn decode_tokens_per_sec(&self) -> f64 {
        let decoded = self.generated_tokens.saturating_sub(self.sequences.len());
        decoded as f64 / self.decode_secs.max(1e-9)
    }
}

/// Continues each prompt by up to `config.max_new_tokens` tokens.
///
/// All prompts run as one batch through one KV cache; prompts shorter than the longest are
/// left-padded (with the config's `pad_token_id`, else 0), the padding masked out and each
/// sequence's RoPE positions starting at its first real token, as transformers' batched
/// `generate` does, so every sequence gets the tokens it would get alone. `on_token(sequence, token)`
/// is called as each token is chosen, for streaming, and returns whether that sequence goes on
/// (`false` ends it there, e.g. on a stop string). Each sequence samples with its own RNG
/// seeded `seed + index`, so its tokens do not depend on the rest of the batch.
pub fn generate<B: Backend>(
    model: &Mixtral<B>,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<GenerationOutput, GenerateError> {
    let c = model.config();
    let b = prompts.len();
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(GenerateError::EmptyPrompt);
    }
    let p = prompts.iter().map(Vec::len).max().unwrap_or(0);
    for prompt in prompts {
        check_ids(prompt, c.vocab_size)?;
    }
    let capacity = p + config.max_new_tokens;
    if capacity > c.max_seq_len {
        return Err(GenerateError::ContextOverflow { needed: capacity, max: c.max_seq_len });
    }

    let device = model.embed_tokens.weight.lazy_device();
    let left_padding: Vec<usize> = prompts.iter().map(|s| p - s.len()).collect();
    let mut cache = model.new_cache(b, capacity).with_left_padding(left_padding.clone());
    // Any id in the vocabulary does: padding is never attended to.
    let pad_id = c.pad_token_id.filter(|&id| (id as usize) < c.vocab_size).unwrap_or(0) as i64;
    let mut samplers: Vec<Sampler> = (0..b)
        .map(|i| {
            Sampler::new(SamplingConfig {
                seed: config.sampling.seed.wrapping_add(i as u64),
                ..config.sampling.clone()
            })
        })
        .collect();
    let mut sequences = prompts.to_vec();
    let mut finished = vec![config.max_new_tokens == 0; b];
    let mut generated = 0;

    let started = Instant::now();
    let mut input: Vec<i64> = prompts
        .iter()
        .zip(&left_padding)
        .flat_map(|(s, &pad)| std::iter::repeat_n(pad_id, pad).chain(s.iter().map(|&t| t as i64)))
        .collect();
    let mut step_len = p;
    let mut prompt_secs = None;
    while !finished.iter().all(|&f| f) {
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(input, [b, step_len]), &device);
        // Only the last position's logits: the head's work on the other prompt positions
        // would be thrown away.
        let last = model.next_token_logits(ids, &mut cache); // [B, V]
        let mut host: Vec<f32> = last.into_data().iter::<f32>().collect();
        prompt_secs.get_or_insert_with(|| started.elapsed().as_secs_f64());

        input = Vec::with_capacity(b);
        for (i, row) in host.chunks_mut(c.vocab_size).enumerate() {
            if finished[i] {
                // Keeps the batch rectangular; the token is never recorded.
                input.push(*sequences[i].last().expect("non-empty") as i64);
                continue;
            }
            let token = samplers[i].sample(row, &sequences[i]);
            sequences[i].push(token);
            generated += 1;
            let go_on = on_token(i, token);
            let done = sequences[i].len() == prompts[i].len() + config.max_new_tokens;
            finished[i] = !go_on || done || config.stop_tokens.contains(&token);
            input.push(token as i64);
        }
        step_len = 1;
    }
    let prompt_secs = prompt_secs.unwrap_or(0.0);
    Ok(GenerationOutput {
        sequences,
        prompt_tokens: prompts.iter().map(Vec::len).sum(),
        generated_tokens: generated,
        prompt_secs,
        decode_secs: started.elapsed().as_secs_f64() - prompt_secs,
    })
}
