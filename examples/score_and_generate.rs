//! Load a Hub-layout Mixtral folder, score a token sequence, and greedily continue a prompt.
//!
//! ```sh
//! cargo run --release --example score_and_generate -- tests/fixtures/tiny-mixtral
//! cargo run --release --example score_and_generate -- DIR --backend wgpu --ids 1,5,9,13 --new 16
//! ```
//!
//! Without `--ids`, the folder's `reference.json` (the test fixtures have one) supplies the
//! batch and prompt, and the numbers transformers computed are printed beside ours.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use moe_core::backend::BackendKind;
use moe_core::prelude::*;

struct Args {
    model: PathBuf,
    backend: BackendKind,
    ids: Option<Vec<i64>>,
    new_tokens: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut model = None;
    let mut backend = BackendKind::Ndarray;
    let mut ids = None;
    let mut new_tokens = 16;
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--backend" => backend = value("--backend")?.parse::<BackendKind>()?.ensure_compiled()?,
            "--ids" => {
                let list = value("--ids")?;
                let parsed = list
                    .split(',')
                    .map(|s| s.trim().parse::<i64>().with_context(|| format!("bad token id {s:?}")))
                    .collect::<Result<Vec<_>>>()?;
                ids = Some(parsed);
            }
            "--new" => new_tokens = value("--new")?.parse().context("--new takes a count")?,
            "-h" | "--help" => {
                println!("usage: score_and_generate MODEL_DIR [--backend ndarray|wgpu|cuda] [--ids 1,2,3] [--new N]");
                std::process::exit(0);
            }
            flag if flag.starts_with('-') => bail!("unknown flag {flag}"),
            path => model = Some(PathBuf::from(path)),
        }
    }
    let model = model.context("give the model folder (e.g. tests/fixtures/tiny-mixtral)")?;
    Ok(Args { model, backend, ids, new_tokens })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    match args.backend {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => run::<moe_core::backend::Cpu>(&args, Default::default()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => run::<moe_core::backend::Wgpu>(&args, moe_core::backend::wgpu_device()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => run::<moe_core::backend::Cuda>(&args, Default::default()),
        #[allow(unreachable_patterns)]
        other => bail!("backend {other} is not compiled in"),
    }
}

fn run<B: Backend>(args: &Args, device: B::Device) -> Result<()> {
    let model = load_hub_checkpoint::<B>(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let config = model.config().clone();
    println!(
        "loaded {}: {} layers, {} experts (top-{}), {:.2}M params ({:.2}M active per token)",
        args.model.display(),
        config.n_layers,
        config.n_experts,
        config.top_k,
        config.num_params() as f64 / 1e6,
        config.num_active_params() as f64 / 1e6,
    );

    let reference: Option<serde_json::Value> = std::fs::read_to_string(args.model.join("reference.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let (batch, prompt) = match (&args.ids, &reference) {
        (Some(ids), _) => (vec![ids.clone()], ids.clone()),
        (None, Some(r)) => {
            let ids = reference_ids(&args.model)?;
            let prompt = r["gen_tokens"]
                .as_array()
                .map(|a| a.iter().take(8).filter_map(|v| v.as_i64()).collect())
                .unwrap_or_else(|| ids[0].clone());
            (ids, prompt)
        }
        (None, None) => bail!("no --ids given and {} has no reference.json", args.model.display()),
    };
    for ids in batch.iter().chain([&prompt]) {
        if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as usize >= config.vocab_size) {
            bail!("token id {bad} is outside the vocabulary (0..{})", config.vocab_size);
        }
    }

    let (b, s) = (batch.len(), batch[0].len());
    if s < 2 || batch.iter().any(|ids| ids.len() != s) {
        bail!("scoring needs sequences of equal length >= 2");
    }
    let input: Tensor<B, 2, Int> =
        Tensor::from_data(TensorData::new(batch.concat(), [b, s]), &device);
    let out = model.forward(input.clone());
    let lm = causal_lm_loss(out.logits, input).into_scalar().elem::<f32>();
    let aux = load_balancing_loss(&out.router_logits, config.top_k, None).into_scalar().elem::<f32>();
    let z = router_z_loss(&out.router_logits).into_scalar().elem::<f32>();
    println!("scored {b}x{s} tokens: lm_loss {lm:.6} (perplexity {:.3}), aux_loss {aux:.6}, z_loss {z:.4}", lm.exp());
    if let Some(r) = &reference {
        println!("transformers:          lm_loss {:.6}, aux_loss {:.6}", r["lm_loss"], r["aux_loss"]);
    }

    let mut tokens = prompt.clone();
    for _ in 0..args.new_tokens {
        if tokens.len() >= config.max_seq_len {
            break;
        }
        let n = tokens.len();
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.clone(), [1, n]), &device);
        let logits = model.forward(input).logits.narrow(1, n - 1, 1).reshape([config.vocab_size]);
        let next = logits.argmax(0).into_scalar().elem::<i64>();
        tokens.push(next);
    }
    println!("greedy continuation: {:?} -> {:?}", prompt, &tokens[prompt.len()..]);
    if let Some(want) = reference.as_ref().and_then(|r| r["gen_tokens"].as_array()) {
        let want: Vec<i64> = want.iter().filter_map(|v| v.as_i64()).collect();
        let n = tokens.len().min(want.len());
        let same = tokens[..n] == want[..n];
        println!("transformers generate: {:?} ({})", &want[prompt.len()..n], if same { "identical" } else { "DIFFERENT" });
    }
    Ok(())
}

/// `input_ids` from the fixture's `reference.safetensors`.
fn reference_ids(dir: &std::path::Path) -> Result<Vec<Vec<i64>>> {
    let path = dir.join("reference.safetensors");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let t = st.tensor("input_ids")?;
    let ids: Vec<i64> = t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    Ok(ids.chunks(t.shape()[1]).map(|c| c.to_vec()).collect())
}

use burn::tensor::ElementConversion;
