"""Give result rows recorded before results carried their settings (target, strength, alpha, config) those
columns, read from their labels; and correct the labels of the residual-stream rows that ran at another
scale than their label says.

    python -m experiments.legacy_settings results/test_h4/results.csv results/residual/validation_results.csv \
        results/reps_teacher/results.csv

Residual rows. From commit 9876272 to 33e6c8c, `SteerConfig.for_method("residual")` divided alpha by 16
(the learned target's base alpha) and was applied twice: once in the eval grid, where the row's label was
made, and once more when the Request was built. So a row labelled "learned a48" ran at alpha 3. Every
BiPO row of results/residual/validation_results.csv regenerates token for token at its label / 16 and at
no other scale tried (12 of 12 rows per setting; tests/test_golden_rows.py keeps checking it). The RePS
vectors' rows went through the same code; their vectors (runs/resid_ABC_reps*) were never shipped, so
they are relabelled by the same rule but cannot be re-checked. Rows whose vectors are the shipped ones
(runs/resid_ABC_bipo: the same sha256 as assets/residual/...) name no folder, so they regenerate with
what ships.

Query rows ("delta a8 T20 lr0.2 mu0 pos generated") keep their label and get the columns it spells out.
Unsteered and prompt-only rows get "-". SAE rows are left alone: the offsets they name by default were
replaced since (they cannot be regenerated with what ships, and say so by having no config).

Rows that already have a config column are left alone, so running this twice changes nothing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from steer_core import methods
from steer_core.evaluation.results import RESULT_FIELDS, config_columns, read_csv, write_csv
from steer_core.layer_spec import parse_layers
from steer_core.steering.config import SteerConfig
from steer_core.steering.files import SteerFiles

DOUBLE_CONVERSION = 16.0  # BASE_ALPHA["learned"] at the time, divided by once more than the label shows
SHIPPED = "runs/resid_ABC_bipo"  # byte for byte the vectors in assets/residual/
RESIDUAL = re.compile(r"^learned a(?P<alpha>[0-9.]+)(?: vectors (?P<folder>\S+))?(?P<rest>.*)$")
QUERY = re.compile(
    r"^(?P<target>delta|proto) a?(?P<alpha>[0-9.]*) ?T(?P<steps>\d+) lr(?P<lr>[0-9.]+) mu(?P<mu>[0-9.]+)(?P<rest>.*)$"
)


def _positions(rest: str) -> str:
    m = re.search(r"pos (\w+)", rest)
    return m[1] if m else "all"


def residual_config(row: dict) -> tuple[SteerConfig, SteerFiles]:
    m = RESIDUAL.match(row["setting"])
    if not m:
        raise ValueError(f"unexpected residual label {row['setting']!r}")
    alpha = float(m["alpha"]) / DOUBLE_CONVERSION
    cfg = SteerConfig(
        method="residual",
        layers=parse_layers(row["layers"]),
        strength=SteerConfig.strength_for("learned", alpha, "residual"),
        positions=_positions(m["rest"]),
    )
    return cfg, SteerFiles(residual=None if m["folder"] in (None, SHIPPED) else m["folder"])


def query_config(row: dict) -> SteerConfig:
    m = QUERY.match(row["setting"])
    if not m:
        raise ValueError(f"unexpected query label {row['setting']!r}")
    target = "delta" if m["target"] == "delta" else "prototype"
    alpha = float(m["alpha"] or 1)
    return SteerConfig(
        method="query",
        layers=parse_layers(row["layers"]),
        target=target,
        strength=SteerConfig.strength_for(target, alpha, "query"),
        steps=int(m["steps"]),
        lr=float(m["lr"]),
        mu=float(m["mu"]),
        positions=_positions(m["rest"]),
    )


def settings(row: dict) -> dict:
    if row.get("config") not in (None, ""):
        return row
    if row["method"] == "none" or row["method"] in methods.prompted():
        return {**row, **config_columns(None)}
    if row["method"] == "residual":
        cfg, files = residual_config(row)
        return {**row, "setting": cfg.label_with(files), **config_columns(cfg, files)}
    if row["method"] == "query":
        return {**row, **config_columns(query_config(row))}
    return row


def main(paths: list[str]) -> None:
    for path in map(Path, paths):
        rows = read_csv(path)
        fixed = [settings(r) for r in rows]
        changed = sum(a != b for a, b in zip(rows, fixed))
        write_csv(path, fixed, RESULT_FIELDS)
        print(f"{path}: {changed} of {len(rows)} rows given their settings columns")


if __name__ == "__main__":
    main(sys.argv[1:])
