//! Optimizers (Adam, AdamW, SGD with momentum, RMSprop), global-norm gradient clipping, and saving
//! optimizer state for exact resume.

use super::adam::FusedAdam;
use crate::error::{Error, Result};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdamW, AdamWConfig, GradientsParams, Optimizer, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient.
    #[default]
    Adam,
    /// AdamW (Loshchilov & Hutter 2019): decoupled weight decay.
    Adamw,
    /// Stochastic gradient descent with (optional) momentum.
    Sgd,
    /// RMSprop (Hinton 2012).
    Rmsprop,
}

/// Optimizer hyperparameters (part of the `[train]` table).
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerSettings {
    /// Which optimizer.
    pub kind: OptimizerKind,
    /// Weight decay (L2 for Adam/SGD/RMSprop, decoupled for AdamW).
    pub weight_decay: f64,
    /// Momentum for SGD and RMSprop.
    pub momentum: f64,
    /// Adam's β₁.
    pub beta1: f64,
    /// Adam's β₂.
    pub beta2: f64,
    /// Adam/RMSprop ε (PyTorch's default 1e-8; burn's default differs).
    pub epsilon: f64,
}

/// One of the optimizers, for a model type `M`.
pub enum AnyOptimizer<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// Adam (one fused pass per parameter; burn's `Adam` state format).
    Adam(OptimizerAdaptor<FusedAdam, M, B>),
    /// AdamW.
    AdamW(OptimizerAdaptor<AdamW, M, B>),
    /// SGD.
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
    /// RMSprop.
    RmsProp(OptimizerAdaptor<RmsProp, M, B>),
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> AnyOptimizer<B, M> {
    /// Creates the optimizer with fresh state.
    pub fn new(s: &OptimizerSettings) -> Self {
        let decay = (s.weight_decay > 0.0).then(|| WeightDecayConfig::new(s.weight_decay as f32));
        match s.kind {
            OptimizerKind::Adam => AnyOptimizer::Adam(OptimizerAdaptor::from(FusedAdam {
                beta_1: s.beta1 as f32,
                beta_2: s.beta2 as f32,
                epsilon: s.epsilon as f32,
                weight_decay: s.weight_decay as f32,
            })),
            OptimizerKind::Adamw => AnyOptimizer::AdamW(
                AdamWConfig::new()
                    .with_beta_1(s.beta1 as f32)
                    .with_beta_2(s.beta2 as f32)
                    .with_epsilon(s.epsilon as f32)
                    .with_weight_decay(s.weight_decay as f32)
                    .init(),
            ),
            OptimizerKind::Sgd => AnyOptimizer::Sgd(
                SgdConfig::new()
                    .with_weight_decay(decay)
                    .with_momentum((s.momentum > 0.0).then_some(MomentumConfig {
                        momentum: s.momentum,
                        dampening: 0.0,
                        nesterov: false,
                    }))
                    .init(),
            ),
            OptimizerKind::Rmsprop => AnyOptimizer::RmsProp(
                RmsPropConfig::new()
                    .with_momentum(s.momentum as f32)
                    .with_epsilon(s.epsilon as f32)
                    .with_weight_decay(decay)
                    .init(),
            ),
        }
    }

    /// Applies one update.
    pub fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            AnyOptimizer::Adam(o) => o.step(lr, model, grads),
            AnyOptimizer::AdamW(o) => o.step(lr, model, grads),
            AnyOptimizer::Sgd(o) => o.step(lr, model, grads),
            AnyOptimizer::RmsProp(o) => o.step(lr, model, grads),
        }
    }

    /// Saves the optimizer state to `<base>.mpk`.
    pub fn save(&self, base: &Path) -> Result<()> {
        let rec = recorder();
        let result = match self {
            AnyOptimizer::Adam(o) => Recorder::<B>::record(&rec, o.to_record(), base.to_path_buf()),
            AnyOptimizer::AdamW(o) => {
                Recorder::<B>::record(&rec, o.to_record(), base.to_path_buf())
            }
            AnyOptimizer::Sgd(o) => Recorder::<B>::record(&rec, o.to_record(), base.to_path_buf()),
            AnyOptimizer::RmsProp(o) => {
                Recorder::<B>::record(&rec, o.to_record(), base.to_path_buf())
            }
        };
        result.map_err(|e| Error::Checkpoint {
            path: base.with_extension("mpk"),
            message: format!("cannot save the optimizer state: {e}"),
        })
    }

    /// Loads state saved by [`AnyOptimizer::save`] (the optimizer kind must match).
    pub fn load(self, base: &Path, device: &B::Device) -> Result<Self> {
        let rec = recorder();
        let err = |e: burn::record::RecorderError| Error::Checkpoint {
            path: base.with_extension("mpk"),
            message: format!(
                "cannot load the optimizer state (was it saved by another optimizer?): {e}"
            ),
        };
        let path = base.to_path_buf();
        Ok(match self {
            AnyOptimizer::Adam(o) => AnyOptimizer::Adam(
                o.load_record(Recorder::<B>::load(&rec, path, device).map_err(err)?),
            ),
            AnyOptimizer::AdamW(o) => AnyOptimizer::AdamW(
                o.load_record(Recorder::<B>::load(&rec, path, device).map_err(err)?),
            ),
            AnyOptimizer::Sgd(o) => AnyOptimizer::Sgd(
                o.load_record(Recorder::<B>::load(&rec, path, device).map_err(err)?),
            ),
            AnyOptimizer::RmsProp(o) => AnyOptimizer::RmsProp(
                o.load_record(Recorder::<B>::load(&rec, path, device).map_err(err)?),
            ),
        })
    }
}

struct SquaredNorms<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sums: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorms<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.sums.push(g.square().sum());
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of all gradients (one device sync).
pub fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut visitor = SquaredNorms::<B> {
        grads,
        sums: Vec::new(),
    };
    model.visit(&mut visitor);
    if visitor.sums.is_empty() {
        return 0.0;
    }
    let total: f32 = Tensor::cat(visitor.sums, 0).sum().into_scalar().elem();
    (total as f64).sqrt()
}

/// Multiplies every gradient by `factor` (used to clip by global norm, as PyTorch's
/// `clip_grad_norm_`, and to average accumulated gradients).
pub fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    factor: f64,
) {
    model.visit(&mut Scale { grads, factor });
}

struct NonFinite<B: Backend> {
    flags: Vec<Tensor<B, 1, Bool>>,
}

impl<B: Backend> ModuleVisitor<B> for NonFinite<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.flags.push(param.val().is_finite().bool_not().any());
    }
}

/// Whether every parameter value is finite (one device sync). Checked before anything is saved, so
/// a diverged model never overwrites a good checkpoint.
pub fn params_finite<B: Backend, M: Module<B>>(model: &M) -> bool {
    let mut visitor = NonFinite::<B> { flags: Vec::new() };
    model.visit(&mut visitor);
    if visitor.flags.is_empty() {
        return true;
    }
    !Tensor::cat(visitor.flags, 0)
        .any()
        .into_scalar()
        .elem::<bool>()
}
