//! Row-wise log-softmax for decoding, `[n, vocab] → [n, vocab]`.
//!
//! Every search step normalizes a `[hypotheses, vocab]` matrix of logits. burn's `log_softmax` is
//! five tensor operations (max, subtract, exp, sum, log and subtract again), each writing a new
//! matrix; here each row is read twice and written once, rows in parallel. Inference only: the
//! training loss has its own fused kernel.

use super::cross_entropy::row_stats;
use super::simd_math::dispatch;
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

/// `x − log Σ e^x` along the last dimension of `logits` `[n, vocab]`.
pub fn log_softmax<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 2> {
    if logits.dtype() != DType::F32 {
        return activation::log_softmax(logits, 1);
    }
    match super::cast::<_, Tensor<Flex, 2>>(logits) {
        Ok(x) => {
            let out = forward_flex(&x.into_primitive().tensor().to_contiguous());
            super::cast_back(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(
                out,
            )))
        }
        Err(x) => activation::log_softmax(x, 1),
    }
}

fn forward_flex(logits: &FlexTensor) -> FlexTensor {
    let dims = logits.shape().to_vec();
    let [n, vocab] = [dims[0], dims[1]];
    let x = logits.storage::<f32>();
    let mut out = vec![0f32; n * vocab];
    if vocab > 0 {
        out.par_chunks_mut(vocab)
            .zip(x.par_chunks(vocab))
            .for_each(|(out, row)| {
                dispatch(
                    #[inline(always)]
                    || {
                        let (m, _, sum_exp) = row_stats(row);
                        let lse = m + sum_exp.ln();
                        for (o, &v) in out.iter_mut().zip(row) {
                            *o = v - lse;
                        }
                    },
                )
            });
    }
    FlexTensor::from_data(TensorData::new(out, [n, vocab]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn matches_burn_log_softmax() {
        let device = Default::default();
        Flex::seed(&device, 3);
        let x = Tensor::<Flex, 2>::random([9, 1003], Distribution::Normal(0.0, 4.0), &device);
        crate::kernels::assert_close(log_softmax(x.clone()), activation::log_softmax(x, 1), 1e-5);
    }

    #[test]
    fn masked_entries_stay_minus_infinity_and_nan_spreads() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::from_data(
            TensorData::new(
                vec![0.0, f32::NEG_INFINITY, 1.0, f32::NAN, 0.0, 1.0],
                [2, 3],
            ),
            &device,
        );
        let y = log_softmax(x).into_data().to_vec::<f32>().unwrap();
        assert_eq!(y[1], f32::NEG_INFINITY);
        let lse = (1.0f32 + 1.0f32.exp()).ln();
        assert!((y[0] + lse).abs() < 1e-6 && (y[2] - (1.0 - lse)).abs() < 1e-6);
        assert!(y[3..].iter().all(|v| v.is_nan()));
    }
}
