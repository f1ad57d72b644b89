//! The `moe-bench` command line.

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use clap::{Args, Parser, Subcommand};
use moe_core::backend::{run_on, BackendKind, BackendTask, Precision};
use moe_core::config::MixtralConfig;

use crate::layer::LayerShape;

/// Benchmarks of burn-moe (f32). Each prints a JSON object (stdout) with medians in milliseconds
/// or tokens per second; record results in BENCHMARKS.md with the command line.
#[derive(Parser)]
#[command(name = "moe-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The sparse MoE layer vs. all experts on all tokens vs. an equal-FLOP dense SwiGLU.
    MoeLayer(LayerArgs),
    /// Prompt and decode tokens/s of a random-weight Mixtral-shaped model, and its bandwidth floor.
    Decode(DecodeArgs),
}

#[derive(Args)]
struct Common {
    /// ndarray or flex (CPU), wgpu, or cuda (when built with `--features cuda`).
    #[arg(long, default_value = "ndarray")]
    backend: BackendKind,
    /// Compute dtype: f32, f16 or bf16 (where the backend supports it).
    #[arg(long, default_value = "f32")]
    dtype: Precision,
    /// Print only the JSON object (a one-line summary goes to stderr otherwise too).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LayerArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 2048)]
    tokens: usize,
    #[arg(long, default_value_t = 512)]
    d_model: usize,
    #[arg(long, default_value_t = 1408)]
    d_ff: usize,
    #[arg(long, default_value_t = 8)]
    experts: usize,
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    /// Untimed runs first (autotune, caches).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

#[derive(Args)]
struct DecodeArgs {
    #[command(flatten)]
    common: Common,
    /// Shape: tiny, mixtral-8x7b or mixtral-8x22b.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Keep only this many layers of the preset.
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    #[arg(long, short = 'n', default_value_t = 32)]
    new_tokens: usize,
    /// Memory bandwidth for the floor in GB/s (default: measure host memory).
    #[arg(long)]
    bandwidth_gbs: Option<f64>,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let common = match &cli.command {
        Command::MoeLayer(a) => &a.common,
        Command::Decode(a) => &a.common,
    };
    let (kind, precision) = (common.backend, common.dtype);
    run_on(kind, precision, cli.command)?
}

impl BackendTask for Command {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        dispatch::<B>(self, device)
    }
}

fn dispatch<B: Backend>(command: Command, device: B::Device) -> Result<()> {
    match command {
        Command::MoeLayer(a) => {
            if a.top_k == 0 || a.top_k > a.experts || a.tokens == 0 || a.d_model == 0 || a.d_ff == 0 {
                bail!("need tokens, d_model, d_ff >= 1 and 1 <= top_k <= experts");
            }
            let shape = LayerShape { tokens: a.tokens, d_model: a.d_model, d_ff: a.d_ff, experts: a.experts, top_k: a.top_k };
            let r = crate::layer::run::<B>(a.common.backend, a.common.dtype, shape, a.warmup, a.repeats, &device);
            if !a.common.json {
                eprintln!(
                    "sparse {:.2} ms (fwd+bwd {:.2}) | all experts {:.2} ms ({:.2}x slower) | dense equal-FLOP {:.2} ms (sparse/dense {:.2})",
                    r.sparse_ms, r.sparse_fwd_bwd_ms, r.all_experts_ms, r.speedup_vs_all_experts, r.dense_equal_flop_ms, r.sparse_over_dense
                );
            }
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Decode(a) => {
            let mut config = match a.preset.as_str() {
                "tiny" => MixtralConfig::tiny(),
                "mixtral-8x7b" => MixtralConfig::mixtral_8x7b(),
                "mixtral-8x22b" => MixtralConfig::mixtral_8x22b(),
                other => bail!("unknown preset `{other}` (tiny, mixtral-8x7b, mixtral-8x22b)"),
            };
            if let Some(layers) = a.layers {
                config.n_layers = layers;
            }
            config.max_seq_len = config.max_seq_len.max(a.prompt_len + a.new_tokens);
            config.validate()?;
            let r = crate::decode::run::<B>(a.common.backend, a.common.dtype, config, a.batch, a.prompt_len, a.new_tokens, a.bandwidth_gbs, &device)?;
            if !a.common.json {
                eprintln!(
                    "prompt {:.1} tok/s | decode {:.2} tok/s | bandwidth floor {:.2} tok/s at {:.1} GB/s",
                    r.prompt_tokens_per_sec, r.decode_tokens_per_sec, r.bandwidth_floor_tokens_per_sec, r.bandwidth_gbs
                );
            }
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}
