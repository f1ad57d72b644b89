//! `moe-infer inspect`: shape, parameter counts and memory, from config.json (or a GGUF
//! file's metadata) alone.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use moe_core::backend::Precision;
use moe_core::config::MixtralConfig;
use moe_core::gguf::{mixtral_config, GgufFile};

#[derive(Args)]
pub struct InspectArgs {
    /// Model folder (only config.json is read) or GGUF file (only its header is read).
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let c = if args.model.is_file() {
        GgufFile::open(&args.model)
            .and_then(|file| mixtral_config(&file))
            .with_context(|| format!("cannot read {}", args.model.display()))?
    } else {
        let path = args.model.join("config.json");
        MixtralConfig::from_hf_file(&path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let (total, active) = (c.num_params(), c.num_active_params());
    let context = c.max_seq_len as u64;
    if args.json {
        let memory: serde_json::Map<String, serde_json::Value> = Precision::ALL
            .iter()
            .map(|p| {
                let kv = c.kv_cache_bytes_per_token(p.bytes());
                (
                    p.to_string(),
                    serde_json::json!({
                        "weights_bytes": c.weight_bytes(p.bytes()),
                        "kv_cache_bytes_per_token": kv,
                        "kv_cache_bytes_full_context": kv * context,
                    }),
                )
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
    let ffn = match c.dense {
        true => format!("dense FFN d_ff {}", c.d_ff),
        false => format!("experts {} x d_ff {}, top-{} routing", c.n_experts, c.d_ff, c.top_k),
    };
    println!("  family {}{}", c.family, if c.dense { " (dense)" } else { "" });
    println!(
        "  {} layers, d_model {}, {} heads ({} KV heads, head_dim {}), {ffn}",
        c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim
    );
    if !c.dense_layers.is_empty() {
        println!("  dense layers {:?} (d_ff {})", c.dense_layers, c.dense_width());
    }
    println!(
        "  vocab {}, context {}, rope theta {}, sliding window {}, tied embeddings {}",
        c.vocab_size,
        c.max_seq_len,
        c.rope_theta,
        c.sliding_window.map_or("none".to_string(), |w| w.to_string()),
        c.tie_word_embeddings
    );
    println!(
        "parameters: {} total, {} active per token ({:.1}%)",
        human(total as f64),
        human(active as f64),
        100.0 * active as f64 / total as f64
    );
    println!("memory:");
    for p in Precision::ALL {
        let kv = c.kv_cache_bytes_per_token(p.bytes());
        println!(
            "  {:>4}: weights {}, KV cache {} per token ({} for the full {}-token context)",
            p.to_string(),
            human_bytes(c.weight_bytes(p.bytes())),
            human_bytes(kv),
            human_bytes(kv * context),
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
