"""A run's JSON report, opened again. A report holds the run's replies, verdicts and charts as well as its
inputs and settings, so opening one restores the tab without the model; one from another model or another
version of the report format is filled in to run again instead. The format is compare.REPORT_FORMAT."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import UserError
from .compare import KNOBS, REPORT_FORMAT, CompareRequest
from .links import VIEWS, Opened, read_values, view_values

__all__ = ["REPORT_FORMAT", "SavedRun", "read_report", "restore"]


@dataclass
class SavedRun:
    """A report opened: its view, the values it was run with, and how it differs from what this server would
    run now (another model, an older version); differences mean "run it again" rather than "restore"."""

    record: dict
    opened: Opened
    differences: list[str]

    @property
    def view(self) -> str:
        return self.opened.view

    @property
    def restorable(self) -> bool:
        return not self.differences and not self.opened.notes

    def message(self) -> str:
        made = self.record.get("created", "an unknown date")
        if self.restorable:
            return f"Restored the {self.view} run of {made} from its report: nothing was generated."
        why = "".join(f"\n- {d}" for d in self.differences + self.opened.notes)
        return (
            f"**This report's {self.view} run cannot be restored as it was:**{why}\n\n"
            f"Its question and settings are filled in; press **Run again** to generate it with this server."
        )


def _parse(source) -> dict:
    try:
        if isinstance(source, dict):
            record = source
        else:
            raw = source.decode() if isinstance(source, bytes) else Path(source).read_text(encoding="utf-8")
            record = json.loads(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"this is not a report of this demo (not readable JSON: {exc})") from None
    if not isinstance(record, dict) or "inputs" not in record or not ("outputs" in record or "rows" in record):
        raise UserError("this is not a report of this demo: it has no inputs and replies")
    return record


def read_report(source, lm) -> SavedRun:
    """A report file (path, bytes or the parsed dict) the app wrote, checked against the loaded model."""
    record = _parse(source)
    view = record.setdefault("view", "compare")
    if view not in VIEWS:
        raise UserError(f"this report is of a view this version does not restore ({view!r})")
    differences = []
    if record.get("model") != lm.label:
        differences.append(f"it was made with `{record.get('model')}`; this server runs `{lm.label}`")
    made_by = record.get("format", 1)
    if made_by != REPORT_FORMAT:
        differences.append(
            f"it was written by another version of the demo (report format {made_by}, version "
            f"{record.get('version', 'unknown')}; this one writes format {REPORT_FORMAT}, version {__version__})"
        )
    opened = read_values(view, view_values(record), lm)
    if not differences and not opened.notes and view != "ladder":  # strength means what it meant then
        req = CompareRequest.from_ui(**{n: v for n, v in opened.values.items() if n in KNOBS})
        then, now = record.get("settings", {}).get("alpha"), req.steer("sae").alpha
        if then is not None and abs(float(then) - now) > 1e-9:
            differences.append(f"strength {req.strength:g} meant alpha {then:g} then and means alpha {now:g} now")
    return SavedRun(record, opened, differences)


def restore(saved: SavedRun):
    """The run a restorable report holds, as the live run's result object (CompareResult or ViewResult), so the
    app shows it the same way; nothing is generated or judged."""
    from .compare import CompareResult
    from .rows import ViewResult

    if not saved.restorable:
        raise UserError(saved.message())
    knobs = {n: v for n, v in saved.opened.values.items() if n in KNOBS}
    if saved.view == "compare":
        return CompareResult.from_record(saved.record, CompareRequest.from_ui(**knobs))
    layers = saved.record.get("settings", {}).get("layers")
    req = CompareRequest.from_ui(**{"level": None, **knobs, **({"layers": layers} if layers else {})})
    return ViewResult.from_record(saved.record, req)
