//! Errors of the model, trainer and search library.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while building, training, saving, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range or inconsistent (the message says which and why).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A config file could not be parsed (unknown key, wrong type).
    #[error("{path}: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The parser's explanation.
        message: String,
    },
    /// The text pipeline failed (corpus, tokenizer, vocabulary).
    #[error(transparent)]
    Text(#[from] rosetta_text::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint does not fit the model (another architecture or vocabulary) or is corrupt.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
    /// Training produced non-finite losses too many times in a row.
    #[error(
        "training stopped: {count} consecutive batches had a non-finite loss or gradient (last at step {step}); \
         the last good checkpoint is kept. Lower the learning rate or enable gradient clipping"
    )]
    Diverged {
        /// Consecutive bad batches.
        count: usize,
        /// Step at which training stopped.
        step: u64,
    },
    /// The requested device cannot be used.
    #[error("device: {0}")]
    Device(String),
}

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
