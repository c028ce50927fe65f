"""The strength sweep: one level at up to six strengths, in one batch: how far steering can push before the
feedback stops making sense (the level's probability and the perplexity against strength)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..bloom import normalize_level
from ..errors import UserError
from ..steering.knobs import knob, same_knob
from .compare import MAX_STRENGTH, STEER, CompareRequest
from .requests import Declared
from .rows import Row, ViewResult, view_stream

MAX_SWEEP = 6
DEFAULT_STRENGTHS = (0.0, 0.5, 1.0, 2.0, 3.0)


def strengths_text(values: Sequence[float]) -> str:
    """Strengths as the sweep's box and a link write them: '0, 0.5, 1'."""
    return ", ".join(f"{float(s):g}" for s in values)


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


@dataclass(frozen=True, kw_only=True)
class SweepRequest(Declared):
    """The sweep's request, declared as CompareRequest's is: its widgets, the /sweep parameters and a sweep
    link's parameters follow from these fields; the shared ones carry CompareRequest's Knob."""

    question: str = same_knob(CompareRequest, "question")
    student_answer: str = same_knob(CompareRequest, "student_answer")
    level: str = same_knob(CompareRequest, "level")
    strengths: str = knob(
        strengths_text(DEFAULT_STRENGTHS), kind="text",
        label=f"Strengths (up to {MAX_SWEEP}, from 0 to {MAX_STRENGTH:g}; 1 = the default)",
    )  # fmt: skip
    max_new_tokens: int = same_knob(CompareRequest, "max_new_tokens")
    prompt: str = same_knob(CompareRequest, "prompt")

    def __post_init__(self):
        self.check_fields()
        object.__setattr__(self, "level", normalize_level(self.level))
        object.__setattr__(self, "strengths", strengths_text(parse_strengths(self.strengths)))

    def compare_request(self, layers=None, **settings) -> CompareRequest:
        """The comparison's request sweep_stream takes (at the validated strength; each row sets its own),
        `layers` (None: the default) steered, and
        any other CompareRequest settings given."""
        values = {"question": self.question, "student_answer": self.student_answer, "level": self.level}
        values |= {"strength": STEER.strength, "max_new_tokens": self.max_new_tokens, "layers": layers}
        return CompareRequest.from_ui(**values, **{"prompt": self.prompt} | settings)


def sweep_rows(level: str, strengths: Sequence[float]) -> list[Row]:
    return [Row(f"strength {s:g}", "sae", level, float(s)) for s in strengths]


def sweep_stream(lm, req: CompareRequest, strengths, judge=None) -> Iterator[ViewResult]:
    return view_stream(lm, req, sweep_rows(req.level, parse_strengths(strengths)), "sweep", judge)
