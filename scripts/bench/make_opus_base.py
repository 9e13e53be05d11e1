#!/usr/bin/env python3
"""Writes a Hugging Face Marian directory shaped like OPUS-MT base (Helsinki-NLP/opus-mt-de-en:
6+6 layers, d_model 512, 8 heads, feed-forward 2048, swish, a joint vocabulary of 58,101 entries,
tied embeddings), with random weights, for the CTranslate2 comparison (scripts/bench/vs_ctranslate2.py).

    python scripts/bench/make_opus_base.py ../shared/data/multi30k ../bench-models/opus-base-hf

Its tokenizer is real: SentencePiece unigram models (6,000 pieces each) trained on Multi30k German
and English, joined into vocab.json as OPUS-MT's are; the table is then filled to 58,101 entries
with unused pieces, so that the embedding table and the vocabulary projection have OPUS-MT's size.
Random weights never choose `</s>` reliably: the benchmark fixes the output length on both sides.
Needs torch, transformers and sentencepiece (a venv outside the repository); not run by CI.

    python scripts/bench/make_opus_base.py --small ../shared/data/multi30k ../bench-models/marian-small-hf

`--small` writes a Multi30k-sized model of Marian's shape instead (3+3 layers, d_model 256, 4 heads,
feed-forward 1,024, 4,000 pieces per language, no filler), to be trained on Multi30k with `rosetta
train` (`train.init_from` on its imported directory) for benchmark (a), where both sides translate
real sentences with a real `</s>`.
"""

import gzip
import json
import os
import shutil
import sys
import tempfile

import sentencepiece as spm
import torch
from transformers import MarianConfig, MarianMTModel

VOCAB = 58101  # Helsinki-NLP/opus-mt-de-en
SPM_VOCAB = 6000
SEED = 7


def read_lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def train_spm(lines, prefix, size):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(lines))
        text = f.name
    spm.SentencePieceTrainer.train(
        input=text,
        model_prefix=prefix,
        vocab_size=size,
        model_type="unigram",
        character_coverage=1.0,
        num_threads=2,
        minloglevel=2,
    )
    os.unlink(text)


def main():
    small = "--small" in sys.argv[1:]
    data, out = [a for a in sys.argv[1:] if a != "--small"]
    shape = (
        dict(d_model=256, layers=3, heads=4, ffn=1024, spm=4000)
        if small
        else dict(d_model=512, layers=6, heads=8, ffn=2048, spm=SPM_VOCAB)
    )
    if os.path.exists(out):
        sys.exit(f"{out} exists; remove it first")
    torch.manual_seed(SEED)
    work = tempfile.mkdtemp()
    train_spm(read_lines(os.path.join(data, "train.de.gz")), os.path.join(work, "source"), shape["spm"])
    train_spm(read_lines(os.path.join(data, "train.en.gz")), os.path.join(work, "target"), shape["spm"])
    # OPUS-MT's vocab.json: `</s>` 0, `<unk>` 1, the pieces of both models, `<pad>` last.
    vocab = {"</s>": 0, "<unk>": 1}
    for name in ("source", "target"):
        sp = spm.SentencePieceProcessor(model_file=os.path.join(work, f"{name}.model"))
        for i in range(sp.get_piece_size()):
            piece = sp.id_to_piece(i)
            if piece not in ("<unk>", "<s>", "</s>") and piece not in vocab:
                vocab[piece] = len(vocab)
    filler = 0
    while not small and len(vocab) < VOCAB - 1:
        vocab[f"▁unused{filler}"] = len(vocab)
        filler += 1
    vocab["<pad>"] = len(vocab)
    os.makedirs(out)
    for name in ("source", "target"):
        shutil.copy(os.path.join(work, f"{name}.model"), os.path.join(out, f"{name}.spm"))
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"source_lang": "de", "target_lang": "en", "model_max_length": 512}, f)
    config = MarianConfig(
        vocab_size=len(vocab),
        decoder_vocab_size=len(vocab),
        d_model=shape["d_model"],
        encoder_layers=shape["layers"],
        decoder_layers=shape["layers"],
        encoder_attention_heads=shape["heads"],
        decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"],
        decoder_ffn_dim=shape["ffn"],
        activation_function="swish",
        max_position_embeddings=512,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=vocab["<pad>"],
        eos_token_id=0,
        decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=0,
        num_beams=5,
        max_length=512,
    )
    model = MarianMTModel(config).eval()
    model.save_pretrained(out)
    print(f"{out}: {sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {len(vocab):,}")


if __name__ == "__main__":
    main()
