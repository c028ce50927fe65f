"""results.csv: one judged generation a row, appended batch by batch so an interrupted run resumes."""

from __future__ import annotations

import csv
from pathlib import Path

RESULT_FIELDS = [
    "scenario_id",
    "method",
    "level",
    "layers",
    "setting",
    "style",
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
    return (r["scenario_id"], r["method"], r["level"], r["layers"], r["setting"], r["style"])


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


def read_csv(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
