//! Position signals added to the embeddings (Vaswani et al. 2017, §3.5).

use super::config::PositionKind;
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::prelude::*;
use std::sync::{Arc, OnceLock};

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

/// Where a batch's positions are: the same `start..start + len` for every row, or one position per
/// row (a search step whose sentences joined at different steps; `len` 1).
#[derive(Debug, Clone, Copy)]
pub enum At<'a> {
    /// Every row at `start..start + len`.
    From(usize),
    /// Row `i` at position `rows[i]`.
    Rows(&'a [usize]),
}

/// The sinusoids of positions `0..max_positions`, computed on first use and shared by a model's
/// clones: every batch looks its positions up instead of computing `d_model` sines and cosines
/// per position (about 10 µs each), which a search step whose rows sit at different positions
/// would pay per row.
#[derive(Debug, Clone, Default)]
pub struct SinusoidTable(Arc<OnceLock<Vec<f32>>>);

impl SinusoidTable {
    /// `[rows.len(), d_model]`: the sinusoid of `kind` at each position, exactly as [`sinusoid`]
    /// gives it.
    pub fn rows(
        &self,
        kind: PositionKind,
        max_positions: usize,
        d_model: usize,
        rows: &[usize],
    ) -> Vec<f32> {
        let table = self
            .0
            .get_or_init(|| sinusoid(kind, 0, max_positions, d_model));
        let mut out = Vec::with_capacity(rows.len() * d_model);
        for &p in rows {
            match table.get(p * d_model..(p + 1) * d_model) {
                Some(row) => out.extend_from_slice(row),
                // Past the table: only teacher-forced scoring of a reference longer than
                // `max_positions` comes here (searches stop there).
                None => out.extend(sinusoid(kind, p, 1, d_model)),
            }
        }
        out
    }
}

/// The position signal of a batch `[batch, len, d_model]`: positions `start..start + len` for
/// every row (`At::From`, broadcast over the batch) or one position per row (`At::Rows`, `len` 1),
/// looked up in the learned table or in the sinusoid table (`sinusoids`: the table and
/// `max_positions`).
pub fn positions<B: Backend>(
    kind: PositionKind,
    table: Option<&Embedding<B>>,
    sinusoids: (&SinusoidTable, usize),
    [batch, len, d_model]: [usize; 3],
    at: At<'_>,
    device: &B::Device,
) -> Tensor<B, 3> {
    // `[rows, cols]` positions, broadcast to `[batch, len]`.
    let (ps, rows, cols): (Vec<usize>, usize, usize) = match at {
        At::From(start) => ((start..start + len).collect(), 1, len),
        At::Rows(r) => (r.to_vec(), r.len(), 1),
    };
    let pos = match (kind, table) {
        (PositionKind::Learned, Some(table)) => {
            // Positions past the table reuse its last row instead of failing. Searches stop at
            // `max_positions` (`Scorer::max_len`), and translation and validation truncate sources
            // to `text.max_len` < `max_positions` (`Config::validate`); only teacher-forced scoring of
            // a reference longer than the table reaches this.
            let last = table.weight.dims()[0].saturating_sub(1);
            let ids: Vec<i32> = ps.iter().map(|&p| p.min(last) as i32).collect();
            let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [rows * cols]), device);
            table.forward(ids.reshape([rows, cols]))
        }
        (PositionKind::Learned, None) => {
            unreachable!("`Transformer::new` gives learned positions their table")
        }
        _ => {
            let (cache, max_positions) = sinusoids;
            Tensor::<B, 3>::from_data(
                TensorData::new(
                    cache.rows(kind, max_positions, d_model, &ps),
                    [rows, cols, d_model],
                ),
                device,
            )
        }
    };
    // Laid out in order before the caller adds it to the embeddings: burn-flex adds a broadcast
    // (stride-0) operand one element at a time through its strided iterator, 1.1 % of a batched
    // Transformer decode (perf; gone from the profile after, the wall-time change below this
    // machine's noise). An unbroadcast `pos` is already in order and is not copied. Same values,
    // so the same sums. Autodiff tensors keep the view (see `kernels::contiguous`).
    crate::kernels::contiguous(pos.expand([batch, len, d_model]))
}
