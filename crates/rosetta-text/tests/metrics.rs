//! BLEU and chrF against numbers produced by sacreBLEU itself.
//!
//! The fixtures in `tests/fixtures/sacrebleu/` come from `make_fixtures.py` there (sacreBLEU 2.6.0): each
//! case names a hypothesis file, reference files and metric options, and stores sacreBLEU's
//! full-precision score, signature, verbose string and its exact `-w 4` JSON/text output. Render cases
//! store the complete stdout of a sacreBLEU command line.

use std::path::{Path, PathBuf};

use rosetta_text::metrics::{
    Bleu, BleuTokenizer, Chrf, MetricError, OutputFormat, RenderOptions, SACREBLEU_VERSION, Score,
    SmoothMethod, render, render_with, strip_line,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Fixtures {
    sacrebleu_version: String,
    cases: Vec<Case>,
    render_cases: Vec<RenderCase>,
}

#[derive(Debug, Deserialize)]
struct Case {
    id: String,
    metric: String,
    hyp: String,
    refs: Vec<String>,
    options: serde_json::Value,
    score: f64,
    name: String,
    signature: String,
    short_signature: String,
    verbose_score: String,
    json_w4: String,
    text_w4: String,
}

#[derive(Debug, Deserialize)]
struct MetricSpec {
    metric: String,
    options: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct RenderCase {
    id: String,
    cli: String,
    hyp: String,
    refs: Vec<String>,
    metrics: Vec<MetricSpec>,
    width: usize,
    format: String,
    short: bool,
    score_only: bool,
    stdout: String,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sacrebleu")
}

fn load_fixtures() -> Fixtures {
    let text =
        std::fs::read_to_string(fixture_dir().join("expected.json")).expect("read expected.json");
    serde_json::from_str(&text).expect("parse expected.json")
}

/// Reads a file the way sacreBLEU's command line does: split on '\n', then `rstrip()` each line.
fn read_lines(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture_dir().join(name)).expect("read fixture text");
    text.split_terminator('\n')
        .map(|l| strip_line(l).to_string())
        .collect()
}

fn bleu_from(options: &serde_json::Value) -> Bleu {
    Bleu {
        lowercase: options["lowercase"].as_bool().expect("lowercase"),
        tokenize: options["tokenize"]
            .as_str()
            .expect("tokenize")
            .parse()
            .expect("tokenizer name"),
        smooth_method: options["smooth_method"]
            .as_str()
            .expect("smooth")
            .parse()
            .expect("smooth name"),
        smooth_value: options["smooth_value"].as_f64(),
        effective_order: options["effective_order"]
            .as_bool()
            .expect("effective_order"),
        max_ngram_order: options["max_ngram_order"].as_u64().expect("order") as usize,
    }
}

fn chrf_from(options: &serde_json::Value) -> Chrf {
    Chrf {
        char_order: options["char_order"].as_u64().expect("char_order") as usize,
        word_order: options["word_order"].as_u64().expect("word_order") as usize,
        beta: options["beta"].as_u64().expect("beta") as u32,
        lowercase: options["lowercase"].as_bool().expect("lowercase"),
        whitespace: options["whitespace"].as_bool().expect("whitespace"),
        eps_smoothing: options["eps_smoothing"].as_bool().expect("eps_smoothing"),
    }
}

fn compute(metric: &str, options: &serde_json::Value, hyp: &str, refs: &[String]) -> Score {
    let hyps = read_lines(hyp);
    let refs: Vec<Vec<String>> = refs.iter().map(|r| read_lines(r)).collect();
    match metric {
        "bleu" => bleu_from(options)
            .corpus_score(&hyps, &refs)
            .expect("BLEU")
            .to_score(),
        "chrf" => chrf_from(options)
            .corpus_score(&hyps, &refs)
            .expect("chrF")
            .to_score(),
        other => panic!("unknown metric {other}"),
    }
}

#[test]
fn fixtures_were_made_by_the_version_in_signatures() {
    assert_eq!(load_fixtures().sacrebleu_version, SACREBLEU_VERSION);
}

#[test]
fn scores_equal_sacrebleu() {
    let fixtures = load_fixtures();
    assert!(
        fixtures.cases.len() >= 30,
        "only {} cases",
        fixtures.cases.len()
    );
    let mut failures = Vec::new();
    for case in &fixtures.cases {
        let got = compute(&case.metric, &case.options, &case.hyp, &case.refs);
        // Equal to 4 decimals as printed, and in fact to float rounding noise.
        let same_4 = format!("{:.4}", got.score) == format!("{:.4}", case.score);
        let close = (got.score - case.score).abs() <= 1e-9;
        if !(same_4 && close) {
            failures.push(format!(
                "{}: rosetta {} vs sacreBLEU {}",
                case.id, got.score, case.score
            ));
        }
        let checks = [
            ("name", &got.name, &case.name),
            ("signature", &got.signature, &case.signature),
            (
                "short signature",
                &got.short_signature,
                &case.short_signature,
            ),
            ("verbose", &got.verbose_score, &case.verbose_score),
        ];
        for (what, ours, theirs) in checks {
            if ours != theirs {
                failures.push(format!("{}: {what}: {ours:?} vs {theirs:?}", case.id));
            }
        }
        let json = got.format(4, false, false, OutputFormat::Json);
        if json != case.json_w4 {
            failures.push(format!("{}: JSON\n{json}\nvs\n{}", case.id, case.json_w4));
        }
        let text = got.format(4, false, false, OutputFormat::Text);
        if text != case.text_w4 {
            failures.push(format!("{}: text\n{text}\nvs\n{}", case.id, case.text_w4));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn renderers_print_what_the_sacrebleu_cli_prints() {
    let fixtures = load_fixtures();
    assert!(!fixtures.render_cases.is_empty());
    for case in &fixtures.render_cases {
        let scores: Vec<Score> = case
            .metrics
            .iter()
            .map(|m| compute(&m.metric, &m.options, &case.hyp, &case.refs))
            .collect();
        let options = RenderOptions {
            width: case.width,
            format: case.format.parse().expect("format"),
            short_signature: case.short,
            score_only: case.score_only,
        };
        let got = render_with(&scores, &options);
        // print() adds one newline.
        let want = case.stdout.strip_suffix('\n').unwrap_or(&case.stdout);
        assert_eq!(got, want, "{} ({})", case.id, case.cli);
    }
}

#[test]
fn render_is_render_with_default_flags() {
    let hyps = ["The cat sat on the mat."];
    let refs = [vec!["The cat is on the mat."]];
    let scores = [Bleu::default()
        .corpus_score(&hyps, &refs)
        .unwrap()
        .to_score()];
    let opts = RenderOptions {
        width: 2,
        format: OutputFormat::Text,
        ..RenderOptions::default()
    };
    assert_eq!(
        render(&scores, 2, OutputFormat::Text),
        render_with(&scores, &opts)
    );
    assert_eq!(render(&[], 1, OutputFormat::Json), "");
}

#[test]
fn mismatched_line_counts_are_an_error_naming_both_counts() {
    let hyps = ["a b c", "d e f", "g h i"];
    let short_ref = vec!["a b c", "d e f"];
    let good_ref = vec!["a b c", "d e f", "g h i"];

    let err = Bleu::default()
        .corpus_score(&hyps, &[good_ref.clone(), short_ref.clone()])
        .unwrap_err();
    assert_eq!(
        err,
        MetricError::LengthMismatch {
            hyps: 3,
            stream: 2,
            refs: 2
        }
    );
    let msg = err.to_string();
    assert!(msg.contains('3') && msg.contains('2'), "{msg}");
    assert!(msg.contains("3 lines") && msg.contains("2 lines"), "{msg}");

    let err = Chrf::default()
        .corpus_score(&hyps[..2], &[good_ref])
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("2 lines") && msg.contains("3 lines"), "{msg}");
}

#[test]
fn missing_references_and_empty_corpora_are_errors() {
    let hyps = ["a"];
    let no_refs: Vec<Vec<&str>> = Vec::new();
    assert_eq!(
        Bleu::default().corpus_score(&hyps, &no_refs).unwrap_err(),
        MetricError::NoReferences
    );
    let none: [&str; 0] = [];
    let empty_ref: Vec<Vec<&str>> = vec![Vec::new()];
    assert_eq!(
        Chrf::default().corpus_score(&none, &empty_ref).unwrap_err(),
        MetricError::EmptyCorpus
    );
    let bad = Bleu {
        max_ngram_order: 0,
        ..Bleu::default()
    };
    assert!(matches!(
        bad.corpus_score(&hyps, &[vec!["a"]]),
        Err(MetricError::InvalidConfig(_))
    ));
    let bad = Chrf {
        char_order: 0,
        word_order: 0,
        ..Chrf::default()
    };
    assert!(matches!(
        bad.corpus_score(&hyps, &[vec!["a"]]),
        Err(MetricError::InvalidConfig(_))
    ));
}

#[test]
fn sentence_scores_match_one_line_corpora() {
    let bleu = Bleu {
        effective_order: true,
        ..Bleu::default()
    };
    let s = bleu
        .sentence_score("Thanks a lot.", &["Thank you a lot.", "Thanks very much."])
        .unwrap();
    let c = bleu
        .corpus_score(
            &["Thanks a lot."],
            &[vec!["Thank you a lot."], vec!["Thanks very much."]],
        )
        .unwrap();
    assert_eq!(s, c);
    assert_eq!(
        s.signature.format(false),
        "nrefs:2|case:mixed|eff:yes|tok:13a|smooth:exp|version:2.6.0"
    );
    let chrf = Chrf::plus_plus();
    let s = chrf
        .sentence_score("Thanks a lot.", &["Thank you a lot."])
        .unwrap();
    assert_eq!(s.name, "chrF2++");
    assert!(s.score > 0.0 && s.score < 100.0);
}

#[test]
fn option_names_parse_like_the_sacrebleu_cli() {
    assert_eq!(
        "intl".parse::<BleuTokenizer>().unwrap(),
        BleuTokenizer::Intl
    );
    assert_eq!("add-k".parse::<SmoothMethod>().unwrap(), SmoothMethod::AddK);
    assert_eq!("text".parse::<OutputFormat>().unwrap(), OutputFormat::Text);
    let err = "ja-mecab".parse::<BleuTokenizer>().unwrap_err();
    assert!(err.to_string().contains("ja-mecab"));
}

#[test]
fn multithreaded_scoring_is_deterministic_on_a_large_corpus() {
    // Enough segments for rayon to split the work; the integer statistics make the sum order-free.
    let refs_one = read_lines("synth.ref");
    let hyps_one = read_lines("synth.hyp");
    let hyps: Vec<&String> = hyps_one.iter().cycle().take(20 * hyps_one.len()).collect();
    let refs: Vec<Vec<&String>> = vec![refs_one.iter().cycle().take(hyps.len()).collect()];
    let a = Bleu::default().corpus_score(&hyps, &refs).unwrap();
    let b = Bleu::default()
        .corpus_score(&hyps_one, std::slice::from_ref(&refs_one))
        .unwrap();
    // Repeating a corpus multiplies every statistic, so precisions and BP are the same.
    assert_eq!(
        a.counts.iter().map(|c| c / 20).collect::<Vec<_>>(),
        b.counts
    );
    assert!((a.score - b.score).abs() < 1e-12);
    let c1 = Chrf::plus_plus().corpus_score(&hyps, &refs).unwrap();
    let c2 = Chrf::plus_plus().corpus_score(&hyps, &refs).unwrap();
    assert_eq!(c1, c2);
}

/// sacreBLEU's tokenizers written with regular expressions, as in its Python source, to check the
/// hand-written scans of `metrics::tokenizer` on random text.
mod regex_reference {
    use regex::Regex;

    fn py_space(c: char) -> bool {
        matches!(c, '\t'..='\r' | '\u{1c}'..='\u{20}' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}')
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
            )
    }

    fn join_split(s: &str) -> String {
        s.split(py_space)
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn regexp_post(line: &str) -> String {
        let rules = [
            (r"([\{-\~\[-\` -\&\(-\+\:-@/])", " $1 "),
            (r"([^0-9])([\.,])", "$1 $2 "),
            (r"([\.,])([^0-9])", " $1 $2"),
            (r"([0-9])(-)", "$1 $2 "),
        ];
        let mut s = line.to_string();
        for (pat, rep) in rules {
            s = Regex::new(pat).unwrap().replace_all(&s, rep).into_owned();
        }
        join_split(&s)
    }

    pub fn tok_13a(line: &str) -> String {
        let mut s = line
            .replace("<skipped>", "")
            .replace("-\n", "")
            .replace('\n', " ");
        if s.contains('&') {
            s = s
                .replace("&quot;", "\"")
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">");
        }
        regexp_post(&format!(" {s} "))
    }

    pub fn tok_intl(line: &str) -> String {
        let rules = [
            (r"(\P{N})(\p{P})", "$1 $2 "),
            (r"(\p{P})(\P{N})", " $1 $2"),
            (r"(\p{S})", " $1 "),
        ];
        let mut s = line.to_string();
        for (pat, rep) in rules {
            s = Regex::new(pat).unwrap().replace_all(&s, rep).into_owned();
        }
        join_split(&s)
    }
}

const FUZZ_CHARS: &[char] = &[
    'a', 'b', 'Z', '0', '1', '9', ' ', ' ', ' ', '\t', '\n', '\u{a0}', '\u{1c}', '.', ',', '-',
    '&', ';', 'q', 'u', 'o', 't', 'l', 'g', 'm', 'p', '<', '>', '/', '!', '?', '"', '\'', '(', ')',
    '[', '{', '~', '$', '%', '@', '^', '`', '|', '\\', '_', 'é', '我', '。', '，', '…', '—', '«',
    '€', '°', '½', '٣', '😀', '\u{301}',
];

proptest::proptest! {
    #[test]
    fn tokenizers_equal_their_regex_definitions(
        chars in proptest::collection::vec(proptest::sample::select(FUZZ_CHARS), 0..40)
    ) {
        let line: String = chars.into_iter().collect();
        proptest::prop_assert_eq!(
            BleuTokenizer::Tok13a.tokenize(&line).into_owned(), regex_reference::tok_13a(&line));
        proptest::prop_assert_eq!(
            BleuTokenizer::Intl.tokenize(&line).into_owned(), regex_reference::tok_intl(&line));
    }
}
