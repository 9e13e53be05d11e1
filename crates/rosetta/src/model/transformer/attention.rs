//! Multi-head scaled dot-product attention (Vaswani et al. 2017, §3.2.1–3.2.2), and the key/value
//! cache of incremental decoding.
//!
//! Masks are additive biases broadcast over the scores: 0 where a key may be read, −∞ where it may
//! not (padding, the future). `exp(−∞) = 0`, so masked keys receive exactly zero weight; every row
//! keeps at least one key (a source has its `</s>`, a target position itself).

use super::config::Activation;
use crate::error::Result;
use crate::kernels;
use crate::kernels::{
    AttentionMask, Epilogue, KvRows, PackCache, WeightLayout, linear, step_attention,
    write_position,
};
use crate::model::int8::Int8Pinner;
use crate::model::lora::{FinetuneConfig, Lora, adapted};
use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;

/// Additive key mask `[batch, src_len]` from a padding mask `[batch, src_len]` (true on padding).
pub fn padding_bias<B: Backend>(pad: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
    let [batch, len] = pad.dims();
    Tensor::<B, 2>::zeros([batch, len], &pad.device()).mask_fill(pad, f32::NEG_INFINITY)
}

/// A dense layer initialised as in Vaswani et al.'s reference code (tensor2tensor) and fairseq:
/// Xavier-uniform weight, zero bias.
pub fn xavier_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(Initializer::XavierUniform { gain: 1.0 })
        .init(device);
    if let Some(b) = layer.bias.take() {
        // A fresh parameter: `Param::map` would take the gradient flag of `zeros_like()`'s result,
        // which has none, and every bias of every Transformer stayed frozen at zero.
        layer.bias = Some(Param::from_tensor(b.val().zeros_like()));
    }
    layer
}

/// Query, key, value and output projections of `heads` heads (names as in Hugging Face's Marian).
#[derive(Module, Debug)]
pub struct MultiHeadAttention<B: Backend> {
    /// `[d_model, d_model]`.
    pub q_proj: Linear<B>,
    /// `[d_model, d_model]`.
    pub k_proj: Linear<B>,
    /// `[d_model, d_model]`.
    pub v_proj: Linear<B>,
    /// `[d_model, d_model]`.
    pub out_proj: Linear<B>,
    /// LoRA update of `q_proj` (`[finetune] method = "lora"`).
    pub q_lora: Option<Lora<B>>,
    /// LoRA update of `k_proj`.
    pub k_lora: Option<Lora<B>>,
    /// LoRA update of `v_proj`.
    pub v_lora: Option<Lora<B>>,
    /// LoRA update of `out_proj`.
    pub out_lora: Option<Lora<B>>,
    dropout: Dropout,
    heads: usize,
    /// The four projections packed for search steps (not parameters).
    #[module(skip)]
    packs: [PackCache; 4],
}

/// `x W + b` for a search step `[n, d_in] → [n, d_out]`, with the weight packed once per model where
/// the CPU runs that kernel.
pub fn packed_linear<B: Backend>(
    layer: &Linear<B>,
    pack: &PackCache,
    x: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let bias = layer.bias.as_ref().map(|b| b.val());
    pack.project(&x, &layer.weight.val(), WeightLayout::InOut, bias.as_ref())
        .unwrap_or_else(|| linear(layer, x))
}

/// `activation(x W + b)` for a search step, the nonlinearity applied in the packed projection's
/// epilogue where it has one (relu, swish).
pub fn packed_linear_activated<B: Backend>(
    layer: &Linear<B>,
    pack: &PackCache,
    x: Tensor<B, 2>,
    activation: Activation,
) -> Tensor<B, 2> {
    let epilogue = match activation {
        Activation::Relu => Epilogue::Relu,
        Activation::Swish => Epilogue::Swish,
        Activation::Gelu => return activation.apply(packed_linear(layer, pack, x)),
    };
    let bias = layer.bias.as_ref().map(|b| b.val());
    pack.project_then(
        &x,
        &layer.weight.val(),
        WeightLayout::InOut,
        bias.as_ref(),
        epilogue,
    )
    .unwrap_or_else(|| activation.apply(linear(layer, x)))
}

/// `act(x W + b)` plus the LoRA update, over `x` `[.., d_in]`: with the pinned 8-bit weight where
/// the model was quantized for inference ([`crate::model::int8`]; relu and swish in the
/// projection's epilogue), else the dense layer.
pub fn projected<B: Backend, const D: usize>(
    layer: &Linear<B>,
    lora: Option<&Lora<B>>,
    pack: &PackCache,
    x: Tensor<B, D>,
    activation: Option<Activation>,
) -> Tensor<B, D> {
    if lora.is_none() {
        let (epilogue, after) = match activation {
            None => (Epilogue::Identity, None),
            Some(Activation::Relu) => (Epilogue::Relu, None),
            Some(Activation::Swish) => (Epilogue::Swish, None),
            Some(Activation::Gelu) => (Epilogue::Identity, Some(Activation::Gelu)),
        };
        let bias = layer.bias.as_ref().map(|b| b.val());
        if let Some(y) = pack.project_pinned(x.clone(), bias.as_ref(), epilogue) {
            return match after {
                Some(a) => a.apply(y),
                None => y,
            };
        }
    }
    let y = adapted(layer, lora, x);
    match activation {
        Some(a) => a.apply(y),
        None => y,
    }
}

impl<B: Backend> MultiHeadAttention<B> {
    /// A fresh layer.
    pub fn new(d_model: usize, heads: usize, dropout: f64, device: &B::Device) -> Self {
        MultiHeadAttention {
            q_proj: xavier_linear(d_model, d_model, true, device),
            k_proj: xavier_linear(d_model, d_model, true, device),
            v_proj: xavier_linear(d_model, d_model, true, device),
            out_proj: xavier_linear(d_model, d_model, true, device),
            q_lora: None,
            k_lora: None,
            v_lora: None,
            out_lora: None,
            dropout: DropoutConfig::new(dropout).init(),
            heads,
            packs: Default::default(),
        }
    }

    /// Adds LoRA updates to the projections `config` targets.
    pub fn add_lora(&mut self, config: &FinetuneConfig, device: &B::Device) {
        let d = self.q_proj.weight.dims()[0];
        let lora = |name: &str| {
            config
                .targets(name)
                .then(|| Lora::new(d, d, config, device))
        };
        self.q_lora = lora("q_proj");
        self.k_lora = lora("k_proj");
        self.v_lora = lora("v_proj");
        self.out_lora = lora("out_proj");
    }

    /// Folds the LoRA updates into the projections' weights.
    pub fn merge_lora(mut self) -> Self {
        let merge = |layer: Linear<B>, lora: Option<Lora<B>>| match lora {
            Some(l) => l.merge_into(layer),
            None => layer,
        };
        self.q_proj = merge(self.q_proj, self.q_lora.take());
        self.k_proj = merge(self.k_proj, self.k_lora.take());
        self.v_proj = merge(self.v_proj, self.v_lora.take());
        self.out_proj = merge(self.out_proj, self.out_lora.take());
        self
    }

    /// Queries scaled by `1/√head_dim` (§3.2.1), `[batch, tq, d_model]`.
    pub fn queries(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let head_dim = x.dims()[2] / self.heads;
        projected(&self.q_proj, self.q_lora.as_ref(), &self.packs[0], x, None)
            .mul_scalar((head_dim as f64).powf(-0.5))
    }

    /// Keys and values of `x` `[batch, tk, d_model]`, each `[batch, tk, d_model]` (heads are
    /// blocks of `head_dim` columns).
    pub fn keys_values(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        (
            projected(
                &self.k_proj,
                self.k_lora.as_ref(),
                &self.packs[1],
                x.clone(),
                None,
            ),
            projected(&self.v_proj, self.v_lora.as_ref(), &self.packs[2], x, None),
        )
    }

    /// Attends: `q` `[batch, tq, d_model]`, `k`/`v` `[batch, tk, d_model]`, each query reading the
    /// keys `mask` allows. Returns the output `[batch, tq, d_model]` and the weights
    /// `[batch, heads, tq, tk]` (before dropout).
    pub fn attend(
        &self,
        q: Tensor<B, 3>,
        k: Tensor<B, 3>,
        v: Tensor<B, 3>,
        mask: AttentionMask<B>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let (context, weights) =
            kernels::multi_head_attention(q, k, v, self.heads, mask, self.dropout.prob);
        (
            projected(
                &self.out_proj,
                self.out_lora.as_ref(),
                &self.packs[3],
                context,
                None,
            ),
            weights,
        )
    }

    /// Self- or cross-attention over a whole sequence: `x` `[batch, tq, d]` reads `memory`
    /// `[batch, tk, d]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        memory: Tensor<B, 3>,
        mask: AttentionMask<B>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let q = self.queries(x);
        let (k, v) = self.keys_values(memory);
        self.attend(q, k, v, mask)
    }
}

impl<B: Backend> MultiHeadAttention<B> {
    /// Self-attention over a whole padded sequence `x` `[batch, len, d_model]` with the padding bias
    /// `pad_bias` `[batch, len]`; only the output, `[batch, len, d_model]`.
    ///
    /// At inference on the CPU every query position is a row of the search step's fused kernel
    /// ([`step_attention`]) reading its own sentence's keys: no head split or merge (strided
    /// copies), no `[batch, heads, len, len]` scores through four tensor operations. That was 4.7 %
    /// of a batch-32 beam-5 decode (the encoder's attention). Training (autodiff) and other
    /// backends take [`Self::forward`].
    pub fn self_attend(&self, x: Tensor<B, 3>, pad_bias: &Tensor<B, 2>) -> Tensor<B, 3> {
        if std::any::TypeId::of::<B>() != std::any::TypeId::of::<burn::backend::Flex>() {
            return self.forward(x.clone(), x, AttentionMask::Keys(pad_bias)).0;
        }
        let [batch, len, d] = x.dims();
        let project = |i: usize, layer: &Linear<B>, lora: Option<&Lora<B>>, x| {
            kernels::contiguous(projected(layer, lora, &self.packs[i], x, None))
        };
        let q = project(0, &self.q_proj, self.q_lora.as_ref(), x.clone());
        let k = project(1, &self.k_proj, self.k_lora.as_ref(), x.clone());
        let v = project(2, &self.v_proj, self.v_lora.as_ref(), x);
        let sentences: Vec<u32> = (0..batch * len).map(|i| (i / len.max(1)) as u32).collect();
        let (context, _) = step_attention(
            q.reshape([batch * len, d]),
            (&k, &v),
            self.heads,
            len,
            KvRows::PerRow(&sentences),
            Some(pad_bias),
        );
        projected(
            &self.out_proj,
            self.out_lora.as_ref(),
            &self.packs[3],
            context.reshape([batch, len, d]),
            None,
        )
    }

    /// Keeps the four projections in 8-bit integers only, named under `prefix` (see
    /// [`Int8Pinner`]); LoRA updates must be merged first.
    pub fn into_int8(mut self, pinner: &Int8Pinner, prefix: &str) -> Result<Self> {
        for (name, layer, pack) in [
            ("q_proj", &mut self.q_proj, &self.packs[0]),
            ("k_proj", &mut self.k_proj, &self.packs[1]),
            ("v_proj", &mut self.v_proj, &self.packs[2]),
            ("out_proj", &mut self.out_proj, &self.packs[3]),
        ] {
            pinner.pin_linear(&format!("{prefix}.{name}"), layer, pack)?;
        }
        Ok(self)
    }

    /// Keys or values of the encoder output `x` `[batch, src_len, d_model]` for search steps,
    /// laid out in order and not split into heads: `[batch, src_len, d_model]`.
    pub fn step_memory(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let project = |layer, lora: Option<&Lora<B>>, pack, x| {
            kernels::contiguous(projected(layer, lora, pack, x, None))
        };
        (
            project(
                &self.k_proj,
                self.k_lora.as_ref(),
                &self.packs[1],
                x.clone(),
            ),
            project(&self.v_proj, self.v_lora.as_ref(), &self.packs[2], x),
        )
    }

    /// Self-attention of a search step: `x` `[n, 1, d_model]` is written to `cache` at position
    /// `len − 1` and reads positions `starts[i]..len` (`0..len` without `starts`), position `p` of
    /// row `i` from the cache row `ancestry[i · len + p]` (`[n, len]`). Returns `[n, 1, d_model]`.
    pub fn step_self(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        (ancestry, starts): (&[u32], Option<&[u32]>),
        len: usize,
    ) -> Tensor<B, 3> {
        let [n, _, d] = x.dims();
        let x = x.reshape([n, d]);
        let q = packed_linear(&self.q_proj, &self.packs[0], x.clone());
        let k = packed_linear(&self.k_proj, &self.packs[1], x.clone());
        let v = packed_linear(&self.v_proj, &self.packs[2], x);
        cache.push(k, v, len - 1);
        let (keys, values) = cache.buffers();
        let (context, _) = step_attention(
            q,
            (keys, values),
            self.heads,
            len,
            KvRows::PerPosition { ancestry, starts },
            None,
        );
        packed_linear(&self.out_proj, &self.packs[3], context).reshape([n, 1, d])
    }

    /// Cross-attention of a search step: `x` `[n, 1, d_model]` reads the source keys/values
    /// `[batch, src_len, d_model]` of its sentence, `sentences[i]` for row `i`, with the padding
    /// bias `pad_bias` `[batch, src_len]`. Returns `[n, 1, d_model]` and the weights
    /// `[n, heads, 1, src_len]`.
    pub fn step_cross(
        &self,
        x: Tensor<B, 3>,
        (keys, values): (&Tensor<B, 3>, &Tensor<B, 3>),
        sentences: &[u32],
        pad_bias: &Tensor<B, 2>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let [n, _, d] = x.dims();
        let src_len = keys.dims()[1];
        let q = packed_linear(&self.q_proj, &self.packs[0], x.reshape([n, d]));
        let (context, weights) = step_attention(
            q,
            (keys, values),
            self.heads,
            src_len,
            KvRows::PerRow(sentences),
            Some(pad_bias),
        );
        (
            packed_linear(&self.out_proj, &self.packs[3], context).reshape([n, 1, d]),
            weights.reshape([n, self.heads, 1, src_len]),
        )
    }
}

/// Keys and values of the target positions decoded so far, for one decoder layer:
/// `[width, capacity, d_model]` buffers in which position `p` of live hypothesis `i` is row
/// `ancestry[i][p]` (see [`KvRows::PerPosition`]).
///
/// Each step writes its `n` rows at the new position in place ([`write_position`]): appending costs
/// the step, not the whole cache, unlike a `cat` per step (quadratic, what made candle's T5 spend
/// 75 % of decoding in concatenation). Reordering or dropping hypotheses copies nothing here: it
/// permutes the ancestry, which the decoding state keeps once for all layers. The buffers double
/// when full.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    keys: Option<Tensor<B, 3>>,
    values: Option<Tensor<B, 3>>,
}

impl<B: Backend> Default for KvCache<B> {
    fn default() -> Self {
        KvCache {
            keys: None,
            values: None,
        }
    }
}

/// First capacity of a cache, in positions.
const FIRST_CAPACITY: usize = 16;

/// The capacity a cache grows to when position `pos` does not fit: twice as many positions.
pub fn grown_capacity(pos: usize) -> usize {
    (2 * pos).max(FIRST_CAPACITY)
}

/// `buffer` with `new` `[n, d]` written at position `pos` of rows `0..n`, first grown (a copy of
/// positions `0..pos`) when it has too few rows or positions.
fn append<B: Backend>(buffer: Option<Tensor<B, 3>>, pos: usize, new: Tensor<B, 2>) -> Tensor<B, 3> {
    let [n, d] = new.dims();
    let buffer = match buffer {
        Some(b) if b.dims()[0] >= n && b.dims()[1] > pos => b,
        old => {
            let [width, capacity, _] = old.as_ref().map_or([0, 0, d], Tensor::dims);
            let capacity = if capacity > pos {
                capacity
            } else {
                grown_capacity(pos)
            };
            // Rows grow by half at least: a search that admits sentences as others end adds a
            // few rows at a time, and growing to exactly `n` copied the whole cache at every
            // admission.
            let width = if width == 0 || n <= width {
                width.max(n)
            } else {
                n.max(width + width / 2)
            };
            kernels::grown(old, pos, [width, capacity, d], &new.device())
        }
    };
    write_position(buffer, pos, new)
}

/// See [`KvCache::compact`]. Positions from `len − shift` on are left holding whatever row 0 held:
/// they are written before they are read.
fn gather<B: Backend>(
    buffer: Tensor<B, 3>,
    ancestry: &[u32],
    (n, len): (usize, usize),
    shift: usize,
    capacity: usize,
) -> Tensor<B, 3> {
    let [width, old_capacity, d] = buffer.dims();
    let device = buffer.device();
    let index: Vec<i64> = (0..n)
        .flat_map(|i| {
            (0..capacity).map(move |p| {
                let old = p + shift;
                match ancestry.get(i * len + old) {
                    Some(&row) if old < len => (row as usize * old_capacity + old) as i64,
                    _ => 0,
                }
            })
        })
        .collect();
    buffer
        .reshape([width * old_capacity, d])
        .select(
            0,
            Tensor::from_data(TensorData::new(index, [n * capacity]), &device),
        )
        .reshape([n, capacity, d])
}

impl<B: Backend> KvCache<B> {
    /// Writes the keys and values `[n, d_model]` of `n` hypotheses at position `pos`, rows `0..n`.
    pub fn push(&mut self, k: Tensor<B, 2>, v: Tensor<B, 2>, pos: usize) {
        self.keys = Some(append(self.keys.take(), pos, k));
        self.values = Some(append(self.values.take(), pos, v));
    }

    /// Rows and positions the buffers hold, `(width, capacity)`; `(0, 0)` before the first push.
    pub fn shape(&self) -> (usize, usize) {
        self.keys
            .as_ref()
            .map_or((0, 0), |k| (k.dims()[0], k.dims()[1]))
    }

    /// Rebuilds both buffers with one row per live hypothesis and room for `capacity` positions,
    /// the first `shift` positions dropped: row `i` holds at position `p < len − shift` what row
    /// `ancestry[i · len + p + shift]` held at position `p + shift`.
    pub fn compact(
        &mut self,
        ancestry: &[u32],
        (n, len): (usize, usize),
        shift: usize,
        capacity: usize,
    ) {
        self.keys = self
            .keys
            .take()
            .map(|b| gather(b, ancestry, (n, len), shift, capacity));
        self.values = self
            .values
            .take()
            .map(|b| gather(b, ancestry, (n, len), shift, capacity));
    }

    /// The key and value buffers `[width, capacity, d_model]` (borrowed, so that the next
    /// [`Self::push`] still writes in place).
    ///
    /// # Panics
    /// Before the first push (a step always pushes before it reads).
    pub fn buffers(&self) -> (&Tensor<B, 3>, &Tensor<B, 3>) {
        match (&self.keys, &self.values) {
            (Some(k), Some(v)) => (k, v),
            _ => unreachable!("a step pushes its position before reading the cache"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    /// The inference path of the encoder's self-attention (the fused step kernel, one row per
    /// query position) gives the tensor operations' output on a padded batch, padded queries
    /// included.
    #[test]
    fn fused_self_attention_equals_the_tensor_operations() {
        let device = Default::default();
        Flex::seed(&device, 5);
        for (d, heads) in [(256, 4), (48, 3)] {
            let attention = MultiHeadAttention::<Flex>::new(d, heads, 0.0, &device);
            let x = Tensor::<Flex, 3>::random([3, 7, d], Distribution::Normal(0.0, 1.0), &device);
            let lengths = [7usize, 4, 1];
            let pad: Vec<bool> = lengths
                .iter()
                .flat_map(|&n| (0..7).map(move |p| p >= n))
                .collect();
            let pad = Tensor::<Flex, 2, Bool>::from_data(TensorData::new(pad, [3, 7]), &device);
            let bias = padding_bias(pad);
            let fused = attention.self_attend(x.clone(), &bias);
            let q = attention.queries(x.clone());
            let (k, v) = attention.keys_values(x);
            let (context, _) = kernels::multi_head_attention::composite(
                q,
                k,
                v,
                heads,
                AttentionMask::Keys(&bias),
                0.0,
            );
            let plain = projected(
                &attention.out_proj,
                None,
                &attention.packs[3],
                context,
                None,
            );
            let (fused, plain): (Vec<f32>, Vec<f32>) = (
                fused.into_data().to_vec().unwrap(),
                plain.into_data().to_vec().unwrap(),
            );
            for (a, b) in fused.iter().zip(&plain) {
                assert!((a - b).abs() <= 1e-4, "d {d}: {a} vs {b}");
            }
        }
    }
}
