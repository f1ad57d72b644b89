//! A small transformer classifier of our own design whose feed-forward blocks are moe-core's
//! [`SparseMoe`]: nothing Mixtral about it except the MoE layer.

use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::IndexingUpdateOp;
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use moe_core::loss::load_balancing_loss;
use moe_core::moe::{SparseMoe, SparseMoeConfig};

use crate::data::TopicBatch;
use crate::metrics::TopicOutput;

/// Configuration of [`TopicClassifier`].
#[derive(Config, Debug)]
pub struct TopicClassifierConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence (learned positions).
    pub max_seq_len: usize,
    /// Classes.
    pub n_classes: usize,
    /// Model width.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Blocks (attention + sparse MoE).
    #[config(default = 2)]
    pub n_layers: usize,
    /// Experts per MoE layer.
    #[config(default = 4)]
    pub n_experts: usize,
    /// Experts per token.
    #[config(default = 2)]
    pub top_k: usize,
    /// Hidden width of each expert.
    #[config(default = 128)]
    pub d_ff: usize,
    /// Weight of the load-balancing loss in the objective (Switch Transformer: 0.01).
    #[config(default = 0.01)]
    pub aux_loss_coef: f64,
}

impl TopicClassifierConfig {
    /// A freshly initialised model.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TopicClassifier<B> {
        let block = || MoeBlock {
            attn_norm: LayerNormConfig::new(self.d_model).init(device),
            attn: MultiHeadAttentionConfig::new(self.d_model, self.n_heads).with_dropout(0.0).init(device),
            ffn_norm: LayerNormConfig::new(self.d_model).init(device),
            ffn: SparseMoeConfig::new(self.d_model, self.d_ff, self.n_experts).with_top_k(self.top_k).init(device),
        };
        TopicClassifier {
            tokens: EmbeddingConfig::new(self.vocab_size, self.d_model).init(device),
            positions: EmbeddingConfig::new(self.max_seq_len, self.d_model).init(device),
            blocks: (0..self.n_layers).map(|_| block()).collect(),
            norm: LayerNormConfig::new(self.d_model).init(device),
            head: LinearConfig::new(self.d_model, self.n_classes).init(device),
            top_k: self.top_k,
            n_experts: self.n_experts,
            aux_loss_coef: self.aux_loss_coef,
        }
    }
}

/// Pre-norm block: self-attention, then a sparse MoE where a dense MLP would be.
#[derive(Module, Debug)]
pub struct MoeBlock<B: Backend> {
    attn_norm: LayerNorm<B>,
    attn: MultiHeadAttention<B>,
    ffn_norm: LayerNorm<B>,
    ffn: SparseMoe<B>,
}

/// Embeddings, `n_layers` [`MoeBlock`]s, mean pooling and a linear head.
#[derive(Module, Debug)]
pub struct TopicClassifier<B: Backend> {
    tokens: Embedding<B>,
    positions: Embedding<B>,
    blocks: Vec<MoeBlock<B>>,
    norm: LayerNorm<B>,
    head: Linear<B>,
    top_k: usize,
    n_experts: usize,
    aux_loss_coef: f64,
}

/// What [`TopicClassifier::forward`] returns.
pub struct ClassifierOutput<B: Backend> {
    /// `[B, C]` class logits.
    pub logits: Tensor<B, 2>,
    /// Per layer, `[B*S, E]` router logits: the load-balancing loss reads them.
    pub router_logits: Vec<Tensor<B, 2>>,
    /// Per layer, `[B*S, K]` chosen experts.
    pub experts: Vec<Tensor<B, 2, Int>>,
}

impl<B: Backend> TopicClassifier<B> {
    /// # Shapes
    /// - `tokens`: `[B, S]` -> `logits` `[B, C]`
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> ClassifierOutput<B> {
        let [batch, seq] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>().repeat_dim(0, batch);
        let mut x = self.tokens.forward(tokens) + self.positions.forward(positions); // [B, S, D]
        let (mut router_logits, mut experts) = (Vec::new(), Vec::new());
        for block in &self.blocks {
            let attn = block.attn.forward(MhaInput::self_attn(block.attn_norm.forward(x.clone())));
            x = x + attn.context;
            let moe = block.ffn.forward(block.ffn_norm.forward(x.clone()));
            x = x + moe.hidden;
            router_logits.push(moe.routing.router_logits);
            experts.push(moe.routing.experts);
        }
        let pooled = self.norm.forward(x).mean_dim(1).squeeze_dim::<2>(1); // [B, D]
        ClassifierOutput { logits: self.head.forward(pooled), router_logits, experts }
    }

    /// The objective, cross-entropy + `aux_loss_coef` x load-balancing loss, and what the
    /// metrics read.
    pub fn objective(&self, batch: TopicBatch<B>) -> TopicOutput<B> {
        let out = self.forward(batch.tokens);
        let ce =
            CrossEntropyLossConfig::new().init(&out.logits.device()).forward(out.logits.clone(), batch.labels.clone());
        let aux = load_balancing_loss(&out.router_logits, self.top_k, None);
        let loss = ce + aux.clone().mul_scalar(self.aux_loss_coef);
        TopicOutput {
            loss,
            logits: out.logits,
            targets: batch.labels,
            aux_loss: aux,
            expert_tokens: self.expert_tokens(&out.experts),
        }
    }

    /// `[L, E]`: how many (token, slot) assignments each expert of each layer received.
    fn expert_tokens(&self, experts: &[Tensor<B, 2, Int>]) -> Tensor<B, 2> {
        let rows = experts
            .iter()
            .map(|chosen| {
                let chosen = chosen.clone().flatten::<1>(0, 1);
                let ones = Tensor::<B, 1>::ones([chosen.dims()[0]], &chosen.device());
                Tensor::<B, 1>::zeros([self.n_experts], &chosen.device()).select_assign(
                    0,
                    chosen,
                    ones,
                    IndexingUpdateOp::Add,
                )
            })
            .collect();
        Tensor::stack(rows, 0)
    }
}

impl<B: AutodiffBackend> TrainStep for TopicClassifier<B> {
    type Input = TopicBatch<B>;
    type Output = TopicOutput<B>;

    fn step(&self, batch: TopicBatch<B>) -> TrainOutput<TopicOutput<B>> {
        let out = self.objective(batch);
        let grads = out.loss.backward();
        TrainOutput::new(self, grads, out.detach())
    }
}

impl<B: Backend> InferenceStep for TopicClassifier<B> {
    type Input = TopicBatch<B>;
    type Output = TopicOutput<B>;

    fn step(&self, batch: TopicBatch<B>) -> TopicOutput<B> {
        self.objective(batch)
    }
}
