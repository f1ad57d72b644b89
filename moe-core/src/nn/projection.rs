use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor, TensorData};

use crate::kernels::{matmul_weight, pack_weight, packed_linear, quantized_linear, PackedWeights};
use crate::quant::QuantMatrix;

/// A linear projection `x @ W (+ b)` whose weight may stay quantized: every projection of the
/// model (attention, experts, router, LM head) is one.
///
/// The fields are `burn::nn::Linear`'s (a `From<Linear>` converts), so records and parameter
/// paths are the same. Loaded from a quantized GGUF file, `quantized` holds the blocks and
/// `weight` is a lazy parameter that dequantizes them if anything asks for its value:
/// inference on burn-flex multiplies with the blocks directly ([`Self::forward`]) and
/// never materialises it; other backends, training and export read the dequantized values, so
/// every path computes the same function. [`Self::pack_for_cpu`] does the same for float
/// weights: `packed` holds them laid out for the CPU kernels and `weight` unpacks them on demand.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    /// `[d_input, d_output]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The weight's GGUF blocks, `[d_output, d_input]` rows, when it came quantized.
    #[module(skip)]
    pub quantized: Option<QuantMatrix>,
    /// The float weight laid out for burn-flex's CPU kernels ([`Self::pack_for_cpu`]).
    #[module(skip)]
    pub packed: Option<PackedWeights>,
}

impl<B: Backend> From<Linear<B>> for Projection<B> {
    fn from(linear: Linear<B>) -> Self {
        Self { weight: linear.weight, bias: linear.bias, quantized: None, packed: None }
    }
}

impl<B: Backend> Projection<B> {
    /// A bias-free projection whose weight is `matrix` (`[N, K]` rows), kept quantized.
    pub fn quantized(matrix: QuantMatrix, device: &B::Device) -> Self {
        let (k, n) = (matrix.cols(), matrix.rows());
        let blocks = matrix.clone();
        let weight = lazy_weight([k, n], device, move || blocks.dequantize_transposed());
        Self { weight, bias: None, quantized: Some(matrix), packed: None }
    }

    /// Lays the float weight out for this crate's CPU kernels ([`PackedWeights`]) when the
    /// backend is burn-flex without autodiff, for inference: products then read it in place at
    /// any number of rows. The weight becomes a lazy parameter with the same id, dtype and
    /// values, unpacked only if something asks for it (export, another backend), so memory
    /// stays one copy. Returns whether it packed; quantized and already packed weights, and
    /// other backends, are left as they are.
    pub fn pack_for_cpu(&mut self) -> bool {
        if self.quantized.is_some() || self.packed.is_some() {
            return false;
        }
        let weight = self.weight.val();
        let Some(packed) = pack_weight(&weight) else { return false };
        let (dims, dtype, device) = (weight.dims(), weight.dtype(), weight.device());
        drop(weight);
        let values = packed.clone();
        let init = move |device: &B::Device, _| Tensor::from_data(values.unpack(), (device, dtype));
        self.weight = Param::uninitialized(self.weight.id, init, device, false, Shape::new(dims));
        self.packed = Some(packed);
        true
    }

    /// `[d_input, d_output]`, without materialising a lazy weight.
    pub fn dims(&self) -> [usize; 2] {
        let shape = self.weight.lazy_shape();
        [shape[0], shape[1]]
    }

    /// The blocks, while the float weight has not been materialised (so the two cannot differ).
    pub fn blocks(&self) -> Option<&QuantMatrix> {
        self.quantized.as_ref().filter(|_| !self.weight.is_initialized())
    }

    /// The packed weight, while the float weight has not been materialised.
    pub fn packed(&self) -> Option<&PackedWeights> {
        self.packed.as_ref().filter(|_| !self.weight.is_initialized())
    }
}

/// A parameter of shape `shape` whose value is `values()` (row-major), computed only if something
/// asks for it: the float form of quantized blocks.
pub(super) fn lazy_weight<B: Backend>(
    shape: [usize; 2],
    device: &B::Device,
    values: impl Fn() -> Vec<f32> + Send + Sync + 'static,
) -> Param<Tensor<B, 2>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, _| Tensor::from_data(TensorData::new(values(), shape), device),
        device.clone(),
        false,
        Shape::new(shape),
    )
}

impl<B: Backend> Projection<B> {
    /// `x @ W (+ b)`: with the blocks or the packed weight where they are kept and the backend
    /// reads them ([`quantized_linear`], [`packed_linear`]), else through [`matmul_weight`].
    ///
    /// # Shapes
    /// - `x`: `[..., d_input]` -> `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut shape = x.dims();
        let [d_in, d_out] = self.dims();
        shape[D - 1] = d_out;
        let rows = x.shape().num_elements() / d_in.max(1);
        let x = reshaped(x, [rows, d_in]);
        let weight = || self.weight.val();
        let out = match (self.blocks(), self.packed()) {
            (Some(w), _) => quantized_linear(x, w, weight),
            (None, Some(w)) => packed_linear(x, w, weight),
            (None, None) => matmul_weight(x, weight()),
        };
        let out = match &self.bias {
            Some(bias) => out + bias.val().unsqueeze::<2>(),
            None => out,
        };
        reshaped(out, shape)
    }
}

/// `x.reshape(shape)`, but `x` itself where it already has that shape. Why: burn-flex's
/// `reshape` copies, on the calling thread, any view that does not start at its buffer's first
/// element, even to the shape it has; an expert's rows of the tokens sorted by expert are such
/// a view, and that copy was 1.5% of the MoE layer's forward at `T = 2048` (`perf`,
/// 2026-11-25, Zen 3) while the other core waited. The kernels read such views in place.
fn reshaped<B: Backend, const D: usize, const R: usize>(x: Tensor<B, D>, shape: [usize; R]) -> Tensor<B, R> {
    if D == R && x.dims()[..] == shape[..] {
        Tensor::from_primitive(x.into_primitive())
    } else {
        x.reshape(shape)
    }
}
