#!/usr/bin/env bash
# Low-resource transfer on Multi30k (README.md beside this file): pretrain a Transformer on de→en +
# fr→en, then adapt it to cs→en with the first 2,000 cs–en pairs, four ways. Run from the
# repository root; writes its data to ../finetune-data (never into the repository) and its models
# to runs/ft-*. Each step is skipped when its model directory already exists.
set -euo pipefail
D=${DATA:-../shared/data/multi30k}
W=../finetune-data
ROSETTA=${ROSETTA:-target/release/rosetta}
mkdir -p "$W" runs

# The data: pretraining pairs (de+fr → en), their validation set, and the 2,000 cs–en pairs.
if [ ! -s "$W/cs2k.en" ]; then
  zcat "$D/train.de.gz" "$D/train.fr.gz" > "$W/pre.src"
  zcat "$D/train.en.gz" "$D/train.en.gz" > "$W/pre.tgt"
  zcat "$D/val.de.gz" "$D/val.fr.gz" > "$W/preval.src"
  zcat "$D/val.en.gz" "$D/val.en.gz" > "$W/preval.tgt"
  # The joint subword model reads every line of both files, so each language once: de+fr | en+cs.
  zcat "$D/train.en.gz" "$D/train.cs.gz" > "$W/vocab.tgt"
  zcat "$D/train.cs.gz" | head -n 2000 > "$W/cs2k.cs"
  zcat "$D/train.en.gz" | head -n 2000 > "$W/cs2k.en"
fi
[ -d "$W/pipeline" ] || "$ROSETTA" prepare --src "$W/pre.src" --tgt "$W/vocab.tgt" \
  --tokenizer bpe --vocab-size 10000 --max-len 80 -o "$W/pipeline"

# Peak memory (GNU time's maximum resident set), wall time and the run's own report.
train() {  # name config
  [ -f "runs/ft-$1/config.toml" ] && [ -f "runs/ft-$1/time.txt" ] && return
  /usr/bin/time -v -o "runs/ft-$1.time" "$ROSETTA" train "examples/finetune/$2" -o "runs/ft-$1" \
    2> "runs/ft-$1.log"
  mv "runs/ft-$1.time" "runs/ft-$1/time.txt"
}
train pretrain pretrain.toml
for m in scratch full lora-emb adapter-emb lora adapter; do
  train "$m" "$m.toml"
  "$ROSETTA" evaluate --model "runs/ft-$m" --src "$D/test_2016_flickr.cs.gz" \
    --ref "$D/test_2016_flickr.en.gz" --beam 5 --json > "runs/ft-$m/test.json"
  echo "$m: $(grep -o '"bleu": [0-9.]*\|"chrf": [0-9.]*' "runs/ft-$m/test.json" | tr '\n' ' ')" \
    "peak RSS $(grep Maximum "runs/ft-$m/time.txt" | grep -o '[0-9]*$') kB," \
    "wall $(grep Elapsed "runs/ft-$m/time.txt" | grep -o '[0-9:.]*$')," \
    "on disk $(du -sh --exclude=checkpoints "runs/ft-$m" | cut -f1)"
done
