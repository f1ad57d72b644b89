//! `moe-infer chat`: an interactive multi-turn chat with the Mixtral-Instruct template.

use std::io::Write;

use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::Args;
use moe_infer::{generate, ChatMessage, GenerationConfig, Turn};

use super::text_output::TextOutput;
use super::{load, need_tokenizer, tokenizer, ModelArgs, SamplingArgs};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Instructions put before the first user message.
    #[arg(long)]
    system: Option<String>,
    /// Tokens per answer at most.
    #[arg(long, short = 'n', default_value_t = 512)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub fn run<B: Backend>(args: ChatArgs, device: &B::Device) -> Result<()> {
    let model = load::<B>(&args.model, args.sampling.experts_per_token, device)?;
    let tokenizer = tokenizer(&args.model, &model)?;
    let tokenizer = need_tokenizer(&tokenizer, &args.model, "chat")?;
    let c = model.config();
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: args.sampling.sampling(),
        stop_tokens: c.eos_token_ids.clone(),
    };
    let mut turns: Vec<Turn> = Vec::new();
    let stdin = std::io::stdin();
    eprintln!(
        "chat with {} ({} tokens of context); /reset starts over, /exit or Ctrl-D ends",
        args.model.model.display(),
        c.max_seq_len
    );
    loop {
        print!("> ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if stdin.read_line(&mut line)? == 0 {
            println!();
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
        let prompt =
            tokenizer.encode(&tokenizer.chat_prompt(&chat_messages(args.system.as_deref(), &turns))?, false)?;
        let room = c.max_seq_len.saturating_sub(prompt.len());
        if room == 0 {
            turns.clear();
            eprintln!(
                "(the conversation no longer fits the {}-token context; it was cleared: ask again)",
                c.max_seq_len
            );
            continue;
        }
        let config = GenerationConfig { max_new_tokens: config.max_new_tokens.min(room), ..config.clone() };
        let prompts = [prompt];
        let mut output = TextOutput::new(Some(tokenizer), &prompts, &[], true)?;
        let out = generate(&model, &prompts, &config, |i, token| output.on_token(i, token))?;
        let answer = output.finish()?.remove(0).unwrap_or_default();
        println!();
        turns.last_mut().expect("just pushed").assistant = Some(answer.trim().to_string());
        eprintln!("({} tokens, {:.1} tok/s)", out.generated_tokens, out.decode_tokens_per_sec());
    }
}

/// The messages of the conversation so far: the system prompt, then each turn's user message
/// and (but for the last) the answer.
fn chat_messages(system: Option<&str>, turns: &[Turn]) -> Vec<ChatMessage> {
    let mut messages: Vec<ChatMessage> = system.map(|s| ChatMessage::new("system", s)).into_iter().collect();
    for turn in turns {
        messages.push(ChatMessage::new("user", turn.user.clone()));
        messages.extend(turn.assistant.as_ref().map(|a| ChatMessage::new("assistant", a.clone())));
    }
    messages
}
