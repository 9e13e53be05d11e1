//! Work split into parts that run side by side, each on a thread of its own with no parallel
//! loops inside (data parallelism across the cores, as CTranslate2's `inter_threads`).
//!
//! A Transformer step on the CPU is many small products (`[64, 256] × [256, 256]`); split across
//! two threads each pays a hand-off and a wake-up, and those below the kernels' parallel threshold
//! run on one thread while the other waits. Two halves of the batch side by side keep both cores
//! busy with no hand-offs: see [`crate::search`] and the trainer for what that gained.

use std::sync::Mutex;

/// One-thread pools the parts run in, kept for the next call.
static PART_POOLS: Mutex<Vec<rayon::ThreadPool>> = Mutex::new(Vec::new());

/// Whether backend `B` runs on the CPU, where splitting pays (a GPU runs one batch in one piece).
pub fn splits<B: 'static>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<burn::backend::Flex>()
}

/// The rows `0..n` dealt into `parts` parts, row i to part i mod parts: every part of a
/// length-sorted batch gets long and short rows alike.
pub fn interleaved(n: usize, parts: usize) -> Vec<Vec<usize>> {
    (0..parts)
        .map(|p| (p..n).step_by(parts).collect())
        .collect()
}

/// `work(part)` for every part, side by side, each inside a one-thread rayon pool (so the kernels
/// see one thread and run in place); the results in the parts' order. Where no thread can be
/// started the parts run one after the other on the calling thread. A panic in a part reaches the
/// caller.
pub fn run_parts<T: Send, R: Send>(parts: Vec<T>, work: impl Fn(T) -> R + Sync) -> Vec<R> {
    let mut pools = {
        let mut kept = PART_POOLS.lock().unwrap_or_else(|p| p.into_inner());
        let keep = kept.len().saturating_sub(parts.len());
        kept.split_off(keep)
    };
    while pools.len() < parts.len() {
        match rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "rosetta-part".into())
            .start_handler(|_| crate::device::flush_subnormals())
            .build()
        {
            Ok(pool) => pools.push(pool),
            Err(_) => return parts.into_iter().map(work).collect(),
        }
    }
    let results = {
        use rayon::prelude::*;
        parts
            .into_par_iter()
            .zip(pools.par_iter())
            .map(|(part, pool)| pool.install(|| work(part)))
            .collect()
    };
    PART_POOLS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .append(&mut pools);
    results
}
