//! Decoding written once against the [`Scorer`] interface (after Marian's `Scorer { startState; step }`),
//! so RNNs, Transformers and ensembles share the same search.

pub mod beam;
pub mod ensemble;
pub mod greedy;
pub mod sampling;
pub mod scorer;

use crate::model::input::SourceBatch;
use burn::prelude::*;

pub use beam::{BeamConfig, BeamRule, DEFAULT_MAX_LEN_A, DEFAULT_MAX_LEN_B, beam_search};
pub use ensemble::Ensemble;
pub use greedy::{Hypothesis, greedy, greedy_stream};
pub use sampling::{SamplingConfig, sample};
pub use scorer::{Scorer, Step, max_output_len};

/// Runs a search on a worker of rayon's global pool, so that the kernels' parallel loops start on
/// that worker: called from another thread, every loop was handed to the pool while the caller
/// slept until it finished (a wake-up and two context switches per loop, dozens per step: 4 % of a
/// one-thread batch-32 Transformer decode in the kernel's scheduler, and 3,200 context switches
/// instead of 330 for 30 sentences at batch size 1). Inside the pool it runs in place.
fn on_pool_worker<R: Send>(search: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| search())
}

/// Rows (sentences × beam) each thread's part must hold before a batch is split across threads.
/// Below it, one product over all rows on every thread beats separate products over few rows.
const MIN_ROWS_PER_PART: usize = 32;

/// Runs `search(part, rows)` on the CPU backend with the batch split into one part per thread of
/// the current pool (row i in part i mod parts, so every part gets long and short sentences of a
/// length-sorted batch), each part decoded on a thread of its own with no parallel loops inside,
/// and the outputs put back in row order. `rows_per_sentence` is the beam size (1 for greedy and
/// sampling).
///
/// Why: a decode step is many small products (`[64, 256] × [256, 256]`); split across two threads
/// each pays a hand-off and a wake-up, and those under about 7 M multiply-adds ran on one thread
/// while the other waited. Greedy decoding of the `vs_pytorch` Transformer batch (64 × 25, two
/// threads) took 0.185 s in one piece and 0.14 s as two halves side by side, as CTranslate2's
/// `inter_threads` does ([`crate::parallel`]). Other backends, small batches and one-thread pools
/// run in one piece.
/// Each sentence's output does not depend on the rows decoded beside it (batch invariance).
fn split_across_threads<B: Backend, R: Send>(
    src: &SourceBatch<B>,
    rows_per_sentence: usize,
    search: impl Fn(&SourceBatch<B>, &[usize]) -> Vec<R> + Sync,
) -> Vec<R> {
    let batch = src.lengths.len();
    let all: Vec<usize> = (0..batch).collect();
    let parts = rayon::current_num_threads()
        .min(batch * rows_per_sentence.max(1) / MIN_ROWS_PER_PART)
        .min(batch);
    if !crate::parallel::splits::<B>() || parts < 2 {
        return on_pool_worker(|| search(src, &all));
    }
    let pieces: Vec<(Vec<usize>, SourceBatch<B>)> = crate::parallel::interleaved(batch, parts)
        .into_iter()
        .map(|rows| {
            let part = src.rows(&rows);
            (rows, part)
        })
        .collect();
    let outputs = crate::parallel::run_parts(pieces, |(rows, part)| {
        let out = search(&part, &rows);
        rows.into_iter().zip(out).collect::<Vec<_>>()
    });
    let mut merged: Vec<(usize, R)> = outputs.into_iter().flatten().collect();
    merged.sort_unstable_by_key(|(i, _)| *i);
    merged.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use rosetta_text::vocab::SpecialIds;

    /// `rows` sentences; sentence i holds `i % 7 + 1` tokens, all with id i + 10.
    fn batch(rows: usize) -> SourceBatch<Flex> {
        let lengths: Vec<usize> = (0..rows).map(|i| i % 7 + 1).collect();
        let len = lengths.iter().copied().max().unwrap_or(0);
        let ids: Vec<i64> = (0..rows)
            .flat_map(|i| (0..len).map(move |j| if j < i % 7 + 1 { i as i64 + 10 } else { 0 }))
            .collect();
        SourceBatch {
            ids: Tensor::from_data(TensorData::new(ids, [rows, len]), &Default::default()),
            lengths,
            specials: SpecialIds::default(),
        }
    }

    /// What one part saw: its rows, their first ids and lengths, its thread and pool size.
    fn probe(part: &SourceBatch<Flex>, rows: &[usize]) -> Vec<(usize, i64, usize, bool, usize)> {
        let ids: Vec<i64> = part.ids.to_data().convert::<i64>().to_vec().unwrap();
        let width = part.ids.dims()[1];
        let name = std::thread::current().name().map(str::to_owned);
        rows.iter()
            .enumerate()
            .map(|(r, &i)| {
                (
                    i,
                    ids[r * width],
                    part.lengths[r],
                    name.as_deref() == Some("rosetta-part"),
                    rayon::current_num_threads(),
                )
            })
            .collect()
    }

    #[test]
    fn a_big_batch_is_split_into_interleaved_parts_each_on_one_thread() {
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let src = batch(64);
        let out = two.install(|| split_across_threads(&src, 1, probe));
        assert_eq!(out.len(), 64);
        for (i, &(row, first, len, on_part, threads)) in out.iter().enumerate() {
            assert_eq!((row, first, len), (i, i as i64 + 10, i % 7 + 1));
            assert!(on_part && threads == 1, "row {i} ran in one piece");
        }
        // Each part is padded to its own longest row: rows 0, 2, 4, … hold 1, 3, 5, 7, 2, … tokens.
        let widths = two.install(|| {
            split_across_threads(&src, 1, |part, _| {
                vec![part.ids.dims()[1]; part.lengths.len()]
            })
        });
        assert!(widths.iter().all(|&w| w == 7));
    }

    #[test]
    fn small_batches_and_one_thread_pools_run_in_one_piece() {
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        // 63 rows: under two parts of MIN_ROWS_PER_PART; with beam 5, 13 sentences are enough.
        for (pool, rows, beam, split) in [
            (&two, 63, 1, false),
            (&one, 64, 1, false),
            (&two, 13, 5, true),
        ] {
            let out = pool.install(|| split_across_threads(&batch(rows), beam, probe));
            assert_eq!(out.len(), rows);
            assert!(out.iter().enumerate().all(|(i, o)| o.0 == i));
            assert!(
                out.iter().all(|o| o.3 == split),
                "{rows} rows, beam {beam}: split {split} expected"
            );
        }
    }
}
