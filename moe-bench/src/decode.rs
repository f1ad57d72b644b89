//! `moe-bench decode`: prompt and decode tokens/s of a Mixtral-shaped model (random weights of a
//! preset or given shape, or a checkpoint folder), next to the memory-bandwidth floor of the
//! same shape.

use burn::tensor::backend::Backend;
use moe_core::backend::{BackendKind, Precision};
use moe_core::config::MixtralConfig;
use moe_core::model::{FeedForward, Mixtral};
use moe_core::nn::Projection;
use moe_generate::{generate, GenerationConfig, SamplingConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bandwidth::host_read_bandwidth_gbs;
use crate::timing::median;

#[derive(Debug, Serialize)]
pub struct DecodeReport {
    pub backend: String,
    pub dtype: String,
    /// The instructions the CPU kernels ran (`moe_core::kernels::isa`: portable, avx2, avx512).
    pub cpu_isa: String,
    pub config: MixtralConfig,
    pub batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    /// Timed runs; the speeds below are their medians.
    pub runs: usize,
    pub prompt_tokens_per_sec: f64,
    pub decode_tokens_per_sec: f64,
    /// Bytes of weights one decode step reads (attention, router, the top-k experts of every
    /// layer, norms, LM head; the embedding row is negligible).
    pub bytes_per_decode_token: u64,
    /// The memory bandwidth used for the floor, GB/s: the better of two probes, before the
    /// warm-up and after the timed runs, unless given.
    pub bandwidth_gbs: f64,
    /// Whether `bandwidth_gbs` was measured here (host memory) or given.
    pub bandwidth_measured: bool,
    /// Decode tokens/s if the weight reads ran at `bandwidth_gbs` (batch 1).
    pub bandwidth_floor_tokens_per_sec: f64,
    /// `decode_tokens_per_sec / bandwidth_floor_tokens_per_sec` (batch 1: 1.0 = every weight
    /// byte read once per token at the measured bandwidth).
    pub fraction_of_floor: f64,
}

/// What to decode with.
pub struct DecodeRun {
    pub backend: BackendKind,
    pub precision: Precision,
    pub batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    /// GB/s for the floor; measured when `None`.
    pub bandwidth_gbs: Option<f64>,
    /// Timed runs (at least 1).
    pub runs: usize,
}

/// A model with random weights of shape `config`.
pub fn random_model<B: Backend>(config: &MixtralConfig, device: &B::Device) -> Mixtral<B> {
    B::seed(device, 11);
    eprintln!(
        "initialising {:.2}B random parameters ({} layers)...",
        config.num_params() as f64 / 1e9,
        config.n_layers
    );
    config.init::<B>(device)
}

pub fn run<B: Backend>(model: &Mixtral<B>, run: &DecodeRun) -> anyhow::Result<DecodeReport> {
    let DecodeRun { backend, precision, batch, prompt_len, new_tokens, bandwidth_gbs, runs } = *run;
    let config = model.config().clone();
    anyhow::ensure!(
        prompt_len + new_tokens <= config.max_seq_len,
        "--prompt-len + --new-tokens ({}) exceed the context ({})",
        prompt_len + new_tokens,
        config.max_seq_len
    );
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let prompts: Vec<Vec<u32>> =
        (0..batch).map(|_| (0..prompt_len).map(|_| rng.random_range(0..config.vocab_size as u32)).collect()).collect();
    let generation =
        GenerationConfig { max_new_tokens: new_tokens, sampling: SamplingConfig::default(), stop_tokens: vec![] };
    // The host's bandwidth is probed before the warm-up and after the timed runs, and the
    // better reading kept: on a shared machine one probe can land in a slow spell. On
    // 2026-11-25 a 2-core Zen 5 had single probes read 52 and 85 GB/s minutes apart, so a run
    // measured against the 52 claimed 125% of its floor. Not between the timed runs: with a
    // probe before each, the 128-token prefill of the shape read 2793-4070 tok/s
    // against 4394-4600 without, on the same machine that day (not profiled).
    let probe = || bandwidth_gbs.unwrap_or_else(host_read_bandwidth_gbs);
    let before = probe();
    // Warm-up (lazy init, autotune, allocator), then the timed run.
    let warm = GenerationConfig { max_new_tokens: 2, ..generation.clone() };
    generate(model, &prompts, &warm, |_, _| true)?;
    let runs = runs.max(1);
    let mut prompt_speeds = Vec::new();
    let mut decode_speeds = Vec::new();
    for _ in 0..runs {
        let out = generate(model, &prompts, &generation, |_, _| true)?;
        prompt_speeds.push(out.prompt_tokens_per_sec());
        decode_speeds.push(out.decode_tokens_per_sec());
    }
    let (prompt_tokens_per_sec, decode_tokens_per_sec) = (median(&mut prompt_speeds), median(&mut decode_speeds));

    let bytes_per_decode_token = decode_bytes(model, precision);
    let best_bandwidth = before.max(probe());
    let (bandwidth_gbs, bandwidth_measured) = (best_bandwidth, bandwidth_gbs.is_none());
    Ok(DecodeReport {
        backend: backend.to_string(),
        cpu_isa: moe_core::kernels::isa::chosen().to_string(),
        dtype: precision.to_string(),
        batch,
        prompt_len,
        new_tokens,
        runs,
        prompt_tokens_per_sec,
        decode_tokens_per_sec,
        bytes_per_decode_token,
        bandwidth_gbs,
        bandwidth_measured,
        bandwidth_floor_tokens_per_sec: bandwidth_gbs * 1e9 / bytes_per_decode_token as f64,
        fraction_of_floor: decode_tokens_per_sec * bytes_per_decode_token as f64 / (bandwidth_gbs * 1e9),
        config,
    })
}

/// Bytes of weights read per decoded token: everything active except the embedding table
/// (whose one row is negligible), quantized projections at the size of their blocks, the rest at
/// `precision`.
fn decode_bytes<B: Backend>(model: &Mixtral<B>, precision: Precision) -> u64 {
    let c = model.config();
    let float = precision.bytes() as u64;
    let projection = |p: &Projection<B>| match p.blocks() {
        Some(q) => q.n_bytes() as u64,
        None => float * p.dims().iter().product::<usize>() as u64,
    };
    let mut bytes = float * c.d_model as u64; // final norm
    bytes += match &model.lm_head {
        Some(head) => projection(head),
        // Tied: the table is the LM head and is read in full.
        None => float * (c.vocab_size * c.d_model) as u64,
    };
    for layer in &model.layers {
        let attn = &layer.self_attn;
        bytes += [&attn.q_proj, &attn.k_proj, &attn.v_proj, &attn.o_proj].into_iter().map(projection).sum::<u64>();
        bytes += float * (2 * c.d_model) as u64; // norms
        match &layer.feed_forward {
            FeedForward::Dense(mlp) => bytes += projection(&mlp.gate_up) + projection(&mlp.down),
            FeedForward::Sparse(moe) => {
                bytes += float * (c.d_model * c.n_experts) as u64; // router
                let experts: u64 = moe.experts.ffns.iter().map(|f| projection(&f.gate_up) + projection(&f.down)).sum();
                bytes += experts * model.experts_per_token() as u64 / c.n_experts.max(1) as u64;
            }
        }
    }
    bytes
}
