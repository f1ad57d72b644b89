//! `moe-train upcycle`: a dense model's FFN copied into every expert of a new MoE (sparse
//! upcycling), written as a Hub-layout folder that `moe-train --init` trains on.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use moe_core::backend::Cpu;
use moe_core::config::MixtralConfig;
use moe_core::convert::{upcycle, RouterInit, UpcycleConfig};
use moe_core::io::{load_hub_checkpoint, save_hub_checkpoint, WeightDtype};

/// Options of `moe-train upcycle`.
#[derive(clap::Args, Debug)]
pub struct UpcycleArgs {
    /// The dense model: a Hub-layout folder (a `moe-train --dense` run's `model/`, or a
    /// MistralForCausalLM / LlamaForCausalLM checkpoint).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Experts per layer.
    #[arg(long, value_name = "E")]
    pub experts: usize,
    /// Experts per token.
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub top_k: usize,
    /// Standard deviation of the new routers' weights; 0 makes them all zero.
    #[arg(long, value_name = "STD", default_value_t = 0.02)]
    pub router_std: f64,
    /// Gaussian noise added to each expert's copy, as a fraction of each matrix's standard
    /// deviation (0: exact copies).
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub expert_noise: f64,
    /// Drop-Upcycling: the fraction of each expert's hidden units re-initialised at random
    /// (each expert its own; Nakamura et al. found 0.5 best).
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub reinit_fraction: f64,
    /// Seed of the router, noise and re-initialisation draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for the upcycled model (must not exist yet).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs `moe-train upcycle`; returns the folder written.
pub fn run(args: &UpcycleArgs) -> Result<PathBuf> {
    if args.out.exists() {
        bail!("--out {} exists already; pick a new folder", args.out.display());
    }
    let config = UpcycleConfig {
        router_init: if args.router_std == 0.0 { RouterInit::Zero } else { RouterInit::Normal(args.router_std) },
        expert_noise: args.expert_noise,
        reinit_fraction: args.reinit_fraction,
        seed: args.seed,
        ..UpcycleConfig::new(args.experts, args.top_k)
    };
    upcycle_folder(&args.from, &config, &args.out)?;
    eprintln!("train it on with: moe-train --init {} [--data ...] [--steps N]", args.out.display());
    Ok(args.out.clone())
}

/// Upcycles the dense model folder `from` as `config` says into the new folder `out` (with the
/// dense model's tokenizer); returns the new model's shape.
pub fn upcycle_folder(from: &Path, config: &UpcycleConfig, out: &Path) -> Result<MixtralConfig> {
    let device = Default::default();
    let dense = load_hub_checkpoint::<Cpu>(from, &device).with_context(|| format!("--from {}", from.display()))?;
    let (dense_params, layers) = (dense.config().num_params(), dense.config().n_layers);
    let moe = upcycle(dense, config).with_context(|| format!("upcycling {}", from.display()))?;
    save_hub_checkpoint(&moe, out, WeightDtype::F32)?;
    copy_tokenizer(from, out)?;
    let c = moe.config();
    eprintln!(
        "upcycled {} ({:.2}M parameters) into {} layers of {} experts (top-{}): {:.2}M parameters, {:.2}M active per token",
        from.display(),
        dense_params as f64 / 1e6,
        layers,
        c.n_experts,
        c.top_k,
        c.num_params() as f64 / 1e6,
        c.num_active_params() as f64 / 1e6
    );
    Ok(c.clone())
}

/// The dense model's tokenizer goes along: the upcycled embedding rows are its tokens.
fn copy_tokenizer(from: &Path, to: &Path) -> Result<()> {
    let source = from.join("tokenizer.json");
    if source.is_file() {
        std::fs::copy(&source, to.join("tokenizer.json")).with_context(|| format!("copying {}", source.display()))?;
    }
    Ok(())
}
