use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{Int, Tensor, TensorData};

use super::projection::lazy_weight;
use crate::quant::QuantMatrix;

/// The token embedding (`ids -> rows of W`), which may stay quantized as the projections do.
///
/// The fields are `burn::nn::Embedding`'s (a `From<Embedding>` converts), so records and
/// parameter paths are the same. Loaded from a quantized GGUF file, `quantized` holds the blocks
/// and `weight` is a lazy parameter that dequantizes all of them if anything asks for its value
/// (training, export, a tied LM head). The forward pass decodes only the rows it looks up, so the
/// `[V, D]` table (0.52 GB in f32 for Mixtral-8x7B) need not be held in floats; both give the
/// same values. Anything that dereferences `weight` materialises the table, `weight.device()`
/// included: `weight.lazy_device()` gives the device without it.
#[derive(Module, Debug)]
pub struct TokenEmbedding<B: Backend> {
    /// `[V, D]`.
    pub weight: Param<Tensor<B, 2>>,
    /// The weight's GGUF blocks, `[V, D]` rows, when it came quantized.
    #[module(skip)]
    pub quantized: Option<QuantMatrix>,
}

impl<B: Backend> From<Embedding<B>> for TokenEmbedding<B> {
    fn from(embedding: Embedding<B>) -> Self {
        Self { weight: embedding.weight, quantized: None }
    }
}

impl<B: Backend> TokenEmbedding<B> {
    /// An embedding whose table is `matrix` (`[V, D]` rows), kept quantized.
    pub fn quantized(matrix: QuantMatrix, device: &B::Device) -> Self {
        let (v, d) = (matrix.rows(), matrix.cols());
        let blocks = matrix.clone();
        let weight = lazy_weight([v, d], device, move || blocks.dequantize_rows(0..v));
        Self { weight, quantized: Some(matrix) }
    }

    /// The blocks, while the float table has not been materialised (so the two cannot differ).
    pub fn blocks(&self) -> Option<&QuantMatrix> {
        self.quantized.as_ref().filter(|_| !self.weight.is_initialized())
    }

    /// The rows of `ids`.
    ///
    /// # Shapes
    /// - `ids`: `[B, S]` -> `[B, S, D]`
    ///
    /// # Panics
    /// If an id is not below the vocabulary size (callers check ids against it).
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let Some(blocks) = self.blocks() else {
            return embedding(self.weight.val(), ids);
        };
        let ([b, s], device) = (ids.dims(), ids.device());
        let (vocab, data) = (blocks.rows() as i64, ids.into_data());
        let rows = data.iter::<i64>().map(|id| {
            assert!((0..vocab).contains(&id), "token id {id} is outside the vocabulary ({vocab})");
            id as usize
        });
        Tensor::from_data(TensorData::new(blocks.dequantize_rows(rows), [b, s, blocks.cols()]), &device)
    }
}
