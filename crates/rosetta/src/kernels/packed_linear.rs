//! The vocabulary projection of a search step, with its weight packed once per model.
//!
//! Every search step multiplies `[hypotheses, d_in]` by the same `[d_in, vocab]` weight: in greedy
//! search of the reference model `[64, 1024] × [1024, 8000]`, 80 % of the decode. A general GEMM
//! repacks the weight into register-tile panels on every call, and with 64 rows each packed element
//! serves only 64 multiply-adds (19 % of the greedy profile was packing). Here the weight is packed
//! once into panels of [`NR`] columns (each panel `[d_in, NR]`, contiguous) and kept beside the
//! model, and an AVX-512 microkernel computes `MR × NR` tiles of the output over the whole inner
//! dimension in registers.
//!
//! Measured on the 2-core AVX-512 machine (`[64, 1024] × [1024, 8000]`, median of 20): 5.8 ms on
//! two threads against 6.9–7.7 ms for `gemm` split by columns; one thread 9.9–11.7 ms against
//! 12.4–13.4 ms (peak of one core, FMA only: 115 GFLOP/s; the kernel reaches 98–106).
//!
//! Each output element is one chain of fused multiply-adds over the inner dimension in order, then
//! the bias: its bits depend neither on the number of rows nor on the thread count, but differ in the
//! last places from the training-time product (`gemm` blocks the inner dimension differently).
//! With AVX2 and FMA (no AVX-512) the same panels go through an eight-lane kernel: tiles of six
//! rows take each half of a panel, and the last one or two rows take the whole panel with four
//! chains (a lone row with two chains waited on the multiply-add latency and read each panel
//! twice). Same chain per element, so the same bits as AVX-512. On the 2-core AMD EPYC (AVX2), one
//! thread: `[64, 256] × [256, 1024]` 43 GMAC/s against 36 for `gemm`, `[30, 256] × [256, 8000]` 37
//! against 27, `[1, 256] × [256, 8000]` 8.9 against 7.1; greedy Multi30k Transformer, 200 `val`
//! lines, batch of one 3.27 → 2.55–2.60 s, batches of 64 0.97 → 0.80–0.94 s, outputs identical.
//!
//! Without either, a weight stored `[d_out, d_in]` (a tied embedding table) is transposed once
//! into `[d_in, d_out]` rows and multiplied by the dense layer's own product: the caller's dense
//! layer would make that transposed copy on every step, which on the AVX2 machine, before the
//! kernel above, was 79 % of a greedy batch-of-one decode with a tied `[8000, 256]` table (perf).
//! A weight stored `[d_in, d_out]`, or another backend, then gets the plain dense layer.

use super::int8_linear::{Int8Kernel, Int8Weight};
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use std::sync::{Arc, Mutex, PoisonError};

/// Columns per packed panel: two AVX-512 registers.
const NR: usize = 32;
/// Rows per register tile: 2 × 8 accumulators, 2 weight registers.
#[cfg(target_arch = "x86_64")]
const MR: usize = 8;
/// Rows per AVX2 register tile: 2 × 6 accumulators, 2 weight registers and a broadcast fill 15
/// of the 16.
#[cfg(target_arch = "x86_64")]
const MR_AVX2: usize = 6;
/// Below this many multiply-adds a projection runs on one thread.
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// How the weight is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[d_in, d_out]`, as in `burn::nn::Linear`.
    InOut,
    /// `[d_out, d_in]`, as a tied embedding matrix `[vocab, emb]` used for the output.
    OutIn,
}

/// A weight packed into panels (or, without a packed kernel, transposed into rows), and the tensor it
/// was packed from. Holding the source keeps its storage alive and unchanged (burn-flex copies
/// shared storage before writing), so a weight with the same storage and layout is this weight.
struct Packed {
    source: FlexTensor,
    layout: WeightLayout,
    d_in: usize,
    d_out: usize,
    /// How `panels` holds the weight.
    form: Form,
    /// [`Form::Panels`]: `⌈d_out / NR⌉` panels `[d_in, NR]`, the last one padded with zeros;
    /// [`Form::Rows`]: `[d_in, d_out]`, row-major.
    panels: Vec<f32>,
}

/// The two forms of a packed weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Panels of [`NR`] columns for the AVX-512 or AVX2 kernel, which the CPU runs.
    Panels(Isa),
    /// `[d_in, d_out]` for the dense layer's product (CPUs with neither).
    Rows,
}

/// The packed form of one output weight, shared by the clones of a model; repacked when the weight
/// changes (a training step makes a new tensor). Holds the packed copy and the weight it came from
/// (twice the weight's size) from the first search on. After [`PackCache::quantize`] the copy is
/// the weight in 8-bit integers ([`Int8Weight`]), and the projection runs on any CPU.
#[derive(Clone, Default)]
pub struct PackCache(Arc<Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    /// `Some`: project in 8-bit integers with this kernel.
    int8: Option<Int8Kernel>,
    packed: Option<Entry>,
}

enum Entry {
    F32(Arc<Packed>),
    Int8(Arc<Quantized>),
}

/// The weight one projection runs with.
enum Prepared {
    F32(Arc<Packed>),
    Int8(Arc<Quantized>, Int8Kernel),
}

/// A weight in 8-bit integers and the tensor it was quantized from (see [`Packed`]).
struct Quantized {
    /// `None`: pinned, the only copy of the weight (see [`PackCache::pin`]).
    source: Option<FlexTensor>,
    layout: WeightLayout,
    weight: Int8Weight,
}

impl WeightLayout {
    /// `(d_in, d_out)` of a weight of shape `dims` stored in this layout.
    fn in_out(self, dims: &[usize]) -> (usize, usize) {
        match self {
            WeightLayout::InOut => (dims[0], dims[1]),
            WeightLayout::OutIn => (dims[1], dims[0]),
        }
    }
}

impl std::fmt::Debug for PackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PackCache")
    }
}

/// Whether `tensor` is the very tensor `source` (same storage and layout): burn-flex copies shared
/// storage before writing, so the weight has not changed.
fn same_tensor(source: &FlexTensor, tensor: &FlexTensor) -> bool {
    Arc::ptr_eq(&source.data_arc(), &tensor.data_arc()) && source.layout() == tensor.layout()
}

/// The instruction sets the packed kernel is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// Tiles of [`MR`] rows × 32 columns in sixteen-lane registers.
    Avx512,
    /// Tiles of [`MR_AVX2`] rows × 16 columns (half a panel) in eight-lane registers, with fused
    /// multiply-add: the same chain per element as [`Isa::Avx512`], so the same bits.
    Avx2,
}

impl Isa {
    /// The best this CPU runs, if any.
    fn detect() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Isa::Avx2);
            }
        }
        None
    }
}

/// Whether this CPU runs the packed kernel.
fn supported() -> bool {
    Isa::detect().is_some()
}

/// A nonlinearity applied to a projection's output while it is still in cache (the first layer of
/// a feed-forward block), with the vectorized `exp` of [`super::simd_math`] rather than a separate
/// tensor operation calling libm per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// Nothing.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `x · σ(x)` (SiLU).
    Swish,
}

impl Epilogue {
    /// The nonlinearity over a whole inference tensor, in place where its storage is not shared:
    /// `Err(x)` untouched on other backends and dtypes, and under autodiff (training keeps burn's
    /// operation and its backward). The encoder's feed-forward at inference had run burn's `silu`,
    /// libm's `expf` one element at a time: 2.5 % of a batch-32 beam-5 decode.
    pub fn on_tensor<B: Backend, const D: usize>(
        self,
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        if x.dtype() != DType::F32 {
            return Err(x);
        }
        let x = super::cast::<_, Tensor<Flex, D>>(x)?;
        let mut t = super::kv_cache::whole(x.into_primitive().tensor());
        self.apply(t.storage_mut::<f32>());
        Ok(super::cast_back(Tensor::<Flex, D>::from_primitive(
            TensorPrimitive::Float(t),
        )))
    }

    fn apply(self, y: &mut [f32]) {
        use super::simd_math::{dispatch, sigmoid};
        match self {
            Epilogue::Identity => {}
            Epilogue::Relu => dispatch(
                #[inline(always)]
                || y.iter_mut().for_each(|v| *v = v.max(0.0)),
            ),
            Epilogue::Swish => dispatch(
                #[inline(always)]
                || y.iter_mut().for_each(|v| *v *= sigmoid(*v)),
            ),
        }
    }
}

impl PackCache {
    /// `x W + b` for a search step: `x` `[rows, d_in]`, `weight` in `layout`, `bias` `[d_out]`.
    /// Packs `weight` on first use (and again when it changed); `None` where the packed kernel does
    /// not apply (another backend or dtype, neither AVX-512 nor AVX2 for a float weight stored
    /// `[d_in, d_out]`), and the caller computes the layer itself.
    pub fn project<B: Backend>(
        &self,
        x: &Tensor<B, 2>,
        weight: &Tensor<B, 2>,
        layout: WeightLayout,
        bias: Option<&Tensor<B, 1>>,
    ) -> Option<Tensor<B, 2>> {
        self.project_then(x, weight, layout, bias, Epilogue::Identity)
    }

    /// [`PackCache::project`], then `epilogue` on the output.
    pub fn project_then<B: Backend>(
        &self,
        x: &Tensor<B, 2>,
        weight: &Tensor<B, 2>,
        layout: WeightLayout,
        bias: Option<&Tensor<B, 1>>,
        epilogue: Epilogue,
    ) -> Option<Tensor<B, 2>> {
        if let Some(y) = self.project_pinned(x.clone(), bias, epilogue) {
            return Some(y);
        }
        let int8 = self.lock().int8;
        if x.dtype() != DType::F32
            || weight.dtype() != DType::F32
            || (int8.is_none() && !supported() && layout == WeightLayout::InOut)
        {
            return None;
        }
        let weight = flex_tensor(weight.clone())?;
        self.run(x, bias, epilogue, |cache| match int8 {
            Some(kernel) => Prepared::Int8(cache.quantized(weight, layout), kernel),
            None => Prepared::F32(cache.packed(weight, layout)),
        })
    }

    /// `epilogue(x W + b)` with the pinned weight, `x` `[.., d_in]` of any rank; `None` unless
    /// [`PackCache::pin`] pinned one (or the input is not float32 on the CPU).
    pub fn project_pinned<B: Backend, const D: usize>(
        &self,
        x: Tensor<B, D>,
        bias: Option<&Tensor<B, 1>>,
        epilogue: Epilogue,
    ) -> Option<Tensor<B, D>> {
        let (q, kernel) = self.pinned()?;
        if x.dtype() != DType::F32 {
            return None;
        }
        let dims = x.dims();
        let rows = dims[..D - 1].iter().product();
        let y = self.run(&x.reshape([rows, dims[D - 1]]), bias, epilogue, |_| {
            Prepared::Int8(q, kernel)
        })?;
        let mut out = dims;
        out[D - 1] = y.dims()[1];
        Some(y.reshape(out))
    }

    /// Keeps `weight`, already quantized, as the only copy: from here on the projection ignores
    /// the weight tensor it is given, so the caller may drop it (an inference-only model then holds
    /// its dense layers in 8 bits).
    pub fn pin(&self, weight: Int8Weight, layout: WeightLayout, kernel: Int8Kernel) {
        let mut slot = self.lock();
        slot.int8 = Some(kernel);
        slot.packed = Some(Entry::Int8(Arc::new(Quantized {
            source: None,
            layout,
            weight,
        })));
    }

    /// The pinned weight and its kernel, if any.
    fn pinned(&self) -> Option<(Arc<Quantized>, Int8Kernel)> {
        let slot = self.lock();
        match (&slot.packed, slot.int8) {
            (Some(Entry::Int8(q)), Some(kernel)) if q.source.is_none() => {
                Some((Arc::clone(q), kernel))
            }
            _ => None,
        }
    }

    /// Whether a weight is pinned ([`PackCache::pin`]).
    pub fn is_pinned(&self) -> bool {
        self.pinned().is_some()
    }

    /// `read(weight)` on the pinned 8-bit weight, if any (to read rows of a tied embedding table).
    pub fn with_pinned<R>(&self, read: impl FnOnce(&Int8Weight) -> R) -> Option<R> {
        self.pinned().map(|(q, _)| read(&q.weight))
    }

    /// `epilogue(x W + b)` with the weight `entry` picks, `x` `[rows, d_in]`.
    fn run<B: Backend>(
        &self,
        x: &Tensor<B, 2>,
        bias: Option<&Tensor<B, 1>>,
        epilogue: Epilogue,
        entry: impl FnOnce(&Self) -> Prepared,
    ) -> Option<Tensor<B, 2>> {
        let x = flex_tensor(x.clone())?.to_contiguous();
        let bias = match bias {
            Some(b) => Some(
                super::cast::<_, Tensor<Flex, 1>>(b.clone())
                    .ok()?
                    .into_primitive()
                    .tensor()
                    .to_contiguous(),
            ),
            None => None,
        };
        let rows = x.shape()[0];
        let (mut y, d_out) = match entry(self) {
            Prepared::Int8(q, kernel) => {
                let [q_in, q_out] = q.weight.shape();
                check_shapes(&x, [q_in, q_out], q.layout, bias.as_ref());
                let y = q.weight.forward(
                    x.storage::<f32>(),
                    rows,
                    bias.as_ref().map(|b| b.storage::<f32>()),
                    kernel,
                );
                (y, q_out)
            }
            Prepared::F32(packed) => {
                check_shapes(
                    &x,
                    [packed.d_in, packed.d_out],
                    packed.layout,
                    bias.as_ref(),
                );
                let y = packed.forward(
                    x.storage::<f32>(),
                    rows,
                    bias.as_ref().map(|b| b.storage::<f32>()),
                );
                (y, packed.d_out)
            }
        };
        debug_assert_eq!(y.len(), rows * d_out);
        epilogue.apply(&mut y);
        let y = FlexTensor::from_data(TensorData::new(y, [rows, d_out]));
        Some(super::cast_back(Tensor::<Flex, 2>::from_primitive(
            TensorPrimitive::Float(y),
        )))
    }

    /// Projects in 8-bit integers from now on (weights quantized per output column at first use,
    /// inputs per row at every step), with `kernel`.
    pub fn quantize(&self, kernel: Int8Kernel) {
        if self.is_pinned() {
            return;
        }
        let mut slot = self.lock();
        slot.int8 = Some(kernel);
        slot.packed = None;
    }

    /// Bytes of the packed or quantized copy held (0 before the first search).
    pub fn bytes(&self) -> usize {
        match &self.lock().packed {
            Some(Entry::F32(p)) => 4 * p.panels.len(),
            Some(Entry::Int8(q)) => q.weight.bytes(),
            None => 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // A panic while packing leaves `None` or the previous entry, both consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The 8-bit form of `weight`, from the cache when it holds this very tensor.
    fn quantized(&self, weight: FlexTensor, layout: WeightLayout) -> Arc<Quantized> {
        let mut slot = self.lock();
        if let Some(Entry::Int8(q)) = &slot.packed
            && q.layout == layout
            && q.source.as_ref().is_some_and(|s| same_tensor(s, &weight))
        {
            return Arc::clone(q);
        }
        slot.packed = None;
        let q = Arc::new(Quantized {
            weight: quantize_flex(&weight, layout),
            source: Some(weight),
            layout,
        });
        slot.packed = Some(Entry::Int8(Arc::clone(&q)));
        q
    }

    /// The packed form of `weight`, from the cache when it holds this very tensor.
    fn packed(&self, weight: FlexTensor, layout: WeightLayout) -> Arc<Packed> {
        let mut slot = self.lock();
        if let Some(Entry::F32(p)) = &slot.packed
            && p.layout == layout
            && same_tensor(&p.source, &weight)
        {
            return Arc::clone(p);
        }
        // Drop the old entry first: two packed copies of a large weight are not needed at once.
        slot.packed = None;
        let form = Isa::detect().map_or(Form::Rows, Form::Panels);
        let packed = Arc::new(Packed::new(weight, layout, form));
        slot.packed = Some(Entry::F32(Arc::clone(&packed)));
        packed
    }
}

/// `weight` (float32, in `layout`) quantized per output column; `None` where it is not a float32
/// tensor of the CPU backend.
pub fn quantize_tensor<B: Backend>(
    weight: &Tensor<B, 2>,
    layout: WeightLayout,
) -> Option<Int8Weight> {
    if weight.dtype() != DType::F32 {
        return None;
    }
    Some(quantize_flex(&flex_tensor(weight.clone())?, layout))
}

/// `weight` (float32, in `layout`) quantized per output column.
fn quantize_flex(weight: &FlexTensor, layout: WeightLayout) -> Int8Weight {
    let contiguous = weight.to_contiguous();
    let (d_in, d_out) = layout.in_out(&contiguous.shape());
    Int8Weight::new(
        contiguous.storage::<f32>(),
        d_in,
        d_out,
        layout == WeightLayout::OutIn,
    )
}

/// `t` as a burn-flex tensor: `None` on another backend.
fn flex_tensor<B: Backend>(t: Tensor<B, 2>) -> Option<FlexTensor> {
    super::cast::<_, Tensor<Flex, 2>>(t)
        .ok()
        .map(|t| t.into_primitive().tensor())
}

/// Panics with the shapes when `x`, the weight and the bias disagree (a bug in the caller).
fn check_shapes(
    x: &FlexTensor,
    [d_in, d_out]: [usize; 2],
    layout: WeightLayout,
    bias: Option<&FlexTensor>,
) {
    assert!(
        x.shape()[1] == d_in && bias.is_none_or(|b| b.shape()[0] == d_out),
        "packed projection: x {:?}, weight [{d_in}, {d_out}] ({layout:?}), bias {:?}",
        x.shape(),
        bias.map(|b| b.shape().to_vec())
    );
}

impl Packed {
    /// Packs `source` in `form` (panels for a kernel the CPU runs, [`Isa::detect`]).
    fn new(source: FlexTensor, layout: WeightLayout, form: Form) -> Self {
        let contiguous = source.to_contiguous();
        let w = contiguous.storage::<f32>();
        let (d_in, d_out) = layout.in_out(&contiguous.shape());
        // Element (l, j) of the `[d_in, d_out]` weight.
        let at = |l: usize, j: usize| match layout {
            WeightLayout::InOut => w[l * d_out + j],
            WeightLayout::OutIn => w[j * d_in + l],
        };
        let panels = match form {
            Form::Rows => {
                let mut rows = vec![0f32; d_in * d_out];
                for (l, row) in rows.chunks_exact_mut(d_out.max(1)).enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = at(l, j);
                    }
                }
                rows
            }
            Form::Panels(_) => {
                use rayon::prelude::*;
                let n_panels = d_out.div_ceil(NR);
                let mut panels = vec![0f32; n_panels * d_in * NR];
                panels
                    .par_chunks_mut((d_in * NR).max(1))
                    .enumerate()
                    .for_each(|(q, panel)| {
                        let width = NR.min(d_out - q * NR);
                        for (l, row) in panel.chunks_exact_mut(NR).enumerate() {
                            for (c, v) in row[..width].iter_mut().enumerate() {
                                *v = at(l, q * NR + c);
                            }
                        }
                    });
                panels
            }
        };
        Packed {
            source,
            layout,
            d_in,
            d_out,
            form,
            panels,
        }
    }

    /// `x [rows, d_in] × W + b` `[rows, d_out]`.
    fn forward(&self, x: &[f32], rows: usize, bias: Option<&[f32]>) -> Vec<f32> {
        match self.form {
            Form::Panels(isa) => self.forward_on(isa, x, rows, bias),
            Form::Rows => super::linear::rows_times(
                x,
                &self.panels,
                bias.unwrap_or(&[]),
                [rows, self.d_in, self.d_out],
            ),
        }
    }

    /// [`Packed::forward`] of panels with the kernel for `isa`, which the CPU must support.
    fn forward_on(&self, isa: Isa, x: &[f32], rows: usize, bias: Option<&[f32]>) -> Vec<f32> {
        let (k, n) = (self.d_in, self.d_out);
        let len = rows * n;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        if len == 0 {
            return out;
        }
        if k == 0 {
            out.resize(len, 0.0);
            if let Some(b) = bias {
                out.chunks_exact_mut(n)
                    .for_each(|row| row.copy_from_slice(b));
            }
            return out;
        }
        let n_panels = n.div_ceil(NR);
        let threads = if rows * n * k >= PARALLEL_MACS {
            rayon::current_num_threads().clamp(1, n_panels)
        } else {
            1
        };
        let per_task = n_panels.div_ceil(threads);
        let dst = super::linear::SharedOut::new(out.spare_capacity_mut().as_mut_ptr().cast());
        let task = |t: usize| {
            for q in t * per_task..((t + 1) * per_task).min(n_panels) {
                // SAFETY: the CPU supports `isa` (`forward_on`'s callers); panel q writes columns
                // q·NR.. of every row, which no other panel writes; `dst` has room for rows · n
                // elements; `x` holds rows · k and the panel k · NR elements.
                unsafe { self.panel(isa, q, x, rows, bias, dst) };
            }
        };
        if threads == 1 {
            task(0);
        } else {
            use rayon::prelude::*;
            (0..threads).into_par_iter().for_each(task);
        }
        // SAFETY: the panels cover every column of every row, and each tile stores all its
        // elements (`tile`).
        unsafe { out.set_len(len) };
        out
    }

    /// Columns `q·NR .. q·NR + NR` of every row, written through `dst`.
    ///
    /// # Safety
    /// The CPU must support `isa`; `x` must hold `rows · d_in` elements; `dst` must point to
    /// `rows · d_out` elements whose columns of panel `q` nothing else reads or writes.
    #[cfg(target_arch = "x86_64")]
    unsafe fn panel(
        &self,
        isa: Isa,
        q: usize,
        x: &[f32],
        rows: usize,
        bias: Option<&[f32]>,
        dst: super::linear::SharedOut,
    ) {
        let (k, n) = (self.d_in, self.d_out);
        let j0 = q * NR;
        let width = NR.min(n - j0);
        let mut bias_tile = [0f32; NR];
        if let Some(b) = bias {
            bias_tile[..width].copy_from_slice(&b[j0..j0 + width]);
        }
        // The first row tile also pulls the next panel into L2, so that it does not wait on
        // memory for it: weights beyond L2 (every layer's, in a decode step) ran 10–15 % slower
        // than cached ones (`[160, 256] × [256, 7,708]`: 119 against 137 GFLOP/s).
        let next = self.panels.get((q + 1) * k * NR..(q + 2) * k * NR);
        let mut tile_args = TileArgs {
            b: self.panels[q * k * NR..(q + 1) * k * NR].as_ptr(),
            k,
            width,
            bias: bias.map(|_| &bias_tile),
            prefetch: next.map_or(std::ptr::null(), <[f32]>::as_ptr),
        };
        let mr = match isa {
            Isa::Avx512 => MR,
            Isa::Avx2 => MR_AVX2,
        };
        let mut i = 0;
        while i < rows {
            let r = mr.min(rows - i);
            // SAFETY: rows i..i + r of `x` (k each) exist; the tile's destination starts at row i,
            // column j0 of `dst` and spans r rows of `width` columns (caller's guarantee); the CPU
            // supports `isa`.
            unsafe {
                let a = x.as_ptr().add(i * k);
                let c = dst.at(i * n + j0);
                match (isa, r) {
                    (Isa::Avx2, _) => tiles_avx2(r, a, c, n, &tile_args),
                    (_, 8) => tile::<8>(a, c, n, &tile_args),
                    (_, 7) => tile::<7>(a, c, n, &tile_args),
                    (_, 6) => tile::<6>(a, c, n, &tile_args),
                    (_, 5) => tile::<5>(a, c, n, &tile_args),
                    (_, 4) => tile::<4>(a, c, n, &tile_args),
                    (_, 3) => tile::<3>(a, c, n, &tile_args),
                    (_, 2) => tile::<2>(a, c, n, &tile_args),
                    _ => tile::<1>(a, c, n, &tile_args),
                }
            }
            tile_args.prefetch = std::ptr::null();
            i += r;
        }
    }

    /// Never called: [`supported`] is false off x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn panel(
        &self,
        _: Isa,
        _: usize,
        _: &[f32],
        _: usize,
        _: Option<&[f32]>,
        _: super::linear::SharedOut,
    ) {
        unreachable!("the packed projection runs only on x86-64 with AVX-512F or AVX2")
    }
}

/// What every tile of one panel shares.
#[cfg(target_arch = "x86_64")]
struct TileArgs<'a> {
    /// The panel `[k, NR]`.
    b: *const f32,
    k: usize,
    /// Columns of the panel that exist in the output (`NR` except in the last panel).
    width: usize,
    /// The bias of the panel's columns, zero-padded.
    bias: Option<&'a [f32; NR]>,
    /// A panel `[k, NR]` to bring into L2 while this tile runs, or null.
    prefetch: *const f32,
}

/// `c[r, ..width] = a[r, ..k] × panel (+ bias)` for `R` rows: `a` rows `k` apart, `c` rows `ldc`
/// apart. The sum over `k` is one fused multiply-add chain per element, in order; the bias is added
/// after it, as the dense layer does.
///
/// # Safety
/// AVX-512F; `a` must hold `R` rows of `k` elements; `c` must point to `R` rows of `width` writable
/// elements that nothing else accesses; the panel must hold `k · NR` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize>(a: *const f32, c: *mut f32, ldc: usize, args: &TileArgs) {
    use std::arch::x86_64::*;
    let (b, k) = (args.b, args.k);
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    // SAFETY: every offset stays inside `a` (r < R, l < k) and the panel (l · NR + 32 ≤ k · NR),
    // as the caller guarantees.
    unsafe {
        let prefetch = !args.prefetch.is_null();
        for l in 0..k {
            if prefetch {
                prefetch_row(args.prefetch, l);
            }
            let b0 = _mm512_loadu_ps(b.add(l * NR));
            let b1 = _mm512_loadu_ps(b.add(l * NR + 16));
            for r in 0..R {
                let x = _mm512_set1_ps(*a.add(r * k + l));
                lo[r] = _mm512_fmadd_ps(x, b0, lo[r]);
                hi[r] = _mm512_fmadd_ps(x, b1, hi[r]);
            }
        }
    }
    if let Some(bias) = args.bias {
        // SAFETY: `bias` holds NR = 32 elements.
        let (b0, b1) = unsafe {
            (
                _mm512_loadu_ps(bias.as_ptr()),
                _mm512_loadu_ps(bias.as_ptr().add(16)),
            )
        };
        for r in 0..R {
            lo[r] = _mm512_add_ps(lo[r], b0);
            hi[r] = _mm512_add_ps(hi[r], b1);
        }
    }
    let w = args.width;
    let mask = |bits: usize| -> __mmask16 { ((1u32 << bits.min(16)) - 1) as __mmask16 };
    let (m0, m1) = (mask(w), mask(w.saturating_sub(16)));
    // SAFETY: the masks keep the stores to the first `width` columns of each of the R rows.
    unsafe {
        for r in 0..R {
            _mm512_mask_storeu_ps(c.add(r * ldc), m0, lo[r]);
            _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, hi[r]);
        }
    }
}

/// Row `l` of the panel at `next` into L2: its two cache lines, one step of a tile's loop each.
///
/// # Safety
/// `next` must point to a panel of at least `l + 1` rows of [`NR`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_row(next: *const f32, l: usize) {
    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
    // SAFETY: row l of the panel exists (the caller's guarantee).
    unsafe {
        _mm_prefetch::<_MM_HINT_T1>(next.add(l * NR).cast());
        _mm_prefetch::<_MM_HINT_T1>(next.add(l * NR + 16).cast());
    }
}

/// One tile of `r` ≤ [`MR_AVX2`] rows with AVX2: three rows or more take the panel's two halves
/// (16 columns) one after the other; one or two rows take all 32 columns at once, so that a lone
/// row (a batch of one) reads the panel once, with four independent chains.
///
/// # Safety
/// AVX2 and FMA; as [`tile`] for `r` rows otherwise.
#[cfg(target_arch = "x86_64")]
unsafe fn tiles_avx2(r: usize, a: *const f32, c: *mut f32, ldc: usize, args: &TileArgs) {
    // SAFETY: the caller's guarantees, for each tile (the halves start 16 columns apart and
    // write only their columns below `width`).
    unsafe {
        if r <= 2 {
            match r {
                2 => tile_avx2::<2, 4>(a, c, ldc, args, 0),
                _ => tile_avx2::<1, 4>(a, c, ldc, args, 0),
            }
            return;
        }
        for half in 0..NR / 16 {
            if args.width <= 16 * half {
                break;
            }
            let c = c.add(16 * half);
            match r {
                6 => tile_avx2::<6, 2>(a, c, ldc, args, half),
                5 => tile_avx2::<5, 2>(a, c, ldc, args, half),
                4 => tile_avx2::<4, 2>(a, c, ldc, args, half),
                _ => tile_avx2::<3, 2>(a, c, ldc, args, half),
            }
        }
    }
}

/// [`tile`] with AVX2 and FMA for `R` rows and `V` registers of eight columns, starting at column
/// `8·V·part` of the panel: the same chain of fused multiply-adds per element, in the same order,
/// then the bias, so the same bits.
///
/// # Safety
/// AVX2 and FMA; `8·V·(part + 1) ≤ NR`; as [`tile`] otherwise (`c` points to the tile's first
/// column).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize, const V: usize>(
    a: *const f32,
    c: *mut f32,
    ldc: usize,
    args: &TileArgs,
    part: usize,
) {
    use std::arch::x86_64::*;
    let (b, k) = (args.b, args.k);
    let off = 8 * V * part;
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    // SAFETY: every offset stays inside `a` (r < R, l < k) and the panel
    // (l · NR + off + 8·V ≤ k · NR), as the caller guarantees.
    unsafe {
        let prefetch = !args.prefetch.is_null();
        for l in 0..k {
            if prefetch {
                prefetch_row(args.prefetch, l);
            }
            let mut w = [_mm256_setzero_ps(); V];
            for (v, w) in w.iter_mut().enumerate() {
                *w = _mm256_loadu_ps(b.add(l * NR + off + 8 * v));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_ps(*a.add(r * k + l));
                for (acc, w) in acc.iter_mut().zip(&w) {
                    *acc = _mm256_fmadd_ps(x, *w, *acc);
                }
            }
        }
    }
    if let Some(bias) = args.bias {
        for v in 0..V {
            // SAFETY: `bias` holds NR elements, off + 8·V ≤ NR.
            let b = unsafe { _mm256_loadu_ps(bias.as_ptr().add(off + 8 * v)) };
            for acc in acc.iter_mut() {
                acc[v] = _mm256_add_ps(acc[v], b);
            }
        }
    }
    let w = args.width.saturating_sub(off).min(8 * V);
    for (r, acc) in acc.iter().enumerate() {
        let mut full = [0f32; 32];
        // SAFETY: `full` holds 32 ≥ 8·V elements; row r of the tile has `w` writable columns
        // from `c + r · ldc`.
        unsafe {
            for (v, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(full.as_mut_ptr().add(8 * v), *acc);
            }
            std::ptr::copy_nonoverlapping(full.as_ptr(), c.add(r * ldc), w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    use crate::kernels::test_values as values;

    fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Tensor<Flex, D> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    /// Without a packed kernel (neither AVX-512F nor AVX2) the cache declines (`None`) for a
    /// weight stored `[d_in, d_out]` and the caller's dense layer runs: what every test of the
    /// layers then exercises.
    #[test]
    fn declines_without_a_packed_kernel_so_the_dense_layer_runs() {
        let x = tensor(values(6, 1), [2, 3]);
        let w = tensor(values(12, 2), [3, 4]);
        let y = PackCache::default().project(&x, &w, WeightLayout::InOut, None);
        assert_eq!(y.is_some(), supported());
    }

    /// A tied table (`[d_out, d_in]`) is projected on every CPU. In rows (the form without a
    /// packed kernel, built here on any CPU) it equals the dense layer on the transposed table to the
    /// bit, since it is the dense layer's own product on a copy made once; the cache makes a new
    /// copy when the table changes.
    #[test]
    fn a_tied_table_in_rows_equals_the_dense_layer_and_follows_a_changed_table() {
        let (rows, d_in, d_out) = (5, 37, 70);
        let xs = values(rows * d_in, 21);
        let x = tensor(xs.clone(), [rows, d_in]);
        let table = tensor(values(d_out * d_in, 22), [d_out, d_in]);
        let b = tensor(values(d_out, 23), [d_out]);
        let dense = |t: &Tensor<Flex, 2>| {
            super::super::dense(x.clone(), t.clone().transpose(), b.clone())
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        let flex = |t: &Tensor<Flex, 2>| t.clone().into_primitive().tensor();
        let in_rows = Packed::new(flex(&table), WeightLayout::OutIn, Form::Rows);
        let bias = b.clone().into_data().to_vec::<f32>().unwrap();
        assert_eq!(in_rows.forward(&xs, rows, Some(&bias)), dense(&table));

        let cache = PackCache::default();
        for t in [table.clone(), table * 2.0] {
            let y = cache
                .project(&x, &t, WeightLayout::OutIn, Some(&b))
                .expect("a tied table is projected on every CPU");
            let (y, want) = (y.into_data().to_vec::<f32>().unwrap(), dense(&t));
            if supported() {
                for (y, w) in y.iter().zip(&want) {
                    assert!((y - w).abs() <= 1e-5 * (1.0 + w.abs()), "{y} vs {w}");
                }
            } else {
                assert_eq!(y, want);
                assert_eq!(cache.bytes(), 4 * d_in * d_out);
            }
        }
    }

    /// Every output element against a plain f64 dot product, for shapes with partial tiles and
    /// panels, both layouts, with and without bias, on one and several threads; where the CPU
    /// has AVX-512F, the AVX2 kernel gives the same bits as the AVX-512 one.
    #[test]
    fn matches_the_dense_layer() {
        if !supported() {
            eprintln!("SKIPPED: this CPU has neither AVX-512F nor AVX2 with FMA");
            return;
        }
        for &(rows, d_in, d_out) in &[(1, 1, 1), (3, 5, 33), (13, 70, 100), (64, 256, 1000)] {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                for with_bias in [false, true] {
                    let (x, w, b) = (
                        values(rows * d_in, 1),
                        values(d_in * d_out, 2),
                        values(d_out, 3),
                    );
                    let shape = match layout {
                        WeightLayout::InOut => [d_in, d_out],
                        WeightLayout::OutIn => [d_out, d_in],
                    };
                    let weight = |i: usize, j: usize| match layout {
                        WeightLayout::InOut => w[i * d_out + j],
                        WeightLayout::OutIn => w[j * d_in + i],
                    };
                    let bias_t = tensor(b.clone(), [d_out]);
                    let y = PackCache::default()
                        .project(
                            &tensor(x.clone(), [rows, d_in]),
                            &tensor(w.clone(), shape),
                            layout,
                            with_bias.then_some(&bias_t),
                        )
                        .expect("the CPU runs the packed kernel");
                    let y = y.into_data().to_vec::<f32>().unwrap();
                    if Isa::detect() == Some(Isa::Avx512) {
                        let w = tensor(w.clone(), shape).into_primitive().tensor();
                        let packed = Packed::new(w, layout, Form::Panels(Isa::Avx512));
                        let bias = with_bias.then_some(b.as_slice());
                        assert_eq!(packed.forward_on(Isa::Avx2, &x, rows, bias), y);
                    }
                    for r in 0..rows {
                        for j in 0..d_out {
                            let mut e: f64 = (0..d_in)
                                .map(|i| f64::from(x[r * d_in + i]) * f64::from(weight(i, j)))
                                .sum();
                            if with_bias {
                                e += f64::from(b[j]);
                            }
                            let got = f64::from(y[r * d_out + j]);
                            assert!(
                                (got - e).abs() <= 1e-5 * (1.0 + e.abs()) * (d_in as f64).sqrt(),
                                "[{rows}, {d_in}] × {d_out} {layout:?} bias {with_bias}: \
                                 ({r}, {j}) {got} vs {e}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A row's bits do not depend on the other rows (beam search changes the number of rows every
    /// step), and the cache repacks a changed weight instead of using the old one.
    #[test]
    fn rows_are_independent_and_a_new_weight_is_repacked() {
        if !supported() {
            eprintln!("SKIPPED: this CPU has neither AVX-512F nor AVX2 with FMA");
            return;
        }
        let (rows, d_in, d_out) = (37, 300, 500);
        let x = values(rows * d_in, 4);
        let cache = PackCache::default();
        let run = |x: &[f32], w: &Tensor<Flex, 2>| -> Vec<f32> {
            let x = tensor(x.to_vec(), [x.len() / d_in, d_in]);
            let y = cache.project(&x, w, WeightLayout::InOut, None).unwrap();
            y.into_data().to_vec::<f32>().unwrap()
        };
        let w1 = tensor(values(d_in * d_out, 5), [d_in, d_out]);
        let all = run(&x, &w1);
        let one = run(&x[5 * d_in..6 * d_in], &w1);
        assert_eq!(one, all[5 * d_out..6 * d_out]);

        let twice = run(&x, &(w1.clone() * 2.0));
        for (t, a) in twice.iter().zip(&all) {
            assert!(
                (t - 2.0 * a).abs() <= 1e-4 * (1.0 + a.abs()),
                "{t} vs 2 × {a}"
            );
        }
    }

    /// The epilogue's relu and swish equal burn's on the same projection (the int8 path, which
    /// runs on every CPU), to the last few bits of the vectorized `exp`.
    #[test]
    fn epilogues_equal_the_tensor_activations() {
        use burn::tensor::activation::{relu, silu};
        let x = tensor(values(5 * 40, 11), [5, 40]);
        let w = tensor(values(40 * 70, 12), [40, 70]);
        let b = tensor(values(70, 13), [70]);
        let cache = PackCache::default();
        cache.quantize(crate::kernels::Int8Kernel::detect());
        let plain = cache
            .project(&x, &w, WeightLayout::InOut, Some(&b))
            .unwrap();
        for (epilogue, want) in [
            (Epilogue::Relu, relu(plain.clone())),
            (Epilogue::Swish, silu(plain.clone())),
            (Epilogue::Identity, plain.clone()),
        ] {
            let got = cache
                .project_then(&x, &w, WeightLayout::InOut, Some(&b), epilogue)
                .unwrap();
            crate::kernels::assert_close(got, want, 1e-6);
        }
    }
}
