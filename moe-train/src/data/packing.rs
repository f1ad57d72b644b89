//! Documents -> `<s> text </s>` token stream -> fixed-length sequences -> train/validation split,
//! and the deterministic batch order that makes a resumed run continue exactly.

use moe_generate::TextTokenizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Document;
use crate::error::{Result, TrainError};

/// Task id of tokens that belong to no task (user data).
pub const NO_TASK: u8 = u8::MAX;

/// Sequences of one split, stored flat.
#[derive(Debug, Clone)]
pub struct Split {
    /// Tokens per sequence.
    pub seq_len: usize,
    /// `n * seq_len` token ids.
    pub tokens: Vec<u32>,
    /// The task of each token ([`NO_TASK`] when unknown).
    pub tasks: Vec<u8>,
}

impl Split {
    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.tokens.len() / self.seq_len
    }

    /// Whether there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Token ids of sequences `indices`, flattened `[indices.len() * seq_len]`.
    pub fn gather(&self, indices: &[usize]) -> (Vec<i64>, Vec<u8>) {
        let s = self.seq_len;
        let mut ids = Vec::with_capacity(indices.len() * s);
        let mut tasks = Vec::with_capacity(indices.len() * s);
        for &i in indices {
            ids.extend(self.tokens[i * s..(i + 1) * s].iter().map(|&t| t as i64));
            tasks.extend_from_slice(&self.tasks[i * s..(i + 1) * s]);
        }
        (ids, tasks)
    }
}

/// The tokenised corpus, split.
#[derive(Debug, Clone)]
pub struct PackedData {
    /// Training sequences.
    pub train: Split,
    /// Validation sequences.
    pub val: Split,
    /// Tokens in the whole corpus (before dropping the last partial sequence).
    pub corpus_tokens: usize,
}

impl PackedData {
    /// Tokenises every document as `<s> text </s>`, concatenates them in a seed-shuffled order,
    /// cuts the stream into `seq_len`-token sequences and holds out `val_fraction` of them.
    pub fn build(
        docs: &[Document],
        tokenizer: &TextTokenizer,
        seq_len: usize,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        let eos = tokenizer.eos_id().ok_or_else(|| TrainError::Tokenizer("no end-of-sequence token".into()))?;
        let mut order: Vec<usize> = (0..docs.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut tokens = Vec::new();
        let mut tasks = Vec::new();
        for &i in &order {
            let doc = &docs[i];
            let mut ids = Vec::with_capacity(doc.text.len() / 2 + 2);
            ids.extend(tokenizer.bos_id());
            ids.extend(tokenizer.encode(&doc.text, false)?);
            ids.push(eos);
            let task = doc.task.map_or(NO_TASK, |t| t as u8);
            tasks.extend(std::iter::repeat_n(task, ids.len()));
            tokens.extend(ids);
        }
        let corpus_tokens = tokens.len();
        let n = tokens.len() / seq_len;
        let mut seqs: Vec<usize> = (0..n).collect();
        seqs.shuffle(&mut ChaCha8Rng::seed_from_u64(seed.wrapping_add(1)));
        let n_val = ((n as f64 * val_fraction).round() as usize).max(1);
        if n < n_val + 1 {
            return Err(TrainError::NotEnoughData { split: "train and validation", got: n, need: n_val + 1, seq_len });
        }
        let pick = |ids: &[usize]| {
            let mut split = Split { seq_len, tokens: Vec::new(), tasks: Vec::new() };
            for &i in ids {
                split.tokens.extend_from_slice(&tokens[i * seq_len..(i + 1) * seq_len]);
                split.tasks.extend_from_slice(&tasks[i * seq_len..(i + 1) * seq_len]);
            }
            split
        };
        Ok(Self { val: pick(&seqs[..n_val]), train: pick(&seqs[n_val..]), corpus_tokens })
    }
}

/// Which training sequences form each micro-batch: epoch after epoch, each a fresh seeded
/// permutation, the last partial batch of an epoch dropped. A pure function of the batch
/// number, so resuming needs nothing but the step.
#[derive(Debug, Clone)]
pub struct BatchOrder {
    n: usize,
    batch_size: usize,
    seed: u64,
    epoch: Option<(usize, Vec<usize>)>,
}

impl BatchOrder {
    /// The batch order of `split`: `batch_size` sequences per batch, reshuffled each epoch from `seed`.
    pub fn new(split: &Split, batch_size: usize, seed: u64) -> Result<Self> {
        let n_sequences = split.len();
        if n_sequences < batch_size {
            return Err(TrainError::NotEnoughData {
                split: "training",
                got: n_sequences,
                need: batch_size,
                seq_len: split.seq_len,
            });
        }
        Ok(Self { n: n_sequences, batch_size, seed, epoch: None })
    }

    /// Whole batches in one pass over the split.
    pub fn batches_per_epoch(&self) -> usize {
        self.n / self.batch_size
    }

    /// Sequence indices of micro-batch number `batch` (counted from the start of training).
    pub fn batch(&mut self, batch: usize) -> Vec<usize> {
        let per_epoch = self.batches_per_epoch();
        let (epoch, within) = (batch / per_epoch, batch % per_epoch);
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut perm: Vec<usize> = (0..self.n).collect();
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9)));
            self.epoch = Some((epoch, perm));
        }
        let perm = &self.epoch.as_ref().unwrap().1;
        perm[within * self.batch_size..(within + 1) * self.batch_size].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_order_is_a_pure_function_of_the_batch_number() {
        let split = |n: usize| Split { seq_len: 2, tokens: vec![0; 2 * n], tasks: vec![0; 2 * n] };
        let mut a = BatchOrder::new(&split(10), 3, 5).unwrap();
        let all: Vec<Vec<usize>> = (0..7).map(|i| a.batch(i)).collect();
        let mut b = BatchOrder::new(&split(10), 3, 5).unwrap();
        assert_eq!(b.batch(5), all[5]);
        assert_eq!(b.batch(1), all[1]);
        let mut epoch0: Vec<usize> = all[..3].concat();
        epoch0.sort();
        epoch0.dedup();
        assert_eq!(epoch0.len(), 9, "no sequence twice in an epoch");
        assert_ne!(all[0], all[3], "epochs are reshuffled");
        assert!(BatchOrder::new(&split(2), 3, 0).is_err());
    }
}
