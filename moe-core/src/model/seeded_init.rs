//! A fresh model whose random weights come from a seed of its own.

use burn::module::Param;
use burn::tensor::backend::Backend;

use super::{Mixtral, ParamId, ParamMut};
use crate::config::MixtralConfig;
use crate::draws::Draws;

impl MixtralConfig {
    /// [`MixtralConfig::init`] with every random weight drawn from `seed` by a generator of
    /// the model's own, from the same distributions: the embedding `N(0, 1)`, each linear
    /// weight `[in, out]` uniform in `±1/sqrt(in)` (Burn's Kaiming-uniform default). Norms
    /// start at one, selection biases and noise weights at zero, as in `init`.
    ///
    /// `init` draws from the backend's generator, one per process: a seed set with `B::seed`
    /// gives the same model only if nothing else draws meanwhile. This one gives the same
    /// model for a seed whatever else runs, and on every backend.
    pub fn init_seeded<B: Backend>(&self, device: &B::Device, seed: u64) -> Mixtral<B> {
        let mut model = self.init::<B>(device);
        let mut draws = Draws::new(seed);
        for param in ParamId::all(self) {
            let random = !matches!(
                param,
                ParamId::InputNorm(_)
                    | ParamId::PostAttentionNorm(_)
                    | ParamId::FinalNorm
                    | ParamId::RouterBias(_)
                    | ParamId::RouterNoise(_)
            );
            let Some(ParamMut::Rank2(weight)) = model.param_mut(param).filter(|_| random) else {
                continue;
            };
            let [rows, cols] = weight.lazy_shape().dims();
            let values = match param {
                ParamId::Embedding => draws.normal([rows, cols], 0.0, 1.0, device),
                _ => draws.uniform([rows, cols], 1.0 / (rows as f64).sqrt(), device),
            };
            // The same id: only the values differ from `init`'s.
            *weight = Param::initialized(weight.id, values.require_grad());
        }
        model
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::tensor::{Distribution, Tensor};

    use super::*;
    use crate::backend::Flex;
    use crate::model::ParamRef;
    use crate::moe::RoutingConfig;

    fn values(model: &Mixtral<Flex>) -> Vec<Vec<f32>> {
        ParamId::all(model.config())
            .into_iter()
            .map(|p| match model.param(p).unwrap() {
                ParamRef::Rank1(w) => w.val().into_data().to_vec().unwrap(),
                ParamRef::Rank2(w) => w.val().into_data().to_vec().unwrap(),
            })
            .collect()
    }

    /// A seed gives the same model whatever the backend's generator draws meanwhile (every
    /// random weight is the model's own draw), another seed another one, from `init`'s
    /// distributions.
    #[test]
    fn a_seed_gives_one_model() {
        let device = Default::default();
        let mut config = MixtralConfig::tiny();
        config.routing = RoutingConfig { noisy_gating: true, ..RoutingConfig::default() };
        let model = config.init_seeded::<Flex>(&device, 5);
        let _ = Tensor::<Flex, 1>::random([64], Distribution::Default, &device);
        let want = values(&model);
        assert_eq!(values(&config.init_seeded::<Flex>(&device, 5)), want);
        let other = values(&config.init_seeded::<Flex>(&device, 6));
        for (p, (a, b)) in ParamId::all(&config).into_iter().zip(want.iter().zip(&other)) {
            let constant = a.iter().all(|v| *v == a[0]);
            assert_eq!(constant, a == b, "{p:?}: only norms and zero-initialised weights repeat");
            let rows = match model.param(p).unwrap() {
                ParamRef::Rank2(w) => w.dims()[0],
                ParamRef::Rank1(_) => continue,
            };
            let max = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let bound = if p == ParamId::Embedding { 6.0 } else { 1.0 / (rows as f32).sqrt() };
            assert!(constant || (max <= bound && max > 0.5 * bound), "{p:?}: max |w| {max}, bound {bound}");
        }
    }
}
