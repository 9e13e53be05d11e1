//! Greedy decoding: the most probable token at every step, batched, dropping finished sentences.

use super::scorer::Scorer;
use crate::model::input::SourceBatch;
use burn::prelude::*;

/// One decoded sentence (`Default`: nothing decoded yet).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hypothesis {
    /// Target ids without `<s>`/`</s>`.
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of the tokens (and of `</s>`, when it was produced).
    pub log_prob: f32,
    /// The score hypotheses are ranked by: `log_prob` divided by the length penalty in beam
    /// search, `log_prob` itself otherwise.
    pub score: f32,
    /// Attention per output token, each over the source positions (empty without attention).
    pub attention: Vec<Vec<f32>>,
    /// Whether the search cut it at the maximum output length instead of seeing `</s>`: counted
    /// and reported, since a cap set too low shows up as truncated outputs, not as an error.
    pub hit_max_len: bool,
}

/// Decodes a batch greedily. A sentence ends at `</s>` or after `max_len(src_len)` tokens.
pub fn greedy<B: Backend, S: Scorer<B> + Sync>(
    scorer: &S,
    src: &SourceBatch<B>,
    max_len: impl Fn(usize) -> usize + Sync,
) -> Vec<Hypothesis> {
    super::split_across_threads(src, 1, |part, _| greedy_here(scorer, part, &max_len))
}

/// [`greedy`] on the calling thread: the batch is the stream's only admission.
fn greedy_here<B: Backend, S: Scorer<B>>(
    scorer: &S,
    src: &SourceBatch<B>,
    max_len: impl Fn(usize) -> usize,
) -> Vec<Hypothesis> {
    let batch = src.lengths.len();
    let mut hyps = vec![None; batch];
    let mut whole = Some(src.clone());
    stream_here(
        scorer,
        batch,
        |_| whole.take(),
        &max_len,
        |sentence, hyp| hyps[sentence] = Some(hyp),
    );
    // The stream reports every sentence it admitted, once: a missing one would shift the rest.
    debug_assert!(hyps.iter().all(Option::is_some), "every sentence reported");
    hyps.into_iter().flatten().collect()
}

/// Greedy decoding of a stream of sentences (in-flight batching): up to `rows` sentences are
/// decoded together, and whenever at least a quarter of the rows are free the search asks `feed`
/// for as many more sentences as there are free rows, admits them ([`Scorer::admit`]) and goes on;
/// each sentence is reported to `done` (its number in order of admission, from 0, and its
/// hypothesis) at the step it ends. Ends when no sentence is live and `feed` gives nothing.
///
/// A batch decoded whole runs until its longest translation ends, its last steps costing a step of
/// the weights for a few rows: on Multi30k `val` in batches of 32 sentences in arrival order, a
/// fifth of the decoder's time went to steps of 8 rows or fewer (3.05 s of steps; 2.49 s when
/// admitting). The admissions' encoding in smaller groups costs part of that back. For a model
/// that does not admit, `feed` is asked again only when nothing is live.
///
/// A sentence's result is the same whatever it shares the rows with (the model's steps read
/// only its own positions; see [`crate::kernels::step_attention`]).
pub fn greedy_stream<B: Backend, S: Scorer<B> + Sync>(
    scorer: &S,
    rows: usize,
    feed: impl FnMut(usize) -> Option<SourceBatch<B>> + Send,
    max_len: impl Fn(usize) -> usize + Send,
    done: impl FnMut(usize, Hypothesis) + Send,
) {
    super::on_pool_worker(|| stream_here(scorer, rows, feed, max_len, done));
}

/// [`greedy_stream`] on the calling thread.
fn stream_here<B: Backend, S: Scorer<B>>(
    scorer: &S,
    rows: usize,
    mut feed: impl FnMut(usize) -> Option<SourceBatch<B>>,
    max_len: impl Fn(usize) -> usize,
    mut done: impl FnMut(usize, Hypothesis),
) {
    let rows = rows.max(1);
    // Admitting in groups: each admission encodes its sentences together, and groups of an
    // eighth encoded less efficiently than quarters (Multi30k val, batches of 32: 4.3 s against
    // 4.0–4.1 s at a quarter).
    let refill = (rows / 4).max(1);
    // Per live row: its sentence number, source length, output limit and hypothesis so far.
    struct Live {
        sentence: usize,
        src_len: usize,
        limit: usize,
        hyp: Hypothesis,
    }
    let mut live: Vec<Live> = Vec::new();
    let mut state: Option<S::State> = None;
    let mut prev: Vec<i32> = Vec::new();
    let mut admitted = 0usize;
    let mut specials = None;
    let mut device = None;
    // Sentences a scorer refused to admit (against its `admits`): started once nothing is live.
    let mut deferred: Option<SourceBatch<B>> = None;
    loop {
        let free = rows.saturating_sub(live.len());
        let may_admit = live.is_empty() || (scorer.admits() && free >= refill);
        let next = match deferred.take() {
            Some(src) if live.is_empty() => Some(src),
            Some(src) => {
                deferred = Some(src);
                None
            }
            None if may_admit => feed(free).filter(|s| !s.lengths.is_empty()),
            None => None,
        };
        if let Some(src) = next {
            let s = *specials.get_or_insert(src.specials);
            device.get_or_insert_with(|| src.ids.device());
            let joined = match state.as_mut() {
                Some(st) if !live.is_empty() => scorer.admit(st, &src),
                _ => false,
            };
            let fresh = !joined && live.is_empty();
            if fresh {
                state = Some(scorer.start(&src));
            }
            if joined || fresh {
                for &n in &src.lengths {
                    live.push(Live {
                        sentence: admitted,
                        src_len: n,
                        limit: max_len(n).min(scorer.max_len()),
                        hyp: Hypothesis::default(),
                    });
                    prev.push(s.bos as i32);
                    admitted += 1;
                }
            } else {
                deferred = Some(src);
            }
        }
        let (Some(current), Some(s), Some(device)) = (state.take(), specials, device.as_ref())
        else {
            return;
        };
        if live.is_empty() {
            return;
        }
        let n = live.len();
        let prev_tensor =
            Tensor::<B, 1, Int>::from_data(TensorData::new(prev.clone(), [n]), device);
        let step = scorer.step(prev_tensor, current);
        // Padding and `<s>` are never outputs (their probabilities still count in the
        // normalization: scores stay the model's).
        let (best_id, best_lp) =
            crate::kernels::best_tokens(step.logits, &[s.pad as usize, s.bos as usize]);
        let (attention, src_len) = match step.attention {
            Some(a) => {
                let width = a.dims()[1];
                (
                    Some(a.into_data().iter::<f32>().collect::<Vec<f32>>()),
                    width,
                )
            }
            None => (None, 0),
        };
        let mut keep = Vec::with_capacity(n);
        let mut still = Vec::with_capacity(n);
        prev.clear();
        for (row, mut l) in live.drain(..).enumerate() {
            let id = best_id[row] as u32;
            l.hyp.log_prob += best_lp[row];
            l.hyp.score = l.hyp.log_prob;
            if id == s.eos {
                done(l.sentence, l.hyp);
                continue;
            }
            if let Some(a) = &attention {
                let start = row * src_len;
                l.hyp.attention.push(a[start..start + l.src_len].to_vec());
            }
            l.hyp.tokens.push(id);
            if l.hyp.tokens.len() >= l.limit {
                l.hyp.hit_max_len = true;
                done(l.sentence, l.hyp);
                continue;
            }
            keep.push(row);
            prev.push(id as i32);
            still.push(l);
        }
        live = still;
        state = Some(if keep.len() < n && !keep.is_empty() {
            let idx: Vec<i32> = keep.iter().map(|&r| r as i32).collect();
            let k = idx.len();
            scorer.select(
                step.state,
                Tensor::from_data(TensorData::new(idx, [k]), device),
            )
        } else {
            step.state
        });
    }
}
