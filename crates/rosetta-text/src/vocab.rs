//! Vocabulary: the mapping between token pieces and the integer ids a model sees.
//!
//! Vocabularies Rosetta builds put the four special tokens at fixed ids ([`PAD`], [`UNK`], [`BOS`],
//! [`EOS`]). Imported vocabularies keep their own layout (OPUS-MT: `</s>` 0, `<unk>` 1, `<pad>` last,
//! and decoding starts from `<pad>`), so every consumer asks [`Vocab::specials`] for the ids.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Padding; masked out of attention and loss.
pub const PAD: u32 = 0;
/// Unknown token.
pub const UNK: u32 = 1;
/// Beginning of sentence (first decoder input).
pub const BOS: u32 = 2;
/// End of sentence.
pub const EOS: u32 = 3;
/// The special pieces, in id order.
pub const SPECIALS: [&str; 4] = ["<pad>", "<unk>", "<s>", "</s>"];

/// The ids of a vocabulary's special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// Padding; masked out of attention and loss.
    pub pad: u32,
    /// Unknown token.
    pub unk: u32,
    /// The decoder's first input (Marian and OPUS-MT use `<pad>` here).
    pub bos: u32,
    /// End of sentence.
    pub eos: u32,
}

impl Default for SpecialIds {
    /// Rosetta's own layout: ids 0–3.
    fn default() -> Self {
        SpecialIds {
            pad: PAD,
            unk: UNK,
            bos: BOS,
            eos: EOS,
        }
    }
}

impl SpecialIds {
    /// Whether `id` is one of the special ids.
    pub fn contains(&self, id: u32) -> bool {
        id == self.pad || id == self.unk || id == self.bos || id == self.eos
    }
}

/// A token ↔ id mapping with its special tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    pieces: Vec<String>,
    index: HashMap<String, u32>,
    specials: SpecialIds,
}

impl Vocab {
    /// Builds a vocabulary from piece counts: pieces seen fewer than `min_freq` times are left out,
    /// and at most `max_size` pieces are kept (specials included), the most frequent first.
    /// Ties are broken alphabetically so the result does not depend on hash order.
    pub fn from_counts(
        counts: &HashMap<String, u64>,
        min_freq: u64,
        max_size: Option<usize>,
    ) -> Self {
        let mut entries: Vec<(&String, u64)> = counts
            .iter()
            .filter(|&(piece, &count)| count >= min_freq && !SPECIALS.contains(&piece.as_str()))
            .map(|(piece, &count)| (piece, count))
            .collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let limit = max_size.map_or(usize::MAX, |m| m.saturating_sub(SPECIALS.len()));
        Self::from_pieces(entries.into_iter().take(limit).map(|(p, _)| p.clone()))
    }

    /// Builds a vocabulary from pieces in id order (after the specials, which are prepended).
    /// Duplicates and pieces equal to a special token are skipped.
    pub fn from_pieces(pieces: impl IntoIterator<Item = String>) -> Self {
        let mut vocab = Vocab {
            pieces: Vec::new(),
            index: HashMap::new(),
            specials: SpecialIds::default(),
        };
        for piece in SPECIALS.iter().map(|s| s.to_string()).chain(pieces) {
            if !vocab.index.contains_key(&piece) {
                vocab.index.insert(piece.clone(), vocab.pieces.len() as u32);
                vocab.pieces.push(piece);
            }
        }
        vocab
    }

    /// Builds a vocabulary from all its pieces in id order, specials included wherever they are,
    /// as imported vocabularies lay them out. `<pad>`, `<unk>` and `</s>` must be present;
    /// decoding starts from `<s>` when there is one, otherwise from `<pad>` (Marian's convention).
    pub fn from_all_pieces(pieces: Vec<String>) -> std::result::Result<Self, String> {
        let mut index = HashMap::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| "more than 2^32 pieces".to_owned())?;
            if index.insert(piece.clone(), id).is_some() {
                return Err(format!("duplicate piece {piece:?} at id {i}"));
            }
        }
        let find = |name: &str| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| format!("the vocabulary has no {name} token"))
        };
        let pad = find("<pad>")?;
        let specials = SpecialIds {
            pad,
            unk: find("<unk>")?,
            bos: index.get("<s>").copied().unwrap_or(pad),
            eos: find("</s>")?,
        };
        Ok(Vocab {
            pieces,
            index,
            specials,
        })
    }

    /// The ids of the special tokens.
    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    /// Number of entries, specials included.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Always false: a vocabulary holds at least the specials.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The id of a piece produced by a tokenizer; [`UNK`] if unknown.
    ///
    /// Text can never produce a special id: a piece that spells `</s>` maps to `<unk>`, so input
    /// text cannot end a sentence or inject padding.
    pub fn id(&self, piece: &str) -> u32 {
        match self.index.get(piece) {
            Some(&id) if !self.specials.contains(id) => id,
            _ => self.specials.unk,
        }
    }

    /// Maps pieces to ids.
    pub fn encode(&self, pieces: &[String]) -> Vec<u32> {
        pieces.iter().map(|p| self.id(p)).collect()
    }

    /// The piece of an id (`<unk>` for an id out of range).
    pub fn piece(&self, id: u32) -> &str {
        self.pieces
            .get(id as usize)
            .map_or(SPECIALS[UNK as usize], String::as_str)
    }

    /// Maps ids back to pieces, dropping padding, `<s>` and `</s>` (and everything after `</s>`).
    pub fn decode(&self, ids: &[u32]) -> Vec<String> {
        let s = self.specials;
        ids.iter()
            .take_while(|&&id| id != s.eos)
            .filter(|&&id| id != s.pad && id != s.bos)
            .map(|&id| self.piece(id).to_owned())
            .collect()
    }

    /// All pieces in id order.
    pub fn pieces(&self) -> &[String] {
        &self.pieces
    }

    /// Writes one piece per line, in id order, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut out = String::with_capacity(self.pieces.iter().map(|p| p.len() + 1).sum());
        for (i, piece) in self.pieces.iter().enumerate() {
            if piece.contains(['\n', '\r']) {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    line: Some(i as u64 + 1),
                    message: format!("piece {piece:?} contains a line break and cannot be saved"),
                });
            }
            out.push_str(piece);
            out.push('\n');
        }
        crate::atomic::write_atomic(path, out.as_bytes())
    }

    /// Reads a file written by [`Vocab::save`], checking the specials and duplicates. A file that
    /// does not start with Rosetta's four specials is an imported layout ([`Vocab::from_all_pieces`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, raw)
    }

    /// Parses the contents of a vocabulary file as [`Vocab::load`] does; `path` names the file in
    /// errors.
    pub fn from_bytes(path: &Path, raw: Vec<u8>) -> Result<Self> {
        // `save` ends every entry with a newline: a file that does not was cut short (a crash, a
        // full disk), and its missing entries would otherwise surface as weights of the wrong
        // shape, blamed on the weights.
        if raw.last().is_some_and(|&b| b != b'\n') {
            return Err(Error::format(
                path,
                "the last line has no newline: the file is truncated (every entry ends with one)",
            ));
        }
        let lines = crate::corpus::LineReader::from_reader(path, std::io::Cursor::new(raw))?
            .collect::<Result<Vec<String>>>()?;
        if lines.len() >= SPECIALS.len()
            && lines[..SPECIALS.len()] != SPECIALS
            && lines.iter().any(|l| l == "<pad>")
            && lines.first().is_some_and(|l| l != "<pad>")
        {
            return Vocab::from_all_pieces(lines).map_err(|m| Error::format(path, m));
        }
        let mut index = HashMap::with_capacity(lines.len());
        for (i, piece) in lines.iter().enumerate() {
            let line = Some(i as u64 + 1);
            if let Some(special) = SPECIALS.get(i)
                && piece != special
            {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    line,
                    message: format!("expected the special token {special} here, found {piece:?}"),
                });
            }
            if index.insert(piece.clone(), i as u32).is_some() {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    line,
                    message: format!("duplicate piece {piece:?}"),
                });
            }
        }
        if lines.len() < SPECIALS.len() {
            return Err(Error::format(
                path,
                "vocabulary is missing its special tokens",
            ));
        }
        Ok(Vocab {
            pieces: lines,
            index,
            specials: SpecialIds::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|&(p, c)| (p.to_owned(), c)).collect()
    }

    #[test]
    fn specials_have_fixed_ids_and_order_is_by_frequency() {
        let v = Vocab::from_counts(
            &counts(&[("b", 5), ("a", 5), ("c", 9), ("rare", 1)]),
            2,
            None,
        );
        assert_eq!(v.pieces(), ["<pad>", "<unk>", "<s>", "</s>", "c", "a", "b"]);
        assert_eq!(v.id("rare"), UNK);
        assert_eq!(v.id("c"), 4);
    }

    #[test]
    fn max_size_counts_specials() {
        let v = Vocab::from_counts(&counts(&[("a", 3), ("b", 2), ("c", 1)]), 1, Some(6));
        assert_eq!(v.len(), 6);
        assert_eq!(v.id("c"), UNK);
    }

    #[test]
    fn text_cannot_produce_special_ids() {
        let v = Vocab::from_pieces(["x".to_owned()]);
        assert_eq!(v.id("</s>"), UNK);
        assert_eq!(v.id("<pad>"), UNK);
    }

    #[test]
    fn decode_stops_at_eos() {
        let v = Vocab::from_pieces(["x".to_owned(), "y".to_owned()]);
        assert_eq!(v.decode(&[BOS, 4, 5, EOS, 4, PAD]), ["x", "y"]);
    }

    #[test]
    fn imported_layout_keeps_its_ids_and_starts_from_pad() {
        let pieces = ["</s>", "<unk>", "▁a", "b", "<pad>"]
            .map(str::to_owned)
            .to_vec();
        let v = Vocab::from_all_pieces(pieces.clone()).unwrap();
        let s = v.specials();
        assert_eq!((s.pad, s.unk, s.bos, s.eos), (4, 1, 4, 0));
        assert_eq!(v.id("</s>"), 1);
        assert_eq!(v.id("b"), 3);
        assert_eq!(v.decode(&[4, 2, 3, 0, 2]), ["▁a", "b"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        v.save(&path).unwrap();
        assert_eq!(Vocab::load(&path).unwrap(), v);
        let err = Vocab::from_all_pieces(vec!["</s>".into(), "<unk>".into()]).unwrap_err();
        assert!(err.contains("<pad>"), "{err}");
    }

    #[test]
    fn save_load_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        let v = Vocab::from_pieces(["ä".to_owned(), "b".to_owned()]);
        v.save(&path).unwrap();
        assert_eq!(Vocab::load(&path).unwrap(), v);

        std::fs::write(&path, "<pad>\n<unk>\n<s>\n</s>\na\na\n").unwrap();
        let msg = Vocab::load(&path).unwrap_err().to_string();
        assert!(
            msg.contains("vocab.txt:6") && msg.contains("duplicate"),
            "{msg}"
        );

        std::fs::write(&path, "<unk>\n<pad>\n").unwrap();
        let msg = Vocab::load(&path).unwrap_err().to_string();
        assert!(
            msg.contains("vocab.txt:1") && msg.contains("<pad>"),
            "{msg}"
        );
    }
}
