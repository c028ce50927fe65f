"""Requests declared by their fields, as CompareRequest is: each field carries a `Knob` (label, kind, bounds,
help), and the widgets, the endpoint's parameters (names, order, defaults), a link's parameters and the reading
of loosely typed values follow from it. The ladder's and the sweep's requests (LadderRequest, SweepRequest) are
declared this way; a field they share with CompareRequest carries CompareRequest's own Knob and default."""

from __future__ import annotations

import inspect
from dataclasses import MISSING, field, fields

from ..errors import UserError
from ..generation import MAX_INPUT_CHARS, check_inputs
from .compare import CompareRequest, Knob, check_bounds, read_knob

__all__ = ["MAX_INPUT_CHARS", "Declared", "knobs_of", "shared"]


def shared(name: str):
    """A field declared as CompareRequest's field `name` (its Knob and default), for a request that takes it too."""
    f = next(f for f in fields(CompareRequest) if f.name == name)
    return field(default=f.default, metadata=f.metadata)


def knobs_of(cls) -> dict[str, Knob]:
    """A declared request's Knobs by field name, in the order its endpoint takes them."""
    return {f.name: f.metadata["knob"] for f in fields(cls)}


class Declared:
    """What a request declared by Knob fields can do (a frozen keyword-only dataclass that subclasses this)."""

    @classmethod
    def api_signature(cls, shown: dict | None = None) -> inspect.Signature:
        """The endpoint's parameters: the fields in order, each with its shown default (fields without a default
        are required); `shown` replaces some."""
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
        """Build from loosely typed widget, link or API values by name (None or a missing name = the default),
        each field read as its Knob's kind says."""
        knobs = knobs_of(cls)
        unknown = set(values) - set(knobs)
        if unknown:
            raise UserError(f"unknown setting(s) {', '.join(sorted(unknown))}; the settings are {', '.join(knobs)}")
        values = {"question": "", "student_answer": "", **{k: v for k, v in values.items() if v is not None}}
        return cls(**{name: read_knob(name, knobs[name], v) for name, v in values.items()})

    def check_fields(self) -> None:
        """The question and answer, and every bounded field within its bounds (raises a UserError naming it)."""
        check_inputs(self.question, self.student_answer)
        for name, k in knobs_of(type(self)).items():
            if k.lo is not None:
                check_bounds(k, getattr(self, name))
