//! `moe-infer score`: NLL and perplexity of token sequences or a text file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use clap::Args;
use moe_infer::score;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::{load, need_tokenizer, parse_ids, tokenizer, ModelArgs};

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
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

pub fn run<B: Backend>(args: ScoreArgs, device: &B::Device) -> Result<()> {
    let model = load::<B>(&args.model, None, device)?;
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
                eprintln!(
                    "note: {} has {} tokens; scoring the first {max} (the context length)",
                    path.display(),
                    ids.len()
                );
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

/// Writes `logits` and, for a MoE model, the stacked `router_logits` (a dense model has none).
fn dump_logits<B: Backend>(path: &Path, logits: Tensor<B, 3>, router: &[Tensor<B, 2>]) -> Result<()> {
    let bytes = |t: burn::tensor::TensorData| -> Vec<u8> { t.iter::<f32>().flat_map(f32::to_le_bytes).collect() };
    let ls = logits.dims().to_vec();
    let lb = bytes(logits.into_data());
    let router = (!router.is_empty()).then(|| Tensor::stack::<3>(router.to_vec(), 0));
    let (rs, rb) = match router {
        Some(r) => (r.dims().to_vec(), bytes(r.into_data())),
        None => (vec![], vec![]),
    };
    let mut views = vec![("logits", TensorView::new(Dtype::F32, ls, &lb)?)];
    if !rs.is_empty() {
        views.push(("router_logits", TensorView::new(Dtype::F32, rs, &rb)?));
    }
    safetensors::serialize_to_file(views, None, path).with_context(|| format!("cannot write {}", path.display()))
}
