//! `moe-infer serve`: the OpenAI-compatible HTTP server (see `moe_infer::serve`).

use std::time::Duration;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use moe_infer::serve::{serve, ServeConfig};

use super::{load, need_tokenizer, tokenizer, ModelArgs};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model name clients send (default: the model's file or folder name).
    #[arg(long)]
    model_name: Option<String>,
    /// Requests decoded together at most (continuous batching).
    #[arg(long, default_value_t = ServeConfig::default().max_batch)]
    max_batch: usize,
    /// Requests that may wait for a batch slot; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = ServeConfig::default().max_queue)]
    max_queue: usize,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, default_value_t = ServeConfig::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Seconds running requests get to finish after SIGINT/SIGTERM before they are cut.
    #[arg(long, default_value_t = ServeConfig::default().shutdown_grace.as_secs_f64())]
    shutdown_grace: f64,
    /// Experts per token instead of the model's num_experts_per_tok.
    #[arg(long)]
    experts_per_token: Option<usize>,
}

pub fn run<B: Backend>(args: ServeArgs, device: &B::Device) -> Result<()> {
    if args.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    if !(args.shutdown_grace.is_finite() && args.shutdown_grace >= 0.0) {
        bail!("--shutdown-grace must be a number of seconds >= 0 (got {})", args.shutdown_grace);
    }
    let model = load::<B>(&args.model, args.experts_per_token, device)?;
    let tokenizer = tokenizer(&args.model, &model)?;
    let tokenizer = need_tokenizer(&tokenizer, &args.model, "serve")?.clone();
    let path = &args.model.model;
    let default_name = path.file_stem().unwrap_or(path.as_os_str()).to_string_lossy().into_owned();
    let config = ServeConfig {
        host: args.host,
        port: args.port,
        model_name: args.model_name.unwrap_or(default_name),
        max_batch: args.max_batch,
        max_queue: args.max_queue,
        max_body_bytes: args.max_body_bytes,
        shutdown_grace: Duration::from_secs_f64(args.shutdown_grace),
    };
    StderrLog::install();
    serve(&model, tokenizer, &config, |address| {
        log::info!(
            "serving {} as `{}` on http://{address} (batch {}, queue {}); Ctrl-C stops",
            path.display(),
            config.model_name,
            config.max_batch,
            config.max_queue
        );
    })?;
    log::info!("stopped");
    Ok(())
}

/// Log lines (one per request) on stderr with a UTC timestamp. A dozen lines instead of a
/// logging crate: there is nothing to filter or configure.
struct StderrLog;

impl StderrLog {
    fn install() {
        static LOGGER: StderrLog = StderrLog;
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    }
}

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) && record.target().starts_with("moe_infer") {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let secs = now.as_secs() % 86400;
            eprintln!(
                "[{:02}:{:02}:{:02}.{:03}] {}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                now.subsec_millis(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}
