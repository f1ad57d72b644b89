//! Quantized weights in ggml's block formats (the ones GGUF files hold): the types, encoding
//! and decoding, and [`QuantMatrix`], a weight matrix kept in blocks. Depends on nothing else
//! in the crate, so that the file formats (GGUF), the kernels and the modules can all
//! use it.

mod dequantize;
mod ggml_type;
mod matrix;
mod quantize;

pub use dequantize::dequantize;
pub(crate) use dequantize::scale_min_k4;
pub use ggml_type::GgmlType;
pub use matrix::{BlockSource, QuantMatrix, QuantRows};
pub use quantize::{quantize, WRITABLE};
