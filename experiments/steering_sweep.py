"""The sweeps behind the README's "Does it steer?" tables (they were run on a GPU).

    python -m experiments.steering_sweep val-prototype OUT.csv   # paper's target, 7 layer sets x 2 strengths
    python -m experiments.steering_sweep val-delta OUT.csv       # delta target, 2 layer sets x alpha 2/4/8
    python -m experiments.steering_sweep val-positions OUT.csv --early DIR   # generated tokens only (alpha
                                                             # 16/32), and early-token prototypes from
                                                             # `prototypes --first-tokens 8 --out DIR`
    python -m experiments.steering_sweep val-generated OUT.csv   # generated tokens only, alpha 8/12, SAE and query
    python -m experiments.steering_sweep test-prompts OUT.csv    # test split: unsteered, few-shot, instruction
    ... [--limit N]                                          # only the first N scenarios (a smoke run)

Validation uses 12 train-split scenarios (2 per writing batch) and is judged by a TF-IDF judge
fitted on the train split (what the GPU machine could run); test rows are judged by the shipped
judge. All use the adapted default model, the plain prompt and 64 new tokens.
"""

import random
from pathlib import Path

from steer_core.bloom import load_dataset, scenarios, writer_of
from steer_core.evaluation import Grid, add_judgements, run_grid, write_csv
from steer_core.judge.classifier import JudgeConfig
from steer_core.judge.fitting import fit_judge
from steer_core.model.loading import load_model
from steer_core.steering.config import SteerConfig
from steer_core.steering.files import SteerFiles

BAND, ALL = tuple(range(8, 22)), tuple(range(30))


def validation_scenarios(train):
    by_batch = {}
    for s in scenarios(train):
        by_batch.setdefault(writer_of(s.scenario_id), []).append(s)
    return [s for b in sorted(by_batch) for s in random.Random(0).sample(by_batch[b], 2)]


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", choices=("val-prototype", "val-delta", "val-positions", "val-generated", "test-prompts"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--early", default=None, help="SAE folder with early-token prototypes (val-positions)")
    args = ap.parse_args()
    phase, out = args.phase, args.out
    lm = load_model()
    train = load_dataset(split="train")
    val = validation_scenarios(train)[: args.limit]
    if phase == "val-prototype":
        rows = []
        for steps, lr in [(5, 0.1), (20, 0.2)]:
            grid = Grid(
                methods=(["none"] if steps == 5 else []) + ["sae", "query"],
                layer_sets=[(5,), (10,), (15,), (20,), (25,), BAND, ALL],
                steer=SteerConfig(target="prototype", steps=steps, lr=lr, positions="all"),
            )
            rows += run_grid(lm, val, grid)
    elif phase == "val-delta":
        steers = [
            SteerConfig(target="delta", strength=a / 8, steps=20, lr=0.2, positions="all") for a in (2.0, 4.0, 8.0)
        ]
        rows = run_grid(lm, val, Grid(methods=["none", "sae", "query"], layer_sets=[BAND, ALL], steer=steers))
    elif phase == "val-positions":
        steers = [SteerConfig(target="delta", strength=a / 8, positions="generated") for a in (16.0, 32.0)]
        rows = run_grid(lm, val, Grid(methods=["none", "sae"], layer_sets=[BAND], steer=steers))
        if args.early:  # the SAEs trained on early tokens only
            early = [
                SteerConfig(target="delta", strength=1.0, positions="all"),
                SteerConfig(target="delta", strength=2.0, positions="generated"),
            ]
            grid = Grid(methods=["sae"], layer_sets=[BAND], steer=early, files=SteerFiles(saes=args.early))
            rows += run_grid(lm, val, grid)
    elif phase == "val-generated":  # the strength of generated-only steering, SAE against query
        steers = [SteerConfig(target="delta", strength=a / 8, positions="generated") for a in (8.0, 12.0)]
        rows = run_grid(lm, val, Grid(methods=["none", "sae", "query"], layer_sets=[BAND], steer=steers))
    elif phase == "test-prompts":
        test = scenarios(load_dataset(split="test"))[: args.limit]
        rows = run_grid(
            lm, test, Grid(methods=["none", "fewshot", "instruction"], layer_sets=[BAND], steer=SteerConfig())
        )
    add_judgements(rows, fit_judge(train, JudgeConfig(kind="tfidf", tfidf_C=8.0)) if phase.startswith("val") else None)
    write_csv(out, rows)


if __name__ == "__main__":
    main()
