//! A loaded model behind one object-safe interface, so the server is not generic over burn's backends.
//!
//! The device (CPU or CUDA) is chosen once, when the binary loads the models; from then on the
//! server only sees `Arc<dyn Engine>`.

use rosetta::burn::tensor::backend::Backend;
use rosetta::translate::{SourceText, TranslateOptions, Translation, Translator};

/// What the server needs from a model: read a line as the model reads it, and translate a batch of
/// lines so read.
pub trait Engine: Send + Sync {
    /// Translates `sources` (one translation per source, in order), seeding sampling per source
    /// by `sentence_ids`.
    fn translate(
        &self,
        sources: Vec<SourceText>,
        options: &TranslateOptions,
        sentence_ids: &[u64],
    ) -> rosetta::Result<Vec<Translation>>;

    /// Whether [`Engine::translate_stream`] decodes with `options` (in-flight batching).
    fn streams(&self, options: &TranslateOptions) -> bool {
        let _ = options;
        false
    }

    /// Translates a stream of sources, up to `rows` decoded together, asking `feed(free)` for more
    /// as sentences end and reporting each to `done` (its number in the order fed, its translation)
    /// when it ends: see [`Translator::translate_stream`].
    ///
    /// # Errors
    /// When the model does not stream `options` ([`Engine::streams`]), or a translation fails.
    fn translate_stream(
        &self,
        options: &TranslateOptions,
        rows: usize,
        feed: &mut (dyn FnMut(usize) -> Vec<SourceText> + Send),
        done: &mut (dyn FnMut(usize, Translation) + Send),
    ) -> rosetta::Result<()> {
        let _ = (options, rows, feed, done);
        Err(rosetta::Error::Config(
            "this model does not decode a stream".into(),
        ))
    }

    /// `line` read as the model reads it (normalized, tokenized, cut at its maximum length): done
    /// once, when the request arrives, since its length decides its batch.
    fn read_source(&self, line: &str) -> rosetta::Result<SourceText>;

    /// Longest source the model reads, in pieces.
    fn max_source_len(&self) -> usize;

    /// How many models vote on every token (1 for a single model).
    fn ensemble_size(&self) -> usize;

    /// The model's architecture (`rnn` or `transformer`).
    fn arch(&self) -> &'static str;

    /// The search settings of a request that names none (the model's `[decode]` defaults).
    fn search_defaults(&self) -> rosetta::search::BeamConfig {
        rosetta::search::BeamConfig::default()
    }

    /// The output-length cap `(a, b)` of `a · source length + b` that `options` get: theirs, else
    /// the model's own.
    fn max_len(&self, options: &TranslateOptions) -> (f64, usize) {
        (
            options
                .search
                .max_len_a
                .unwrap_or(rosetta::search::DEFAULT_MAX_LEN_A),
            options
                .search
                .max_len_b
                .unwrap_or(rosetta::search::DEFAULT_MAX_LEN_B),
        )
    }
}

impl<B: Backend> Engine for Translator<B>
where
    Translator<B>: Send + Sync,
{
    fn translate(
        &self,
        sources: Vec<SourceText>,
        options: &TranslateOptions,
        sentence_ids: &[u64],
    ) -> rosetta::Result<Vec<Translation>> {
        self.translate_sources(sources, options, sentence_ids)
    }

    fn read_source(&self, line: &str) -> rosetta::Result<SourceText> {
        Translator::read_source(self, line)
    }

    fn streams(&self, options: &TranslateOptions) -> bool {
        Translator::streams(self, options)
    }

    fn translate_stream(
        &self,
        options: &TranslateOptions,
        rows: usize,
        feed: &mut (dyn FnMut(usize) -> Vec<SourceText> + Send),
        done: &mut (dyn FnMut(usize, Translation) + Send),
    ) -> rosetta::Result<()> {
        Translator::translate_stream(self, options, rows, feed, done)
    }

    fn max_source_len(&self) -> usize {
        Translator::max_source_len(self)
    }

    fn ensemble_size(&self) -> usize {
        Translator::ensemble_size(self)
    }

    fn arch(&self) -> &'static str {
        self.config().model.arch()
    }

    fn max_len(&self, options: &TranslateOptions) -> (f64, usize) {
        Translator::max_len(self, options)
    }

    fn search_defaults(&self) -> rosetta::search::BeamConfig {
        Translator::search_defaults(self)
    }
}
