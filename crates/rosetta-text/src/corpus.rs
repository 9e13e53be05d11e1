//! Reading parallel text: two line-aligned files (plain or gzip) or one TSV file.
//!
//! Everything streams: a corpus is read line by line, never held whole in memory, so millions of lines
//! cost only what the caller keeps. Errors name the file and the 1-based line.

use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a parallel corpus lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorpusSource {
    /// Two line-aligned files: line *i* of `src` translates to line *i* of `tgt`.
    Parallel {
        /// Source-language file.
        src: PathBuf,
        /// Target-language file.
        tgt: PathBuf,
    },
    /// One file with `source<TAB>target` on every line.
    Tsv(PathBuf),
    /// Pairs already in memory (generated tasks such as the quickstart, tests).
    Memory(Arc<Vec<(String, String)>>),
}

impl CorpusSource {
    /// Total size in bytes of the files on disk (compressed size for gzip), for progress bars.
    pub fn total_bytes(&self) -> u64 {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        match self {
            CorpusSource::Parallel { src, tgt } => size(src) + size(tgt),
            CorpusSource::Tsv(path) => size(path),
            CorpusSource::Memory(pairs) => {
                pairs.iter().map(|(s, t)| (s.len() + t.len()) as u64).sum()
            }
        }
    }

    /// Opens the corpus for one pass over its pairs.
    pub fn open(&self) -> Result<PairReader> {
        let bytes = Arc::new(AtomicU64::new(0));
        let inner = match self {
            CorpusSource::Parallel { src, tgt } => PairInner::Parallel {
                src: LineReader::open_counted(src, bytes.clone())?,
                tgt: LineReader::open_counted(tgt, bytes.clone())?,
            },
            CorpusSource::Tsv(path) => {
                PairInner::Tsv(LineReader::open_counted(path, bytes.clone())?)
            }
            CorpusSource::Memory(pairs) => PairInner::Memory {
                pairs: pairs.clone(),
                next: 0,
            },
        };
        Ok(PairReader {
            inner,
            bytes,
            done: false,
        })
    }

    /// A short human description, e.g. `train.de.gz + train.en.gz`.
    pub fn describe(&self) -> String {
        match self {
            CorpusSource::Parallel { src, tgt } => format!("{} + {}", src.display(), tgt.display()),
            CorpusSource::Tsv(path) => path.display().to_string(),
            CorpusSource::Memory(pairs) => format!("{} pairs in memory", pairs.len()),
        }
    }
}

/// Counts bytes pulled from the underlying file, shared between readers of one corpus.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads UTF-8 lines from a plain or gzip-compressed file (detected by its magic bytes, not its name).
pub struct LineReader {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    line: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish()
    }
}

/// `raw` as text: decompressed when it starts with gzip's magic bytes, as it is otherwise.
pub fn decompressed<R: BufRead + Send + 'static>(
    mut raw: R,
) -> std::io::Result<Box<dyn BufRead + Send>> {
    let magic = raw.fill_buf()?;
    let gzip = magic.len() >= 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    Ok(if gzip {
        Box::new(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(raw)))
    } else {
        Box::new(raw)
    })
}

/// Opens a text file, plain or gzip (recognised by its first two bytes), for reading lines.
pub fn open_text(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = open_file(path)?;
    decompressed(BufReader::with_capacity(1 << 16, file)).map_err(|e| Error::io(path, e))
}

/// Opens `path` for reading; a directory is refused by name here rather than failing at the first
/// read with the system's message.
fn open_file(path: &Path) -> Result<File> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is a directory, not a file",
            ),
        ));
    }
    Ok(file)
}

impl LineReader {
    /// Opens a file; gzip is recognised by its first two bytes.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_counted(path.as_ref(), Arc::new(AtomicU64::new(0)))
    }

    /// Reads the lines of any byte stream (standard input, bytes in memory), plain or gzip
    /// (detected as for files); `name` stands for the file in errors.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        reader: impl Read + Send + 'static,
    ) -> Result<Self> {
        Self::from_reader_counted(name.into(), reader, Arc::new(AtomicU64::new(0)))
    }

    fn open_counted(path: &Path, count: Arc<AtomicU64>) -> Result<Self> {
        let file = open_file(path)?;
        Self::from_reader_counted(path.to_path_buf(), file, count)
    }

    fn from_reader_counted(
        path: PathBuf,
        reader: impl Read + Send + 'static,
        count: Arc<AtomicU64>,
    ) -> Result<Self> {
        let raw = BufReader::with_capacity(
            1 << 16,
            CountingReader {
                inner: reader,
                count,
            },
        );
        let reader = decompressed(raw).map_err(|e| Error::io(&path, e))?;
        Ok(LineReader {
            path,
            reader,
            line: 0,
            buf: Vec::with_capacity(256),
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of lines read so far (the 1-based number of the last line returned).
    pub fn line_number(&self) -> u64 {
        self.line
    }

    /// Reads the next line without its line terminator (`\n` or `\r\n`); `None` at end of file.
    pub fn next_line(&mut self) -> Result<Option<String>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        match std::str::from_utf8(&self.buf) {
            Ok(text) => Ok(Some(text.to_owned())),
            Err(e) => Err(Error::InvalidUtf8 {
                path: self.path.clone(),
                line: self.line,
                byte: e.valid_up_to() + 1,
            }),
        }
    }

    /// Counts the remaining lines (validating nothing), used to report both counts on a mismatch.
    fn count_remaining(&mut self) -> Result<u64> {
        let mut n = 0;
        loop {
            self.buf.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| Error::io(&self.path, e))?;
            if read == 0 {
                return Ok(n);
            }
            n += 1;
        }
    }
}

impl Iterator for LineReader {
    type Item = Result<String>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_line().transpose()
    }
}

/// One raw (not yet normalized) sentence pair with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// 1-based line number in the corpus.
    pub line: u64,
    /// Source sentence.
    pub src: String,
    /// Target sentence.
    pub tgt: String,
}

enum PairInner {
    Parallel {
        src: LineReader,
        tgt: LineReader,
    },
    Tsv(LineReader),
    Memory {
        pairs: Arc<Vec<(String, String)>>,
        next: usize,
    },
}

/// Streams the pairs of a corpus; yields an error (and then stops) on the first problem.
pub struct PairReader {
    inner: PairInner,
    bytes: Arc<AtomicU64>,
    done: bool,
}

impl std::fmt::Debug for PairReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairReader")
            .field("bytes_read", &self.bytes_read())
            .finish()
    }
}

impl PairReader {
    /// Pairs from two line-aligned byte streams (plain or gzip each), named in errors by
    /// `src_name` and `tgt_name`: what [`CorpusSource::Parallel`] reads from its files.
    pub fn parallel(
        src_name: impl Into<PathBuf>,
        src: impl Read + Send + 'static,
        tgt_name: impl Into<PathBuf>,
        tgt: impl Read + Send + 'static,
    ) -> Result<Self> {
        let bytes = Arc::new(AtomicU64::new(0));
        let inner = PairInner::Parallel {
            src: LineReader::from_reader_counted(src_name.into(), src, bytes.clone())?,
            tgt: LineReader::from_reader_counted(tgt_name.into(), tgt, bytes.clone())?,
        };
        Ok(PairReader {
            inner,
            bytes,
            done: false,
        })
    }

    /// Pairs from one `source<TAB>target` byte stream (plain or gzip), named `name` in errors:
    /// what [`CorpusSource::Tsv`] reads from its file.
    pub fn tsv(name: impl Into<PathBuf>, reader: impl Read + Send + 'static) -> Result<Self> {
        let bytes = Arc::new(AtomicU64::new(0));
        let inner = PairInner::Tsv(LineReader::from_reader_counted(
            name.into(),
            reader,
            bytes.clone(),
        )?);
        Ok(PairReader {
            inner,
            bytes,
            done: false,
        })
    }

    /// Bytes consumed from disk so far (compressed bytes for gzip), for progress bars.
    pub fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn read_pair(&mut self) -> Result<Option<Pair>> {
        match &mut self.inner {
            PairInner::Parallel { src, tgt } => {
                let s = src.next_line()?;
                let t = tgt.next_line()?;
                match (s, t) {
                    (Some(s), Some(t)) => Ok(Some(Pair {
                        line: src.line_number(),
                        src: s,
                        tgt: t,
                    })),
                    (None, None) => Ok(None),
                    (s, t) => {
                        let src_lines = if s.is_some() {
                            src.line_number() + src.count_remaining()?
                        } else {
                            src.line_number()
                        };
                        let tgt_lines = if t.is_some() {
                            tgt.line_number() + tgt.count_remaining()?
                        } else {
                            tgt.line_number()
                        };
                        Err(Error::LineCountMismatch {
                            src: src.path().to_path_buf(),
                            src_lines,
                            tgt: tgt.path().to_path_buf(),
                            tgt_lines,
                        })
                    }
                }
            }
            PairInner::Memory { pairs, next } => {
                let Some((src, tgt)) = pairs.get(*next) else {
                    return Ok(None);
                };
                *next += 1;
                self.bytes
                    .fetch_add((src.len() + tgt.len()) as u64, Ordering::Relaxed);
                Ok(Some(Pair {
                    line: *next as u64,
                    src: src.clone(),
                    tgt: tgt.clone(),
                }))
            }
            PairInner::Tsv(reader) => {
                let Some(line) = reader.next_line()? else {
                    return Ok(None);
                };
                let mut columns = line.split('\t');
                match (columns.next(), columns.next(), columns.next()) {
                    (Some(s), Some(t), None) => Ok(Some(Pair {
                        line: reader.line_number(),
                        src: s.to_owned(),
                        tgt: t.to_owned(),
                    })),
                    _ => Err(Error::TsvColumns {
                        path: reader.path().to_path_buf(),
                        line: reader.line_number(),
                        found: line.split('\t').count(),
                    }),
                }
            }
        }
    }
}

impl Iterator for PairReader {
    type Item = Result<Pair>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.read_pair().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// Reads every line of a monolingual file (plain or gzip) into memory, validating UTF-8.
pub fn read_lines(path: impl AsRef<Path>) -> Result<Vec<String>> {
    LineReader::open(path)?.collect()
}
