//! `vocab`: vocabulary files (`vocab.txt`, `src.vocab.txt`, `tgt.vocab.txt`).

use rosetta_text::vocab::Vocab;
use std::path::Path;

/// Input: the contents of a vocabulary file.
///
/// Properties: every piece of a vocabulary that loads has its own id (specials excepted, which
/// text never produces); a vocabulary that [`Vocab::save`] can write (no piece with a line
/// break) reads back identical from what it writes; decoding any ids stops at `</s>`.
pub fn vocab(data: &[u8]) {
    let Ok(vocab) = Vocab::from_bytes(Path::new("vocab.txt"), data.to_vec()) else {
        return;
    };
    let specials = vocab.specials();
    for (i, piece) in vocab.pieces().iter().enumerate() {
        let id = u32::try_from(i).expect("a vocabulary that loads has fewer than 2^32 pieces");
        assert_eq!(vocab.piece(id), piece);
        if specials.contains(id) {
            assert_eq!(
                vocab.id(piece),
                specials.unk,
                "text produced special {piece:?}"
            );
        } else {
            assert_eq!(vocab.id(piece), id, "piece {piece:?}");
        }
    }
    let ids: Vec<u32> = (0..vocab.len() as u32 + 2).collect();
    let decoded = vocab.decode(&ids);
    assert!(decoded.len() <= ids.len());
    if vocab.pieces().iter().any(|p| p.contains(['\n', '\r'])) {
        return;
    }
    let mut written = Vec::new();
    for piece in vocab.pieces() {
        written.extend_from_slice(piece.as_bytes());
        written.push(b'\n');
    }
    let again =
        Vocab::from_bytes(Path::new("vocab.txt"), written).expect("what save writes loads again");
    assert_eq!(again, vocab, "a vocabulary changes through save and load");
}
