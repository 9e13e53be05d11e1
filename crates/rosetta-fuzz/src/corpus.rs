//! `corpus`: parallel text as `rosetta prepare` and `rosetta train` read it (two line-aligned
//! streams or one TSV stream, plain or gzip each).

use rosetta_text::corpus::{LineReader, PairReader};
use std::io::Cursor;

/// Input: one mode byte (even: two parallel streams, the source's length as a `u16` prefix;
/// odd: one TSV stream), then the streams.
///
/// Properties: pairs are numbered 1, 2, 3, … without gaps; no side holds a line break, no TSV
/// side a tab; after an error the reader yields nothing more; the monolingual reader of the same
/// bytes agrees with the pair reader on how many lines there are.
pub fn corpus(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tsv = mode & 1 == 1;
    let reader = if tsv {
        PairReader::tsv("train.tsv", Cursor::new(rest.to_vec()))
    } else {
        let Some((src, tgt)) = crate::split_prefixed(rest) else {
            return;
        };
        PairReader::parallel(
            "train.src",
            Cursor::new(src.to_vec()),
            "train.tgt",
            Cursor::new(tgt.to_vec()),
        )
    };
    let Ok(mut reader) = reader else {
        return;
    };
    let mut pairs = 0u64;
    let mut failed = false;
    for pair in reader.by_ref() {
        let Ok(pair) = pair else {
            failed = true;
            break;
        };
        pairs += 1;
        assert_eq!(pair.line, pairs, "pairs are numbered without gaps");
        for side in [&pair.src, &pair.tgt] {
            assert!(!side.contains('\n'), "a line break inside {side:?}");
            assert!(
                !(tsv && side.contains('\t')),
                "a tab inside TSV side {side:?}"
            );
        }
    }
    assert!(reader.next().is_none(), "the reader goes on after its end");
    if tsv && !failed {
        let lines = LineReader::from_reader("train.tsv", Cursor::new(rest.to_vec()))
            .and_then(|r| r.collect::<rosetta_text::Result<Vec<String>>>());
        let lines = lines.expect("the lines of a TSV file that read as pairs read as lines");
        assert_eq!(lines.len() as u64, pairs, "one pair per line");
    }
}
