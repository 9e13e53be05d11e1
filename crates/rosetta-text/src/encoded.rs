//! Compact storage for encoded corpora: one flat `u32` buffer of ids plus offsets, instead of a
//! `Vec<Vec<u32>>` or `Vec<String>` per sentence. Five million pairs of ~25 tokens take about 1 GB.

/// Many variable-length id sequences stored back to back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenStore {
    ids: Vec<u32>,
    /// `offsets[i]..offsets[i + 1]` is sequence `i`; always starts with 0.
    offsets: Vec<u64>,
}

impl TokenStore {
    /// An empty store.
    pub fn new() -> Self {
        TokenStore {
            ids: Vec::new(),
            offsets: vec![0],
        }
    }

    /// Appends one sequence.
    pub fn push(&mut self, seq: &[u32]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.ids.extend_from_slice(seq);
        self.offsets.push(self.ids.len() as u64);
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether the store holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence `i`. Panics if `i >= len()`, like slice indexing.
    pub fn get(&self, i: usize) -> &[u32] {
        let start = self.offsets[i] as usize;
        let end = self.offsets[i + 1] as usize;
        &self.ids[start..end]
    }

    /// Length of sequence `i`.
    pub fn seq_len(&self, i: usize) -> usize {
        (self.offsets[i + 1] - self.offsets[i]) as usize
    }

    /// Total number of ids stored.
    pub fn total_tokens(&self) -> usize {
        self.ids.len()
    }

    /// Heap bytes used by the store.
    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 4 + self.offsets.capacity() * 8
    }

    /// Iterates over all sequences in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Releases spare capacity once the store is complete.
    pub fn shrink_to_fit(&mut self) {
        self.ids.shrink_to_fit();
        self.offsets.shrink_to_fit();
    }
}

/// An encoded parallel corpus: source and target sequences with the same index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParallelIds {
    /// Source sequences (without `</s>`; batching adds it).
    pub src: TokenStore,
    /// Target sequences (without `<s>`/`</s>`; batching adds them).
    pub tgt: TokenStore,
}

impl ParallelIds {
    /// An empty corpus.
    pub fn new() -> Self {
        ParallelIds {
            src: TokenStore::new(),
            tgt: TokenStore::new(),
        }
    }

    /// Appends one pair.
    pub fn push(&mut self, src: &[u32], tgt: &[u32]) {
        self.src.push(src);
        self.tgt.push(tgt);
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.src.len()
    }

    /// Whether the corpus is empty.
    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
    }

    /// Padded lengths each pair occupies in a batch: source + `</s>`, target + one of `<s>`/`</s>`.
    pub fn batch_lengths(&self) -> (Vec<u32>, Vec<u32>) {
        let src = (0..self.len())
            .map(|i| self.src.seq_len(i) as u32 + 1)
            .collect();
        let tgt = (0..self.len())
            .map(|i| self.tgt.seq_len(i) as u32 + 1)
            .collect();
        (src, tgt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_sequences_back_to_back() {
        let mut s = TokenStore::new();
        s.push(&[5, 6, 7]);
        s.push(&[]);
        s.push(&[9]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(0), [5, 6, 7]);
        assert!(s.get(1).is_empty());
        assert_eq!(s.get(2), [9]);
        assert_eq!(s.total_tokens(), 4);
        assert_eq!(s.iter().count(), 3);
    }
}
