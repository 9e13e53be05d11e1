//! The gate arithmetic of a GRU step, `(W x, U h + b, h) → h'`, as one operation with its own
//! backward (Cho et al. 2014, eqs. 5–8, in the "reset after" form of PyTorch and cuDNN):
//! `r = σ(x_r + u_r)`, `z = σ(x_z + u_z)`, `n = tanh(x_n + r ⊙ u_n)`, `h' = (1 − z) ⊙ n + z ⊙ h`.
//!
//! Written with tensor operations, a step is about a dozen small operations, each recorded for the
//! backward pass; here it is one, and the backward pass recomputes the gates from the inputs.

use super::simd_math::{dispatch, sigmoid, tanh};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::activation::{sigmoid as sigmoid_t, tanh as tanh_t};
use rayon::prelude::*;

/// Rows of the batch per parallel task: about 8k gate values each, so that a decoder step
/// (64 × 3·512) is split across the cores while a tiny batch stays on one (a rayon task costs a few
/// microseconds). The gates were a serial 6 % of a two-thread training step.
fn rows_per_task(hidden: usize) -> usize {
    (8192 / (3 * hidden).max(1)).max(1)
}

/// `rows_per_task(hidden) · width`, never 0 (rayon's chunk size must not be).
fn chunk(hidden: usize, width: usize) -> usize {
    (rows_per_task(hidden) * width).max(1)
}

/// The new hidden state `[batch, hidden]` from the projected input `xp` and projected state `hp`
/// (both `[batch, 3·hidden]`, gates in the order r, z, n, biases included) and the state `h`.
pub fn gru_gates<B: Backend>(xp: Tensor<B, 2>, hp: Tensor<B, 2>, h: Tensor<B, 2>) -> Tensor<B, 2> {
    super::Fused3 {
        forward: forward_flex,
        backward: backward_flex,
        composite,
    }
    .run(xp, hp, h)
}

/// The same with tensor operations, for other backends.
pub fn composite<B: Backend>(xp: Tensor<B, 2>, hp: Tensor<B, 2>, h: Tensor<B, 2>) -> Tensor<B, 2> {
    let mut x = xp.chunk(3, 1);
    let mut u = hp.chunk(3, 1);
    let (xn, un) = (x.remove(2), u.remove(2));
    let (xz, uz) = (x.remove(1), u.remove(1));
    let (xr, ur) = (x.remove(0), u.remove(0));
    let r = sigmoid_t(xr + ur);
    let z = sigmoid_t(xz + uz);
    let n = tanh_t(xn + r * un);
    n.clone() + z * (h - n)
}

/// `[batch, hidden]`, checked against the other operands.
fn dims(xp: &FlexTensor, hp: &FlexTensor, h: &FlexTensor) -> [usize; 2] {
    let (x, u, h) = (xp.shape().to_vec(), hp.shape().to_vec(), h.shape().to_vec());
    // The cell builds these shapes itself; a mismatch is a bug in Rosetta, not bad input.
    assert!(
        h.len() == 2 && x == [h[0], 3 * h[1]] && u == x,
        "GRU gates: xp {x:?}, hp {u:?}, h {h:?}"
    );
    [h[0], h[1]]
}

/// A row's three gates `[r, z, n]`, each exactly `hidden` long (`row` is `3 · hidden`).
#[inline(always)]
fn gate_slices(row: &[f32], hidden: usize) -> [&[f32]; 3] {
    let (r, rest) = row.split_at(hidden);
    let (z, n) = rest.split_at(hidden);
    [r, z, &n[..hidden]]
}

/// [`gate_slices`] for writing.
#[inline(always)]
fn gate_slices_mut(row: &mut [f32], hidden: usize) -> [&mut [f32]; 3] {
    let (r, rest) = row.split_at_mut(hidden);
    let (z, n) = rest.split_at_mut(hidden);
    [r, z, &mut n[..hidden]]
}

/// The gates `(r, z, n)` of element `j`, from a row's gate slices ([`gate_slices`]): the one place
/// the gate equations are written, for the forward and the backward pass.
#[inline(always)]
fn gates([xr, xz, xn]: [&[f32]; 3], [ur, uz, un]: [&[f32]; 3], j: usize) -> (f32, f32, f32) {
    let r = sigmoid(xr[j] + ur[j]);
    let z = sigmoid(xz[j] + uz[j]);
    let n = tanh(xn[j] + r * un[j]);
    (r, z, n)
}

#[inline(always)]
fn forward_rows(out: &mut [f32], x: &[f32], u: &[f32], h: &[f32], hidden: usize) {
    let rows = out.chunks_exact_mut(hidden).zip(h.chunks_exact(hidden));
    for ((out, h), (x, u)) in rows.zip(x.chunks_exact(3 * hidden).zip(u.chunks_exact(3 * hidden))) {
        // Every gate its own slice of exactly `hidden`: the loop then carries no index checks
        // (read as `x[2 · hidden + j]` it did; the gates were a fifth of a batched GRU decode).
        let (x, u) = (gate_slices(x, hidden), gate_slices(u, hidden));
        let (out, h) = (&mut out[..hidden], &h[..hidden]);
        for j in 0..hidden {
            let (_, z, n) = gates(x, u, j);
            out[j] = n + z * (h[j] - n);
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_rows(
    gx: &mut [f32],
    gu: &mut [f32],
    gh: &mut [f32],
    x: &[f32],
    u: &[f32],
    h: &[f32],
    g: &[f32],
    hidden: usize,
) {
    let h3 = 3 * hidden;
    let rows = gx
        .chunks_exact_mut(h3)
        .zip(gu.chunks_exact_mut(h3))
        .zip(gh.chunks_exact_mut(hidden));
    let inputs = x
        .chunks_exact(h3)
        .zip(u.chunks_exact(h3))
        .zip(h.chunks_exact(hidden).zip(g.chunks_exact(hidden)));
    for (((gx, gu), gh), ((x, u), (h, g))) in rows.zip(inputs) {
        // As in the forward pass: slices of exactly `hidden`, no index checks in the loop.
        let [gxr, gxz, gxn] = gate_slices_mut(gx, hidden);
        let [gur, guz, gun] = gate_slices_mut(gu, hidden);
        let (x, u) = (gate_slices(x, hidden), gate_slices(u, hidden));
        let un = u[2];
        let (gh, h, g) = (&mut gh[..hidden], &h[..hidden], &g[..hidden]);
        for j in 0..hidden {
            let (r, z, n) = gates(x, u, j);
            let dn = g[j] * (1.0 - z) * (1.0 - n * n);
            let dz = g[j] * (h[j] - n) * z * (1.0 - z);
            let dr = dn * un[j] * r * (1.0 - r);
            gxr[j] = dr;
            gur[j] = dr;
            gxz[j] = dz;
            guz[j] = dz;
            gxn[j] = dn;
            gun[j] = dn * r;
            gh[j] = g[j] * z;
        }
    }
}

fn forward_flex(xp: &FlexTensor, hp: &FlexTensor, h: &FlexTensor) -> FlexTensor {
    let [batch, hidden] = dims(xp, hp, h);
    let (x, u, h) = (xp.storage::<f32>(), hp.storage::<f32>(), h.storage::<f32>());
    let mut out = vec![0f32; batch * hidden];
    let (wide, narrow) = (chunk(hidden, 3 * hidden), chunk(hidden, hidden));
    out.par_chunks_mut(narrow)
        .zip(x.par_chunks(wide))
        .zip(u.par_chunks(wide))
        .zip(h.par_chunks(narrow))
        .for_each(|(((out, x), u), h)| {
            dispatch(
                #[inline(always)]
                || forward_rows(out, x, u, h, hidden),
            )
        });
    FlexTensor::from_data(TensorData::new(out, [batch, hidden]))
}

/// Gradients for `xp`, `hp` and `h` from the gradient `g` of `h'`.
fn backward_flex(
    xp: &FlexTensor,
    hp: &FlexTensor,
    h: &FlexTensor,
    g: &FlexTensor,
) -> [FlexTensor; 3] {
    let [batch, hidden] = dims(xp, hp, h);
    let (x, u, h, g) = (
        xp.storage::<f32>(),
        hp.storage::<f32>(),
        h.storage::<f32>(),
        g.storage::<f32>(),
    );
    let mut gx = vec![0f32; batch * 3 * hidden];
    let mut gu = vec![0f32; batch * 3 * hidden];
    let mut gh = vec![0f32; batch * hidden];
    let (wide, narrow) = (chunk(hidden, 3 * hidden), chunk(hidden, hidden));
    gx.par_chunks_mut(wide)
        .zip(gu.par_chunks_mut(wide))
        .zip(gh.par_chunks_mut(narrow))
        .zip(x.par_chunks(wide).zip(u.par_chunks(wide)))
        .zip(h.par_chunks(narrow).zip(g.par_chunks(narrow)))
        .for_each(|((((gx, gu), gh), (x, u)), (h, g))| {
            dispatch(
                #[inline(always)]
                || backward_rows(gx, gu, gh, x, u, h, g, hidden),
            )
        });
    [
        FlexTensor::from_data(TensorData::new(gx, [batch, 3 * hidden])),
        FlexTensor::from_data(TensorData::new(gu, [batch, 3 * hidden])),
        FlexTensor::from_data(TensorData::new(gh, [batch, hidden])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type A = Autodiff<Flex>;

    fn inputs(device: &burn::backend::flex::FlexDevice) -> [Tensor<Flex, 2>; 4] {
        Flex::seed(device, 11);
        let n = |dims: [usize; 2]| Tensor::random(dims, Distribution::Normal(0.0, 2.0), device);
        // 300 rows: more than one parallel task (210 rows each at hidden 13).
        [
            n([300, 3 * 13]),
            n([300, 3 * 13]),
            n([300, 13]),
            n([300, 13]),
        ]
    }

    fn close<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) {
        crate::kernels::assert_close(a, b, 2e-6);
    }

    #[test]
    fn forward_and_gradients_match_tensor_operations() {
        let device = Default::default();
        let [x, u, h, w] = inputs(&device);
        close(
            gru_gates(x.clone(), u.clone(), h.clone()),
            composite(x.clone(), u.clone(), h.clone()),
        );
        let track = |t: &Tensor<Flex, 2>| Tensor::<A, 2>::from_inner(t.clone()).require_grad();
        let w = Tensor::<A, 2>::from_inner(w);
        let (x1, u1, h1) = (track(&x), track(&u), track(&h));
        let g1 = (gru_gates(x1.clone(), u1.clone(), h1.clone()) * w.clone())
            .sum()
            .backward();
        let (x2, u2, h2) = (track(&x), track(&u), track(&h));
        let g2 = (composite(x2.clone(), u2.clone(), h2.clone()) * w)
            .sum()
            .backward();
        close(x1.grad(&g1).unwrap(), x2.grad(&g2).unwrap());
        close(u1.grad(&g1).unwrap(), u2.grad(&g2).unwrap());
        close(h1.grad(&g1).unwrap(), h2.grad(&g2).unwrap());
    }
}
