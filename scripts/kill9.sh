#!/usr/bin/env bash
# Crash-safety bench (not CI): train a small model, killing it with SIGKILL at KILLS random moments
# (during updates, validations and checkpoint writes alike), running `rosetta train --resume` after
# every kill; then finish the run and compare it with an uninterrupted one. Every resume must
# succeed, and the logged losses and the final weights must be bit-identical.
#
#   cargo build --release -p rosetta-cli && bash scripts/kill9.sh [target/release/rosetta]
#   KILLS=50 SEED=1 bash scripts/kill9.sh
set -euo pipefail
BIN=$(realpath "${1:-target/release/rosetta}")
KILLS=${KILLS:-50}
SEED=${SEED:-1}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The reversal task: sequences of 2-8 symbols and their reversal.
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
tokenizer = "word"
[model]
embedding_size = 32
encoder_hidden = 32
decoder_hidden = 64
attention_size = 32
dropout = 0.2
[train]
max_steps = 3000
max_epochs = 0
batch_tokens = 400
learning_rate = 0.003
schedule = "plateau"
valid_every = 100
keep_checkpoints = 2
""")
PY

train() { "$BIN" train "$WORK/config.toml" --model-dir "$1" --resume --device cpu >>"$WORK/log" 2>&1; }

SECONDS=0
train "$WORK/straight"
echo "uninterrupted run: ${SECONDS} s"

killed=0
for i in $(seq 1 "$KILLS"); do
  delay=$(python3 -c "import random; print(round(random.Random($SEED * 1000 + $i).uniform(0.05, 1.2), 3))")
  "$BIN" train "$WORK/config.toml" --model-dir "$WORK/killed" --resume --device cpu >>"$WORK/log" 2>&1 &
  pid=$!
  sleep "$delay"
  if kill -9 "$pid" 2>/dev/null; then
    killed=$((killed + 1))
    wait "$pid" 2>/dev/null || true
  else
    # The run ended before the kill: it must have ended well.
    wait "$pid" || { echo "FAIL: resume $i exited with an error"; tail -5 "$WORK/log"; exit 1; }
  fi
done
train "$WORK/killed" || { echo "FAIL: the final --resume failed"; tail -5 "$WORK/log"; exit 1; }

python3 - "$WORK" "$killed" <<'PY'
import json, struct, sys
work, killed = sys.argv[1], int(sys.argv[2])
def losses(run):
    rows = [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl")]
    return [(r["step"], r["loss"]) for r in rows if r["type"] == "train"]
def weights(run):
    b = open(f"{work}/{run}/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]
a, b = losses("straight"), losses("killed")
same_losses = a == b
same_weights = weights("straight") == weights("killed")
print(f"{killed} kills landed; {len(a)} updates; losses identical: {same_losses}; weights identical: {same_weights}")
sys.exit(0 if same_losses and same_weights else 1)
PY
