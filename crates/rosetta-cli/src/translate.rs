//! `rosetta translate --model DIR`: stdin → stdout (or files), one output line per input line.

use crate::output::{InputWarnings, Sink, one_line, read_chunk};
use anyhow::{Context, Result};
use rosetta::device::{DeviceChoice, Job, resolve, run_on};
use rosetta::search::{BeamConfig, BeamRule, SamplingConfig};
use rosetta::translate::{TranslateOptions, Translation, Translator, pharaoh};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

/// Decoding options shared by `translate` and `evaluate`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecodeArgs {
    /// Beam size (1 = greedy). Default: the model's own (`[decode] beam`: an imported model's
    /// `num_beams`), else 5; at least --n-best.
    #[arg(long)]
    beam: Option<usize>,
    /// Length penalty α (GNMT's, or with the Hugging Face rule the exponent of the length).
    /// Default: the model's own (`[decode] length_penalty`), else 1.0.
    #[arg(long)]
    length_penalty: Option<f64>,
    /// Maximum output length: a · source length + b (a). Default: the model's own (`[decode]
    /// max_len_a`, derived from its training data), else 1.5.
    #[arg(long)]
    max_len_a: Option<f64>,
    /// Maximum output length: a · source length + b (b). Default: the model's own, else 10.
    #[arg(long)]
    max_len_b: Option<usize>,
    /// Minimum output length.
    #[arg(long, default_value_t = BeamConfig::default().min_len)]
    min_len: usize,
    /// Forbid repeating n-grams of this size (0 = off).
    #[arg(long, default_value_t = BeamConfig::default().no_repeat_ngram)]
    no_repeat_ngram: usize,
    /// Beam scoring and stopping: `gnmt` (GNMT length penalty, fairseq's stopping) or
    /// `hugging-face` (`transformers`' generate) or `ctranslate2` (CTranslate2's). Default: the
    /// model's own (`[decode] beam_rule`).
    #[arg(long)]
    beam_rule: Option<BeamRule>,
    /// Sample instead of beam search.
    #[arg(long)]
    sample: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = SamplingConfig::default().temperature)]
    temperature: f64,
    /// Sample from the k most probable tokens only (0 = all).
    #[arg(long, default_value_t = SamplingConfig::default().top_k)]
    top_k: usize,
    /// Sample from the smallest set of tokens with this much probability.
    #[arg(long, default_value_t = SamplingConfig::default().top_p)]
    top_p: f64,
    /// Seed for sampling.
    #[arg(long, default_value_t = SamplingConfig::default().seed)]
    seed: u64,
    /// Tokens per batch (source side, padding included).
    #[arg(long, default_value_t = TranslateOptions::default().max_tokens_per_batch)]
    max_tokens_per_batch: usize,
    /// Sentences per batch at most (0: only --max-tokens-per-batch limits a batch).
    #[arg(long, default_value_t = 0)]
    max_sentences_per_batch: usize,
    /// Replace <unk> by the most-attended source piece.
    #[arg(long)]
    replace_unk: bool,
    /// `int8`: run the search's dense layers in 8-bit integers (weights quantized per output
    /// column at load, inputs per row at every step; CPU only): faster, about the same BLEU.
    #[arg(long, value_enum)]
    pub quantize: Option<Quantize>,
}

/// What `--quantize` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quantize {
    /// 8-bit integer weights and inputs, 32-bit integer sums.
    Int8,
}

impl DecodeArgs {
    /// `--quantize int8` has CPU kernels only: on a GPU it would silently run in float32.
    pub fn check_device(&self, device: rosetta::device::Resolved) -> Result<()> {
        if self.quantize.is_some() && device != rosetta::device::Resolved::Cpu {
            anyhow::bail!(
                "--quantize int8 runs on the CPU only (the model would run on {device} in \
                 float32); add --device cpu"
            );
        }
        Ok(())
    }

    /// The options asked for; what the command line leaves out comes from `defaults`, the
    /// model's ([`rosetta::translate::Translator::search_defaults`]).
    pub fn options(&self, n_best: usize, defaults: &BeamConfig) -> TranslateOptions {
        TranslateOptions {
            search: BeamConfig {
                beam: match (self.sample, self.beam) {
                    (true, _) => 1,
                    (false, Some(beam)) => beam,
                    (false, None) => defaults.beam.max(n_best),
                },
                n_best,
                length_penalty: self.length_penalty.unwrap_or(defaults.length_penalty),
                max_len_a: self.max_len_a,
                max_len_b: self.max_len_b,
                min_len: self.min_len,
                no_repeat_ngram: self.no_repeat_ngram,
                rule: self.beam_rule,
            },
            sampling: self.sample.then_some(SamplingConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            }),
            max_tokens_per_batch: self.max_tokens_per_batch,
            max_sentences_per_batch: self.max_sentences_per_batch,
            replace_unk: self.replace_unk,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory written by `rosetta train`. Give several (`--model A B`, or `--model`
    /// repeated) to decode with their ensemble: models trained on the same prepared text, whose
    /// next-token distributions are averaged.
    #[arg(long, short = 'm', required = true, num_args = 1..)]
    model: Vec<PathBuf>,
    /// Input file (default: standard input).
    #[arg(long, short = 'i')]
    input: Option<PathBuf>,
    /// Output file (default: standard output).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Candidates per line; above 1 each line is `N ||| text ||| score`.
    #[arg(long, default_value_t = 1)]
    n_best: usize,
    /// Append hard alignments in Pharaoh format (` ||| 0-0 1-2 …`).
    #[arg(long)]
    alignments: bool,
    /// Write an attention heatmap per line to DIR/NNNNNN.png (line number).
    #[arg(long, value_name = "DIR")]
    attention_png: Option<PathBuf>,
    /// Lines translated together (default: 1 on a terminal, 2000 otherwise).
    #[arg(long)]
    chunk_lines: Option<usize>,
    /// At the end, print to standard error the lines, target pieces (each output's `</s>`
    /// counted) and seconds spent translating (loading and reading excluded), for benchmarks.
    #[arg(long)]
    timing: bool,
    #[command(flatten)]
    decode: DecodeArgs,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

pub fn format_lines(t: &Translation, index: u64, n_best: usize, alignments: bool) -> Vec<String> {
    let source_len = t.source_pieces.len();
    if n_best <= 1 {
        let mut line = one_line(t.text()).into_owned();
        if alignments {
            line.push_str(" ||| ");
            line.push_str(
                &t.best()
                    .map_or_else(String::new, |c| pharaoh(&c.alignment(source_len))),
            );
        }
        return vec![line];
    }
    // An empty line still gets n_best lines, so every input has exactly n_best output lines.
    let empty = [rosetta::translate::Candidate::empty()];
    // Beam search can finish fewer than n_best hypotheses; pad so the count per input is fixed.
    let candidates: Vec<&rosetta::translate::Candidate> = if t.source_pieces.is_empty() {
        empty.iter().cycle().take(n_best).collect()
    } else {
        t.candidates
            .iter()
            .chain(empty.iter().cycle())
            .take(n_best)
            .collect()
    };
    candidates
        .into_iter()
        .map(|c| {
            let mut line = format!("{index} ||| {} ||| {:.4}", one_line(&c.text), c.score);
            if alignments {
                line.push_str(" ||| ");
                line.push_str(&pharaoh(&c.alignment(source_len)));
            }
            line
        })
        .collect()
}

/// Loads the model directories written by `rosetta train` (several: an ensemble), naming them in
/// the error.
pub fn load_translator<B: rosetta::burn::tensor::backend::Backend>(
    models: &[PathBuf],
    device: &B::Device,
    quantize: Option<Quantize>,
) -> Result<Translator<B>> {
    let mut translator = Translator::<B>::load_ensemble(models, device).with_context(|| {
        let names: Vec<String> = models.iter().map(|m| m.display().to_string()).collect();
        match names.len() {
            1 => format!("cannot load the model {}", names[0]),
            _ => format!("cannot load the ensemble {}", names.join(" + ")),
        }
    })?;
    if translator.ensemble_size() > 1 {
        eprintln!("ensemble of {} models", translator.ensemble_size());
    }
    if quantize == Some(Quantize::Int8) {
        let kernel = rosetta::kernels::Int8Kernel::detect();
        translator.quantize(kernel)?;
        eprintln!("int8 search ({} kernel)", kernel.name());
    }
    Ok(translator)
}

struct TranslateJob<'a> {
    args: &'a Args,
}

impl Job for TranslateJob<'_> {
    type Output = Result<()>;
    fn run<B: rosetta::burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> Result<()> {
        let args = self.args;
        let translator =
            load_translator::<B::InnerBackend>(&args.model, &device, args.decode.quantize)?;
        let options = args
            .decode
            .options(args.n_best, &translator.search_defaults());
        options.validate()?;
        let (mut reader, interactive): (Box<dyn BufRead>, bool) = match &args.input {
            // Plain text or gzip, as `evaluate --src` and training data.
            Some(path) => (
                rosetta_text::corpus::open_text(path)
                    .with_context(|| format!("cannot open {}", path.display()))?,
                false,
            ),
            None => (
                Box::new(std::io::stdin().lock()),
                std::io::stdin().is_terminal(),
            ),
        };
        // A file is written beside its target and renamed over it at the end (see `output`).
        let mut writer = Sink::open(args.output.as_deref())?;
        let font = match &args.attention_png {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let font = crate::heatmap::find_font();
                if font.is_none() {
                    eprintln!(
                        "warning: no TrueType font found (set ROSETTA_FONT); heatmaps will have no labels"
                    );
                }
                font
            }
            None => None,
        };
        let chunk = args
            .chunk_lines
            .unwrap_or(if interactive { 1 } else { 2000 })
            .max(1);
        let mut warnings = InputWarnings::default();
        let mut line_no = 0u64;
        let mut hit_max_len = 0u64;
        let (mut busy, mut pieces) = (std::time::Duration::ZERO, 0usize);
        loop {
            let first = line_no;
            let lines = read_chunk(&mut *reader, chunk, &mut line_no, &mut warnings)?;
            if lines.is_empty() {
                break;
            }
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let clock = std::time::Instant::now();
            let translations = translator.translate_at(&refs, &options, first)?;
            busy += clock.elapsed();
            pieces += translations
                .iter()
                .map(|t| t.best().map_or(0, |c| c.pieces.len() + 1))
                .sum::<usize>();
            for (k, t) in translations.iter().enumerate() {
                let index = first + k as u64;
                hit_max_len += u64::from(t.hit_max_len());
                if t.truncated {
                    warnings.truncated.note(|| {
                        format!(
                            "input line {} is longer than the model's {} pieces; translated its beginning only",
                            index + 1,
                            translator.max_source_len()
                        )
                    });
                }
                if let (Some(dir), Some(best)) = (&args.attention_png, t.best())
                    && !best.attention.is_empty()
                {
                    let path = dir.join(format!("{:06}.png", index + 1));
                    crate::heatmap::write(
                        &path,
                        &t.source_pieces,
                        &best.pieces,
                        &best.attention,
                        font.as_ref(),
                    )?;
                }
                for line in format_lines(t, index, args.n_best, args.alignments) {
                    writer.write_line(&line)?;
                }
            }
            writer.flush()?;
        }
        writer.finish()?;
        if args.timing {
            let seconds = busy.as_secs_f64();
            eprintln!(
                "timing: {line_no} lines, {pieces} target pieces, {seconds:.3} s translating, \
                 {:.1} pieces/s",
                pieces as f64 / seconds.max(1e-9)
            );
        }
        warnings.summary(line_no);
        if let Some(warning) = max_len_warning(hit_max_len, line_no, translator.max_len(&options)) {
            eprintln!("warning: {warning}");
        }
        Ok(())
    }
}

/// Outputs cut at the length cap look like a weak model, not like a limit: say how many there were.
pub fn max_len_warning(hit: u64, lines: u64, (a, b): (f64, usize)) -> Option<String> {
    (hit > 0).then(|| {
        format!(
            "{hit} of {lines} outputs stopped at the maximum output length ({a} · source length + {b}) \
             without ending; raise --max-len-a / --max-len-b if they look cut short"
        )
    })
}

pub fn run(args: Args) -> Result<()> {
    let device = resolve(args.device)?;
    args.decode.check_device(device)?;
    run_on(device, TranslateJob { args: &args })
}
