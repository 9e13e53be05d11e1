//! Position signals added to the embeddings (Vaswani et al. 2017, §3.5).

use super::config::PositionKind;
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::prelude::*;

/// The sinusoid of `kind` for positions `start..start + len`: `[len, d_model]`.
///
/// Frequencies are `1 / 10000^(2i / d_model)` for `i < d_model / 2`. `Sinusoidal` writes
/// `sin` at dimension `2i` and `cos` at `2i + 1`; `SinusoidalHalves` writes `sin` at `i` and `cos`
/// at `d_model / 2 + i` (Hugging Face's `MarianSinusoidalPositionalEmbedding`). Computed in `f64`
/// and rounded once, so every position is exact to the last bit whatever the sequence length.
pub fn sinusoid(kind: PositionKind, start: usize, len: usize, d_model: usize) -> Vec<f32> {
    let half = d_model / 2;
    let mut out = vec![0.0f32; len * d_model];
    for (row, p) in out.chunks_mut(d_model).zip(start..) {
        for i in 0..half {
            let angle = p as f64 / 10000f64.powf(2.0 * i as f64 / d_model as f64);
            let (s, c) = (angle.sin() as f32, angle.cos() as f32);
            match kind {
                PositionKind::SinusoidalHalves => {
                    row[i] = s;
                    row[half + i] = c;
                }
                _ => {
                    row[2 * i] = s;
                    row[2 * i + 1] = c;
                }
            }
        }
    }
    out
}

/// A learned position table `[max_positions, d_model]`, drawn like the token embeddings.
pub fn learned_table<B: Backend>(
    max_positions: usize,
    d_model: usize,
    device: &B::Device,
) -> Embedding<B> {
    EmbeddingConfig::new(max_positions, d_model)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: (d_model as f64).powf(-0.5),
        })
        .init(device)
}

/// Positions `start..start + len` for every row: `[batch, len, d_model]` (broadcast over the batch
/// for sinusoids, looked up for a learned table).
pub fn positions<B: Backend>(
    kind: PositionKind,
    table: Option<&Embedding<B>>,
    batch: usize,
    start: usize,
    len: usize,
    d_model: usize,
    device: &B::Device,
) -> Tensor<B, 3> {
    match (kind, table) {
        (PositionKind::Learned, Some(table)) => {
            // Positions past the table reuse its last row instead of failing. Searches stop at
            // `max_positions` (`Scorer::max_len`), and translation and validation truncate sources
            // to `text.max_len` < `max_positions` (`Config::validate`); only teacher-forced scoring of
            // a reference longer than the table reaches this.
            let last = table.weight.dims()[0].saturating_sub(1);
            let ids: Vec<i32> = (start..start + len).map(|p| p.min(last) as i32).collect();
            let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [len]), device);
            table
                .forward(ids.reshape([1, len]))
                .expand([batch, len, d_model])
        }
        (PositionKind::Learned, None) => {
            unreachable!("`Transformer::new` gives learned positions their table")
        }
        _ => Tensor::<B, 2>::from_data(
            TensorData::new(sinusoid(kind, start, len, d_model), [len, d_model]),
            device,
        )
        .reshape([1, len, d_model])
        .expand([batch, len, d_model]),
    }
}
