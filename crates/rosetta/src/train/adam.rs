//! Adam (Kingma & Ba 2015, Algorithm 1, with the ε̂ form of §2) as one pass over each parameter.
//!
//! burn's `Adam` updates a parameter with about ten tensor operations, each a pass over memory and a
//! new buffer; for the 16-million-parameter reference model those passes ran on one core and cost
//! ≈ 4 % of a two-thread training step. This optimizer computes the same expressions in the same
//! order, element by element, in parallel and in place when the buffers are not shared. On other
//! backends it runs burn's operations. Its state is burn's [`AdamState`], so optimizer checkpoints
//! written by either load into the other and resume exactly.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::optim::{AdamState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use rayon::prelude::*;

/// Elements per parallel task: large enough that rayon's per-task cost vanishes, small enough that
/// the largest matrices split evenly across the cores.
const CHUNK: usize = 1 << 15;

/// Adam with optional L2 weight decay added to the gradient (burn's and PyTorch's `Adam`).
#[derive(Debug, Clone)]
pub struct FusedAdam {
    /// β₁.
    pub beta_1: f32,
    /// β₂.
    pub beta_2: f32,
    /// ε.
    pub epsilon: f32,
    /// L2 penalty (0 for none).
    pub weight_decay: f32,
}

/// The per-step scalars, computed as burn computes them (in `f32`).
#[derive(Debug, Clone, Copy)]
struct Scalars {
    beta_1: f32,
    beta_2: f32,
    /// `1 − β₁`, `1 − β₂`.
    one_minus_1: f32,
    one_minus_2: f32,
    /// `√(1 − β₂ᵗ) / (1 − β₁ᵗ)`.
    combined: f32,
    /// `ε √(1 − β₂ᵗ)`.
    epsilon: f32,
    lr: f32,
    weight_decay: f32,
}

impl FusedAdam {
    fn scalars(&self, time: usize, lr: LearningRate) -> Scalars {
        let t = i32::try_from(time).unwrap_or(i32::MAX);
        let correction_2 = (1.0 - self.beta_2.powi(t)).sqrt();
        Scalars {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            one_minus_1: 1.0 - self.beta_1,
            one_minus_2: 1.0 - self.beta_2,
            combined: correction_2 / (1.0 - self.beta_1.powi(t)),
            epsilon: self.epsilon * correction_2,
            lr: lr as f32,
            weight_decay: self.weight_decay,
        }
    }

    /// burn's operations, for backends without the fused pass.
    fn composite<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<B, D>,
        mut grad: Tensor<B, D>,
        state: Option<AdaptiveMomentumState<B, D>>,
    ) -> (Tensor<B, D>, AdaptiveMomentumState<B, D>) {
        if self.weight_decay > 0.0 {
            grad = param.clone().mul_scalar(self.weight_decay).add(grad);
        }
        let state = match state {
            Some(s) => AdaptiveMomentumState::new(
                s.time + 1,
                s.moment_1
                    .mul_scalar(self.beta_1)
                    .add(grad.clone().mul_scalar(1.0 - self.beta_1)),
                s.moment_2
                    .mul_scalar(self.beta_2)
                    .add(grad.square().mul_scalar(1.0 - self.beta_2)),
            ),
            None => AdaptiveMomentumState::new(
                1,
                grad.clone().mul_scalar(1.0 - self.beta_1),
                grad.square().mul_scalar(1.0 - self.beta_2),
            ),
        };
        let k = self.scalars(state.time, lr);
        let update = state
            .moment_1
            .clone()
            .mul_scalar(k.combined)
            .div(state.moment_2.clone().sqrt().add_scalar(k.epsilon));
        (param - update.mul_scalar(k.lr), state)
    }

    /// The fused pass on the CPU backend.
    fn fused<const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<Flex, D>,
        grad: Tensor<Flex, D>,
        state: Option<AdaptiveMomentumState<Flex, D>>,
    ) -> (Tensor<Flex, D>, AdaptiveMomentumState<Flex, D>) {
        let first = state.is_none();
        let (time, m1, m2) = match state {
            Some(s) => (s.time + 1, s.moment_1, s.moment_2),
            None => (1, param.zeros_like(), param.zeros_like()),
        };
        let k = self.scalars(time, lr);
        let grad = grad.into_primitive().tensor().to_contiguous();
        let (mut p, mut m1, mut m2) = (owned(param), owned(m1), owned(m2));
        let g = grad.storage::<f32>();
        let (ps, m1s, m2s) = (
            p.storage_mut::<f32>(),
            m1.storage_mut::<f32>(),
            m2.storage_mut::<f32>(),
        );
        ps.par_chunks_mut(CHUNK)
            .zip(m1s.par_chunks_mut(CHUNK))
            .zip(m2s.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, m1), m2), g)| update(p, m1, m2, g, &k, first));
        let tensor = |t: FlexTensor| Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(t));
        (
            tensor(p),
            AdaptiveMomentumState::new(time, tensor(m1), tensor(m2)),
        )
    }
}

/// A contiguous tensor that owns its buffer when nothing else holds it (then updated in place;
/// otherwise `storage_mut` copies).
fn owned<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    let t = t.into_primitive().tensor();
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        t
    } else {
        t.to_contiguous()
    }
}

/// One chunk of the update, expression by expression as burn's `Adam` (no fused multiply-add, so
/// the results are the same bits).
#[inline(always)]
fn update(p: &mut [f32], m1: &mut [f32], m2: &mut [f32], g: &[f32], k: &Scalars, first: bool) {
    for (((p, m1), m2), &g) in p.iter_mut().zip(m1.iter_mut()).zip(m2.iter_mut()).zip(g) {
        let g = if k.weight_decay > 0.0 {
            *p * k.weight_decay + g
        } else {
            g
        };
        if first {
            *m1 = g * k.one_minus_1;
            *m2 = g * g * k.one_minus_2;
        } else {
            *m1 = *m1 * k.beta_1 + g * k.one_minus_1;
            *m2 = *m2 * k.beta_2 + g * g * k.one_minus_2;
        }
        let step = *m1 * k.combined / (m2.sqrt() + k.epsilon);
        *p -= step * k.lr;
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdam {
    type State<const D: usize> = AdamState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let momentum = state.map(|s| s.momentum);
        let all_f32 = param.dtype() == DType::F32 && grad.dtype() == DType::F32;
        let inputs = (param, grad, momentum);
        let (param, momentum) = match crate::kernels::cast::<
            _,
            (
                Tensor<Flex, D>,
                Tensor<Flex, D>,
                Option<AdaptiveMomentumState<Flex, D>>,
            ),
        >(inputs)
        {
            Ok((p, g, m)) if all_f32 && m.as_ref().is_none_or(|m| m.max_moment_2.is_none()) => {
                crate::kernels::cast_back(self.fused(lr, p, g, m))
            }
            Ok(flex) => {
                let (p, g, m) = crate::kernels::cast_back(flex);
                self.composite(lr, p, g, m)
            }
            Err((p, g, m)) => self.composite(lr, p, g, m),
        };
        (param, Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::{Module, Param};
    use burn::optim::adaptor::OptimizerAdaptor;
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::record::Recorder;

    type A = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        matrix: Param<Tensor<B, 2>>,
        vector: Param<Tensor<B, 1>>,
    }

    /// Deterministic values in about [−1, 1] without burn's global generator, which tests running
    /// in parallel share.
    fn values<const D: usize>(dims: [usize; D], seed: f32) -> Tensor<A, D> {
        let n = dims.iter().product::<usize>();
        let v = (0..n).map(|i| (i as f32 * 0.618 + seed).sin()).collect();
        Tensor::from_data(TensorData::new(v, dims), &Default::default())
    }

    fn model() -> Two<A> {
        Two {
            // More elements than one parallel chunk, so the split is exercised.
            matrix: Param::from_tensor(values([300, 257], 1.0)),
            vector: Param::from_tensor(values([7], 2.0)),
        }
    }

    /// Three steps on the same gradients, with `opt`.
    fn run<O: SimpleOptimizer<Flex>>(mut opt: OptimizerAdaptor<O, Two<A>, A>) -> Vec<Vec<f32>> {
        let mut m = model();
        for step in 0..3 {
            let x = values([257], 3.0 + step as f32);
            let loss = (m
                .matrix
                .val()
                .matmul(x.clone().reshape([257, 1]))
                .tanh()
                .sum()
                + (m.vector.val() * x.slice(0..7).mul_scalar(step as f32)).sum())
            .powi_scalar(2);
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            m = opt.step(1e-2, m, grads);
        }
        vec![
            m.matrix.val().into_data().to_vec::<f32>().unwrap(),
            m.vector.val().into_data().to_vec::<f32>().unwrap(),
        ]
    }

    #[test]
    fn same_bits_as_burns_adam_with_and_without_weight_decay() {
        for decay in [0.0f32, 0.01] {
            let burn = AdamConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay((decay > 0.0).then(|| WeightDecayConfig::new(decay)))
                .init::<A, Two<A>>();
            let fused = OptimizerAdaptor::from(FusedAdam {
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-8,
                weight_decay: decay,
            });
            let (a, b) = (run(burn), run(fused));
            for (a, b) in a.iter().zip(&b) {
                let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert_eq!(differ, 0, "weight decay {decay}: max |diff| {worst}");
            }
        }
    }

    #[test]
    fn loads_the_state_burns_adam_saved_and_continues_the_same() {
        use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("optim");
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let step = |m: Two<A>, k: usize| {
            let loss = (m.matrix.val().sum() * values([1], k as f32).sum()).powi_scalar(2)
                + m.vector.val().tanh().sum();
            GradientsParams::from_grads(loss.backward(), &m)
        };
        let mut burn = AdamConfig::new().with_epsilon(1e-8).init::<A, Two<A>>();
        let m = burn.step(1e-2, model(), step(model(), 1));
        recorder.record(burn.to_record(), base.clone()).unwrap();
        let m_burn = burn.step(1e-2, m.clone(), step(m.clone(), 2));
        let fused = OptimizerAdaptor::<FusedAdam, Two<A>, A>::from(FusedAdam {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
        });
        let mut fused = fused.load_record(recorder.load(base, &Default::default()).unwrap());
        let m_fused = fused.step(1e-2, m.clone(), step(m, 2));
        assert_eq!(
            m_burn.matrix.val().into_data(),
            m_fused.matrix.val().into_data()
        );
        assert_eq!(
            m_burn.vector.val().into_data(),
            m_fused.vector.val().into_data()
        );
    }

    #[test]
    fn composite_matches_the_fused_pass() {
        let opt = FusedAdam {
            beta_1: 0.8,
            beta_2: 0.99,
            epsilon: 1e-6,
            weight_decay: 0.1,
        };
        let p = values([40, 900], 4.0).inner();
        let (mut p1, mut p2) = (p.clone(), p);
        let (mut s1, mut s2) = (None, None);
        for step in 0..3 {
            let g = values([40, 900], 5.0 + step as f32).inner();
            let (a, sa) = opt.fused(1e-3, p1, g.clone(), s1);
            let (b, sb) = opt.composite(1e-3, p2, g, s2);
            (p1, p2, s1, s2) = (a, b, Some(sa), Some(sb));
        }
        assert_eq!(p1.into_data(), p2.into_data());
        let (s1, s2) = (s1.unwrap(), s2.unwrap());
        assert_eq!(s1.time, 3);
        assert_eq!(s1.moment_2.into_data(), s2.moment_2.into_data());
    }
}
