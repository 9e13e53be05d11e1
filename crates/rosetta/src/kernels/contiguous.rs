//! A strided view laid out in order, copied row by row.
//!
//! burn-flex copies a view whose strides do not fold into two dimensions one element at a time
//! (`StridedIter`, an index computation per float). The recurrent models make such views on every
//! batch: the time-major `[len, batch, d]` view of the encoder's input and of its states (the
//! Bahdanau keys are projected time-major). On the quickstart's batched greedy decode those two
//! copies were 7 % of the time (perf). Their last dimension is unit-stride, so whole rows can be
//! copied instead.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};

/// `t` with its elements laid out in order (a copy when it is a strided view), so that kernels that
/// read it many times read it directly and a reshape costs nothing; other backends (and autodiff
/// tensors, whose graph must see the view) get `t` back.
pub fn contiguous<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    match super::cast::<_, Tensor<Flex, D>>(t) {
        Ok(t) => {
            let t = t.into_primitive().tensor();
            let t = by_rows(&t).unwrap_or_else(|| t.to_contiguous());
            super::cast_back(Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(t)))
        }
        Err(t) => t,
    }
}

/// A copy of the `f32` view `t` in order, one unit-stride row of its last dimension at a time;
/// `None` (burn-flex's copy then) for views of fewer than three dimensions (which burn-flex copies
/// in tiles), contiguous views (its copy handles their offsets), empty ones, other element types,
/// negative strides and rows that are not unit-stride.
fn by_rows(t: &FlexTensor) -> Option<FlexTensor> {
    let layout = t.layout();
    let shape: &[usize] = layout.shape();
    let strides = layout.strides();
    let rank = shape.len();
    if t.dtype() != DType::F32
        || t.is_contiguous()
        || rank < 3
        || strides[rank - 1] != 1
        || strides.iter().any(|&s| s < 0)
    {
        return None;
    }
    let row = shape[rank - 1];
    let n = layout.num_elements();
    if row == 0 || n == 0 {
        return None;
    }
    let src = t.storage::<f32>();
    let mut out = Vec::with_capacity(n);
    // An odometer over the outer dimensions, carrying the offset of the current row.
    let mut index = vec![0usize; rank - 1];
    let mut offset = layout.start_offset();
    for _ in 0..n / row {
        out.extend_from_slice(src.get(offset..offset + row)?);
        for k in (0..rank - 1).rev() {
            index[k] += 1;
            // Strides are non-negative (checked above).
            offset += strides[k] as usize;
            if index[k] < shape[k] {
                break;
            }
            offset -= strides[k] as usize * shape[k];
            index[k] = 0;
        }
    }
    Some(FlexTensor::from_data(TensorData::new(out, shape.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor<const D: usize>(shape: [usize; D]) -> Tensor<Flex, D> {
        let n = shape.iter().product();
        let values = super::super::test_values(n, 7);
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn laid_out_in_order<const D: usize>(t: &Tensor<Flex, D>) -> bool {
        t.clone().into_primitive().tensor().is_contiguous()
    }

    /// Every strided view the models make (and a few they do not) comes back contiguous, holding
    /// exactly what burn-flex's own element-by-element copy holds.
    #[test]
    fn views_copied_by_rows_equal_burns_copy() {
        let x = tensor([3, 5, 4]);
        let y = tensor([2, 3, 4, 6]);
        let views: Vec<Tensor<Flex, 3>> = vec![
            x.clone().swap_dims(0, 1),
            x.clone().slice([0..3, 1..4, 0..4]).swap_dims(0, 1),
            x.clone().slice([1..3, 0..5, 1..3]),
            x.clone().swap_dims(1, 2),
            x.clone().flip([2]),
            x.clone(),
        ];
        for (i, view) in views.into_iter().enumerate() {
            let expected: Vec<f32> = view.clone().into_data().iter::<f32>().collect();
            let copied = contiguous(view);
            assert!(laid_out_in_order(&copied), "view {i} not laid out in order");
            let got: Vec<f32> = copied.into_data().iter::<f32>().collect();
            assert_eq!(got, expected, "view {i}");
        }
        let view = y.permute([1, 0, 2, 3]).slice([0..3, 0..2, 1..3, 0..6]);
        let expected: Vec<f32> = view.clone().into_data().iter::<f32>().collect();
        let copied = contiguous(view);
        assert!(laid_out_in_order(&copied));
        let got: Vec<f32> = copied.into_data().iter::<f32>().collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_time_major_view_is_copied_by_rows() {
        let view = tensor([3, 5, 4]).swap_dims(0, 1);
        let p = view.into_primitive().tensor();
        let copied = by_rows(&p).expect("a unit-stride last dimension is copied by rows");
        assert_eq!(copied.storage::<f32>(), p.to_contiguous().storage::<f32>());
    }
}
