//! Continuous batching: one loop owns the model and runs every request in flight as one batch,
//! adding requests between decode steps and dropping them as they finish.
//!
//! Each step feeds the last token of every running sequence through the model at once (a
//! `[B, 1]` forward over one KV cache). Requests that arrive meanwhile are prefilled together
//! (left-padded, as [`crate::generate()`] does) and joined to the running batch
//! ([`KvCache::join`]); finished or abandoned ones leave it ([`KvCache::retain`]), so a client
//! that disconnects frees its slot before the next step. Every sequence computes what it would
//! alone: padding is masked and RoPE positions start at each sequence's first token, and each
//! request samples with its own seeded RNG.

use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use moe_core::model::Mixtral;
use moe_core::nn::KvCache;
use moe_generate::{Sampler, SamplingConfig, TextCollector, TextTokenizer};
use tokio::sync::mpsc::UnboundedSender;

use super::queue::JobQueue;

/// One request for the batcher.
pub(crate) struct Job {
    /// Prompt token ids (checked against the vocabulary and the context by the handler).
    pub prompt: Vec<u32>,
    /// Tokens to generate at most (at least 1).
    pub max_tokens: usize,
    pub sampling: SamplingConfig,
    /// The text ends before the first of these (left out).
    pub stop: Vec<String>,
    /// Keep going after the model's EOS token (llama.cpp's `ignore_eos`, for benchmarks).
    pub ignore_eos: bool,
    /// Where the tokens go; a closed channel (the client left) ends the request.
    pub events: UnboundedSender<Event>,
}

/// What a request hears from the batcher, in order: tokens, then `Done` or `Failed`.
#[derive(Debug)]
pub(crate) enum Event {
    /// One generated token and the text it completes (often empty: held back for a possible
    /// stop string, or part of a multi-byte character).
    Token(String),
    /// The end: the text held back until now, why it ended, and the token counts.
    Done { text: String, finish: FinishReason, prompt_tokens: usize, completion_tokens: usize },
    /// The request was cut (shutdown) or its text could not be decoded.
    Failed(String),
}

/// Why generation ended, as the OpenAI API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// A request in the running batch.
struct Row<'t> {
    events: UnboundedSender<Event>,
    /// Prompt then generated tokens; the last one is the next step's input.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    ignore_eos: bool,
    sampler: Sampler,
    text: TextCollector<'t>,
    finished: bool,
}

impl Row<'_> {
    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Decode steps this row may still need (each adds one position to the cache).
    fn remaining(&self) -> usize {
        if self.finished {
            0
        } else {
            self.max_tokens - self.generated()
        }
    }

    fn send(&mut self, event: Event) {
        if self.events.send(event).is_err() {
            self.finished = true; // nobody is listening any more
        }
    }

    fn fail(&mut self, message: String) {
        self.send(Event::Failed(message));
        self.finished = true;
    }
}

/// The batch loop: see the module docs.
pub(crate) struct Batcher<'m, B: Backend> {
    model: &'m Mixtral<B>,
    tokenizer: &'m TextTokenizer,
    max_batch: usize,
    rows: Vec<Row<'m>>,
    /// The KV cache of `rows`, in the same order (`None` while no request runs).
    cache: Option<KvCache<B>>,
}

impl<'m, B: Backend> Batcher<'m, B> {
    pub fn new(model: &'m Mixtral<B>, tokenizer: &'m TextTokenizer, max_batch: usize) -> Self {
        Self { model, tokenizer, max_batch: max_batch.max(1), rows: Vec::new(), cache: None }
    }

    /// Serves `queue` until it is closed and the batch has drained. After the close, requests
    /// still running get `grace` to finish; then they are cut with an error.
    pub fn run(mut self, queue: &JobQueue<Job>, grace: Duration) {
        let mut deadline: Option<Instant> = None;
        loop {
            let jobs = queue.take(self.max_batch - self.rows.len(), self.rows.is_empty());
            if queue.is_closed() {
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + grace);
                for job in jobs.into_iter().chain(queue.drain()) {
                    let _ = job.events.send(Event::Failed("the server is shutting down".into()));
                }
                if Instant::now() >= deadline {
                    for row in &mut self.rows {
                        row.fail("the server is shutting down; the request was cut".into());
                    }
                }
            } else {
                self.admit(jobs);
            }
            self.drop_finished();
            if !self.rows.is_empty() {
                self.step();
                self.drop_finished();
            }
            queue.set_active(self.rows.len());
            if self.rows.is_empty() && queue.is_closed() {
                return;
            }
        }
    }

    /// Prefills new requests as one left-padded batch (sampling their first tokens) and joins
    /// them to the running batch.
    fn admit(&mut self, jobs: Vec<Job>) {
        let mut new = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.events.is_closed() {
                continue; // the client left while waiting
            }
            match TextCollector::new(self.tokenizer, &job.prompt, &job.stop) {
                Ok(text) => new.push(Row {
                    prompt_len: job.prompt.len(),
                    tokens: job.prompt,
                    max_tokens: job.max_tokens,
                    ignore_eos: job.ignore_eos,
                    sampler: Sampler::new(job.sampling),
                    text,
                    finished: false,
                    events: job.events,
                }),
                Err(e) => drop(job.events.send(Event::Failed(e.to_string()))),
            }
        }
        if new.is_empty() {
            return;
        }
        let n = new.len();
        let p = new.iter().map(|r| r.prompt_len).max().unwrap_or(0);
        let padding: Vec<usize> = new.iter().map(|r| p - r.prompt_len).collect();
        let capacity = p + new.iter().map(Row::remaining).max().unwrap_or(0);
        let mut cache = self.model.new_cache(n, capacity).with_left_padding(padding.clone());
        // Any id in the vocabulary pads: padding is never attended to.
        let input: Vec<i64> = new
            .iter()
            .zip(&padding)
            .flat_map(|(r, &pad)| std::iter::repeat_n(0, pad).chain(r.tokens.iter().map(|&t| t as i64)))
            .collect();
        let logits = self.forward(input, [n, p], &mut cache);
        let vocab = self.model.config().vocab_size;
        for (row, logits) in new.iter_mut().zip(logits.chunks_exact(vocab)) {
            self.sample(row, logits);
        }
        self.cache = Some(match (self.cache.take(), self.rows.is_empty()) {
            (Some(running), false) => {
                let len = running.len().max(cache.len());
                let room = self.rows.iter().chain(&new).map(Row::remaining).max().unwrap_or(0);
                running.join(cache, len + room)
            }
            _ => cache,
        });
        self.rows.extend(new);
    }

    /// One decode step of every running request.
    fn step(&mut self) {
        let b = self.rows.len();
        let input: Vec<i64> =
            self.rows.iter().map(|r| *r.tokens.last().expect("prompts are not empty") as i64).collect();
        let mut cache = self.cache.take().expect("a running batch has a cache");
        let logits = self.forward(input, [b, 1], &mut cache);
        self.cache = Some(cache);
        let vocab = self.model.config().vocab_size;
        let mut rows = std::mem::take(&mut self.rows);
        for (row, logits) in rows.iter_mut().zip(logits.chunks_exact(vocab)) {
            self.sample(row, logits);
        }
        self.rows = rows;
    }

    /// Next-token logits of each sequence, `[B * V]` on the host.
    fn forward(&self, input: Vec<i64>, shape: [usize; 2], cache: &mut KvCache<B>) -> Vec<f32> {
        let device = self.model.embed_tokens.weight.lazy_device();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(input, shape), &device);
        self.model.next_token_logits(ids, cache).into_data().iter::<f32>().collect()
    }

    /// Picks a row's next token and tells its client.
    fn sample(&self, row: &mut Row<'m>, logits: &[f32]) {
        let mut logits = logits.to_vec();
        let token = row.sampler.sample(&mut logits, &row.tokens);
        row.tokens.push(token);
        let (piece, go_on) = match row.text.push(token) {
            Ok(pushed) => pushed,
            Err(e) => return row.fail(format!("cannot decode the generated text: {e}")),
        };
        row.send(Event::Token(piece));
        let eos = !row.ignore_eos && self.model.config().eos_token_ids.contains(&token);
        let finish = match (eos || !go_on, row.generated() >= row.max_tokens) {
            (true, _) => FinishReason::Stop,
            (false, true) => FinishReason::Length,
            (false, false) => return,
        };
        let done = Event::Done {
            text: row.text.finish(),
            finish,
            prompt_tokens: row.prompt_len,
            completion_tokens: row.generated(),
        };
        row.send(done);
        row.finished = true;
    }

    /// Removes finished requests, and those whose client has gone, from the batch.
    fn drop_finished(&mut self) {
        let keep: Vec<usize> =
            (0..self.rows.len()).filter(|&i| !self.rows[i].finished && !self.rows[i].events.is_closed()).collect();
        if keep.len() == self.rows.len() {
            return;
        }
        if keep.is_empty() {
            self.rows.clear();
            self.cache = None;
            return;
        }
        if let Some(cache) = &mut self.cache {
            cache.retain(&keep);
        }
        let mut i = 0;
        self.rows.retain(|_| {
            i += 1;
            keep.contains(&(i - 1))
        });
    }
}
