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
///
/// The parts are started from threads of their own, not from a parallel loop of the caller's pool:
/// a loop would park that pool's workers until the parts finish, and a part's backward pass can wait
/// on a lock that another training in the same process holds while it waits for those very workers
/// (burn's autodiff cleans every graph after each backward pass): two fine-tuning tests of
/// `tests/marian.rs` side by side in one process deadlocked that way, with the parts of one waiting
/// on the other's graph and the other's products waiting on the global pool's parked workers.
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
    // Each part waits in a cell, so that a part whose thread cannot be started runs here instead.
    let cells: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let run = |cell: &Mutex<Option<T>>, pool: &rayon::ThreadPool| {
        let part = cell.lock().unwrap_or_else(|p| p.into_inner()).take();
        part.map(|part| pool.install(|| work(part)))
    };
    let results = std::thread::scope(|scope| {
        let started: Vec<_> = cells
            .iter()
            .zip(&pools)
            .map(|(cell, pool)| {
                let handle = std::thread::Builder::new()
                    .spawn_scoped(scope, move || run(cell, pool))
                    .ok();
                (handle, cell, pool)
            })
            .collect();
        // Each cell is taken exactly once, by its thread or here, so no part's result is skipped.
        started
            .into_iter()
            .filter_map(|(handle, cell, pool)| match handle {
                Some(handle) => match handle.join() {
                    Ok(result) => result,
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                None => run(cell, pool),
            })
            .collect()
    });
    PART_POOLS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .append(&mut pools);
    results
}
