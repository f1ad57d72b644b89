use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Keys and values of one attention layer for positions already processed, preallocated for
/// `capacity` positions so decoding writes in place instead of concatenating.
#[derive(Debug, Clone)]
pub struct LayerKvCache<B: Backend> {
    /// `[B, G, capacity, Dh]`
    k: Tensor<B, 4>,
    /// `[B, G, capacity, Dh]`
    v: Tensor<B, 4>,
}

impl<B: Backend> LayerKvCache<B> {
    pub fn new(batch: usize, n_kv_heads: usize, capacity: usize, head_dim: usize, device: &B::Device) -> Self {
        let shape = [batch, n_kv_heads, capacity, head_dim];
        Self {
            k: Tensor::zeros(shape, device),
            v: Tensor::zeros(shape, device),
        }
    }

    /// Writes the new positions `start..start + S` and returns the keys and values from `lo`
    /// to `start + S`.
    ///
    /// # Shapes
    /// - `k`, `v`: `[B, G, S, Dh]` -> `[B, G, start + S - lo, Dh]` each
    pub fn append(
        &mut self,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        start: usize,
        lo: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, g, s, dh] = k.dims();
        let end = start + s;
        self.k = self.k.clone().slice_assign([0..b, 0..g, start..end, 0..dh], k);
        self.v = self.v.clone().slice_assign([0..b, 0..g, start..end, 0..dh], v);
        (
            self.k.clone().narrow(2, lo, end - lo),
            self.v.clone().narrow(2, lo, end - lo),
        )
    }
}

/// The KV cache of a whole model: one [`LayerKvCache`] per layer and the number of positions
/// filled so far.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub layers: Vec<LayerKvCache<B>>,
    len: usize,
    capacity: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `batch` sequences of up to `capacity` positions.
    pub fn new(
        n_layers: usize,
        batch: usize,
        n_kv_heads: usize,
        capacity: usize,
        head_dim: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            layers: (0..n_layers)
                .map(|_| LayerKvCache::new(batch, n_kv_heads, capacity, head_dim, device))
                .collect(),
            len: 0,
            capacity,
        }
    }

    /// Positions already in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Marks `n` more positions as filled (after every layer has appended them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Forgets everything (the buffers are reused).
    pub fn reset(&mut self) {
        self.len = 0;
    }
}
