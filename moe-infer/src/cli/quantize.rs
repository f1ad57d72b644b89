//! `moe-infer quantize`: a checkpoint (Hub folder or GGUF file) to a GGUF file of quantized
//! weights, tensor by tensor (a model larger than memory converts), with its tokenizer.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use moe_core::config::MixtralConfig;
use moe_core::gguf::{
    convert_to_gguf, mixtral_config, GgmlType, GgufExport, GgufFile, GgufValue, GgufWeights, WRITABLE,
};
use moe_core::io::HubWeights;
use moe_infer::TextTokenizer;

#[derive(Args)]
pub struct QuantizeArgs {
    /// Hub model folder (config.json + safetensors [+ tokenizer.json]) or GGUF file.
    input: PathBuf,
    /// The GGUF file to write.
    output: PathBuf,
    /// Weight type: q8_0, q4_0 or q4_k (4.5 bits per weight), q6_k, f16, bf16 or f32.
    #[arg(long = "type", default_value = "q8_0")]
    weight_type: GgmlType,
    /// Quantize the expert matrices only; embedding, attention and LM head are written as f16.
    #[arg(long)]
    experts_only: bool,
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    if !WRITABLE.contains(&args.weight_type) {
        let names: Vec<_> = WRITABLE.iter().map(|t| t.name()).collect();
        bail!("--type {}: this version writes {}", args.weight_type, names.join(", "));
    }
    if args.output.exists() && args.input.canonicalize().ok() == args.output.canonicalize().ok() {
        bail!("the output {} is the input", args.output.display());
    }
    let options = if args.experts_only {
        GgufExport::experts_only(args.weight_type, GgmlType::F16)
    } else {
        GgufExport::new(args.weight_type)
    }
    .with_progress(|n, total, name| {
        eprint!("\rquantizing: tensor {n}/{total} {name:40.40}");
        let _ = std::io::stderr().flush();
    });
    let started = Instant::now();
    if args.input.is_file() {
        let file =
            Arc::new(GgufFile::open(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?);
        let config = mixtral_config(&file)?;
        // The tokenizer and the chat template travel as they are.
        let tokenizer = file.metadata().iter().filter(|(k, _)| k.starts_with("tokenizer."));
        let options = options.with_metadata(tokenizer.map(|(k, v)| (k.clone(), v.clone())).collect());
        let weights = GgufWeights::new(file.clone(), &config)?;
        convert_to_gguf(&config, &weights, &args.output, &options)?;
    } else {
        let config = MixtralConfig::from_hf_file(args.input.join("config.json"))
            .with_context(|| format!("cannot read {}", args.input.display()))?;
        let weights = HubWeights::open(&args.input)?.with_keys_of(&config)?;
        let options = match TextTokenizer::from_model_dir(&args.input)? {
            Some(tokenizer) => match tokenizer.to_gguf_metadata() {
                Ok(mut metadata) => {
                    // The model's chat template, as llama.cpp's converter writes it.
                    if let Some(template) = tokenizer.chat_template() {
                        metadata.push(("tokenizer.chat_template".into(), GgufValue::String(template.source().into())));
                    }
                    options.with_metadata(metadata)
                }
                Err(e) => {
                    eprintln!("note: the tokenizer is not written ({e}); run the file with --tokenizer");
                    options
                }
            },
            None => {
                eprintln!("note: {} has no tokenizer.json; run the file with --tokenizer", args.input.display());
                options
            }
        };
        convert_to_gguf(&config, &weights, &args.output, &options)?;
    }
    eprintln!();
    let bytes = std::fs::metadata(&args.output).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({:.1} MiB) in {:.1} s",
        args.output.display(),
        bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
