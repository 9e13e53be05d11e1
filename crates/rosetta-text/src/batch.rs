//! Batching: length-bucketed batches with a maximum number of tokens **padding included**, a seeded
//! shuffle, and padded id matrices with masks.
//!
//! A batch of `n` examples whose longest source is `S` and longest target is `T` costs
//! `n · max(S, T)` tokens: that bounds both padded tensors, `[n, S]` and `[n, T]`, so a limit set
//! for memory holds whichever side is longer.

use crate::encoded::ParallelIds;
use crate::error::{Error, Result};
use crate::vocab::SpecialIds;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// How many batches' worth of examples are sorted together: large enough that batches carry little
/// padding, small enough that their composition changes from epoch to epoch.
const POOL_BATCHES: usize = 100;

/// Plans the batches of every epoch of one corpus.
#[derive(Debug, Clone)]
pub struct BatchPlanner {
    src_lens: Vec<u32>,
    tgt_lens: Vec<u32>,
    max_tokens: usize,
    pool_size: usize,
}

impl BatchPlanner {
    /// Checks that every example fits in a batch on its own.
    ///
    /// `src_lens[i]`/`tgt_lens[i]` are the padded lengths example `i` occupies (see
    /// [`ParallelIds::batch_lengths`]).
    pub fn new(src_lens: Vec<u32>, tgt_lens: Vec<u32>, max_tokens: usize) -> Result<Self> {
        if src_lens.len() != tgt_lens.len() {
            return Err(Error::Config(format!(
                "{} source lengths but {} target lengths",
                src_lens.len(),
                tgt_lens.len()
            )));
        }
        if max_tokens == 0 {
            return Err(Error::Config(
                "batch size in tokens must be at least 1".into(),
            ));
        }
        for (index, (&s, &t)) in src_lens.iter().zip(&tgt_lens).enumerate() {
            let tokens = s.max(t) as usize;
            if tokens > max_tokens {
                return Err(Error::ExampleTooLong {
                    index,
                    tokens,
                    max_tokens,
                });
            }
        }
        let total: u64 = src_lens
            .iter()
            .zip(&tgt_lens)
            .map(|(&s, &t)| u64::from(s.max(t)))
            .sum();
        let mean = (total as f64 / src_lens.len().max(1) as f64).max(1.0);
        let per_batch = (max_tokens as f64 / mean).max(1.0);
        let pool_size = ((per_batch * POOL_BATCHES as f64) as usize).max(1);
        Ok(BatchPlanner {
            src_lens,
            tgt_lens,
            max_tokens,
            pool_size,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.src_lens.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.src_lens.is_empty()
    }

    /// The token limit per batch.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Padded token cost of a batch made of these examples.
    pub fn cost(&self, indices: &[u32]) -> usize {
        let longest = indices
            .iter()
            .map(|&i| self.src_lens[i as usize].max(self.tgt_lens[i as usize]))
            .max()
            .unwrap_or(0);
        indices.len() * longest as usize
    }

    /// The batches of one epoch, as example indices. The same `(seed, epoch)` always gives the same
    /// plan; every example appears in exactly one batch; no batch costs more than the limit.
    pub fn epoch(&self, seed: u64, epoch: u64) -> Vec<Vec<u32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch);
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        order.shuffle(&mut rng);

        let mut batches = Vec::new();
        for pool in order.chunks_mut(self.pool_size) {
            // Stable sort after a shuffle: equal lengths stay in random order.
            pool.sort_by_key(|&i| (self.src_lens[i as usize], self.tgt_lens[i as usize]));
            let mut current: Vec<u32> = Vec::new();
            let mut longest = 0usize;
            for &i in pool.iter() {
                let len = self.src_lens[i as usize].max(self.tgt_lens[i as usize]) as usize;
                let new_longest = longest.max(len);
                if !current.is_empty() && (current.len() + 1) * new_longest > self.max_tokens {
                    batches.push(std::mem::take(&mut current));
                    longest = len;
                } else {
                    longest = new_longest;
                }
                current.push(i);
            }
            if !current.is_empty() {
                batches.push(current);
            }
        }
        batches.shuffle(&mut rng);
        batches
    }
}

/// A row-major `[batch, len]` matrix of ids padded with the vocabulary's `<pad>`, with each row's
/// true length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedIds {
    /// `batch · len` ids, row by row.
    pub ids: Vec<u32>,
    /// Number of rows.
    pub batch: usize,
    /// Padded row length.
    pub len: usize,
    /// True length of each row.
    pub lengths: Vec<usize>,
}

impl PaddedIds {
    /// Pads sequences, optionally adding `<s>` in front and `</s>` at the end of each, with the
    /// ids of `specials`.
    pub fn new<'a>(
        seqs: impl IntoIterator<Item = &'a [u32]>,
        specials: &SpecialIds,
        bos: bool,
        eos: bool,
    ) -> Self {
        let seqs: Vec<&[u32]> = seqs.into_iter().collect();
        let extra = usize::from(bos) + usize::from(eos);
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len() + extra).collect();
        let len = lengths.iter().copied().max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        for (seq, &n) in seqs.iter().zip(&lengths) {
            if bos {
                ids.push(specials.bos);
            }
            ids.extend_from_slice(seq);
            if eos {
                ids.push(specials.eos);
            }
            ids.resize(ids.len() + len - n, specials.pad);
        }
        PaddedIds {
            ids,
            batch: seqs.len(),
            len,
            lengths,
        }
    }

    /// `[batch, len]` mask, row-major: `true` on real tokens, `false` on padding.
    pub fn mask(&self) -> Vec<bool> {
        let mut mask = Vec::with_capacity(self.batch * self.len);
        for &n in &self.lengths {
            mask.extend((0..self.len).map(|j| j < n));
        }
        mask
    }

    /// Number of real (non-padding) tokens.
    pub fn real_tokens(&self) -> usize {
        self.lengths.iter().sum()
    }
}

/// One training batch: source with `</s>`, decoder input `<s> y`, decoder output `y </s>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Example indices, in row order.
    pub indices: Vec<u32>,
    /// `[batch, src_len]` source ids.
    pub src: PaddedIds,
    /// `[batch, tgt_len]` decoder inputs (`<s>` + target).
    pub tgt_in: PaddedIds,
    /// `[batch, tgt_len]` decoder outputs to predict (target + `</s>`).
    pub tgt_out: PaddedIds,
}

impl Batch {
    /// Materializes the batch of the given examples, each side with its vocabulary's special ids
    /// (`(source, target)`; they differ for imported models with separate vocabularies).
    pub fn new(data: &ParallelIds, indices: &[u32], specials: (&SpecialIds, &SpecialIds)) -> Self {
        let side = |ids: &crate::encoded::TokenStore, specials, bos, eos| {
            PaddedIds::new(
                indices.iter().map(|&i| ids.get(i as usize)),
                specials,
                bos,
                eos,
            )
        };
        let src = side(&data.src, specials.0, false, true);
        let tgt_in = side(&data.tgt, specials.1, true, false);
        let tgt_out = side(&data.tgt, specials.1, false, true);
        Batch {
            indices: indices.to_vec(),
            src,
            tgt_in,
            tgt_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{BOS, EOS, PAD};

    #[test]
    fn pads_and_masks() {
        let p = PaddedIds::new(
            [&[7u32, 8][..], &[9][..]],
            &SpecialIds::default(),
            true,
            true,
        );
        assert_eq!(p.ids, [BOS, 7, 8, EOS, BOS, 9, EOS, PAD]);
        assert_eq!(p.mask(), [true, true, true, true, true, true, true, false]);
        assert_eq!(p.real_tokens(), 7);
    }

    #[test]
    fn batch_shifts_target() {
        let mut data = ParallelIds::new();
        data.push(&[10, 11], &[20, 21, 22]);
        let s = SpecialIds::default();
        let b = Batch::new(&data, &[0], (&s, &s));
        assert_eq!(b.src.ids, [10, 11, EOS]);
        assert_eq!(b.tgt_in.ids, [BOS, 20, 21, 22]);
        assert_eq!(b.tgt_out.ids, [20, 21, 22, EOS]);
    }

    #[test]
    fn rejects_an_example_longer_than_a_batch() {
        let err = BatchPlanner::new(vec![3, 50], vec![4, 2], 40).unwrap_err();
        assert!(
            err.to_string().contains("example 1 needs 50 tokens"),
            "{err}"
        );
    }

    #[test]
    fn same_seed_same_plan_and_epochs_differ() {
        let lens: Vec<u32> = (0..500).map(|i| 1 + (i * 7919 % 40)).collect();
        let p = BatchPlanner::new(lens.clone(), lens, 200).unwrap();
        assert_eq!(p.epoch(1, 0), p.epoch(1, 0));
        assert_ne!(p.epoch(1, 0), p.epoch(1, 1));
        assert_ne!(p.epoch(1, 0), p.epoch(2, 0));
    }
}
