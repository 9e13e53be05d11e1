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
