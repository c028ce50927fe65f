"""The level ladder: one question answered at every Bloom level (plus the unsteered reply, and on request
the same for a baseline method), in one batch."""

from __future__ import annotations

from collections.abc import Iterator

from .. import methods
from ..bloom import LEVELS
from ..errors import UserError
from .compare import CompareRequest
from .rows import Row, ViewResult, view_stream

LADDER_BASELINES = methods.BASELINES


def ladder_rows(baseline: str | None = None) -> list[Row]:
    """Unsteered, then SAE steering toward each level, then (optionally) the baseline toward each."""
    if baseline not in (None, "", "none", *LADDER_BASELINES):
        raise UserError(f"baseline must be one of none, {', '.join(LADDER_BASELINES)}; got {baseline!r}")
    rows = [Row("unsteered", "none", "-")] + [Row(lv, "sae", lv) for lv in LEVELS]
    if baseline and baseline != "none":
        rows += [Row(f"{methods.LABELS[baseline]}: {lv}", baseline, lv) for lv in LEVELS]
    return rows


def ladder_stream(lm, req: CompareRequest, baseline: str | None = None, judge=None) -> Iterator[ViewResult]:
    return view_stream(lm, req, ladder_rows(baseline), "ladder", judge)
