//! The `moe-train` command line.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser};
use moe_core::backend::{run_on, BackendKind, Precision};
use moe_core::config::Family;
use moe_core::moe::{RoutingConfig, Scoring};

use crate::config::{TrainConfig, PRESETS};
use crate::setup::{default_run_dir, new_run, resume_run, DataSpec};
use crate::trainer::{RunSetup, RunSummary, TrainTask};

/// Train a sparse Mixture-of-Experts transformer (Mixtral architecture) from scratch.
///
/// With no arguments: the `tiny` preset on the built-in multi-task corpus (arithmetic, string
/// reversal, sorting, copying, sentences), a few minutes on a laptop CPU. The run folder gets the
/// config, metrics.jsonl, checkpoints, PNG plots and the model in HuggingFace Hub layout, which
/// `moe-infer` and transformers' MixtralForCausalLM load.
#[derive(Parser, Debug)]
#[command(name = "moe-train", version, about, long_about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Other jobs than training one model.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// JSON config: {"model": {...MixtralConfig}, "train": {...}}; missing train fields take defaults.
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Built-in settings: tiny (default) or small.
    #[arg(long)]
    pub preset: Option<String>,
    /// Training text: files (one document per paragraph), folders, JSONL with a "text" field.
    /// Default: the built-in synthetic corpus.
    #[arg(long, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// A tokenizer.json to use instead of training a byte-level BPE on the data.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Optimizer steps (total, when resuming).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Run folder. Default: `runs/<preset>-<n>`, the first free n.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue a run (its folder, or one of its checkpoints) exactly where it stopped.
    /// Only --steps and --backend may be given with it: the run keeps its saved settings.
    #[arg(long, conflicts_with_all = ["config", "preset", "data", "tokenizer", "out", "seed", "init"])]
    pub resume: Option<PathBuf>,
    /// Start from the weights of a Hub-layout model folder (config.json, model.safetensors,
    /// tokenizer.json), e.g. one written by `moe-train upcycle` or a run's `model/`: the model
    /// is that one, the training settings the preset's (or --config's) with the flags above.
    #[arg(long, value_name = "DIR")]
    pub init: Option<PathBuf>,
    /// ndarray or flex (CPU), wgpu, or cuda (when built with `--features cuda`). Training is f32.
    /// The default is the fastest CPU backend compiled in, flex: the default run trains at
    /// 10.6k tokens/s on it against 6.6k on ndarray (docs/benchmarks-history.md).
    #[arg(long, default_value_t = BackendKind::fastest_cpu())]
    pub backend: BackendKind,
    /// Seed of the model init, the synthetic corpus and the data order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Training and shape settings (a resumed run keeps its own).
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Routing options (a resumed run keeps its own).
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// Print one JSON object with the run's results at the end (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// The training and model-shape flags of a new run, each overriding the preset's or
/// `--config`'s value. `--resume` refuses them (clap's group of them, `SettingsArgs`).
#[derive(clap::Args, Debug, Default)]
pub struct SettingsArgs {
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Tokens per sequence.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Weight of the load-balancing loss (default: the model's router_aux_loss_coef, 0.02).
    #[arg(long)]
    pub aux_loss_coef: Option<f64>,
    /// Weight of the router z-loss.
    #[arg(long)]
    pub z_loss_coef: Option<f64>,
    /// Train a dense model (Mistral/Llama architecture) instead: the same attention, embeddings
    /// and norms, and one SwiGLU per layer as wide as the MoE's top-k experts together (equal
    /// compute per token). Exported as MistralForCausalLM.
    #[arg(long)]
    pub dense: bool,
    /// Train a model of another family on the preset's (or --config's) shape, with the options
    /// its published models use: qwen2_moe (q/k/v biases, gated shared expert, raw top-k
    /// weights), qwen3_moe (per-head q/k norms), olmoe (q/k norms, raw top-k weights),
    /// granitemoe (embedding, residual, score and logit multipliers; tied embeddings), or
    /// mixtral (the default). The model is exported in that family's Hub layout.
    #[arg(long, value_name = "MODEL_TYPE", conflicts_with_all = ["dense", "init"])]
    pub arch: Option<String>,
    /// Train only the routers; every other parameter keeps its starting value (with --init:
    /// a fresh router over an upcycled or merged model).
    #[arg(long)]
    pub routers_only: bool,
    /// Fine-grained experts (DeepSeekMoE): split every expert into M experts 1/M as wide and
    /// route each token to M times as many, so parameters and compute per token stay the same.
    #[arg(long, value_name = "M")]
    pub fine_grained: Option<usize>,
    /// Evaluate every N steps.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Checkpoint every N steps.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
}

/// The routing flags of a new run: each sets one field of the model's [`RoutingConfig`]
/// ([`RoutingArgs::apply`]). `--resume` refuses them (clap's group of them, `RoutingArgs`).
#[derive(clap::Args, Debug, Default)]
pub struct RoutingArgs {
    /// Router jitter: while training, each MoE layer's input is multiplied by noise drawn
    /// uniformly from [1 - J, 1 + J] (Switch; HF `router_jitter_noise`). Default 0: none.
    #[arg(long, value_name = "J")]
    pub router_jitter: Option<f64>,
    /// Keep the chosen experts' raw softmax probabilities as their weights instead of
    /// renormalising them to sum to 1 (Switch, Qwen2-MoE; Mixtral renormalises).
    #[arg(long)]
    pub raw_top_k_weights: bool,
    /// Expert capacity while training: each expert takes at most ceil(F * tokens * top_k /
    /// experts) assignments per batch, in token order; the rest are dropped (the token passes
    /// through the residual alone). Default: dropless.
    #[arg(long, value_name = "F")]
    pub capacity_factor: Option<f64>,
    /// Expert capacity in evaluation and inference (default: --capacity-factor's).
    #[arg(long, value_name = "F")]
    pub eval_capacity_factor: Option<f64>,
    /// How gate logits become expert scores: softmax (Mixtral) or an independent sigmoid per
    /// expert (DeepSeek-V3).
    #[arg(long, value_parser = ["softmax", "sigmoid"])]
    pub scoring: Option<String>,
    /// Auxiliary-loss-free balancing (DeepSeek-V3): each expert gets a selection bias that moves
    /// by RATE after every step, up when the expert got fewer tokens than the mean, down when
    /// more (DeepSeek-V3: 0.001). Usually with --aux-loss-coef 0.
    #[arg(long, value_name = "RATE")]
    pub bias_update_rate: Option<f64>,
    /// Split the experts into G groups; each token chooses within its --top-k-groups best
    /// groups (DeepSeek-V3's group-limited routing).
    #[arg(long, value_name = "G")]
    pub expert_groups: Option<usize>,
    /// Groups each token may route into (with --expert-groups).
    #[arg(long, value_name = "N")]
    pub top_k_groups: Option<usize>,
    /// Multiply the routed experts' weights by S (DeepSeek-V3's routed_scaling_factor).
    #[arg(long, value_name = "S")]
    pub routed_scaling: Option<f64>,
    /// Always-on shared experts beside the routed ones (DeepSeekMoE, Qwen-MoE), fused into one
    /// block N times an expert's width.
    #[arg(long, value_name = "N")]
    pub shared_experts: Option<usize>,
    /// Hidden width of the shared block (default: N times the experts' intermediate size).
    #[arg(long, value_name = "F")]
    pub shared_d_ff: Option<usize>,
    /// Scale the shared block's output by a learned per-token sigmoid gate (Qwen-MoE).
    #[arg(long)]
    pub shared_expert_gate: bool,
    /// Expert choice while training (Zhou et al. 2022): each expert takes its best
    /// capacity-factor * tokens * top_k / experts tokens of the batch, weighted by their raw
    /// scores; inference routes each token to its top-k by the same scores.
    #[arg(long)]
    pub expert_choice: bool,
    /// Noisy top-k gating while training (Shazeer et al. 2017): learned Gaussian noise on the
    /// gate logits before the top-k, and the importance + load losses (weighted by
    /// --aux-loss-coef; the paper used 0.1) in place of the Switch balancing loss.
    #[arg(long)]
    pub noisy_gating: bool,
}

impl RoutingArgs {
    /// `routing` with every flag given here applied.
    pub fn apply(&self, routing: &mut RoutingConfig) {
        routing.jitter_noise = self.router_jitter.unwrap_or(routing.jitter_noise);
        if self.raw_top_k_weights {
            routing.normalize_top_k = false;
        }
        routing.capacity_factor = self.capacity_factor.or(routing.capacity_factor);
        routing.eval_capacity_factor = self.eval_capacity_factor.or(routing.eval_capacity_factor);
        if let Some(scoring) = &self.scoring {
            routing.scoring = if scoring == "sigmoid" { Scoring::Sigmoid } else { Scoring::Softmax };
        }
        routing.bias_update_rate = self.bias_update_rate.unwrap_or(routing.bias_update_rate);
        routing.n_groups = self.expert_groups.unwrap_or(routing.n_groups);
        routing.top_k_groups = self.top_k_groups.unwrap_or(routing.top_k_groups);
        routing.scaling_factor = self.routed_scaling.unwrap_or(routing.scaling_factor);
        routing.n_shared_experts = self.shared_experts.unwrap_or(routing.n_shared_experts);
        routing.shared_d_ff = self.shared_d_ff.or(routing.shared_d_ff);
        routing.shared_expert_gate |= self.shared_expert_gate;
        routing.expert_choice |= self.expert_choice;
        routing.noisy_gating |= self.noisy_gating;
    }
}

/// `moe-train <command>`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Train the tiny preset on the built-in corpus under each routing scheme (same seed, data
    /// and steps) and write one table (comparison.md, .json) and one plot (comparison.png): val
    /// loss, tokens dropped, load imbalance, dead experts, task/expert NMI, task accuracy, tokens/s.
    Compare(crate::compare::CompareArgs),
    /// Sparse upcycling: copy a dense model's FFN into every expert of a new MoE with a fresh
    /// router (optionally noised or partly re-initialised, Drop-Upcycling), and write it as a
    /// model folder; `moe-train --init DIR` trains it on. With exact copies it computes the
    /// dense model's logits.
    Upcycle(crate::upcycle::UpcycleArgs),
    /// Knowledge distillation: train a student (by default the teacher's dense counterpart)
    /// on T² · KL(teacher ‖ student) at temperature T plus the usual cross-entropy, then report
    /// teacher and student val loss, perplexity, size and decode speed (RUN/distill.json).
    Distill(crate::distill::DistillArgs),
    /// Branch-Train-MiX: train a dense seed on all the data, branch it per slice (built-in
    /// tasks, or one --data path each), train each branch on its slice, merge the branches into
    /// a MoE (FFNs become experts, the rest is averaged) and train it on all the data; reports
    /// every stage (OUT/btx.md, .json).
    Btx(crate::btx::BtxArgs),
    /// The ways to a MoE at equal training compute on the built-in corpus: joint training from
    /// scratch, upcycling a dense model, Branch-Train-MiX, and a dense model of the same compute
    /// per token, trained alone and distilled from the joint MoE; one table (OUT/paths.md,
    /// .json: val loss and accuracy per task, NMI) and one plot (OUT/paths.png).
    Paths(crate::paths::PathsArgs),
}

impl Cli {
    /// The settings of a new run: config file or preset, then the overrides.
    fn config(&self) -> Result<(TrainConfig, String)> {
        let (mut config, name) = match (&self.config, &self.preset) {
            (Some(path), _) => (TrainConfig::from_file(path)?, "custom".to_string()),
            (None, preset) => {
                let name = preset.clone().unwrap_or_else(|| PRESETS[0].to_string());
                (TrainConfig::preset(&name)?, name)
            }
        };
        if let Some(dir) = &self.init {
            if self.settings.dense || self.settings.fine_grained.is_some() {
                bail!(
                    "--init {}: the model comes from there; --dense and --fine-grained change its shape",
                    dir.display()
                );
            }
            let dir = std::fs::canonicalize(dir).with_context(|| format!("--init {}", dir.display()))?;
            let hf = moe_core::config::HfMixtralConfig::from_file(dir.join("config.json"))
                .with_context(|| format!("--init {}", dir.display()))?;
            config.model = hf.to_mixtral().with_context(|| format!("--init {}", dir.display()))?;
            config.train.init_from = Some(dir);
        }
        let t = &mut config.train;
        let set = |field: &mut usize, value: Option<usize>| {
            if let Some(v) = value {
                *field = v
            }
        };
        set(&mut t.steps, self.steps);
        set(&mut t.batch_size, self.settings.batch_size);
        set(&mut t.grad_accum_steps, self.settings.grad_accum);
        set(&mut t.eval_every, self.settings.eval_every);
        set(&mut t.checkpoint_every, self.settings.checkpoint_every);
        if let Some(s) = self.settings.seq_len {
            t.seq_len = s;
            config.model.max_seq_len = config.model.max_seq_len.max(s);
        }
        let t = &mut config.train;
        t.seed = self.seed.unwrap_or(t.seed);
        t.lr = self.settings.lr.unwrap_or(t.lr);
        t.z_loss_coef = self.settings.z_loss_coef.unwrap_or(t.z_loss_coef);
        if self.settings.aux_loss_coef.is_some() {
            t.aux_loss_coef = self.settings.aux_loss_coef;
        }
        t.routers_only |= self.settings.routers_only;
        if let Some(arch) = &self.settings.arch {
            let family = match Family::from_model_type(arch) {
                Some((family, false)) => family,
                _ => {
                    let known: Vec<_> = Family::ALL.iter().map(|f| f.model_type()).collect();
                    bail!("--arch {arch}: not a model type this trainer builds ({})", known.join(", "))
                }
            };
            config.model = config.model.with_family(family);
        }
        self.routing.apply(&mut config.model.routing);
        if let Some(m) = self.settings.fine_grained {
            let model = &mut config.model;
            if m == 0 || !model.d_ff.is_multiple_of(m) {
                bail!(
                    "--fine-grained {m}: M must be at least 1 and divide the experts' intermediate size ({})",
                    model.d_ff
                );
            }
            // The shared block keeps the width it had before the split.
            if model.routing.n_shared_experts > 0 && model.routing.shared_d_ff.is_none() {
                model.routing.shared_d_ff = Some(model.routing.n_shared_experts * model.d_ff);
            }
            model.n_experts *= m;
            model.top_k *= m;
            model.d_ff /= m;
        }
        if self.settings.dense {
            let model = &config.model;
            if model.routing != RoutingConfig::default() || self.settings.fine_grained.is_some() {
                bail!("--dense: a dense model has no router; leave out the routing options");
            }
            config.model = model.to_dense(model.top_k * model.d_ff);
        }
        Ok((config, name))
    }
}

/// The `moe-train` command line: parses arguments, sets up or resumes the run, trains, reports.
pub fn run() -> Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match &cli.command {
        Some(Command::Compare(args)) => return crate::compare::run(args),
        Some(Command::Upcycle(args)) => return crate::upcycle::run(args).map(|_| ()),
        Some(Command::Btx(args)) => {
            let out = args.common.out_dir("btx");
            let stages = crate::btx::run(args, &out, std::io::stderr().is_terminal())?;
            match args.common.json {
                true => println!("{}", serde_json::to_string(&stages)?),
                false => print!("{}", crate::btx::markdown_table(&stages)),
            }
            return Ok(());
        }
        Some(Command::Paths(args)) => {
            let out = args.common.out_dir("paths");
            let rows = crate::paths::run(args, &out, std::io::stderr().is_terminal())?;
            match args.common.json {
                true => println!("{}", serde_json::to_string(&rows)?),
                false => {
                    print!("{}", crate::paths::markdown_table(&rows));
                    println!("wrote {0}/paths.md, {0}/paths.json, {0}/paths.png", out.display());
                }
            }
            return Ok(());
        }
        Some(Command::Distill(args)) => {
            let out = args.common.out_dir("distill");
            let report = crate::distill::run(args, out, std::io::stderr().is_terminal())?;
            match args.common.json {
                true => println!("{}", serde_json::to_string(&report)?),
                false => print!("{}", crate::distill::markdown_table(&report)),
            }
            return Ok(());
        }
        None => {}
    }
    let kind = cli.backend.ensure_compiled()?;
    let progress = std::io::stderr().is_terminal();
    let setup = match &cli.resume {
        Some(dir) => {
            let given = settings_given(&matches);
            if !given.is_empty() {
                bail!(
                    "--resume continues a run with its saved settings; only --steps and --backend may be given \
                     with it, not {}",
                    given.join(", ")
                );
            }
            resume_run(dir, cli.steps, progress)?
        }
        None => {
            let (config, name) = cli.config()?;
            let spec = DataSpec { paths: cli.data.clone(), tokenizer: cli.tokenizer.clone(), tasks: Vec::new() };
            let out = cli.out.clone().unwrap_or_else(|| default_run_dir(&name));
            new_run(config, spec, &out, progress)?
        }
    };
    describe(&setup);
    let summary = run_on(kind, Precision::F32, TrainTask { setup: &setup })?
        .with_context(|| format!("run {}", setup.run_dir.display()))?;
    report(&summary, cli.json)
}

/// The flags of [`SettingsArgs`] and [`RoutingArgs`] given on the command line, as `--name`:
/// read from clap's groups of them, so a new flag is covered without a list kept by hand.
fn settings_given(matches: &clap::ArgMatches) -> Vec<String> {
    let command = Cli::command();
    let groups = command.get_groups().filter(|g| matches!(g.get_id().as_str(), "SettingsArgs" | "RoutingArgs"));
    let ids: Vec<_> = groups.flat_map(|g| g.get_args()).collect();
    command
        .get_arguments()
        .filter(|arg| ids.contains(&arg.get_id()))
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine))
        .map(|arg| format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str())))
        .collect()
}

fn describe(setup: &RunSetup) {
    let c = &setup.config;
    let m = &c.model;
    let ffn = match m.dense {
        true => format!("dense FFN {} wide", m.d_ff),
        false => format!("{} experts (top-{}), {}", m.n_experts, m.top_k, m.family),
    };
    log::info!(
        "run {}: {} layers, d_model {}, {ffn}, vocab {}; {:.2}M parameters, {:.2}M active per token",
        setup.run_dir.display(),
        m.n_layers,
        m.d_model,
        m.vocab_size,
        m.num_params() as f64 / 1e6,
        m.num_active_params() as f64 / 1e6
    );
    let data = &setup.data;
    log::info!(
        "data: {} training / {} validation sequences of {} tokens ({}); {} steps of {} tokens{}",
        data.train.len(),
        data.val.len(),
        c.train.seq_len,
        if setup.tasks.is_empty() {
            "user data".to_string()
        } else {
            format!("built-in tasks: {}", setup.tasks.join(", "))
        },
        c.train.steps,
        c.train.batch_size * c.train.seq_len * c.train.grad_accum_steps,
        setup.resume_from.as_ref().map_or(String::new(), |p| format!("; resuming from {}", p.display()))
    );
}

fn report(summary: &RunSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
        return Ok(());
    }
    println!("samples:");
    for s in &summary.samples {
        let mark = match s.correct {
            Some(true) => " [right]",
            Some(false) => " [wrong]",
            None => "",
        };
        println!(
            "  {}{} -> {}{mark}",
            s.task.as_deref().map_or(String::new(), |t| format!("({t}) ")),
            s.prompt,
            s.output
        );
    }
    if !summary.task_accuracy.is_empty() {
        let acc: Vec<String> = summary.task_accuracy.iter().map(|(t, a)| format!("{t} {:.0}%", 100.0 * a)).collect();
        println!("greedy accuracy on fresh prompts: {}", acc.join(", "));
    }
    if let Some(nmi) = summary.specialisation_nmi {
        println!("expert specialisation (task/expert NMI, 0 = none, 1 = full): {nmi:.3}");
    }
    println!(
        "val loss {:.3} -> {:.3}; final train loss {:.3}; {} steps, {:.0} tokens/s",
        summary.initial_val_loss,
        summary.final_val_loss,
        summary.final_train_loss,
        summary.steps,
        summary.tokens_per_sec
    );
    println!("model: {}", summary.model_dir.display());
    for p in &summary.plots {
        println!("plot: {}", p.display());
    }
    Ok(())
}
