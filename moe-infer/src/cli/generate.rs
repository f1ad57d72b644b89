//! `moe-infer generate`: continue prompts, streaming the text.

use std::io::Write;

use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::Args;
use moe_infer::{generate, GenerationConfig};

use super::text_output::TextOutput;
use super::{join_ids, load, need_tokenizer, parse_ids, tokenizer, ModelArgs, SamplingArgs};

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
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

pub fn run<B: Backend>(args: GenerateArgs, device: &B::Device) -> Result<()> {
    let model = load::<B>(&args.model, args.sampling.experts_per_token, device)?;
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
    };
    let single = prompts.len() == 1;
    let stream = single && !args.json;
    if stream {
        let prompt = match &tokenizer {
            Some(t) => t.decode(&prompts[0], true)?,
            None => join_ids(&prompts[0]),
        };
        super::text_output::show(&prompt);
    }

    // All prompts run as one batch through one KV cache; shorter ones are left-padded.
    let mut output = TextOutput::new(tokenizer.as_ref(), &prompts, &args.stop, stream)?;
    let out = generate(&model, &prompts, &config, |i, token| output.on_token(i, token))?;
    let texts = output.finish()?;
    let text_of = |i: usize| texts.get(i).cloned().flatten();

    let mut stdout = std::io::stdout().lock();
    if args.json {
        let texts: Vec<Option<String>> = (0..prompts.len()).map(text_of).collect();
        let json = serde_json::json!({
            "token_ids": if single { serde_json::json!(out.sequences[0]) } else { serde_json::json!(out.sequences) },
            "text": if single { serde_json::json!(texts[0]) } else { serde_json::json!(texts) },
            "prompt_tokens": out.prompt_tokens,
            "generated_tokens": out.generated_tokens,
            "prompt_tokens_per_sec": out.prompt_tokens_per_sec(),
            "decode_tokens_per_sec": out.decode_tokens_per_sec(),
        });
        writeln!(stdout, "{json}")?;
        return Ok(());
    }
    if stream {
        writeln!(stdout)?;
    } else {
        for (i, ids) in out.sequences.iter().enumerate() {
            match text_of(i) {
                Some(text) => writeln!(stdout, "{text}")?,
                None => writeln!(stdout, "{}", join_ids(ids))?,
            }
            writeln!(stdout, "---")?;
        }
    }
    eprintln!(
        "prompt: {} tokens, {:.1} tok/s | decode: {} tokens, {:.1} tok/s",
        out.prompt_tokens,
        out.prompt_tokens_per_sec(),
        out.generated_tokens,
        out.decode_tokens_per_sec()
    );
    Ok(())
}
