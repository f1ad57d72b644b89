//! Load a Hub-layout Mixtral checkpoint and generate text through the library API (no CLI crates).
//!
//! ```sh
//! cargo run --release --example load_and_generate -- \
//!     --model tests/fixtures/tiny-mixtral --tokenizer tests/fixtures/tokenizer/tokenizer.json \
//!     --prompt "Hello, world" --max-new-tokens 16
//! cargo run --release --example load_and_generate -- --model tests/fixtures/tiny-mixtral --prompt-ids 37,235,396,72
//! ```

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::prelude::Backend;
use clap::Parser;
use moe_core::backend::{run_on, BackendKind, BackendTask, Precision};
use moe_core::io::load_hub_checkpoint;
use moe_infer::{generate, score, GenerationConfig, SamplingConfig, TextTokenizer};

/// Generate from a Mixtral-architecture checkpoint.
#[derive(Parser, Debug)]
struct Args {
    /// Folder with config.json and the safetensors weights [and tokenizer.json].
    #[arg(long)]
    model: PathBuf,
    /// tokenizer.json, if not in the model folder.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Text prompt (needs a tokenizer).
    #[arg(long, conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// Comma-separated prompt token ids.
    #[arg(long)]
    prompt_ids: Option<String>,
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ndarray or flex (CPU), wgpu, or cuda (when built with `--features cuda`).
    #[arg(long, default_value = "ndarray")]
    backend: BackendKind,
    /// f32, f16 or bf16 (where the backend supports it).
    #[arg(long, default_value = "f32")]
    dtype: Precision,
}

struct Generate(Args);

impl BackendTask for Generate {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let args = self.0;
        let mut model = load_hub_checkpoint::<B>(&args.model, &device)
            .with_context(|| format!("loading {}", args.model.display()))?;
        // Inference only: lay the weights out for the CPU kernels (a no-op off burn-flex).
        model.pack_for_cpu();
        let tokenizer = match &args.tokenizer {
            Some(path) => Some(TextTokenizer::from_file(path)?),
            None => TextTokenizer::from_model_dir(&args.model)?,
        };
        let prompt: Vec<u32> = match (&args.prompt, &args.prompt_ids, &tokenizer) {
            (Some(text), _, Some(tokenizer)) => tokenizer.encode(text, true)?,
            (Some(_), _, None) => bail!("--prompt needs a tokenizer: --tokenizer FILE or MODEL/tokenizer.json"),
            (None, Some(ids), _) => ids
                .split(',')
                .map(|s| s.trim().parse().with_context(|| format!("bad token id {s:?}")))
                .collect::<Result<_>>()?,
            (None, None, _) => bail!("give --prompt TEXT or --prompt-ids 1,2,3"),
        };

        let config = GenerationConfig {
            max_new_tokens: args.max_new_tokens,
            sampling: SamplingConfig { temperature: args.temperature, seed: args.seed, ..SamplingConfig::default() },
            stop_tokens: model.config().eos_token_ids.clone(),
        };
        // Stream text as it comes when there is a tokenizer.
        let mut stream = tokenizer.as_ref().map(|t| t.stream(&prompt, true)).transpose()?;
        if let (Some(text), Some(_)) = (&args.prompt, &stream) {
            print!("{text}");
        }
        let out = generate(&model, std::slice::from_ref(&prompt), &config, |_, id| {
            if let Some(piece) = stream.as_mut().and_then(|s| s.push(id).ok().flatten()) {
                print!("{piece}");
                let _ = std::io::stdout().flush();
            }
            true
        })?;
        println!();
        println!("token ids: {:?}", out.sequences[0]);
        let scored = score(&model, &out.sequences)?;
        println!(
            "{:.1} prompt tok/s, {:.1} decode tok/s; perplexity of the sequence {:.3} (router aux loss {:.4})",
            out.prompt_tokens_per_sec(),
            out.decode_tokens_per_sec(),
            scored.perplexity,
            scored.aux_loss
        );
        Ok(())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (backend, dtype) = (args.backend, args.dtype);
    run_on(backend, dtype, Generate(args))?
}
