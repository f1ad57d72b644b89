//! Load a Hub-layout Mixtral checkpoint and generate through the library API (no CLI crates).
//!
//! ```sh
//! cargo run --release --example load_and_generate -- tests/fixtures/tiny-mixtral 37,235,396,72
//! ```

use anyhow::{Context, Result};
use moe_core::backend::Cpu;
use moe_core::io::load_hub_checkpoint;
use moe_infer::{generate, score, GenerationConfig, SamplingConfig};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: load_and_generate MODEL_DIR [PROMPT_IDS]")?;
    let prompt: Vec<u32> = args
        .next()
        .unwrap_or_else(|| "1,2,3,4".into())
        .split(',')
        .map(|s| s.trim().parse().with_context(|| format!("bad token id {s:?}")))
        .collect::<Result<_>>()?;

    let device = Default::default();
    let model = load_hub_checkpoint::<Cpu>(&dir, &device)?;
    let config = GenerationConfig {
        max_new_tokens: 16,
        sampling: SamplingConfig::default(), // greedy
        stop_tokens: model.config().eos_token_ids.clone(),
        experts_per_token: None,
    };
    let out = generate(&model, &[prompt.clone()], &config, |_, _| true)?;
    println!("prompt {prompt:?} -> {:?}", &out.sequences[0][prompt.len()..]);

    let scored = score(&model, &out.sequences)?;
    println!(
        "perplexity of the whole sequence: {:.3} (router aux loss {:.4})",
        scored.perplexity, scored.aux_loss
    );
    Ok(())
}
