#!/usr/bin/env bash
# Hostile-input bench (not CI): `rosetta translate` on LINES lines (100,000 by default) mixing empty
# lines, lines at the maximum length, control characters, invalid UTF-8 and right-to-left text
# (scripts/hostile_lines.py, seeded), once per maximum line length in LENGTHS. Every run must exit 0,
# write exactly one output line per input line (as `wc -l` and Python's splitlines() count them),
# never panic, and report the lines with invalid UTF-8 as one counted warning; the table gives the
# wall time, CPU time (user + system) and peak RSS (GNU time) against the line length.
#
#   cargo build --release -p rosetta-cli && bash scripts/hostile.sh [target/release/rosetta]
#   LINES=100000 LENGTHS="100 1000 10000" SEED=1 BEAM=5 bash scripts/hostile.sh
set -euo pipefail
BIN=$(realpath "${1:-target/release/rosetta}")
LINES=${LINES:-100000}
LENGTHS=${LENGTHS:-100 1000 10000}
SEED=${SEED:-1}
BEAM=${BEAM:-5}
HERE=$(dirname "$(realpath "$0")")
if [ ! -x /usr/bin/time ]; then
  echo "needs GNU time (/usr/bin/time): apt-get install -y time" >&2
  exit 1
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# A small model on the reversal task (sequences of 2-8 symbols and their reversal), byte-level BPE
# so that every byte of the hostile input reaches a real subword tokenizer: about 5 s of training.
python3 - "$WORK" <<'PY'
import random, sys
work = sys.argv[1]
rng = random.Random(7)
def pairs(n):
    out = []
    for _ in range(n):
        s = [rng.choice("abcdefghijkl") for _ in range(rng.randint(2, 8))]
        out.append((" ".join(s), " ".join(reversed(s))))
    return out
for name, n in [("train", 3000), ("valid", 100)]:
    p = pairs(n)
    open(f"{work}/{name}.src", "w").write("".join(a + "\n" for a, _ in p))
    open(f"{work}/{name}.tgt", "w").write("".join(b + "\n" for _, b in p))
open(f"{work}/config.toml", "w").write(f"""
[data]
train_src = '{work}/train.src'
train_tgt = '{work}/train.tgt'
valid_src = '{work}/valid.src'
valid_tgt = '{work}/valid.tgt'
[text]
tokenizer = "bpe"
vocab_size = 320
[model]
embedding_size = 32
encoder_hidden = 32
decoder_hidden = 64
attention_size = 32
dropout = 0.0
[train]
max_steps = 300
max_epochs = 0
batch_tokens = 400
learning_rate = 0.003
valid_every = 100
keep_checkpoints = 1
""")
PY
"$BIN" train "$WORK/config.toml" --model-dir "$WORK/model" --device cpu >"$WORK/train.log" 2>&1 ||
  { echo "FAIL: training the model"; tail -5 "$WORK/train.log"; exit 1; }

echo "rosetta translate --beam $BEAM, $LINES hostile lines per run, $(nproc) CPU(s): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
printf '%10s %9s %8s %8s %12s %14s %13s\n' "max chars" "input MB" "wall s" "CPU s" "peak RSS MB" "invalid UTF-8" "stderr lines"
failed=0
for max in $LENGTHS; do
  python3 "$HERE/hostile_lines.py" "$LINES" "$max" "$SEED" "$WORK/in.txt" >"$WORK/gen.txt"
  invalid=$(sed -n 2p "$WORK/gen.txt")
  rc=0
  /usr/bin/time -f 'TIME %e %M %U %S' "$BIN" translate --model "$WORK/model" --device cpu --beam "$BEAM" \
    -i "$WORK/in.txt" -o "$WORK/out.txt" 2>"$WORK/err.txt" || rc=$?
  wall=$(awk '/^TIME /{print $2}' "$WORK/err.txt")
  rss=$(awk '/^TIME /{printf "%.0f", $3 / 1024}' "$WORK/err.txt")
  cpu=$(awk '/^TIME /{printf "%.1f", $4 + $5}' "$WORK/err.txt")
  mb=$(du -m --apparent-size "$WORK/in.txt" | cut -f1)
  stderr_lines=$(grep -vc '^TIME ' "$WORK/err.txt" || true)
  printf '%10s %9s %8s %8s %12s %14s %13s\n' "$max" "$mb" "$wall" "$cpu" "$rss" "$invalid" "$stderr_lines"
  problems=()
  [ "$rc" -eq 0 ] || problems+=("exit status $rc")
  grep -q panicked "$WORK/err.txt" && problems+=("panicked")
  out_lines=$(wc -l <"$WORK/out.txt" 2>/dev/null || echo 0)
  [ "$out_lines" -eq "$LINES" ] || problems+=("$out_lines output lines (wc -l) for $LINES input lines")
  split=$(python3 -c 'import sys; print(len(open(sys.argv[1], encoding="utf-8").read().splitlines()))' "$WORK/out.txt" 2>&1 || true)
  [ "$split" = "$LINES" ] || problems+=("splitlines() gives $split output lines")
  if [ "$invalid" -gt 0 ] && ! grep -q "warning: $invalid of $LINES input lines were not valid UTF-8" "$WORK/err.txt"; then
    problems+=("no count of the $invalid invalid UTF-8 lines")
  fi
  if [ ${#problems[@]} -gt 0 ]; then
    failed=1
    printf 'FAIL (max %s chars): %s\n' "$max" "$(IFS=';'; echo "${problems[*]}")"
    grep -v '^TIME ' "$WORK/err.txt" | tail -5
  fi
done
[ "$failed" -eq 0 ] && echo "OK: one output line per input line, no panic, warnings counted"
exit "$failed"
