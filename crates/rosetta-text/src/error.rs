//! The one error type of the text pipeline. Every variant that concerns a file names it, and the line
//! where one applies, so a user can open the file at the right place.

use std::path::PathBuf;

/// Result alias for the text pipeline.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, tokenizing, or batching text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read, or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A line is not valid UTF-8.
    #[error("{path}:{line}: invalid UTF-8 (byte {byte} of the line); convert the file to UTF-8")]
    InvalidUtf8 {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// 1-based byte offset of the first invalid byte within the line.
        byte: usize,
    },
    /// The source and target files of a parallel corpus have different numbers of lines.
    #[error(
        "line counts differ: {src} has {src_lines} lines but {tgt} has {tgt_lines} lines; \
         parallel files must be line-aligned"
    )]
    LineCountMismatch {
        /// Source file.
        src: PathBuf,
        /// Lines in the source file.
        src_lines: u64,
        /// Target file.
        tgt: PathBuf,
        /// Lines in the target file.
        tgt_lines: u64,
    },
    /// A TSV line does not have exactly two tab-separated columns.
    #[error("{path}:{line}: expected 2 tab-separated columns (source<TAB>target), found {found}")]
    TsvColumns {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Number of columns found.
        found: usize,
    },
    /// A file written by Rosetta (vocabulary, pipeline settings, tokenizer) is malformed.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number, where one applies.
        line: Option<u64>,
        /// What is wrong, in plain English.
        message: String,
    },
    /// A setting is out of range or inconsistent.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The HF tokenizers library failed (training, encoding, or decoding).
    #[error("subword tokenizer: {0}")]
    Tokenizer(String),
    /// A single example is longer than a whole batch may be.
    #[error(
        "example {index} needs {tokens} tokens (padded) but a batch may hold at most {max_tokens}; \
         raise the batch size in tokens or lower the maximum length"
    )]
    ExampleTooLong {
        /// 0-based index of the example.
        index: usize,
        /// Tokens the example alone needs.
        tokens: usize,
        /// The batch limit.
        max_tokens: usize,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A format error without a line number.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }
}
