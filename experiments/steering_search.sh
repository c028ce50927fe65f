#!/usr/bin/env bash
# The steering search behind docs/steering.md: cross-writer validation, then the test-split table.
# About 1.5 hours on 2 CPU cores. Every eval folder is resumable: rerun a line to finish it.
set -euo pipefail

# 1. A cross-writer fold: prototypes and learned offsets from writers A-C only (train split).
python -m steer_core fit-offsets --writers A B C --out runs/fold_ABC_v3
#    The first, preference-dominated fit (kept as the row "learned, preference-dominated"):
python -m steer_core fit-offsets --writers A B C --lr 0.01 --l1 0.3 --epochs 2 --out runs/fold_ABC

# 2. Validation on writers D-F's train scenarios (36 scenarios x 6 levels), every candidate.
python -m steer_core eval --split train --writers D E F --saes runs/fold_ABC/saes \
  --offsets runs/fold_ABC_v3/offsets --methods none sae query \
  --variants delta:8 softmax:3 softmax:6 learned:1 learned:2 learned:4 learned:8 learned:16 \
  --layers 8-21 --out runs/val_DEF
python -m steer_core summarize runs/val_DEF/results.csv

# 3. The shipped offsets: all 72 train scenarios, the same settings as the fold.
python -m steer_core fit-offsets --out assets/offsets/smollm2-135m-instruct+feedback-lora

# 4. The test split (18 scenarios x 6 levels), used once, for the final table.
python -m steer_core eval --methods none sae query fewshot instruction \
  --variants delta:8 softmax:3 learned:8 prototype:1 --layers 8-21 --out runs/test_final
python -m steer_core summarize runs/test_final/results.csv --similarity
python -m steer_core summarize runs/test_final/results.csv --per-level sae
