//! LoRA, low-rank adaptation (Hu et al. 2021): a frozen dense layer `y = x W + b` is fine-tuned as
//! `y = x W + b + (α / r) · dropout(x) A B`, training only `A` `[d_in, r]` and `B` `[r, d_out]`.
//! `B` starts at zero (§4.1), so training starts exactly from the pretrained model; `A` starts from
//! a Kaiming-uniform draw, as in the reference implementation (`loralib`, PEFT).
//!
//! Only the teacher-forced forward pass (training, validation perplexity) reads the update
//! unmerged. Search steps run packed kernels over `W`, so a model is merged
//! ([`Lora::merge_into`]: `W ← W + (α/r) A B`, exact up to rounding) before it decodes.

use crate::error::{Error, Result};
use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

/// Which fine-tuning the `[finetune]` table asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinetuneMethod {
    /// Every parameter is trained (with `train.init_from`: full fine-tuning).
    #[default]
    None,
    /// Low-rank updates of chosen dense layers; everything else frozen.
    Lora,
    /// Bottleneck adapters after every sublayer ([`crate::model::adapter`]); everything else
    /// frozen.
    Adapter,
}

/// The dense layers LoRA can adapt in a Transformer.
pub const LORA_TARGETS: [&str; 6] = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"];

/// The dense layers LoRA can adapt in an RNN: `ih`, the input projections of every encoder
/// direction and of the decoder's embedding; `pre_output`, the attentional (deep-output) layer;
/// `output`, the vocabulary projection when it is not tied to the embedding. The recurrent
/// hidden-to-hidden and attention projections run inside fused per-step kernels and stay frozen.
pub const RNN_LORA_TARGETS: [&str; 3] = ["ih", "pre_output", "output"];

/// The `[finetune]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    /// `none`, `lora` or `adapter`.
    pub method: FinetuneMethod,
    /// LoRA rank `r`.
    pub rank: usize,
    /// LoRA scale numerator `α` (the update is multiplied by `α / r`).
    pub alpha: f64,
    /// Dropout on the LoRA branch's input.
    pub dropout: f64,
    /// Layers to adapt: in a Transformer among `q_proj`, `k_proj`, `v_proj`, `out_proj` (every
    /// attention) and `fc1`, `fc2` (every feed-forward); in an RNN among [`RNN_LORA_TARGETS`].
    pub targets: Vec<String>,
    /// Inner width of each adapter (`method = "adapter"`).
    pub bottleneck: usize,
    /// Also train the embedding tables (and the output projection tied to them), as PEFT's
    /// `modules_to_save`: the data may bring pieces the base never read, such as a new source
    /// language's, whose frozen vectors LoRA and adapters cannot change. They are saved with the
    /// adapter (written only when set, so configs saved before the key existed read back the same).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub train_embeddings: bool,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        // Hu et al. (2021) adapt the query and value projections (§7.1).
        FinetuneConfig {
            method: FinetuneMethod::None,
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
            // Bapna & Firat (2019) use 64–4096 by language pair; 64 suits small data.
            bottleneck: 64,
            train_embeddings: false,
        }
    }
}

impl FinetuneConfig {
    /// Checks the settings in plain English.
    pub fn validate(&self) -> Result<()> {
        match self.method {
            FinetuneMethod::None => return Ok(()),
            FinetuneMethod::Adapter => {
                if self.bottleneck == 0 {
                    return Err(Error::Config(
                        "finetune.bottleneck must be at least 1".into(),
                    ));
                }
                return Ok(());
            }
            FinetuneMethod::Lora => {}
        }
        if self.rank == 0 {
            return Err(Error::Config("finetune.rank must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::Config(format!(
                "finetune.alpha = {} must be a positive number",
                self.alpha
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!(
                "finetune.dropout = {} must be in [0, 1)",
                self.dropout
            )));
        }
        if self.targets.is_empty() {
            return Err(Error::Config(
                "finetune.targets is empty: name at least one layer (a Transformer's q_proj, \
                 k_proj, v_proj, out_proj, fc1, fc2; an RNN's ih, pre_output, output)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Checks that every LoRA target is among the layers `allowed` of a model `arch`.
    pub fn check_targets(&self, arch: &str, allowed: &[&str]) -> Result<()> {
        if self.method != FinetuneMethod::Lora {
            return Ok(());
        }
        for t in &self.targets {
            if !allowed.contains(&t.as_str()) {
                return Err(Error::Config(format!(
                    "finetune.targets: the model (arch = \"{arch}\") has no layer \"{t}\"; LoRA \
                     can adapt {}",
                    allowed.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Whether `key` (a parameter path) belongs to the fine-tuning parameters (LoRA updates or
    /// adapters), which are saved apart from the frozen base.
    pub fn is_finetune_key(key: &str) -> bool {
        key.contains("_lora.") || key.contains("_adapter.")
    }

    /// The parameter paths (a regular expression) an adapter file holds: the LoRA updates or
    /// adapters, and with `train_embeddings` the embedding tables.
    pub fn saved_pattern(&self) -> &'static str {
        if self.train_embeddings {
            r"_lora\.|_adapter\.|(^|\.)(shared|embed_tokens|embedding)\.weight$"
        } else {
            r"_lora\.|_adapter\."
        }
    }

    /// Whether adapters are added after each sublayer.
    pub fn adapters(&self) -> bool {
        self.method == FinetuneMethod::Adapter
    }

    /// Whether `layer` is adapted.
    pub fn targets(&self, layer: &str) -> bool {
        self.method == FinetuneMethod::Lora && self.targets.iter().any(|t| t == layer)
    }
}

/// The trained low-rank update of one dense layer.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// Down-projection `[d_in, rank]`.
    pub a: Param<Tensor<B, 2>>,
    /// Up-projection `[rank, d_out]`, zero at the start.
    pub b: Param<Tensor<B, 2>>,
    dropout: Dropout,
    /// `α / r`.
    #[module(skip)]
    scale: f64,
}

impl<B: Backend> Lora<B> {
    /// A fresh update for a `[d_in, d_out]` layer: zero, so the model is unchanged.
    pub fn new(d_in: usize, d_out: usize, config: &FinetuneConfig, device: &B::Device) -> Self {
        // Kaiming-uniform with a = √5, as torch.nn.Linear and loralib initialize A.
        let bound = 1.0 / (d_in as f64).sqrt();
        Lora {
            a: Param::from_tensor(Tensor::random(
                [d_in, config.rank],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            b: Param::from_tensor(Tensor::zeros([config.rank, d_out], device)),
            dropout: DropoutConfig::new(config.dropout).init(),
            scale: config.alpha / config.rank as f64,
        }
    }

    /// The update `(α/r) · dropout(x) A B` for `x` `[.., d_in]` → `[.., d_out]`.
    pub fn delta<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product();
        let h = crate::kernels::dropout(x.reshape([rows, d_in]), self.dropout.prob)
            .matmul(self.a.val())
            .matmul(self.b.val())
            .mul_scalar(self.scale);
        let mut out = dims;
        out[D - 1] = h.dims()[1];
        h.reshape(out)
    }

    /// `layer` with the update folded into its weight: `W + (α/r) A B`.
    pub fn merge_into(&self, mut layer: Linear<B>) -> Linear<B> {
        let update = self.a.val().matmul(self.b.val()).mul_scalar(self.scale);
        let weight = layer.weight.val() + update;
        layer.weight = Param::from_tensor(weight);
        layer
    }
}

/// `x W + b`, plus the LoRA update where the layer has one.
pub fn adapted<B: Backend, const D: usize>(
    layer: &Linear<B>,
    lora: Option<&Lora<B>>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match lora {
        Some(l) => crate::kernels::linear(layer, x.clone()) + l.delta(x),
        None => crate::kernels::linear(layer, x),
    }
}
