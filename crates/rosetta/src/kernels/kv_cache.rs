//! In-place writes to the decoder's key/value cache buffers `[width, capacity, d_model]`.
//!
//! burn-flex 0.21's `slice_assign` copies the whole destination on every call (it makes the tensor
//! contiguous into a second handle of the same buffer, so the copy-on-write check always sees two
//! owners): appending one position cost a copy of the whole cache, 7–9 % of a beam-5 Transformer
//! decode (perf). Here a cache buffer held alone is written in place. Other backends (CUDA) get
//! burn's operation.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};

/// `buffer` `[width, capacity, d]` with `new` `[n, d]` (`n ≤ width`) written at position `pos`
/// (< capacity) of rows `0..n`.
pub fn write_position<B: Backend>(
    buffer: Tensor<B, 3>,
    pos: usize,
    new: Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [_, capacity, d] = buffer.dims();
    let [n, _] = new.dims();
    let composite = |buffer: Tensor<B, 3>, new: Tensor<B, 2>| {
        buffer.slice_assign([0..n, pos..pos + 1, 0..d], new.reshape([n, 1, d]))
    };
    if buffer.dtype() != DType::F32 || new.dtype() != DType::F32 {
        return composite(buffer, new);
    }
    match super::cast::<_, (Tensor<Flex, 3>, Tensor<Flex, 2>)>((buffer, new)) {
        Ok((buffer, new)) => {
            let mut dst = whole(buffer.into_primitive().tensor());
            let src = new.into_primitive().tensor().to_contiguous();
            let (src, out) = (src.storage::<f32>(), dst.storage_mut::<f32>());
            for (row, chunk) in src.chunks_exact(d).enumerate() {
                let at = (row * capacity + pos) * d;
                out[at..at + d].copy_from_slice(chunk);
            }
            super::cast_back(Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(
                dst,
            )))
        }
        Err((buffer, new)) => composite(buffer, new),
    }
}

/// `t` as a tensor whose storage is exactly its elements in order: itself when it already is (no
/// second handle, so a later `storage_mut` writes in place), a contiguous copy otherwise.
pub(super) fn whole(t: FlexTensor) -> FlexTensor {
    let exact = t.is_contiguous()
        && t.layout().start_offset() == 0
        && t.storage::<f32>().len() == t.layout().num_elements();
    if exact { t } else { t.to_contiguous() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_equal_burns_slice_assign() {
        let device = Default::default();
        let shape = [3, 4, 5];
        let base: Vec<f32> = (0..60).map(|i| i as f32).collect();
        let buffer = || Tensor::<Flex, 3>::from_data(TensorData::new(base.clone(), shape), &device);
        let new = Tensor::<Flex, 2>::from_data(
            TensorData::new((0..10).map(|i| -(i as f32)).collect::<Vec<_>>(), [2, 5]),
            &device,
        );
        let ours = write_position(buffer(), 2, new.clone());
        let burns = buffer().slice_assign([0..2, 2..3, 0..5], new.reshape([2, 1, 5]));
        assert_eq!(ours.into_data(), burns.into_data());
    }
}
