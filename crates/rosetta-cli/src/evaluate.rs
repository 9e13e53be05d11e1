//! `rosetta evaluate --model DIR --src FILE --ref FILE`: translate a test set and report BLEU (cased
//! and lowercased), chrF, teacher-forced perplexity and speed.

use crate::output::{OutputFile, one_line};
use crate::translate::{DecodeArgs, load_translator};
use anyhow::{Result, bail};
use rosetta::device::{DeviceChoice, Job, resolve, run_on};
use rosetta_text::corpus::read_lines;
use rosetta_text::metrics::{Bleu, Chrf, strip_line};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory written by `rosetta train`. Give several (`--model A B`, or `--model`
    /// repeated) to decode with their ensemble: models trained on the same prepared text, whose
    /// next-token distributions are averaged.
    #[arg(long, short = 'm', required = true, num_args = 1..)]
    model: Vec<PathBuf>,
    /// Source file (plain text or gzip).
    #[arg(long)]
    src: PathBuf,
    /// Reference file(s); give --ref more than once for several references.
    #[arg(long = "ref", required = true)]
    refs: Vec<PathBuf>,
    /// Where to write the hypotheses (default: <model>/eval/<src name>.hyp).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    decode: DecodeArgs,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

struct EvaluateJob<'a> {
    args: &'a Args,
}

impl Job for EvaluateJob<'_> {
    type Output = Result<()>;
    fn run<B: rosetta::burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> Result<()> {
        let args = self.args;
        let translator =
            load_translator::<B::InnerBackend>(&args.model, &device, args.decode.quantize)?;
        let options = args.decode.options(1, &translator.search_defaults());
        options.validate()?;
        let sources = read_lines(&args.src)?;
        let refs: Vec<Vec<String>> = args
            .refs
            .iter()
            .map(|p| -> Result<Vec<String>> {
                Ok(read_lines(p)?
                    .iter()
                    .map(|l| strip_line(l).to_owned())
                    .collect())
            })
            .collect::<Result<_>>()?;
        for (path, r) in args.refs.iter().zip(&refs) {
            if r.len() != sources.len() {
                bail!(
                    "line counts differ: {} has {} lines but {} has {}",
                    args.src.display(),
                    sources.len(),
                    path.display(),
                    r.len()
                );
            }
        }
        let src_refs: Vec<&str> = sources.iter().map(String::as_str).collect();
        let clock = Instant::now();
        let translations = translator.translate(&src_refs, &options)?;
        let seconds = clock.elapsed().as_secs_f64();
        let hyps: Vec<String> = translations.iter().map(|t| t.text().to_owned()).collect();
        let hit_max_len = translations.iter().filter(|t| t.hit_max_len()).count();
        let out_tokens: usize = translations
            .iter()
            .map(|t| t.best().map_or(0, |c| c.pieces.len() + 1))
            .sum();

        let out_path = args.output.clone().unwrap_or_else(|| {
            let name = args
                .src
                .file_name()
                .map_or("eval".into(), |n| n.to_string_lossy().into_owned());
            // An ensemble's hypotheses go beside its first member's, under their own name. (clap
            // requires at least one --model, so `args.model[0]` exists.)
            let suffix = match args.model.len() {
                1 => String::new(),
                k => format!(".ensemble{k}"),
            };
            args.model[0]
                .join("eval")
                .join(format!("{}{suffix}.hyp", name.trim_end_matches(".gz")))
        });
        // Written beside the target and renamed over it (missing directories created): a full disk
        // or a read-only directory leaves an earlier file intact.
        let mut file = OutputFile::create(&out_path)?;
        for h in &hyps {
            file.write_line(&one_line(h))?;
        }
        file.commit()?;

        let bleu = Bleu::default().corpus_score(&hyps, &refs)?;
        let bleu_lc = Bleu {
            lowercase: true,
            ..Bleu::default()
        }
        .corpus_score(&hyps, &refs)?;
        let chrf = Chrf::default().corpus_score(&hyps, &refs)?;
        let ref_strs: Vec<&str> = refs[0].iter().map(String::as_str).collect();
        let (nll, tokens) =
            translator.score_references(&src_refs, &ref_strs, options.max_tokens_per_batch)?;
        let ppl = (nll / tokens.max(1) as f64).exp();
        let result = json!({
            // One directory as a string (as before ensembles); an ensemble as a list.
            "model": match args.model.as_slice() {
                [one] => json!(one),
                all => json!(all),
            },
            "src": args.src,
            "refs": args.refs,
            "hypotheses": out_path,
            "sentences": sources.len(),
            "beam": options.search.beam,
            "length_penalty": options.search.length_penalty,
            "quantize": args.decode.quantize.map(|_| "int8"),
            "bleu": bleu.score,
            "bleu_signature": bleu.signature.format(false),
            "bleu_lc": bleu_lc.score,
            "chrf": chrf.score,
            "ppl": ppl,
            "hit_max_len": hit_max_len,
            "seconds": seconds,
            "sentences_per_sec": sources.len() as f64 / seconds.max(1e-9),
            "target_tokens_per_sec": out_tokens as f64 / seconds.max(1e-9),
        });
        if args.json {
            println!("{}", serde_json::to_string_pretty(&result)?);
        } else {
            println!("BLEU    {:.2}  ({})", bleu.score, bleu.verbose());
            println!("BLEU-lc {:.2}", bleu_lc.score);
            println!("chrF2   {:.2}", chrf.score);
            println!("ppl     {ppl:.3}  (teacher-forced, first reference)");
            println!(
                "speed   {:.1} sentences/s, {:.0} target tokens/s ({} sentences in {:.1} s, beam {})",
                sources.len() as f64 / seconds.max(1e-9),
                out_tokens as f64 / seconds.max(1e-9),
                sources.len(),
                seconds,
                options.search.beam
            );
            println!("signature {}", bleu.signature.format(false));
            println!("hypotheses: {}", out_path.display());
        }
        if let Some(warning) = crate::translate::max_len_warning(
            hit_max_len as u64,
            sources.len() as u64,
            translator.max_len(&options),
        ) {
            eprintln!("warning: {warning}");
        }
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    let device = resolve(args.device)?;
    args.decode.check_device(device)?;
    run_on(device, EvaluateJob { args: &args })
}
