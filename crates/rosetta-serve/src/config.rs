//! The server's settings: which models to serve under which names and language pairs, how to batch,
//! and the limits that protect it. Read from a TOML file (`rosetta serve --config`) or built from
//! command-line flags; every field has a default except the models.

use crate::error::ServeError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `rosetta serve` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Decoding threads (0 = one per CPU core). Each takes a batch from the queue and decodes it.
    pub workers: usize,
    /// A file of API keys, one per line (blank lines and `#` comments ignored). When set, every
    /// translation request must carry one of them.
    pub api_keys_file: Option<PathBuf>,
    /// Origins allowed to call the API from a browser (`["*"]` for any). Empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// How requests are grouped into batches.
    pub batch: BatchConfig,
    /// Limits on requests and the queue.
    pub limits: Limits,
    /// The models, each under a name.
    #[serde(rename = "model")]
    pub models: Vec<ModelSpec>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            api_keys_file: None,
            cors_origins: Vec::new(),
            batch: BatchConfig::default(),
            limits: Limits::default(),
            models: Vec::new(),
        }
    }
}

/// Dynamic batching: texts of concurrent requests for the same model and decoding options are
/// decoded together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Source pieces per batch, padding included (a single longer request still forms one batch).
    pub max_tokens: usize,
    /// Texts per batch; 1 turns batching off (each text decoded alone, as LibreTranslate does).
    pub max_texts: usize,
    /// How long the first request of a batch waits for others to join it, in milliseconds.
    pub max_wait_ms: u64,
    /// In-flight batching where the model and search allow it (greedy search with
    /// Transformers): a text that arrives while a batch decodes joins it at the next step once a
    /// quarter of its rows are free, instead of waiting for the batch's longest translation to
    /// end, and each request is answered as soon as its own texts are done. Off by default: on
    /// the Multi30k load test it gave no more throughput than whole batches chosen by length
    /// (561 against 562–570 sentences/s over 60 s), a lower p99 latency (610 against 677 ms)
    /// and 50–110 MiB more memory (each decoding thread's caches span the oldest live
    /// sentence's steps); see README. Beam search, sampling and RNNs always decode whole batches.
    pub in_flight: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_tokens: 4000,
            // Under load, 32 texts chosen by length decoded faster than larger batches: the
            // load test's Transformer (greedy) 711 sentences/s against 689 at 64 and 612 at 128;
            // the quickstart model 4,262 against 3,990 at 128.
            max_texts: 32,
            max_wait_ms: 5,
            in_flight: false,
        }
    }
}

/// Limits; a request over one gets a 4xx answer with a JSON error saying which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Characters per text.
    pub max_chars: usize,
    /// Texts per request.
    pub max_texts: usize,
    /// Request body size in bytes.
    pub max_body_bytes: usize,
    /// Texts waiting to be decoded, all models together; beyond it requests get 429 with Retry-After.
    pub queue_texts: usize,
    /// Seconds a request may wait for its translation before it gets 503.
    pub timeout_s: f64,
    /// Beam size a request may ask for (at least the default beam, 5).
    pub max_beam: usize,
    /// Longest output a request may ask for, in pieces: `max_len_a · source length + max_len_b` at
    /// the model's longest source, and `min_len`, must stay within it (decoding time and memory
    /// grow with it, and a request's decode cannot be stopped once it started).
    pub max_output_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_chars: 5000,
            max_texts: 128,
            max_body_bytes: 1 << 20,
            queue_texts: 4096,
            timeout_s: 60.0,
            max_beam: 16,
            max_output_len: 1024,
        }
    }
}

/// One model (or ensemble) to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The name requests use (`"model": "de-en"`).
    pub name: String,
    /// Model directories written by `rosetta train`; several form an ensemble.
    pub paths: Vec<PathBuf>,
    /// Source language code; defaults to the part of a `xx-yy` name before the dash.
    #[serde(default)]
    pub source: Option<String>,
    /// Target language code; defaults to the part of a `xx-yy` name after the dash.
    #[serde(default)]
    pub target: Option<String>,
}

impl ModelSpec {
    /// Parses the command line's `NAME=DIR[,DIR2…]`.
    pub fn parse(arg: &str) -> Result<Self, ServeError> {
        let (name, paths) = arg.split_once('=').ok_or_else(|| {
            ServeError::Config(format!(
                "--model {arg:?}: expected NAME=DIR (e.g. de-en=runs/m30k-de-en), or NAME=DIR1,DIR2 for an ensemble"
            ))
        })?;
        Ok(ModelSpec {
            name: name.trim().to_owned(),
            paths: paths.split(',').map(|p| PathBuf::from(p.trim())).collect(),
            source: None,
            target: None,
        })
    }

    /// The language pair this model serves, if its spec or its name (`xx-yy`) gives one.
    pub fn pair(&self) -> Option<(String, String)> {
        match (&self.source, &self.target) {
            (Some(s), Some(t)) => Some((s.to_lowercase(), t.to_lowercase())),
            _ => {
                let (s, t) = self.name.split_once('-')?;
                let code = |c: &str| {
                    (!c.is_empty() && c.len() <= 8 && c.chars().all(|ch| ch.is_ascii_alphabetic()))
                        .then(|| c.to_lowercase())
                };
                Some((
                    self.source.clone().or_else(|| code(s))?,
                    self.target.clone().or_else(|| code(t))?,
                ))
            }
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        toml::from_str(&text)
            .map_err(|e| ServeError::Config(format!("{}: {}", path.display(), e.message())))
    }

    /// Decoding threads after resolving 0 to the core count.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Checks the settings in plain English.
    pub fn validate(&self) -> Result<(), ServeError> {
        let bad = |m: String| Err(ServeError::Config(m));
        if self.models.is_empty() {
            return bad(
                "no model to serve: give --model NAME=DIR (or [[model]] in the config file)".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        let mut pairs = std::collections::HashSet::new();
        for m in &self.models {
            if m.name.is_empty() || m.name.chars().any(|c| c.is_whitespace() || c == '/') {
                return bad(format!(
                    "model name {:?} must be non-empty, without spaces or slashes",
                    m.name
                ));
            }
            if !names.insert(m.name.clone()) {
                return bad(format!("model name {:?} is used twice", m.name));
            }
            if m.paths.is_empty() || m.paths.iter().any(|p| p.as_os_str().is_empty()) {
                return bad(format!(
                    "model {:?} needs at least one model directory",
                    m.name
                ));
            }
            if m.source.is_some() != m.target.is_some() {
                return bad(format!(
                    "model {:?}: give both source and target languages, or neither",
                    m.name
                ));
            }
            if let Some(pair) = m.pair()
                && !pairs.insert(pair.clone())
            {
                return bad(format!(
                    "two models serve {} → {}; name one of them differently or set its languages",
                    pair.0, pair.1
                ));
            }
        }
        if self.batch.max_tokens == 0 || self.batch.max_texts == 0 {
            return bad("batch.max_tokens and batch.max_texts must be at least 1".into());
        }
        if self.batch.max_wait_ms > 10_000 {
            return bad(
                "batch.max_wait_ms above 10 s would stall every request; use at most 10000".into(),
            );
        }
        let l = &self.limits;
        if l.max_chars == 0
            || l.max_texts == 0
            || l.max_body_bytes == 0
            || l.queue_texts == 0
            || l.max_beam == 0
        {
            return bad("limits.max_chars, max_texts, max_body_bytes, queue_texts and max_beam must be at least 1".into());
        }
        if l.queue_texts < l.max_texts {
            return bad(format!(
                "limits.queue_texts ({}) must hold at least one full request (limits.max_texts = {})",
                l.queue_texts, l.max_texts
            ));
        }
        let default_beam = rosetta::search::BeamConfig::default().beam;
        if l.max_beam < default_beam {
            return bad(format!(
                "limits.max_beam ({}) must be at least the default beam size ({default_beam}), which requests without `beam` use",
                l.max_beam
            ));
        }
        if l.max_output_len == 0 {
            return bad("limits.max_output_len must be at least 1".into());
        }
        if !(l.timeout_s.is_finite() && l.timeout_s > 0.0 && l.timeout_s <= 86_400.0) {
            return bad(format!(
                "limits.timeout_s must be a number of seconds above 0 and at most 86400, not {}",
                l.timeout_s
            ));
        }
        Ok(())
    }
}
