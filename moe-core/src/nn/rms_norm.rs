use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Configuration of [`RmsNorm`].
#[derive(Config, Debug)]
pub struct RmsNormConfig {
    /// Size of the normalised (last) dimension.
    pub d_model: usize,
    /// Added to the mean square; Mixtral uses 1e-5.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl RmsNormConfig {
    /// A norm with unit weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> RmsNorm<B> {
        RmsNorm { weight: Param::from_tensor(Tensor::ones([self.d_model], device)), epsilon: self.epsilon }
    }
}

/// Root-mean-square layer norm as in HF `MixtralRMSNorm`.
///
/// Unlike `burn::nn::RmsNorm`, the whole normalisation runs in f32 and is cast back to the input
/// dtype before the weight multiplies it, which is what HF does; with f16/bf16 activations the
/// two orders round differently.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[D]`; named as in the checkpoint (`*_layernorm.weight`).
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square before the square root.
    pub epsilon: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// # Shapes
    /// - `x`: `[..., D]` -> `[..., D]`
    pub fn forward<const N: usize>(&self, x: Tensor<B, N>) -> Tensor<B, N> {
        crate::kernels::rms_norm(x, &self.weight.val(), self.epsilon)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, FloatDType, Tolerance};

    use crate::backend::Flex;

    fn norm<B: Backend>(w: Tensor<B, 1>) -> RmsNorm<B> {
        RmsNorm { weight: Param::from_tensor(w), epsilon: 1e-5 }
    }

    /// burn-flex without autodiff takes the kernel (`kernels::flex`'s tests check that it does);
    /// under autodiff Burn's ops run: both
    /// must normalise alike in f32, f16 and bf16 (a weight that is not all ones, rows wider
    /// than the kernel's lanes, more rows than one task).
    #[test]
    fn the_kernel_computes_what_burns_ops_compute() {
        let device = Default::default();
        let x = Tensor::<Flex, 3>::random([3, 7, 19], Distribution::Normal(0.5, 2.0), &device);
        let w = Tensor::<Flex, 1>::random([19], Distribution::Uniform(0.5, 1.5), &device);
        for (dtype, tolerance) in [(FloatDType::F32, 1e-6), (FloatDType::F16, 1e-2), (FloatDType::BF16, 5e-2)] {
            let (x, w) = (x.clone().cast(dtype), w.clone().cast(dtype));
            let got = norm(w.clone()).forward(x.clone());
            assert_eq!(got.dtype(), dtype.into());
            let on_graph = |t: Tensor<Flex, 1>| Tensor::<Autodiff<Flex>, 1>::from_data(t.into_data(), &device);
            let want = norm(on_graph(w)).forward(Tensor::<Autodiff<Flex>, 3>::from_data(x.into_data(), &device));
            got.cast(FloatDType::F32)
                .into_data()
                .assert_approx_eq::<f32>(&want.cast(FloatDType::F32).into_data(), Tolerance::absolute(tolerance));
        }
    }
}
