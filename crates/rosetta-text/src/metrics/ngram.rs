//! N-gram counting shared by BLEU and chrF, without one allocation per n-gram.
//!
//! Tokens (BLEU words, chrF++ words) are first mapped to `u32` ids by an [`Interner`]; characters are their
//! code points. An n-gram of order `n` is then packed into one `u128` when `n * bits <= 128` (up to 4 word
//! ids of 32 bits, or 6 code points of 21 bits — BLEU's and chrF's default orders), so hashing and comparing
//! it costs a few instructions. Larger orders fall back to `Vec<u32>` keys. Packing is injective for a fixed
//! order, and every map below holds a single order at a time.

use std::hash::Hash;

use super::pystr::FxHashMap;

/// Bits needed for one Unicode code point (U+10FFFF < 2^21).
pub(crate) const CHAR_BITS: u32 = 21;
/// Bits of one interned token id.
pub(crate) const ID_BITS: u32 = 32;

/// Maps token strings to dense `u32` ids. Ids only need to be consistent within one segment (a hypothesis
/// and its references), so the table is emptied between segments once it grows large, which bounds memory.
#[derive(Default)]
pub(crate) struct Interner {
    ids: FxHashMap<Box<str>, u32>,
}

/// Past this many distinct tokens, [`Interner::start_segment`] empties the table.
const INTERNER_RESET: usize = 1 << 22;

impl Interner {
    /// Call before interning the tokens of a new segment.
    pub(crate) fn start_segment(&mut self) {
        if self.ids.len() > INTERNER_RESET {
            self.ids.clear();
        }
    }

    /// Appends the ids of `tokens` to `out`.
    pub(crate) fn intern_into<'a>(
        &mut self,
        tokens: impl Iterator<Item = &'a str>,
        out: &mut Vec<u32>,
    ) {
        for tok in tokens {
            let id = match self.ids.get(tok) {
                Some(&id) => id,
                None => {
                    // At most INTERNER_RESET ids plus the distinct tokens of one segment exist, far below
                    // u32::MAX for any line that fits in memory.
                    let id = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
                    self.ids.insert(tok.into(), id);
                    id
                }
            };
            out.push(id);
        }
    }
}

/// A key built from a window of `n` symbols.
trait NgramKey: Hash + Eq {
    fn make(window: &[u32], bits: u32) -> Self;
}

impl NgramKey for u128 {
    #[inline]
    fn make(window: &[u32], bits: u32) -> Self {
        window
            .iter()
            .fold(0u128, |k, &x| (k << bits) | u128::from(x))
    }
}

impl NgramKey for Vec<u32> {
    #[inline]
    fn make(window: &[u32], _bits: u32) -> Self {
        window.to_vec()
    }
}

/// Number of n-grams of order `n` in a sequence of `len` symbols (`len(range(len - n + 1))` in Python).
#[inline]
pub(crate) fn ngram_count(len: usize, n: usize) -> u64 {
    (len + 1).saturating_sub(n) as u64
}

/// Reusable maps for clipped n-gram matching.
#[derive(Default)]
pub(crate) struct NgramMatcher {
    small: FxHashMap<u128, u32>,
    small_tmp: FxHashMap<u128, u32>,
    large: FxHashMap<Vec<u32>, u32>,
    large_tmp: FxHashMap<Vec<u32>, u32>,
}

impl NgramMatcher {
    /// `Σ_g min(count_hyp(g), max_r count_r(g))` over the n-grams `g` of order `n`: the clipped matches of
    /// BLEU, where the reference counts of several references are merged by their maximum.
    /// `bits` is the width of one symbol (see [`CHAR_BITS`], [`ID_BITS`]).
    pub(crate) fn clipped_matches(
        &mut self,
        hyp: &[u32],
        refs: &[&[u32]],
        n: usize,
        bits: u32,
    ) -> u64 {
        if n == 0 || hyp.len() < n {
            return 0;
        }
        if n as u32 * bits <= 128 {
            clipped::<u128>(&mut self.small, &mut self.small_tmp, hyp, refs, n, bits)
        } else {
            clipped::<Vec<u32>>(&mut self.large, &mut self.large_tmp, hyp, refs, n, bits)
        }
    }
}

fn clipped<K: NgramKey>(
    merged: &mut FxHashMap<K, u32>,
    tmp: &mut FxHashMap<K, u32>,
    hyp: &[u32],
    refs: &[&[u32]],
    n: usize,
    bits: u32,
) -> u64 {
    merged.clear();
    match refs {
        [] => return 0,
        [single] => {
            for w in single.windows(n) {
                *merged.entry(K::make(w, bits)).or_insert(0) += 1;
            }
        }
        several => {
            for r in several {
                tmp.clear();
                for w in r.windows(n) {
                    *tmp.entry(K::make(w, bits)).or_insert(0) += 1;
                }
                for (k, c) in tmp.drain() {
                    let e = merged.entry(k).or_insert(0);
                    *e = (*e).max(c);
                }
            }
        }
    }
    if merged.is_empty() {
        return 0;
    }
    // Consuming the reference counts one hypothesis occurrence at a time gives min(hyp, ref) per n-gram
    // without counting the hypothesis into a map of its own.
    let mut matches = 0u64;
    for w in hyp.windows(n) {
        if let Some(c) = merged.get_mut(&K::make(w, bits))
            && *c > 0
        {
            *c -= 1;
            matches += 1;
        }
    }
    matches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_counts_match_naive_counting() {
        let mut m = NgramMatcher::default();
        let hyp = [1, 1, 1, 2, 3];
        let r1 = [1, 2, 3, 1];
        let r2 = [1, 1, 4];
        // unigrams: 1 -> min(3, max(2, 2)) = 2; 2 -> 1; 3 -> 1
        assert_eq!(m.clipped_matches(&hyp, &[&r1, &r2], 1, ID_BITS), 4);
        // bigrams: (1,1) x2 in hyp, max ref 1 -> 1; (1,2) -> 1; (2,3) -> 1
        assert_eq!(m.clipped_matches(&hyp, &[&r1, &r2], 2, ID_BITS), 3);
        // same with the Vec<u32> fallback (order * bits > 128)
        assert_eq!(m.clipped_matches(&hyp, &[&r1, &r2], 2, 100), 3);
        assert_eq!(m.clipped_matches(&hyp, &[&r1], 6, ID_BITS), 0);
        assert_eq!(ngram_count(3, 4), 0);
        assert_eq!(ngram_count(5, 2), 4);
    }
}
