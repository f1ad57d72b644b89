use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use clap::{Args, Parser, Subcommand};
use moe_core::backend::BackendKind;
use moe_core::io::load_hub_checkpoint;
use moe_core::model::Mixtral;
use moe_infer::{generate, score, GenerationConfig, SamplingConfig};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Run Mixtral-architecture (sparse MoE) checkpoints in the HuggingFace Hub layout.
#[derive(Parser)]
#[command(name = "moe-infer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue prompts token by token (KV-cached), streaming the ids as they come.
    Generate(GenerateArgs),
    /// Negative log-likelihood and perplexity of token sequences (like llama.cpp's perplexity).
    Score(ScoreArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// Model folder: config.json + model.safetensors (or a sharded index).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// ndarray (CPU), wgpu, or cuda (when built with `--features cuda`).
    #[arg(long, default_value = "ndarray")]
    backend: String,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt token ids, separated by commas or spaces. Repeat for a batch (equal lengths).
    #[arg(long = "prompt-ids", required = true)]
    prompt_ids: Vec<String>,
    #[arg(long, short = 'n', default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample from the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the best one (0 = off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalise tokens already present (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Experts per token instead of the model's num_experts_per_tok.
    #[arg(long)]
    experts_per_token: Option<usize>,
    /// Do not stop at the model's EOS token.
    #[arg(long)]
    ignore_eos: bool,
    /// Print one JSON object instead of streaming.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// File with one sequence per line, ids separated by spaces or commas (equal lengths).
    #[arg(long = "token-ids")]
    token_ids: PathBuf,
    /// Write `logits` [B, S, V] and `router_logits` [L, B*S, E] (f32) to this safetensors file.
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let backend = match &cli.command {
        Command::Generate(a) => &a.model.backend,
        Command::Score(a) => &a.model.backend,
    };
    let kind: BackendKind = backend.parse::<BackendKind>()?.ensure_compiled()?;
    match kind {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => dispatch::<moe_core::backend::Cpu>(cli.command, Default::default()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => dispatch::<moe_core::backend::Wgpu>(cli.command, moe_core::backend::wgpu_device()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => dispatch::<moe_core::backend::Cuda>(cli.command, Default::default()),
        #[allow(unreachable_patterns)]
        other => bail!("backend {other} is not compiled into this build"),
    }
}

fn dispatch<B: Backend>(command: Command, device: B::Device) -> Result<()> {
    match command {
        Command::Generate(args) => run_generate::<B>(args, &device),
        Command::Score(args) => run_score::<B>(args, &device),
    }
}

fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<Mixtral<B>> {
    load_hub_checkpoint::<B>(dir, device).with_context(|| format!("cannot load model {}", dir.display()))
}

/// "1,2, 3 4" -> [1, 2, 3, 4]
fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().with_context(|| format!("{s:?} is not a token id")))
        .collect()
}

fn run_generate<B: Backend>(args: GenerateArgs, device: &B::Device) -> Result<()> {
    let prompts = args
        .prompt_ids
        .iter()
        .map(|p| parse_ids(p))
        .collect::<Result<Vec<_>>>()?;
    let model = load::<B>(&args.model.model, device)?;
    let positive = |v: f32| (v > 0.0).then_some(v);
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingConfig {
            temperature: args.temperature,
            top_k: (args.top_k > 0).then_some(args.top_k),
            top_p: (args.top_p < 1.0).then_some(args.top_p),
            min_p: positive(args.min_p),
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
        },
        stop_tokens: if args.ignore_eos { vec![] } else { model.config().eos_token_ids.clone() },
        experts_per_token: args.experts_per_token,
    };
    let single = prompts.len() == 1;
    let mut stdout = std::io::stdout().lock();
    if single && !args.json {
        write!(stdout, "{}", prompts[0].iter().map(u32::to_string).collect::<Vec<_>>().join(" "))?;
        stdout.flush()?;
    }
    let out = generate(&model, &prompts, &config, |_, token| {
        if single && !args.json {
            let _ = write!(stdout, " {token}");
            let _ = stdout.flush();
        }
    })?;
    if args.json {
        let json = serde_json::json!({
            "token_ids": if single { serde_json::json!(out.sequences[0]) } else { serde_json::json!(out.sequences) },
            "prompt_tokens": out.prompt_tokens,
            "generated_tokens": out.generated_tokens,
            "prompt_tokens_per_sec": out.prompt_tokens_per_sec(),
            "decode_tokens_per_sec": out.decode_tokens_per_sec(),
        });
        writeln!(stdout, "{json}")?;
    } else {
        if single {
            writeln!(stdout)?;
        } else {
            for seq in &out.sequences {
                writeln!(stdout, "{}", seq.iter().map(u32::to_string).collect::<Vec<_>>().join(" "))?;
            }
        }
        eprintln!(
            "prompt: {} tokens, {:.1} tok/s | decode: {} tokens, {:.1} tok/s",
            out.prompt_tokens,
            out.prompt_tokens_per_sec(),
            out.generated_tokens,
            out.decode_tokens_per_sec()
        );
    }
    Ok(())
}

fn run_score<B: Backend>(args: ScoreArgs, device: &B::Device) -> Result<()> {
    let text = std::fs::read_to_string(&args.token_ids)
        .with_context(|| format!("cannot read {}", args.token_ids.display()))?;
    let batch = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_ids(l).with_context(|| format!("{} line {}", args.token_ids.display(), i + 1)))
        .collect::<Result<Vec<_>>>()?;
    if batch.is_empty() {
        bail!("{} holds no token ids", args.token_ids.display());
    }
    let model = load::<B>(&args.model.model, device)?;
    let out = score(&model, &batch)?;
    if let Some(path) = &args.dump_logits {
        dump_logits(path, out.logits.clone(), &out.router_logits)?;
    }
    if args.json {
        let json = serde_json::json!({
            "mean_nll": out.mean_nll,
            "perplexity": out.perplexity,
            "tokens": out.tokens,
            "sequence_nll": out.sequence_nll,
            "aux_loss": out.aux_loss,
            "z_loss": out.z_loss,
        });
        println!("{json}");
    } else {
        for (i, nll) in out.sequence_nll.iter().enumerate() {
            println!("sequence {i}: nll {nll:.6}, perplexity {:.4}", nll.exp());
        }
        println!(
            "all {} tokens: nll {:.6}, perplexity {:.4}, aux_loss {:.6}, z_loss {:.6}",
            out.tokens, out.mean_nll, out.perplexity, out.aux_loss, out.z_loss
        );
    }
    Ok(())
}

fn dump_logits<B: Backend>(path: &Path, logits: Tensor<B, 3>, router: &[Tensor<B, 2>]) -> Result<()> {
    let router = Tensor::stack::<3>(router.to_vec(), 0);
    let bytes = |t: burn::tensor::TensorData| -> Vec<u8> {
        t.iter::<f32>().flat_map(f32::to_le_bytes).collect()
    };
    let (ls, rs) = (logits.dims().to_vec(), router.dims().to_vec());
    let (lb, rb) = (bytes(logits.into_data()), bytes(router.into_data()));
    let views = [
        ("logits", TensorView::new(Dtype::F32, ls, &lb)?),
        ("router_logits", TensorView::new(Dtype::F32, rs, &rb)?),
    ];
    safetensors::serialize_to_file(views, None, path)
        .with_context(|| format!("cannot write {}", path.display()))
}
