"""Requests declared by their fields: each field carries a `Knob` (steering.knobs: label, kind, bounds, help),
and the widgets, the endpoint's parameters (names, order, defaults), a link's parameters, the reading of loosely
typed values and the bounds checks follow from it. CompareRequest, LadderRequest and SweepRequest are declared
this way; a field one shares with another carries the other's own Knob and default (steering.knobs.same_knob)."""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields

from ..errors import UserError
from ..generation import MAX_INPUT_CHARS, check_inputs
from ..steering.knobs import check, knobs_of, read_knob

__all__ = ["MAX_INPUT_CHARS", "Declared", "knobs_of"]


class Declared:
    """What a request declared by Knob fields can do (a frozen keyword-only dataclass that subclasses this)."""

    @classmethod
    def api_signature(cls, shown: dict | None = None) -> inspect.Signature:
        """The endpoint's parameters: the fields in order, each with its shown default (fields without a default
        are required); `shown` replaces some (a loaded model's own layers)."""
        params = []
        for f in fields(cls):
            k = f.metadata["knob"]
            default = (
                inspect.Parameter.empty if f.default is MISSING else (k.shown if k.shown is not None else f.default)
            )
            default = (shown or {}).get(f.name, default)
            params.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
        return inspect.Signature(params)

    @classmethod
    def from_ui(cls, **values):
        """Build from loosely typed widget, link or API values by name (None or a missing name = the default; for
        a field without a default None is a value, e.g. the ladder's level), each read as its Knob's kind says."""
        knobs = knobs_of(cls)
        unknown = set(values) - set(knobs)
        if unknown:
            raise UserError(f"unknown setting(s) {', '.join(sorted(unknown))}; the settings are {', '.join(knobs)}")
        required = {f.name for f in fields(cls) if f.default is MISSING}
        values = {
            "question": "",
            "student_answer": "",
            **{k: v for k, v in values.items() if v is not None or k in required},
        }
        return cls(**{name: v if v is None else read_knob(name, knobs[name], v) for name, v in values.items()})

    def check_fields(self) -> None:
        """The question and answer, and every number within what its widget shows (a slider's top): raises a
        UserError naming the setting."""
        check_inputs(self.question, self.student_answer)
        for name, k in knobs_of(type(self)).items():
            if k.kind in ("slider", "integer"):
                check(k, getattr(self, name), hi=k.shown_hi)
