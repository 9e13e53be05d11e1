//! Dense layers of the search in 8-bit integers: weights quantized once per output column, the
//! input quantized per row at every call (dynamic quantization), products summed in 32-bit integers.
//!
//! `y = x W + b ≈ s_x[r] · s_w[j] · Σ_l q_x[r, l] · q_w[l, j] + b[j]`, where `s_w[j] = max_l |W[l, j]| /
//! 127` and `q_w = round(W / s_w) ∈ [−127, 127]`, and likewise `s_x[r]` and `q_x` for each row of the
//! input (Jacob et al. 2018 §2; Wu et al. 2020, "Integer quantization for deep learning inference",
//! §3 and §4.2: per-channel weights, dynamic per-row activations — what CTranslate2's int8 mode does).
//! A weight takes a quarter of its float size, and one AVX-512 VNNI instruction (`vpdpbusd`) does 64
//! multiply-adds where a float FMA does 16.
//!
//! Three kernels, chosen at run time from what the CPU has ([`Int8Kernel::detect`]):
//! - **VNNI** (AVX-512 VNNI): `vpdpbusd` multiplies unsigned by signed bytes, so the input is shifted
//!   to `q_x + 128` and `128 · Σ_l q_w[l, j]` (kept per column) is taken off the sum afterwards;
//! - **AVX2**: `vpmaddubsw` also multiplies unsigned by signed bytes, but adds pairs into 16 bits,
//!   which `255 · 127 · 2` overflows; it gets `|q_x|` and `q_w` with `q_x`'s sign (`vpsignb`), whose pair
//!   sums stay within `2 · 127 · 127 = 32,258` (the trick of llama.cpp's AVX2 kernels);
//! - **plain** Rust everywhere else.
//!
//! Integer sums are exact, and the three kernels share the quantization and the float epilogue, so
//! they give the same bits (tested). Why hand-written: no crate on crates.io offers an int8 GEMM with
//! per-column weight scales and VNNI dispatch in pure Rust (`gemm` has no integer products; fbgemm and
//! oneDNN are C++ libraries).

use super::simd_math::dispatch;

/// Columns per packed panel: two 512-bit registers of 32-bit sums.
const NR: usize = 32;
/// Rows per register tile (VNNI: 16 accumulators and 2 weight registers of 32).
const MR: usize = 8;
/// Inputs per group: the four bytes that one 32-bit lane of `vpdpbusd` multiplies and adds.
const G: usize = 4;
/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_MACS: usize = 256 * 256 * 256;

/// Which integer kernel computes the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AVX-512 with VNNI (`vpdpbusd`): Intel Cascade Lake and later, AMD Zen 4 and later.
    Vnni,
    /// AVX2 (`vpmaddubsw`, `vpmaddwd`): x86-64 CPUs since 2013.
    Avx2,
    /// Plain Rust, on any CPU.
    Plain,
}

impl Int8Kernel {
    /// The fastest kernel this CPU runs. `ROSETTA_INT8_KERNEL=plain|avx2` asks for a slower one
    /// (for comparisons and tests); a kernel the CPU lacks is never chosen.
    pub fn detect() -> Self {
        Self::choose(std::env::var("ROSETTA_INT8_KERNEL").ok().as_deref())
    }

    /// The kernel for a request (`ROSETTA_INT8_KERNEL`'s value): the best this CPU runs, or a
    /// slower one asked for.
    pub fn choose(request: Option<&str>) -> Self {
        let best = Self::best_supported();
        match request {
            Some("plain") => Int8Kernel::Plain,
            Some("avx2") if best != Int8Kernel::Plain => Int8Kernel::Avx2,
            _ => best,
        }
    }

    fn best_supported() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Int8Kernel::Vnni;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Int8Kernel::Avx2;
            }
        }
        Int8Kernel::Plain
    }

    /// Whether this CPU can run the kernel.
    pub fn supported(self) -> bool {
        match (self, Self::best_supported()) {
            (Int8Kernel::Plain, _) => true,
            (Int8Kernel::Avx2, best) => best != Int8Kernel::Plain,
            (Int8Kernel::Vnni, best) => best == Int8Kernel::Vnni,
        }
    }

    /// Its name, as `ROSETTA_INT8_KERNEL` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Vnni => "vnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Plain => "plain",
        }
    }
}

/// `x`'s symmetric scale and quantized values: `s = max |x| / 127` (1 for an all-zero row, whose
/// values all quantize to 0), `q = round(x / s)` (half to even) clamped to `[−127, 127]`. Non-finite
/// values are clamped too (a NaN becomes 0), so a bad input gives bad numbers, never undefined
/// behaviour. Written over blocks of 16, without branches, and inlined into [`dispatch`]ed code so
/// that it runs on AVX-512 or AVX2 (a search step quantizes every input row of every layer; built
/// for the baseline with `max` and `clamp`, it was 16 % of a batch-32 int8 decode).
#[inline(always)]
fn quantize(x: &[f32], q: &mut [i8]) -> f32 {
    let mut block = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, v) in block.iter_mut().zip(chunk) {
            let a = v.abs();
            // NaN compares false and is skipped, as `f32::max` skips it.
            *m = if a > *m { a } else { *m };
        }
    }
    let max = tail
        .iter()
        .fold(block.iter().fold(0f32, |m, v| m.max(*v)), |m, v| {
            m.max(v.abs())
        });
    let scale = if max > 0.0 && max.is_finite() {
        max / 127.0
    } else {
        1.0
    };
    let inv = 1.0 / scale;
    // Adding and taking away 1.5 · 2²³ rounds a float below 2²² to the nearest integer, ties to
    // even, in two vectorizable operations (`f32::round` is a library call per element).
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    for (q, &v) in q.iter_mut().zip(x) {
        let y = v * inv;
        // The bounds of `clamp` and NaN → 0, as selects; then the rounded integer is read from
        // the mantissa bits (a saturating `as i32` stayed scalar, with two branches per element).
        let y = if y > 127.0 { 127.0 } else { y };
        let y = if y < -127.0 { -127.0 } else { y };
        #[allow(clippy::eq_op)] // `y == y` is false only for NaN
        let y = if y == y { y } else { 0.0 };
        *q = ((y + ROUND).to_bits() as i32 - ROUND_BITS) as i8;
    }
    scale
}

/// A weight quantized to 8 bits per output column and packed for the kernels.
#[derive(Debug, Clone)]
pub struct Int8Weight {
    d_in: usize,
    d_out: usize,
    /// `⌈d_in / 4⌉`: the input dimension in groups of four, padded with zeros.
    groups: usize,
    /// `⌈d_out / 32⌉` panels, each `[groups, 32 columns, 4 inputs]`: one 64-byte load holds four
    /// inputs of 16 columns, the operand layout of `vpdpbusd`. Padding is zero.
    panels: Vec<i8>,
    /// Per column (padded to whole panels): `s_w[j]`.
    scales: Vec<f32>,
    /// Per column: `128 · Σ_l q_w[l, j]`, what the VNNI kernel's shifted input adds.
    shift: Vec<i32>,
}

impl Int8Weight {
    /// Quantizes `w`, `[d_in, d_out]` row-major (`out_in`: `[d_out, d_in]`, a tied embedding table).
    pub fn new(w: &[f32], d_in: usize, d_out: usize, out_in: bool) -> Self {
        assert_eq!(w.len(), d_in * d_out, "weight of {d_in} × {d_out}");
        let Ok(quantized) = Self::packed(d_in, d_out, |cols, q, s| {
            for ((j, q), s) in cols.zip(q.chunks_exact_mut(d_in.max(1))).zip(s) {
                let column: Vec<f32> = (0..d_in)
                    .map(|l| {
                        if out_in {
                            w[j * d_in + l]
                        } else {
                            w[l * d_out + j]
                        }
                    })
                    .collect();
                *s = quantize(&column, q);
            }
            Ok::<(), std::convert::Infallible>(())
        });
        quantized
    }

    /// A weight stored quantized: `q` `[d_out, d_in]` row-major (column `j` of the weight is row
    /// `j`), `scales` `[d_out]`, as [`Int8Weight::to_stored`] gives them.
    pub fn from_stored(q: &[i8], scales: &[f32], d_in: usize, d_out: usize) -> Self {
        assert_eq!(q.len(), d_in * d_out, "weight of {d_in} × {d_out}");
        let rows = |cols: std::ops::Range<usize>, out: &mut [i8]| {
            out.copy_from_slice(&q[cols.start * d_in..cols.end * d_in]);
            Ok::<(), std::convert::Infallible>(())
        };
        let Ok(weight) = Self::from_stored_rows(rows, scales, d_in, d_out);
        weight
    }

    /// [`Self::from_stored`] reading the stored rows a panel at a time: `read(cols, out)` fills
    /// `out` with rows `cols` of `q` (`cols.len() · d_in` values), so that no copy of the whole
    /// stored weight is held beside the packed one. The first error of `read` is returned.
    pub fn from_stored_rows<E: Send>(
        read: impl Fn(std::ops::Range<usize>, &mut [i8]) -> Result<(), E> + Sync,
        scales: &[f32],
        d_in: usize,
        d_out: usize,
    ) -> Result<Self, E> {
        assert_eq!(scales.len(), d_out, "{d_out} scales");
        Self::packed(d_in, d_out, |cols, q, s| {
            s.copy_from_slice(&scales[cols.clone()]);
            read(cols, q)
        })
    }

    /// The quantized values `[d_out, d_in]` and the scales `[d_out]`, to store.
    pub fn to_stored(&self) -> (Vec<i8>, Vec<f32>) {
        let k = self.d_in;
        let mut q = vec![0i8; self.d_out * k];
        for (j, row) in q.chunks_exact_mut(k.max(1)).enumerate().take(self.d_out) {
            let panel = &self.panels[(j / NR) * self.groups * NR * G..];
            for (l, v) in row.iter_mut().enumerate() {
                *v = panel[((l / G) * NR + j % NR) * G + l % G];
            }
        }
        (q, self.scales[..self.d_out].to_vec())
    }

    /// Packs the columns that `panel(cols, q, s)` writes, panel by panel in parallel: the
    /// quantized values of columns `cols` into `q` (`cols.len() · d_in`, column after column) and
    /// their scales into `s`. The first error of `panel` is returned.
    fn packed<E: Send>(
        d_in: usize,
        d_out: usize,
        panel: impl Fn(std::ops::Range<usize>, &mut [i8], &mut [f32]) -> Result<(), E> + Sync,
    ) -> Result<Self, E> {
        let groups = d_in.div_ceil(G);
        let n_panels = d_out.div_ceil(NR);
        let mut panels = vec![0i8; n_panels * groups * NR * G];
        let mut scales = vec![0f32; n_panels * NR];
        let mut shift = vec![0i32; n_panels * NR];
        {
            use rayon::prelude::*;
            panels
                .par_chunks_mut(groups * NR * G)
                .zip(scales.par_chunks_mut(NR))
                .zip(shift.par_chunks_mut(NR))
                .enumerate()
                .try_for_each(|(p, ((packed, scales), shift))| {
                    let cols = p * NR..(p * NR + NR).min(d_out);
                    let width = cols.len();
                    let mut q = vec![0i8; width * d_in];
                    panel(cols, &mut q, &mut scales[..width])?;
                    for (c, q) in q.chunks_exact(d_in.max(1)).enumerate().take(width) {
                        shift[c] = 128 * q.iter().map(|&v| i32::from(v)).sum::<i32>();
                        for (l, &v) in q.iter().enumerate() {
                            packed[((l / G) * NR + c) * G + l % G] = v;
                        }
                    }
                    Ok(())
                })?;
        }
        Ok(Int8Weight {
            d_in,
            d_out,
            groups,
            panels,
            scales,
            shift,
        })
    }

    /// Columns `ids` dequantized (`q_w[·, j] · s_w[j]`), `[ids.len(), d_in]` row-major: the rows of
    /// a tied embedding table `[vocab, d_model]` kept only in 8 bits.
    ///
    /// # Panics
    /// On an id ≥ `d_out` (as an embedding lookup does).
    pub fn columns(&self, ids: &[usize]) -> Vec<f32> {
        let k = self.d_in;
        let mut out = vec![0f32; ids.len() * k];
        for (row, &j) in out.chunks_exact_mut(k.max(1)).zip(ids) {
            assert!(j < self.d_out, "column {j} of a weight with {}", self.d_out);
            let (p, c) = (j / NR, j % NR);
            let panel = &self.panels[p * self.groups * NR * G..];
            let scale = self.scales[j];
            for (l, v) in row.iter_mut().enumerate() {
                *v = f32::from(panel[((l / G) * NR + c) * G + l % G]) * scale;
            }
        }
        out
    }

    /// `[d_in, d_out]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.d_in, self.d_out]
    }

    /// Bytes held (the packed weight, its scales and column sums).
    pub fn bytes(&self) -> usize {
        self.panels.len() + 4 * (self.scales.len() + self.shift.len())
    }

    /// `x [rows, d_in] W + b` `[rows, d_out]`, with `kernel` (which the CPU must run: see
    /// [`Int8Kernel::supported`]; an unsupported one falls back to plain Rust).
    pub fn forward(
        &self,
        x: &[f32],
        rows: usize,
        bias: Option<&[f32]>,
        kernel: Int8Kernel,
    ) -> Vec<f32> {
        let (k, n) = (self.d_in, self.d_out);
        assert_eq!(x.len(), rows * k, "input of {rows} rows of {k}");
        assert!(bias.is_none_or(|b| b.len() == n), "bias of {n}");
        let kernel = if kernel.supported() {
            kernel
        } else {
            Int8Kernel::Plain
        };
        // Rows quantized, padded to whole groups; VNNI reads them shifted to unsigned.
        let kp = self.groups * G;
        let mut qx = vec![0i8; rows * kp];
        let mut sx = vec![0f32; rows];
        dispatch(
            #[inline(always)]
            || {
                for r in 0..rows {
                    sx[r] = quantize(&x[r * k..(r + 1) * k], &mut qx[r * kp..r * kp + k]);
                }
                if kernel == Int8Kernel::Vnni {
                    // q + 128 as an unsigned byte is q's bit pattern with the top bit flipped.
                    qx.iter_mut().for_each(|v| *v ^= i8::MIN);
                }
            },
        );
        let mut out: Vec<f32> = Vec::with_capacity(rows * n);
        if rows == 0 || n == 0 {
            out.resize(rows * n, 0.0);
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
            for p in t * per_task..((t + 1) * per_task).min(n_panels) {
                // SAFETY: `dst` holds rows · n floats, alive until `forward` returns; panel p
                // writes only its own columns of every row, which no other task touches.
                unsafe { self.panel(p, &qx, &sx, rows, bias, kernel, dst) };
            }
        };
        if threads == 1 {
            task(0);
        } else {
            use rayon::prelude::*;
            (0..threads).into_par_iter().for_each(task);
        }
        // SAFETY: the panels cover every column of every row, and `panel` writes each of its
        // columns in every row.
        unsafe { out.set_len(rows * n) };
        out
    }

    /// Columns `p·32 ..` of every row of the output: integer sums by `kernel`, then the shared
    /// epilogue.
    ///
    /// # Safety
    /// `dst` must point to `rows · d_out` floats whose columns of panel `p` nothing else accesses;
    /// `kernel` must be one the CPU runs.
    #[allow(clippy::too_many_arguments)]
    unsafe fn panel(
        &self,
        p: usize,
        qx: &[i8],
        sx: &[f32],
        rows: usize,
        bias: Option<&[f32]>,
        kernel: Int8Kernel,
        dst: super::linear::SharedOut,
    ) {
        let (n, kp) = (self.d_out, self.groups * G);
        let j0 = p * NR;
        let width = NR.min(n - j0);
        let panel = &self.panels[p * self.groups * NR * G..(p + 1) * self.groups * NR * G];
        let mut sums = [[0i32; NR]; MR];
        let mut i = 0;
        while i < rows {
            let r = MR.min(rows - i);
            let a = &qx[i * kp..(i + r) * kp];
            match kernel {
                // SAFETY: the caller picks VNNI and AVX2 only where the CPU has them; `a` holds r
                // rows of kp = groups · 4 bytes and the panel groups · 32 · 4.
                #[cfg(target_arch = "x86_64")]
                Int8Kernel::Vnni => unsafe { vnni_tile(a, r, self.groups, panel, &mut sums) },
                #[cfg(target_arch = "x86_64")]
                Int8Kernel::Avx2 => unsafe { avx2_tile(a, r, self.groups, panel, &mut sums) },
                _ => plain_tile(a, r, self.groups, panel, &mut sums),
            }
            let shift = match kernel {
                Int8Kernel::Vnni => &self.shift[j0..j0 + NR],
                _ => &[0; NR][..],
            };
            let (scales, bias_tile) = (&self.scales[j0..j0 + NR], bias.map(|b| &b[j0..j0 + width]));
            // The epilogue on AVX-512 or AVX2: built for the baseline it was 9 % of an int8 decode.
            dispatch(
                #[inline(always)]
                || {
                    for (rr, row_sums) in sums.iter().enumerate().take(r) {
                        // SAFETY: row i + rr < rows; columns j0 .. j0 + width belong to this
                        // panel, which only this call writes (caller's guarantee), so the slice
                        // aliases nothing.
                        let y = unsafe {
                            std::slice::from_raw_parts_mut(dst.at((i + rr) * n + j0), width)
                        };
                        let sx = sx[i + rr];
                        let b = bias_tile.unwrap_or(&[0.0; NR][..width]);
                        for ((((y, &s), &sh), &sc), &b) in
                            y.iter_mut().zip(row_sums).zip(shift).zip(scales).zip(b)
                        {
                            *y = (s - sh) as f32 * (sx * sc) + b;
                        }
                    }
                },
            );
            i += r;
        }
    }
}

/// `sums[r][c] = Σ_l a[r, l] · panel[l, c]` for `r < rows` (≤ 8), in plain Rust.
fn plain_tile(a: &[i8], rows: usize, groups: usize, panel: &[i8], sums: &mut [[i32; NR]; MR]) {
    let kp = groups * G;
    for (r, row_sums) in sums.iter_mut().enumerate().take(rows) {
        *row_sums = [0; NR];
        let a = &a[r * kp..(r + 1) * kp];
        for g in 0..groups {
            let w = &panel[g * NR * G..(g + 1) * NR * G];
            for (c, s) in row_sums.iter_mut().enumerate() {
                for e in 0..G {
                    *s += i32::from(a[g * G + e]) * i32::from(w[c * G + e]);
                }
            }
        }
    }
}

/// As [`plain_tile`], with `vpdpbusd`; `a` holds the inputs shifted to `q + 128` (unsigned).
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512BW and AVX-512 VNNI; `a` must hold `rows` rows of `groups · 4`
/// bytes and `panel` `groups · 128` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vnni_tile(
    a: &[i8],
    rows: usize,
    groups: usize,
    panel: &[i8],
    sums: &mut [[i32; NR]; MR],
) {
    use std::arch::x86_64::*;
    let kp = groups * G;
    debug_assert!(a.len() >= rows * kp && panel.len() >= groups * NR * G);
    let mut lo = [_mm512_setzero_si512(); MR];
    let mut hi = [_mm512_setzero_si512(); MR];
    let (a, w) = (a.as_ptr(), panel.as_ptr());
    // SAFETY: g < groups and r < rows keep every read inside `a` (4 bytes at r·kp + 4g) and the
    // panel (128 bytes at 128g), as the caller guarantees.
    unsafe {
        for g in 0..groups {
            let w0 = _mm512_loadu_si512(w.add(g * NR * G).cast());
            let w1 = _mm512_loadu_si512(w.add(g * NR * G + 64).cast());
            for r in 0..rows {
                let x = _mm512_set1_epi32(a.add(r * kp + g * G).cast::<i32>().read_unaligned());
                lo[r] = _mm512_dpbusd_epi32(lo[r], x, w0);
                hi[r] = _mm512_dpbusd_epi32(hi[r], x, w1);
            }
        }
        for r in 0..rows {
            _mm512_storeu_si512(sums[r].as_mut_ptr().cast(), lo[r]);
            _mm512_storeu_si512(sums[r].as_mut_ptr().add(16).cast(), hi[r]);
        }
    }
}

/// As [`plain_tile`], with `vpmaddubsw` on `|a|` and the weights carrying `a`'s sign.
///
/// # Safety
/// The CPU must have AVX2; `a` must hold `rows` rows of `groups · 4` bytes, each in `[−127, 127]`,
/// and `panel` `groups · 128` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_tile(
    a: &[i8],
    rows: usize,
    groups: usize,
    panel: &[i8],
    sums: &mut [[i32; NR]; MR],
) {
    use std::arch::x86_64::*;
    let kp = groups * G;
    debug_assert!(a.len() >= rows * kp && panel.len() >= groups * NR * G);
    let ones = _mm256_set1_epi16(1);
    let (a, w) = (a.as_ptr(), panel.as_ptr());
    // Four rows at a time: 4 × 4 accumulators of 8 columns and 4 weight registers fit in 16.
    let mut r0 = 0;
    while r0 < rows {
        let rn = 4.min(rows - r0);
        let mut acc = [[_mm256_setzero_si256(); 4]; 4];
        // SAFETY: reads stay inside `a` (rows r0..r0 + rn, 4 bytes at 4g) and the panel (128
        // bytes at 128g), as the caller guarantees.
        unsafe {
            for g in 0..groups {
                let wv =
                    [0, 1, 2, 3].map(|v| _mm256_loadu_si256(w.add(g * NR * G + 32 * v).cast()));
                for (rr, acc) in acc.iter_mut().enumerate().take(rn) {
                    let x = _mm256_set1_epi32(
                        a.add((r0 + rr) * kp + g * G).cast::<i32>().read_unaligned(),
                    );
                    let ax = _mm256_sign_epi8(x, x);
                    for (acc, &wv) in acc.iter_mut().zip(&wv) {
                        let pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv, x));
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(pairs, ones));
                    }
                }
            }
            for (rr, acc) in acc.iter().enumerate().take(rn) {
                for (v, acc) in acc.iter().enumerate() {
                    _mm256_storeu_si256(sums[r0 + rr].as_mut_ptr().add(8 * v).cast(), *acc);
                }
            }
        }
        r0 += rn;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_values as values;

    fn reference(
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        rows: usize,
        k: usize,
        n: usize,
    ) -> Vec<f64> {
        (0..rows * n)
            .map(|e| {
                let (r, j) = (e / n, e % n);
                let dot: f64 = (0..k)
                    .map(|l| f64::from(x[r * k + l]) * f64::from(w[l * n + j]))
                    .sum();
                dot + b.map_or(0.0, |b| f64::from(b[j]))
            })
            .collect()
    }

    const SHAPES: [(usize, usize, usize); 6] = [
        (1, 1, 1),
        (3, 5, 33),
        (9, 70, 100),
        (13, 256, 64),
        (64, 256, 1000),
        (5, 1024, 257),
    ];

    /// Every output within the bound that quantization allows: each of the k products errs by at
    /// most `|x|·s_w/2 + |w|·s_x/2 + s_x·s_w/4`, summed over k.
    #[test]
    fn int8_products_stay_within_the_quantization_bound() {
        for &(rows, k, n) in &SHAPES {
            let (x, w, b) = (values(rows * k, 1), values(k * n, 2), values(n, 3));
            let q = Int8Weight::new(&w, k, n, false);
            let y = q.forward(&x, rows, Some(&b), Int8Kernel::detect());
            let want = reference(&x, &w, Some(&b), rows, k, n);
            for (e, (&got, &want)) in y.iter().zip(&want).enumerate() {
                let (r, j) = (e / n, e % n);
                let sx = x[r * k..(r + 1) * k]
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()))
                    / 127.0;
                let sw = (0..k).fold(0f32, |m, l| m.max(w[l * n + j].abs())) / 127.0;
                let bound: f64 = (0..k)
                    .map(|l| {
                        let (xv, wv) =
                            (f64::from(x[r * k + l].abs()), f64::from(w[l * n + j].abs()));
                        xv * f64::from(sw) / 2.0
                            + wv * f64::from(sx) / 2.0
                            + f64::from(sx * sw) / 4.0
                    })
                    .sum::<f64>()
                    + 1e-5 * (1.0 + want.abs());
                assert!(
                    (f64::from(got) - want).abs() <= bound,
                    "[{rows}, {k}] × [{k}, {n}] at ({r}, {j}): {got} vs {want} (bound {bound})"
                );
            }
        }
    }

    /// The relative error of a realistic product is small: for `[64, 512] × [512, 2048]` of
    /// uniform values, the root-mean-square error is under 1 % of the outputs' root-mean-square.
    #[test]
    fn int8_error_is_about_one_percent_of_the_signal() {
        let (rows, k, n) = (64, 512, 2048);
        let (x, w) = (values(rows * k, 4), values(k * n, 5));
        let y = Int8Weight::new(&w, k, n, false).forward(&x, rows, None, Int8Kernel::detect());
        let want = reference(&x, &w, None, rows, k, n);
        let err: f64 = y
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (f64::from(a) - b).powi(2))
            .sum();
        let sig: f64 = want.iter().map(|v| v * v).sum();
        let rel = (err / sig).sqrt();
        assert!(rel < 0.01, "relative RMS error {rel}");
    }

    /// The kernels this CPU runs give the same bits as plain Rust (integer sums are exact and the
    /// epilogue is shared); asking for a kernel the CPU lacks falls back to plain Rust.
    #[test]
    fn every_kernel_gives_the_bits_of_the_plain_one() {
        for &(rows, k, n) in &SHAPES {
            let (x, w, b) = (values(rows * k, 6), values(k * n, 7), values(n, 8));
            let q = Int8Weight::new(&w, k, n, false);
            let plain = q.forward(&x, rows, Some(&b), Int8Kernel::Plain);
            for kernel in [Int8Kernel::Avx2, Int8Kernel::Vnni] {
                let y = q.forward(&x, rows, Some(&b), kernel);
                assert_eq!(
                    y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} kernel (supported here: {}), [{rows}, {k}] × [{k}, {n}]",
                    kernel.name(),
                    kernel.supported()
                );
            }
        }
    }

    /// Forcing the plain kernel (as on a CPU without AVX2) is honoured, a slower kernel can be asked
    /// for, and the detected kernel is one the CPU runs.
    #[test]
    fn dispatch_falls_back_to_plain_when_forced() {
        assert!(Int8Kernel::detect().supported());
        assert!(Int8Kernel::Plain.supported());
        assert_eq!(Int8Kernel::choose(Some("plain")), Int8Kernel::Plain);
        assert_eq!(Int8Kernel::choose(None), Int8Kernel::best_supported());
        assert!(Int8Kernel::choose(Some("avx2")).supported());
        assert!(Int8Kernel::choose(Some("vnni")).supported());
    }

    /// A `[d_out, d_in]` weight (a tied embedding table) quantizes to the same columns as its
    /// transpose; an all-zero column and row give exact zeros; non-finite inputs do not panic.
    #[test]
    fn layouts_zeros_and_non_finite_values() {
        let (k, n) = (7, 5);
        let w = values(k * n, 9);
        let wt: Vec<f32> = (0..n * k).map(|e| w[(e % k) * n + e / k]).collect();
        let x = values(2 * k, 10);
        let a = Int8Weight::new(&w, k, n, false).forward(&x, 2, None, Int8Kernel::Plain);
        let b = Int8Weight::new(&wt, k, n, true).forward(&x, 2, None, Int8Kernel::Plain);
        assert_eq!(a, b);
        let zeros = Int8Weight::new(&vec![0.0; k * n], k, n, false);
        assert!(
            zeros
                .forward(&x, 2, None, Int8Kernel::detect())
                .iter()
                .all(|&v| v == 0.0)
        );
        let mut bad = x.clone();
        bad[0] = f32::NAN;
        bad[1] = f32::INFINITY;
        let _ = Int8Weight::new(&w, k, n, false).forward(&bad, 2, None, Int8Kernel::detect());
    }
}
