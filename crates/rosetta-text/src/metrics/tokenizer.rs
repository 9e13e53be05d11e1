//! BLEU's tokenizers, ported line by line from sacreBLEU 2.x (`sacrebleu/tokenizers/*.py`).
//!
//! sacreBLEU expresses most of them as a few `re.sub` passes. Every pattern used there matches exactly one
//! or two characters, so each pass is reproduced here by a left-to-right scan that replaces non-overlapping
//! pairs — the same matches `re.sub` finds, without a regex engine per line.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use unicode_general_category::{GeneralCategory, get_general_category};

use super::MetricError;
use super::pystr::{py_normalize_spaces_into, py_strip};

/// The tokenizer BLEU applies to hypotheses and references before counting word n-grams
/// (sacreBLEU's `--tokenize`/`-tok`).
///
/// The tokenizers that need external models or libraries (`ja-mecab`, `ko-mecab`, `spm`, `flores*`) are not
/// provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BleuTokenizer {
    /// `13a`, the default: mteval-v13a.pl as used by WMT (unescapes `&quot; &amp; &lt; &gt;`, removes
    /// `<skipped>`, splits punctuation off words, keeps `.`/`,` inside numbers).
    #[default]
    Tok13a,
    /// `intl`: mteval-v14's international tokenization — splits every Unicode punctuation character that is
    /// not between digits, and every Unicode symbol.
    Intl,
    /// `zh`: surrounds each CJK character (sacreBLEU's code-point ranges) with spaces, then applies the
    /// language-independent part of `13a`.
    Zh,
    /// `char`: every character is a token.
    Char,
    /// `none`: the text is split on whitespace only.
    None,
}

impl BleuTokenizer {
    /// Every tokenizer, in the order sacreBLEU's `--help` lists them.
    pub const ALL: [BleuTokenizer; 5] = [
        BleuTokenizer::None,
        BleuTokenizer::Zh,
        BleuTokenizer::Tok13a,
        BleuTokenizer::Intl,
        BleuTokenizer::Char,
    ];

    /// The name used on sacreBLEU's command line and in the signature (`tok:13a`).
    pub fn name(self) -> &'static str {
        match self {
            BleuTokenizer::Tok13a => "13a",
            BleuTokenizer::Intl => "intl",
            BleuTokenizer::Zh => "zh",
            BleuTokenizer::Char => "char",
            BleuTokenizer::None => "none",
        }
    }

    /// Tokenizes one line; tokens in the result are separated by single spaces (except for `none`, which
    /// returns the line unchanged, and `char`, which joins every character, spaces included, with a space).
    pub fn tokenize<'a>(self, line: &'a str) -> Cow<'a, str> {
        match self {
            BleuTokenizer::Tok13a | BleuTokenizer::Intl | BleuTokenizer::Zh => {
                let raw = self.tokenize_unnormalized(line);
                let mut out = String::with_capacity(raw.len());
                py_normalize_spaces_into(&raw, &mut out);
                Cow::Owned(out)
            }
            BleuTokenizer::Char | BleuTokenizer::None => self.tokenize_unnormalized(line),
        }
    }

    /// The tokenization before sacreBLEU's final `' '.join(line.split())`. BLEU splits the result on
    /// whitespace itself, so that step would only be repeated; `py_split` of this equals `py_split` of
    /// [`BleuTokenizer::tokenize`].
    pub(crate) fn tokenize_unnormalized<'a>(self, line: &'a str) -> Cow<'a, str> {
        match self {
            BleuTokenizer::Tok13a => Cow::Owned(tokenize_13a(line)),
            BleuTokenizer::Intl => Cow::Owned(tokenize_intl(line)),
            BleuTokenizer::Zh => Cow::Owned(tokenize_zh(line)),
            BleuTokenizer::Char => Cow::Owned(tokenize_char(line)),
            BleuTokenizer::None => Cow::Borrowed(line),
        }
    }
}

impl fmt::Display for BleuTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BleuTokenizer {
    type Err = MetricError;

    /// Parses a sacreBLEU tokenizer name (`13a`, `intl`, `zh`, `char`, `none`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BleuTokenizer::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| MetricError::UnknownTokenizer(s.to_string()))
    }
}

/// Where the replacement of a two-character match puts its spaces: `r'\1 \2 '` or `r' \1 \2'`.
#[derive(Clone, Copy)]
enum PairRepl {
    /// `\1 \2 `
    SpaceAfter,
    /// ` \1 \2`
    SpaceBefore,
}

/// `re.sub(r'(A)(B)', repl, s)` for single-character classes `A` and `B`: scans left to right and
/// replaces non-overlapping pairs, as the regex engine does for a fixed-width two-character pattern.
fn sub_pairs(s: &str, is_match: impl Fn(char, char) -> bool, repl: PairRepl) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4 + 4);
    let mut it = s.chars().peekable();
    while let Some(a) = it.next() {
        if let Some(&b) = it.peek()
            && is_match(a, b)
        {
            it.next();
            match repl {
                PairRepl::SpaceAfter => {
                    out.push(a);
                    out.push(' ');
                    out.push(b);
                    out.push(' ');
                }
                PairRepl::SpaceBefore => {
                    out.push(' ');
                    out.push(a);
                    out.push(' ');
                    out.push(b);
                }
            }
            continue;
        }
        out.push(a);
    }
    out
}

/// `re.sub(r'(A)', r' \1 ', s)` for a single-character class `A`.
fn sub_single(s: &str, is_match: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 2 + 4);
    for c in s.chars() {
        if is_match(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// The character class `[\{-\~\[-\` -\&\(-\+\:-\@\/]` of sacreBLEU's `TokenizerRegexp` (ASCII only).
#[inline]
fn is_13a_split_byte(b: u8) -> bool {
    matches!(b, b'{'..=b'~' | b'['..=b'`' | b' '..=b'&' | b'('..=b'+' | b':'..=b'@' | b'/')
}

/// `re.sub(r'(A)(B)', repl, s)` over UTF-8 bytes, for the ASCII-only patterns of `TokenizerRegexp`.
///
/// Working on bytes gives the same matches as working on characters here: in every pattern one side is
/// an ASCII character ([.,] or -) and the other is either ASCII too or "not an ASCII digit", which a
/// multi-byte character satisfies exactly when its byte next to the ASCII side (its last byte before it,
/// its first byte after it) does. A match never splits a multi-byte character apart from the spaces it
/// inserts next to the ASCII side, so the output is the same valid UTF-8 as `re.sub` would produce.
fn sub_pairs_bytes(s: &[u8], is_match: impl Fn(u8, u8) -> bool, repl: PairRepl) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 4 + 4);
    let mut i = 0;
    while i < s.len() {
        let a = s[i];
        if let Some(&b) = s.get(i + 1)
            && is_match(a, b)
        {
            match repl {
                PairRepl::SpaceAfter => out.extend_from_slice(&[a, b' ', b, b' ']),
                PairRepl::SpaceBefore => out.extend_from_slice(&[b' ', a, b' ', b]),
            }
            i += 2;
            continue;
        }
        out.push(a);
        i += 1;
    }
    out
}

/// sacreBLEU's `TokenizerRegexp` (the language-dependent part of `13a`, shared with `zh`), without the
/// final `' '.join(line.split())`.
fn tokenize_regexp(line: &str) -> String {
    // (re.compile(r'([\{-\~\[-\` -\&\(-\+\:-\@\/])'), r' \1 ')
    let mut s = Vec::with_capacity(line.len() + line.len() / 2 + 4);
    for &b in line.as_bytes() {
        if is_13a_split_byte(b) {
            s.extend_from_slice(&[b' ', b, b' ']);
        } else {
            s.push(b);
        }
    }
    if s.iter().any(|&b| b == b'.' || b == b',') {
        // tokenize period and comma unless preceded by a digit: r'([^0-9])([\.,])' -> r'\1 \2 '
        s = sub_pairs_bytes(
            &s,
            |a, b| !a.is_ascii_digit() && matches!(b, b'.' | b','),
            PairRepl::SpaceAfter,
        );
        // tokenize period and comma unless followed by a digit: r'([\.,])([^0-9])' -> r' \1 \2'
        s = sub_pairs_bytes(
            &s,
            |a, b| matches!(a, b'.' | b',') && !b.is_ascii_digit(),
            PairRepl::SpaceBefore,
        );
    }
    if s.contains(&b'-') {
        // tokenize dash when preceded by a digit: r'([0-9])(-)' -> r'\1 \2 '
        s = sub_pairs_bytes(
            &s,
            |a, b| a.is_ascii_digit() && b == b'-',
            PairRepl::SpaceAfter,
        );
    }
    // Only ASCII spaces were inserted between whole characters (see `sub_pairs_bytes`), so this never
    // fails; the lossy fallback keeps the function total without a panic path.
    String::from_utf8(s).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `Tokenizer13a.__call__`, without the final `' '.join(line.split())`.
fn tokenize_13a(line: &str) -> String {
    let mut s: Cow<'_, str> = Cow::Borrowed(line);
    // language-independent part
    if s.contains("<skipped>") {
        s = Cow::Owned(s.replace("<skipped>", ""));
    }
    if s.contains("-\n") {
        s = Cow::Owned(s.replace("-\n", ""));
    }
    if s.contains('\n') {
        s = Cow::Owned(s.replace('\n', " "));
    }
    if s.contains('&') {
        // In this order: "&amp;lt;" becomes "<", as in sacreBLEU.
        let mut t = s.replace("&quot;", "\"");
        t = t.replace("&amp;", "&");
        t = t.replace("&lt;", "<");
        t = t.replace("&gt;", ">");
        s = Cow::Owned(t);
    }
    tokenize_regexp(&format!(" {s} "))
}

/// The coarse Unicode classes the `intl` tokenizer's patterns use.
#[inline]
fn is_number(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    matches!(
        get_general_category(c),
        GeneralCategory::DecimalNumber
            | GeneralCategory::LetterNumber
            | GeneralCategory::OtherNumber
    )
}

/// `\p{P}`: Unicode general category P*.
#[inline]
fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return matches!(
            c,
            '!' | '"'
                | '#'
                | '%'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | ','
                | '-'
                | '.'
                | '/'
                | ':'
                | ';'
                | '?'
                | '@'
                | '['
                | '\\'
                | ']'
                | '_'
                | '{'
                | '}'
        );
    }
    matches!(
        get_general_category(c),
        GeneralCategory::ConnectorPunctuation
            | GeneralCategory::DashPunctuation
            | GeneralCategory::OpenPunctuation
            | GeneralCategory::ClosePunctuation
            | GeneralCategory::InitialPunctuation
            | GeneralCategory::FinalPunctuation
            | GeneralCategory::OtherPunctuation
    )
}

/// `\p{S}`: Unicode general category S*.
#[inline]
fn is_symbol(c: char) -> bool {
    if c.is_ascii() {
        return matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~');
    }
    matches!(
        get_general_category(c),
        GeneralCategory::MathSymbol
            | GeneralCategory::CurrencySymbol
            | GeneralCategory::ModifierSymbol
            | GeneralCategory::OtherSymbol
    )
}

/// `TokenizerV14International.__call__`, without the final `' '.join(line.split())`.
fn tokenize_intl(line: &str) -> String {
    // Separate out punctuations preceeded by a non-digit: r'(\P{N})(\p{P})' -> r'\1 \2 '
    let s = sub_pairs(
        line,
        |a, b| !is_number(a) && is_punctuation(b),
        PairRepl::SpaceAfter,
    );
    // Separate out punctuations followed by a non-digit: r'(\p{P})(\P{N})' -> r' \1 \2'
    let s = sub_pairs(
        &s,
        |a, b| is_punctuation(a) && !is_number(b),
        PairRepl::SpaceBefore,
    );
    // Separate out symbols: r'(\p{S})' -> r' \1 '
    sub_single(&s, is_symbol)
}

/// `TokenizerZh._is_chinese_char`, as it actually behaves.
///
/// sacreBLEU lists its ranges as strings, and two of them are written `u'\u20000'` and `u'\u2f800'`, which
/// Python reads as two characters (`'\u2000' + '0'`). Compared as strings, the range
/// `('\u20000', '\u2a6d6')` therefore admits U+2001..=U+2A6D (general punctuation, currency, arrows, math
/// and dingbats), and no supplementary-plane ideograph is ever matched. The table below is the resulting
/// set, merged into disjoint ranges (checked against sacreBLEU 2.6.0 over all code points).
const ZH_RANGES: [(u32, u32); 13] = [
    (0x2001, 0x2A6D),
    (0x2E80, 0x2FDF),
    (0x2FF0, 0x303F),
    (0x3100, 0x312F),
    (0x31A0, 0x31EF),
    (0x3200, 0x4DB5),
    (0x4E00, 0x9FBB),
    (0xF900, 0xFA2D),
    (0xFA30, 0xFA6A),
    (0xFA70, 0xFAD9),
    (0xFE10, 0xFE1F),
    (0xFE30, 0xFE4F),
    (0xFF00, 0xFFEF),
];

#[inline]
fn is_chinese_char(c: char) -> bool {
    let c = c as u32;
    c >= 0x2001 && ZH_RANGES.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// `TokenizerZh.__call__`, without the final `' '.join(line.split())`.
fn tokenize_zh(line: &str) -> String {
    let line = py_strip(line);
    let mut spaced = String::with_capacity(line.len() * 2);
    for c in line.chars() {
        if is_chinese_char(c) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    // Note: unlike 13a, zh does not pad the line with spaces before the regexp passes.
    tokenize_regexp(&spaced)
}

/// `TokenizerChar.__call__`: `" ".join(line)`.
fn tokenize_char(line: &str) -> String {
    let mut out = String::with_capacity(line.len() * 2);
    for (i, c) in line.chars().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_fast_paths_agree_with_unicode_tables() {
        for b in 0u8..128 {
            let c = char::from(b);
            let cat = get_general_category(c);
            let abbr = cat.abbreviation();
            assert_eq!(is_punctuation(c), abbr.starts_with('P'), "{c:?}");
            assert_eq!(is_symbol(c), abbr.starts_with('S'), "{c:?}");
            assert_eq!(is_number(c), abbr.starts_with('N'), "{c:?}");
        }
    }

    #[test]
    fn tok13a_examples() {
        let t = BleuTokenizer::Tok13a;
        assert_eq!(t.tokenize("Hello, world!"), "Hello , world !");
        assert_eq!(t.tokenize("It costs $3.50, ok."), "It costs $ 3.50 , ok .");
        assert_eq!(t.tokenize("a &amp;lt; b &quot;c&quot;"), "a < b \" c \"");
        assert_eq!(t.tokenize("x <skipped> y"), "x y");
        assert_eq!(t.tokenize("10-20 well-known"), "10 - 20 well-known");
        assert_eq!(t.tokenize(""), "");
    }

    #[test]
    fn intl_examples() {
        let t = BleuTokenizer::Intl;
        assert_eq!(
            t.tokenize("1,000.50 «Bonjour», dit-il."),
            "1,000.50 « Bonjour » , dit - il ."
        );
        assert_eq!(t.tokenize("In 2020."), "In 2020.");
        assert_eq!(t.tokenize("5€+3"), "5 € + 3");
    }

    #[test]
    fn zh_examples() {
        let t = BleuTokenizer::Zh;
        assert_eq!(
            t.tokenize("我爱北京。Hello, 世界"),
            "我 爱 北 京 。 Hello , 世 界"
        );
        // Kana is outside sacreBLEU's ranges.
        assert_eq!(t.tokenize("ひらがな漢字"), "ひらがな 漢 字");
    }

    #[test]
    fn char_and_none() {
        assert_eq!(BleuTokenizer::Char.tokenize("ab c"), "a b   c");
        assert_eq!(BleuTokenizer::None.tokenize(" a  b "), " a  b ");
    }

    #[test]
    fn names_round_trip() {
        for t in BleuTokenizer::ALL {
            assert_eq!(t.name().parse::<BleuTokenizer>().ok(), Some(t));
        }
        assert!("mecab".parse::<BleuTokenizer>().is_err());
    }
}
