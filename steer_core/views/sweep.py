"""The strength sweep: one level at up to six strengths, in one batch: how far steering can push before the
feedback stops making sense (the level's probability and the perplexity against strength)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from ..errors import UserError
from .compare import MAX_STRENGTH, CompareRequest
from .rows import Row, ViewResult, view_stream

MAX_SWEEP = 6
DEFAULT_STRENGTHS = (0.0, 0.5, 1.0, 2.0, 3.0)


def parse_strengths(spec) -> tuple[float, ...]:
    """'0, 0.5, 1, 2, 3' (or a list of numbers) -> sorted distinct strengths, at most MAX_SWEEP."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).replace(";", ",").split(",")
    try:
        values = sorted({float(s) for s in items if str(s).strip()})
    except ValueError:
        raise UserError(f"strengths must be numbers separated by commas, e.g. 0, 0.5, 1, 2; got {spec!r}") from None
    if not values:
        raise UserError("give at least one strength")
    if len(values) > MAX_SWEEP:
        raise UserError(f"at most {MAX_SWEEP} strengths at once, got {len(values)}")
    bad = [v for v in values if not (math.isfinite(v) and 0 <= v <= MAX_STRENGTH)]
    if bad:
        raise UserError(f"strengths must be from 0 to {MAX_STRENGTH:g}, got {bad[0]!r}")
    return tuple(values)


def sweep_rows(level: str, strengths: Sequence[float]) -> list[Row]:
    return [Row(f"strength {s:g}", "sae", level, float(s)) for s in strengths]


def sweep_stream(lm, req: CompareRequest, strengths, judge=None) -> Iterator[ViewResult]:
    return view_stream(lm, req, sweep_rows(req.level, parse_strengths(strengths)), "sweep", judge)
