//! Python `str` behaviour that sacreBLEU relies on, reproduced exactly.
//!
//! Python's `str.split()`, `str.strip()` and `str.rstrip()` treat a slightly different set of characters as
//! whitespace than Rust's `char::is_whitespace` (Unicode `White_Space`): Python also counts the
//! information separators U+001C..=U+001F. Using Rust's set would make a line such as `"a\u{1f}b"` one BLEU
//! token instead of two, so every split in this module goes through [`is_py_space`].
//!
//! The module also holds the small non-cryptographic hasher used for n-gram counting.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// `chr(c).isspace()` in CPython 3.11 (Unicode 14): bidirectional class WS, B or S, or category Zs.
///
/// Listed exhaustively (checked with `[c for c in range(0x110000) if chr(c).isspace()]`).
#[inline]
pub(crate) fn is_py_space(c: char) -> bool {
    match c {
        '\t'..='\r' | '\u{1c}'..='\u{20}' => true,
        c if (c as u32) < 0x85 => false,
        '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' => true,
        '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' => true,
        _ => false,
    }
}

/// Python's `s.split()` (no argument): runs of whitespace separate words, no empty words.
pub(crate) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

/// Python's `s.rstrip()`.
pub(crate) fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// Python's `s.strip()`.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `' '.join(s.split())`, appended to `out`.
pub(crate) fn py_normalize_spaces_into(s: &str, out: &mut String) {
    let mut first = true;
    for w in py_split(s) {
        if !first {
            out.push(' ');
        }
        out.push_str(w);
        first = false;
    }
}

/// The FxHash function (as in rustc): fast for the short keys n-gram counting hashes; no DoS resistance is
/// needed because the keys are the user's own text.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // Mix the length in so that "a\0" and "a" differ even though both pad to the same word.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` using [`FxHasher`].
pub(crate) type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_set() {
        let spaces: Vec<u32> = (0u32..0x11_0000)
            .filter_map(char::from_u32)
            .filter(|&c| is_py_space(c))
            .map(|c| c as u32)
            .collect();
        let python = [
            0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000,
            0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028,
            0x2029, 0x202f, 0x205f, 0x3000,
        ];
        assert_eq!(spaces, python);
    }

    #[test]
    fn split_and_strip() {
        let v: Vec<&str> = py_split("  a\u{1f}b \u{3000}c  ").collect();
        assert_eq!(v, ["a", "b", "c"]);
        assert_eq!(py_rstrip("ab \u{a0}\r\n"), "ab");
        assert_eq!(py_strip("\u{2009} ab \t"), "ab");
        let mut s = String::new();
        py_normalize_spaces_into("  x   y ", &mut s);
        assert_eq!(s, "x y");
    }
}
