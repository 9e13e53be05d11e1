//! `score`: the input of `rosetta score` (hypotheses and reference streams, plain or gzip) and
//! the metrics computed on it.

use rosetta_text::corpus::LineReader;
use rosetta_text::metrics::{
    Bleu, BleuTokenizer, Chrf, OutputFormat, RenderOptions, read_stream, render_with,
};
use std::io::Cursor;

const TOKENIZERS: [BleuTokenizer; 5] = [
    BleuTokenizer::Tok13a,
    BleuTokenizer::Intl,
    BleuTokenizer::Zh,
    BleuTokenizer::Char,
    BleuTokenizer::None,
];

/// Input: one options byte (bits 0–2: BLEU tokenizer `13a`, `intl`, `zh`, `char`, `none`; bit 3:
/// `--lowercase`; bit 4: chrF++ instead of chrF; bits 5–6: one to four reference streams), then
/// the hypotheses and every reference stream but the last, each after a `u16` length prefix, and
/// the last reference stream.
///
/// Properties: reading gives an error or lines, never a panic; when the streams are line-aligned
/// and not empty, BLEU and chrF are finite numbers in [0, 100] (up to rounding) and both output
/// formats render (the JSON one as valid JSON).
pub fn score(data: &[u8]) {
    let Some((&options, mut rest)) = data.split_first() else {
        return;
    };
    let streams = 2 + usize::from((options >> 5) & 3);
    let mut parts = Vec::with_capacity(streams);
    for _ in 1..streams {
        let Some((part, tail)) = crate::split_prefixed(rest) else {
            return;
        };
        parts.push(part);
        rest = tail;
    }
    parts.push(rest);
    let mut read = Vec::with_capacity(streams);
    for (i, part) in parts.iter().enumerate() {
        let name = if i == 0 {
            "<stdin>".to_owned()
        } else {
            format!("ref{i}.txt")
        };
        let lines = LineReader::from_reader(name, Cursor::new(part.to_vec())).and_then(read_stream);
        let Ok(lines) = lines else {
            return;
        };
        read.push(lines);
    }
    let hyps = read.remove(0);
    let refs = read;
    let lowercase = options & 8 != 0;
    let bleu = Bleu {
        lowercase,
        tokenize: TOKENIZERS[usize::from(options & 7) % TOKENIZERS.len()],
        ..Bleu::default()
    };
    let chrf = Chrf {
        lowercase,
        word_order: if options & 16 != 0 { 2 } else { 0 },
        ..Chrf::default()
    };
    let aligned = !hyps.is_empty() && refs.iter().all(|r| r.len() == hyps.len());
    let bleu = bleu.corpus_score(&hyps, &refs);
    let chrf = chrf.corpus_score(&hyps, &refs);
    assert_eq!(
        bleu.is_ok(),
        aligned,
        "BLEU on aligned = {aligned} streams: {bleu:?}"
    );
    assert_eq!(
        chrf.is_ok(),
        aligned,
        "chrF on aligned = {aligned} streams: {chrf:?}"
    );
    let (Ok(bleu), Ok(chrf)) = (bleu, chrf) else {
        return;
    };
    let scores = [bleu.to_score(), chrf.to_score()];
    for s in &scores {
        // Rounding may leave a perfect score just above 100 (exp(ln 100) = 100.00000000000004),
        // as in sacreBLEU, which Rosetta reproduces to the last bit.
        assert!(
            s.score.is_finite() && (0.0..=100.0 + 1e-9).contains(&s.score),
            "{} = {}",
            s.name,
            s.score
        );
    }
    for format in [OutputFormat::Json, OutputFormat::Text] {
        let text = render_with(
            &scores,
            &RenderOptions {
                width: 2,
                format,
                short_signature: false,
                score_only: false,
            },
        );
        if format == OutputFormat::Json {
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("the JSON output is not JSON ({e}): {text}"));
        }
    }
}
