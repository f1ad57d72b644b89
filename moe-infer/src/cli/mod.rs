//! The `moe-infer` command line: one file per command, the shared options here.

mod chat;
mod generate;
mod inspect;
mod quantize;
mod score;
mod serve;
mod text_output;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::{Args, Parser, Subcommand};
use moe_core::backend::{run_on, BackendKind, BackendTask, Precision};
use moe_core::config::MixtralConfig;
use moe_core::gguf::{load_gguf_file, mixtral_config, GgmlType, GgufFile, GgufWeights, NO_TOKENIZER};
use moe_core::io::{load_hub_checkpoint, load_hub_weights, CheckpointTensors, HubWeights, QuantizeOnLoad};
use moe_core::model::Mixtral;
use moe_infer::{ChatTemplate, SamplingConfig, TextTokenizer};

/// Run Mixtral-architecture (sparse MoE) checkpoints in the HuggingFace Hub layout.
#[derive(Parser)]
#[command(name = "moe-infer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue prompts (KV-cached), streaming text (or ids) as it is produced.
    Generate(generate::GenerateArgs),
    /// Interactive multi-turn chat with the Mixtral-Instruct template (`/reset`, `/exit`).
    Chat(chat::ChatArgs),
    /// Chat with MODEL: `moe-infer run MODEL` (Ollama's habit); the options of `chat`.
    #[command(mut_arg("model", |a| a.long(None).short(None).index(1)))]
    Run(chat::ChatArgs),
    /// OpenAI-compatible HTTP server (chat, completions, streaming) with continuous batching.
    Serve(serve::ServeArgs),
    /// Negative log-likelihood and perplexity of token sequences (like llama.cpp's perplexity).
    Score(score::ScoreArgs),
    /// Shape, parameter counts (total and active per token) and memory needed per dtype.
    Inspect(inspect::InspectArgs),
    /// Write a checkpoint (Hub folder or GGUF) as a GGUF file of quantized weights (q8_0, q4_0, q4_k, q6_k).
    Quantize(quantize::QuantizeArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// Model folder: config.json + model.safetensors (or a sharded index) [+ tokenizer.json];
    /// or a GGUF file (llama.cpp's format, quantized or not; its tokenizer comes with it).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// ndarray or flex (CPU), wgpu, or cuda (when built with `--features cuda`). The default
    /// is flex where it is compiled in: the fastest CPU backend for prompts and decoding alike
    /// (see docs/benchmarks-history.md).
    #[arg(long, default_value_t = BackendKind::fastest_cpu())]
    backend: BackendKind,
    /// Compute dtype: f32, f16 (flex, cuda, wgpu with SHADER_F16) or bf16 (flex, cuda).
    /// Half precision keeps norms, softmaxes and losses in f32, as transformers does.
    #[arg(long, default_value = "f32")]
    dtype: Precision,
    /// tokenizer.json to use instead of MODEL/tokenizer.json (or the GGUF file's own); its
    /// folder's tokenizer_config.json chat template comes with it, if there is one.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A Jinja chat template file for chat, run and serve, instead of the model's own (its
    /// tokenizer_config.json, chat_template.jinja or GGUF `tokenizer.chat_template`, else
    /// Mixtral-Instruct's).
    #[arg(long, value_name = "FILE")]
    chat_template: Option<PathBuf>,
    /// Quantize the weights as they load: q8_0, q4_0, q4_k (4.5 bits per weight) or q6_k.
    /// Attention, expert and LM-head matrices stay in blocks (on flex they are multiplied as
    /// blocks; other backends widen them when first used). Tensors a GGUF file already holds in
    /// blocks keep their type.
    #[arg(long, value_name = "TYPE")]
    quantize: Option<GgmlType>,
    /// With --quantize: quantize the experts only; attention and LM head stay floats.
    #[arg(long, requires = "quantize")]
    quantize_experts_only: bool,
}

#[derive(Args)]
struct SamplingArgs {
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
    /// Same seed, same output.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Experts per token instead of the model's num_experts_per_tok.
    #[arg(long)]
    experts_per_token: Option<usize>,
}

impl SamplingArgs {
    fn sampling(&self) -> SamplingConfig {
        let positive = |v: f32| (v > 0.0).then_some(v);
        SamplingConfig {
            temperature: self.temperature,
            top_k: (self.top_k > 0).then_some(self.top_k),
            top_p: (self.top_p < 1.0).then_some(self.top_p),
            min_p: positive(self.min_p),
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
    }
}

/// Parses the command line and runs the command on the backend it names.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let model = match &cli.command {
        Command::Generate(a) => &a.model,
        Command::Chat(a) | Command::Run(a) => &a.model,
        Command::Serve(a) => &a.model,
        Command::Score(a) => &a.model,
        Command::Inspect(a) => return inspect::run(a),
        Command::Quantize(a) => return quantize::run(a),
    };
    let (kind, precision) = (model.backend, model.dtype);
    run_on(kind, precision, cli.command)?
}

impl BackendTask for Command {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        match self {
            Command::Generate(args) => generate::run::<B>(args, &device),
            Command::Chat(args) | Command::Run(args) => chat::run::<B>(args, &device),
            Command::Serve(args) => serve::run::<B>(args, &device),
            Command::Score(args) => score::run::<B>(args, &device),
            Command::Inspect(args) => inspect::run(&args),
            Command::Quantize(args) => quantize::run(&args),
        }
    }
}

/// Loads `--model`, routing `experts_per_token` experts per token if given.
fn load<B: Backend>(args: &ModelArgs, experts_per_token: Option<usize>, device: &B::Device) -> Result<Mixtral<B>> {
    let path = &args.model;
    let model = match args.quantize {
        Some(ty) => load_quantized(args, ty, device),
        None if path.is_file() => {
            GgufFile::open(path).and_then(|file| load_gguf_file::<B>(std::sync::Arc::new(file), device))
        }
        None => load_hub_checkpoint::<B>(path, device),
    };
    let mut model = model.with_context(|| format!("cannot load model {}", path.display()))?;
    if let Some(k) = experts_per_token {
        model.set_experts_per_token(k).context("--experts-per-token")?;
    }
    // Float weights laid out for the CPU kernels (flex only; a no-op elsewhere).
    model.pack_for_cpu();
    Ok(model)
}

/// `--model` with `--quantize TYPE`.
fn load_quantized<B: Backend>(args: &ModelArgs, ty: GgmlType, device: &B::Device) -> moe_core::Result<Mixtral<B>> {
    fn with<W: CheckpointTensors, B: Backend>(
        args: &ModelArgs,
        ty: GgmlType,
        config: &MixtralConfig,
        weights: W,
        device: &B::Device,
    ) -> moe_core::Result<Mixtral<B>> {
        let weights = match args.quantize_experts_only {
            true => QuantizeOnLoad::experts_only(weights, ty)?,
            false => QuantizeOnLoad::new(weights, ty)?,
        };
        load_hub_weights(config, &weights, device)
    }
    let path = &args.model;
    if path.is_file() {
        let file = std::sync::Arc::new(GgufFile::open(path)?);
        let config = mixtral_config(&file)?;
        with(args, ty, &config, GgufWeights::new(file, &config)?, device)
    } else {
        let config = MixtralConfig::from_hf_file(path.join("config.json"))?;
        with(args, ty, &config, HubWeights::open(path)?.with_keys_of(&config)?, device)
    }
}

/// `--tokenizer`, else the GGUF file's tokenizer or MODEL/tokenizer.json if there is one;
/// special ids from the model config.
fn tokenizer(args: &ModelArgs, model: &Mixtral<impl Backend>) -> Result<Option<TextTokenizer>> {
    let tokenizer = match &args.tokenizer {
        Some(path) => {
            let tokenizer = TextTokenizer::from_file(path)?;
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            Some(match ChatTemplate::from_model_dir(dir)? {
                Some(template) => tokenizer.with_chat_template(template),
                None => tokenizer,
            })
        }
        None if args.model.is_file() => {
            let file = GgufFile::open(&args.model)?;
            match file.get("tokenizer.ggml.model") {
                // Written by a model without one (llama.cpp's "none").
                Some(v) if v.as_str() == Some(NO_TOKENIZER) => None,
                Some(_) => Some(TextTokenizer::from_gguf(&file)?),
                None => None,
            }
        }
        None => TextTokenizer::from_model_dir(&args.model)?,
    };
    let c = model.config();
    if let Some(t) = &tokenizer {
        if t.vocab_size() > c.vocab_size {
            bail!(
                "the tokenizer has {} tokens but the model only {} (vocab_size): wrong tokenizer?",
                t.vocab_size(),
                c.vocab_size
            );
        }
    }
    let tokenizer = tokenizer.map(|t| t.with_special_ids(c.bos_token_id, c.eos_token_ids.first().copied()));
    match (&args.chat_template, tokenizer) {
        (Some(path), Some(t)) => {
            let source =
                std::fs::read_to_string(path).with_context(|| format!("--chat-template {}", path.display()))?;
            let text = |id: Option<u32>| id.and_then(|id| t.inner().id_to_token(id));
            let template = ChatTemplate::new(&source, text(t.bos_id()), text(t.eos_id()))
                .with_context(|| format!("--chat-template {}", path.display()))?;
            Ok(Some(t.with_chat_template(template)))
        }
        (_, tokenizer) => Ok(tokenizer),
    }
}

fn need_tokenizer<'a>(tokenizer: &'a Option<TextTokenizer>, args: &ModelArgs, what: &str) -> Result<&'a TextTokenizer> {
    tokenizer.as_ref().with_context(|| {
        let has = if args.model.is_file() { "no tokenizer in its metadata" } else { "no tokenizer.json" };
        format!("{what} needs a tokenizer: {} has {has} (pass --tokenizer FILE)", args.model.display())
    })
}

/// "1,2, 3 4" -> [1, 2, 3, 4]
fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().with_context(|| format!("{s:?} is not a token id")))
        .collect()
}

/// [1, 2] -> "1 2"
fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}
