//! In-place writes and row gathers for the decoder's key/value cache `[n, heads, capacity, head_dim]`.
//!
//! burn-flex 0.21's `slice_assign` copies the whole destination on every call (it makes the tensor
//! contiguous into a second handle of the same buffer, so the copy-on-write check always sees two
//! owners): appending one position cost a copy of the whole cache, 7–9 % of a beam-5 Transformer
//! decode (perf). `select` zero-fills its output and copies every position of the capacity, used or
//! not. Here a cache buffer held alone is written in place, and a gather copies only the positions
//! in use. Other backends (CUDA) get burn's operations.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};

/// `buffer` `[n, heads, capacity, head_dim]` with `new` `[n, heads, 1, head_dim]` written at
/// position `pos` (< capacity).
pub fn write_position<B: Backend>(
    buffer: Tensor<B, 4>,
    pos: usize,
    new: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [n, heads, capacity, hd] = buffer.dims();
    if buffer.dtype() != DType::F32 || new.dtype() != DType::F32 {
        return buffer.slice_assign([0..n, 0..heads, pos..pos + 1, 0..hd], new);
    }
    match super::cast::<_, (Tensor<Flex, 4>, Tensor<Flex, 4>)>((buffer, new)) {
        Ok((buffer, new)) => {
            let mut dst = whole(buffer.into_primitive().tensor());
            let src = new.into_primitive().tensor().to_contiguous();
            let (src, out) = (src.storage::<f32>(), dst.storage_mut::<f32>());
            for (row, chunk) in src.chunks_exact(hd).enumerate() {
                let at = (row * capacity + pos) * hd;
                out[at..at + hd].copy_from_slice(chunk);
            }
            super::cast_back(Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(
                dst,
            )))
        }
        Err((buffer, new)) => buffer.slice_assign([0..n, 0..heads, pos..pos + 1, 0..hd], new),
    }
}

/// Rows `indices` of `buffer` `[n, heads, capacity, head_dim]` (repeats allowed), of which only
/// positions `0..len` are copied, into a buffer of `len + 1` positions (the last one zero) on the
/// CPU; other backends keep the capacity.
pub fn gather_rows<B: Backend>(
    buffer: Tensor<B, 4>,
    indices: Tensor<B, 1, Int>,
    len: usize,
) -> Tensor<B, 4> {
    if buffer.dtype() != DType::F32 {
        return buffer.select(0, indices);
    }
    let flex = match super::cast::<_, Tensor<Flex, 4>>(buffer) {
        Ok(flex) => flex,
        Err(buffer) => return buffer.select(0, indices),
    };
    let [_, heads, capacity, hd] = flex.dims();
    // Beam search reorders after every step, so the copy needs room for one more position only:
    // keeping the old capacity would copy (or zero) up to as many unused positions as used ones.
    let fresh = len + 1;
    let rows: Vec<usize> = indices
        .into_data()
        .convert::<i64>()
        .iter::<i64>()
        .map(|i| i as usize)
        .collect();
    let src = whole(flex.into_primitive().tensor());
    let src = src.storage::<f32>();
    let (block, out_block) = (capacity * hd, fresh * hd);
    let used = len.min(capacity) * hd;
    let mut out = Vec::with_capacity(rows.len() * heads * out_block);
    for &row in &rows {
        for head in 0..heads {
            let at = (row * heads + head) * block;
            out.extend_from_slice(&src[at..at + used]);
            out.resize(out.len() + out_block - used, 0.0);
        }
    }
    let out = FlexTensor::from_data(TensorData::new(out, [rows.len(), heads, fresh, hd]));
    super::cast_back(Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(
        out,
    )))
}

/// `t` as a tensor whose storage is exactly its elements in order: itself when it already is (no
/// second handle, so a later `storage_mut` writes in place), a contiguous copy otherwise.
fn whole(t: FlexTensor) -> FlexTensor {
    let exact = t.is_contiguous()
        && t.layout().start_offset() == 0
        && t.storage::<f32>().len() == t.layout().num_elements();
    if exact { t } else { t.to_contiguous() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: Vec<f32>, shape: [usize; 4]) -> Tensor<Flex, 4> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    #[test]
    fn writes_and_gathers_equal_burns_slice_assign_and_select() {
        let shape = [3, 2, 4, 5];
        let base: Vec<f32> = (0..120).map(|i| i as f32).collect();
        let new = tensor((0..30).map(|i| -(i as f32)).collect(), [3, 2, 1, 5]);
        let ours = write_position(tensor(base.clone(), shape), 2, new.clone());
        let burns = tensor(base.clone(), shape).slice_assign([0..3, 0..2, 2..3, 0..5], new);
        assert_eq!(ours.into_data(), burns.into_data());

        let indices = || {
            Tensor::<Flex, 1, Int>::from_data(
                TensorData::new(vec![2i64, 0, 2], [3]),
                &Default::default(),
            )
        };
        let ours = gather_rows(tensor(base.clone(), shape), indices(), 3);
        let burns = tensor(base, shape).select(0, indices()).slice_assign(
            [0..3, 0..2, 3..4, 0..5],
            Tensor::zeros([3, 2, 1, 5], &Default::default()),
        );
        assert_eq!(ours.into_data(), burns.into_data());

        // One position in use: the copy holds it and one free position, not the old capacity.
        let base: Vec<f32> = (0..120).map(|i| i as f32).collect();
        let ours = gather_rows(tensor(base.clone(), shape), indices(), 1);
        let burns = tensor(base, shape)
            .select(0, indices())
            .narrow(2, 0, 2)
            .slice_assign(
                [0..3, 0..2, 1..2, 0..5],
                Tensor::zeros([3, 2, 1, 5], &Default::default()),
            );
        assert_eq!(ours.dims(), [3, 2, 2, 5]);
        assert_eq!(ours.into_data(), burns.into_data());
    }
}
