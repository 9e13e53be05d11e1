//! The text pipeline end to end: fit on a corpus, save, load, encode, decode; filters and statistics.

use proptest::prelude::*;
use rosetta_text::corpus::CorpusSource;
use rosetta_text::pipeline::{TextConfig, TextPipeline};
use rosetta_text::tokenize::TokenizerKind;
use std::path::Path;
use std::sync::OnceLock;

const SRC: &str = "Ein Mann fährt Fahrrad.
Zwei Hunde spielen im Schnee.
Eine Frau liest ein Buch im Park.

Ein Kind isst einen Apfel.
Die Katze schläft auf dem Sofa.
Ein Mann spielt Gitarre auf der Straße.
Zwei Frauen trinken Kaffee.
Ein sehr sehr sehr sehr sehr sehr sehr sehr sehr sehr langer Satz.
";
const TGT: &str = "A man rides a bike.
Two dogs play in the snow.
A woman reads a book in the park.
An empty source line.
A child eats an apple.
The cat sleeps on the sofa.
   
Two women drink coffee.
A long sentence.
";

fn corpus(dir: &Path) -> CorpusSource {
    let src = dir.join("c.de");
    let tgt = dir.join("c.en");
    std::fs::write(&src, SRC).unwrap();
    std::fs::write(&tgt, TGT).unwrap();
    CorpusSource::Parallel { src, tgt }
}

fn config(kind: TokenizerKind, joint: bool) -> TextConfig {
    TextConfig {
        tokenizer: kind,
        vocab_size: 400,
        joint,
        max_len: 12,
        ..Default::default()
    }
}

#[test]
fn every_tokenizer_fits_saves_loads_and_encodes_identically() {
    for kind in [
        TokenizerKind::Word,
        TokenizerKind::Space,
        TokenizerKind::Char,
        TokenizerKind::Bpe,
        TokenizerKind::Unigram,
    ] {
        for joint in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let source = corpus(dir.path());
            let cfg = config(kind, joint);
            let fitted = TextPipeline::fit(&source, &cfg, &|_| {}).unwrap();
            let out = dir.path().join("model");
            fitted.save(&out).unwrap();
            let loaded = TextPipeline::load(&out).unwrap();
            assert_eq!(loaded.config(), &cfg);
            assert_eq!(
                loaded.src_vocab(),
                fitted.src_vocab(),
                "{kind} joint={joint}"
            );
            assert_eq!(
                loaded.tgt_vocab(),
                fitted.tgt_vocab(),
                "{kind} joint={joint}"
            );

            let line = "Zwei Hunde spielen im Park.";
            assert_eq!(
                loaded.encode_src(line).unwrap(),
                fitted.encode_src(line).unwrap()
            );
            let ids = fitted.encode_tgt("Two dogs play in the park.").unwrap();
            assert!(!ids.is_empty());
            let back = fitted.decode_tgt(&ids).unwrap();
            assert_eq!(back, "Two dogs play in the park.", "{kind} joint={joint}");
            if joint {
                assert_eq!(fitted.src_vocab(), fitted.tgt_vocab());
            }
        }
    }
}

#[test]
fn encode_corpus_drops_empty_and_long_pairs_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus(dir.path());
    let pipeline = TextPipeline::fit(&source, &config(TokenizerKind::Word, true), &|_| {}).unwrap();
    let (data, stats) = pipeline.encode_corpus(&source, &|_| {}).unwrap();
    assert_eq!(stats.pairs_read, 9);
    assert_eq!(stats.dropped_empty, 2, "{stats}");
    assert_eq!(stats.dropped_too_long, 1, "{stats}");
    assert_eq!(stats.pairs_kept, 6);
    assert_eq!(data.len(), 6);
    assert_eq!(stats.src.tokens as usize, data.src.total_tokens());
    assert_eq!(stats.src.unknown, 0);
    assert!(stats.src.max <= 12 && stats.src.p50 > 0);
}

#[test]
fn loading_a_missing_or_broken_pipeline_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let msg = TextPipeline::load(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("text.toml"), "{msg}");
    std::fs::write(
        dir.path().join("text.toml"),
        "tokenizer = \"bpe\"\nvocab_sise = 10\n",
    )
    .unwrap();
    let msg = TextPipeline::load(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("text.toml") && msg.contains("vocab_sise"),
        "{msg}"
    );
}

/// A BPE model trained once on varied text, shared by the property test.
fn bpe() -> &'static TextPipeline {
    static PIPELINE: OnceLock<TextPipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..300)
            .map(|i| {
                format!(
                    "Satz {i}: Größe, Äpfel & Öl — «quote» 東京 {}\n",
                    "abcde".repeat(i % 4)
                )
            })
            .collect();
        let src = dir.path().join("s");
        std::fs::write(&src, &text).unwrap();
        let source = CorpusSource::Parallel {
            src: src.clone(),
            tgt: src,
        };
        TextPipeline::fit(&source, &config(TokenizerKind::Bpe, true), &|_| {}).unwrap()
    })
}

fn unigram() -> &'static TextPipeline {
    static PIPELINE: OnceLock<TextPipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..300)
            .map(|i| {
                format!(
                    "Zeile {i} mit Wörtern wie Straße, naïve, ελληνικά {}\n",
                    "xyz".repeat(i % 3)
                )
            })
            .collect();
        let src = dir.path().join("s");
        std::fs::write(&src, &text).unwrap();
        let source = CorpusSource::Parallel {
            src: src.clone(),
            tgt: src,
        };
        TextPipeline::fit(&source, &config(TokenizerKind::Unigram, true), &|_| {}).unwrap()
    })
}

/// A word pipeline saved before joiner marks (no `joiners` key in text.toml) keeps tokenizing
/// without them, so its vocabulary still matches; new pipelines mark glued pieces.
#[test]
fn word_pipeline_saved_before_joiners_keeps_its_unmarked_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus(dir.path());
    let fitted = TextPipeline::fit(&source, &config(TokenizerKind::Word, true), &|_| {}).unwrap();
    assert_ne!(
        fitted.src_vocab().id("￭."),
        rosetta_text::vocab::UNK,
        "new pipelines mark glued pieces"
    );
    let out = dir.path().join("model");
    fitted.save(&out).unwrap();
    let toml_path = out.join("text.toml");
    let text = std::fs::read_to_string(&toml_path).unwrap();
    assert!(text.contains("joiners = true"), "{text}");
    std::fs::write(&toml_path, text.replace("joiners = true\n", "")).unwrap();
    let legacy = TextPipeline::load(&out).unwrap();
    assert!(!legacy.config().joiners);
    assert_eq!(
        legacy.src_pieces("Ein Mann fährt Fahrrad.").unwrap(),
        ["Ein", "Mann", "fährt", "Fahrrad", "."]
    );
    assert_eq!(
        fitted.src_pieces("Ein Mann fährt Fahrrad.").unwrap(),
        ["Ein", "Mann", "fährt", "Fahrrad", "￭."]
    );
}

/// Word, space and char pipelines fitted once on the corpus, for the round-trip property.
fn counted() -> &'static [TextPipeline] {
    static PIPELINES: OnceLock<Vec<TextPipeline>> = OnceLock::new();
    PIPELINES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let source = corpus(dir.path());
        [
            TokenizerKind::Word,
            TokenizerKind::Space,
            TokenizerKind::Char,
        ]
        .into_iter()
        .map(|kind| TextPipeline::fit(&source, &config(kind, true), &|_| {}).unwrap())
        .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// `word`, `space` and `char` tokenization is reversible on normalized text (pieces, before
    /// the vocabulary maps unseen ones to `<unk>`): decode(encode(x)) == x. The word tokenizer
    /// once gave `I _ TURN _ RIGHT` back for `I_TURN_RIGHT`.
    #[test]
    fn counted_tokenizers_round_trip(text in "(\\PC|[ _￭.,'-]){0,60}") {
        for pipeline in counted() {
            let normalized = pipeline.config().normalize.apply(&text).into_owned();
            let pieces = pipeline.src_pieces(&normalized).unwrap();
            let back = pipeline.detokenize_tgt(&pieces).unwrap();
            prop_assert_eq!(&back, &normalized, "{}: {:?}", pipeline.config().tokenizer, pieces);
        }
    }

    /// Subword decode restores any normalized input exactly, including characters never seen in
    /// training (the models are byte-level).
    #[test]
    fn subword_round_trip(text in "\\PC{0,60}") {
        for pipeline in [bpe(), unigram()] {
            let normalized = pipeline.config().normalize.apply(&text).into_owned();
            let ids = pipeline.encode_tgt(&normalized).unwrap();
            prop_assert!(ids.iter().all(|&id| id != rosetta_text::vocab::UNK));
            let back = pipeline.decode_tgt(&ids).unwrap();
            prop_assert_eq!(back, normalized);
        }
    }
}
