//! Dynamic batching: texts from concurrent requests for one model and one set of decoding options are
//! decoded together, on a pool of decoding threads.
//!
//! Requests enter one bounded queue (counted in texts). An idle worker forms the next batch: it takes
//! the oldest request, waits up to `max_wait_ms` for others with the same model and options to arrive
//! (or until the batch is full), takes them, and decodes while the next idle worker forms the next
//! batch. Only one worker forms a batch at a time, so batches grow while all workers are busy: under
//! load the batches fill up, when idle a lone request waits at most `max_wait_ms`. A request's texts
//! are never split across batches (an array `q` is one batch), and one slow batch holds only its
//! own worker.
//!
//! With in-flight batching (`in_flight`, greedy Transformer search) a worker's batch is a stream:
//! requests join it as its sentences end, and each is answered when its own texts end (see
//! [`stream`]).

use crate::config::BatchConfig;
use crate::engine::Engine;
use crate::metrics::Metrics;
use rosetta::translate::{SourceText, TranslateOptions, Translation};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How often a decoding thread gives freed memory back to the system, between batches (see
/// [`rosetta::device::release_free_memory`]).
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// The translations of one request, with where its time went.
#[derive(Debug)]
pub struct Finished {
    /// One translation per text, in order.
    pub translations: Vec<Translation>,
    /// Time spent waiting in the queue.
    pub queued: Duration,
    /// Time spent decoding the batch it was part of (in-flight batching: from joining it to its
    /// last text's end).
    pub decoding: Duration,
    /// Texts in that batch (this request's and others'; in-flight batching: when it joined).
    pub batch_texts: usize,
}

/// A request waiting to be decoded.
pub struct Job {
    /// Which model.
    pub model: Arc<dyn Engine>,
    /// Identifies the model for grouping (its index in the server's list).
    pub model_index: usize,
    /// The texts, read as the model reads them (their lengths decide the batch).
    pub sources: Vec<SourceText>,
    /// Decoding options (only requests with equal options share a batch).
    pub options: TranslateOptions,
    /// Sampling seed per text.
    pub sentence_ids: Vec<u64>,
    /// Set when the request gave up waiting; the job is then dropped, not decoded.
    pub cancelled: Arc<AtomicBool>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Finished, String>>,
    /// When it entered the queue.
    pub enqueued: Instant,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The queue holds as many texts as allowed.
    Full,
    /// The server is shutting down.
    Closed,
}

struct Queue {
    jobs: VecDeque<Job>,
    texts: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    arrived: Condvar,
    /// Held by the one worker that is forming a batch.
    forming: Mutex<()>,
    /// Workers in [`next_batch`], waiting for work: while any is, a running stream takes no
    /// requests from the queue (they are that worker's to take).
    idle: std::sync::atomic::AtomicUsize,
    capacity: usize,
    config: BatchConfig,
    metrics: Arc<Metrics>,
}

/// The queue and its decoding threads.
pub struct Batcher {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// A poisoned lock means a thread panicked while holding it; the queue itself stays consistent
/// (every change to it is a single push or pop), so serving goes on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Batcher {
    /// Starts `workers` decoding threads over a queue of at most `capacity` texts.
    pub fn start(
        workers: usize,
        capacity: usize,
        config: BatchConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                texts: 0,
                closed: false,
            }),
            arrived: Condvar::new(),
            forming: Mutex::new(()),
            idle: std::sync::atomic::AtomicUsize::new(0),
            capacity,
            config,
            metrics,
        });
        let workers = workers.max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = (cores / workers).max(1);
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let shared = Arc::clone(&shared);
            // Each worker decodes inside its own pool of `cores / workers` threads. Through the
            // global pool, two workers' parallel sections queued behind each other and every
            // kernel paid a hand-off between threads; with a pool of one the whole batch runs on
            // the worker's own thread.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(move |t| format!("rosetta-decode-{i}-{t}"))
                .start_handler(|_| rosetta::device::flush_subnormals())
                .build()
                .map_err(std::io::Error::other)?;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("rosetta-decode-{i}"))
                    .spawn(move || {
                        pool.install(|| {
                            rosetta::device::flush_subnormals();
                            let mut trimmed = Instant::now();
                            let mut trim = || {
                                if trimmed.elapsed() >= TRIM_EVERY {
                                    rosetta::device::release_free_memory();
                                    trimmed = Instant::now();
                                }
                            };
                            while let Some(batch) = next_batch(&shared) {
                                if streams(&batch, &shared.config) {
                                    stream(batch, &shared, &mut trim);
                                } else {
                                    decode(batch, &shared.metrics);
                                }
                                trim();
                            }
                        })
                    })?,
            );
        }
        Ok(Batcher {
            shared,
            workers: Mutex::new(handles),
        })
    }

    /// Queues a job, or says why not.
    pub fn submit(&self, job: Job) -> Result<(), Rejected> {
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return Err(Rejected::Closed);
        }
        if q.texts + job.sources.len() > self.shared.capacity {
            // Requests that gave up still hold places while every worker is busy.
            purge_cancelled(&mut q, &self.shared.metrics);
            if q.texts + job.sources.len() > self.shared.capacity {
                return Err(Rejected::Full);
            }
        }
        q.texts += job.sources.len();
        self.shared.metrics.queue_texts.set(q.texts as i64);
        q.jobs.push_back(job);
        drop(q);
        self.shared.arrived.notify_all();
        Ok(())
    }

    /// Texts waiting.
    pub fn queued_texts(&self) -> usize {
        lock(&self.shared.queue).texts
    }

    /// Whether new jobs are still accepted.
    pub fn is_open(&self) -> bool {
        !lock(&self.shared.queue).closed
    }

    /// Stops accepting jobs, decodes every job already queued, and waits for the workers to end.
    pub fn shutdown(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.arrived.notify_all();
        let handles = std::mem::take(&mut *lock(&self.workers));
        for h in handles {
            // A worker that panicked has already answered (or dropped) its jobs; nothing to add.
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("queued_texts", &self.queued_texts())
            .finish()
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether `job` may share a batch with `first`.
fn compatible(first: &Job, job: &Job) -> bool {
    same_search(first.model_index, &first.options, job)
}

/// Whether `job` is for model `model_index` with `options`.
fn same_search(model_index: usize, options: &TranslateOptions, job: &Job) -> bool {
    job.model_index == model_index && &job.options == options
}

/// The jobs of the next batch (indices into the queue) and whether it is full: the oldest job,
/// then the compatible ones closest to its length (ties: the older first), within the limits.
///
/// Under load the queue holds more than a batch, and taking jobs in arrival order mixed short and
/// long sentences: a batch then runs until its longest translation ends, its last steps decoding a
/// few rows at the cost of many. Choosing by length keeps batches even, and every job still waits
/// at most until it is the oldest.
fn plan(q: &Queue, config: &BatchConfig) -> (Vec<usize>, bool) {
    let Some(first) = q.jobs.front() else {
        return (Vec::new(), false);
    };
    let longest = |job: &Job| {
        job.sources
            .iter()
            .map(|s| s.pieces.len())
            .max()
            .unwrap_or(0)
    };
    let target = longest(first);
    // The oldest job always goes (even if its options do not compare equal to themselves).
    let mut order: Vec<usize> = (1..q.jobs.len())
        .filter(|&i| compatible(first, &q.jobs[i]))
        .collect();
    order.sort_by_key(|&i| (longest(&q.jobs[i]).abs_diff(target), i));
    let (mut texts, mut long, mut chosen) = (0usize, 0usize, Vec::new());
    let mut full = false;
    for i in std::iter::once(0).chain(order) {
        let job = &q.jobs[i];
        let n = job.sources.len();
        let l = longest(job).max(long);
        // Padded cost, as the translator batches: every row as long as the longest.
        let cost = (texts + n) * (l + 1);
        if !chosen.is_empty() && (texts + n > config.max_texts || cost > config.max_tokens) {
            // A request of many texts that does not fit must not keep the smaller ones after it
            // out of this batch.
            full = true;
            continue;
        }
        chosen.push(i);
        texts += n;
        long = l;
        if texts >= config.max_texts || cost >= config.max_tokens {
            full = true;
            break;
        }
    }
    (chosen, full)
}

/// Removes the jobs at `chosen` (indices into the queue) and returns them in queue order.
fn take_jobs(q: &mut Queue, mut chosen: Vec<usize>, metrics: &Metrics) -> Vec<Job> {
    chosen.sort_unstable();
    let mut jobs = Vec::with_capacity(chosen.len());
    // Highest index first, so the earlier indices stay valid.
    for &i in chosen.iter().rev() {
        if let Some(job) = q.jobs.remove(i) {
            jobs.push(job);
        }
    }
    jobs.reverse();
    q.texts -= jobs.iter().map(|j| j.sources.len()).sum::<usize>();
    metrics.queue_texts.set(q.texts as i64);
    jobs
}

/// Drops the jobs of requests that gave up waiting.
fn purge_cancelled(q: &mut Queue, metrics: &Metrics) {
    let before = q.jobs.len();
    q.jobs.retain(|j| !j.cancelled.load(Ordering::Relaxed));
    if q.jobs.len() != before {
        q.texts = q.jobs.iter().map(|j| j.sources.len()).sum();
        metrics.queue_texts.set(q.texts as i64);
    }
}

/// Blocks until a batch is ready (or the queue is closed and empty: `None`).
fn next_batch(shared: &Shared) -> Option<Vec<Job>> {
    shared.idle.fetch_add(1, Ordering::SeqCst);
    let batch = wait_for_batch(shared);
    shared.idle.fetch_sub(1, Ordering::SeqCst);
    batch
}

/// [`next_batch`] while counted idle.
fn wait_for_batch(shared: &Shared) -> Option<Vec<Job>> {
    let _forming = lock(&shared.forming);
    let mut q = lock(&shared.queue);
    loop {
        purge_cancelled(&mut q, &shared.metrics);
        let Some(first) = q.jobs.front() else {
            if q.closed {
                return None;
            }
            q = shared
                .arrived
                .wait(q)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            continue;
        };
        let deadline = first.enqueued + Duration::from_millis(shared.config.max_wait_ms);
        let (chosen, full) = plan(&q, &shared.config);
        let now = Instant::now();
        if full || now >= deadline || q.closed {
            return Some(take_jobs(&mut q, chosen, &shared.metrics));
        }
        q = shared
            .arrived
            .wait_timeout(q, deadline - now)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
}

/// Decodes one batch and answers each of its requests.
fn decode(mut batch: Vec<Job>, metrics: &Metrics) {
    let Some(first) = batch.first() else { return };
    let model = Arc::clone(&first.model);
    let options = first.options.clone();
    // Moved to the model; each job's count of texts stays in its `sentence_ids`.
    let sources: Vec<SourceText> = batch
        .iter_mut()
        .flat_map(|j| std::mem::take(&mut j.sources))
        .collect();
    let ids: Vec<u64> = batch
        .iter()
        .flat_map(|j| j.sentence_ids.iter().copied())
        .collect();
    let batch_texts = sources.len();
    let started = Instant::now();
    // A panic inside the model would be a bug; it must cost this batch its answers, not the worker.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.translate(sources, &options, &ids)
    }));
    let decoding = started.elapsed();
    metrics.batch_texts.observe(batch_texts as f64);
    metrics.decode_seconds.inc_by(decoding.as_secs_f64());
    let mut translations = match result {
        Ok(Ok(t)) if t.len() != batch_texts => {
            tracing::error!(
                "the model returned {} translations for {batch_texts} texts",
                t.len()
            );
            for job in batch {
                let _ = job
                    .reply
                    .send(Err("internal error while translating".to_owned()));
            }
            return;
        }
        Ok(Ok(t)) => {
            let tokens: usize = t
                .iter()
                .flat_map(|t| t.candidates.first())
                .map(|c| c.pieces.len() + 1)
                .sum();
            metrics.output_tokens.inc_by(tokens as u64);
            metrics.translated_texts.inc_by(t.len() as u64);
            t.into_iter()
        }
        Ok(Err(e)) => {
            let message = format!("translation failed: {e}");
            for job in batch {
                let _ = job.reply.send(Err(message.clone()));
            }
            return;
        }
        Err(_) => {
            tracing::error!("the model panicked while decoding a batch of {batch_texts} texts");
            for job in batch {
                let _ = job
                    .reply
                    .send(Err("internal error while translating".to_owned()));
            }
            return;
        }
    };
    for job in batch {
        let mine: Vec<Translation> = translations.by_ref().take(job.sentence_ids.len()).collect();
        // The receiver is gone when the request timed out meanwhile; nothing to do then.
        let _ = job.reply.send(Ok(Finished {
            translations: mine,
            queued: started.saturating_duration_since(job.enqueued),
            decoding,
            batch_texts,
        }));
    }
}

/// Whether `batch` is decoded as a stream: in-flight batching is on, batching is (more than one
/// text per batch), and its model decodes its options so ([`Engine::streams`]).
fn streams(batch: &[Job], config: &BatchConfig) -> bool {
    config.in_flight
        && config.max_texts > 1
        && batch
            .first()
            .is_some_and(|job| job.model.streams(&job.options))
}

/// A request whose texts are in a stream.
struct InFlight {
    job: Job,
    translations: Vec<Option<Translation>>,
    left: usize,
    admitted: Instant,
    /// Texts in the search once it joined.
    batch_texts: usize,
}

/// The requests of one stream and which text each stream number is.
#[derive(Default)]
struct Flights {
    jobs: std::collections::HashMap<usize, InFlight>,
    /// Stream number → (request, text).
    texts: std::collections::HashMap<usize, (usize, usize)>,
    next_job: usize,
    next_text: usize,
}

impl Flights {
    /// Registers `jobs`, admitted into a search that then decodes `batch_texts` texts, and
    /// returns their texts in order.
    fn admit(&mut self, jobs: Vec<Job>, batch_texts: usize) -> Vec<SourceText> {
        let now = Instant::now();
        let mut sources = Vec::new();
        for mut job in jobs {
            let n = job.sources.len();
            if n == 0 {
                let _ = job.reply.send(Ok(Finished {
                    translations: Vec::new(),
                    queued: now.saturating_duration_since(job.enqueued),
                    decoding: Duration::ZERO,
                    batch_texts,
                }));
                continue;
            }
            let slot = self.next_job;
            self.next_job += 1;
            for t in 0..n {
                self.texts.insert(self.next_text, (slot, t));
                self.next_text += 1;
            }
            sources.append(&mut job.sources);
            self.jobs.insert(
                slot,
                InFlight {
                    job,
                    translations: (0..n).map(|_| None).collect(),
                    left: n,
                    admitted: now,
                    batch_texts,
                },
            );
        }
        sources
    }
}

/// Decodes `batch` and the compatible requests that arrive while it runs as one stream
/// ([`Engine::translate_stream`]): when rows free up, the oldest waiting requests for the same
/// model and options join at the next step, and each request is answered as soon as its last text
/// ends. A request for another model or other options does not wait behind a stream for longer
/// than the stream's live texts take: once it is the oldest in the queue, the stream admits
/// nothing more and ends with them, and the worker (or an idle one) takes that request next. While
/// another worker is idle, the stream takes nothing: the queue is that worker's.
fn stream(batch: Vec<Job>, shared: &Shared, trim: &mut (dyn FnMut() + Send)) {
    let Some(first) = batch.first() else { return };
    let model = Arc::clone(&first.model);
    let options = first.options.clone();
    let model_index = first.model_index;
    let rows = shared.config.max_texts;
    let metrics = &shared.metrics;
    let started = Instant::now();
    // The opening batch is registered before decoding starts, so that an error before the first
    // feed still answers it.
    let opening_texts: usize = batch.iter().map(|j| j.sources.len()).sum();
    metrics.batch_texts.observe(opening_texts as f64);
    let mut flights = Flights::default();
    let mut opening = Some(flights.admit(batch, opening_texts));
    // Shared by the two callbacks, which the search calls one at a time.
    let flights = Mutex::new(flights);
    let mut feed = |free: usize| -> Vec<SourceText> {
        trim();
        if let Some(sources) = opening.take() {
            return sources;
        }
        let live = rows.saturating_sub(free);
        let jobs = take_joining(shared, (model_index, &options), free);
        if jobs.is_empty() {
            return Vec::new();
        }
        let texts: usize = jobs.iter().map(|j| j.sources.len()).sum();
        if live > 0 {
            metrics.joined_texts.inc_by(texts as u64);
        }
        lock(&flights).admit(jobs, live + texts)
    };
    let mut done = |number: usize, translation: Translation| {
        let mut f = lock(&flights);
        let Some((slot, t)) = f.texts.remove(&number) else {
            return;
        };
        if let Some(c) = translation.candidates.first() {
            metrics.output_tokens.inc_by(c.pieces.len() as u64 + 1);
        }
        metrics.translated_texts.inc();
        let Some(flight) = f.jobs.get_mut(&slot) else {
            return;
        };
        flight.translations[t] = Some(translation);
        flight.left -= 1;
        if flight.left > 0 {
            return;
        }
        let Some(flight) = f.jobs.remove(&slot) else {
            return;
        };
        let finished = Finished {
            translations: flight.translations.into_iter().flatten().collect(),
            queued: flight
                .admitted
                .saturating_duration_since(flight.job.enqueued),
            decoding: flight.admitted.elapsed(),
            batch_texts: flight.batch_texts,
        };
        // The receiver is gone when the request timed out meanwhile; nothing to do then.
        let _ = flight.job.reply.send(Ok(finished));
    };
    // A panic inside the model would be a bug; it must cost the stream's unanswered requests
    // their answers, not the worker.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.translate_stream(&options, rows, &mut feed, &mut done)
    }));
    metrics
        .decode_seconds
        .inc_by(started.elapsed().as_secs_f64());
    let message = match result {
        Ok(Ok(())) => "internal error: the stream ended before this request's texts".to_owned(),
        Ok(Err(e)) => format!("translation failed: {e}"),
        Err(_) => {
            tracing::error!("the model panicked while decoding a stream");
            "internal error while translating".to_owned()
        }
    };
    let left = flights.into_inner().unwrap_or_else(|p| p.into_inner());
    for (_, flight) in left.jobs {
        tracing::error!("answered with an error: {message}");
        let _ = flight.job.reply.send(Err(message.clone()));
    }
}

/// Takes from the queue the oldest request for `(model_index, options)` and those closest to its
/// length whose texts fit in `free` rows, as long as the oldest request of all is one of them and
/// no other worker is idle (see [`stream`]).
fn take_joining(
    shared: &Shared,
    (model_index, options): (usize, &TranslateOptions),
    free: usize,
) -> Vec<Job> {
    if shared.idle.load(Ordering::SeqCst) > 0 {
        return Vec::new();
    }
    let mut q = lock(&shared.queue);
    purge_cancelled(&mut q, &shared.metrics);
    let front_fits = q
        .jobs
        .front()
        .is_some_and(|j| same_search(model_index, options, j) && j.sources.len() <= free);
    if !front_fits {
        return Vec::new();
    }
    // The oldest request and those closest to its length, as for a whole batch: the encoder
    // then reads one length, no padding.
    let (chosen, _) = plan(
        &q,
        &BatchConfig {
            max_texts: free,
            ..shared.config.clone()
        },
    );
    take_jobs(&mut q, chosen, &shared.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every line with an empty translation and records the decoding pool's size.
    struct PoolProbe(Mutex<Vec<usize>>);

    impl Engine for PoolProbe {
        fn translate(
            &self,
            sources: Vec<SourceText>,
            _: &TranslateOptions,
            _: &[u64],
        ) -> rosetta::Result<Vec<Translation>> {
            lock(&self.0).push(rayon::current_num_threads());
            Ok(sources
                .iter()
                .map(|_| Translation {
                    source_pieces: Vec::new(),
                    truncated: false,
                    candidates: Vec::new(),
                })
                .collect())
        }
        fn read_source(&self, line: &str) -> rosetta::Result<SourceText> {
            Ok(SourceText {
                pieces: line.chars().map(String::from).collect(),
                truncated: false,
            })
        }
        fn max_source_len(&self) -> usize {
            100
        }
        fn ensemble_size(&self) -> usize {
            1
        }
        fn arch(&self) -> &'static str {
            "rnn"
        }
    }

    /// A source of `len` pieces.
    fn source(len: usize) -> SourceText {
        SourceText {
            pieces: vec!["x".into(); len],
            truncated: false,
        }
    }

    /// A one-text job of `len` source pieces (its answer goes nowhere).
    fn job(model: &Arc<dyn Engine>, len: usize, options: &TranslateOptions) -> Job {
        Job {
            model: Arc::clone(model),
            model_index: 0,
            sources: vec![source(len)],
            options: options.clone(),
            sentence_ids: vec![0],
            cancelled: Arc::new(AtomicBool::new(false)),
            reply: oneshot::channel().0,
            enqueued: Instant::now(),
        }
    }

    #[test]
    fn a_batch_takes_the_oldest_job_then_the_closest_lengths_with_its_options() {
        let model: Arc<dyn Engine> = Arc::new(PoolProbe(Mutex::new(Vec::new())));
        let options = TranslateOptions::default();
        let mut greedy = TranslateOptions::default();
        greedy.search.beam = 1;
        let jobs: VecDeque<Job> = [
            (10, &options),
            (30, &options),
            (11, &options),
            (29, &options),
            (10, &greedy),
            (12, &options),
            (9, &options),
        ]
        .into_iter()
        .map(|(len, o)| job(&model, len, o))
        .collect();
        let q = Queue {
            texts: jobs.len(),
            jobs,
            closed: false,
        };
        let three = BatchConfig {
            max_texts: 3,
            ..BatchConfig::default()
        };
        // Lengths 11 and 9 are one piece from the oldest's 10 (the older first); the greedy job
        // cannot share a beam-search batch.
        assert_eq!(plan(&q, &three), (vec![0, 2, 6], true));
        // Room for all: every compatible job, the far ones last.
        assert_eq!(
            plan(&q, &BatchConfig::default()),
            (vec![0, 2, 6, 5, 3, 1], false)
        );
    }

    #[test]
    fn a_request_too_big_to_join_does_not_keep_smaller_ones_out() {
        let model: Arc<dyn Engine> = Arc::new(PoolProbe(Mutex::new(Vec::new())));
        let options = TranslateOptions::default();
        let mut jobs: VecDeque<Job> = [10, 10, 12]
            .into_iter()
            .map(|len| job(&model, len, &options))
            .collect();
        // The second job, as close to the oldest as can be, holds 40 texts: over the 32 a batch
        // takes once the oldest is in.
        jobs[1].sources = vec![source(10); 40];
        jobs[1].sentence_ids = (0..40).collect();
        let q = Queue {
            texts: 42,
            jobs,
            closed: false,
        };
        assert_eq!(plan(&q, &BatchConfig::default()), (vec![0, 2], true));
    }

    #[test]
    fn each_worker_decodes_in_its_share_of_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for workers in [1, cores, 2 * cores] {
            let probe = Arc::new(PoolProbe(Mutex::new(Vec::new())));
            let batcher = Batcher::start(
                workers,
                16,
                BatchConfig::default(),
                Arc::new(Metrics::default()),
            )
            .expect("start");
            let (reply, answer) = oneshot::channel();
            let job = Job {
                model: Arc::clone(&probe) as Arc<dyn Engine>,
                model_index: 0,
                sources: vec![source(1), source(1)],
                options: TranslateOptions::default(),
                sentence_ids: vec![0, 1],
                cancelled: Arc::new(AtomicBool::new(false)),
                reply,
                enqueued: Instant::now(),
            };
            assert!(batcher.submit(job).is_ok());
            let finished = answer.blocking_recv().expect("answered").expect("decoded");
            assert_eq!(finished.translations.len(), 2);
            batcher.shutdown();
            assert_eq!(
                *lock(&probe.0),
                vec![(cores / workers).max(1)],
                "{workers} workers"
            );
        }
    }
}
