"""A link to a run. Generation is greedy and seeded, so a run's inputs and settings alone give the same replies
again: a link carries them as query parameters named as the API's (`?tab=compare&question=...&level=create`,
and only the settings that differ from the default), and opening it runs the same request. Each view's link
parameters are its request's fields (CompareRequest, LadderRequest, SweepRequest), in the order its API takes
them; a value is read and checked as that field's Knob says."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from urllib.parse import urlencode

from .. import methods
from ..bloom import normalize_level
from ..errors import UserError
from ..generation import check_inputs
from ..layer_spec import latents_text, layers_label, parse_latents
from ..steering.knobs import knobs_of, read_knob
from ..steering.model_defaults import shown_layers
from .compare import KNOBS, CompareRequest
from .ladder import LadderRequest
from .sweep import SweepRequest, strengths_text

REQUESTS = {"compare": CompareRequest, "ladder": LadderRequest, "sweep": SweepRequest}  # a view's request
VIEWS = {view: tuple(knobs_of(cls)) for view, cls in REQUESTS.items()}  # its link parameters, in API order
ALWAYS = ("question", "student_answer", "level")  # what a run is about: in every link, default or not
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
PLACEHOLDERS = {"question": "-", "student_answer": "-", "level": "apply"}  # a request's required values, to check
# one other value on its own


def defaults(view: str, lm) -> dict:
    """A view's settings as its widgets start on this model (every head ticked, the model's default layers)."""
    sig = REQUESTS[view].api_signature({"layers": layers_label(shown_layers(lm))}).parameters
    out = {n: p.default for n, p in sig.items() if n in sig and p.default is not inspect.Parameter.empty}
    if "heads" in out:
        out["heads"] = list(range(lm.n_heads))
    return out


def text(value) -> str:
    """A widget value as a link writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return strengths_text(value) if value and isinstance(value[0], float) else ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def view_values(record: dict) -> dict:
    """The widget values of the run a report records, by parameter name."""
    view = record.get("view", "compare")
    have = {**record.get("inputs", {}), **record.get("settings", {})}
    rows = record.get("rows", [])
    if view == "ladder" and "baseline" not in have:
        have["baseline"] = next((r["method"] for r in rows if r["method"] in methods.baselines()), "none")
    if view == "sweep" and "strengths" not in have:
        have["strengths"] = [float(r["strength"]) for r in rows]
    if isinstance(have.get("strengths"), (list, tuple)):
        have["strengths"] = strengths_text([float(s) for s in have["strengths"]])
    if isinstance(have.get("latents"), (list, tuple)):  # a report keeps them as lists; a link writes them as typed
        have["latents"] = latents_text(parse_latents(have["latents"]))
    return {n: have[n] for n in VIEWS[view] if have.get(n) is not None}


def link_query(record: dict, lm) -> str:
    """The query string that runs this report's request again: the view, what it is about, and every setting
    that differs from this model's default."""
    view = record.get("view", "compare")
    base = defaults(view, lm)
    values = view_values(record)
    kept = {n: v for n, v in values.items() if n in ALWAYS or n not in base or text(v) != text(base[n])}
    return "?" + urlencode({"tab": view, **{n: text(v) for n, v in kept.items()}})


def read_value(name: str, raw, lm, view: str = "compare"):
    """One link or report value, read and checked as the API would (a UserError says why not), as its widget
    takes it. A field only the ladder or the sweep has is read by building its request with it."""
    raw = raw if isinstance(raw, (list, tuple, bool, int, float)) else str(raw)
    if name not in KNOBS:
        cls = REQUESTS[view]
        given = {n: v for n, v in PLACEHOLDERS.items() if n in VIEWS[view]} | {name: raw}
        return getattr(cls.from_ui(**given), name)
    k = KNOBS[name]
    if k.kind == "text":
        check_inputs(raw, "-") if name == "question" else check_inputs("-", raw)
        return raw
    if k.kind == "level":
        return normalize_level(raw)
    if k.kind == "flag":  # a link writes true/false; read_knob would take any word as true
        if isinstance(raw, bool) or str(raw).lower() in TRUE + FALSE:
            return raw if isinstance(raw, bool) else str(raw).lower() in TRUE
        raise UserError(f"{k.label} is true or false")
    if k.kind == "choice":
        allowed = k.values  # a registry's choices, read now
        if raw not in allowed:
            raise UserError(f"{k.label} is one of {', '.join(map(str, allowed))}")
        return raw
    value = read_knob(name, k, raw)
    if k.kind == "latents":  # the layers and heads must exist; a latent past the SAEs' width is refused at the run
        for layer, head, _, _ in value or ():
            lm.check_layer(layer)
            lm.check_heads([head])
        return latents_text(value)
    if k.kind == "layers":
        return layers_label([lm.check_layer(layer) for layer in value])
    if k.kind == "heads":
        if value is None:
            return list(range(lm.n_heads))
        if not value:
            raise UserError("choose at least one head")
        return lm.check_heads(list(value))
    if k.lo is not None:  # within the request's own bounds (what its widget shows)
        CompareRequest.from_ui(**PLACEHOLDERS, **{name: value})
    return value


@dataclass
class Opened:
    """What a link (or a report) asks for: the view, the widget values that read, and a note for each value
    that did not (left at its default), so the page can say which and why."""

    view: str | None
    values: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        """Run it at once: only when every value read (a refused value is never replaced silently)."""
        return self.view is not None and not self.notes

    def message(self) -> str:
        if self.view is None and not self.notes:
            return ""
        head = (
            f"Opened a link to a {self.view} run."
            if self.view
            else "This link does not name a view to open (tab=compare, tab=ladder or tab=sweep)."
        )
        if not self.notes:
            return head + " Running it..."
        items = "".join(f"\n- {n}" for n in self.notes)
        tail = f" Press the {self.view} button to run it with these values." if self.view else ""
        return f"**{head}** Some values were left as they were:{items}\n\n{tail}"


def read_values(view: str, given: dict, lm) -> Opened:
    """Read each value on its own, then the whole request once more (a combination can be refused too)."""
    opened = Opened(view)
    base = defaults(view, lm)
    for name, raw in given.items():
        if name not in VIEWS[view]:
            opened.notes.append(f"`{name}` is not a setting of the {view} (it takes {', '.join(VIEWS[view])}): ignored")
            continue
        try:
            opened.values[name] = read_value(name, raw, lm, view)
        except UserError as exc:
            was = f" ({text(base[name])})" if name in base else ""
            opened.notes.append(f"`{name}={_short(raw)}` left at its default{was}: {exc}")
    knobs = {n: v for n, v in opened.values.items() if n in KNOBS}
    try:
        CompareRequest.from_ui(**PLACEHOLDERS | {"layers": layers_label(shown_layers(lm))} | knobs).check_against(lm)
    except UserError as exc:
        opened.notes.append(f"these settings together are refused ({exc}); all left at their defaults")
        opened.values = {n: v for n, v in opened.values.items() if KNOBS.get(n) and KNOBS[n].kind in ("text", "level")}
    return opened


def _short(raw) -> str:
    value = str(raw)
    return value if len(value) <= 40 else value[:37] + "..."


def read_link(params: dict, lm) -> Opened:
    """A page's query parameters. No `tab` and no known parameter: a plain visit (nothing to open)."""
    params = {k: v for k, v in params.items() if not k.startswith("_") and k != "view"}  # Gradio's own
    view = params.pop("tab", None)
    if view is None:
        if not set(params) & set(VIEWS["compare"]):
            return Opened(None)
        view = "compare"
    if view not in VIEWS:
        return Opened(None, notes=[f"`tab={_short(view)}` is not a view of this demo (compare, ladder or sweep)"])
    return read_values(view, params, lm)
