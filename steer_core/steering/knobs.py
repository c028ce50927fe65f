"""A knob: one setting a user can turn, declared once as a dataclass field that carries its label, kind, bounds,
help and default. SteerConfig declares the steering knobs; the Compare, ladder and sweep requests reuse them
and add their own; the UI's widgets, the API's parameters, the CLI's flags and their help, the link reader and
the report all read these declarations, and `check` and `read` are the one validation and the one reader of
loosely typed values (a widget's, an API caller's, a link's)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields

from ..errors import UserError
from ..layer_spec import parse_heads, parse_latents, read_layers

KINDS = ("text", "level", "layers", "heads", "latents", "slider", "integer", "choice", "flag")


@dataclass(frozen=True)
class Knob:
    """How one setting is shown, read and bounded."""

    label: str
    kind: str  # one of KINDS: the widget it is and how a loose value is read
    help: str = ""
    lo: float | None = None  # the hard bounds every caller is held to (None: unbounded on that side)
    hi: float | None = None
    top: float | None = None  # a slider's top, when the widget shows less than the hard bounds allow
    step: float | None = None
    whole: bool = False  # a whole number
    choices: tuple | Callable[[], tuple] = ()  # (label, value) pairs of a "choice" knob, or a function of none
    shown: object = None  # what the widget and the API show for the default, when that is not the value itself
    advanced: bool = False  # the UI puts it under "Advanced"
    optional: bool = False  # None is a value (e.g. first tokens: None = every token)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"knob {self.label!r}: kind must be one of {', '.join(KINDS)}")

    @property
    def options(self) -> tuple:
        """The (label, value) pairs of a choice, read now (a registry may have grown)."""
        return self.choices() if callable(self.choices) else self.choices

    @property
    def values(self) -> tuple:
        return tuple(v for _, v in self.options)

    @property
    def shown_hi(self) -> float | None:
        """The widget's top: `top` where given, else the hard bound."""
        return self.hi if self.top is None else self.top


def knob(default=MISSING, **kw) -> Field:
    """A dataclass field with its Knob."""
    return field(default=default, metadata={"knob": Knob(**kw)})


def same_knob(owner, name: str, default=MISSING) -> Field:
    """A field that is another dataclass's knob (its declaration and, unless given, its default), so a request
    that shows a steering knob does not declare it again."""
    f = next(f for f in fields(owner) if f.name == name)
    return field(default=f.default if default is MISSING else default, metadata=dict(f.metadata))


def knobs_of(cls) -> dict:
    """name -> Knob of every field of `cls` that carries one, in field order."""
    return {f.name: f.metadata["knob"] for f in fields(cls) if "knob" in f.metadata}


def check_bounds(k: Knob, v, hi: float | None = None) -> None:
    """A number within the knob's bounds (hi: a tighter top, such as the widget's)."""
    hi = k.hi if hi is None else hi
    what = "a whole number" if k.whole or k.kind == "integer" else "a number"
    not_a_number = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
    if not_a_number or ((k.whole or k.kind == "integer") and not isinstance(v, int)):
        raise UserError(f"{k.label} must be {what}{_range(k.lo, hi)}, got {v!r}")
    if (k.lo is not None and v < k.lo) or (hi is not None and v > hi):
        raise UserError(f"{k.label} must be{_range(k.lo, hi) or ' a number'}, got {v!r}")


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" from {lo:g} to {hi:g}"
    if lo is not None:
        return f" >= {lo:g}"
    return "" if hi is None else f" <= {hi:g}"


def check(k: Knob, v, hi: float | None = None) -> None:
    """The one validation of a knob's typed value: bounds of numbers, membership of choices."""
    if v is None and k.optional:
        return
    if k.kind in ("slider", "integer"):
        check_bounds(k, v, hi)
    elif k.kind == "choice" and v not in k.values:
        raise UserError(f"{k.label} must be one of {', '.join(map(str, k.values))}, got {v!r}")


def read_knob(name: str, k: Knob, value):
    """A widget's, API caller's or link's value as the field's type."""
    if k.kind == "layers":
        if isinstance(value, (list, tuple)):
            return tuple(value)
        return read_layers(value)
    if k.kind == "heads":
        heads, pairs = parse_heads(value)  # an empty selection stays empty and is refused by the request
        if pairs is not None:
            raise UserError("the comparison steers the same heads in every layer: give head numbers, e.g. 0,3,5")
        return heads
    if k.kind == "latents":
        return parse_latents(value)
    if k.kind in ("slider", "integer"):
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{k.label} must be a number, got {value!r}") from None
        if k.whole or k.kind == "integer":
            if not math.isfinite(v) or v != int(v):
                raise UserError(f"{k.label} must be a whole number, got {value!r}")
            return int(v)
        return v
    if k.kind == "flag":
        return bool(value)
    return str(value) if k.kind in ("choice", "level") else value
