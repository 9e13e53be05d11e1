//! The loss and gradients of one batch, on the CPU split into one part per thread.
//!
//! A training step of a small Transformer on two cores is many products too small to split well
//! (`[1,600, 256] × [256, 256]` and the attention's per-head products), strided copies and
//! element-wise operations on one thread: the second core sat idle for about 30 % of a step. Here
//! the batch is cut into parts (every other example), each part's forward and backward runs on a
//! thread of its own ([`crate::parallel`]) with a copy of the model whose parameters are new
//! autodiff leaves — so the parts build separate graphs, and one part's backward does not wait for
//! the other's lock — and the parts' gradients are summed into the model's. Each part's loss is
//! its summed loss over the whole batch's tokens, so the sum is the batch's gradient (up to the
//! order of float additions). Measured on the `vs_pytorch` Transformer (batch 64 × 25, two
//! threads): a step took 0.63 s in one piece; two halves side by side, 0.43 s each.
//!
//! The parts' dropout masks come from streams seeded per part ([`crate::kernels::with_mask_seeds`]),
//! so a run stays reproducible, and `--resume` exact, on the same number of threads; a different
//! number of threads draws different masks, as a different number of GPUs does in fairseq.

use super::loss::cross_entropy;
use crate::model::architecture::Seq2Seq;
use crate::model::input::SourceBatch;
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Examples each part must hold before a batch is split across threads: below it, the products
/// of a part are too small to keep a core busy.
const MIN_EXAMPLES_PER_PART: usize = 8;

/// One part of a batch, teacher-forced.
#[derive(Debug, Clone)]
pub struct TeacherForced<B: Backend> {
    /// The source sentences.
    pub src: SourceBatch<B>,
    /// Decoder inputs `[rows, tgt_len]` (`<s>` + target).
    pub tgt_in: Tensor<B, 2, Int>,
    /// Tokens to predict `[rows, tgt_len]` (target + `</s>`, padding elsewhere).
    pub tgt_out: Tensor<B, 2, Int>,
    /// Real (non-padding) tokens of `tgt_out`.
    pub tokens: usize,
}

/// How many parts a batch of `examples` sentences is cut into on backend `B`: one per thread of
/// the current rayon pool on the CPU, as long as each gets [`MIN_EXAMPLES_PER_PART`]; else 1.
pub fn parts_for<B: AutodiffBackend>(examples: usize) -> usize {
    if !crate::parallel::splits::<B::InnerBackend>() {
        return 1;
    }
    rayon::current_num_threads()
        .min(examples / MIN_EXAMPLES_PER_PART)
        .max(1)
}

/// The loss per target token of the batch made of `parts` (label smoothing `label_smoothing`,
/// `pad` ignored) and its gradients with respect to `model`'s parameters; dropout masks drawn from
/// `seed`. `None` when the loss is not finite. One part runs on the calling thread with the
/// backend's generator seeded by `seed`; several run side by side (see the module notes).
pub fn batch_gradients<B, M>(
    model: &M,
    parts: Vec<TeacherForced<B>>,
    label_smoothing: f64,
    pad: u32,
    seed: u64,
) -> Option<(f64, GradientsParams)>
where
    B: AutodiffBackend,
    M: Seq2Seq<B> + AutodiffModule<B>,
{
    let tokens: usize = parts.iter().map(|p| p.tokens).sum();
    let run = |model: &M, part: &TeacherForced<B>| {
        let (logits, _) = model.forward(&part.src, part.tgt_in.clone());
        let sums = cross_entropy(logits, part.tgt_out.clone(), label_smoothing, pad);
        let loss = sums.smoothed.div_scalar(tokens.max(1) as f64);
        let value = f64::from(loss.clone().into_scalar().elem::<f32>());
        if !value.is_finite() {
            return None;
        }
        Some((value, GradientsParams::from_grads(loss.backward(), model)))
    };
    if let [part] = parts.as_slice() {
        B::seed(&part.src.ids.device(), seed);
        return run(model, part);
    }
    let seeded: Vec<(u64, TeacherForced<B>)> = parts
        .into_iter()
        .enumerate()
        .map(|(p, part)| (part_seed(seed, p), part))
        .collect();
    let results = crate::parallel::run_parts(seeded, |(seed, part)| {
        crate::kernels::with_mask_seeds(seed, || {
            let copy = model.clone().map(&mut FreshLeaves);
            run(&copy, &part).map(|(value, grads)| (value, grads, param_ids(&copy)))
        })
    });
    let mut total = 0.0;
    let mut merged = GradientsParams::new();
    for result in results {
        let (value, grads, ids) = result?;
        total += value;
        model.visit(&mut AddGrads {
            from: grads,
            ids: ids.into_iter(),
            into: &mut merged,
        });
    }
    Some((total, merged))
}

/// The seed of part `part`'s dropout masks.
fn part_seed(seed: u64, part: usize) -> u64 {
    let mut x = seed ^ (part as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 29)
}

/// Makes every float parameter a new leaf (new id, same values and trainability), so that a
/// copy's autodiff graph shares no node with the model's.
struct FreshLeaves;

impl<B: AutodiffBackend> ModuleMapper<B> for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let value = param.val();
        let trained = value.is_require_grad();
        let value = value.detach();
        Param::initialized(
            ParamId::new(),
            if trained { value.require_grad() } else { value },
        )
    }
}

/// The float parameters' ids in visit order.
fn param_ids<B: Backend, M: Module<B>>(model: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl<B: Backend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.id);
        }
    }
    let mut ids = Ids(Vec::new());
    model.visit(&mut ids);
    ids.0
}

/// Adds gradients keyed by a copy's ids (`from`; `ids`, the copy's ids in visit order) to the
/// model's (`into`) while visiting the model: the same architecture visits its parameters in the
/// same order.
struct AddGrads<'a, I> {
    from: GradientsParams,
    ids: I,
    into: &'a mut GradientsParams,
}

impl<B: AutodiffBackend, I: Iterator<Item = ParamId>> ModuleVisitor<B> for AddGrads<'_, I> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(copy) = self.ids.next() else { return };
        if let Some(g) = self.from.remove::<B::InnerBackend, D>(copy) {
            let sum = match self.into.remove::<B::InnerBackend, D>(param.id) {
                Some(earlier) => earlier + g,
                None => g,
            };
            self.into.register(param.id, sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::architecture::ModelConfig;
    use crate::model::transformer::{Transformer, TransformerConfig};
    use burn::backend::{Autodiff, Flex};
    use rosetta_text::vocab::SpecialIds;

    type B = Autodiff<Flex>;

    /// 16 sentences of 3–9 source and 2–8 target tokens, padded, rows `rows` of them.
    fn part(rows: &[usize]) -> TeacherForced<B> {
        let device = Default::default();
        let (src_len, tgt_len) = (9, 8);
        let mut src = Vec::new();
        let mut tgt_in = Vec::new();
        let mut tgt_out = Vec::new();
        let (mut lengths, mut tokens) = (Vec::new(), 0);
        for &r in rows {
            let (n, m) = (3 + r % 7, 2 + (r * 5) % 7);
            src.extend((0..src_len).map(|j| {
                if j < n {
                    (4 + (r * 7 + j * 3) % 20) as i64
                } else {
                    0
                }
            }));
            tgt_in.extend((0..tgt_len).map(|j| {
                if j < m {
                    (4 + (r + j * 5) % 20) as i64
                } else {
                    0
                }
            }));
            tgt_out.extend((0..tgt_len).map(|j| {
                if j < m {
                    (4 + (r * 3 + j) % 20) as i64
                } else {
                    0
                }
            }));
            lengths.push(n);
            tokens += m;
        }
        let ids = |v: Vec<i64>, len| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(v, [rows.len(), len]), &device)
        };
        TeacherForced {
            src: SourceBatch {
                ids: ids(src, src_len),
                lengths,
                specials: SpecialIds::default(),
            },
            tgt_in: ids(tgt_in, tgt_len),
            tgt_out: ids(tgt_out, tgt_len),
            tokens,
        }
    }

    #[test]
    fn a_batch_split_across_threads_has_the_gradients_of_one_piece() {
        let config = ModelConfig::Transformer(TransformerConfig {
            encoder_layers: 1,
            decoder_layers: 1,
            d_model: 32,
            heads: 4,
            ffn_size: 64,
            dropout: 0.0,
            ..TransformerConfig::default()
        });
        let model = Transformer::<B>::init(&config, 24, 24, &Default::default()).unwrap();
        let all: Vec<usize> = (0..16).collect();
        let (whole, grads) = batch_gradients(&model, vec![part(&all)], 0.1, 0, 1).unwrap();
        let evens: Vec<usize> = all.iter().copied().step_by(2).collect();
        let odds: Vec<usize> = all.iter().copied().skip(1).step_by(2).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (split, split_grads) = pool
            .install(|| batch_gradients(&model, vec![part(&evens), part(&odds)], 0.1, 0, 1))
            .unwrap();
        assert!((whole - split).abs() < 1e-5, "{whole} vs {split}");
        struct Compare<'a>(&'a GradientsParams, &'a GradientsParams, usize);
        impl ModuleVisitor<B> for Compare<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let a = self
                    .0
                    .get::<Flex, D>(param.id)
                    .expect("one piece has every gradient");
                let b = self
                    .1
                    .get::<Flex, D>(param.id)
                    .expect("the split has every gradient");
                // Some gradients are zero in exact arithmetic (the key bias: softmax does not see
                // a constant shift) and float noise in practice: the floor keeps those in.
                let scale = a.clone().abs().max().into_scalar().max(1e-3);
                let diff = (a - b).abs().max().into_scalar();
                assert!(
                    diff <= 1e-4 * scale,
                    "parameter {}: {diff} of {scale}",
                    self.2
                );
                self.2 += 1;
            }
        }
        let mut compare = Compare(&grads, &split_grads, 0);
        model.visit(&mut compare);
        assert!(compare.2 > 10, "{} parameters compared", compare.2);
    }
}
