//! Attention over the encoder states.
//!
//! All scorers mask padding with −∞ before the softmax, so padded positions get a weight of exactly 0.

use crate::kernels::{StepLinear, linear};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The attention mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionKind {
    /// No attention: a fixed context vector, the encoder's summary, conditions every step
    /// (Cho et al. 2014, §2.2; Sutskever et al. 2014 pass it only as the initial state).
    None,
    /// Additive: `e_ij = vᵀ tanh(W s_{i−1} + U h_j)` (Bahdanau et al. 2015, §A.1.2).
    #[default]
    Bahdanau,
    /// Multiplicative: `score(h_t, h̄_s) = h_tᵀ h̄_s` (Luong et al. 2015, §3.1, "dot").
    LuongDot,
    /// Multiplicative: `score(h_t, h̄_s) = h_tᵀ W_a h̄_s` (Luong et al. 2015, §3.1, "general").
    LuongGeneral,
}

impl AttentionKind {
    /// Luong-style decoders attend *after* the recurrent step, with the new state as query.
    pub fn is_luong(self) -> bool {
        matches!(self, AttentionKind::LuongDot | AttentionKind::LuongGeneral)
    }
}

/// Encoder states prepared for attention: the values, and keys projected once per sentence.
#[derive(Debug, Clone)]
pub struct AttentionMemory<B: Backend> {
    /// Values `[batch, src_len, enc_out]`.
    pub values: Tensor<B, 3>,
    /// Keys: `W_a h̄_s` (Luong general) or `h̄_s` (dot) as `[batch, src_len, key]`; Bahdanau's `U h_j`
    /// time-major, `[src_len, batch, attn]`: each source position is one contiguous `[batch·attn]`
    /// block, which [`crate::kernels::additive_energy`] processes in parallel and the tensor form
    /// adds the query to as a shared-row broadcast.
    pub keys: Tensor<B, 3>,
    /// Whether `keys` is time-major (Bahdanau).
    pub time_major: bool,
    /// Additive mask `[batch, src_len]`: 0 on real tokens, −∞ on padding.
    pub bias: Tensor<B, 2>,
    /// Bahdanau's `W` for this pass over the target, applied to the query at every step.
    pub query: Option<StepLinear<B>>,
    /// In a search with Bahdanau's attention ([`AttentionMemory::for_search`]): the memory row
    /// each hypothesis reads, `[n]`. The memory then keeps one row per sentence, shared by its
    /// hypotheses, and selecting hypotheses only renumbers them here.
    pub rows: Option<Vec<u32>>,
    /// In a search with Bahdanau's attention, where the keys allow it: `e^{2k}` of the keys, so
    /// that a step's energies need no `tanh` per key ([`crate::kernels::exp_keys`]).
    pub exp_keys: Option<Tensor<B, 3>>,
}

impl<B: Backend> AttentionMemory<B> {
    /// Prepares the memory for a search: with Bahdanau's attention, hypotheses read their
    /// sentence's memory row through [`AttentionMemory::rows`] instead of copies of it (a step
    /// reads each source once per sentence, not once per hypothesis, and a beam's reordering
    /// copies nothing), where the CPU kernel runs ([`crate::kernels::shares_memory`]). Other
    /// mechanisms and backends keep one memory row per hypothesis.
    pub fn for_search(self) -> Self {
        if !self.time_major || self.rows.is_some() || !crate::kernels::shares_memory::<B>() {
            return self;
        }
        let batch = self.values.dims()[0];
        let keys = crate::kernels::contiguous(self.keys);
        AttentionMemory {
            // Read at every step: made contiguous once here rather than by every step.
            values: crate::kernels::contiguous(self.values),
            exp_keys: crate::kernels::exp_keys(&keys),
            keys,
            bias: crate::kernels::contiguous(self.bias),
            rows: Some((0..batch as u32).collect()),
            ..self
        }
    }

    /// Selects batch rows (for beam search). `indices`: `[n]`.
    pub fn select(self, indices: Tensor<B, 1, Int>) -> Self {
        if let Some(rows) = &self.rows {
            let picked: Vec<u32> = indices
                .into_data()
                .iter::<i64>()
                // The search selects rows it holds: each index is below `rows.len()`.
                .map(|i| rows[i as usize])
                .collect();
            return AttentionMemory {
                rows: Some(picked),
                ..self
            };
        }
        AttentionMemory {
            values: self.values.select(0, indices.clone()),
            keys: self
                .keys
                .select(usize::from(self.time_major), indices.clone()),
            time_major: self.time_major,
            bias: self.bias.select(0, indices),
            query: self.query,
            rows: None,
            exp_keys: None,
        }
    }
}

/// Attention parameters. Names follow the papers: `query` (W), `key` (U or W_a), `energy` (v).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Bahdanau's `W`: `[query, attn]`, no bias.
    pub query: Option<Linear<B>>,
    /// Bahdanau's `U` `[enc_out, attn]` (with bias) or Luong's `W_a` `[enc_out, query]` (no bias).
    pub key: Option<Linear<B>>,
    /// Bahdanau's `v`: `[attn, 1]`, no bias.
    pub energy: Option<Linear<B>>,
    #[module(skip)]
    kind: AttentionKind,
}

impl<B: Backend> Attention<B> {
    /// Builds an attention module. `query_size` is the decoder hidden size, `value_size` the encoder
    /// output size, `attn_size` Bahdanau's hidden layer size. Luong dot needs `query_size == value_size`.
    pub fn new(
        kind: AttentionKind,
        query_size: usize,
        value_size: usize,
        attn_size: usize,
        device: &B::Device,
    ) -> Self {
        let linear = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        match kind {
            AttentionKind::Bahdanau => Attention {
                query: Some(linear(query_size, attn_size, false)),
                key: Some(linear(value_size, attn_size, true)),
                energy: Some(linear(attn_size, 1, false)),
                kind,
            },
            AttentionKind::LuongGeneral => Attention {
                query: None,
                key: Some(linear(value_size, query_size, false)),
                energy: None,
                kind,
            },
            AttentionKind::LuongDot | AttentionKind::None => Attention {
                query: None,
                key: None,
                energy: None,
                kind,
            },
        }
    }

    /// Prepares encoder states (projects keys once, not once per decoder step).
    /// `states`: `[batch, src_len, enc_out]`; `pad_mask`: `[batch, src_len]`, true on padding.
    pub fn memory(&self, states: Tensor<B, 3>, pad_mask: Tensor<B, 2, Bool>) -> AttentionMemory<B> {
        let [batch, len, _] = states.dims();
        let time_major = self.kind == AttentionKind::Bahdanau;
        let keys = match &self.key {
            Some(key) if time_major => linear(key, states.clone().swap_dims(0, 1)),
            Some(key) => linear(key, states.clone()),
            None => states.clone(),
        };
        let bias = Tensor::<B, 2>::zeros([batch, len], &states.device())
            .mask_fill(pad_mask, f32::NEG_INFINITY);
        AttentionMemory {
            values: states,
            keys,
            time_major,
            bias,
            query: self.query.as_ref().map(StepLinear::new),
            rows: None,
            exp_keys: None,
        }
    }

    /// Attends with one query per row. `query`: `[batch, query]`.
    /// Returns the context `[batch, enc_out]` and the weights `[batch, src_len]`.
    pub fn forward(
        &self,
        query: Tensor<B, 2>,
        memory: &AttentionMemory<B>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        if let (Some(w), Some(v), Some(rows)) = (&memory.query, &self.energy, &memory.rows) {
            // A search step over memory shared by each sentence's hypotheses.
            let attn = memory.keys.dims()[2];
            let v = v.weight.val().reshape([attn]);
            let shared = crate::kernels::AdditiveMemory {
                keys: &memory.keys,
                v: &v,
                bias: &memory.bias,
                values: &memory.values,
                exp_keys: memory.exp_keys.as_ref(),
            };
            return crate::kernels::additive_step(w.forward(query), shared, rows);
        }
        self.plain(query, memory)
    }

    /// Attention with one memory row per query row.
    fn plain(
        &self,
        query: Tensor<B, 2>,
        memory: &AttentionMemory<B>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [batch, len, _] = memory.values.dims();
        let scores: Tensor<B, 2> = match (&memory.query, &self.energy) {
            (Some(w), Some(v)) => {
                // Bahdanau: vᵀ tanh(W s + U h_j), time-major, one fused operation on the CPU.
                let [_, _, attn] = memory.keys.dims();
                let q = w.forward(query); // [batch, attn]
                let v = v.weight.val().reshape([attn]);
                crate::kernels::additive_energy(memory.keys.clone(), q, v) // [src_len, batch]
                    .swap_dims(0, 1) // [batch, src_len]
            }
            _ => {
                // Luong: q · k_j as a batched matmul
                let q = query.unsqueeze_dim::<3>(1); // [batch, 1, query]
                q.matmul(memory.keys.clone().swap_dims(1, 2)) // [batch, 1, src_len]
                    .reshape([batch, len])
            }
        };
        // Masked softmax and weighted sum, one fused operation on the CPU.
        crate::kernels::attend(scores, memory.bias.clone(), memory.values.clone())
    }

    /// The mechanism.
    pub fn kind(&self) -> AttentionKind {
        self.kind
    }
}
