#!/usr/bin/env python3
"""One CTranslate2 side of scripts/bench/vs_ctranslate2.py, in its own process: tokenizes the
source with the model's SentencePiece model (Marian's `</s>` appended), then times only
`translate_batch` and prints one JSON line (lines, target pieces with each output's `</s>`,
seconds). Writes the detokenized outputs to OUT.

    ct2_peer.py CT2_DIR SRC SOURCE_SPM TARGET_SPM OUT --threads 2 --batch 32 --beam 5
        [--compute-type float32|int8] [--fixed-len 32] [--max-len-a 1.5 --max-len-b 10]
        [--length-penalty 1.0]
"""

import argparse
import gzip
import json
import time

import ctranslate2
import sentencepiece as spm


def read_lines(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def main():
    p = argparse.ArgumentParser()
    for name in ("model", "src", "source_spm", "target_spm", "out"):
        p.add_argument(name)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--compute-type", default="float32")
    p.add_argument("--fixed-len", type=int, default=0)
    p.add_argument("--max-len-b", type=int, default=256)
    p.add_argument("--length-penalty", type=float, default=1.0)
    a = p.parse_args()
    sp_src = spm.SentencePieceProcessor(model_file=a.source_spm)
    sp_tgt = spm.SentencePieceProcessor(model_file=a.target_spm)
    tokens = [sp_src.encode(line, out_type=str) + ["</s>"] for line in read_lines(a.src)]
    translator = ctranslate2.Translator(
        a.model, device="cpu", compute_type=a.compute_type, inter_threads=1, intra_threads=a.threads
    )
    options = dict(
        beam_size=a.beam,
        max_batch_size=a.batch,
        batch_type="examples",
        length_penalty=a.length_penalty,
        max_decoding_length=a.fixed_len or a.max_len_b,
    )
    if a.fixed_len:
        options["min_decoding_length"] = a.fixed_len
    start = time.perf_counter()
    results = translator.translate_batch(tokens, **options)
    seconds = time.perf_counter() - start
    hyps = [r.hypotheses[0] for r in results]
    with open(a.out, "w", encoding="utf-8") as f:
        for h in hyps:
            f.write(sp_tgt.decode(h) + "\n")
    print(json.dumps({
        "lines": len(tokens),
        "pieces": sum(len(h) + 1 for h in hyps),
        "seconds": seconds,
        "lengths": sorted({len(h) for h in hyps})[:5],
    }))


if __name__ == "__main__":
    main()
