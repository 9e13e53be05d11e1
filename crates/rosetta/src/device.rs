//! Choosing where to run: `auto` (CUDA when compiled in and a GPU answers, else the CPU), `cpu`, or
//! `cuda[:N]`. An explicit `cuda` that cannot be used is an error, never a panic.

use crate::error::{Error, Result};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA if available, else CPU.
    #[default]
    Auto,
    /// The CPU (burn's flex backend, all cores).
    Cpu,
    /// NVIDIA GPU number N.
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(Error::Device(format!(
                    "unknown device \"{other}\"; use auto, cpu, cuda or cuda:N"
                ))),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    /// The spelling [`FromStr`](std::str::FromStr) reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The device actually chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl std::fmt::Display for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The global pool runs every parallel CPU kernel and product; its size honours
            // RAYON_NUM_THREADS.
            Resolved::Cpu => write!(f, "cpu ({} threads)", rayon::current_num_threads()),
            Resolved::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Top padding of the allocator's arenas while training (see [`keep_freed_memory`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRAINING_TOP_PAD: i32 = 64 << 20;

/// What a process mostly does, which sets how [`init_cpu_runtime`] tunes the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Training (and anything that trains: sweeps, the quickstart).
    Training,
    /// Translating, evaluating, converting: one pipeline of work at a time.
    Decoding,
    /// The HTTP server: many threads (tokio's, the decoding threads, rayon's) allocating at once.
    Serving,
}

/// Keeps freed tensor memory inside the process (glibc only; elsewhere it does nothing).
///
/// glibc serves every allocation above a threshold (at most 32 MB) with a fresh `mmap` and unmaps it
/// on free, and trims the heap top after frees. A training step allocates and frees tensors of
/// megabytes hundreds of times, so every op would refault and zero its pages: 15 % of a step on the
/// reference model. With mmap off and trimming disabled the pages are reused; peak RSS stays the
/// peak working set. Process-wide, so only binaries call it (through [`init_cpu_runtime`]).
///
/// Decoding uses one arena for all threads: with glibc's default of one per thread, each rayon
/// worker kept the memory it freed for itself, and the peak RSS of the same decode varied from run
/// to run with how the work fell on the threads (int8 Transformer, test_2016_flickr at batch 32 on
/// two threads: 93 MiB in three runs of four, 121 MiB in the fourth; 95–97 MiB in each of four with
/// one arena, at the same speed). Training and serving keep the arenas per thread: with one, a
/// Transformer training run on two threads made 39–40 steps in 42 s against 41 (within noise), and
/// the server's batch-of-one load test (quickstart model, 200 clients) fell from 1,911 to 771
/// sentences/s, its threads queueing for the one arena.
///
/// Training also keeps 64 MiB of padding at the top of every arena: a batch split across threads
/// allocates in the threads' own arenas, whose heaps glibc shrinks (and the kernel zero-fills
/// again) whatever the trim threshold says. On the `vs_pytorch` Transformer step: 0.455–0.465 s
/// without, 0.438–0.443 s with it, peak RSS 441 → 458 MB.
fn keep_freed_memory(workload: Workload) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        if workload == Workload::Decoding {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
        if workload == Workload::Training {
            libc::mallopt(libc::M_TOP_PAD, TRAINING_TOP_PAD);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = workload;
}

/// Gives the pages of freed memory back to the system (glibc's `malloc_trim`; elsewhere nothing).
///
/// A server keeps freed memory (see `keep_freed_memory`), so its RSS is the highest working set any
/// of its threads' arenas has seen: a batch of long sentences raised it in steps that never came
/// down (the Transformer's load test, 240 s: 128 → 141 MiB). Called now and then between batches
/// (the decoding threads do it at most once a second), it returns the free pages, and RSS follows
/// the working set; the pages refault when used again, about a second's worth of allocations.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it locks each arena itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Treats subnormal floats as zero on this thread (x86-64: the FTZ and DAZ bits of MXCSR).
///
/// As training goes on, Adam's second moments and many small gradients fall below 1.2e-38, and
/// arithmetic on such subnormal numbers takes a microcode slow path. On the reference model a training
/// step slowed from 2.3 s to 3.1 s within 14 steps (flat with a learning rate of 0); with subnormals
/// flushed it drifted to 2.7 s. Values that small are zero for every practical purpose (cuDNN and XLA
/// flush them too).
pub fn flush_subnormals() {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: reads and writes this thread's SSE control register; only the FTZ (bit 15) and
        // DAZ (bit 6) flags change, which affect rounding of subnormals and nothing else.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= (1 << 15) | (1 << 6);
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack));
        }
    }
}

/// Prepares the CPU runtime: subnormals flushed on this thread and on every thread of the global
/// rayon pool (which burn's CPU backend and its GEMM use), and freed memory kept in the process.
/// Call once at start-up, before any other thread exists; the binaries do, the library never does.
pub fn init_cpu_runtime(workload: Workload) {
    keep_freed_memory(workload);
    flush_subnormals();
    // Fails only when the global pool already exists; its threads then keep their settings.
    let _ = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| flush_subnormals())
        .build_global();
}

/// Whether CUDA device `index` can run a kernel. Without the `cuda` feature, never.
#[cfg(feature = "cuda")]
pub fn cuda_usable(index: usize) -> bool {
    use burn::backend::{Cuda, cuda::CudaDevice};
    use burn::tensor::Tensor;
    // burn's CUDA runtime panics when libcuda, NVRTC or the headers are missing; a tiny kernel run
    // inside catch_unwind turns that into a yes/no answer.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(|| {
        let device = CudaDevice::new(index);
        let t = Tensor::<Cuda, 1>::from_floats([1.0f32, 2.0], &device).add_scalar(1.0);
        t.try_into_data().ok()?.to_vec::<f32>().ok()
    })
    .ok()
    .flatten()
    .is_some_and(|v| v == [2.0, 3.0]);
    std::panic::set_hook(previous);
    ok
}

/// Whether CUDA device `index` can run a kernel. Without the `cuda` feature, never.
#[cfg(not(feature = "cuda"))]
pub fn cuda_usable(_index: usize) -> bool {
    false
}

/// Resolves a choice to a device, checking that an explicit CUDA device works.
pub fn resolve(choice: DeviceChoice) -> Result<Resolved> {
    match choice {
        DeviceChoice::Cpu => Ok(Resolved::Cpu),
        DeviceChoice::Auto => Ok(if cuda_usable(0) {
            Resolved::Cuda(0)
        } else {
            Resolved::Cpu
        }),
        DeviceChoice::Cuda(n) => {
            if !cfg!(feature = "cuda") {
                Err(Error::Device(
                    "this rosetta was built without CUDA support; rebuild with `--features cuda`"
                        .into(),
                ))
            } else if cuda_usable(n) {
                Ok(Resolved::Cuda(n))
            } else {
                Err(Error::Device(format!(
                    "CUDA device {n} is not usable (no NVIDIA driver, no such GPU, or NVRTC/CUDA headers missing)"
                )))
            }
        }
    }
}

/// Work to run on whichever backend the device resolved to: written once, generic over the backend.
pub trait Job {
    /// What the job returns.
    type Output;
    /// Runs on backend `B` (an autodiff backend; use `B::InnerBackend` for inference).
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs a job on the resolved device: the flex CPU backend, or CUDA when compiled in.
pub fn run_on<J: Job>(device: Resolved, job: J) -> J::Output {
    match device {
        Resolved::Cpu => {
            job.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default())
        }
        #[cfg(feature = "cuda")]
        Resolved::Cuda(n) => job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(
            burn::backend::cuda::CudaDevice::new(n),
        ),
        // `resolve` never yields CUDA without the feature.
        #[cfg(not(feature = "cuda"))]
        Resolved::Cuda(_) => {
            job.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn explicit_cuda_without_support_is_a_clear_error() {
        let err = resolve(DeviceChoice::Cuda(0)).unwrap_err().to_string();
        assert!(err.contains("without CUDA support"), "{err}");
        assert_eq!(resolve(DeviceChoice::Auto).unwrap(), Resolved::Cpu);
    }
}
