use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::attention_mask;
use crate::kernels::write_along;

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
    /// An empty cache for `batch` sequences of up to `capacity` positions.
    pub fn new(batch: usize, n_kv_heads: usize, capacity: usize, head_dim: usize, device: &B::Device) -> Self {
        let shape = [batch, n_kv_heads, capacity, head_dim];
        Self { k: Tensor::zeros(shape, device), v: Tensor::zeros(shape, device) }
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
        debug_assert_eq!([b, g, dh], [self.k.dims()[0], self.k.dims()[1], self.k.dims()[3]]);
        write_along(&mut self.k, 2, start, k);
        write_along(&mut self.v, 2, start, v);
        (self.k.clone().narrow(2, lo, end - lo), self.v.clone().narrow(2, lo, end - lo))
    }

    /// The sequences `rows` (in that order), with cache positions `from..from + len` moved to
    /// `to..to + len` of buffers of `capacity` positions.
    fn moved(&self, rows: Option<&[usize]>, from: usize, len: usize, to: usize, capacity: usize) -> Self {
        let shift = |t: &Tensor<B, 4>| {
            let device = t.device();
            let t = match rows {
                Some(rows) => {
                    let index = rows.iter().map(|&r| r as i64).collect::<Vec<_>>();
                    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows.len()]), &device);
                    t.clone().select(0, index)
                }
                None => t.clone(),
            };
            let [b, g, _, dh] = t.dims();
            let mut out = Tensor::zeros([b, g, capacity, dh], &device);
            if len > 0 {
                write_along(&mut out, 2, to, t.narrow(2, from, len));
            }
            out
        };
        Self { k: shift(&self.k), v: shift(&self.v) }
    }
}

/// The KV cache of a whole model: one [`LayerKvCache`] per layer and the number of positions
/// filled so far.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// One cache per decoder layer.
    pub layers: Vec<LayerKvCache<B>>,
    len: usize,
    capacity: usize,
    /// Per sequence, how many padding tokens precede its prompt (empty: none anywhere).
    left_padding: Vec<usize>,
}

/// Where the tokens of one cached forward step sit and what they may attend to: the same for
/// every layer, so [`KvCache::step`] computes it once per step.
#[derive(Debug, Clone)]
pub struct CacheStep<B: Backend> {
    /// Cache index of the step's first token.
    pub start: usize,
    /// First cache index the step reads (`> 0` only when a sliding window has moved past it).
    pub lo: usize,
    /// `[B or 1, S, start + S - lo]`, `true` = masked: causal, sliding window, padding keys.
    pub mask: Tensor<B, 3, Bool>,
    /// RoPE positions of left-padded sequences (cache index minus padding), `[B*S]`
    /// batch-major; `None` when every sequence is at `start..start + S`.
    pub positions: Option<Vec<usize>>,
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
            layers: (0..n_layers).map(|_| LayerKvCache::new(batch, n_kv_heads, capacity, head_dim, device)).collect(),
            len: 0,
            capacity,
            left_padding: Vec::new(),
        }
    }

    /// Declares that sequence `b` starts with `left_padding[b]` padding tokens: they are never
    /// attended to and the RoPE positions of each sequence start at its first real token, as
    /// transformers does for left-padded batches (`position_ids = cumsum(mask) - 1`). The
    /// sliding window, as in transformers, counts cache indices.
    pub fn with_left_padding(mut self, left_padding: Vec<usize>) -> Self {
        self.left_padding = if left_padding.iter().all(|&p| p == 0) { Vec::new() } else { left_padding };
        self
    }

    /// Per sequence, its padding tokens (empty when there are none).
    pub fn left_padding(&self) -> &[usize] {
        &self.left_padding
    }

    /// Positions and mask for `s` new tokens after the cached ones.
    pub fn step(&self, s: usize, sliding_window: Option<usize>, device: &B::Device) -> CacheStep<B> {
        let start = self.len;
        let lo = sliding_window.map_or(0, |w| start.saturating_sub(w - 1));
        let s_k = start + s - lo;
        if self.left_padding.is_empty() {
            let mask = attention_mask::<B>(s, s_k, start - lo, sliding_window, device).unsqueeze::<3>();
            return CacheStep { start, lo, mask, positions: None };
        }
        let b = self.left_padding.len();
        let mut mask = Vec::with_capacity(b * s * s_k);
        let mut positions = Vec::with_capacity(b * s);
        for &pad in &self.left_padding {
            for q in start..start + s {
                positions.push(q.saturating_sub(pad));
                for k in lo..start + s {
                    let future = k > q;
                    let outside_window = sliding_window.is_some_and(|w| k + w <= q);
                    mask.push(future || outside_window || k < pad);
                }
            }
        }
        CacheStep {
            start,
            lo,
            mask: Tensor::from_data(TensorData::new(mask, [b, s, s_k]), device),
            positions: Some(positions),
        }
    }

    /// Positions already in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Marks `n` more positions as filled (after every layer has appended them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Sequences in the cache.
    pub fn batch_size(&self) -> usize {
        self.layers.first().map_or(0, |l| l.k.dims()[0])
    }

    /// Keeps the sequences `keep` (indices into the batch, in the order given) and forgets the
    /// rest, as a server does when requests finish; the remaining sequences compute exactly what
    /// they would have. Positions that are padding in every kept sequence are dropped, so the
    /// cache is only as long as its longest sequence. The capacity stays.
    ///
    /// Panics if `keep` is empty or names a sequence outside the batch.
    pub fn retain(&mut self, keep: &[usize]) {
        let b = self.batch_size();
        assert!(!keep.is_empty() && keep.iter().all(|&i| i < b), "retain {keep:?} of {b} sequences");
        let padding: Vec<usize> = match self.left_padding.is_empty() {
            true => vec![0; keep.len()],
            false => keep.iter().map(|&i| self.left_padding[i]).collect(),
        };
        let drop = padding.iter().copied().min().unwrap_or(0).min(self.len);
        let len = self.len - drop;
        let unchanged = drop == 0 && keep.iter().copied().eq(0..b);
        if !unchanged {
            for layer in &mut self.layers {
                *layer = layer.moved(Some(keep), drop, len, 0, self.capacity);
            }
        }
        self.len = len;
        self.left_padding = padding.into_iter().map(|p| p - drop).collect();
        if self.left_padding.iter().all(|&p| p == 0) {
            self.left_padding.clear();
        }
    }

    /// This cache's sequences followed by `other`'s, in buffers of `capacity` positions:
    /// continuous batching adds requests to a running batch this way. The two are aligned on
    /// their latest position (the next token of every sequence goes to the same cache index):
    /// the shorter side is left-padded, and every sequence computes exactly what it would alone.
    ///
    /// Panics if `capacity` is below the joined length or the caches belong to different models.
    pub fn join(self, other: Self, capacity: usize) -> Self {
        let len = self.len.max(other.len);
        assert!(capacity >= len, "a joined cache of {len} positions does not fit in {capacity}");
        assert_eq!(self.layers.len(), other.layers.len(), "caches of models with different depths");
        let padding = |c: &Self| -> Vec<usize> {
            let shift = len - c.len;
            match c.left_padding.is_empty() {
                true => vec![shift; c.batch_size()],
                false => c.left_padding.iter().map(|p| p + shift).collect(),
            }
        };
        let left_padding = [padding(&self), padding(&other)].concat();
        let layers = self
            .layers
            .iter()
            .zip(&other.layers)
            .map(|(a, b)| {
                let a = a.moved(None, 0, self.len, len - self.len, capacity);
                let b = b.moved(None, 0, other.len, len - other.len, capacity);
                LayerKvCache { k: Tensor::cat(vec![a.k, b.k], 0), v: Tensor::cat(vec![a.v, b.v], 0) }
            })
            .collect();
        Self { layers, len, capacity, left_padding: Vec::new() }.with_left_padding(left_padding)
    }

    /// Forgets everything (the buffers are reused).
    pub fn reset(&mut self) {
        self.len = 0;
        self.left_padding.clear();
    }
}
