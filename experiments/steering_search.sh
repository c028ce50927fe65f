#!/usr/bin/env bash
# The steering search behind docs/steering.md and the README's "Does it steer?", as it was run.
# About 2 hours on 2 CPU cores. Every eval folder is resumable: rerun a line to finish it.
set -euo pipefail

# 1. A cross-writer fold: prototypes and learned offsets from writers A-C's train scenarios only
#    (about 7 minutes; OUT/saes holds the shipped SAEs with the fold's prototypes).
python -m steer_core fit-offsets --writers A B C --out runs/fold_ABC_v3

# 2. Validation on writers D-F's 36 train scenarios x 6 levels (216 generations a row).
python -m steer_core eval --split train --writers D E F --saes runs/fold_ABC_v3/saes \
  --offsets runs/fold_ABC_v3/offsets --methods none sae query \
  --variants delta:8 softmax:3 softmax:6 softmax:10 learned:1 learned:2 learned:4 learned:8 learned:16 \
  --layers 8-21 --out runs/val_DEF
python -m steer_core eval --split train --writers D E F --saes runs/fold_ABC_v3/saes --methods none sae \
  --positions all --variants delta:8 delta:16 --layers 15 --out runs/val_DEF
python -m steer_core summarize runs/val_DEF/results.csv --similarity
# The rule: the most accurate setting within 1.5x unsteered perplexity becomes SteerConfig's default.

# 3. The test split (18 scenarios x 6 levels), once, for the final table. Rows of earlier sessions
#    (unsteered, few-shot, instruction, delta, query) are in results/test_final/results.csv; copy it
#    to runs/test_final/ first and eval generates only the missing rows.
python -m steer_core eval --methods none sae query fewshot instruction --offsets runs/fold_ABC_v3/offsets \
  --variants delta:8 softmax:3 learned:4 learned:16 prototype:1 --layers 8-21 --out runs/test_final
python -m steer_core summarize runs/test_final/results.csv --similarity
python -m steer_core summarize runs/test_final/results.csv --per-level sae

# 4. The shipped offsets: the same fit on all 72 train scenarios.
python -m steer_core fit-offsets --out assets/offsets/smollm2-135m-instruct+feedback-lora
