//! Turning padded id matrices from the text pipeline into tensors, and the source batch every
//! architecture's encoder reads.

use burn::prelude::*;
use rosetta_text::batch::PaddedIds;
use rosetta_text::vocab::SpecialIds;

/// A source batch as every encoder reads it: `[batch, src_len]` ids plus each row's true length.
#[derive(Debug, Clone)]
pub struct SourceBatch<B: Backend> {
    /// Token ids `[batch, src_len]`, padded.
    pub ids: Tensor<B, 2, Int>,
    /// True length of each row (the last real token is `</s>`).
    pub lengths: Vec<usize>,
    /// The target vocabulary's special ids: where decoding starts (`bos`), ends (`eos`), and which
    /// ids are never outputs (`pad`, `bos`).
    pub specials: SpecialIds,
}

impl<B: Backend> SourceBatch<B> {
    /// `[batch, src_len]`, true on padding.
    pub fn pad_mask(&self) -> Tensor<B, 2, Bool> {
        let [batch, len] = self.ids.dims();
        let data: Vec<bool> = self
            .lengths
            .iter()
            .flat_map(|&n| (0..len).map(move |j| j >= n))
            .collect();
        Tensor::from_data(TensorData::new(data, [batch, len]), &self.ids.device())
    }

    /// Whether any row is shorter than the padded length.
    pub fn has_padding(&self) -> bool {
        let len = self.ids.dims()[1];
        self.lengths.iter().any(|&n| n < len)
    }

    /// The rows in groups of similar length, each group's rows ordered by length: a group of at
    /// least [`PADDING_FREE_ROWS`] rows ends where the next row would make more than a fifth of
    /// its padded size padding ([`within_padding`]). A Transformer encodes each group on its own
    /// (padded only to the group's longest) and decodes the whole batch together.
    pub fn length_groups(&self) -> Vec<Vec<usize>> {
        sorted_runs(&self.lengths, 0..self.lengths.len(), within_padding)
    }

    /// Rows `rows` of the batch, in that order, padded only to their own longest.
    pub fn rows(&self, rows: &[usize]) -> Self {
        let device = self.ids.device();
        let lengths: Vec<usize> = rows.iter().map(|&i| self.lengths[i]).collect();
        let len = lengths.iter().copied().max().unwrap_or(0).max(1);
        let index: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows.len()]), &device);
        let ids = self.ids.clone().select(0, index);
        let ids = ids.slice([0..rows.len(), 0..len.min(self.ids.dims()[1])]);
        SourceBatch {
            ids,
            lengths,
            specials: self.specials,
        }
    }
}

/// Rows a batch or a length group takes before padding may end it: fewer rows per step cost more
/// than the padding they avoid.
pub const PADDING_FREE_ROWS: usize = 16;

/// Whether a group of `rows` sequences of `tokens` tokens in all, sorted by length, may take one
/// more of `next` tokens (its new longest): yes while it has fewer than [`PADDING_FREE_ROWS`] rows,
/// then while its padded size stays within 1.2 times its tokens. A server's batch mixes whatever
/// lengths arrived together, and one batch of 100 such sentences spent a third of a Transformer
/// encoder on padding (greedy, the Multi30k-sized Transformer, one thread, `val` in batches of 100
/// in arrival order: 4.4–4.7 s before, 3.6–4.0 s after; slack 1.1 and 1.5 and a floor of 8 and 32
/// rows were slower or equal).
pub fn within_padding(rows: usize, tokens: usize, next: usize) -> bool {
    rows < PADDING_FREE_ROWS || 5 * (rows + 1) * next <= 6 * (tokens + next)
}

/// The indices `rows` sorted by `lengths` (stable), cut into runs: a run takes the next index while
/// `fits(rows so far, their tokens, its length)`; each run has at least one index.
pub fn sorted_runs(
    lengths: &[usize],
    rows: impl IntoIterator<Item = usize>,
    fits: impl Fn(usize, usize, usize) -> bool,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = rows.into_iter().collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut runs = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        let mut tokens = lengths[order[start]];
        while end < order.len() && fits(end - start, tokens, lengths[order[end]]) {
            tokens += lengths[order[end]];
            end += 1;
        }
        runs.push(order[start..end].to_vec());
        start = end;
    }
    runs
}

/// `[batch, len]` id tensor.
pub fn ids_tensor<B: Backend>(ids: &PaddedIds, device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i32> = ids.ids.iter().map(|&id| id as i32).collect();
    Tensor::from_data(TensorData::new(data, [ids.batch, ids.len]), device)
}

/// The encoder's input from padded source ids; `specials` are the target vocabulary's.
pub fn source_batch<B: Backend>(
    ids: &PaddedIds,
    specials: SpecialIds,
    device: &B::Device,
) -> SourceBatch<B> {
    SourceBatch {
        ids: ids_tensor(ids, device),
        lengths: ids.lengths.clone(),
        specials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn batch(lengths: &[usize]) -> SourceBatch<Flex> {
        let len = lengths.iter().copied().max().unwrap_or(1);
        SourceBatch {
            ids: Tensor::zeros([lengths.len(), len], &Default::default()),
            lengths: lengths.to_vec(),
            specials: SpecialIds::default(),
        }
    }

    #[test]
    fn length_groups_split_where_padding_would_pass_a_fifth() {
        // 16 rows of 10 and 16 of 30, interleaved: two groups, each sorted by length.
        let lengths: Vec<usize> = (0..32).map(|i| if i % 2 == 0 { 10 } else { 30 }).collect();
        let groups = batch(&lengths).length_groups();
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert!(groups[0].iter().all(|&i| lengths[i] == 10) && groups[0].len() == 16);
        assert!(groups[1].iter().all(|&i| lengths[i] == 30) && groups[1].len() == 16);
        // Below the floor of rows, or within the slack, one group.
        assert_eq!(batch(&[3, 30, 3, 30]).length_groups().len(), 1);
        let close: Vec<usize> = (0..32).map(|i| 10 + i % 2).collect();
        assert_eq!(
            batch(&close).length_groups(),
            vec![{
                let mut all: Vec<usize> = (0..32).collect();
                all.sort_by_key(|&i| close[i]);
                all
            }]
        );
    }
}
