//! Generations at the end of a run: what the model learned, in its own words.

use burn::tensor::backend::Backend;
use moe_core::model::Mixtral;
use moe_generate::{generate, GenerationConfig, SamplingConfig, TextTokenizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::packing::Split;
use crate::data::synthetic;
use crate::error::Result;

/// Prompts per task used to measure accuracy.
const PROMPTS_PER_TASK: usize = 20;

/// One generation.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// The synthetic task the prompt comes from, if any.
    pub task: Option<String>,
    /// The prompt text.
    pub prompt: String,
    /// The model's greedy continuation.
    pub output: String,
    /// For tasks with one right answer: whether the output is it.
    pub correct: Option<bool>,
}

/// One sample per task, and the exact-match accuracy of each task.
pub type TaskSamples = (Vec<Sample>, Vec<(String, f64)>);

/// On the built-in corpus: fresh prompts of every task (from a stream the training data never
/// used), answered greedily; returns one sample per task and the exact-match accuracy per task.
/// On user data: continuations of the first tokens of a few validation sequences.
pub fn sample_tasks<B: Backend>(
    model: &Mixtral<B>,
    tokenizer: &TextTokenizer,
    tasks: &[&str],
    val: &Split,
    seed: u64,
) -> Result<TaskSamples> {
    let max_new = 24.min(model.config().max_seq_len / 2);
    let mut samples = Vec::new();
    let mut accuracy = Vec::new();
    if tasks.is_empty() {
        for i in 0..val.len().min(3) {
            let prompt: Vec<u32> = val.tokens[i * val.seq_len..][..val.seq_len.min(8)].to_vec();
            let output = continue_ids(model, tokenizer, &prompt, max_new, Some(seed + i as u64))?;
            samples.push(Sample { task: None, prompt: tokenizer.decode(&prompt, true)?, output, correct: None });
        }
        return Ok((samples, accuracy));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5A17_u64.rotate_left(40));
    for (task, name) in tasks.iter().enumerate() {
        let mut right = 0;
        for i in 0..PROMPTS_PER_TASK {
            let (prompt, answer) = synthetic::example_parts(task, &mut rng);
            let ids = tokenizer.encode(&prompt, true)?;
            let output = continue_ids(model, tokenizer, &ids, max_new, None)?;
            // Sentences have no single right answer; their sample shows fluency instead.
            let correct = synthetic::has_answer(task).then(|| synthetic::is_correct(&answer, &output));
            if correct == Some(true) {
                right += 1;
            }
            if i == 0 {
                samples.push(Sample { task: Some(name.to_string()), prompt, output, correct });
            }
        }
        if synthetic::has_answer(task) {
            accuracy.push((name.to_string(), right as f64 / PROMPTS_PER_TASK as f64));
        }
    }
    Ok((samples, accuracy))
}

/// The text the model writes after `prompt` (greedy, or sampled at T = 0.8 with `seed`), up to
/// the end-of-sequence token.
fn continue_ids<B: Backend>(
    model: &Mixtral<B>,
    tokenizer: &TextTokenizer,
    prompt: &[u32],
    max_new_tokens: usize,
    seed: Option<u64>,
) -> Result<String> {
    let max_new_tokens = max_new_tokens.min(model.config().max_seq_len.saturating_sub(prompt.len()));
    if max_new_tokens == 0 {
        return Ok(String::new());
    }
    let sampling = match seed {
        Some(seed) => SamplingConfig { temperature: 0.8, top_k: Some(40), seed, ..SamplingConfig::default() },
        None => SamplingConfig::default(),
    };
    let stop_tokens: Vec<u32> = tokenizer.eos_id().into_iter().collect();
    let config = GenerationConfig { max_new_tokens, sampling, stop_tokens: stop_tokens.clone() };
    let out = generate(model, &[prompt.to_vec()], &config, |_, _| true)?;
    let generated: Vec<u32> =
        out.sequences[0][prompt.len()..].iter().copied().filter(|t| !stop_tokens.contains(t)).collect();
    Ok(tokenizer.decode(&generated, true)?)
}
