//! The dense layer `y = x W + b` over the last dimension, with its own backward.
//!
//! Two costs of burn 0.21's `linear` on the CPU, both measured with perf on Multi30k training, are
//! avoided here:
//! - For an input of rank 3 (`[batch, len, d_in]`), the weight gradient is a batched product
//!   `[batch, d_in, len] × [batch, len, d_out]` followed by a sum over the batch: a
//!   `[batch, d_in, d_out]` intermediate (100 MB for the decoder's input projection) and short
//!   inner products. Every input is flattened to `[rows, d_in]` first, so `dW = xᵀ dy` is one
//!   product with the rows as its inner dimension.
//! - burn-flex makes every product's output with `FlexTensor::empty`, which zero-fills a byte vector
//!   and copies it into an aligned allocation (7 % of a training step). Here the `gemm` crate (the
//!   one burn-flex calls) writes straight into vectors that become the result tensors.

use burn::backend::flex::FlexTensor;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::TensorMetadata;

/// Below this many multiply-adds a product runs on one thread (burn-flex's threshold).
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// Applies `layer` to the last dimension of `x`: `[.., d_in] → [.., d_out]`.
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    let (weight, bias) = parameters(layer, &x.device());
    let d_out = weight.dims()[1];
    // A strided view (the recurrent models' time-major inputs) is copied by rows here; burn's
    // reshape would copy it one element at a time.
    let y = dense(super::contiguous(x).reshape([rows, d_in]), weight, bias);
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

/// The weight `[d_in, d_out]` and bias of `layer`; a zero-length bias stands for "none" (it is
/// not a parameter, so it gets no gradient).
pub fn parameters<B: Backend>(
    layer: &Linear<B>,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let bias = match &layer.bias {
        Some(bias) => bias.val(),
        None => Tensor::empty([0], device),
    };
    (layer.weight.val(), bias)
}

/// `x W + b` on `[rows, d_in]`, with the weight and bias from [`parameters`].
pub fn dense<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 2> {
    super::Fused3 {
        forward: forward_flex,
        backward: backward_flex,
        composite,
    }
    .run(x, weight, bias)
}

/// The same with burn's operation, for other backends: `x` `[rows, d_in]`, `weight`
/// `[d_in, d_out]`, `bias` `[d_out]` or `[0]`.
pub fn composite<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 2> {
    let bias = (bias.dims()[0] > 0).then_some(bias);
    burn::tensor::module::linear(x, weight, bias)
}

/// `[rows, d_in, d_out]`, checked against the bias.
pub(super) fn dims(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> [usize; 3] {
    let (x, w, b) = (
        x.shape().to_vec(),
        weight.shape().to_vec(),
        bias.shape().to_vec(),
    );
    // `linear` builds these shapes from a `Linear` module; a mismatch is a bug in Rosetta.
    assert!(
        x.len() == 2 && w.len() == 2 && x[1] == w[0] && (b == [w[1]] || b == [0]),
        "linear: x {x:?}, weight {w:?}, bias {b:?}"
    );
    [x[0], w[0], w[1]]
}

/// A row-major matrix operand for [`product`]: data and (row, column) strides.
pub(super) type Operand<'a> = (&'a [f32], isize, isize);

/// Column blocks of a split product start at multiples of this many columns, so that each block
/// fills whole AVX2/AVX-512 register tiles.
const COLUMN_ALIGN: usize = 16;

/// `[m, n] = lhs [m, k] × rhs [k, n]`, written into a fresh row-major vector.
///
/// A product with no more rows than columns is split into one block of columns per rayon thread,
/// each a single-threaded `gemm`. gemm's own parallelism splits such a short, wide product poorly:
/// for the decoder's output layer in greedy search (`[64, 1024] × [1024, 8000]`, 2 threads) it
/// took 9.2–10.0 ms against 7.7–8.0 ms split by columns, and one thread alone 16.5 ms. Each
/// output element is still one `gemm` reduction over the same `k`, so the bits do not change (see
/// the test `split_product_has_the_same_bits`).
///
/// The result is not zero-filled first: `gemm` stores every element of its destination when it
/// does not read it (`read_dst = false`, k > 0), and for the output layer of beam search
/// (`[320, 1024] × [1024, 8000]` per step) the fill was 2.5 % of the decode.
fn product(m: usize, n: usize, k: usize, lhs: Operand, rhs: Operand) -> Vec<f32> {
    let len = m * n;
    if len == 0 || k == 0 {
        return vec![0f32; len];
    }
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = out.spare_capacity_mut().as_mut_ptr().cast::<f32>();
    let parallel = m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MACS;
    let threads = rayon::current_num_threads();
    if parallel && threads > 1 && n >= m && n >= 2 * COLUMN_ALIGN {
        // SAFETY: `dst` has room for m·n elements (row stride n) and is the only view of them;
        // the operands' strides stay inside their slices, as `product`'s callers guarantee (`dims`).
        unsafe { product_by_columns(m, n, k, lhs, rhs, dst, threads) };
    } else {
        let parallelism = if parallel {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: as above.
        unsafe { product_into(m, n, k, lhs, rhs, dst, n, parallelism) };
    }
    // SAFETY: the product stored all m·n elements (k > 0, destination not read; the test
    // `split_product_has_the_same_bits` starts from NaN to check that every element is written).
    unsafe { out.set_len(len) };
    out
}

/// `out = lhs × rhs` with the columns split into about `blocks` ranges, one rayon task each.
///
/// # Safety
/// `out` must point to `m × n` writable elements, row-major, that nothing else reads or writes
/// during the call (they need not be initialized); the operands must fit their slices as for
/// [`product_into`].
unsafe fn product_by_columns(
    m: usize,
    n: usize,
    k: usize,
    lhs: Operand,
    rhs: Operand,
    out: *mut f32,
    blocks: usize,
) {
    use rayon::prelude::*;
    let width = n.div_ceil(blocks).div_ceil(COLUMN_ALIGN) * COLUMN_ALIGN;
    let (rhs_data, rhs_rs, rhs_cs) = rhs;
    // Every caller passes non-negative strides, so column j0 starts j0 · rhs_cs elements in.
    debug_assert!(rhs_cs >= 0 && rhs_rs >= 0);
    let dst = SharedOut(out);
    (0..n.div_ceil(width)).into_par_iter().for_each(|block| {
        let j0 = block * width;
        let cols = width.min(n - j0);
        let first = (j0 as isize * rhs_cs) as usize;
        let rhs = (&rhs_data[first..], rhs_rs, rhs_cs);
        // SAFETY: block `block` writes only columns j0..j0 + cols of every row of `out`
        // (m rows of n), which no other block touches; `out` outlives the parallel loop. The
        // right operand starts at column j0, so its strides stay inside the shortened slice.
        unsafe { product_into(m, cols, k, lhs, rhs, dst.at(j0), n, gemm::Parallelism::None) };
    });
}

/// A pointer into the output of [`product_by_columns`], shared by tasks that write disjoint
/// column blocks of it.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(*mut f32);

// SAFETY: the tasks that share it write disjoint elements (see `product_by_columns`).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Shares `out` with tasks that write disjoint parts of it.
    pub(super) fn new(out: *mut f32) -> Self {
        SharedOut(out)
    }

    /// The element `offset` places on.
    ///
    /// # Safety
    /// `offset` must lie inside the output.
    pub(super) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: guaranteed by the caller.
        unsafe { self.0.add(offset) }
    }
}

/// `dst [m, n] (row stride dst_rs) = lhs [m, k] × rhs [k, n]`.
///
/// # Safety
/// `dst` must point to `m` rows of at least `n` writable elements, `dst_rs` apart, that nothing
/// else reads or writes during the call; the operands' strides must stay inside their slices for
/// every (i < m, l < k) and (l < k, j < n).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn product_into(
    m: usize,
    n: usize,
    k: usize,
    lhs: Operand,
    rhs: Operand,
    dst: *mut f32,
    dst_rs: usize,
    parallelism: gemm::Parallelism,
) {
    let (lhs, lhs_rs, lhs_cs) = lhs;
    let (rhs, rhs_rs, rhs_cs) = rhs;
    // SAFETY: guaranteed by the caller (the shape checks in `dims` for every caller of
    // `product`). With `read_dst = false` the initial contents of `dst` are not read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `y = x W + b` `[rows, d_out]`; a zero-length bias adds nothing.
pub(super) fn forward_flex(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> FlexTensor {
    let [rows, d_in, d_out] = dims(x, weight, bias);
    let y = rows_times(
        x.storage::<f32>(),
        weight.storage::<f32>(),
        bias.storage::<f32>(),
        [rows, d_in, d_out],
    );
    FlexTensor::from_data(TensorData::new(y, [rows, d_out]))
}

/// `x W + b` on slices: `x` `[rows, d_in]`, `w` `[d_in, d_out]`, both row-major and contiguous,
/// `b` `[d_out]` or empty.
pub(super) fn rows_times(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    [rows, d_in, d_out]: [usize; 3],
) -> Vec<f32> {
    let mut y = product(
        rows,
        d_out,
        d_in,
        (x, d_in as isize, 1),
        (w, d_out as isize, 1),
    );
    if !b.is_empty() {
        for row in y.chunks_exact_mut(d_out) {
            for (y, b) in row.iter_mut().zip(b) {
                *y += b;
            }
        }
    }
    y
}

/// Gradients of `x`, the weight and the bias from the output's gradient `g` `[rows, d_out]`.
fn backward_flex(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
    g: &FlexTensor,
) -> [FlexTensor; 3] {
    let [rows, d_in, d_out] = dims(x, weight, bias);
    let gs = g.storage::<f32>();
    let gx = grad_input(gs, weight.storage::<f32>(), rows, d_in, d_out);
    let gw = grad_weight(x.storage::<f32>(), gs, rows, d_in, d_out);
    let gb = if bias.shape()[0] == 0 {
        Vec::new()
    } else {
        grad_bias(gs, d_out)
    };
    let nb = gb.len();
    [
        FlexTensor::from_data(TensorData::new(gx, [rows, d_in])),
        FlexTensor::from_data(TensorData::new(gw, [d_in, d_out])),
        FlexTensor::from_data(TensorData::new(gb, [nb])),
    ]
}

/// `dx = g Wᵀ` `[rows, d_in]` from `g` `[rows, d_out]` and `W` `[d_in, d_out]` (Wᵀ[o, i] = W[i, o]).
pub(super) fn grad_input(g: &[f32], w: &[f32], rows: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    product(
        rows,
        d_in,
        d_out,
        (g, d_out as isize, 1),
        (w, 1, d_out as isize),
    )
}

/// `dW = xᵀ g` `[d_in, d_out]` from `x` `[rows, d_in]` and `g` `[rows, d_out]` (xᵀ[i, r] = x[r, i]).
pub(super) fn grad_weight(
    x: &[f32],
    g: &[f32],
    rows: usize,
    d_in: usize,
    d_out: usize,
) -> Vec<f32> {
    product(
        d_in,
        d_out,
        rows,
        (x, 1, d_in as isize),
        (g, d_out as isize, 1),
    )
}

/// `db = Σ_rows g` `[d_out]`, in row order (the same sum on every run).
pub(super) fn grad_bias(g: &[f32], d_out: usize) -> Vec<f32> {
    let mut gb = vec![0f32; d_out];
    for row in g.chunks_exact(d_out) {
        for (acc, g) in gb.iter_mut().zip(row) {
            *acc += g;
        }
    }
    gb
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    type A = Autodiff<Flex>;

    fn close<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) {
        crate::kernels::assert_close(a, b, 1e-5);
    }

    /// Splitting a product by columns gives the same bits as one `gemm` call, for a plain and a
    /// transposed right operand and widths that are not multiples of the column alignment.
    #[test]
    fn split_product_has_the_same_bits() {
        for (m, n, k) in [(5, 1000, 300), (64, 777, 129), (3, 50, 7), (1, 33, 1)] {
            let lhs: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 1009) as f32 / 97.0 - 5.0)
                .collect();
            let rhs: Vec<f32> = (0..k * n)
                .map(|i| ((i * 104_729) % 1013) as f32 / 89.0 - 5.5)
                .collect();
            for transposed in [false, true] {
                let (rs, cs) = if transposed {
                    (1, k as isize)
                } else {
                    (n as isize, 1)
                };
                let lhs = (&lhs[..], k as isize, 1);
                let rhs = (&rhs[..], rs, cs);
                let mut whole = vec![0f32; m * n];
                // SAFETY: `whole` is m × n; the strides above address k × n and m × k operands.
                unsafe {
                    product_into(
                        m,
                        n,
                        k,
                        lhs,
                        rhs,
                        whole.as_mut_ptr(),
                        n,
                        gemm::Parallelism::None,
                    )
                };
                for blocks in [2, 3, 8] {
                    let mut split = vec![f32::NAN; m * n];
                    // SAFETY: `split` is m × n, the operands as above.
                    unsafe { product_by_columns(m, n, k, lhs, rhs, split.as_mut_ptr(), blocks) };
                    let same = whole
                        .iter()
                        .zip(&split)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{m}x{n}x{k}, transposed {transposed}, {blocks} blocks"
                    );
                }
            }
        }
    }

    /// Forward and all gradients against burn's `Linear::forward`, with and without a bias, for a
    /// rank-3 input and a non-uniform upstream gradient.
    #[test]
    fn forward_and_gradients_match_burn_linear() {
        let device = Default::default();
        for bias in [true, false] {
            Flex::seed(&device, 5);
            let layer = LinearConfig::new(7, 11).with_bias(bias).init::<A>(&device);
            let x = Tensor::<Flex, 3>::random([3, 4, 7], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<Flex, 3>::random([3, 4, 11], Distribution::Normal(0.0, 1.0), &device);
            let x1 = Tensor::<A, 3>::from_inner(x.clone()).require_grad();
            let x2 = Tensor::<A, 3>::from_inner(x).require_grad();
            let y1 = linear(&layer, x1.clone());
            let y2 = layer.forward(x2.clone());
            close(y1.clone().inner(), y2.clone().inner());
            let w = Tensor::<A, 3>::from_inner(w);
            let g1 = (y1 * w.clone()).sum().backward();
            let g2 = (y2 * w).sum().backward();
            close(x1.grad(&g1).unwrap(), x2.grad(&g2).unwrap());
            let weight = layer.weight.val();
            close(weight.grad(&g1).unwrap(), weight.grad(&g2).unwrap());
            if let Some(b) = &layer.bias {
                close(b.val().grad(&g1).unwrap(), b.val().grad(&g2).unwrap());
            }
        }
    }

    /// The inference path (no autodiff) gives the same numbers.
    #[test]
    fn inference_matches_burn_linear() {
        let device = Default::default();
        Flex::seed(&device, 6);
        let layer = LinearConfig::new(300, 250).init::<Flex>(&device);
        let x = Tensor::<Flex, 2>::random([100, 300], Distribution::Normal(0.0, 1.0), &device);
        close(linear(&layer, x.clone()), layer.forward(x));
    }
}
