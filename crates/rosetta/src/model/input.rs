//! Turning padded id matrices from the text pipeline into tensors.

use super::encoder::SourceBatch;
use burn::prelude::*;
use rosetta_text::batch::PaddedIds;

/// `[batch, len]` id tensor.
pub fn ids_tensor<B: Backend>(ids: &PaddedIds, device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i32> = ids.ids.iter().map(|&id| id as i32).collect();
    Tensor::from_data(TensorData::new(data, [ids.batch, ids.len]), device)
}

/// The encoder's input from padded source ids.
pub fn source_batch<B: Backend>(ids: &PaddedIds, device: &B::Device) -> SourceBatch<B> {
    SourceBatch {
        ids: ids_tensor(ids, device),
        lengths: ids.lengths.clone(),
    }
}
