//! Attention of one new query position per row, for search steps: `[n, heads·head_dim]` queries over
//! keys and values `[n, heads, capacity, head_dim]` of which the first `len` positions are read.
//!
//! A search step of a Transformer decoder attends with one query per row and head over a few dozen
//! keys. As tensor operations that is a head split (a strided copy), a batched product of `n·heads`
//! tiny matrices, a bias addition, a softmax, a second batched product and a head merge (another
//! copy): on the benchmark's greedy decode 13 % of the samples were burn-flex's batched products
//! alone. Here each (row, head) is one pass over its keys and one over its values, read in place from
//! the cache buffer, with rows split across threads. Inference only (no backward); other backends
//! get `None` and use the tensor operations.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use rayon::prelude::*;

/// `t` with its elements laid out in order (a copy when it is a strided view), so that kernels that
/// read it many times read it directly; other backends get `t` back.
pub fn contiguous<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    match super::cast::<_, Tensor<Flex, D>>(t) {
        Ok(t) => {
            let t = t.into_primitive().tensor().to_contiguous();
            super::cast_back(Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(t)))
        }
        Err(t) => t,
    }
}

fn flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> Option<FlexTensor> {
    (t.dtype() == DType::F32).then_some(())?;
    super::cast::<_, Tensor<Flex, D>>(t)
        .ok()
        .map(|t| t.into_primitive().tensor().to_contiguous())
}

/// `a · b` with eight partial sums, so that the compiler vectorizes it (a single running sum must
/// stay in order and does not).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `q` `[n, heads·head_dim]` (unscaled), `keys`/`values` `[n, heads, capacity, head_dim]` with
/// `len ≤ capacity` positions in use, `bias` `[n, 1, 1, len]` (−∞ on padding) or none. Returns the
/// context `[n, heads·head_dim]` and the weights `[n, heads, len]`, or `None` where the kernel does
/// not apply (another backend or dtype).
pub fn step_attention<B: Backend>(
    q: Tensor<B, 2>,
    keys: Tensor<B, 4>,
    values: Tensor<B, 4>,
    len: usize,
    bias: Option<Tensor<B, 4>>,
) -> Option<(Tensor<B, 2>, Tensor<B, 3>)> {
    let [n, heads, capacity, hd] = keys.dims();
    let q = flex(q)?;
    let (keys, values) = (flex(keys)?, flex(values)?);
    let bias = match bias {
        Some(b) => Some(flex(b)?),
        None => None,
    };
    let (q, keys, values) = (
        q.storage::<f32>(),
        keys.storage::<f32>(),
        values.storage::<f32>(),
    );
    let bias = bias.as_ref().map(|b| b.storage::<f32>());
    let scale = (hd as f32).powf(-0.5);
    let d = heads * hd;
    let mut context = vec![0.0f32; n * d];
    let mut weights = vec![0.0f32; n * heads * len];
    let row = |(r, (ctx, w)): (usize, (&mut [f32], &mut [f32]))| {
        for h in 0..heads {
            let qh = &q[r * d + h * hd..r * d + (h + 1) * hd];
            let base = (r * heads + h) * capacity * hd;
            let wh = &mut w[h * len..(h + 1) * len];
            let mut max = f32::NEG_INFINITY;
            for (j, s) in wh.iter_mut().enumerate() {
                let k = &keys[base + j * hd..base + (j + 1) * hd];
                let dot = dot(qh, k);
                *s = dot * scale + bias.map_or(0.0, |b| b[r * len + j]);
                max = max.max(*s);
            }
            let mut sum = 0.0f32;
            for s in wh.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let ch = &mut ctx[h * hd..(h + 1) * hd];
            for (j, s) in wh.iter_mut().enumerate() {
                *s /= sum;
                let v = &values[base + j * hd..base + (j + 1) * hd];
                for (c, x) in ch.iter_mut().zip(v) {
                    *c += *s * x;
                }
            }
        }
    };
    let rows = context
        .chunks_mut(d)
        .zip(weights.chunks_mut(heads * len.max(1)));
    if n * heads * len * hd >= 1 << 16 {
        rows.enumerate().par_bridge().for_each(row);
    } else {
        rows.enumerate().for_each(row);
    }
    let context = FlexTensor::from_data(TensorData::new(context, [n, d]));
    let weights = FlexTensor::from_data(TensorData::new(weights, [n, heads, len]));
    Some((
        super::cast_back(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(
            context,
        ))),
        super::cast_back(Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(
            weights,
        ))),
    ))
}
