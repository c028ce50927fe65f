"""Ablations like the paper's: SAE expansion, sparsity (TopK k, ReLU + L1) and number of steered heads.

    python -m experiments.ablations runs/ablations [--layers 12-17] [--scenarios 9]

Trains one SAE variant per setting for the given layers (queries captured once), then runs the
`eval` grid (unsteered + SAE steering toward all six levels) on the first N test-split scenarios,
one batch per scenario for all variants. Writes OUT/saes_<variant>/, OUT/results.csv,
OUT/summary.csv, OUT/report.html and OUT/sae_metrics.json; reruns skip what is done.
The shipped SAEs (expansion 8, k 16) are the reference row.
"""

import argparse
import json
from pathlib import Path

from steer_core.bloom import load_dataset, scenarios
from steer_core.evaluation import Grid, run_eval
from steer_core.fit.sae_training import capture_train_queries, train_layers
from steer_core.layer_spec import parse_layers
from steer_core.model.loading import load_model
from steer_core.sae.module import SAETrainConfig
from steer_core.sae.prototypes import separability
from steer_core.sae.store import STORE
from steer_core.steering.config import SteerConfig
from steer_core.steering.files import SteerFiles

VARIANTS = {
    "exp2": SAETrainConfig(expansion=2),
    "exp4": SAETrainConfig(expansion=4),
    "exp16": SAETrainConfig(expansion=16),
    "k8": SAETrainConfig(k=8),
    "k32": SAETrainConfig(k=32),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", default="12-17")
    ap.add_argument("--scenarios", type=int, default=9, help="the first N test-split scenarios (eval --limit N)")
    args = ap.parse_args()
    layers = list(parse_layers(args.layers))
    lm = load_model()
    metrics_path = args.out / "sae_metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    todo = [
        v
        for v in VARIANTS
        if not all((args.out / f"saes_{v}" / f"layer_{layer}" / "layer.json").is_file() for layer in layers)
    ]
    if todo:
        captured = capture_train_queries(lm, layers)
        for name in todo:
            metrics[name] = train_layers(lm, layers, args.out / f"saes_{name}", VARIANTS[name], captured=captured)
            metrics_path.write_text(json.dumps(metrics, indent=1))

    # number of heads: the 1 and 3 heads whose prototypes differ most, averaged over the layers
    sep = sum(separability(STORE.get(lm, layer).codes).cpu() for layer in layers)
    ranked = [int(h) for h in sep.argsort(descending=True)]
    base = SteerConfig(layers=tuple(layers))
    steers = [
        base,
        SteerConfig(layers=tuple(layers), heads=tuple(sorted(ranked[:1]))),
        SteerConfig(layers=tuple(layers), heads=tuple(sorted(ranked[:3]))),
    ]
    test = scenarios(load_dataset(split="test"))[: args.scenarios]
    report = run_eval(lm, test, Grid(methods=["none", "sae"], layer_sets=[tuple(layers)], steer=steers), args.out)
    for v in VARIANTS:  # the same setting on each variant's SAEs, into the same results (each grid resumes the file)
        files = SteerFiles(saes=str(args.out / f"saes_{v}"))
        grid = Grid(methods=["sae"], layer_sets=[tuple(layers)], steer=base, files=files)
        report = run_eval(lm, test, grid, args.out)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
