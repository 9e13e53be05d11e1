//! Corpus reading: every error names the file, and the line where one applies.

use rosetta_text::corpus::{CorpusSource, LineReader};
use std::io::Write;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
    path
}

fn pairs(source: &CorpusSource) -> Result<Vec<(String, String)>, String> {
    source
        .open()
        .map_err(|e| e.to_string())?
        .map(|p| p.map(|p| (p.src, p.tgt)).map_err(|e| e.to_string()))
        .collect()
}

#[test]
fn reads_plain_gzip_and_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let src = gzip(dir.path(), "a.de.gz", "Hallo Welt\r\nZwei\n");
    let tgt = write(dir.path(), "a.en", b"Hello world\nTwo");
    let got = pairs(&CorpusSource::Parallel { src, tgt }).unwrap();
    assert_eq!(
        got,
        [
            ("Hallo Welt".to_owned(), "Hello world".to_owned()),
            ("Zwei".to_owned(), "Two".to_owned())
        ]
    );
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = gzip(dir.path(), "no_extension", "eins\nzwei\n");
    let lines: Vec<String> = LineReader::open(&path)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lines, ["eins", "zwei"]);
}

#[test]
fn line_count_mismatch_gives_both_counts_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "train.src", b"a\nb\nc\nd\n");
    let tgt = write(dir.path(), "train.tgt", b"x\ny\n");
    let msg = pairs(&CorpusSource::Parallel { src, tgt }).unwrap_err();
    assert!(msg.contains("train.src has 4 lines"), "{msg}");
    assert!(msg.contains("train.tgt has 2 lines"), "{msg}");

    let src = write(dir.path(), "short.src", b"a\n");
    let tgt = write(dir.path(), "long.tgt", b"x\ny\nz\n");
    let msg = pairs(&CorpusSource::Parallel { src, tgt }).unwrap_err();
    assert!(
        msg.contains("short.src has 1 lines") && msg.contains("long.tgt has 3 lines"),
        "{msg}"
    );
}

#[test]
fn invalid_utf8_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "bad.src",
        b"fine\nalso fine\nbroken \xff here\n",
    );
    let tgt = write(dir.path(), "ok.tgt", b"1\n2\n3\n");
    let msg = pairs(&CorpusSource::Parallel { src, tgt }).unwrap_err();
    assert!(msg.contains("bad.src:3"), "{msg}");
    assert!(msg.contains("invalid UTF-8"), "{msg}");
}

#[test]
fn unreadable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let tgt = write(dir.path(), "ok.tgt", b"1\n");
    let missing = dir.path().join("missing.src");
    let msg = CorpusSource::Parallel {
        src: missing,
        tgt: tgt.clone(),
    }
    .open()
    .unwrap_err()
    .to_string();
    assert!(msg.contains("missing.src"), "{msg}");

    let msg = CorpusSource::Parallel {
        src: dir.path().to_path_buf(),
        tgt,
    }
    .open()
    .unwrap_err()
    .to_string();
    assert!(msg.contains("directory"), "{msg}");
}

#[test]
fn tsv_reads_pairs_and_reports_bad_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "data.tsv", b"Haus\thouse\nBaum\ttree\n");
    let got = pairs(&CorpusSource::Tsv(path)).unwrap();
    assert_eq!(got[1], ("Baum".to_owned(), "tree".to_owned()));

    let path = write(dir.path(), "bad.tsv", b"Haus\thouse\nno tab here\n");
    let msg = pairs(&CorpusSource::Tsv(path)).unwrap_err();
    assert!(
        msg.contains("bad.tsv:2") && msg.contains("found 1"),
        "{msg}"
    );

    let path = write(dir.path(), "three.tsv", b"a\tb\tc\n");
    let msg = pairs(&CorpusSource::Tsv(path)).unwrap_err();
    assert!(
        msg.contains("three.tsv:1") && msg.contains("found 3"),
        "{msg}"
    );
}

#[test]
fn truncated_gzip_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let full = gzip(dir.path(), "full.gz", &"some text line\n".repeat(2000));
    let bytes = std::fs::read(&full).unwrap();
    let cut = write(dir.path(), "cut.gz", &bytes[..bytes.len() / 2]);
    let result: Result<Vec<String>, _> = LineReader::open(&cut).unwrap().collect();
    let msg = result.unwrap_err().to_string();
    assert!(msg.contains("cut.gz"), "{msg}");
}
