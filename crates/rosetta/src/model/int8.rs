//! Inference in 8-bit integers, and the int8 model directory.
//!
//! [`Int8Pinner`] turns a Transformer's dense layers, its vocabulary projection and the token table
//! tied to it into 8-bit weights held by the layers' [`PackCache`]s, dropping the float tensors:
//! quantized from the float weights at load (`--quantize int8`), or read from a stored int8 model
//! directory ([`write_int8_dir`]), whose `model.int8.safetensors` holds each such weight as
//! `<name>.int8` (`[d_out, d_in]`, i8) and `<name>.scale` (`[d_out]`, f32), and every other parameter
//! (LayerNorms, biases, learned positions) in float32 under its own name. Loading a stored directory
//! never materializes the float weights: its peak memory is the int8 model, not the float one.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::kernels::{Int8Kernel, Int8Weight, PackCache, WeightLayout, quantize_tensor};
use crate::model::architecture::AnyModel;
use crate::train::checkpoint::{WEIGHTS, write_atomic};
use crate::train::safetensors_file::Header;
use crate::train::trainer::CONFIG_FILE;
use burn::module::Param;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use std::cell::RefCell;
use std::collections::HashSet;
use std::path::Path;

/// The weights of an int8 model directory (in place of `model.safetensors`).
pub const INT8_WEIGHTS: &str = "model.int8.safetensors";
/// Suffix of a weight's quantized values in [`INT8_WEIGHTS`].
const VALUES: &str = ".int8";
/// Suffix of a weight's per-column scales.
const SCALES: &str = ".scale";

/// Puts weights into 8 bits, by parameter name, and remembers which.
pub struct Int8Pinner<'a> {
    kernel: Int8Kernel,
    /// `None`: quantize the float weights; `Some`: read the stored ones.
    stored: Option<&'a Header>,
    pinned: RefCell<Vec<(String, PackCache)>>,
}

impl<'a> Int8Pinner<'a> {
    /// Quantizes each float weight it is given, per output column.
    pub fn quantize(kernel: Int8Kernel) -> Self {
        Int8Pinner {
            kernel,
            stored: None,
            pinned: RefCell::default(),
        }
    }

    /// Reads each weight from the int8 weights file `stored`.
    pub fn stored(stored: &'a Header, kernel: Int8Kernel) -> Self {
        Int8Pinner {
            kernel,
            stored: Some(stored),
            pinned: RefCell::default(),
        }
    }

    /// Puts the weight `name` (`weight`, in `layout`) into `pack` in 8 bits and leaves an empty
    /// `[0, 0]` tensor in its place, so that a path still reading it fails loudly instead of
    /// computing with something else. A weight already pinned stays; a weight the CPU kernels cannot
    /// hold (another backend) stays float.
    pub fn pin<B: Backend>(
        &self,
        name: &str,
        weight: &mut Param<Tensor<B, 2>>,
        layout: WeightLayout,
        pack: &PackCache,
    ) -> Result<()> {
        if pack.is_pinned() {
            return Ok(());
        }
        let quantized = match self.stored {
            Some(file) => Some(read_weight(file, name)?),
            None => quantize_tensor(&weight.val(), layout),
        };
        let Some(quantized) = quantized else {
            return Ok(());
        };
        pack.pin(quantized, layout, self.kernel);
        let device = weight.lazy_device();
        *weight = Param::initialized(weight.id, Tensor::empty([0, 0], &device));
        self.pinned
            .borrow_mut()
            .push((name.to_owned(), pack.clone()));
        Ok(())
    }

    /// `layer.weight` as [`Self::pin`] does, named `{prefix}.weight`.
    pub fn pin_linear<B: Backend>(
        &self,
        prefix: &str,
        layer: &mut burn::nn::Linear<B>,
        pack: &PackCache,
    ) -> Result<()> {
        self.pin(
            &format!("{prefix}.weight"),
            &mut layer.weight,
            WeightLayout::InOut,
            pack,
        )
    }

    /// The names pinned so far.
    fn names(&self) -> HashSet<String> {
        self.pinned
            .borrow()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// The stored weight `name` of an int8 weights file.
fn read_weight(file: &Header, name: &str) -> Result<Int8Weight> {
    let corrupt = |message: String| Error::Checkpoint {
        path: file.path().to_path_buf(),
        message,
    };
    let values = format!("{name}{VALUES}");
    let (shape, dtype) = file.describe(&values)?.ok_or_else(|| {
        corrupt(format!(
            "{name}{VALUES} is missing: not this model's int8 file"
        ))
    })?;
    if dtype != burn::tensor::DType::I8 {
        return Err(corrupt(format!(
            "{name}{VALUES} holds {dtype:?} values, not 8-bit integers"
        )));
    }
    let scales = file.tensor(&format!("{name}{SCALES}"))?.ok_or_else(|| {
        corrupt(format!(
            "{name}{SCALES} is missing: not this model's int8 file"
        ))
    })?;
    let [d_out, d_in] = shape[..] else {
        return Err(corrupt(format!(
            "{name}{VALUES} has shape {shape:?}, not [d_out, d_in]"
        )));
    };
    if scales.shape[..] != [d_out] {
        return Err(corrupt(format!(
            "{name}{SCALES} has shape {:?} for {d_out} columns",
            scales.shape
        )));
    }
    let s: Vec<f32> = scales
        .into_vec::<f32>()
        .map_err(|e| corrupt(format!("{name}: {e:?}")))?;
    // Read a panel of rows at a time (`read_byte_rows` checks the type is one byte wide).
    Int8Weight::from_stored_rows(
        |rows, out: &mut [i8]| {
            // SAFETY: i8 and u8 have the same size and alignment, and every bit pattern is valid
            // for both.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), out.len()) };
            file.read_byte_rows(&values, rows, bytes)
        },
        &s,
        d_in,
        d_out,
    )
}

/// Loads the int8 weights file `path` into `model` (built from the directory's config, never
/// loaded): `pin` pins every weight the file holds in 8 bits (see [`Int8Pinner`]), then the float
/// parameters are read. A weight missing from the file, or anything left over, is an error, and so
/// is a backend other than the CPU's (the 8-bit kernels run there only).
pub fn load<B: Backend, M: Module<B>>(
    model: M,
    path: &Path,
    kernel: Int8Kernel,
    pin: impl FnOnce(M, &Int8Pinner) -> Result<M>,
) -> Result<M> {
    use std::any::TypeId;
    let cpu = [
        TypeId::of::<burn::backend::Flex>(),
        TypeId::of::<burn::backend::Autodiff<burn::backend::Flex>>(),
    ];
    if !cpu.contains(&TypeId::of::<B>()) {
        return Err(Error::Config(format!(
            "{} holds int8 weights, which run on the CPU only; translate with --device cpu",
            path.display()
        )));
    }
    let file = Header::read(path)?;
    let pinner = Int8Pinner::stored(&file, kernel);
    let mut model = pin(model, &pinner)?;
    let pinned = pinner.names();
    let stored = |n: &str| n.ends_with(VALUES) || n.ends_with(SCALES);
    let floats = file
        .snapshots()?
        .into_iter()
        .filter(|s| !stored(&s.full_path()))
        .collect();
    let result = model.apply(floats, None, None, false);
    let missing: Vec<&String> = result
        .missing
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !pinned.contains(*k))
        .collect();
    let unread: Vec<String> = file
        .names()
        .filter(|n| stored(n))
        .filter(|n| {
            let base = n.trim_end_matches(VALUES).trim_end_matches(SCALES);
            !pinned.contains(base)
        })
        .map(str::to_owned)
        .collect();
    if !result.errors.is_empty()
        || !missing.is_empty()
        || !result.unused.is_empty()
        || !unread.is_empty()
    {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "these int8 weights do not fit the model described by config.toml: missing \
                 {missing:?}, unexpected {:?}, errors {:?}",
                [result.unused, unread].concat(),
                result.errors
            ),
        });
    }
    Ok(model)
}

/// What [`write_int8_dir`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Int8Written {
    /// Bytes of the float model's weights file.
    pub float_bytes: u64,
    /// Bytes of the int8 weights file.
    pub int8_bytes: u64,
    /// Weights stored in 8 bits.
    pub weights: usize,
}

/// Writes the model directory `dir` (a Transformer) as an int8 model directory `out` (new or
/// empty): the same config (fine-tuning settings cleared: LoRA updates are folded into the weights)
/// and text files, and [`INT8_WEIGHTS`] in place of `model.safetensors`.
pub fn write_int8_dir<B: Backend>(
    dir: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<Int8Written> {
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_some()
    {
        return Err(Error::io(
            out,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the output directory exists and is not empty; name a new one",
            ),
        ));
    }
    let config = Config::load(&dir.join(CONFIG_FILE))?;
    let pipeline = rosetta_text::pipeline::TextPipeline::load(dir)?;
    let AnyModel::Transformer(model) = AnyModel::<B>::load_dir(&config, &pipeline, dir, device)?
    else {
        return Err(Error::Config(
            "int8 model directories hold Transformers; an RNN translates in 8 bits with \
             --quantize int8 (its vocabulary projection)"
                .into(),
        ));
    };
    let pinner = Int8Pinner::quantize(Int8Kernel::Plain);
    let model = model.merge_lora().into_int8(&pinner)?;
    let names = pinner.names();
    if names.is_empty() {
        return Err(Error::Config(
            "no weight of this model can be stored in 8 bits (they are not float32 CPU tensors)"
                .into(),
        ));
    }
    let bytes = int8_file_bytes(&model, &pinner)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let is_file = entry.file_type().map_err(|e| Error::io(dir, e))?.is_file();
        let skip = name.to_string_lossy().ends_with(".safetensors")
            || name == CONFIG_FILE
            || name.to_string_lossy().ends_with(".log");
        if is_file && !skip {
            let data = std::fs::read(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            write_atomic(&out.join(&name), &data)?;
        }
    }
    let mut config = config;
    config.finetune = Default::default();
    config.train.init_from = None;
    write_atomic(&out.join(CONFIG_FILE), config.to_toml()?.as_bytes())?;
    write_atomic(&out.join(INT8_WEIGHTS), &bytes)?;
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| Error::io(p, e))
    };
    let float = dir.join(WEIGHTS);
    Ok(Int8Written {
        float_bytes: if float.exists() { size(&float)? } else { 0 },
        int8_bytes: size(&out.join(INT8_WEIGHTS))?,
        weights: names.len(),
    })
}

/// The safetensors bytes of an int8 model: every pinned weight's values and scales, and every
/// float parameter left (the dropped `[0, 0]` placeholders excluded).
fn int8_file_bytes<B: Backend, M: Module<B>>(model: &M, pinner: &Int8Pinner) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let fail = |message: String| Error::Checkpoint {
        path: INT8_WEIGHTS.into(),
        message,
    };
    // (name, dtype, shape, little-endian bytes)
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, pack) in pinner.pinned.borrow().iter() {
        let ((q, s), [d_in, d_out]) = pack
            .with_pinned(|w| (w.to_stored(), w.shape()))
            .ok_or_else(|| fail(format!("internal: {name} is not pinned")))?;
        tensors.push((
            format!("{name}{VALUES}"),
            Dtype::I8,
            vec![d_out, d_in],
            q.iter().map(|&v| v as u8).collect(),
        ));
        tensors.push((
            format!("{name}{SCALES}"),
            Dtype::F32,
            vec![d_out],
            s.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    for snapshot in model.collect(None, None, false) {
        if snapshot.shape.iter().product::<usize>() == 0 {
            continue;
        }
        let name = snapshot.full_path();
        let data = snapshot
            .to_data()
            .map_err(|e| fail(format!("{name}: {e}")))?;
        let values: Vec<f32> = data
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| fail(format!("{name}: {e:?}")))?;
        tensors.push((
            name,
            Dtype::F32,
            snapshot.shape.to_vec(),
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| fail(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| fail(e.to_string()))
}
