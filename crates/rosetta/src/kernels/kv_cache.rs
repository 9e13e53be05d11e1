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
    in_place(
        buffer,
        new,
        |src, out| {
            for (row, chunk) in src.chunks_exact(d).enumerate() {
                let at = (row * capacity + pos) * d;
                out[at..at + d].copy_from_slice(chunk);
            }
        },
        |buffer, new| buffer.slice_assign([0..n, pos..pos + 1, 0..d], new.reshape([n, 1, d])),
    )
}

/// `buffer` `[width, capacity, d]` with `new` `[m, len, d]` (`len ≤ capacity`) written at
/// positions `0..len` of rows `rows[0..m]`; the rest of those rows is left as it was. A running
/// search puts a new sentence's source keys and values in the rows of finished ones.
pub fn write_rows<B: Backend>(
    buffer: Tensor<B, 3>,
    rows: &[usize],
    new: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let [_, capacity, d] = buffer.dims();
    let [m, len, _] = new.dims();
    in_place(
        buffer,
        new,
        |src, out| {
            for (chunk, &row) in src.chunks_exact((len * d).max(1)).zip(rows) {
                let at = row * capacity * d;
                out[at..at + len * d].copy_from_slice(chunk);
            }
        },
        |mut buffer, new| {
            for (j, &row) in rows.iter().enumerate().take(m) {
                buffer =
                    buffer.slice_assign([row..row + 1, 0..len, 0..d], new.clone().narrow(0, j, 1));
            }
            buffer
        },
    )
}

/// `write(new's elements, buffer's elements)` on the CPU, in place when the buffer is held alone;
/// `composite(buffer, new)` (burn's operations) for other backends and dtypes.
fn in_place<B: Backend, const D: usize>(
    buffer: Tensor<B, 3>,
    new: Tensor<B, D>,
    write: impl FnOnce(&[f32], &mut [f32]),
    composite: impl FnOnce(Tensor<B, 3>, Tensor<B, D>) -> Tensor<B, 3>,
) -> Tensor<B, 3> {
    if buffer.dtype() != DType::F32 || new.dtype() != DType::F32 {
        return composite(buffer, new);
    }
    match super::cast::<_, (Tensor<Flex, 3>, Tensor<Flex, D>)>((buffer, new)) {
        Ok((buffer, new)) => {
            let mut dst = whole(buffer.into_primitive().tensor());
            let src = new.into_primitive().tensor().to_contiguous();
            write(src.storage::<f32>(), dst.storage_mut::<f32>());
            super::cast_back(Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(
                dst,
            )))
        }
        Err((buffer, new)) => composite(buffer, new),
    }
}

/// A grown cache buffer: zeros `[width, capacity, d]` holding, at positions `0..pos` of rows
/// `0..old_width`, what `old` `[old_width, old_capacity, d]` holds there.
///
/// On the CPU the zeros come from a zeroed vector and the old positions are copied in place:
/// burn-flex's `zeros` fills a byte vector and copies it into an aligned allocation, and its
/// `slice_assign` copies the whole destination once more (1.3 % of a batch-32 beam-5 decode).
pub fn grown<B: Backend>(
    old: Option<Tensor<B, 3>>,
    pos: usize,
    [width, capacity, d]: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 3> {
    let composite = |old: Option<Tensor<B, 3>>| {
        let fresh = Tensor::zeros([width, capacity, d], device);
        match old {
            Some(old) if pos > 0 && old.dims()[0] > 0 => {
                let old_width = old.dims()[0];
                fresh.slice_assign([0..old_width, 0..pos, 0..d], old.narrow(1, 0, pos))
            }
            _ => fresh,
        }
    };
    if old.as_ref().is_some_and(|o| o.dtype() != DType::F32) {
        return composite(old);
    }
    let old = match old.map(super::cast::<_, Tensor<Flex, 3>>) {
        None => None,
        Some(Ok(o)) => Some(o),
        Some(Err(o)) => return composite(Some(o)),
    };
    if std::any::TypeId::of::<B>() != std::any::TypeId::of::<Flex>() {
        // No old buffer to tell the backend by, and not the CPU's.
        return composite(None);
    }
    let mut out = vec![0f32; width * capacity * d];
    if let Some(old) = old {
        let [old_width, old_capacity, _] = old.dims();
        let old = old.into_primitive().tensor().to_contiguous();
        let src = old.storage::<f32>();
        let n = pos.min(old_capacity).min(capacity) * d;
        for row in 0..old_width.min(width) {
            let (from, to) = (row * old_capacity * d, row * capacity * d);
            out[to..to + n].copy_from_slice(&src[from..from + n]);
        }
    }
    let t = Tensor::<Flex, 3>::from_data(
        TensorData::new(out, [width, capacity, d]),
        &Default::default(),
    );
    super::cast_back(t)
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

    /// Rows written in place equal burn's `slice_assign` of each row.
    #[test]
    fn row_writes_equal_burns_slice_assign() {
        let device = Default::default();
        let base: Vec<f32> = (0..4 * 5 * 3).map(|i| i as f32).collect();
        let buffer =
            || Tensor::<Flex, 3>::from_data(TensorData::new(base.clone(), [4, 5, 3]), &device);
        let new: Vec<f32> = (0..2 * 3 * 3).map(|i| -(i as f32) - 1.0).collect();
        let new = Tensor::<Flex, 3>::from_data(TensorData::new(new, [2, 3, 3]), &device);
        let ours = write_rows(buffer(), &[3, 1], new.clone());
        let burns = buffer()
            .slice_assign([3..4, 0..3, 0..3], new.clone().narrow(0, 0, 1))
            .slice_assign([1..2, 0..3, 0..3], new.narrow(0, 1, 1));
        assert_eq!(ours.into_data(), burns.into_data());
    }

    /// Growing keeps positions `0..pos` of every old row and zeros the rest, as zeros plus
    /// `slice_assign` do.
    #[test]
    fn growing_keeps_the_written_positions() {
        let device = Default::default();
        let old: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32 + 1.0).collect();
        let old = Tensor::<Flex, 3>::from_data(TensorData::new(old, [2, 3, 4]), &device);
        let ours = grown(Some(old.clone()), 2, [4, 6, 4], &device);
        let want = Tensor::<Flex, 3>::zeros([4, 6, 4], &device)
            .slice_assign([0..2, 0..2, 0..4], old.narrow(1, 0, 2));
        assert_eq!(ours.into_data(), want.into_data());
        let fresh = grown::<Flex>(None, 0, [3, 5, 2], &device);
        assert_eq!(
            fresh.into_data(),
            Tensor::<Flex, 3>::zeros([3, 5, 2], &device).into_data()
        );
    }
}
