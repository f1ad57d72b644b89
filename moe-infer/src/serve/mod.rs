//! An OpenAI-compatible HTTP server with streaming and continuous batching
//! (`moe-infer serve`).
//!
//! Endpoints: `POST /v1/chat/completions` (Mixtral-Instruct template), `POST /v1/completions`,
//! `GET /v1/models`, `GET /health`. Streams are server-sent events in OpenAI's chunk format
//! ending with `data: [DONE]`; errors are OpenAI's error JSON with a 4xx/5xx status.
//!
//! Two threads: the calling thread owns the model and runs the [batcher](batcher) (the model
//! need not be `Send`); a tokio runtime on a second thread runs axum. They meet at a bounded
//! queue: a request waits there for a slot in the running batch, and when every slot and queue
//! place is taken the server answers 503 with `Retry-After` at once. SIGINT or SIGTERM stops
//! accepting, lets running requests finish for `shutdown_grace`, cuts the rest with a final
//! error chunk, and returns.
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use moe_core::io::load_hub_checkpoint;
//! use moe_infer::serve::{serve, ServeConfig};
//! use moe_infer::TextTokenizer;
//!
//! let device = Default::default();
//! let model = load_hub_checkpoint::<NdArray>("my-model", &device).unwrap();
//! let tokenizer = TextTokenizer::from_file("my-model/tokenizer.json").unwrap();
//! let config = ServeConfig { model_name: "my-model".into(), ..Default::default() };
//! serve(&model, tokenizer, &config, |address| eprintln!("listening on http://{address}")).unwrap();
//! ```

mod api_error;
mod batcher;
mod http;
mod openai;
mod queue;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use burn::tensor::backend::Backend;
use moe_core::model::Mixtral;
use moe_generate::TextTokenizer;

use batcher::Batcher;
use http::AppState;
use queue::JobQueue;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub host: String,
    /// Port (0: any free port; the callback of [`serve`] is told which).
    pub port: u16,
    /// The name clients put in `model` (and `/v1/models` lists).
    pub model_name: String,
    /// Requests decoded together at most (the running batch).
    pub max_batch: usize,
    /// Requests waiting for a batch slot at most; more get 503.
    pub max_queue: usize,
    /// Request bodies above this many bytes get 413.
    pub max_body_bytes: usize,
    /// After SIGINT/SIGTERM, how long running requests may take to finish before they are cut.
    pub shutdown_grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            model_name: "model".into(),
            // Decode steps of a batch of 16 cost little more than one on the CPU (the weights
            // are read once per step), while prompts joining a larger batch delay everyone.
            max_batch: 16,
            max_queue: 64,
            // A chat of a full 32k-token context is well under this.
            max_body_bytes: 4 << 20,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address cannot be listened on (in use, not local, no permission).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// `host:port` as configured.
        address: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// The HTTP runtime failed.
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `model` over HTTP until SIGINT or SIGTERM; `on_listening` is called with the bound
/// address once requests are accepted. Blocks the calling thread, which runs the model.
pub fn serve<B: Backend>(
    model: &Mixtral<B>,
    tokenizer: TextTokenizer,
    config: &ServeConfig,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    if config.max_batch == 0 {
        return Err(ServeError::Config("max_batch must be at least 1".into()));
    }
    let c = model.config();
    let queue = Arc::new(JobQueue::new(config.max_batch, config.max_queue));
    let state = Arc::new(AppState::new(
        config.model_name.clone(),
        c.max_seq_len,
        c.vocab_size,
        tokenizer.clone(),
        queue.clone(),
        config.max_body_bytes,
    ));
    let address = format!("{}:{}", config.host, config.port);
    let (ready, listening) = std::sync::mpsc::channel();
    let http_queue = queue.clone();
    let http = std::thread::Builder::new().name("http".into()).spawn(move || {
        let result = run_http(state, &address, ready);
        // However the HTTP side ended, the batcher must stop too.
        http_queue.close();
        result
    })?;
    match listening.recv() {
        Ok(Ok(address)) => on_listening(address),
        Ok(Err(e)) => {
            let _ = http.join();
            return Err(e);
        }
        Err(_) => return join(http),
    }
    Batcher::new(model, &tokenizer, config.max_batch).run(&queue, config.shutdown_grace);
    join(http)
}

fn join(http: std::thread::JoinHandle<Result<(), ServeError>>) -> Result<(), ServeError> {
    http.join().unwrap_or_else(|_| Err(ServeError::Io(std::io::Error::other("the HTTP thread panicked"))))
}

/// Binds, reports the address (or the failure) on `ready`, and serves until a signal.
fn run_http(
    state: Arc<AppState>,
    address: &str,
    ready: std::sync::mpsc::Sender<Result<SocketAddr, ServeError>>,
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(source) => {
                let _ = ready.send(Err(ServeError::Bind { address: address.to_string(), source }));
                return Ok(());
            }
        };
        let _ = ready.send(Ok(listener.local_addr()?));
        let queue = state.queue.clone();
        let app = http::router(state);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                log::info!("shutting down: no new requests; running ones finish or are cut");
                // Closing the queue tells the batcher; open streams end as it finishes them.
                queue.close();
            })
            .await?;
        Ok(())
    })
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
