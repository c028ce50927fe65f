"""How the SAE training schedule trades time for quality: the default model's queries of layers 0, 3, 15 and 29
(the train split, each distinct query once, as `train` and `prepare` capture them), 3,000 held out at random;
each schedule trains all 9 heads of a layer on the rest and is scored on the held-out queries.

    python -m experiments.sae_schedule [--out results/prepare_2026-12-05/sae_schedule.json]

Prints and writes one row per layer and schedule: {"layer", "epochs", "batch", "seconds", "held_out_ev" (mean over
heads), "min_head_ev", "dead" (fraction of latents never active on the held-out queries), "train_ev"}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from steer_core.fit.sae_training import capture_train_queries
from steer_core.model.loading import load_model
from steer_core.sae.module import SAETrainConfig, evaluate_sae, train_head_saes

LAYERS = (0, 3, 15, 29)
SCHEDULES = ((8, 2048), (2, 256), (4, 512))  # (epochs, batch): the old default first
HELD_OUT = 3000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/prepare_2026-12-05/sae_schedule.json")
    args = ap.parse_args()
    lm = load_model()
    captured = capture_train_queries(lm, list(LAYERS), progress=True)
    rows = []
    for layer in LAYERS:
        x = captured.queries[layer].float()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
        held, train = x[perm[:HELD_OUT]], x[perm[HELD_OUT:]]
        for epochs, batch in SCHEDULES:
            t0 = time.perf_counter()
            sae, report = train_head_saes(train, SAETrainConfig(epochs=epochs, batch_size=batch), progress=False)
            seconds = time.perf_counter() - t0
            ev, _, dead = evaluate_sae(sae, held)
            row = {
                "layer": layer, "epochs": epochs, "batch": batch, "seconds": round(seconds, 1),
                "held_out_ev": round(sum(ev) / len(ev), 4), "min_head_ev": round(min(ev), 4),
                "dead": round(sum(dead) / len(dead), 4), "train_ev": report.summary()["explained_variance"],
            }  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
