use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use clap::{Args, Parser, Subcommand};
use moe_core::backend::{run_on, BackendKind, BackendTask, Precision};
use moe_core::io::load_hub_checkpoint;
use moe_core::model::Mixtral;
use moe_core::config::MixtralConfig;
use moe_infer::{generate, mixtral_chat_prompt, score, GenerationConfig, SamplingConfig, TextCollector, TextTokenizer, Turn};
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
    /// Continue prompts (KV-cached), streaming text (or ids) as it is produced.
    Generate(GenerateArgs),
    /// Interactive multi-turn chat with the Mixtral-Instruct template (`/reset`, `/exit`).
    Chat(ChatArgs),
    /// Negative log-likelihood and perplexity of token sequences (like llama.cpp's perplexity).
    Score(ScoreArgs),
    /// Shape, parameter counts (total and active per token) and memory needed per dtype.
    Inspect(InspectArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// Model folder: config.json + model.safetensors (or a sharded index) [+ tokenizer.json].
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// ndarray or flex (CPU), wgpu, or cuda (when built with `--features cuda`).
    #[arg(long, default_value = "ndarray")]
    backend: BackendKind,
    /// Compute dtype: f32, f16 (flex, cuda, wgpu with SHADER_F16) or bf16 (flex, cuda).
    /// Half precision keeps norms, softmaxes and losses in f32, as transformers does.
    #[arg(long, default_value = "f32")]
    dtype: Precision,
    /// tokenizer.json to use instead of MODEL/tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
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

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text (needs a tokenizer). Repeat for a batch.
    #[arg(long, short = 'p', conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
    prompt: Vec<String>,
    /// Prompt token ids, separated by commas or spaces. Repeat for a batch.
    #[arg(long = "prompt-ids")]
    prompt_ids: Vec<String>,
    /// Tokens to generate at most.
    #[arg(long, short = 'n', default_value_t = 64)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when the text contains this string (left out of the output). Repeatable.
    #[arg(long)]
    stop: Vec<String>,
    /// Do not stop at the model's EOS token.
    #[arg(long)]
    ignore_eos: bool,
    /// Print one JSON object (token_ids, text, speeds) instead of streaming.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Instructions put before the first user message.
    #[arg(long)]
    system: Option<String>,
    /// Tokens per answer at most.
    #[arg(long, short = 'n', default_value_t = 512)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// File with one sequence per line, ids separated by spaces or commas (equal lengths).
    #[arg(long = "token-ids", conflicts_with = "text_file", required_unless_present = "text_file")]
    token_ids: Option<PathBuf>,
    /// Text file to score as one sequence (tokenised with BOS, cut to the context length).
    #[arg(long = "text-file")]
    text_file: Option<PathBuf>,
    /// Write `logits` [B, S, V] and `router_logits` [L, B*S, E] (f32) to this safetensors file.
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// Model folder (only config.json is read).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let model = match &cli.command {
        Command::Generate(a) => &a.model,
        Command::Chat(a) => &a.model,
        Command::Score(a) => &a.model,
        Command::Inspect(a) => return inspect(a),
    };
    let (kind, precision) = (model.backend, model.dtype);
    run_on(kind, precision, cli.command)?
}

impl BackendTask for Command {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        match self {
            Command::Generate(args) => run_generate::<B>(args, &device),
            Command::Chat(args) => run_chat::<B>(args, &device),
            Command::Score(args) => run_score::<B>(args, &device),
            Command::Inspect(args) => inspect(&args),
        }
    }
}

fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<Mixtral<B>> {
    load_hub_checkpoint::<B>(dir, device).with_context(|| format!("cannot load model {}", dir.display()))
}

/// `--tokenizer`, else MODEL/tokenizer.json if there is one; special ids from the model config.
fn tokenizer(args: &ModelArgs, model: &Mixtral<impl Backend>) -> Result<Option<TextTokenizer>> {
    let tokenizer = match &args.tokenizer {
        Some(path) => Some(TextTokenizer::from_file(path)?),
        None => TextTokenizer::from_model_dir(&args.model)?,
    };
    let c = model.config();
    if let Some(t) = &tokenizer {
        if t.vocab_size() > c.vocab_size {
            bail!("the tokenizer has {} tokens but the model only {} (vocab_size): wrong tokenizer?", t.vocab_size(), c.vocab_size);
        }
    }
    Ok(tokenizer.map(|t| t.with_special_ids(c.bos_token_id, c.eos_token_ids.first().copied())))
}

fn need_tokenizer<'a>(tokenizer: &'a Option<TextTokenizer>, args: &ModelArgs, what: &str) -> Result<&'a TextTokenizer> {
    tokenizer.as_ref().with_context(|| {
        format!(
            "{what} needs a tokenizer: {} has no tokenizer.json (pass --tokenizer FILE)",
            args.model.display()
        )
    })
}

/// "1,2, 3 4" -> [1, 2, 3, 4]
fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().with_context(|| format!("{s:?} is not a token id")))
        .collect()
}

fn run_generate<B: Backend>(args: GenerateArgs, device: &B::Device) -> Result<()> {
    let model = load::<B>(&args.model.model, device)?;
    let tokenizer = tokenizer(&args.model, &model)?;
    let prompts: Vec<Vec<u32>> = if args.prompt.is_empty() {
        args.prompt_ids.iter().map(|p| parse_ids(p)).collect::<Result<_>>()?
    } else {
        let t = need_tokenizer(&tokenizer, &args.model, "--prompt")?;
        args.prompt.iter().map(|p| t.encode(p, true)).collect::<Result<_, _>>()?
    };
    if !args.stop.is_empty() && tokenizer.is_none() {
        need_tokenizer(&tokenizer, &args.model, "--stop")?;
    }
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: args.sampling.sampling(),
        stop_tokens: if args.ignore_eos { vec![] } else { model.config().eos_token_ids.clone() },
        experts_per_token: args.sampling.experts_per_token,
    };
    let single = prompts.len() == 1;
    let stream = single && !args.json;
    let mut stdout = std::io::stdout().lock();

    // All prompts run as one batch through one KV cache; shorter ones are left-padded.
    let batch = &prompts;
    let mut collectors = match &tokenizer {
        Some(t) => Some(
            batch.iter().map(|p| TextCollector::new(t, p, &args.stop)).collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    if stream {
        match &tokenizer {
            Some(t) => write!(stdout, "{}", t.decode(&batch[0], true)?)?,
            None => write!(stdout, "{}", join_ids(&batch[0]))?,
        }
        stdout.flush()?;
    }
    let mut failure = None;
    let out = generate(&model, &batch, &config, |i, token| {
        let Some(collectors) = collectors.as_mut() else {
            if stream {
                let _ = write!(stdout, " {token}");
                let _ = stdout.flush();
            }
            return true;
        };
        match collectors[i].push(token) {
            Ok((piece, go_on)) => {
                if stream {
                    let _ = write!(stdout, "{piece}");
                    let _ = stdout.flush();
                }
                go_on
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    let mut results = Vec::with_capacity(batch.len());
    for (k, sequence) in out.sequences.iter().enumerate() {
        let text = collectors.as_mut().map(|c| {
            let rest = c[k].finish();
            if stream {
                let _ = write!(stdout, "{rest}");
            }
            c[k].text().to_string()
        });
        results.push((sequence.clone(), text));
    }
    let (prompt_tokens, generated, prompt_secs, decode_secs) =
        (out.prompt_tokens, out.generated_tokens, out.prompt_secs, out.decode_secs);
    let prompt_tps = prompt_tokens as f64 / f64::max(prompt_secs, 1e-9);
    // The first token of each sequence comes from the prompt pass.
    let decode_tps = generated.saturating_sub(prompts.len()) as f64 / f64::max(decode_secs, 1e-9);
    if args.json {
        let ids: Vec<&Vec<u32>> = results.iter().map(|r| &r.0).collect();
        let texts: Vec<Option<&String>> = results.iter().map(|r| r.1.as_ref()).collect();
        let json = serde_json::json!({
            "token_ids": if single { serde_json::json!(ids[0]) } else { serde_json::json!(ids) },
            "text": if single { serde_json::json!(texts[0]) } else { serde_json::json!(texts) },
            "prompt_tokens": prompt_tokens,
            "generated_tokens": generated,
            "prompt_tokens_per_sec": prompt_tps,
            "decode_tokens_per_sec": decode_tps,
        });
        writeln!(stdout, "{json}")?;
    } else {
        if stream {
            writeln!(stdout)?;
        } else {
            for (ids, text) in &results {
                match text {
                    Some(text) => writeln!(stdout, "{text}")?,
                    None => writeln!(stdout, "{}", join_ids(ids))?,
                }
                writeln!(stdout, "---")?;
            }
        }
        eprintln!(
            "prompt: {prompt_tokens} tokens, {prompt_tps:.1} tok/s | decode: {generated} tokens, {decode_tps:.1} tok/s"
        );
    }
    Ok(())
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

fn run_chat<B: Backend>(args: ChatArgs, device: &B::Device) -> Result<()> {
    let model = load::<B>(&args.model.model, device)?;
    let tokenizer = tokenizer(&args.model, &model)?;
    let tokenizer = need_tokenizer(&tokenizer, &args.model, "chat")?;
    let c = model.config();
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: args.sampling.sampling(),
        stop_tokens: c.eos_token_ids.clone(),
        experts_per_token: args.sampling.experts_per_token,
    };
    let mut turns: Vec<Turn> = Vec::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    eprintln!("chat with {} ({} tokens of context); /reset starts over, /exit or Ctrl-D ends", args.model.model.display(), c.max_seq_len);
    loop {
        write!(stdout, "> ")?;
        stdout.flush()?;
        let mut line = String::new();
        if stdin.read_line(&mut line)? == 0 {
            writeln!(stdout)?;
            return Ok(());
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                turns.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        turns.push(Turn { user: line.to_string(), assistant: None });
        let prompt = tokenizer.encode(&mixtral_chat_prompt(args.system.as_deref(), &turns), false)?;
        let room = c.max_seq_len.saturating_sub(prompt.len());
        if room == 0 {
            turns.clear();
            eprintln!("(the conversation no longer fits the {}-token context; it was cleared: ask again)", c.max_seq_len);
            continue;
        }
        let config = GenerationConfig { max_new_tokens: config.max_new_tokens.min(room), ..config.clone() };
        let no_stops: [String; 0] = [];
        let mut collector = TextCollector::new(tokenizer, &prompt, &no_stops)?;
        let mut failure = None;
        let out = generate(&model, &[prompt.clone()], &config, |_, token| match collector.push(token) {
            Ok((piece, _)) => {
                let _ = write!(stdout, "{piece}");
                let _ = stdout.flush();
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        })?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        let rest = collector.finish();
        writeln!(stdout, "{rest}")?;
        turns.last_mut().expect("just pushed").assistant = Some(collector.text().trim().to_string());
        eprintln!("({} tokens, {:.1} tok/s)", out.generated_tokens, out.decode_tokens_per_sec());
    }
}

fn inspect(args: &InspectArgs) -> Result<()> {
    let path = args.model.join("config.json");
    let c = MixtralConfig::from_hf_file(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let (total, active) = (c.num_params(), c.num_active_params());
    // K and V of every layer, per token of context.
    let kv_per_token = 2 * c.n_layers * c.n_kv_heads * c.head_dim;
    let dtypes = [("f32", 4u64), ("f16", 2), ("bf16", 2)];
    if args.json {
        let memory: serde_json::Map<String, serde_json::Value> = dtypes
            .iter()
            .map(|(name, bytes)| {
                (name.to_string(), serde_json::json!({
                    "weights_bytes": total as u64 * bytes,
                    "kv_cache_bytes_per_token": kv_per_token as u64 * bytes,
                    "kv_cache_bytes_full_context": (kv_per_token * c.max_seq_len) as u64 * bytes,
                }))
            })
            .collect();
        let json = serde_json::json!({
            "config": c,
            "params_total": total,
            "params_active_per_token": active,
            "memory": memory,
        });
        println!("{json}");
        return Ok(());
    }
    println!("model: {}", args.model.display());
    println!(
        "  {} layers, d_model {}, {} heads ({} KV heads, head_dim {}), experts {} x d_ff {}, top-{} routing",
        c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.n_experts, c.d_ff, c.top_k
    );
    println!(
        "  vocab {}, context {}, rope theta {}, sliding window {}, tied embeddings {}",
        c.vocab_size,
        c.max_seq_len,
        c.rope_theta,
        c.sliding_window.map_or("none".to_string(), |w| w.to_string()),
        c.tie_word_embeddings
    );
    println!("parameters: {} total, {} active per token ({:.1}%)", human(total as f64), human(active as f64), 100.0 * active as f64 / total as f64);
    println!("memory:");
    for (name, bytes) in dtypes {
        println!(
            "  {name:>4}: weights {}, KV cache {} per token ({} for the full {}-token context)",
            human_bytes(total as u64 * bytes),
            human_bytes(kv_per_token as u64 * bytes),
            human_bytes((kv_per_token * c.max_seq_len) as u64 * bytes),
            c.max_seq_len
        );
    }
    Ok(())
}

fn human(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2}B", n / 1e9),
        n if n >= 1e6 => format!("{:.2}M", n / 1e6),
        n if n >= 1e3 => format!("{:.1}K", n / 1e3),
        n => format!("{n}"),
    }
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    match b {
        b if b >= 1024f64.powi(3) => format!("{:.2} GiB", b / 1024f64.powi(3)),
        b if b >= 1024f64.powi(2) => format!("{:.2} MiB", b / 1024f64.powi(2)),
        b if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        b => format!("{b} B"),
    }
}

fn run_score<B: Backend>(args: ScoreArgs, device: &B::Device) -> Result<()> {
    let model = load::<B>(&args.model.model, device)?;
    let batch = match (&args.token_ids, &args.text_file) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let batch = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| parse_ids(l).with_context(|| format!("{} line {}", path.display(), i + 1)))
                .collect::<Result<Vec<_>>>()?;
            if batch.is_empty() {
                bail!("{} holds no token ids", path.display());
            }
            batch
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let tokenizer = tokenizer(&args.model, &model)?;
            let mut ids = need_tokenizer(&tokenizer, &args.model, "--text-file")?.encode(&text, true)?;
            let max = model.config().max_seq_len;
            if ids.len() > max {
                eprintln!("note: {} has {} tokens; scoring the first {max} (the context length)", path.display(), ids.len());
                ids.truncate(max);
            }
            vec![ids]
        }
        (None, None) => bail!("give --token-ids FILE or --text-file FILE"),
    };
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
