//! The encoder: embeddings and a stack of (bi)directional recurrent layers over the source.
//!
//! Padding is handled exactly: a forward direction stops updating its state after a sentence's last
//! token, and a backward direction starts at that token (its state stays zero over the padding), so a
//! sentence encodes the same whether it is batched with longer ones or alone.

use super::cell::{Cell, CellKind, CellState, gate_projection};
use super::embedding::EmbeddingInit;
use super::input::SourceBatch;
use crate::kernels::time_steps;
use crate::model::lora::{FinetuneConfig, Lora, adapted};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};
use burn::prelude::*;

/// One direction of one layer: input projection + cell.
#[derive(Module, Debug)]
pub struct Direction<B: Backend> {
    /// Input projection `[d_in, gates·hidden]`, with bias.
    pub ih: Linear<B>,
    /// Hidden-to-hidden part.
    pub cell: Cell<B>,
    /// LoRA update of `ih` (`[finetune] method = "lora"`, target `ih`).
    pub ih_lora: Option<Lora<B>>,
}

impl<B: Backend> Direction<B> {
    fn new(kind: CellKind, d_in: usize, hidden: usize, device: &B::Device) -> Self {
        Direction {
            ih: gate_projection(kind, d_in, hidden, true, device),
            cell: Cell::new(kind, hidden, device),
            ih_lora: None,
        }
    }

    fn add_lora(&mut self, config: &FinetuneConfig, device: &B::Device) {
        let [d_in, d_out] = self.ih.weight.dims();
        self.ih_lora = config
            .targets("ih")
            .then(|| Lora::new(d_in, d_out, config, device));
    }

    fn merge_lora(mut self) -> Self {
        if let Some(lora) = self.ih_lora.take() {
            self.ih = lora.merge_into(self.ih);
        }
        self
    }

    /// Runs over all steps. `x`: `[batch, len, d_in]`; `pad`: per step `[batch, hidden]`, true on
    /// padding (or `None` when the batch has none). Returns `[batch, len, hidden]` and the final state
    /// (after the last real token going forward, after the first token going backward).
    fn run(
        &self,
        x: Tensor<B, 3>,
        pad: Option<&[Tensor<B, 2, Bool>]>,
        reverse: bool,
    ) -> (Tensor<B, 3>, CellState<B>) {
        let [batch, len, _] = x.dims();
        // One matmul for the input projections of every time step, time-major so that each step's
        // slice is contiguous.
        let xp = time_steps(adapted(&self.ih, self.ih_lora.as_ref(), x.swap_dims(0, 1))); // len × [batch, gates]
        let mut state = self.cell.zero_state(batch, &xp[0].device());
        let cell = self.cell.pass();
        let mut outputs: Vec<Option<Tensor<B, 2>>> = vec![None; len];
        let order: Box<dyn Iterator<Item = usize>> = if reverse {
            Box::new((0..len).rev())
        } else {
            Box::new(0..len)
        };
        for t in order {
            let new = cell.step(xp[t].clone(), &state);
            state = match pad {
                Some(pad) => state.keep_where(&pad[t], new),
                None => new,
            };
            outputs[t] = Some(state.h.clone());
        }
        // Every slot was filled by the loop above (it visits each t once).
        let outputs: Vec<Tensor<B, 2>> = outputs.into_iter().flatten().collect();
        (Tensor::stack(outputs, 1), state)
    }
}

/// One encoder layer: a forward direction and, when bidirectional, a backward one.
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Left-to-right direction.
    pub fwd: Direction<B>,
    /// Right-to-left direction (bidirectional encoders only).
    pub bwd: Option<Direction<B>>,
}

/// What the decoder needs from the encoder.
#[derive(Debug, Clone)]
pub struct EncoderOutput<B: Backend> {
    /// Top-layer states `[batch, src_len, out]` (`out` = hidden, or 2·hidden when bidirectional);
    /// zero on padding.
    pub states: Tensor<B, 3>,
    /// Final states of the top layer, `[batch, out]`: forward final ++ backward final.
    pub last: Tensor<B, 2>,
    /// `[batch, src_len]`, true on padding.
    pub pad_mask: Tensor<B, 2, Bool>,
    /// True length of each row.
    pub lengths: Vec<usize>,
}

/// Embeddings plus stacked recurrent layers.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Source embeddings `[src_vocab, emb]`.
    pub embedding: Embedding<B>,
    /// Recurrent layers, bottom first.
    pub layers: Vec<EncoderLayer<B>>,
    dropout: Dropout,
    hidden: usize,
    bidirectional: bool,
}

impl<B: Backend> Encoder<B> {
    /// Builds an encoder.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: CellKind,
        vocab: usize,
        emb: usize,
        hidden: usize,
        layers: usize,
        bidirectional: bool,
        dropout: f64,
        embedding_init: EmbeddingInit,
        device: &B::Device,
    ) -> Self {
        let out = if bidirectional { 2 * hidden } else { hidden };
        Encoder {
            embedding: embedding_init.table(vocab, emb, device),
            layers: (0..layers)
                .map(|i| {
                    let d_in = if i == 0 { emb } else { out };
                    EncoderLayer {
                        fwd: Direction::new(kind, d_in, hidden, device),
                        bwd: bidirectional.then(|| Direction::new(kind, d_in, hidden, device)),
                    }
                })
                .collect(),
            dropout: DropoutConfig::new(dropout).init(),
            hidden,
            bidirectional,
        }
    }

    /// Adds the LoRA updates of every direction's `ih` when `config` targets it.
    pub fn add_lora(&mut self, config: &FinetuneConfig, device: &B::Device) {
        for layer in &mut self.layers {
            layer.fwd.add_lora(config, device);
            if let Some(bwd) = &mut layer.bwd {
                bwd.add_lora(config, device);
            }
        }
    }

    /// Folds the LoRA updates into the weights.
    pub fn merge_lora(mut self) -> Self {
        self.layers = self
            .layers
            .into_iter()
            .map(|l| EncoderLayer {
                fwd: l.fwd.merge_lora(),
                bwd: l.bwd.map(Direction::merge_lora),
            })
            .collect();
        self
    }

    /// Size of each output state: hidden, or 2·hidden when bidirectional.
    pub fn output_size(&self) -> usize {
        if self.bidirectional {
            2 * self.hidden
        } else {
            self.hidden
        }
    }

    /// Encodes a source batch. `src.ids`: `[batch, src_len]`.
    pub fn forward(&self, src: &SourceBatch<B>) -> EncoderOutput<B> {
        let [batch, len] = src.ids.dims();
        let pad_mask = src.pad_mask();
        let step_masks: Option<Vec<Tensor<B, 2, Bool>>> = src.has_padding().then(|| {
            pad_mask
                .clone()
                .iter_dim(1)
                .map(|m| m.reshape([batch, 1]).expand([batch, self.hidden]))
                .collect()
        });
        let mut x =
            crate::kernels::dropout(self.embedding.forward(src.ids.clone()), self.dropout.prob); // [batch, len, emb]
        let mut last = None;
        let n_layers = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            let (fwd_out, fwd_state) = layer.fwd.run(x.clone(), step_masks.as_deref(), false);
            let (out, final_h) = match &layer.bwd {
                Some(bwd) => {
                    let (bwd_out, bwd_state) = bwd.run(x, step_masks.as_deref(), true);
                    (
                        Tensor::cat(vec![fwd_out, bwd_out], 2),
                        Tensor::cat(vec![fwd_state.h, bwd_state.h], 1),
                    )
                }
                None => (fwd_out, fwd_state.h),
            };
            last = Some(final_h);
            // Dropout between layers, not after the top one (the decoder applies its own).
            x = if i + 1 < n_layers {
                crate::kernels::dropout(out, self.dropout.prob)
            } else {
                out
            };
        }
        let out_size = self.output_size();
        let states = match src.has_padding() {
            true => x.mask_fill(
                pad_mask
                    .clone()
                    .reshape([batch, len, 1])
                    .expand([batch, len, out_size]),
                0.0,
            ),
            false => x,
        };
        EncoderOutput {
            states,
            // At least one layer exists (validated in the config), so `last` is set.
            last: last.unwrap_or_else(|| Tensor::zeros([batch, out_size], &src.ids.device())),
            pad_mask,
            lengths: src.lengths.clone(),
        }
    }
}
