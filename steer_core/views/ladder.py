"""The level ladder: one question answered at every Bloom level (plus the unsteered reply, and on request
the same for a baseline method), in one batch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .. import methods
from ..bloom import LEVELS
from ..errors import UserError
from .compare import CompareRequest, knob
from .requests import Declared, shared
from .rows import Row, ViewResult, view_stream

# the baselines a ladder can show beside the SAE rows: the Compare columns' baselines (read from the registry)
LADDER_BASELINES = tuple(n for n, m in methods.REGISTRY.items() if (m.compare or m.column) and m.role == "baseline")


def _check_baseline(baseline: str | None) -> None:
    if baseline not in (None, "", "none", *LADDER_BASELINES):
        raise UserError(f"baseline must be one of none, {', '.join(LADDER_BASELINES)}; got {baseline!r}")


@dataclass(frozen=True, kw_only=True)
class LadderRequest(Declared):
    """The ladder's request, declared as CompareRequest's is: its widgets, the /ladder parameters and a ladder
    link's parameters follow from these fields; the shared ones carry CompareRequest's Knob."""

    question: str = shared("question")
    student_answer: str = shared("student_answer")
    baseline: str = knob(
        "none", label="Also show a baseline method at every level", kind="choice",
        choices=(("none", "none"), *((methods.REGISTRY[b].label, b) for b in LADDER_BASELINES)),
    )  # fmt: skip
    strength: float = shared("strength")
    max_new_tokens: int = shared("max_new_tokens")

    def __post_init__(self):
        self.check_fields()
        _check_baseline(self.baseline)

    def compare_request(self, layers=None, **settings) -> CompareRequest:
        """The comparison's request ladder_stream takes: no single level, these knobs, `layers` (None: the
        default) steered, and any other CompareRequest settings given."""
        values = {"question": self.question, "student_answer": self.student_answer, "level": None}
        values |= {"strength": self.strength, "max_new_tokens": self.max_new_tokens, "layers": layers}
        return CompareRequest.from_ui(**values, **settings)


def ladder_rows(baseline: str | None = None) -> list[Row]:
    """Unsteered, then SAE steering toward each level, then (optionally) the baseline toward each."""
    _check_baseline(baseline)
    rows = [Row("unsteered", "none", "-")] + [Row(lv, "sae", lv) for lv in LEVELS]
    if baseline and baseline != "none":
        rows += [Row(f"{methods.REGISTRY[baseline].label}: {lv}", baseline, lv) for lv in LEVELS]
    return rows


def ladder_stream(lm, req: CompareRequest, baseline: str | None = None, judge=None) -> Iterator[ViewResult]:
    return view_stream(lm, req, ladder_rows(baseline), "ladder", judge)
