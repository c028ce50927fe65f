"""The level ladder: one question answered at every Bloom level (plus the unsteered reply, and on request
the same for a baseline method), in one batch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .. import methods
from ..bloom import LEVELS
from ..errors import UserError
from ..steering.knobs import knob, same_knob
from .compare import CompareRequest
from .requests import Declared
from .rows import Row, ViewResult, view_stream


def _check_baseline(baseline: str | None, prompt: str = methods.PLAIN) -> None:
    """A baseline the ladder can show beside the SAE rows: a Compare column's baseline (methods.baselines). It
    shows one row of them: on top of a prompt, that row is the prompt alone."""
    offered = methods.baselines()
    if baseline not in (None, "", "none", *offered):
        raise UserError(f"baseline must be one of none, {', '.join(offered)}; got {baseline!r}")
    if prompt != methods.PLAIN and baseline not in (None, "", "none", prompt):
        raise UserError(
            f"on top of the {prompt} prompt the ladder's second row is that prompt alone (the SAE rows' strength 0); "
            f"choose baseline none or {prompt}, or the plain prompt to see {baseline}"
        )


def _baseline_choices() -> tuple:
    return (("none", "none"), *((methods.label(b), b) for b in methods.baselines()))


@dataclass(frozen=True, kw_only=True)
class LadderRequest(Declared):
    """The ladder's request, declared as CompareRequest's is: its widgets, the /ladder parameters and a ladder
    link's parameters follow from these fields; the shared ones carry CompareRequest's Knob."""

    question: str = same_knob(CompareRequest, "question")
    student_answer: str = same_knob(CompareRequest, "student_answer")
    baseline: str = knob(
        "none", label="Also show a baseline method at every level", kind="choice",
        choices=_baseline_choices,
    )  # fmt: skip
    strength: float = same_knob(CompareRequest, "strength")
    max_new_tokens: int = same_knob(CompareRequest, "max_new_tokens")
    prompt: str = same_knob(CompareRequest, "prompt")

    def __post_init__(self):
        self.check_fields()
        _check_baseline(self.baseline, self.prompt)

    def compare_request(self, layers=None, **settings) -> CompareRequest:
        """The comparison's request ladder_stream takes: no single level, these knobs, `layers` (None: the
        default) steered, and any other CompareRequest settings given."""
        values = {"question": self.question, "student_answer": self.student_answer, "level": None}
        values |= {"strength": self.strength, "max_new_tokens": self.max_new_tokens, "layers": layers}
        return CompareRequest.from_ui(**values, **{"prompt": self.prompt} | settings)


def ladder_rows(baseline: str | None = None, prompt: str = methods.PLAIN) -> list[Row]:
    """Unsteered, then SAE steering toward each level (on top of `prompt`: then the prompt alone toward each,
    the SAE rows' strength 0), then (optionally) the baseline toward each."""
    _check_baseline(baseline, prompt)
    on_top = "" if prompt == methods.PLAIN else f"{methods.label(prompt)} + SAE: "
    rows = [Row("unsteered", "none", "-")] + [Row(on_top + lv, "sae", lv) for lv in LEVELS]
    second = prompt if prompt != methods.PLAIN else baseline
    if second and second != "none":
        rows += [Row(f"{methods.label(second)}: {lv}", second, lv) for lv in LEVELS]
    return rows


def ladder_stream(
    lm, req: CompareRequest, baseline: str | None = None, judge=None, ignore_stop: bool = False, reuse: bool = True
) -> Iterator[ViewResult]:
    return view_stream(lm, req, ladder_rows(baseline, req.prompt), "ladder", judge, ignore_stop, reuse)
