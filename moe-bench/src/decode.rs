//! `moe-bench decode`: prompt and decode tokens/s of a randomly initialised Mixtral-shaped model,
//! next to the memory-bandwidth floor of the same shape.

use burn::tensor::backend::Backend;
use moe_core::backend::{BackendKind, Precision};
use moe_core::config::MixtralConfig;
use moe_infer::{generate, GenerationConfig, SamplingConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct DecodeReport {
    pub backend: String,
    pub dtype: String,
    pub config: MixtralConfig,
    pub batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub prompt_tokens_per_sec: f64,
    pub decode_tokens_per_sec: f64,
    /// Bytes of weights one decode step reads (attention, router, the top-k experts of every
    /// layer, norms, LM head; the embedding row is negligible).
    pub bytes_per_decode_token: u64,
    /// The memory bandwidth used for the floor, GB/s.
    pub bandwidth_gbs: f64,
    /// Whether `bandwidth_gbs` was measured here (host memory) or given.
    pub bandwidth_measured: bool,
    /// Decode tokens/s if the weight reads ran at `bandwidth_gbs` (batch 1).
    pub bandwidth_floor_tokens_per_sec: f64,
}

#[allow(clippy::too_many_arguments)]
pub fn run<B: Backend>(
    backend: BackendKind,
    precision: Precision,
    config: MixtralConfig,
    batch: usize,
    prompt_len: usize,
    new_tokens: usize,
    bandwidth_gbs: Option<f64>,
    device: &B::Device,
) -> anyhow::Result<DecodeReport> {
    anyhow::ensure!(
        prompt_len + new_tokens <= config.max_seq_len,
        "--prompt-len + --new-tokens ({}) exceed the context ({})",
        prompt_len + new_tokens,
        config.max_seq_len
    );
    B::seed(device, 11);
    eprintln!(
        "initialising {:.2}B random parameters ({} layers)...",
        config.num_params() as f64 / 1e9,
        config.n_layers
    );
    let model = config.init::<B>(device);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|_| (0..prompt_len).map(|_| rng.random_range(0..config.vocab_size as u32)).collect())
        .collect();
    let generation = GenerationConfig {
        max_new_tokens: new_tokens,
        sampling: SamplingConfig::default(),
        stop_tokens: vec![],
        experts_per_token: None,
    };
    // Warm-up (lazy init, autotune, allocator), then the timed run.
    let warm = GenerationConfig { max_new_tokens: 2, ..generation.clone() };
    generate(&model, &prompts, &warm, |_, _| true)?;
    let out = generate(&model, &prompts, &generation, |_, _| true)?;

    let bytes_per_weight = match precision {
        Precision::F32 => 4,
        Precision::F16 | Precision::Bf16 => 2,
    };
    let bytes_per_decode_token = bytes_per_weight * active_weights(&config);
    let (bandwidth_gbs, bandwidth_measured) = match bandwidth_gbs {
        Some(bw) => (bw, false),
        None => (host_read_bandwidth_gbs(), true),
    };
    Ok(DecodeReport {
        backend: backend.to_string(),
        dtype: precision.to_string(),
        batch,
        prompt_len,
        new_tokens,
        prompt_tokens_per_sec: out.prompt_tokens_per_sec(),
        decode_tokens_per_sec: out.decode_tokens_per_sec(),
        bytes_per_decode_token,
        bandwidth_gbs,
        bandwidth_measured,
        bandwidth_floor_tokens_per_sec: bandwidth_gbs * 1e9 / bytes_per_decode_token as f64,
        config,
    })
}

/// Weights read per decoded token: everything active except the embedding table.
fn active_weights(c: &MixtralConfig) -> u64 {
    let embedding = (c.vocab_size * c.d_model) as u64;
    let active = c.num_active_params() as u64;
    // With tied embeddings the table is the LM head and is read in full.
    if c.tie_word_embeddings { active } else { active - embedding }
}

/// Host memory read bandwidth: the best of a few sums over a 512 MiB buffer (both cores).
fn host_read_bandwidth_gbs() -> f64 {
    let n = 128 << 20; // f32s
    let data = vec![1.0f32; n];
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let mut best = 0.0f64;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let total: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = data
                .chunks(n.div_ceil(threads))
                .map(|chunk| s.spawn(move || chunk.chunks(8).map(|c| c.iter().sum::<f32>()).sum::<f32>()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        std::hint::black_box(total);
        best = best.max((n * 4) as f64 / started.elapsed().as_secs_f64() / 1e9);
    }
    best
}
