//! Token-level cross-entropy with label smoothing, padding masked out.
//!
//! burn's `CrossEntropyLoss` averages over padded positions too, so the loss is written here:
//! `ℓ = (1 − ε)·(−log p_y) + ε·mean_v(−log p_v)` per real token (Szegedy et al. 2016, §7; the uniform
//! distribution covers every class, as in PyTorch's `label_smoothing`).

use crate::model::input::ids_tensor;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rosetta_text::batch::PaddedIds;

/// Summed losses of a batch.
#[derive(Debug, Clone)]
pub struct LossSums<B: Backend> {
    /// Sum of the label-smoothed loss over real tokens (optimize `smoothed / tokens`).
    pub smoothed: Tensor<B, 1>,
    /// Sum of the plain negative log-likelihood over real tokens (for perplexity).
    pub nll: Tensor<B, 1>,
}

/// Computes the summed losses. `logits`: `[batch, len, vocab]`; `targets`: `[batch, len]` with
/// `pad` on padding. On the CPU backend this is one fused operation
/// ([`crate::kernels::fused_cross_entropy`]); elsewhere [`cross_entropy_composite`].
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    smoothing: f64,
    pad: u32,
) -> LossSums<B> {
    let [batch, len, vocab] = logits.dims();
    let n = batch * len;
    let fused = crate::kernels::fused_cross_entropy(
        logits.reshape([n, vocab]),
        targets.reshape([n]),
        i64::from(pad),
        smoothing as f32,
    );
    match fused {
        Ok((smoothed, nll)) => LossSums { smoothed, nll },
        Err((logits, targets)) => cross_entropy_composite(
            logits.reshape([batch, len, vocab]),
            targets.reshape([batch, len]),
            smoothing,
            pad,
        ),
    }
}

/// Summed negative log-likelihood (no smoothing) of a teacher-forced batch, and its real target
/// tokens (`</s>` included): the one perplexity path of validation during training and of
/// `evaluate` ([`crate::translate::Translator::score_references`]). `logits`:
/// `[batch, len, vocab]` (or log-probabilities, e.g. an ensemble's mixture); `tgt_out`: the
/// references shifted left, padded.
pub fn teacher_forced_nll<B: Backend>(
    logits: Tensor<B, 3>,
    tgt_out: &PaddedIds,
    pad: u32,
    device: &B::Device,
) -> (f64, usize) {
    let sums = cross_entropy(logits, ids_tensor(tgt_out, device), 0.0, pad);
    (
        f64::from(sums.nll.into_scalar().elem::<f32>()),
        tgt_out.real_tokens(),
    )
}

/// [`cross_entropy`] written with tensor operations, for backends without the fused kernel.
pub fn cross_entropy_composite<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    smoothing: f64,
    pad: u32,
) -> LossSums<B> {
    let [batch, len, vocab] = logits.dims();
    let n = batch * len;
    let log_probs = log_softmax(logits.reshape([n, vocab]), 1); // [n, vocab]
    let targets = targets.reshape([n, 1]);
    let pad = targets.clone().equal_elem(i64::from(pad)).reshape([n]); // [n]
    let nll = log_probs
        .clone()
        .gather(1, targets)
        .reshape([n])
        .neg()
        .mask_fill(pad.clone(), 0.0); // [n]
    let smoothed = if smoothing > 0.0 {
        let uniform = log_probs.mean_dim(1).reshape([n]).neg().mask_fill(pad, 0.0);
        nll.clone().mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing)
    } else {
        nll.clone()
    };
    LossSums {
        smoothed: smoothed.sum(),
        nll: nll.sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use rosetta_text::vocab::PAD;

    type B = Flex;

    #[test]
    fn padding_contributes_nothing_and_values_match_by_hand() {
        let device = Default::default();
        // Two positions, vocab 4; the second target is padding.
        let logits = Tensor::<B, 3>::from_data(
            TensorData::new(vec![0.0f32, 1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0], [1, 2, 4]),
            &device,
        );
        let targets = Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![3i32, PAD as i32], [1, 2]),
            &device,
        );
        let sums = cross_entropy(logits, targets, 0.1, PAD);
        let lse = (0f64.exp() + 1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        let nll = lse - 3.0;
        let uniform = lse - 1.5;
        let nll_got: f32 = sums.nll.into_scalar();
        let smoothed_got: f32 = sums.smoothed.into_scalar();
        assert!((nll_got as f64 - nll).abs() < 1e-5, "{nll_got} vs {nll}");
        let expected = 0.9 * nll + 0.1 * uniform;
        assert!((smoothed_got as f64 - expected).abs() < 1e-5);
    }
}
