#!/usr/bin/env python3
"""Checks a directory written by `rosetta export marian` with the real consumers: `transformers` and
CTranslate2. Not part of CI (it needs torch, transformers, sentencepiece and ctranslate2 from PyPI
in a venv outside the repository).

    rosetta import marian crates/rosetta/tests/fixtures/marian-tiny -o /tmp/tiny
    rosetta export marian /tmp/tiny -o /tmp/tiny-hf
    python scripts/check_marian_export.py /tmp/tiny-hf crates/rosetta/tests/fixtures

1. `MarianMTModel.from_pretrained` loads it without missing or unexpected weights, and its logits on
   the fixture's padded batch equal the reference logits (when the model is the fixture, unchanged);
2. `MarianTokenizer` loads it and gives the fixture's token ids;
3. `ct2-transformers-converter` converts it, and CTranslate2's greedy output equals `transformers`'.
"""

import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import MarianMTModel, MarianTokenizer


def main():
    exported, fixtures = sys.argv[1], sys.argv[2]
    model, info = MarianMTModel.from_pretrained(exported, output_loading_info=True)
    model.eval()
    missing = [k for k in info["missing_keys"] if "embed_positions" not in k]
    assert not missing and not info["unexpected_keys"], info
    tok = MarianTokenizer.from_pretrained(exported)
    ref = json.load(open(os.path.join(fixtures, "marian-tiny-reference.json"), encoding="utf-8"))
    same_ids = all(
        tok(line)["input_ids"] == ids for line, ids in zip(ref["source_lines"], ref["source_ids"])
    )
    print("MarianTokenizer ids equal the fixture's:", same_ids)

    batch = load_file(os.path.join(fixtures, "marian-tiny-logits.safetensors"))
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=batch["decoder_input_ids"],
        ).logits
    diff = (logits - batch["logits"]).abs().max().item()
    print(f"largest logit difference from the fixture's reference: {diff:.3g}")

    sources = ref["search_source"]
    enc = tok(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, num_beams=1, max_new_tokens=40, do_sample=False)
    hf_text = tok.batch_decode(out, skip_special_tokens=True)

    import ctranslate2

    # The converter sits beside this interpreter in a venv that is not activated.
    converter = os.path.join(os.path.dirname(sys.executable), "ct2-transformers-converter")
    with tempfile.TemporaryDirectory() as ct2_dir:
        subprocess.run(
            [converter, "--model", exported, "--output_dir", ct2_dir, "--force"],
            check=True,
            capture_output=True,
        )
        translator = ctranslate2.Translator(ct2_dir, device="cpu")
        tokens = [tok.convert_ids_to_tokens(tok(s)["input_ids"]) for s in sources]
        results = translator.translate_batch(tokens, beam_size=1, max_decoding_length=40)
        ct2_text = [
            tok.convert_tokens_to_string(
                [t for t in r.hypotheses[0] if t not in ("</s>", "<pad>")]
            )
            for r in results
        ]
    agree = sum(a == b for a, b in zip(hf_text, ct2_text))
    print(f"CTranslate2 greedy output equals transformers' on {agree} of {len(sources)} sentences")
    for a, b in list(zip(hf_text, ct2_text))[:3]:
        print("  transformers:", a)
        print("  ctranslate2: ", b)
    ok = same_ids and diff < 1e-4 and agree == len(sources)
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
