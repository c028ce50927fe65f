"""Ship another residual vector: copy a fit's vectors over the shipped ones, and relabel the rows that name them,
so that every row still says which vectors made it.

    python -m experiments.ship_residual results/distil_residual --before results/residual_bipo

A row steered with the shipped vectors records no folder. Rows recorded before the swap (no folder) made with
the vectors that shipped until now get `--before` (a copy of them kept with the rows); rows that name the new
fit's folder become rows of the shipped vectors (no folder), so `reproduce --shipped` and the golden-row tests
regenerate them from assets/. The new asset's record starts from the fit's own (offsets.json); its
`validated` and `provenance` are written by hand from the measured rows.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace

from steer_core.evaluation.grid import config_columns
from steer_core.evaluation.reproduce import row_config, row_files
from steer_core.evaluation.results import RESULT_FIELDS, read_results, write_csv
from steer_core.paths import ASSET_RESIDUAL, ROOT
from steer_core.steering.offset_files import OFFSETS_CFG, OFFSETS_FILE, LevelOffsets

ASSET = ASSET_RESIDUAL / "smollm2-135m-instruct+feedback-lora"
FILES = [  # every shipped result file with rows of the residual method steered by the model's own vectors
    "results/frontier/validation.csv",
    "results/frontier/test.csv",
    "results/residual/validation_results.csv",
    "results/residual/test_results.csv",
]


def relabel(row: dict, before: str | None, new: str) -> dict:
    """A residual row with its folder as it reads after the swap (other rows unchanged): the shipped vectors' rows
    name `before` (None: left as they are), the new fit's rows name no folder."""
    if row["method"] != "residual" or "runs/" in (row.get("config") or "") + row.get("setting", ""):
        return row  # rows of vectors that were never shipped name their own folder (or a runs/ one)
    files = row_files(row)
    if files.residual not in (None, new) or (files.residual is None and before is None):
        return row
    swapped = replace(files, residual=before if files.residual is None else None)
    cfg = row_config(row)
    return row | {"setting": cfg.label_with(swapped), "config": config_columns(cfg, swapped)["config"]}


def main(new: str, *args: str) -> None:
    before = args[args.index("--before") + 1]
    if not (ROOT / before / OFFSETS_FILE).is_file():
        (ROOT / before).mkdir(parents=True, exist_ok=True)
        for name in (OFFSETS_FILE, OFFSETS_CFG):
            shutil.copy2(ASSET / name, ROOT / before / name)
    LevelOffsets.load(ROOT / new)  # verifies the new fit's files
    for f in FILES:
        rows = read_results(ROOT / f)
        out = [relabel(r, before, new) for r in rows]
        changed = sum(a != b for a, b in zip(rows, out))
        write_csv(ROOT / f, out, RESULT_FIELDS)
        print(f"{f}: {changed} of {len(rows)} rows relabelled")
    shutil.copy2(ROOT / new / OFFSETS_FILE, ASSET / OFFSETS_FILE)
    record = json.loads((ROOT / new / OFFSETS_CFG).read_text())
    (ASSET / OFFSETS_CFG).write_text(json.dumps(record, indent=1))
    print(f"{new} -> {ASSET.relative_to(ROOT)} (add its 'validated' and 'provenance')")


if __name__ == "__main__":
    main(*sys.argv[1:])
