#!/usr/bin/env python3
"""Rosetta against CTranslate2 on the same model, the same sentences and the same search, each side
in its own process, alternating sides round by round (the side that goes first alternates too).
Reports target pieces per second (each output's `</s>` counted), the ratio Rosetta / CTranslate2 per
round with its median and range, peak RSS of each process, and, given references, each side's BLEU.
Not a CI test: it needs ctranslate2, sentencepiece and sacrebleu from PyPI (a venv outside the
repository) and minutes of a quiet machine. README "Rosetta against CTranslate2" has the commands.

    python scripts/bench/vs_ctranslate2.py --rosetta target/release/rosetta \\
        --rosetta-model ../bench-models/opus-base-rosetta \\
        --rosetta-int8-model ../bench-models/opus-base-rosetta-int8 \\
        --ct2-model ../bench-models/opus-base-ct2 --ct2-int8-model ../bench-models/opus-base-ct2-int8 \\
        --spm-dir ../bench-models/opus-base-hf --src ../shared/data/multi30k/test_2016_flickr.de.gz \\
        --fixed-len 32 --lines 200 --latency-lines 30 --threads 1 2 --batch 1 32 \\
        --modes float32 int8 --rounds 3 --json results.json
"""

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def read_lines(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def run(cmd, env, out_path):
    """Runs cmd, returns (stdout+stderr text, peak RSS in MiB) from the kernel's accounting."""
    with open(out_path + ".log", "w") as log:
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    text = open(out_path + ".log", encoding="utf-8", errors="replace").read()
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{text[-2000:]}")
    return text, usage.ru_maxrss / 1024.0


def rosetta_side(a, mode, threads, batch, src, out):
    model = a.rosetta_int8_model if mode == "int8" and a.rosetta_int8_model else a.rosetta_model
    cmd = [a.rosetta, "translate", "--model", model, "-i", src, "-o", out,
           "--beam", str(a.beam), "--timing", "--max-sentences-per-batch", str(batch),
           "--max-tokens-per-batch", "1000000", "--device", "cpu"]
    if a.fixed_len:
        cmd += ["--min-len", str(a.fixed_len), "--max-len-a", "0", "--max-len-b", str(a.fixed_len)]
    else:
        cmd += ["--max-len-a", "0", "--max-len-b", str(a.max_len), "--beam-rule", "ctranslate2",
                "--length-penalty", str(a.length_penalty)]
    if mode == "int8" and not a.rosetta_int8_model:
        cmd += ["--quantize", "int8"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    text, rss = run(cmd, env, out)
    line = [l for l in text.splitlines() if l.startswith("timing:")][-1]
    # timing: N lines, P target pieces, S s translating, R pieces/s
    parts = line.replace(",", "").split()
    return {"pieces": int(parts[3]), "seconds": float(parts[6]), "rss_mib": rss}


def ct2_side(a, mode, threads, batch, src, out):
    model = a.ct2_int8_model if mode == "int8" and a.ct2_int8_model else a.ct2_model
    cmd = [a.python, os.path.join(HERE, "ct2_peer.py"), model, src,
           os.path.join(a.spm_dir, "source.spm"), os.path.join(a.spm_dir, "target.spm"), out,
           "--threads", str(threads), "--batch", str(batch), "--beam", str(a.beam),
           "--compute-type", mode, "--length-penalty", str(a.length_penalty)]
    cmd += ["--fixed-len", str(a.fixed_len)] if a.fixed_len else ["--max-len-b", str(a.max_len)]
    text, rss = run(cmd, dict(os.environ), out)
    result = json.loads([l for l in text.splitlines() if l.startswith("{")][-1])
    return {"pieces": result["pieces"], "seconds": result["seconds"], "rss_mib": rss}


def bleu(hyp_path, refs):
    import sacrebleu
    return sacrebleu.corpus_bleu(read_lines(hyp_path), [refs]).score


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rosetta", required=True)
    p.add_argument("--rosetta-model", required=True)
    p.add_argument("--rosetta-int8-model",
                   help="written by `rosetta quantize` (else --quantize int8 at load)")
    p.add_argument("--ct2-model", required=True)
    p.add_argument("--ct2-int8-model", help="converted with --quantization int8 (else int8 at load)")
    p.add_argument("--spm-dir", required=True, help="directory with source.spm and target.spm")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--src", required=True)
    p.add_argument("--ref")
    p.add_argument("--lines", type=int, default=0, help="first N source lines (0: all)")
    p.add_argument("--latency-lines", type=int, default=50, help="lines for batch size 1")
    p.add_argument("--fixed-len", type=int, default=0, help="outputs of exactly N pieces (no </s>)")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--modes", nargs="+", default=["float32", "int8"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args()

    lines = read_lines(a.src)
    refs = read_lines(a.ref) if a.ref else None
    work = tempfile.mkdtemp()
    results = []
    for mode in a.modes:
        for threads in a.threads:
            for batch in a.batch:
                n = a.latency_lines if batch == 1 else (a.lines or len(lines))
                src = os.path.join(work, f"src{n}.txt")
                with open(src, "w", encoding="utf-8") as f:
                    f.write("\n".join(lines[:n]) + "\n")
                rows = {"rosetta": [], "ct2": []}
                for r in range(a.rounds):
                    order = [("rosetta", rosetta_side), ("ct2", ct2_side)]
                    if r % 2:
                        order.reverse()
                    for name, side in order:
                        out = os.path.join(work, f"{name}-{mode}-{threads}-{batch}-{r}.txt")
                        res = side(a, mode, threads, batch, src, out)
                        res["out"] = out
                        rows[name].append(res)
                speed = {k: [x["pieces"] / x["seconds"] for x in v] for k, v in rows.items()}
                ratios = [ro / ct for ro, ct in zip(speed["rosetta"], speed["ct2"])]
                entry = {
                    "mode": mode, "threads": threads, "batch": batch, "lines": n,
                    "pieces": {k: v[0]["pieces"] for k, v in rows.items()},
                    "pieces_per_s": {k: statistics.median(v) for k, v in speed.items()},
                    "ratio_median": statistics.median(ratios),
                    "ratio_range": [min(ratios), max(ratios)],
                    "peak_rss_mib": {k: max(x["rss_mib"] for x in v) for k, v in rows.items()},
                }
                if batch == 1:
                    entry["ms_per_sentence"] = {
                        k: 1000 * statistics.median(x["seconds"] for x in v) / n
                        for k, v in rows.items()
                    }
                if refs is not None:
                    entry["bleu"] = {k: bleu(v[0]["out"], refs[:n]) for k, v in rows.items()}
                results.append(entry)
                print(json.dumps(entry), flush=True)
    print()
    print("| mode | threads | batch | lines | Rosetta pieces/s | CTranslate2 pieces/s | ratio (range) "
          "| peak RSS MiB (Rosetta / CT2) |" + (" BLEU (Rosetta / CT2) |" if refs else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if refs else ""))
    for e in results:
        row = (f"| {e['mode']} | {e['threads']} | {e['batch']} | {e['lines']} "
               f"| {e['pieces_per_s']['rosetta']:.1f} | {e['pieces_per_s']['ct2']:.1f} "
               f"| {e['ratio_median']:.2f} ({e['ratio_range'][0]:.2f}–{e['ratio_range'][1]:.2f}) "
               f"| {e['peak_rss_mib']['rosetta']:.0f} / {e['peak_rss_mib']['ct2']:.0f} |")
        if refs:
            row += f" {e['bleu']['rosetta']:.2f} / {e['bleu']['ct2']:.2f} |"
        print(row)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "when": time.strftime("%Y-%m-%d %H:%M"), "results": results}, f,
                      indent=1)


if __name__ == "__main__":
    main()
