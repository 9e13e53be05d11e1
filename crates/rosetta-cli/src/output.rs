//! Writing hypothesis files and reading hostile input lines, shared by `translate` and `evaluate`.
//!
//! Output files (`translate -o`, `evaluate -o`) are written to a temporary file beside the target
//! (`.NAME.tmp`), synced and renamed over it only once complete: a full disk, a read-only directory
//! or a failed run leaves an earlier file of that name untouched, and the error names the path.
//! Missing parent directories are created, as `train --model-dir`, `average -o` and `evaluate`'s
//! default `<model>/eval/` are. An existing path that is not a regular file (`/dev/null`, a FIFO,
//! `/dev/stdout`) is written in place: renaming over it would replace the device.

use anyhow::{Context, Result};
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufWriter, StdoutLock, Write};
use std::path::{Path, PathBuf};

/// A file written through a temporary beside it, renamed over the target by [`OutputFile::commit`].
/// Dropped without a commit (an error on the way), the temporary is removed.
pub struct OutputFile {
    /// The path the user gave (for messages).
    path: PathBuf,
    /// The temporary (`None` when writing a special file in place, or once committed).
    tmp: Option<PathBuf>,
    /// The file the temporary is renamed to (the target of a symlink, if `path` is one).
    target: PathBuf,
    writer: BufWriter<File>,
}

impl OutputFile {
    /// Creates the temporary beside `path` (and `path`'s missing parent directories).
    pub fn create(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).ok();
        match &meta {
            Some(m) if m.is_dir() => anyhow::bail!(
                "cannot write {}: it is a directory; give a file name",
                path.display()
            ),
            Some(m) if !m.is_file() => {
                // A device or a FIFO: nothing to keep intact, and it must stay what it is.
                let file = File::options()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("cannot open {} for writing", path.display()))?;
                return Ok(OutputFile {
                    path: path.to_path_buf(),
                    tmp: None,
                    target: path.to_path_buf(),
                    writer: BufWriter::new(file),
                });
            }
            _ => {}
        }
        // Through a symlink, the file it points to is replaced (the link stays a link).
        let target = match meta {
            Some(_) => std::fs::canonicalize(path)
                .with_context(|| format!("cannot resolve {}", path.display()))?,
            None => path.to_path_buf(),
        };
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!(
                    "cannot write {}: cannot create the directory {}",
                    path.display(),
                    parent.display()
                )
            })?;
        }
        let tmp = rosetta_text::atomic::tmp_name(&target);
        let file = File::create(&tmp).with_context(|| {
            format!(
                "cannot write {}: cannot create {}",
                path.display(),
                tmp.display()
            )
        })?;
        Ok(OutputFile {
            path: path.to_path_buf(),
            tmp: Some(tmp),
            target,
            writer: BufWriter::new(file),
        })
    }

    /// Writes `line` and a newline.
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        writeln!(self.writer, "{line}")
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Flushes what is buffered (into the temporary).
    pub fn flush(&mut self) -> Result<()> {
        self.writer
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Flushes, syncs and renames the temporary over the target: only now does the file change.
    pub fn commit(mut self) -> Result<()> {
        self.flush()?;
        let Some(tmp) = self.tmp.clone() else {
            return Ok(());
        };
        self.writer
            .get_ref()
            .sync_all()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        std::fs::rename(&tmp, &self.target).with_context(|| {
            format!(
                "cannot write {}: cannot rename {} to it",
                self.path.display(),
                tmp.display()
            )
        })?;
        self.tmp = None;
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = File::open(dir)
        {
            // Makes the rename durable; best effort (the data itself is synced above).
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Where `translate` writes: the standard output, or an [`OutputFile`].
pub enum Sink {
    Stdout(BufWriter<StdoutLock<'static>>),
    File(OutputFile),
}

impl Sink {
    /// The file `path` (see [`OutputFile::create`]), or the standard output without one.
    pub fn open(path: Option<&Path>) -> Result<Sink> {
        Ok(match path {
            Some(path) => Sink::File(OutputFile::create(path)?),
            None => Sink::Stdout(BufWriter::new(std::io::stdout().lock())),
        })
    }

    /// Writes `line` and a newline.
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        match self {
            // The I/O error stays in the chain: a closed pipe (`| head`) is not a failure.
            Sink::Stdout(out) => {
                writeln!(out, "{line}").context("cannot write to the standard output")
            }
            Sink::File(file) => file.write_line(line),
        }
    }

    /// Flushes what is buffered (a file's lines go to its temporary until [`Sink::finish`]).
    pub fn flush(&mut self) -> Result<()> {
        match self {
            Sink::Stdout(out) => out.flush().context("cannot write to the standard output"),
            Sink::File(file) => file.flush(),
        }
    }

    /// Flushes; a file is committed (renamed over its target).
    pub fn finish(self) -> Result<()> {
        match self {
            Sink::Stdout(mut out) => out.flush().context("cannot write to the standard output"),
            Sink::File(file) => file.commit(),
        }
    }
}

/// A directory a command creates (`average -o`, `import -o`, `export -o`), noted before the command
/// writes into it: if it was absent or empty, a failed command (a full disk half-way) removes what
/// it wrote there, so no half-written model is left to be mistaken for one, and the same command can
/// be rerun once the cause is fixed. A directory that held files is never touched.
pub struct NewDirectory {
    path: PathBuf,
    existed: bool,
    empty: bool,
}

impl NewDirectory {
    /// Notes the state of `path` before writing.
    pub fn before(path: &Path) -> Self {
        let existed = path.exists();
        let empty = !existed || std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
        NewDirectory {
            path: path.to_path_buf(),
            existed,
            empty,
        }
    }

    /// Passes `result` through; on an error, first removes what was written into the directory if
    /// it was absent or empty before (best effort: the error is what the user needs).
    pub fn clean_up_on_error<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() && self.empty {
            if !self.existed {
                let _ = std::fs::remove_dir_all(&self.path);
            } else if let Ok(entries) = std::fs::read_dir(&self.path) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
            }
        }
        result
    }
}

/// `text` on one line: line breaks of any kind (`\n`, `\r`, vertical tab, form feed, file/group/
/// record separators, NEL, U+2028, U+2029) become spaces, so that every input line keeps exactly one
/// output line for every line-splitting reader. Normalized input never contains them; a byte-level
/// model could still emit one.
pub fn one_line(text: &str) -> Cow<'_, str> {
    let breaks = |c: char| {
        matches!(
            c,
            '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{1c}'
                ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
        )
    };
    if text.contains(breaks) {
        Cow::Owned(text.replace(breaks, " "))
    } else {
        Cow::Borrowed(text)
    }
}

/// How many lines of one kind of warning are written one by one; the rest are counted.
const LISTED: u64 = 5;

/// A warning about input lines, written for the first few lines, then counted and summed up once.
pub struct LineWarnings {
    /// What happened to the lines, for the summary ("were not valid UTF-8; ...").
    what: &'static str,
    count: u64,
}

impl LineWarnings {
    pub fn new(what: &'static str) -> Self {
        LineWarnings { what, count: 0 }
    }

    /// Notes one more line; `message` is written for the first [`LISTED`] only.
    pub fn note(&mut self, message: impl FnOnce() -> String) {
        self.count += 1;
        if self.count <= LISTED {
            eprintln!("warning: {}", message());
        } else if self.count == LISTED + 1 {
            eprintln!("warning: more lines like these: counted, not listed (total at the end)");
        }
    }

    /// Writes the total, if any line was noted.
    pub fn summary(&self, lines: u64) {
        if self.count > 0 {
            eprintln!(
                "warning: {} of {lines} input lines {}",
                self.count, self.what
            );
        }
    }
}

/// What reading the input had to warn about, one counted warning per kind.
pub struct InputWarnings {
    /// Lines with invalid UTF-8 (decoded with U+FFFD in place of the invalid bytes).
    pub invalid_utf8: LineWarnings,
    /// Lines longer than [`MAX_LINE_BYTES`] (their end skipped while reading).
    pub cut: LineWarnings,
    /// Lines longer than the model's maximum source length (their beginning translated).
    pub truncated: LineWarnings,
}

impl Default for InputWarnings {
    fn default() -> Self {
        InputWarnings {
            invalid_utf8: LineWarnings::new(
                "were not valid UTF-8; their invalid bytes were replaced by U+FFFD and the lines translated",
            ),
            cut: LineWarnings::new("were longer than 1 MiB; only their first MiB was read"),
            truncated: LineWarnings::new(
                "were longer than the model's maximum source length; their beginnings were translated",
            ),
        }
    }
}

impl InputWarnings {
    /// Writes the totals of the warnings given (after all `lines` were read).
    pub fn summary(&self, lines: u64) {
        for warnings in [&self.invalid_utf8, &self.cut, &self.truncated] {
            warnings.summary(lines);
        }
    }
}

/// Bytes of input read into one chunk at most (plus one line): lines of 10,000 characters take no
/// more memory per chunk than short ones.
pub const CHUNK_BYTES: usize = 8 << 20;

/// Reads up to `max` lines (fewer when they pass [`CHUNK_BYTES`], none at the end of the input),
/// counting them in `line_no`. Every line is kept, so the output has one line per input line:
/// invalid UTF-8 is replaced by U+FFFD, a line longer than [`MAX_LINE_BYTES`] is cut (both counted
/// in `warnings`).
pub fn read_chunk(
    reader: &mut dyn BufRead,
    max: usize,
    line_no: &mut u64,
    warnings: &mut InputWarnings,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut bytes = 0;
    let mut buf = Vec::new();
    while lines.len() < max && bytes < CHUNK_BYTES {
        let Some(cut) = read_line_capped(reader, &mut buf, MAX_LINE_BYTES)
            .with_context(|| format!("cannot read input line {}", *line_no + 1))?
        else {
            break;
        };
        *line_no += 1;
        let n = *line_no;
        if cut {
            warnings.cut.note(|| {
                format!("input line {n} is longer than 1 MiB; only its first MiB was read")
            });
        }
        bytes += buf.len();
        let line = match String::from_utf8(std::mem::take(&mut buf)) {
            Ok(s) => s,
            Err(e) => {
                warnings.invalid_utf8.note(|| {
                    format!("input line {n} is not valid UTF-8; invalid bytes replaced by U+FFFD")
                });
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        };
        lines.push(line);
    }
    Ok(lines)
}

/// Longest input line kept, in bytes; the rest of a longer line is skipped while reading, so one
/// line without a newline cannot exhaust memory. A model reads at most `text.max_len` pieces, far
/// fewer than this.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Reads one line (without its `\n` or `\r\n`) into `buf`, keeping at most `limit` bytes (cut back
/// to a whole UTF-8 character). Returns `None` at the end of the input, else whether the line was
/// cut.
pub fn read_line_capped(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut any = false;
    let mut cut = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        any = true;
        let (content, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = limit.saturating_sub(buf.len());
        if content.len() > room {
            cut = true;
        }
        buf.extend_from_slice(&content[..content.len().min(room)]);
        reader.consume(used);
        if done {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if cut {
        // Do not leave half a character at the cut (that would read as invalid UTF-8).
        if let Err(e) = std::str::from_utf8(buf)
            && e.error_len().is_none()
        {
            buf.truncate(e.valid_up_to());
        }
    } else if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], limit: usize) -> Vec<(Vec<u8>, bool)> {
        let mut reader = std::io::BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(cut) = read_line_capped(&mut reader, &mut buf, limit).unwrap() {
            out.push((buf.clone(), cut));
        }
        out
    }

    #[test]
    fn lines_are_split_on_newlines_and_cut_at_the_limit_on_a_character_boundary() {
        let got = lines(b"ab\r\n\nlong line here\n\xc3\xa9\xc3\xa9\xc3\xa9\nlast", 5);
        let want: Vec<(&[u8], bool)> = vec![
            (b"ab", false),
            (b"", false),
            (b"long ", true),
            (b"\xc3\xa9\xc3\xa9", true), // "éé": the third é would not fit whole
            (b"last", false),
        ];
        let got: Vec<(&[u8], bool)> = got.iter().map(|(l, c)| (l.as_slice(), *c)).collect();
        assert_eq!(got, want);
        assert!(lines(b"", 5).is_empty());
    }

    #[test]
    fn line_breaks_of_every_kind_become_spaces() {
        assert_eq!(one_line("a b"), "a b");
        assert_eq!(one_line("a\nb\rc\u{85}d\u{2028}e\u{0b}f"), "a b c d e f");
    }

    #[test]
    fn an_output_file_replaces_the_old_one_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/dir/out.txt");
        let mut out = OutputFile::create(&path).unwrap();
        out.write_line("one").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        let mut out = OutputFile::create(&path).unwrap();
        out.write_line("two").unwrap();
        out.flush().unwrap();
        drop(out); // an error on the way: never committed
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.txt"], "the temporary was left behind");
        // A special file is written in place and stays what it is.
        let mut null = OutputFile::create(Path::new("/dev/null")).unwrap();
        null.write_line("x").unwrap();
        null.commit().unwrap();
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
    }
}
