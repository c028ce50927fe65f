"""results.csv: one judged generation a row, appended batch by batch so an interrupted run resumes."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from ..methods import PLAIN, own_prompt
from ..steering.files import SteerFiles

RESULT_FIELDS = [
    "scenario_id",
    "method",
    "level",
    "layers",
    "setting",  # the setting's display label (tables, charts)
    "target",
    "strength",
    "alpha",
    "config",  # every field of the SteerConfig but method and layers, as JSON: what identifies the row
    "style",
    "prompt",  # the prompt the reply ran under: plain, or a prompt baseline's (its own, or one steered on top of)
    "model",
    "text",
    "new_tokens",
    "seconds",
    "ppl",
    "pred",
    "pred_index",
    "target_prob",
    "probs",
]


def row_key(r: dict) -> tuple:
    """What a row is a result of: its settings' columns, or (results written before them) the label."""
    return (r["scenario_id"], r["method"], r["level"], r["layers"], r.get("config") or r["setting"], r["style"])


def config_columns(cfg, files=None) -> dict:
    """A SteerConfig (or None: unsteered and prompt-only rows) and the folders it steered with (a SteerFiles;
    None: the model's own) as the results' settings columns; the config records both, as it always has."""
    if cfg is None:
        return {"target": "-", "strength": "-", "alpha": "-", "config": "-"}
    fields = {k: v for k, v in asdict(cfg).items() if k not in ("method", "layers")}
    if fields["prompt"] == PLAIN:  # rows written before steering on top of a prompt keep their identity
        del fields["prompt"]
    if fields["latents"] is None:  # so do rows written before latents could be steered by hand
        del fields["latents"]
    fields |= (files or SteerFiles()).as_fields()
    return {
        "target": cfg.target,
        "strength": f"{cfg.strength:g}",
        "alpha": f"{cfg.alpha:g}",
        "config": json.dumps(fields, sort_keys=True, separators=(",", ":")),
    }


def row_prompt(r: dict) -> str:
    """The prompt a result row ran under (rows written before the column: the plain prompt, or their own
    baseline's)."""
    return r.get("prompt") or own_prompt(r["method"])


def read_results(path: Path) -> list[dict]:
    """Rows of a results.csv; a row cut short by an interrupted write is dropped (and redone)."""
    if not Path(path).is_file():
        return []
    return [r for r in read_csv(path) if r.get("probs") and None not in r.values()]


def append_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)
        fh.flush()


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = fields or list(rows[0].keys())
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def header(path: Path) -> list[str]:
    with Path(path).open(encoding="utf-8") as fh:
        return next(csv.reader(fh), [])


def read_csv(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
