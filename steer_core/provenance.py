"""What every shipped asset records about itself: the command that made it, the data (and fold) it saw,
how its strength was chosen, and the result rows it must reproduce token for token.

Each asset's own record file holds a "provenance" object; `reproduce --shipped` (and the golden-row
tests) regenerate the rows it names with exactly what ships, so a figure in the README is only ever
one that the files in assets/ give back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .paths import ADAPTER_DIR, ASSET_OFFSETS, ASSET_RESIDUAL, ASSET_SAES, DEFAULT_FOLDER, JUDGE_DIR, ROOT

RECORDS = {  # asset -> the JSON file whose "provenance" object describes it
    "adapter": ADAPTER_DIR / "training.json",
    "judge": JUDGE_DIR / "judge_config.json",
    "saes": ASSET_SAES / DEFAULT_FOLDER / "provenance.json",
    "offsets": ASSET_OFFSETS / DEFAULT_FOLDER / "offsets.json",
    "residual": ASSET_RESIDUAL / DEFAULT_FOLDER / "offsets.json",
}
REQUIRED = ("made_by", "data", "reproduces")
GOLDEN_SCENARIOS = 2  # scenarios per named setting that reproduce_shipped regenerates (all their levels)


@dataclass(frozen=True)
class Golden:
    """Recorded rows an asset must give back: a results file, a method and (optionally) a setting label;
    `default`: the rows were made by that method's shipped default at strength 1."""

    asset: str
    file: Path
    method: str
    setting: str | None = None
    default: bool = False

    def rows(self, n_scenarios: int = GOLDEN_SCENARIOS) -> list[dict]:
        """The rows of the first n scenarios (by id) that this entry names, every level of each."""
        from .evaluation.results import read_results

        rows = [
            r
            for r in read_results(self.file)
            if r["method"] == self.method and (self.setting is None or r.get("setting") == self.setting)
        ]
        if not rows:
            raise UserError(f"{self.file}: no {self.method} rows with setting {self.setting!r} ({self.asset})")
        keep = sorted({r["scenario_id"] for r in rows})[:n_scenarios]
        return [r for r in rows if r["scenario_id"] in keep]


def record(asset: str) -> dict:
    """An asset's provenance object."""
    path = RECORDS[asset]
    try:
        prov = json.loads(path.read_text(encoding="utf-8"))["provenance"]
    except (OSError, json.JSONDecodeError, KeyError):
        raise UserError(f"{path}: no provenance record for the shipped {asset}") from None
    missing = [k for k in REQUIRED if k not in prov]
    if missing:
        raise UserError(f"{path}: the provenance record lacks {', '.join(missing)}")
    return prov


def golden_entries() -> list[Golden]:
    """Every result setting some shipped asset says it reproduces."""
    out = []
    for asset in RECORDS:
        for entry in record(asset)["reproduces"]:
            if "method" not in entry:  # a figure checked otherwise (the judge's test accuracy)
                continue
            out.append(
                Golden(asset, ROOT / entry["file"], entry["method"], entry.get("setting"), bool(entry.get("default")))
            )
    return out
