//! The HTTP side: axum routes, request checking, server-sent-event streams and the request log.
//! Handlers never touch the model: they check and tokenize a request, queue it for the
//! batcher, and relay what it sends back.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use moe_generate::TextTokenizer;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::api_error::ApiError;
use super::batcher::{Event, FinishReason, Job};
use super::openai::{prepare, Endpoint, ModelInfo, ResponseHead};
use super::queue::{JobQueue, Refused};

/// What every handler shares.
pub(crate) struct AppState {
    pub model_name: String,
    pub context: usize,
    pub vocab_size: usize,
    pub tokenizer: TextTokenizer,
    pub queue: Arc<JobQueue<Job>>,
    pub max_body_bytes: usize,
    pub started: u64,
    next_id: AtomicU64,
}

impl AppState {
    pub fn new(
        model_name: String,
        context: usize,
        vocab_size: usize,
        tokenizer: TextTokenizer,
        queue: Arc<JobQueue<Job>>,
        max_body_bytes: usize,
    ) -> Self {
        let started = unix_time();
        Self { model_name, context, vocab_size, tokenizer, queue, max_body_bytes, started, next_id: AtomicU64::new(0) }
    }
}

/// The routes of the OpenAI API subset this server speaks, plus `/health`.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(state, Endpoint::Chat, body).await
}

async fn completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(state, Endpoint::Completions, body).await
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let mut log = RequestLog::new("GET", "/v1/models");
    let body = json!({
        "object": "list",
        "data": [{ "id": state.model_name, "object": "model", "created": state.started, "owned_by": "burn-moe" }],
    });
    log.finish(StatusCode::OK, None);
    Json(body).into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let status = if state.queue.is_closed() { "shutting down" } else { "ok" };
    let code = if state.queue.is_closed() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = json!({ "status": status, "active": state.queue.active(), "waiting": state.queue.waiting() });
    (code, Json(body)).into_response()
}

async fn no_route(method: Method, uri: Uri) -> Response {
    let mut log = RequestLog::new(method.as_str(), uri.path());
    let error = ApiError::no_route(method.as_str(), uri.path());
    log.finish(error.status, None);
    error.into_response()
}

/// Both completion endpoints: check, queue, then answer whole or as a stream.
async fn complete(state: Arc<AppState>, endpoint: Endpoint, body: Result<Bytes, BytesRejection>) -> Response {
    let path = match endpoint {
        Endpoint::Chat => "/v1/chat/completions",
        Endpoint::Completions => "/v1/completions",
    };
    let mut log = RequestLog::new("POST", path);
    let id_number = state.next_id.fetch_add(1, Ordering::Relaxed);
    let queued = body
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(state.max_body_bytes),
            _ => ApiError::invalid(None, rejection.body_text()),
        })
        .and_then(|body| {
            let info = ModelInfo {
                name: &state.model_name,
                context: state.context,
                vocab_size: state.vocab_size,
                tokenizer: &state.tokenizer,
            };
            prepare(endpoint, &body, &info, fresh_seed(id_number))
        })
        .and_then(|request| {
            let (events, receiver) = unbounded_channel();
            let job = Job {
                prompt: request.prompt.clone(),
                max_tokens: request.max_tokens,
                sampling: request.sampling.clone(),
                stop: request.stop.clone(),
                ignore_eos: request.ignore_eos,
                events,
            };
            match state.queue.push(job) {
                Ok(()) => Ok((request, receiver)),
                Err(Refused::Full) => {
                    Err(ApiError::unavailable("the server is busy: every slot and queue place is taken", Some(1)))
                }
                Err(Refused::Closed) => Err(ApiError::unavailable("the server is shutting down", None)),
            }
        });
    let (request, receiver) = match queued {
        Ok(queued) => queued,
        Err(error) => {
            log.finish(error.status, None);
            return error.into_response();
        }
    };
    let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
    let reply = Reply {
        id: format!("{prefix}-{id_number}"),
        created: unix_time(),
        model: state.model_name.clone(),
        endpoint,
        prompt_tokens: request.prompt.len(),
        completion_tokens: 0,
        log,
        receiver,
    };
    if request.stream {
        reply.stream(request.include_usage).into_response()
    } else {
        reply.whole().await
    }
}

/// A queued request's answer, built from the batcher's events.
struct Reply {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
    prompt_tokens: usize,
    completion_tokens: usize,
    log: RequestLog,
    receiver: UnboundedReceiver<Event>,
}

impl Reply {
    fn head(&self) -> ResponseHead<'_> {
        ResponseHead { id: &self.id, created: self.created, model: &self.model, endpoint: self.endpoint }
    }

    /// Waits for the whole text.
    async fn whole(mut self) -> Response {
        let mut text = String::new();
        loop {
            match self.receiver.recv().await {
                Some(Event::Token(piece)) => {
                    self.completion_tokens += 1;
                    text.push_str(&piece);
                }
                Some(Event::Done { text: rest, finish, prompt_tokens, completion_tokens }) => {
                    text.push_str(&rest);
                    let body = self.head().response(&text, finish, prompt_tokens, completion_tokens);
                    self.log.finish(StatusCode::OK, Some((prompt_tokens, completion_tokens)));
                    return Json(body).into_response();
                }
                Some(Event::Failed(message)) => return self.fail(ApiError::unavailable(message, None)),
                None => return self.fail(ApiError::internal("the batcher stopped")),
            }
        }
    }

    fn fail(mut self, error: ApiError) -> Response {
        self.log.finish(error.status, Some((self.prompt_tokens, self.completion_tokens)));
        error.into_response()
    }

    /// Server-sent events in the OpenAI chunk format, ending with `data: [DONE]`. A client
    /// that goes away drops the stream, which closes the channel, which frees its batch slot.
    fn stream(self, include_usage: bool) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
        let stream = ChunkStream { reply: self, include_usage, outbox: VecDeque::new(), first: true, ended: false };
        Sse::new(futures_util::stream::unfold(stream, |mut s| async move {
            let event = s.next().await?;
            Some((Ok(event), s))
        }))
    }
}

struct ChunkStream {
    reply: Reply,
    include_usage: bool,
    outbox: VecDeque<SseEvent>,
    first: bool,
    ended: bool,
}

impl ChunkStream {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.outbox.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match self.reply.receiver.recv().await {
                Some(Event::Token(piece)) => {
                    self.reply.completion_tokens += 1;
                    if !piece.is_empty() || self.first {
                        self.send(self.reply.head().chunk(&piece, self.first, None));
                        self.first = false;
                    }
                }
                Some(Event::Done { text, finish, prompt_tokens, completion_tokens }) => {
                    self.finish(text, finish, prompt_tokens, completion_tokens);
                }
                Some(Event::Failed(message)) => self.fail(ApiError::unavailable(message, None)),
                None => self.fail(ApiError::internal("the batcher stopped")),
            }
        }
    }

    fn send(&mut self, chunk: Value) {
        self.outbox.push_back(SseEvent::default().data(chunk.to_string()));
    }

    fn finish(&mut self, text: String, finish: FinishReason, prompt_tokens: usize, completion_tokens: usize) {
        let head = self.reply.head();
        let mut last = head.chunk(&text, self.first, Some(finish));
        last["usage"] = super::openai::usage(prompt_tokens, completion_tokens);
        let usage = self.include_usage.then(|| head.usage_chunk(prompt_tokens, completion_tokens));
        self.send(last);
        if let Some(usage) = usage {
            self.send(usage);
        }
        self.outbox.push_back(SseEvent::default().data("[DONE]"));
        self.ended = true;
        self.reply.log.finish(StatusCode::OK, Some((prompt_tokens, completion_tokens)));
    }

    /// A final chunk carrying the error (what OpenAI sends when a stream fails midway).
    fn fail(&mut self, error: ApiError) {
        self.send(error.body());
        self.ended = true;
        let counts = (self.reply.prompt_tokens, self.reply.completion_tokens);
        self.reply.log.finish(error.status, Some(counts));
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        if !self.ended {
            let counts = (self.reply.prompt_tokens, self.reply.completion_tokens);
            self.reply.log.disconnected(counts);
        }
    }
}

/// One log line per request: method, path, status, tokens, latency.
struct RequestLog {
    method: &'static str,
    path: String,
    started: Instant,
    done: bool,
}

impl RequestLog {
    fn new(method: &str, path: &str) -> Self {
        let method = match method {
            "GET" => "GET",
            "POST" => "POST",
            _ => "OTHER",
        };
        Self { method, path: path.to_string(), started: Instant::now(), done: false }
    }

    fn finish(&mut self, status: StatusCode, tokens: Option<(usize, usize)>) {
        self.write(&status.as_u16().to_string(), tokens);
    }

    fn disconnected(&mut self, tokens: (usize, usize)) {
        self.write("client-disconnected", Some(tokens));
    }

    fn write(&mut self, status: &str, tokens: Option<(usize, usize)>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let tokens = tokens.map_or(String::new(), |(p, c)| format!(" prompt_tokens={p} completion_tokens={c}"));
        let secs = self.started.elapsed().as_secs_f64();
        log::info!("{} {} {status}{tokens} latency={secs:.3}s", self.method, self.path);
    }
}

impl Drop for RequestLog {
    // A non-streaming request whose client left: its handler is dropped mid-wait.
    fn drop(&mut self) {
        self.write("client-disconnected", None);
    }
}

/// A seed for requests that give none: different per request.
fn fresh_seed(id: u64) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
