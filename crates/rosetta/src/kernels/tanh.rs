//! `tanh` of a tensor at search time, vectorized.
//!
//! burn 0.21's CPU backend maps `tanh` element by element through the C library's scalar `tanhf`
//! (and its `expm1f`): on a batched beam search of the quickstart's GRU, the attentional layer's
//! `tanh` alone took 15 % of the decode (perf). Inference tensors on the CPU go through
//! [`simd_math::tanh`] instead, sixteen or eight lanes at a time; training (autodiff) and other
//! backends keep burn's operation and its backward.

use super::simd_math::{self, dispatch};
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};

/// `tanh x`, element-wise.
pub fn tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() != DType::F32 {
        return burn::tensor::activation::tanh(x);
    }
    match super::cast::<_, Tensor<Flex, D>>(x) {
        Ok(x) => {
            let shape = x.shape();
            // Copies only when the input is shared or not contiguous.
            let mut values = x.into_primitive().tensor().into_data();
            match values.as_mut_slice::<f32>() {
                Ok(v) => dispatch(
                    #[inline(always)]
                    || {
                        for v in v.iter_mut() {
                            *v = simd_math::tanh(*v);
                        }
                    },
                ),
                // An F32 tensor's data is f32; were it not, burn's operation still gives tanh.
                Err(_) => {
                    let t = Tensor::<Flex, D>::from_data(values, &Default::default());
                    return super::cast_back(burn::tensor::activation::tanh(t));
                }
            }
            let out = Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(
                burn::backend::flex::FlexTensor::from_data(values),
            ));
            debug_assert_eq!(out.shape(), shape);
            super::cast_back(out)
        }
        Err(x) => burn::tensor::activation::tanh(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;

    #[test]
    fn equals_burns_tanh_on_the_cpu_and_keeps_gradients_in_training() {
        let values: Vec<f32> = super::super::test_values(3 * 37, 3)
            .into_iter()
            .map(|v| v * 12.0)
            .collect();
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(values, [3, 37]), &Default::default());
        super::super::assert_close(
            tanh(x.clone()),
            burn::tensor::activation::tanh(x.clone()),
            1e-6,
        );
        // A non-contiguous input (a transposed view) gives the transposed result.
        super::super::assert_close(
            tanh(x.clone().transpose()),
            burn::tensor::activation::tanh(x.clone()).transpose(),
            1e-6,
        );
        let tracked = Tensor::<Autodiff<Flex>, 2>::from_inner(x.clone()).require_grad();
        let grads = tanh(tracked.clone()).sum().backward();
        let grad = tracked
            .grad(&grads)
            .expect("tanh keeps the graph in training");
        let y = burn::tensor::activation::tanh(x);
        super::super::assert_close(grad, y.clone().ones_like() - y.clone() * y, 1e-6);
    }
}
