//! The metric-independent result ([`Score`]), its reproducibility [`Signature`], and the renderers that
//! print scores exactly like sacreBLEU's command line (`-f json` / `-f text`, `-w`, `-b`, `-sh`).

use std::fmt;
use std::str::FromStr;

use super::{MetricError, SACREBLEU_VERSION};

/// One `key:value` entry of a [`Signature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureField {
    /// The key in the full signature and in JSON output (`nrefs`, `case`, `tok`, …).
    pub key: &'static str,
    /// The key in the short signature (`-sh`: `#`, `c`, `tok`, …).
    pub short_key: &'static str,
    /// The value, as sacreBLEU prints it.
    pub value: String,
}

/// sacreBLEU's reproducibility signature, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
///
/// Fields keep sacreBLEU's order: `nrefs`, the metric's own fields, and `version` last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    fields: Vec<SignatureField>,
}

impl Signature {
    /// Builds a signature from `nrefs`, the metric fields `(key, short_key, value)` and the version
    /// [`SACREBLEU_VERSION`].
    pub(crate) fn new(
        nrefs: usize,
        metric_fields: Vec<(&'static str, &'static str, String)>,
    ) -> Self {
        let mut fields = Vec::with_capacity(metric_fields.len() + 2);
        fields.push(SignatureField {
            key: "nrefs",
            short_key: "#",
            value: nrefs.to_string(),
        });
        fields.extend(
            metric_fields
                .into_iter()
                .map(|(key, short_key, value)| SignatureField {
                    key,
                    short_key,
                    value,
                }),
        );
        fields.push(SignatureField {
            key: "version",
            short_key: "v",
            value: SACREBLEU_VERSION.to_string(),
        });
        Signature { fields }
    }

    /// The fields, in printing order.
    pub fn fields(&self) -> &[SignatureField] {
        &self.fields
    }

    /// `Signature.format(short)`: `key:value` pairs joined by `|`, with the short keys when `short`.
    pub fn format(&self, short: bool) -> String {
        let parts: Vec<String> = self
            .fields
            .iter()
            .map(|f| format!("{}:{}", if short { f.short_key } else { f.key }, f.value))
            .collect();
        parts.join("|")
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format(false))
    }
}

/// A corpus-level (or sentence-level) score of any metric, with everything needed to print it.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// `BLEU`, `chrF2`, `chrF2++`, … (sacreBLEU's `Score.name`).
    pub name: String,
    /// The score in [0, 100], full precision.
    pub score: f64,
    /// The full signature (`nrefs:1|case:mixed|…|version:2.6.0`), as in JSON and default text output.
    pub signature: String,
    /// The short signature (`#:1|c:mixed|…|v:2.6.0`), printed in text output with `-sh`.
    pub short_signature: String,
    /// The details printed after the score: for BLEU
    /// `64.3/40.0/25.0/16.7 (BP = 1.000 ratio = 1.000 hyp_len = 14 ref_len = 14)`; empty for chrF.
    pub verbose_score: String,
}

impl Score {
    /// The order sacreBLEU prints metrics in: it sorts them by their upper-case names (BLEU, CHRF, TER).
    fn family_rank(&self) -> u8 {
        if self.name.starts_with("BLEU") {
            0
        } else if self.name.starts_with("chrF") {
            1
        } else {
            2
        }
    }

    /// sacreBLEU's `Score.format(width, score_only, signature, is_json)`: one entry of the command-line
    /// output. The text form is `NAME|SIGNATURE = SCORE VERBOSE`; the JSON form is an object indented by
    /// one space. With `score_only`, only the rounded score (in either format).
    pub fn format(
        &self,
        width: usize,
        score_only: bool,
        short_signature: bool,
        format: OutputFormat,
    ) -> String {
        let sc = format!("{:.*}", width, self.score);
        if score_only {
            return sc;
        }
        match format {
            OutputFormat::Text => {
                let sig = if short_signature {
                    &self.short_signature
                } else {
                    &self.signature
                };
                let mut line = if sig.is_empty() {
                    format!("{} = {sc}", self.name)
                } else {
                    format!("{}|{sig} = {sc}", self.name)
                };
                if !self.verbose_score.is_empty() {
                    line.push(' ');
                    line.push_str(&self.verbose_score);
                }
                line
            }
            OutputFormat::Json => {
                // sacreBLEU always puts the full signature in JSON; `float(f"{score:.{width}f}")` is
                // printed with Python's float repr.
                let rounded: f64 = sc.parse().unwrap_or(self.score);
                let mut entries: Vec<(String, String)> = vec![
                    ("name".into(), json_string(&self.name)),
                    ("score".into(), py_float_repr(rounded)),
                    ("signature".into(), json_string(&self.signature)),
                ];
                if !self.verbose_score.is_empty() {
                    entries.push(("verbose_score".into(), json_string(&self.verbose_score)));
                }
                if !self.signature.is_empty() {
                    for param in self.signature.split('|') {
                        let (key, value) = param.split_once(':').unwrap_or((param, ""));
                        let value = json_string(value);
                        // A repeated key replaces the earlier value in place, as in a Python dict.
                        match entries.iter_mut().find(|(k, _)| k == key) {
                            Some(entry) => entry.1 = value,
                            None => entries.push((key.to_string(), value)),
                        }
                    }
                }
                let body: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!(" {}: {v}", json_string(k)))
                    .collect();
                format!("{{\n{}\n}}", body.join(",\n"))
            }
        }
    }
}

/// sacreBLEU's output formats for single-system evaluation (`-f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutputFormat {
    /// `-f json`, sacreBLEU 2.x's default.
    #[default]
    Json,
    /// `-f text`: one `NAME|SIGNATURE = SCORE VERBOSE` line per metric, aligned on ` = `.
    Text,
}

impl FromStr for OutputFormat {
    type Err = MetricError;

    /// Parses `json` or `text`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(OutputFormat::Json),
            "text" => Ok(OutputFormat::Text),
            other => Err(MetricError::UnknownFormat(other.to_string())),
        }
    }
}

/// Options of [`render_with`], mirroring sacreBLEU's reporting flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// Decimals of the score (`-w`; sacreBLEU's default is 1).
    pub width: usize,
    /// `-f json` or `-f text`.
    pub format: OutputFormat,
    /// `-sh`: short signature (text output only; sacreBLEU's JSON always carries the full one).
    pub short_signature: bool,
    /// `-b`: print only the scores.
    pub score_only: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            width: 1,
            format: OutputFormat::Json,
            short_signature: false,
            score_only: false,
        }
    }
}

/// Renders the scores of one system exactly as `sacrebleu REF -i HYP -m … -w WIDTH -f FORMAT` prints
/// them, without the final newline. See [`render_with`].
pub fn render(scores: &[Score], width: usize, format: OutputFormat) -> String {
    render_with(
        scores,
        &RenderOptions {
            width,
            format,
            ..RenderOptions::default()
        },
    )
}

/// Renders the scores of one system exactly as sacreBLEU's command line prints them (single-system
/// mode), without the final newline.
///
/// - Like sacreBLEU, metrics are printed in the order BLEU, chrF, others (a stable sort), whatever the
///   order of `scores`.
/// - JSON: one object for one metric; for several, `[`, the objects joined by `,\n`, and `]` on lines of
///   their own.
/// - Text: one line per metric; with several metrics the part before ` = ` is right-aligned so that the
///   `=` signs line up.
/// - Score only (`-b`): the rounded scores, one per line (text) or as a JSON list.
///
/// An empty slice renders as an empty string.
pub fn render_with(scores: &[Score], options: &RenderOptions) -> String {
    let mut ordered: Vec<&Score> = scores.iter().collect();
    ordered.sort_by_key(|s| s.family_rank());
    let results: Vec<String> = ordered
        .iter()
        .map(|s| {
            s.format(
                options.width,
                options.score_only,
                options.short_signature,
                options.format,
            )
        })
        .collect();

    match (options.format, results.len()) {
        (_, 0) => String::new(),
        (_, 1) => results.into_iter().next().unwrap_or_default(),
        (OutputFormat::Json, _) => format!("[\n{}\n]", results.join(",\n")),
        (OutputFormat::Text, _) => {
            // print_single_results: align on the first '='; lines without one are printed as they are.
            let mut lines = Vec::with_capacity(results.len());
            let mut aligned: Vec<(usize, &String)> = Vec::new();
            for line in &results {
                match line.chars().position(|c| c == '=') {
                    Some(pos) => aligned.push((pos.saturating_sub(1), line)),
                    None => lines.push(line.clone()),
                }
            }
            if let Some(w) = aligned.iter().map(|(len, _)| *len).max() {
                for (len, line) in aligned {
                    let split = line.char_indices().nth(len).map_or(line.len(), |(i, _)| i);
                    let (left, right) = line.split_at(split);
                    let pad = w - left.chars().count();
                    lines.push(format!("{}{left}{right}", " ".repeat(pad)));
                }
            }
            lines.join("\n")
        }
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed notation for decimal exponents
/// -4..16 (always with a fractional part, `42.0`) and in scientific notation (`1e-05`, `1.5e+16`) outside.
pub(crate) fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Rust's `{:e}` prints the shortest round-trip digits: "-1.2345e-5", "4.2e1", "0e0".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{sign}{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let mant = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{exp_sign}{:02}", exp.abs())
    }
}

/// A JSON string literal as Python's `json.dumps(..., ensure_ascii=False)` writes it.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        let cases = [
            (42.1, "42.1"),
            (0.0, "0.0"),
            (100.0, "100.0"),
            (64.44, "64.44"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000015, "1.5e-05"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (-3.5, "-3.5"),
            (0.1234, "0.1234"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn json_escapes_like_python() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
