"""Gather the rows behind the frontier ("Does it steer?", `summarize --matched`) into results/frontier/, from
the measured result files and a `sweep` folder, with the settings they are given back by:

    # -> results/frontier/validation.csv
    python -m experiments.frontier_rows validation runs/fr_val runs/fr_val_reps runs/fr_val_sched runs/fr_val_resid3
    # -> results/frontier/test.csv
    python -m experiments.frontier_rows test runs/fr_test
    # the rows that ship now, plus a new sweep's
    python -m experiments.frontier_rows validation --keep runs/fr_val_proto
    # steering on top of the instruction prompt; the prompt distilled into a residual vector
    python -m experiments.frontier_rows validation --keep runs/fr_val_instr runs/fr_val_distil
    python -m experiments.frontier_rows test --keep runs/fr_test_instr

Which rows, per split:
- validation (writers D-F): the SAE default's curve (every layer, learned offsets) from
  results/all_layers/validation_results.csv, the residual vector's (layer 15, the BiPO vectors that ship)
  from results/residual/validation_results.csv, query steering's (every layer, delta) from
  results/query/validation_results.csv, and whatever the sweep folder adds (the prompt baselines, more
  strengths).
- test: the rows of each shipped default (results/all_layers, residual, query test results and
  results/test_h4's few-shot and instruction rows) and what the sweep folder adds.

The SAE validation rows name the folder the validated fold was fitted into (runs/fold_ABC_all30): its
offsets are the ones that ship (assets/offsets/..., fitted on writers A-C only), and steering with learned
offsets reads no prototypes, so those rows are relabelled as the shipped files' rows; that they are is
checked, token for token, by `python -m steer_core reproduce results/frontier/validation.csv --method sae`
and by the golden-row tests. The query validation rows steer toward level means of writers A-C only
(runs/fold_ABC_all/saes: `python -m steer_core prototypes --layers 0-29 --writers A B C` rebuilds them);
the shipped prototypes use every writer, so those rows keep their folder and are marked as not given back
by what ships. RePS rows of earlier rounds (vectors never shipped) are left out; the RePS vectors fitted
the authors' way (`fit-reps ... --out runs/reps_resid_authors`) are kept in results/reps_authors/, and
their rows name that folder, as do the rows of the residual vectors fitted at layers 12, 15 and 18 together
(`fit-offsets --site residual --layers 12,15,18 ... --out runs/resid3_ABC`, kept in
results/residual_3layers/). The unsteered rows are read once (every file's are the same text).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from steer_core import methods
from steer_core.evaluation.results import RESULT_FIELDS, read_results, row_prompt, write_csv
from steer_core.paths import ROOT

from .ship_residual import relabel as relabel_residual

FOLD_OFFSETS = "runs/fold_ABC_all30/offsets"  # the validated fold, byte for byte the shipped offsets
# The residual vectors that ship, byte for byte (the fit with its record): rows steered with this folder are rows of
# the shipped vectors. The BiPO vectors that shipped before them are kept in results/residual_bipo with their rows
# (experiments/ship_residual.py relabelled those once, when the vectors were swapped).
SHIPPED_RESIDUAL = "results/distil_residual_token"
MOVED = {  # fits kept with the rows they made
    "runs/reps_resid_authors": "results/reps_authors",
    "runs/resid3_ABC": "results/residual_3layers",
    "runs/distil_resid15_token": "results/distil_residual_token",  # the same, a per-token coefficient (KL)
    "runs/distil_resid15": "results/distil_residual",  # the instruction prompt distilled into layer 15 (KL)
    "runs/distil_sae30/offsets": "results/distil_sae",  # the instruction prompt distilled into every layer's SAE codes
    "distil_sae30/offsets": "results/distil_sae",  # the same in a setting label (the folder's last two parts)
}
SOURCES = {
    "validation": [
        ("results/all_layers/validation_results.csv", ("none", "sae")),
        ("results/residual/validation_results.csv", ("residual",)),
        ("results/query/validation_results.csv", ("query",)),
    ],
    "test": [
        ("results/test_h4/results.csv", ("none", "fewshot", "instruction")),
        ("results/all_layers/test_results.csv", ("sae",)),
        ("results/residual/test_results.csv", ("residual",)),
        ("results/query/test_results.csv", ("query",)),
    ],
}


def as_shipped(row: dict) -> dict:
    """An SAE row of the validated fold, or a residual row of the shipped vectors' own folder, as the row the
    shipped files give (same text, shipped settings)."""
    if row["method"] == "residual":
        return relabel_residual(row, before=None, new=SHIPPED_RESIDUAL) if SHIPPED_RESIDUAL in row["config"] else row
    if row["method"] != "sae":
        return row
    cfg = json.loads(row["config"])
    if cfg.get("offsets") != FOLD_OFFSETS:
        return row
    cfg["offsets"] = cfg["saes"] = None
    setting = row["setting"].replace(" offsets fold_ABC_all30/offsets", "").replace(" saes saes", "")
    return row | {"config": json.dumps(cfg, sort_keys=True, separators=(",", ":")), "setting": setting}


def moved(row: dict) -> dict:
    """A row whose vectors were fitted into runs/ and are kept in results/: the folder where they are now."""
    for old, new in MOVED.items():
        row = row | {k: row[k].replace(old, new) for k in ("config", "setting") if old in (row.get(k) or "")}
    return row


def keep(row: dict, methods: tuple[str, ...]) -> bool:
    if row["method"] not in methods:
        return False
    if row["method"] == "sae" and row["layers"] != "0-29" and not row["setting"].startswith("proto"):
        return False  # the SAE offsets' curve is the default's, every layer; the paper's prototype at any layers
    return "runs/resid_" not in (row.get("config") or "")  # RePS vectors: never shipped


def gather(split: str, sweeps: list[Path], keep_shipped: bool = False) -> list[dict]:
    """The split's rows from its sources and the sweeps; keep_shipped: from the rows that ship now instead of
    the sources (the sweeps that added to them need not be on this machine), plus the new sweeps."""
    rows, seen = [], set()
    shipped = ROOT / "results" / "frontier" / f"{split}.csv"
    sources = [(shipped, methods.names())] if keep_shipped else [(ROOT / f, m) for f, m in SOURCES[split]]
    sources += [(sweep / "results.csv", methods.names()) for sweep in sweeps]
    for path, wanted in sources:
        for r in read_results(path):
            if not keep(r, wanted):
                continue
            r = as_shipped(moved(r))
            r["prompt"] = row_prompt(r)  # rows written before the column ran under the plain prompt (or their own)
            key = (r["scenario_id"], r["method"], r["level"], r["layers"], r["setting"], r["style"])
            if key in seen:
                continue
            seen.add(key)
            rows.append(r)
    return rows


def main(split: str, *sweeps: str) -> None:
    keep_shipped = "--keep" in sweeps
    rows = gather(split, [Path(s) for s in sweeps if s != "--keep"], keep_shipped)
    out = ROOT / "results" / "frontier" / f"{split}.csv"
    write_csv(out, rows, RESULT_FIELDS)
    print(f"{len(rows)} rows -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
