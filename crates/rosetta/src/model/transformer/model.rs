//! The Transformer encoder-decoder (Vaswani et al. 2017): embeddings and positions, the two layer
//! stacks, the vocabulary projection; the teacher-forced forward pass and incremental decoding.

use super::attention::{KvCache, padding_bias};
use super::config::{NormPosition, PositionKind, TransformerConfig};
use super::layers::{DecoderLayer, EncoderLayer, StepMemory, StepRows};
use super::norm::LayerNorm;
use super::positions::{At, SinusoidTable, learned_table, positions};
use crate::error::{Error, Result};
use crate::kernels;
use crate::kernels::{PackCache, WeightLayout, dense};
use crate::model::input::SourceBatch;
use crate::model::int8::Int8Pinner;
use crate::model::lora::FinetuneConfig;
use crate::search::{Scorer, Step};
use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear};
use burn::prelude::*;

/// A token table `[vocab, d_model]` drawn from N(0, d_model^−½), so that scaled by √d_model the
/// embeddings have unit variance (fairseq's `Embedding`, tensor2tensor).
fn token_table<B: Backend>(vocab: usize, d_model: usize, device: &B::Device) -> Embedding<B> {
    EmbeddingConfig::new(vocab, d_model)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: (d_model as f64).powf(-0.5),
        })
        .init(device)
}

/// `t` with the gradient stopped where `mask` is true: the
/// `<pad>` row of a table takes no gradient from the lookup, as PyTorch's
/// `nn.Embedding(padding_idx=…)` in Hugging Face's Marian and fairseq. Marian-layout models start
/// decoding from `<pad>`, whose row is zero in every OPUS-MT checkpoint; Marian and CTranslate2 do
/// not read that row but start from a zero vector, so a model whose `<pad>` row had trained away from
/// zero translated differently there (CTranslate2 agreed with Rosetta and `transformers` on 56 % of
/// test sentences). With a tied output, the projection leaves that row alone too (`project`).
///
/// `mask` broadcasts over `t` (`[batch, len, 1]` over `[batch, len, d]`, `[vocab, 1]` over a table).
fn no_gradient_where<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    mask: Tensor<B, D, Bool>,
) -> Tensor<B, D> {
    // Gradients exist only on an autodiff backend (a looked-up tensor is not itself a leaf that
    // "requires" one, so `is_require_grad` cannot tell).
    if !B::ad_enabled(&t.device()) {
        return t;
    }
    let frozen = mask.float(); // 1 where no gradient
    let keep = frozen.clone().neg().add_scalar(1.0);
    t.clone() * keep + t.detach() * frozen
}

/// One stack's own tables and layers (`L` = encoder or decoder layer).
#[derive(Module, Debug)]
pub struct Stack<B: Backend, L: Module<B>> {
    /// Token table `[vocab, d_model]`; absent when the model shares one table (`shared`).
    pub embed_tokens: Option<Embedding<B>>,
    /// Learned positions `[max_positions, d_model]`; absent for sinusoids.
    pub embed_positions: Option<Embedding<B>>,
    /// The layers, bottom first.
    pub layers: Vec<L>,
    /// Final LayerNorm of a pre-norm stack (Xiong et al. 2020); absent for post-norm.
    pub layer_norm: Option<LayerNorm<B>>,
}

/// Encoder, decoder and vocabulary projection.
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// The table source and target share (`share_embeddings`).
    pub shared: Option<Embedding<B>>,
    /// Reads the source.
    pub encoder: Stack<B, EncoderLayer<B>>,
    /// Predicts the target.
    pub decoder: Stack<B, DecoderLayer<B>>,
    /// Vocabulary projection `[d_model, tgt_vocab]`, no bias; absent when tied to the target table.
    pub lm_head: Option<Linear<B>>,
    /// Bias on the vocabulary logits `[tgt_vocab]` (`output_bias`).
    pub final_logits_bias: Option<Param<Tensor<B, 1>>>,
    dropout: Dropout,
    #[module(skip)]
    config: TransformerConfig,
    /// The vocabulary projection packed for search steps (not a parameter).
    #[module(skip)]
    output_pack: PackCache,
    /// Sinusoids of every position (the position signal of sinusoidal models).
    #[module(skip)]
    sinusoids: SinusoidTable,
}

/// Everything incremental decoding carries from one step to the next.
///
/// Selecting or reordering hypotheses moves no tensor: each hypothesis names the source row it
/// reads (`sentences`) and, per target position, the cache row that holds it (`ancestry`).
#[derive(Debug, Clone)]
pub struct TransformerState<B: Backend> {
    /// Per decoder layer, the source's cross-attention keys and values, one row per sentence
    /// (computed once per sentence; [`Scorer::admit`] reuses the rows of finished sentences or
    /// rebuilds the memory with the live ones first).
    memory: Vec<StepMemory<B>>,
    /// `[batch, src_len]`: −∞ on source padding.
    pad_bias: Tensor<B, 2>,
    /// `[n]`: the sentence of each live hypothesis (its row of `memory` and `pad_bias`).
    sentences: Vec<u32>,
    /// `[n, len]`: the cache row holding position `p` of hypothesis `i`, the same in every layer.
    ancestry: Vec<u32>,
    /// Target positions decoded so far: the caches' positions in use, `0..len`.
    len: usize,
    /// `[n]`: the cache position of each hypothesis' first target position. 0 for a batch
    /// started together; a sentence admitted into a running search ([`Scorer::admit`]) starts
    /// at the `len` of that moment, and reads nothing before it.
    starts: Vec<u32>,
    /// Per decoder layer, the self-attention keys and values of the positions decoded so far.
    caches: Vec<KvCache<B>>,
}

impl<B: Backend> TransformerState<B> {
    /// Before the step of `n` live hypotheses: when the caches are full, or hold at least twice as
    /// many rows as there are hypotheses (sentences finished), rebuilds them with one row per
    /// hypothesis (and, when full, room for twice the positions kept). Otherwise a batch whose last sentence
    /// runs to the length limit keeps the rows of every finished one, growing them all: on
    /// test_2016_flickr at batch 32 with a limit of 256 pieces, 449 MiB peak against 204 MiB with a
    /// limit of 64. Each rebuild copies at most the live part of the caches, and happens when the
    /// rows halve or the positions double, so it costs a constant share of the steps.
    ///
    /// A rebuild also drops the positions before every live hypothesis' start: in a search that
    /// admits sentences as others finish, `len` grows without end, while the positions in use
    /// stay those of the longest live hypothesis.
    fn compact_caches(&mut self, n: usize) {
        let t = self.len;
        let (width, capacity) = self.caches.first().map_or((0, 0), KvCache::shape);
        if t == 0 || (capacity > t && 2 * n > width) {
            return;
        }
        let shift = self.starts.iter().copied().min().unwrap_or(0) as usize;
        let kept = t - shift;
        // Room for as many positions again, so that a long-lived hypothesis (which keeps
        // `shift` low) does not make every few steps a rebuild.
        let capacity = if capacity >= 2 * kept {
            capacity
        } else {
            super::attention::grown_capacity(kept)
        };
        for cache in &mut self.caches {
            cache.compact(&self.ancestry, (n, t), shift, capacity);
        }
        self.ancestry = (0..n as u32)
            .flat_map(|i| std::iter::repeat_n(i, kept))
            .collect();
        for s in &mut self.starts {
            *s -= shift as u32;
        }
        self.len = kept;
    }
}

/// `t` `[rows, len, d]` followed by zeros up to `[rows, to, d]`: source keys and values of a
/// shorter sentence in a batch of longer ones (its padding bias is −∞ there, and the step attention
/// reads nothing past its end).
fn zero_padded<B: Backend>(t: Tensor<B, 3>, to: usize) -> Tensor<B, 3> {
    let [rows, len, d] = t.dims();
    if len >= to {
        t
    } else {
        let zeros = Tensor::zeros([rows, to - len, d], &t.device());
        Tensor::cat(vec![t, zeros], 1)
    }
}

/// `bias` `[rows, len]` followed by −∞ (padding) up to `[rows, to]`.
fn padded_bias<B: Backend>(bias: Tensor<B, 2>, to: usize) -> Tensor<B, 2> {
    let [rows, len] = bias.dims();
    if len >= to {
        bias
    } else {
        let pad = Tensor::full([rows, to - len], f32::NEG_INFINITY, &bias.device());
        Tensor::cat(vec![bias, pad], 1)
    }
}

/// `indices` `[m]` as row numbers.
fn row_indices<B: Backend>(indices: Tensor<B, 1, Int>) -> Vec<usize> {
    indices
        .into_data()
        .convert::<i64>()
        .iter::<i64>()
        .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
        .collect()
}

impl<B: Backend> Transformer<B> {
    /// An inference-only model whose dense layers, vocabulary projection and the token table tied
    /// to it live only in 8-bit integers (per output column; inputs quantized per row at every
    /// step), their float weights dropped: the OPUS-MT base shape then holds about a quarter of its
    /// float32 bytes. Teacher-forced scoring and the search both run in 8 bits; training such a
    /// model is not possible. LoRA updates must be merged first ([`Self::merge_lora`]).
    pub fn into_int8(mut self, pinner: &Int8Pinner) -> Result<Self> {
        self.encoder.layers = std::mem::take(&mut self.encoder.layers)
            .into_iter()
            .enumerate()
            .map(|(i, l)| l.into_int8(pinner, &format!("encoder.layers.{i}")))
            .collect::<Result<_>>()?;
        self.decoder.layers = std::mem::take(&mut self.decoder.layers)
            .into_iter()
            .enumerate()
            .map(|(i, l)| l.into_int8(pinner, &format!("decoder.layers.{i}")))
            .collect::<Result<_>>()?;
        match (
            &mut self.lm_head,
            &mut self.decoder.embed_tokens,
            &mut self.shared,
        ) {
            (Some(head), _, _) => pinner.pin_linear("lm_head", head, &self.output_pack)?,
            (None, Some(own), _) => pinner.pin(
                "decoder.embed_tokens.weight",
                &mut own.weight,
                WeightLayout::OutIn,
                &self.output_pack,
            )?,
            (None, None, Some(shared)) => pinner.pin(
                "shared.weight",
                &mut shared.weight,
                WeightLayout::OutIn,
                &self.output_pack,
            )?,
            // `new` gives every stack its own table or the model a shared one.
            (None, None, None) => unreachable!("a stack without a token table"),
        }
        Ok(self)
    }

    /// Token embeddings `[batch, len, d_model]` of `ids` `[batch, len]` from `stack`'s table, or from
    /// the 8-bit vocabulary projection it is tied to once [`Self::into_int8`] dropped it.
    fn tokens<L: Module<B>>(&self, stack: &Stack<B, L>, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let table = self.table(stack);
        let tied = self.lm_head.is_none() && std::ptr::eq(table, self.table(&self.decoder));
        if tied {
            let [batch, len] = ids.dims();
            let d = self.config.d_model;
            let device = ids.device();
            let rows = self.output_pack.with_pinned(|w| {
                let ids: Vec<usize> = ids
                    .to_data()
                    .iter::<i64>()
                    .map(|v| usize::try_from(v).unwrap_or(usize::MAX))
                    .collect();
                w.columns(&ids)
            });
            if let Some(rows) = rows {
                return Tensor::from_data(TensorData::new(rows, [batch, len, d]), &device);
            }
        }
        table.forward(ids)
    }

    /// Freezes every parameter and adds the LoRA updates `config` targets (Hu et al. 2021) or its
    /// adapters (Houlsby et al. 2019), the only parameters left to train.
    pub fn frozen_with_finetune(self, config: &FinetuneConfig, device: &B::Device) -> Self {
        let mut model = self.no_grad();
        if config.train_embeddings {
            for table in [
                &mut model.shared,
                &mut model.encoder.embed_tokens,
                &mut model.decoder.embed_tokens,
            ]
            .into_iter()
            .flatten()
            {
                table.weight = table.weight.clone().set_require_grad(true);
            }
        }
        for layer in &mut model.encoder.layers {
            layer.add_finetune(config, device);
        }
        for layer in &mut model.decoder.layers {
            layer.add_finetune(config, device);
        }
        model
    }

    /// Folds every LoRA update into its layer's weight, as deployment and search steps need.
    pub fn merge_lora(mut self) -> Self {
        self.encoder.layers = self
            .encoder
            .layers
            .into_iter()
            .map(EncoderLayer::merge_lora)
            .collect();
        self.decoder.layers = self
            .decoder
            .layers
            .into_iter()
            .map(DecoderLayer::merge_lora)
            .collect();
        self
    }

    /// Builds a freshly initialized model. Call [`TransformerConfig::validate`] first.
    pub fn new(
        config: &TransformerConfig,
        src_vocab: usize,
        tgt_vocab: usize,
        device: &B::Device,
    ) -> Result<Self> {
        if config.share_embeddings && src_vocab != tgt_vocab {
            return Err(Error::Config(format!(
                "model.share_embeddings needs one vocabulary for source and target (text.joint = true); \
                 this pipeline has {src_vocab} source and {tgt_vocab} target entries"
            )));
        }
        let d = config.d_model;
        let own_table = |vocab| (!config.share_embeddings).then(|| token_table(vocab, d, device));
        let learned = || {
            (config.positions == PositionKind::Learned)
                .then(|| learned_table(config.max_positions, d, device))
        };
        let final_norm = || {
            (config.norm == NormPosition::Pre)
                .then(|| LayerNorm::new(d, config.layer_norm_eps, device))
        };
        Ok(Transformer {
            shared: config
                .share_embeddings
                .then(|| token_table(src_vocab, d, device)),
            encoder: Stack {
                embed_tokens: own_table(src_vocab),
                embed_positions: learned(),
                layers: (0..config.encoder_layers)
                    .map(|_| EncoderLayer::new(config, device))
                    .collect(),
                layer_norm: final_norm(),
            },
            decoder: Stack {
                embed_tokens: own_table(tgt_vocab),
                embed_positions: learned(),
                layers: (0..config.decoder_layers)
                    .map(|_| DecoderLayer::new(config, device))
                    .collect(),
                layer_norm: final_norm(),
            },
            lm_head: (!config.tie_output)
                .then(|| super::attention::xavier_linear(d, tgt_vocab, false, device)),
            final_logits_bias: config
                .output_bias
                .then(|| Param::from_tensor(Tensor::zeros([tgt_vocab], device))),
            dropout: DropoutConfig::new(config.dropout).init(),
            config: config.clone(),
            output_pack: PackCache::default(),
            sinusoids: SinusoidTable::default(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    fn table<'a, L: Module<B>>(&'a self, stack: &'a Stack<B, L>) -> &'a Embedding<B> {
        match (&stack.embed_tokens, &self.shared) {
            (Some(own), _) => own,
            (None, Some(shared)) => shared,
            // `new` gives every stack its own table or the model a shared one.
            (None, None) => unreachable!("a stack without a token table"),
        }
    }

    /// Scaled token embeddings plus positions `start..start + len`, with dropout (§3.4–3.5):
    /// `ids` `[batch, len]` → `[batch, len, d_model]`. Positions where `pad` `[batch, len]` is true
    /// read their table row but send it no gradient (see [`no_gradient_where`]).
    fn embed<L: Module<B>>(
        &self,
        stack: &Stack<B, L>,
        ids: Tensor<B, 2, Int>,
        at: At<'_>,
        pad: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        let [batch, len] = ids.dims();
        let d = self.config.d_model;
        let tokens = self.tokens(stack, ids); // [batch, len, d_model]
        let tokens = match pad {
            Some(pad) => no_gradient_where(tokens, pad.reshape([batch, len, 1])),
            None => tokens,
        };
        let tokens = if self.config.scale_embeddings {
            tokens.mul_scalar((d as f64).sqrt())
        } else {
            tokens
        };
        let pos = positions(
            self.config.positions,
            stack.embed_positions.as_ref(),
            (&self.sinusoids, self.config.max_positions),
            [batch, len, d],
            at,
            &tokens.device(),
        );
        kernels::dropout(tokens + pos, self.dropout.prob)
    }

    /// The encoder output `[batch, src_len, d_model]` and the padding bias `[batch, src_len]`.
    pub fn encode(&self, src: &SourceBatch<B>) -> (Tensor<B, 3>, Tensor<B, 2>) {
        let pad_bias = padding_bias(src.pad_mask());
        let mut x = self.embed(
            &self.encoder,
            src.ids.clone(),
            At::From(0),
            Some(src.pad_mask()),
        );
        for layer in &self.encoder.layers {
            x = layer.forward(x, &pad_bias);
        }
        if let Some(norm) = &self.encoder.layer_norm {
            x = norm.forward(x);
        }
        (x, pad_bias)
    }

    /// Per decoder layer, the cross-attention keys and values of the encoder output `encoded`
    /// `[batch, src_len, d_model]`.
    fn step_memories(&self, encoded: Tensor<B, 3>) -> Vec<StepMemory<B>> {
        self.decoder
            .layers
            .iter()
            .map(|layer| layer.step_memory(encoded.clone()))
            .collect()
    }

    /// Per decoder layer, the cross-attention keys and values `[batch, src_len, d_model]` of
    /// `src`, encoded group by group (`groups` partition the rows).
    fn grouped_memory(&self, src: &SourceBatch<B>, groups: &[Vec<usize>]) -> Vec<StepMemory<B>> {
        let [batch, src_len] = src.ids.dims();
        let layers = self.decoder.layers.len();
        let mut keys: Vec<Vec<Tensor<B, 3>>> = vec![Vec::with_capacity(groups.len()); layers];
        let mut values = keys.clone();
        // Zeros after the group's longest source, up to the batch's.
        let padded = |t| zero_padded(t, src_len);
        for group in groups {
            let (encoded, _) = self.encode(&src.rows(group));
            for (l, StepMemory { keys: k, values: v }) in
                self.step_memories(encoded).into_iter().enumerate()
            {
                keys[l].push(padded(k));
                values[l].push(padded(v));
            }
        }
        // Row `i` of the batch is row `at[i]` of the groups laid end to end.
        let order: Vec<usize> = groups.concat();
        let mut at = vec![0i64; batch];
        for (position, &row) in order.iter().enumerate() {
            at[row] = position as i64;
        }
        let in_order = order.iter().enumerate().all(|(p, &row)| p == row);
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(at, [batch]), &src.ids.device());
        let join = |parts: Vec<Tensor<B, 3>>| {
            let joined = Tensor::cat(parts, 0);
            let joined = if in_order {
                joined
            } else {
                joined.select(0, index.clone())
            };
            kernels::contiguous(joined)
        };
        keys.into_iter()
            .zip(values)
            .map(|(k, v)| StepMemory {
                keys: join(k),
                values: join(v),
            })
            .collect()
    }

    /// Vocabulary logits: `[rows, d_model] → [rows, tgt_vocab]`. `frozen_row`: a row of the tied
    /// table that takes no gradient through the projection either (Marian's `<pad>` start).
    fn project(&self, y: Tensor<B, 2>, frozen_row: Option<u32>) -> Tensor<B, 2> {
        let device = y.device();
        let pinned_bias = self.final_logits_bias.as_ref().map(|b| b.val());
        if let Some(logits) = self.output_pack.project_pinned(
            y.clone(),
            pinned_bias.as_ref(),
            kernels::Epilogue::Identity,
        ) {
            return logits;
        }
        let bias = match &self.final_logits_bias {
            Some(b) => b.val(),
            None => Tensor::empty([0], &device),
        };
        match &self.lm_head {
            Some(head) => dense(y, head.weight.val(), bias),
            None => {
                let mut table = self.table(&self.decoder).weight.val(); // [vocab, d_model]
                if let Some(row) = frozen_row {
                    let [vocab, _] = table.dims();
                    let frozen = Tensor::<B, 1, Int>::arange(0..vocab as i64, &device)
                        .equal_elem(i64::from(row))
                        .reshape([vocab, 1]);
                    table = no_gradient_where(table, frozen);
                }
                dense(y, table.transpose(), bias)
            }
        }
    }

    /// [`Self::project`] for one search step, with the weight packed once per model where the CPU
    /// runs that kernel.
    fn project_step(&self, y: Tensor<B, 2>) -> Tensor<B, 2> {
        let bias = self.final_logits_bias.as_ref().map(|b| b.val());
        let packed = match &self.lm_head {
            Some(head) => {
                self.output_pack
                    .project(&y, &head.weight.val(), WeightLayout::InOut, bias.as_ref())
            }
            None => self.output_pack.project(
                &y,
                &self.table(&self.decoder).weight.val(),
                WeightLayout::OutIn,
                bias.as_ref(),
            ),
        };
        packed.unwrap_or_else(|| self.project(y, None))
    }

    /// The reported attention: the alignment layer's cross-attention averaged over heads,
    /// `[batch, heads, tq, src_len] → [batch, tq, src_len]`.
    fn alignment(weights: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, _, tq, src_len] = weights.dims();
        weights.mean_dim(1).reshape([batch, tq, src_len])
    }

    /// Teacher-forced forward pass. `tgt_in`: `[batch, tgt_len]`.
    /// Returns logits `[batch, tgt_len, tgt_vocab]` and attention `[batch, tgt_len, src_len]`.
    pub fn forward(
        &self,
        src: &SourceBatch<B>,
        tgt_in: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        let (encoded, pad_bias) = self.encode(src);
        let [batch, len] = tgt_in.dims();
        let pad = tgt_in.clone().equal_elem(i64::from(src.specials.pad));
        let mut y = self.embed(&self.decoder, tgt_in, At::From(0), Some(pad));
        let mut attention = None;
        let report = self.config.alignment_layer_index();
        for (i, layer) in self.decoder.layers.iter().enumerate() {
            let memory = layer.cross_memory(encoded.clone());
            let (out, weights) = layer.forward(y, &memory, &pad_bias);
            y = out;
            if i == report {
                attention = Some(Self::alignment(weights));
            }
        }
        if let Some(norm) = &self.decoder.layer_norm {
            y = norm.forward(y);
        }
        let d = self.config.d_model;
        // Marian's layout starts decoding from `<pad>`: its row stays as loaded (zero), as Marian
        // and CTranslate2, which start from a zero vector, assume (see `no_gradient_where`).
        let marian_start = (src.specials.bos == src.specials.pad).then_some(src.specials.pad);
        let logits = self.project(y.reshape([batch * len, d]), marian_start); // [batch·len, vocab]
        let vocab = logits.dims()[1];
        (logits.reshape([batch, len, vocab]), attention)
    }
}

impl<B: Backend> Scorer<B> for Transformer<B> {
    type State = TransformerState<B>;

    /// Encodes each group of similar source length ([`SourceBatch::length_groups`]) padded only
    /// to its own longest, and keeps the cross-attention keys and values of the whole batch
    /// (zeros past each source's end, where the padding bias is −∞ and the step attention reads
    /// nothing), so a server batch mixing short and long sentences decodes in one piece without
    /// encoding its padding.
    fn start(&self, src: &SourceBatch<B>) -> Self::State {
        let groups = src.length_groups();
        let batch = src.lengths.len();
        let (memory, pad_bias) = if groups.len() < 2 {
            let (encoded, pad_bias) = self.encode(src);
            (self.step_memories(encoded), pad_bias)
        } else {
            (
                self.grouped_memory(src, &groups),
                padding_bias(src.pad_mask()),
            )
        };
        TransformerState {
            memory,
            pad_bias,
            sentences: (0..batch as u32).collect(),
            ancestry: Vec::new(),
            len: 0,
            starts: vec![0; batch],
            caches: vec![KvCache::default(); self.decoder.layers.len()],
        }
    }

    /// `prev` `[n]` → logits `[n, tgt_vocab]` for position `t` = the number of steps so far,
    /// equal to position `t` of [`Transformer::forward`].
    fn step(&self, prev: Tensor<B, 1, Int>, mut state: Self::State) -> Step<B, Self::State> {
        let [n] = prev.dims();
        // Compaction may drop the positions before every start, shortening `len`.
        state.compact_caches(n);
        let t = state.len;
        // Hypothesis `i` writes position `t` in cache row `i`.
        let mut ancestry = Vec::with_capacity(n * (t + 1));
        for i in 0..n {
            ancestry.extend_from_slice(&state.ancestry[i * t..(i + 1) * t]);
            ancestry.push(i as u32);
        }
        // Each hypothesis' own position: `t` less its start.
        let first = state.starts.first().copied().unwrap_or(0);
        let same_start = state.starts.iter().all(|&s| s == first);
        let rows = StepRows {
            ancestry: &ancestry,
            starts: (!same_start || first > 0).then_some(state.starts.as_slice()),
            len: t + 1,
            sentences: &state.sentences,
            pad_bias: &state.pad_bias,
        };
        let own: Vec<usize>;
        let at = if same_start {
            At::From(t - first as usize)
        } else {
            own = state.starts.iter().map(|&s| t - s as usize).collect();
            At::Rows(&own)
        };
        let mut y = self.embed(&self.decoder, prev.reshape([n, 1]), at, None); // [n, 1, d_model]
        let mut attention = None;
        let report = self.config.alignment_layer_index();
        for (i, (layer, (cache, memory))) in self
            .decoder
            .layers
            .iter()
            .zip(state.caches.iter_mut().zip(&state.memory))
            .enumerate()
        {
            let (out, weights) = layer.step(y, cache, memory, rows);
            y = out;
            if i == report {
                let src_len = weights.dims()[3];
                attention = Some(Self::alignment(weights).reshape([n, src_len]));
            }
        }
        if let Some(norm) = &self.decoder.layer_norm {
            y = norm.forward(y);
        }
        state.ancestry = ancestry;
        state.len = t + 1;
        let d = self.config.d_model;
        Step {
            logits: self.project_step(y.reshape([n, d])),
            state,
            attention,
        }
    }

    /// Copies no tensor: the kept hypotheses carry their sentence and ancestry along.
    fn select(&self, mut state: Self::State, indices: Tensor<B, 1, Int>) -> Self::State {
        let len = state.len;
        let kept = row_indices(indices);
        // The search only names live rows; an index past them would be a search bug.
        let sentences = kept.iter().map(|&i| state.sentences[i]).collect();
        let ancestry = kept
            .iter()
            .flat_map(|&i| &state.ancestry[i * len..(i + 1) * len])
            .copied()
            .collect();
        state.starts = kept.iter().map(|&i| state.starts[i]).collect();
        state.sentences = sentences;
        state.ancestry = ancestry;
        state
    }

    /// Target positions the model has (`model.max_positions`).
    fn max_len(&self) -> usize {
        self.config.max_positions
    }

    fn groups_sources(&self) -> bool {
        true
    }

    fn admits(&self) -> bool {
        true
    }

    /// The new sentences' source keys and values go to memory rows no live hypothesis reads
    /// (finished sentences'), written in place; only when there are too few such rows, or a new
    /// source is longer than the rows, is the memory rebuilt: the rows live hypotheses read, then
    /// the new ones, all padded to the longest source. Their hypotheses start at position `len`
    /// of the caches: the step attention reads nothing before it, and their position signal
    /// counts from there.
    fn admit(&self, state: &mut Self::State, src: &SourceBatch<B>) -> bool {
        let fresh = self.start(src);
        let added = src.lengths.len();
        state
            .starts
            .extend(std::iter::repeat_n(state.len as u32, added));
        // Positions before a new hypothesis' start are never read; cache row 0 exists whenever
        // the caches do, so rebuilding them (`compact_caches`) copies from a row that is there.
        state
            .ancestry
            .extend(std::iter::repeat_n(0, added * state.len));
        if state.sentences.is_empty() {
            // Nothing live: the new sentences are the whole memory.
            state.memory = fresh.memory;
            state.pad_bias = fresh.pad_bias;
            state.sentences = (0..added as u32).collect();
            return true;
        }
        let [rows, capacity] = state.pad_bias.dims();
        let new_len = fresh.pad_bias.dims()[1];
        let mut read = vec![false; rows];
        for &s in &state.sentences {
            read[s as usize] = true;
        }
        let free: Vec<usize> = (0..rows).filter(|&r| !read[r]).take(added).collect();
        if free.len() == added && new_len <= capacity {
            for (memory, new) in state.memory.iter_mut().zip(fresh.memory) {
                let keys = std::mem::replace(&mut memory.keys, new.keys.clone());
                memory.keys = kernels::write_rows(keys, &free, new.keys);
                let values = std::mem::replace(&mut memory.values, new.values.clone());
                memory.values = kernels::write_rows(values, &free, new.values);
            }
            let bias = padded_bias(fresh.pad_bias, capacity).reshape([added, capacity, 1]);
            // Taken out of the state (no second handle), so the rows are written in place.
            let old =
                std::mem::replace(&mut state.pad_bias, bias.clone().reshape([added, capacity]));
            state.pad_bias = kernels::write_rows(old.reshape([rows, capacity, 1]), &free, bias)
                .reshape([rows, capacity]);
            state.sentences.extend(free.iter().map(|&r| r as u32));
            return true;
        }
        let device = src.ids.device();
        let mut used = state.sentences.clone();
        used.sort_unstable();
        used.dedup();
        let src_len = capacity.max(new_len);
        let all_used = used.len() == rows;
        let index = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                used.iter().map(|&r| i64::from(r)).collect::<Vec<_>>(),
                [used.len()],
            ),
            &device,
        );
        let kept_rows = |t: Tensor<B, 3>| {
            let t = if all_used {
                t
            } else {
                t.select(0, index.clone())
            };
            zero_padded(t, src_len)
        };
        let joined = |old: Tensor<B, 3>, new: Tensor<B, 3>| {
            kernels::contiguous(Tensor::cat(
                vec![kept_rows(old), zero_padded(new, src_len)],
                0,
            ))
        };
        let old_memory = std::mem::take(&mut state.memory);
        state.memory = old_memory
            .into_iter()
            .zip(fresh.memory)
            .map(|(old, new)| StepMemory {
                keys: joined(old.keys, new.keys),
                values: joined(old.values, new.values),
            })
            .collect();
        let old_bias = if all_used {
            state.pad_bias.clone()
        } else {
            state.pad_bias.clone().select(0, index)
        };
        state.pad_bias = Tensor::cat(
            vec![
                padded_bias(old_bias, src_len),
                padded_bias(fresh.pad_bias, src_len),
            ],
            0,
        );
        // Old sentence rows renumbered in the kept memory, new ones after them.
        let mut renumber = vec![0u32; rows];
        for (new, &old) in used.iter().enumerate() {
            renumber[old as usize] = new as u32;
        }
        for s in &mut state.sentences {
            *s = renumber[*s as usize];
        }
        let first_new = used.len() as u32;
        state.sentences.extend(first_new..first_new + added as u32);
        true
    }
}
