//! The OpenAI request bodies of `/v1/chat/completions` and `/v1/completions`, checked and turned
//! into what the batcher runs, and the JSON of the responses and stream chunks.
//!
//! Fields the API defines that this server does not implement are accepted at their neutral
//! values and refused otherwise (`n > 1`, penalties, logprobs, `echo`, `best_of`), so a client
//! never silently gets something other than it asked for. Unknown fields are ignored, as
//! OpenAI-compatible servers do. llama.cpp's `top_k`, `min_p`, `repetition_penalty` and
//! `ignore_eos` are accepted too.

use serde::Deserialize;
use serde_json::{json, Value};

use moe_generate::{check_ids, mixtral_chat_prompt, ChatMessage, SamplingConfig, TextTokenizer, Turn};

use super::api_error::ApiError;
use super::batcher::FinishReason;

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
}

/// Both endpoints' bodies in one struct: the endpoint says which of `messages` / `prompt` it needs.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RequestBody {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    prompt: Option<Prompt>,
    max_tokens: Option<u64>,
    /// The chat API's newer name for `max_tokens`.
    max_completion_tokens: Option<u64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u64>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    seed: Option<i64>,
    stop: Option<Stop>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    ignore_eos: Option<bool>,
    n: Option<u64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    /// A bool for chat, a count for completions: only "off" is accepted.
    logprobs: Option<Value>,
    echo: Option<bool>,
    best_of: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// A checked request, ready for the batcher.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingConfig,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    /// Send a last chunk with the usage counts (OpenAI's `stream_options.include_usage`).
    pub include_usage: bool,
}

/// What the server knows that requests are checked against.
pub(crate) struct ModelInfo<'a> {
    pub name: &'a str,
    pub context: usize,
    pub vocab_size: usize,
    pub tokenizer: &'a TextTokenizer,
}

/// OpenAI's limit on stop sequences.
const MAX_STOPS: usize = 4;

/// Parses and checks a request body.
pub(crate) fn prepare(endpoint: Endpoint, body: &[u8], model: &ModelInfo, seed: u64) -> Result<Prepared, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let request: RequestBody = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != ".").then(|| path.clone());
        ApiError::invalid(param, format!("invalid JSON body: {e}"))
    })?;
    if let Some(asked) = &request.model {
        if asked != model.name {
            return Err(ApiError::unknown_model(asked, model.name));
        }
    }
    refuse_unsupported(&request)?;
    let prompt = match endpoint {
        Endpoint::Chat => chat_prompt(&request, model.tokenizer)?,
        Endpoint::Completions => completion_prompt(&request, model)?,
    };
    let max_tokens = max_tokens(endpoint, &request, prompt.len(), model.context)?;
    let stop = match &request.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) if v.len() > MAX_STOPS => {
            return Err(ApiError::invalid("stop".to_string(), format!("at most {MAX_STOPS} stop sequences")))
        }
        Some(Stop::Many(v)) => v.clone(),
    };
    Ok(Prepared {
        prompt,
        max_tokens,
        sampling: sampling(&request, seed)?,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        ignore_eos: request.ignore_eos.unwrap_or(false),
        stream: request.stream.unwrap_or(false),
        include_usage: request.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false),
    })
}

fn refuse_unsupported(r: &RequestBody) -> Result<(), ApiError> {
    let refuse = |param: &str, why: &str| Err(ApiError::invalid(param.to_string(), why.to_string()));
    if r.n.is_some_and(|n| n != 1) {
        return refuse("n", "this server returns one choice per request (n = 1)");
    }
    for (param, value) in [("presence_penalty", r.presence_penalty), ("frequency_penalty", r.frequency_penalty)] {
        if value.is_some_and(|v| v != 0.0) {
            return refuse(param, "not supported; use repetition_penalty (multiplicative, as transformers)");
        }
    }
    if r.logprobs.as_ref().is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false)) && v.as_u64() != Some(0)) {
        return refuse("logprobs", "log-probabilities are not returned by this server");
    }
    if r.echo == Some(true) {
        return refuse("echo", "echo is not supported");
    }
    if r.best_of.is_some_and(|n| n != 1) {
        return refuse("best_of", "best_of is not supported");
    }
    Ok(())
}

/// The prompt of a chat: the model's own chat template over the messages as they are, or
/// without one Mixtral-Instruct's (system messages first, then user and assistant turns
/// alternating, ending with the user's).
fn chat_prompt(r: &RequestBody, tokenizer: &TextTokenizer) -> Result<Vec<u32>, ApiError> {
    let messages =
        r.messages.as_ref().ok_or_else(|| ApiError::invalid("messages".to_string(), "`messages` is required"))?;
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    let mut chat: Vec<ChatMessage> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let text = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                format!("{param}.content"),
                                format!("content parts of type `{kind}` are not supported (text only)"),
                            ))
                        }
                    }
                }
                text
            }
        };
        if tokenizer.chat_template().is_some() {
            let role = match m.role.as_str() {
                "developer" => "system",
                role @ ("system" | "user" | "assistant") => role,
                other => {
                    return Err(ApiError::invalid(
                        format!("{param}.role"),
                        format!("unknown role `{other}` (system, user or assistant)"),
                    ))
                }
            };
            chat.push(ChatMessage::new(role, text));
            continue;
        }
        let expecting_user = turns.last().is_none_or(|t| t.assistant.is_some());
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" if expecting_user => turns.push(Turn { user: text, assistant: None }),
            "assistant" if !expecting_user => turns.last_mut().expect("a user turn").assistant = Some(text),
            "user" | "assistant" => {
                return Err(ApiError::invalid(
                    format!("{param}.role"),
                    "user and assistant messages must alternate, starting with the user's",
                ))
            }
            other => {
                return Err(ApiError::invalid(
                    format!("{param}.role"),
                    format!("unknown role `{other}` (system, user or assistant)"),
                ))
            }
        }
    }
    if tokenizer.chat_template().is_some() {
        // The template decides what it accepts (`raise_exception` in it is the client's error).
        let text =
            tokenizer.chat_prompt(&chat).map_err(|e| ApiError::invalid("messages".to_string(), e.to_string()))?;
        return tokenizer.encode(&text, false).map_err(|e| ApiError::internal(e.to_string()));
    }
    if turns.last().is_none_or(|t| t.assistant.is_some()) {
        return Err(ApiError::invalid("messages".to_string(), "the last message must be the user's"));
    }
    let system = system.join("\n\n");
    let text = mixtral_chat_prompt((!system.is_empty()).then_some(system.as_str()), &turns);
    // The template writes `<s>` itself.
    tokenizer.encode(&text, false).map_err(|e| ApiError::internal(e.to_string()))
}

fn completion_prompt(r: &RequestBody, model: &ModelInfo) -> Result<Vec<u32>, ApiError> {
    let param = || "prompt".to_string();
    let ids = match &r.prompt {
        None => return Err(ApiError::invalid(param(), "`prompt` is required")),
        Some(Prompt::Text(text)) => encode(model.tokenizer, text)?,
        Some(Prompt::Texts(texts)) if texts.len() == 1 => encode(model.tokenizer, &texts[0])?,
        Some(Prompt::Texts(_)) => return Err(ApiError::invalid(param(), "one prompt per request")),
        Some(Prompt::Ids(ids)) => {
            check_ids(ids, model.vocab_size).map_err(|e| ApiError::invalid(param(), e.to_string()))?;
            ids.clone()
        }
    };
    if ids.is_empty() {
        return Err(ApiError::invalid(param(), "the prompt is empty"));
    }
    Ok(ids)
}

fn encode(tokenizer: &TextTokenizer, text: &str) -> Result<Vec<u32>, ApiError> {
    tokenizer.encode(text, true).map_err(|e| ApiError::internal(e.to_string()))
}

/// `max_tokens` checked against the context; the default is the API's: the rest of the context
/// for chat, 16 for completions.
fn max_tokens(endpoint: Endpoint, r: &RequestBody, prompt: usize, context: usize) -> Result<usize, ApiError> {
    let room = context.saturating_sub(prompt);
    if room == 0 {
        return Err(ApiError::context_length(
            if endpoint == Endpoint::Chat { "messages" } else { "prompt" },
            format!("the prompt is {prompt} tokens; this model's context is {context} tokens"),
        ));
    }
    let (param, asked) = match (r.max_completion_tokens, r.max_tokens) {
        (Some(n), _) => ("max_completion_tokens", Some(n)),
        (None, n) => ("max_tokens", n),
    };
    match asked {
        None if endpoint == Endpoint::Chat => Ok(room),
        None => Ok(room.min(16)),
        Some(0) => Err(ApiError::invalid(param.to_string(), format!("`{param}` must be at least 1"))),
        Some(n) if n > room as u64 => Err(ApiError::context_length(
            param,
            format!(
                "this model's context is {context} tokens; {prompt} in the prompt and {n} to generate \
                 do not fit ({room} at most)"
            ),
        )),
        Some(n) => Ok(n as usize),
    }
}

fn sampling(r: &RequestBody, seed: u64) -> Result<SamplingConfig, ApiError> {
    let check = |param: &str, value: Option<f32>, ok: fn(f32) -> bool, range: &str| match value {
        Some(v) if !ok(v) => Err(ApiError::invalid(param.to_string(), format!("`{param}` must be {range} (got {v})"))),
        _ => Ok(value),
    };
    // OpenAI's defaults: temperature 1, top_p 1.
    let temperature = check("temperature", r.temperature, |v| (0.0..=2.0).contains(&v), "in [0, 2]")?.unwrap_or(1.0);
    let top_p = check("top_p", r.top_p, |v| v > 0.0 && v <= 1.0, "in (0, 1]")?;
    let min_p = check("min_p", r.min_p, |v| (0.0..=1.0).contains(&v), "in [0, 1]")?;
    let penalty = check("repetition_penalty", r.repetition_penalty, |v| v > 0.0 && v.is_finite(), "positive")?;
    Ok(SamplingConfig {
        temperature,
        top_k: r.top_k.filter(|&k| k > 0).map(|k| k.min(usize::MAX as u64) as usize),
        top_p: top_p.filter(|&p| p < 1.0),
        min_p: min_p.filter(|&p| p > 0.0),
        repetition_penalty: penalty.unwrap_or(1.0),
        seed: r.seed.map_or(seed, |s| s as u64),
    })
}

/// The fields every response and chunk starts with.
pub(crate) struct ResponseHead<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    pub endpoint: Endpoint,
}

impl ResponseHead<'_> {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }

    fn with_choices(&self, chunk: bool, choices: Value) -> Value {
        json!({ "id": self.id, "object": self.object(chunk), "created": self.created, "model": self.model, "choices": choices })
    }

    /// The whole answer of a non-streaming request.
    pub fn response(&self, text: &str, finish: FinishReason, prompt_tokens: usize, completion_tokens: usize) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }),
            Endpoint::Completions => {
                json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str() })
            }
        };
        let mut response = self.with_choices(false, json!([choice]));
        response["usage"] = usage(prompt_tokens, completion_tokens);
        response
    }

    /// A stream chunk with some text (the first chat chunk also carries the role).
    pub fn chunk(&self, text: &str, first: bool, finish: Option<FinishReason>) -> Value {
        let finish = finish.map(FinishReason::as_str);
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if !text.is_empty() || first {
                    delta["content"] = json!(text);
                }
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
            Endpoint::Completions => json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish }),
        };
        self.with_choices(true, json!([choice]))
    }

    /// The chunk after the last one when the client asked for usage: no choices, the counts.
    pub fn usage_chunk(&self, prompt_tokens: usize, completion_tokens: usize) -> Value {
        let mut chunk = self.with_choices(true, json!([]));
        chunk["usage"] = usage(prompt_tokens, completion_tokens);
        chunk
    }
}

pub(crate) fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}
