//! Scoring token sequences: NLL and perplexity (llama.cpp's `perplexity`), router losses.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, FloatDType, Int, Tensor, TensorData};
use moe_core::loss::{load_balancing_loss, router_z_loss};
use moe_core::model::Mixtral;

use moe_generate::{check_ids, GenerateError};

use crate::error::InferError;

/// Scores of one batch, and the raw outputs they came from.
#[derive(Debug, Clone)]
pub struct ScoreOutput<B: Backend> {
    /// Mean next-token NLL of each sequence (nats).
    pub sequence_nll: Vec<f64>,
    /// Mean next-token NLL over the batch: HF's `lm_loss`.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
    /// Predicted tokens, `B * (S - 1)`.
    pub tokens: usize,
    /// HF load-balancing loss over the batch, unscaled.
    pub aux_loss: f64,
    /// Router z-loss over the batch.
    pub z_loss: f64,
    /// `[B, S, V]`
    pub logits: Tensor<B, 3>,
    /// One `[B*S, E]` tensor per layer.
    pub router_logits: Vec<Tensor<B, 2>>,
}

/// Scores sequences of equal length (each token predicted from the ones before it).
pub fn score<B: Backend>(model: &Mixtral<B>, batch: &[Vec<u32>]) -> Result<ScoreOutput<B>, InferError> {
    let c = model.config();
    let s = batch.first().map_or(0, Vec::len);
    if batch.iter().any(|seq| seq.len() != s) {
        return Err(InferError::RaggedBatch(batch.iter().map(Vec::len).collect()));
    }
    if s < 2 {
        return Err(InferError::TooShortToScore);
    }
    if s > c.max_seq_len {
        return Err(GenerateError::ContextOverflow { needed: s, max: c.max_seq_len }.into());
    }
    for seq in batch {
        check_ids(seq, c.vocab_size)?;
    }
    let b = batch.len();
    let device = model.embed_tokens.weight.lazy_device();
    let ids: Vec<i64> = batch.iter().flatten().map(|&t| t as i64).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, s]), &device);
    let out = model.forward(ids.clone());
    let router_logits = out.router_logits();

    // A dense model has no router: both losses are 0.
    let (aux_loss, z_loss) = match router_logits.is_empty() {
        true => (0.0, 0.0),
        false => (
            load_balancing_loss(&router_logits, c.top_k, None).into_scalar().elem::<f64>(),
            router_z_loss(&router_logits).into_scalar().elem::<f64>(),
        ),
    };

    // One per-token NLL pass serves both means (HF's `lm_loss` is the mean over all of them).
    let v = c.vocab_size;
    let targets = ids.narrow(1, 1, s - 1).reshape([b * (s - 1), 1]);
    // In f32 whatever the model's dtype, as transformers' loss upcasts the logits.
    let logits = out.logits.clone().narrow(1, 0, s - 1).reshape([b * (s - 1), v]).cast(FloatDType::F32);
    let nll = log_softmax(logits, 1).gather(1, targets).neg();
    let nll: Vec<f32> = nll.into_data().iter::<f32>().collect();
    let sequence_nll: Vec<f64> =
        nll.chunks(s - 1).map(|row| row.iter().map(|&x| x as f64).sum::<f64>() / (s - 1) as f64).collect();
    // Every sequence has s - 1 predictions, so the overall mean is the mean of the means.
    let mean_nll = sequence_nll.iter().sum::<f64>() / b as f64;

    Ok(ScoreOutput {
        sequence_nll,
        mean_nll,
        perplexity: mean_nll.exp(),
        tokens: b * (s - 1),
        aux_loss,
        z_loss,
        logits: out.logits,
        router_logits,
    })
}
