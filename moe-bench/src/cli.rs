//! The `moe-bench` command line.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::{Args, Parser, Subcommand};
use moe_core::backend::{run_on, BackendKind, BackendTask, Precision};
use moe_core::config::MixtralConfig;
use moe_core::gguf::{convert_to_gguf, load_gguf_file, GgmlType, GgufExport, GgufFile};
use moe_core::io::load_hub_checkpoint;

use crate::layer::LayerShape;

/// Benchmarks of burn-moe in f32, f16 or bf16 (`--dtype`). Each prints a JSON object (stdout)
/// with medians in milliseconds or tokens per second; record results in BENCHMARKS.md with the
/// command line.
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
    /// Write a random-weight Mixtral-shaped GGUF file (quantized), one tensor at a time: a
    /// full-size model to load, time and compare with llama.cpp, in the disk space of its blocks.
    RandomGguf(RandomGgufArgs),
}

#[derive(Args)]
struct Common {
    /// ndarray or flex (CPU), wgpu, or cuda (when built with `--features cuda`); default: the
    /// fastest CPU backend compiled in (flex).
    #[arg(long, default_value_t = BackendKind::fastest_cpu())]
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
    /// Tokens routed through the layer at once (`T`).
    #[arg(long, default_value_t = 2048)]
    tokens: usize,
    /// Model width `D`.
    #[arg(long, default_value_t = 512)]
    d_model: usize,
    /// Hidden width of each expert `F`.
    #[arg(long, default_value_t = 1408)]
    d_ff: usize,
    /// Experts `E`.
    #[arg(long, default_value_t = 8)]
    experts: usize,
    /// Experts per token `K`.
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
    /// A Hub-layout checkpoint folder or a GGUF file (quantized weights stay quantized) to decode
    /// with, instead of random weights of a preset's shape.
    #[arg(long, conflicts_with_all = ["preset", "vocab", "d_model", "d_ff", "heads", "kv_heads", "experts", "top_k"])]
    model: Option<PathBuf>,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Prompt tokens per sequence (random ids).
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    /// Tokens to generate per sequence.
    #[arg(long, short = 'n', default_value_t = 32)]
    new_tokens: usize,
    /// Memory bandwidth for the floor in GB/s (default: measure host memory).
    #[arg(long)]
    bandwidth_gbs: Option<f64>,
    /// Timed runs (after one untimed warm-up); the median prompt and decode speeds are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Keep float weights in Burn's `[K, N]` layout instead of packing them for the CPU kernels
    /// (`Mixtral::pack_for_cpu`, what `moe-infer` does on flex): what a library user gets
    /// without that call.
    #[arg(long)]
    no_pack: bool,
}

/// A model shape: a preset changed by flags.
#[derive(Args)]
struct ShapeArgs {
    /// Shape: tiny, mixtral-8x7b or mixtral-8x22b (random weights), changed by the flags below
    /// (default: tiny; mixtral-8x7b for random-gguf).
    #[arg(long)]
    preset: Option<String>,
    /// Keep only this many layers (of the preset or the checkpoint).
    #[arg(long)]
    layers: Option<usize>,
    /// Vocabulary size `V`.
    #[arg(long)]
    vocab: Option<usize>,
    /// Model width `D` (head_dim becomes D / heads).
    #[arg(long)]
    d_model: Option<usize>,
    /// Expert hidden width `F`.
    #[arg(long)]
    d_ff: Option<usize>,
    /// Query heads `H`.
    #[arg(long)]
    heads: Option<usize>,
    /// Key/value heads `G`.
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Experts `E`.
    #[arg(long)]
    experts: Option<usize>,
    /// Experts per token `K`.
    #[arg(long)]
    top_k: Option<usize>,
}

#[derive(Args)]
struct RandomGgufArgs {
    /// The GGUF file to write.
    output: PathBuf,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Type of the expert matrices: q4_0, q4_k, q8_0, q6_k, f16, bf16 or f32.
    #[arg(long = "type", default_value = "q4_0")]
    weight_type: GgmlType,
    /// Type of the embedding, attention and LM head (default: the experts' type).
    #[arg(long)]
    dense_type: Option<GgmlType>,
    /// Same seed, same weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let common = match &cli.command {
        Command::MoeLayer(a) => &a.common,
        Command::Decode(a) => &a.common,
        Command::RandomGguf(a) => return random_gguf(a),
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
        Command::RandomGguf(a) => random_gguf(&a)?,
        Command::MoeLayer(a) => {
            if a.top_k == 0 || a.top_k > a.experts || a.tokens == 0 || a.d_model == 0 || a.d_ff == 0 {
                bail!("need tokens, d_model, d_ff >= 1 and 1 <= top_k <= experts");
            }
            let shape =
                LayerShape { tokens: a.tokens, d_model: a.d_model, d_ff: a.d_ff, experts: a.experts, top_k: a.top_k };
            let r = crate::layer::run::<B>(a.common.backend, a.common.dtype, shape, a.warmup, a.repeats, &device);
            if !a.common.json {
                eprintln!(
                    "sparse {:.2} ms (packed for the CPU kernels {:.2}; fwd+bwd {:.2}) | all experts {:.2} ms ({:.2}x slower) | dense equal-FLOP {:.2} ms (sparse/dense {:.2})",
                    r.sparse_ms, r.sparse_packed_ms, r.sparse_fwd_bwd_ms, r.all_experts_ms, r.speedup_vs_all_experts, r.dense_equal_flop_ms, r.sparse_over_dense
                );
            }
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Decode(a) => {
            let mut model = match &a.model {
                Some(dir) => {
                    let model = if dir.is_file() {
                        GgufFile::open(dir).and_then(|file| load_gguf_file::<B>(std::sync::Arc::new(file), &device))
                    } else {
                        load_hub_checkpoint::<B>(dir, &device)
                    };
                    let mut model = model.with_context(|| format!("cannot load model {}", dir.display()))?;
                    if let Some(layers) = a.shape.layers {
                        anyhow::ensure!(
                            (1..=model.layers.len()).contains(&layers),
                            "--layers must be in 1..={} for this checkpoint",
                            model.layers.len()
                        );
                        model.layers.truncate(layers);
                        model.config.n_layers = layers;
                    }
                    model
                }
                None => crate::decode::random_model::<B>(
                    &decode_shape(&a.shape, "tiny", a.prompt_len + a.new_tokens)?,
                    &device,
                ),
            };
            if !a.no_pack {
                model.pack_for_cpu();
            }
            let run = crate::decode::DecodeRun {
                backend: a.common.backend,
                precision: a.common.dtype,
                batch: a.batch,
                prompt_len: a.prompt_len,
                new_tokens: a.new_tokens,
                bandwidth_gbs: a.bandwidth_gbs,
                runs: a.runs as usize,
            };
            let r = crate::decode::run::<B>(&model, &run)?;
            if !a.common.json {
                eprintln!(
                    "prompt {:.1} tok/s | decode {:.2} tok/s | bandwidth floor {:.2} tok/s at {:.1} GB/s ({:.0}% of it)",
                    r.prompt_tokens_per_sec,
                    r.decode_tokens_per_sec,
                    r.bandwidth_floor_tokens_per_sec,
                    r.bandwidth_gbs,
                    100.0 * r.fraction_of_floor
                );
            }
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}

/// Writes `moe-bench random-gguf`'s file, showing progress.
fn random_gguf(a: &RandomGgufArgs) -> Result<()> {
    let config = decode_shape(&a.shape, "mixtral-8x7b", 0)?;
    let options = GgufExport::experts_only(a.weight_type, a.dense_type.unwrap_or(a.weight_type))
        .with_metadata(crate::random_gguf::synthetic_vocab(config.vocab_size))
        .with_progress(|n, total, name| eprint!("\rtensor {n}/{total} {name:40.40}"));
    let weights = crate::random_gguf::RandomTensors::new(config.clone(), a.seed);
    let started = std::time::Instant::now();
    convert_to_gguf(&config, &weights, &a.output, &options)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    let bytes = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    eprintln!();
    println!(
        "wrote {} ({:.2} GB, {} parameters) in {:.0} s",
        a.output.display(),
        bytes as f64 / 1e9,
        config.num_params(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The preset named by `--preset` (else `default`), changed by the shape flags, with room for
/// `positions` tokens.
fn decode_shape(a: &ShapeArgs, default: &str, positions: usize) -> Result<MixtralConfig> {
    let mut config = match a.preset.as_deref().unwrap_or(default) {
        "tiny" => MixtralConfig::tiny(),
        "mixtral-8x7b" => MixtralConfig::mixtral_8x7b(),
        "mixtral-8x22b" => MixtralConfig::mixtral_8x22b(),
        other => bail!("unknown preset `{other}` (tiny, mixtral-8x7b, mixtral-8x22b)"),
    };
    let set = |field: &mut usize, value: Option<usize>| {
        if let Some(v) = value {
            *field = v;
        }
    };
    set(&mut config.n_layers, a.layers);
    set(&mut config.vocab_size, a.vocab);
    set(&mut config.d_model, a.d_model);
    set(&mut config.d_ff, a.d_ff);
    set(&mut config.n_heads, a.heads);
    set(&mut config.n_kv_heads, a.kv_heads);
    set(&mut config.n_experts, a.experts);
    set(&mut config.top_k, a.top_k);
    if a.d_model.is_some() || a.heads.is_some() {
        config.head_dim = config.d_model / config.n_heads.max(1);
    }
    config.max_seq_len = config.max_seq_len.max(positions);
    config.validate()?;
    Ok(config)
}
