//! The conditional recurrent decoder.
//!
//! Two orderings, chosen by the attention kind:
//! - **Bahdanau** (and the fixed-context model): attend with the previous state `s_{i−1}`, feed the
//!   context with the embedding into the recurrent step (Bahdanau et al. 2015, §3.1 and §A.2.2).
//! - **Luong**: recurrent step first, then attend with the new state `h_t`; the attentional vector
//!   `h̃_t = tanh(W_c [h_t; c_t])` (Luong et al. 2015, eq. 5) is optionally fed to the next step's
//!   input ("input feeding", §3.3).
//!
//! In both, the output layer reads `[state; context]` (and the embedding, if configured) through
//! `pre_output`, then projects to the vocabulary. Where no step depends on it (everything except
//! input feeding), the pre-output and the vocabulary projection run once over all target positions.

use super::attention::{Attention, AttentionKind, AttentionMemory};
use super::cell::{Cell, CellKind, CellPass, CellState, gate_projection};
use super::embedding::EmbeddingInit;
use crate::error::{Error, Result};
use crate::kernels::{PackCache, StepLinear, WeightLayout, time_steps};
use crate::model::lora::{FinetuneConfig, Lora, adapted};
use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear, LinearConfig};
use burn::prelude::*;

/// Sizes and options of a decoder.
#[derive(Debug, Clone)]
pub struct DecoderSpec {
    /// Recurrent unit.
    pub cell: CellKind,
    /// Target vocabulary size.
    pub vocab: usize,
    /// Embedding size.
    pub emb: usize,
    /// Hidden size of every layer.
    pub hidden: usize,
    /// Number of layers.
    pub layers: usize,
    /// Encoder output size (the context size).
    pub encoder_out: usize,
    /// Attention mechanism.
    pub attention: AttentionKind,
    /// Bahdanau's attention layer size.
    pub attention_size: usize,
    /// Luong input feeding.
    pub input_feeding: bool,
    /// Let the output layer see the previous target embedding too.
    pub embedding_to_output: bool,
    /// `tanh(W [state; context] + b)` before the vocabulary projection; off, the concatenation itself
    /// is projected.
    pub attentional_layer: bool,
    /// Share the target embedding matrix with the output projection (Press & Wolf 2017).
    pub tie_embeddings: bool,
    /// Dropout probability.
    pub dropout: f64,
    /// How the target embedding starts.
    pub embedding_init: EmbeddingInit,
}

impl DecoderSpec {
    /// Size of what the output layer reads: `[state; context (; embedding)]`.
    pub fn pre_output_input(&self) -> usize {
        self.hidden
            + self.encoder_out
            + if self.embedding_to_output {
                self.emb
            } else {
                0
            }
    }

    /// Size of the pre-output (attentional) vector: the embedding size when tied, else hidden; the
    /// concatenation's size without the attentional layer.
    pub fn output_size(&self) -> usize {
        match (self.attentional_layer, self.tie_embeddings) {
            (false, _) => self.pre_output_input(),
            (true, true) => self.emb,
            (true, false) => self.hidden,
        }
    }
}

/// What the decoder reads from the encoder on every step.
#[derive(Debug, Clone)]
pub struct DecoderMemory<B: Backend> {
    /// Encoder states prepared for attention.
    pub attention: AttentionMemory<B>,
    /// Fixed context for the no-attention model: final encoder states `[batch, encoder_out]`.
    pub summary: Tensor<B, 2>,
    /// The layers applied at every step, prepared for this pass over the target.
    pub pass: DecoderPass<B>,
}

/// The decoder's per-step layers during one pass over the target: each weight gets one gradient
/// product for all steps ([`StepLinear`]).
#[derive(Debug, Clone)]
pub struct DecoderPass<B: Backend> {
    /// The recurrent layers, bottom first.
    cells: Vec<CellPass<B>>,
    /// The projection of the context (Bahdanau, no attention) or of the fed attentional vector.
    ih_context: Option<StepLinear<B>>,
    /// The input projections of the layers above the first.
    upper: Vec<StepLinear<B>>,
}

impl<B: Backend> DecoderMemory<B> {
    /// Prepares the memory for a search ([`AttentionMemory::for_search`]).
    pub fn for_search(self) -> Self {
        DecoderMemory {
            attention: self.attention.for_search(),
            ..self
        }
    }

    /// Selects batch rows (beam search). `indices`: `[n]`.
    pub fn select(self, indices: Tensor<B, 1, Int>) -> Self {
        DecoderMemory {
            attention: self.attention.select(indices.clone()),
            summary: self.summary.select(0, indices),
            pass: self.pass,
        }
    }
}

/// The decoder's recurrent state between steps.
#[derive(Debug, Clone)]
pub struct DecoderState<B: Backend> {
    /// One state per layer, bottom first.
    pub layers: Vec<CellState<B>>,
    /// Previous attentional vector `[batch, output]` (input feeding only).
    pub feed: Option<Tensor<B, 2>>,
}

impl<B: Backend> DecoderState<B> {
    /// Selects batch rows (beam search). `indices`: `[n]`.
    pub fn select(self, indices: Tensor<B, 1, Int>) -> Self {
        DecoderState {
            layers: self
                .layers
                .into_iter()
                .map(|l| l.select(indices.clone()))
                .collect(),
            feed: self.feed.map(|f| f.select(0, indices)),
        }
    }
}

/// One step's results before the vocabulary projection.
struct StepOut<B: Backend> {
    /// Top-layer state `[batch, hidden]`.
    top: Tensor<B, 2>,
    /// Context `[batch, encoder_out]`.
    context: Tensor<B, 2>,
    /// Attention weights `[batch, src_len]` (none for the fixed-context model).
    weights: Option<Tensor<B, 2>>,
    /// Attentional vector `[batch, output]`, when computed inside the step (input feeding).
    pre_output: Option<Tensor<B, 2>>,
}

/// The decoder.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// Target embeddings `[tgt_vocab, emb]`.
    pub embedding: Embedding<B>,
    /// Layer-0 input projection of the embedding `[emb, gates·hidden]`, with bias.
    pub ih: Linear<B>,
    /// Layer-0 input projection of the context (Bahdanau, none) or of the fed attentional vector
    /// (Luong with input feeding), no bias.
    pub ih_context: Option<Linear<B>>,
    /// Input projections of layers 1.. `[hidden, gates·hidden]`.
    pub upper: Vec<Linear<B>>,
    /// Hidden-to-hidden parts of every layer.
    pub cells: Vec<Cell<B>>,
    /// Attention over the encoder states.
    pub attention: Attention<B>,
    /// `[hidden + encoder_out (+ emb), output]`: the attentional / deep-output layer (absent when
    /// the concatenation is projected to the vocabulary directly).
    pub pre_output: Option<Linear<B>>,
    /// Vocabulary projection `[output, tgt_vocab]`; absent when tied to the embedding.
    pub output: Option<Linear<B>>,
    /// Output bias `[tgt_vocab]` when the projection is tied to the embedding.
    pub output_bias: Option<Param<Tensor<B, 1>>>,
    /// LoRA update of `ih` (`[finetune] method = "lora"`, target `ih`).
    pub ih_lora: Option<Lora<B>>,
    /// LoRA update of `pre_output` (target `pre_output`).
    pub pre_output_lora: Option<Lora<B>>,
    /// LoRA update of `output` (target `output`).
    pub output_lora: Option<Lora<B>>,
    dropout: Dropout,
    input_feeding: bool,
    embedding_to_output: bool,
    output_size: usize,
    /// The vocabulary projection's weight packed for search steps (not a parameter; rebuilt from
    /// the weight when it changes).
    #[module(skip)]
    output_pack: PackCache,
}

impl<B: Backend> Decoder<B> {
    /// Projects the vocabulary of search steps in 8-bit integers (see [`PackCache::quantize`]).
    pub fn quantize(&self, kernel: crate::kernels::Int8Kernel) {
        self.output_pack.quantize(kernel);
    }

    /// Builds a decoder.
    pub fn new(spec: &DecoderSpec, device: &B::Device) -> Self {
        let gates = |d_in| gate_projection(spec.cell, d_in, spec.hidden, true, device);
        let out = spec.output_size();
        let luong = spec.attention.is_luong();
        let feeds = luong && spec.input_feeding;
        let pre_in = spec.pre_output_input();
        Decoder {
            embedding: spec.embedding_init.table(spec.vocab, spec.emb, device),
            ih: gates(spec.emb),
            ih_context: match (luong, feeds) {
                (false, _) => Some(gate_projection(
                    spec.cell,
                    spec.encoder_out,
                    spec.hidden,
                    false,
                    device,
                )),
                (true, true) => Some(gate_projection(spec.cell, out, spec.hidden, false, device)),
                (true, false) => None,
            },
            upper: (1..spec.layers).map(|_| gates(spec.hidden)).collect(),
            cells: (0..spec.layers)
                .map(|_| Cell::new(spec.cell, spec.hidden, device))
                .collect(),
            attention: Attention::new(
                spec.attention,
                spec.hidden,
                spec.encoder_out,
                spec.attention_size,
                device,
            ),
            pre_output: spec
                .attentional_layer
                .then(|| LinearConfig::new(pre_in, out).init(device)),
            output: (!spec.tie_embeddings).then(|| LinearConfig::new(out, spec.vocab).init(device)),
            output_bias: spec
                .tie_embeddings
                .then(|| Param::from_tensor(Tensor::zeros([spec.vocab], device))),
            dropout: DropoutConfig::new(spec.dropout).init(),
            input_feeding: feeds,
            embedding_to_output: spec.embedding_to_output,
            output_size: out,
            output_pack: PackCache::default(),
            ih_lora: None,
            pre_output_lora: None,
            output_lora: None,
        }
    }

    /// Adds the LoRA updates `config` targets; a target this decoder lacks (`pre_output` without
    /// the attentional layer, `output` tied to the embedding) is an error naming it.
    pub fn add_lora(&mut self, config: &FinetuneConfig, device: &B::Device) -> Result<()> {
        let lora = |layer: &Linear<B>| {
            let [d_in, d_out] = layer.weight.dims();
            Lora::new(d_in, d_out, config, device)
        };
        if config.targets("ih") {
            self.ih_lora = Some(lora(&self.ih));
        }
        if config.targets("pre_output") {
            let layer = self.pre_output.as_ref().ok_or_else(|| {
                Error::Config(
                    "finetune.targets: \"pre_output\" names the attentional layer, which this \
                     model does not have (model.attentional_layer = false)"
                        .into(),
                )
            })?;
            self.pre_output_lora = Some(lora(layer));
        }
        if config.targets("output") {
            let layer = self.output.as_ref().ok_or_else(|| {
                Error::Config(
                    "finetune.targets: \"output\" names the vocabulary projection, which this \
                     model ties to the target embedding (model.tie_embeddings = true)"
                        .into(),
                )
            })?;
            self.output_lora = Some(lora(layer));
        }
        Ok(())
    }

    /// Folds the LoRA updates into the weights.
    pub fn merge_lora(mut self) -> Self {
        if let Some(lora) = self.ih_lora.take() {
            self.ih = lora.merge_into(self.ih);
        }
        // `add_lora` adds an update only where its layer exists.
        if let Some(lora) = self.pre_output_lora.take() {
            self.pre_output = self.pre_output.take().map(|layer| lora.merge_into(layer));
        }
        if let Some(lora) = self.output_lora.take() {
            self.output = self.output.take().map(|layer| lora.merge_into(layer));
            // The packed copy was of the old weight.
            self.output_pack = PackCache::default();
        }
        self
    }

    /// Prepares the encoder states for every step. `states`: `[batch, src_len, encoder_out]`.
    pub fn memory(
        &self,
        states: Tensor<B, 3>,
        pad_mask: Tensor<B, 2, Bool>,
        summary: Tensor<B, 2>,
    ) -> DecoderMemory<B> {
        DecoderMemory {
            attention: self.attention.memory(states, pad_mask),
            summary,
            pass: DecoderPass {
                cells: self.cells.iter().map(Cell::pass).collect(),
                ih_context: self.ih_context.as_ref().map(StepLinear::new),
                upper: self.upper.iter().map(StepLinear::new).collect(),
            },
        }
    }

    /// The initial state from the bridge's per-layer hidden states (each `[batch, hidden]`).
    pub fn start(&self, init: Vec<Tensor<B, 2>>) -> DecoderState<B> {
        let batch = init.first().map_or(0, |h| h.dims()[0]);
        let device = init.first().map(|h| h.device());
        DecoderState {
            feed: match (self.input_feeding, device) {
                (true, Some(device)) => Some(Tensor::zeros([batch, self.output_size], &device)),
                _ => None,
            },
            layers: self
                .cells
                .iter()
                .zip(init)
                .map(|(cell, h)| cell.state_from(h))
                .collect(),
        }
    }

    /// One recurrent step. `emb_proj`: the embedding already projected by `ih`, `[batch, gates·hidden]`.
    fn step(
        &self,
        emb_proj: Tensor<B, 2>,
        emb: Option<Tensor<B, 2>>,
        state: DecoderState<B>,
        memory: &DecoderMemory<B>,
    ) -> (StepOut<B>, DecoderState<B>) {
        let kind = self.attention.kind();
        let top_prev = || state.layers.last().map(|l| l.h.clone());
        // Bahdanau: attend with the previous top state, before the recurrent step.
        let (early_context, early_weights) = match kind {
            AttentionKind::None => (Some(memory.summary.clone()), None),
            AttentionKind::Bahdanau => match top_prev() {
                Some(query) => {
                    let (c, w) = self.attention.forward(query, &memory.attention);
                    (Some(c), Some(w))
                }
                None => (None, None),
            },
            _ => (None, None),
        };
        let fed = early_context.clone().or_else(|| state.feed.clone());
        let pass = &memory.pass;
        let mut x = match (&pass.ih_context, fed) {
            (Some(proj), Some(fed)) => emb_proj + proj.forward(fed),
            _ => emb_proj,
        };
        let mut layers = Vec::with_capacity(pass.cells.len());
        for (l, (cell, prev)) in pass.cells.iter().zip(&state.layers).enumerate() {
            let new = cell.step(x, prev);
            x = match pass.upper.get(l) {
                Some(next) => {
                    next.forward(crate::kernels::dropout(new.h.clone(), self.dropout.prob))
                }
                None => new.h.clone(),
            };
            layers.push(new);
        }
        let top = x;
        // Luong: attend with the new top state, after the recurrent step.
        let (context, weights) = match early_context {
            Some(c) => (c, early_weights),
            None => {
                let (c, w) = self.attention.forward(top.clone(), &memory.attention);
                (c, Some(w))
            }
        };
        let pre_output = self
            .input_feeding
            .then(|| self.attentional(top.clone(), context.clone(), emb));
        let feed = pre_output.clone();
        (
            StepOut {
                top,
                context,
                weights,
                pre_output,
            },
            DecoderState { layers, feed },
        )
    }

    /// `tanh(W [state; context (; embedding)] + b)`, any leading shape `[.., ·]`; the concatenation
    /// itself without the attentional layer.
    fn attentional<const D: usize>(
        &self,
        top: Tensor<B, D>,
        context: Tensor<B, D>,
        emb: Option<Tensor<B, D>>,
    ) -> Tensor<B, D> {
        let mut parts = vec![top, context];
        if self.embedding_to_output
            && let Some(emb) = emb
        {
            parts.push(emb);
        }
        let joined = Tensor::cat(parts, D - 1);
        match &self.pre_output {
            Some(layer) => {
                crate::kernels::tanh(adapted(layer, self.pre_output_lora.as_ref(), joined))
            }
            None => joined,
        }
    }

    /// Vocabulary logits from attentional vectors: `[n, output] → [n, tgt_vocab]`.
    fn project(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.vocabulary(crate::kernels::dropout(x, self.dropout.prob))
    }

    /// [`Self::project`] for one search step: with the weight packed once per model where the CPU
    /// runs that kernel ([`PackCache`]). `[n, output] → [n, tgt_vocab]`.
    fn project_step(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = crate::kernels::dropout(x, self.dropout.prob);
        if self.output_lora.is_some() {
            // Unmerged (the search merges first): the packed weight lacks the update.
            return self.vocabulary(x);
        }
        let packed = match (&self.output, &self.output_bias) {
            (Some(output), _) => self.output_pack.project(
                &x,
                &output.weight.val(),
                WeightLayout::InOut,
                output.bias.as_ref().map(|b| b.val()).as_ref(),
            ),
            (None, Some(bias)) => self.output_pack.project(
                &x,
                &self.embedding.weight.val(),
                WeightLayout::OutIn,
                Some(&bias.val()),
            ),
            (None, None) => None,
        };
        packed.unwrap_or_else(|| self.vocabulary(x))
    }

    /// The vocabulary projection itself: `[n, output] → [n, tgt_vocab]`.
    fn vocabulary(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match (&self.output, &self.output_bias) {
            (Some(output), _) => adapted(output, self.output_lora.as_ref(), x),
            (None, Some(bias)) => {
                x.matmul(self.embedding.weight.val().transpose()) + bias.val().unsqueeze_dim::<2>(0)
            }
            // The constructor always sets one of the two.
            (None, None) => x,
        }
    }

    /// Teacher-forced decoding of a whole target batch.
    ///
    /// `tgt_in`: `[batch, tgt_len]` (`<s> y₁ … y_{n}`). Returns logits `[batch, tgt_len, tgt_vocab]`
    /// and attention weights `[batch, tgt_len, src_len]` (none for the fixed-context model).
    pub fn forward(
        &self,
        tgt_in: Tensor<B, 2, Int>,
        mut state: DecoderState<B>,
        memory: &DecoderMemory<B>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        let [batch, len] = tgt_in.dims();
        let emb = crate::kernels::dropout(self.embedding.forward(tgt_in), self.dropout.prob); // [batch, len, emb]
        // One matmul for the embedding part of every step's input projection, time-major so that
        // each step's slice is contiguous.
        let emb_proj = time_steps(adapted(
            &self.ih,
            self.ih_lora.as_ref(),
            emb.clone().swap_dims(0, 1),
        )); // len × [batch, gates]
        let emb_steps: Vec<Tensor<B, 2>> = if self.input_feeding && self.embedding_to_output {
            time_steps(emb.clone().swap_dims(0, 1))
        } else {
            Vec::new()
        };
        let (mut tops, mut contexts, mut weights, mut pres) = (
            Vec::with_capacity(len),
            Vec::with_capacity(len),
            Vec::with_capacity(len),
            Vec::with_capacity(len),
        );
        for (t, xp) in emb_proj.into_iter().enumerate() {
            let (out, next) = self.step(xp, emb_steps.get(t).cloned(), state, memory);
            state = next;
            match out.pre_output {
                Some(pre) => pres.push(pre),
                None => {
                    tops.push(out.top);
                    contexts.push(out.context);
                }
            }
            if let Some(w) = out.weights {
                weights.push(w);
            }
        }
        let pre: Tensor<B, 3> = if pres.is_empty() {
            self.attentional(
                Tensor::stack(tops, 1),
                Tensor::stack(contexts, 1),
                Some(emb),
            )
        } else {
            Tensor::stack(pres, 1)
        }; // [batch, len, output]
        let logits = self.project(pre.reshape([batch * len, self.output_size])); // [batch·len, vocab]
        let vocab = logits.dims()[1];
        let logits = logits.reshape([batch, len, vocab]);
        let attention = (!weights.is_empty()).then(|| Tensor::stack(weights, 1));
        (logits, attention)
    }

    /// One search step: previous tokens `[n]` → logits `[n, tgt_vocab]`, new state, attention `[n, src_len]`.
    pub fn decode_step(
        &self,
        prev: Tensor<B, 1, Int>,
        state: DecoderState<B>,
        memory: &DecoderMemory<B>,
    ) -> (Tensor<B, 2>, DecoderState<B>, Option<Tensor<B, 2>>) {
        let [n] = prev.dims();
        let emb = self.embedding.forward(prev.reshape([n, 1])); // [n, 1, emb]
        let emb_dim = emb.dims()[2];
        let emb = emb.reshape([n, emb_dim]);
        let emb_proj = adapted(&self.ih, self.ih_lora.as_ref(), emb.clone());
        let (out, state) = self.step(emb_proj, Some(emb.clone()), state, memory);
        let pre = match out.pre_output {
            Some(pre) => pre,
            None => self.attentional(out.top, out.context, Some(emb)),
        };
        (self.project_step(pre), state, out.weights)
    }
}
