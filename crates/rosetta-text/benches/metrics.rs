//! Corpus BLEU and chrF on 100,000 segments.
//!
//! References are the English side of Multi30k's training set (`../shared/data/multi30k/train.en.gz`,
//! 29,000 captions, repeated to 100k lines) when it is present, otherwise sentences from a seeded word
//! generator. Hypotheses are the references with deterministic noise (dropped, substituted and swapped
//! words, lowercased lines), so that n-gram matches are partial as with a real system.
//!
//! `cargo bench -p rosetta-text --bench metrics`

use std::hint::black_box;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rosetta_text::metrics::{Bleu, BleuTokenizer, Chrf};

const LINES: usize = 100_000;

/// A small deterministic generator (SplitMix64); the bench needs reproducible noise, not statistics.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn multi30k_lines() -> Option<Vec<String>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/multi30k/train.en.gz");
    let file = std::fs::File::open(&path).ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .ok()?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    (!lines.is_empty()).then_some(lines)
}

fn generated_lines(rng: &mut SplitMix, n: usize) -> Vec<String> {
    const SUBJECTS: [&str; 8] = [
        "A man",
        "A young woman",
        "Two dogs",
        "The child",
        "A group of people",
        "An old man",
        "Three girls",
        "A worker",
    ];
    const VERBS: [&str; 8] = [
        "is walking",
        "are playing",
        "is sitting",
        "is running",
        "are standing",
        "is riding",
        "is climbing",
        "is cooking",
    ];
    const PLACES: [&str; 8] = [
        "in the park",
        "on a wooden bench",
        "near the river",
        "at the beach",
        "in a busy kitchen",
        "on the street",
        "under a large tree",
        "in front of a red building",
    ];
    const EXTRAS: [&str; 6] = [
        "",
        " with a ball",
        ", smiling",
        " at night",
        " (in winter)",
        " while talking",
    ];
    (0..n)
        .map(|_| {
            format!(
                "{} {} {}{}.",
                SUBJECTS[rng.below(8)],
                VERBS[rng.below(8)],
                PLACES[rng.below(8)],
                EXTRAS[rng.below(6)]
            )
        })
        .collect()
}

/// A noisy copy of `reference`, as a mediocre system would produce.
fn perturb(rng: &mut SplitMix, reference: &str) -> String {
    const FILLERS: [&str; 6] = ["the", "a", "big", "small", "very", "some"];
    let mut words: Vec<&str> = Vec::new();
    for w in reference.split_whitespace() {
        match rng.below(100) {
            0..=6 => {}
            7..=13 => words.push(FILLERS[rng.below(FILLERS.len())]),
            _ => words.push(w),
        }
    }
    if words.len() > 3 && rng.chance(25) {
        let i = rng.below(words.len() - 1);
        words.swap(i, i + 1);
    }
    let line = words.join(" ");
    if rng.chance(10) {
        line.to_lowercase()
    } else {
        line
    }
}

fn corpus() -> (Vec<String>, Vec<Vec<String>>, &'static str) {
    let mut rng = SplitMix(42);
    let (base, source) = match multi30k_lines() {
        Some(lines) => (lines, "Multi30k train.en, repeated"),
        None => {
            eprintln!("metrics bench: Multi30k train.en.gz not found; using generated sentences");
            (generated_lines(&mut rng, 30_000), "generated sentences")
        }
    };
    let refs: Vec<String> = base.iter().cycle().take(LINES).cloned().collect();
    let hyps: Vec<String> = refs.iter().map(|r| perturb(&mut rng, r)).collect();
    (hyps, vec![refs], source)
}

fn bench_metrics(c: &mut Criterion) {
    let (hyps, refs, source) = corpus();
    let words: usize = hyps.iter().map(|h| h.split_whitespace().count()).sum();
    eprintln!("metrics bench: {LINES} segments from {source}, {words} hypothesis words");

    let mut group = c.benchmark_group("metrics_100k_lines");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(LINES as u64));

    let bleu = Bleu::default();
    group.bench_function("bleu_13a", |b| {
        b.iter(|| black_box(bleu.corpus_score(&hyps, &refs)).map(|s| s.score))
    });
    let bleu_intl = Bleu {
        tokenize: BleuTokenizer::Intl,
        ..Bleu::default()
    };
    group.bench_function("bleu_intl", |b| {
        b.iter(|| black_box(bleu_intl.corpus_score(&hyps, &refs)).map(|s| s.score))
    });
    let chrf = Chrf::default();
    group.bench_function("chrf", |b| {
        b.iter(|| black_box(chrf.corpus_score(&hyps, &refs)).map(|s| s.score))
    });
    let chrf_pp = Chrf::plus_plus();
    group.bench_function("chrf_plus_plus", |b| {
        b.iter(|| black_box(chrf_pp.corpus_score(&hyps, &refs)).map(|s| s.score))
    });
    group.finish();
}

criterion_group!(benches, bench_metrics);
criterion_main!(benches);
