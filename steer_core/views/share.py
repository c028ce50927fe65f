"""Keep and share a run. Generation is greedy and seeded, so a run's inputs and settings alone give the same
replies again: a link carries them as query parameters named as the API's (`?tab=compare&question=...&level=
create`, and only the settings that differ from the default), and opening it runs the same request. A run's
JSON report also holds its replies, verdicts and charts, so opening one restores the tab without the model.
The browser keeps the last runs' reports (nothing is stored on the server); the ladder prints as a handout.
"""

from __future__ import annotations

import html
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from .. import __version__
from ..bloom import DESCRIPTIONS, normalize_level
from ..errors import UserError
from ..generation import check_inputs
from ..layer_spec import layers_label
from ..steering.model_defaults import shown_layers
from .compare import API, KNOBS, REPORT_FORMAT, CompareRequest, check_bounds, read_knob
from .ladder import LADDER_BASELINES
from .sweep import DEFAULT_STRENGTHS, parse_strengths

HISTORY_SIZE = 20
BULKY = ("figures", "attention_html")  # left out of the browser's history (about 35 KB a run): the link
# and the downloaded report have them
VIEWS = {  # a tab's link parameters, in the order its API takes them
    "compare": API,
    "ladder": ("question", "student_answer", "baseline", "strength", "max_new_tokens"),
    "sweep": ("question", "student_answer", "level", "strengths", "max_new_tokens"),
}
ALWAYS = ("question", "student_answer", "level")  # what a run is about: in every link, default or not
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def defaults(view: str, lm) -> dict:
    """A view's settings as its widgets start on this model (every head ticked, the model's default layers)."""
    sig = CompareRequest.api_signature({"layers": layers_label(shown_layers(lm))}).parameters
    out = {n: sig[n].default for n in VIEWS[view] if n in sig and sig[n].default is not inspect.Parameter.empty}
    if "heads" in out:
        out["heads"] = list(range(lm.n_heads))
    if view == "ladder":
        out["baseline"] = "none"
    if view == "sweep":
        out["strengths"] = _text(list(DEFAULT_STRENGTHS))
    return out


def _text(value) -> str:
    """A widget value as a link writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return (
            ", ".join(_text(v) for v in value) if value and isinstance(value[0], float) else ",".join(map(str, value))
        )
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def view_values(record: dict) -> dict:
    """The widget values of the run a report records, by parameter name."""
    view = record.get("view", "compare")
    have = {**record.get("inputs", {}), **record.get("settings", {})}
    rows = record.get("rows", [])
    if view == "ladder" and "baseline" not in have:
        have["baseline"] = next((r["method"] for r in rows if r["method"] in LADDER_BASELINES), "none")
    if view == "sweep" and "strengths" not in have:
        have["strengths"] = [float(r["strength"]) for r in rows]
    if isinstance(have.get("strengths"), (list, tuple)):
        have["strengths"] = _text([float(s) for s in have["strengths"]])
    return {n: have[n] for n in VIEWS[view] if have.get(n) is not None}


def link_query(record: dict, lm) -> str:
    """The query string that runs this report's request again: the view, what it is about, and every setting
    that differs from this model's default."""
    view = record.get("view", "compare")
    base = defaults(view, lm)
    values = view_values(record)
    kept = {n: v for n, v in values.items() if n in ALWAYS or n not in base or _text(v) != _text(base[n])}
    return "?" + urlencode({"tab": view, **{n: _text(v) for n, v in kept.items()}})


def read_value(name: str, raw, lm):
    """One link or report value, read and checked as the API would (a UserError says why not), as its widget
    takes it."""
    raw = raw if isinstance(raw, (list, tuple, bool, int, float)) else str(raw)
    if name == "baseline":
        if raw not in ("none", *LADDER_BASELINES):
            raise UserError(f"the baseline is one of none, {', '.join(LADDER_BASELINES)}")
        return raw
    if name == "strengths":
        return _text(list(parse_strengths(raw)))
    k = KNOBS[name]
    if k.kind == "text":
        check_inputs(raw, "-") if name == "question" else check_inputs("-", raw)
        return raw
    if k.kind == "level":
        return normalize_level(raw)
    if k.kind == "flag":
        if isinstance(raw, bool) or str(raw).lower() in TRUE + FALSE:
            return raw if isinstance(raw, bool) else str(raw).lower() in TRUE
        raise UserError(f"{k.label} is true or false")
    if k.kind == "choice":
        allowed = [v for _, v in k.choices]
        if raw not in allowed:
            raise UserError(f"{k.label} is one of {', '.join(map(str, allowed))}")
        return raw
    value = read_knob(name, k, raw)
    if k.kind == "layers":
        return layers_label([lm.check_layer(layer) for layer in value])
    if k.kind == "heads":
        if value is None:
            return list(range(lm.n_heads))
        if not value:
            raise UserError("choose at least one head")
        return lm.check_heads(list(value))
    if k.lo is not None:
        check_bounds(k, value)
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
            opened.values[name] = read_value(name, raw, lm)
        except UserError as exc:
            was = f" ({_text(base[name])})" if name in base else ""
            opened.notes.append(f"`{name}={_short(raw)}` left at its default{was}: {exc}")
    knobs = {n: v for n, v in opened.values.items() if n in KNOBS}
    try:
        placeholders = {
            "question": "-",
            "student_answer": "-",
            "level": "apply",
            "layers": layers_label(shown_layers(lm)),
        }
        CompareRequest.from_ui(**placeholders | knobs).check_against(lm)
    except UserError as exc:
        opened.notes.append(f"these settings together are refused ({exc}); all left at their defaults")
        opened.values = {n: v for n, v in opened.values.items() if KNOBS.get(n) and KNOBS[n].kind in ("text", "level")}
    return opened


def _short(raw) -> str:
    text = str(raw)
    return text if len(text) <= 40 else text[:37] + "..."


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


def read_report(source, lm) -> SavedRun:
    """A report file (path, bytes or the parsed dict) the app wrote, checked against the loaded model."""
    try:
        if isinstance(source, dict):
            record = source
        else:
            text = source.decode() if isinstance(source, bytes) else Path(source).read_text(encoding="utf-8")
            record = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"this is not a report of this demo (not readable JSON: {exc})") from None
    if not isinstance(record, dict) or "inputs" not in record or not ("outputs" in record or "rows" in record):
        raise UserError("this is not a report of this demo: it has no inputs and replies")
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


def history_entry(record: dict, query: str) -> dict:
    """One line of the browser's history: when, which view, which level, the question's first words, and the
    report itself, so that a click restores it."""
    question = record["inputs"]["question"]
    words = " ".join(question.split()[:8]) + (" ..." if len(question.split()) > 8 else "")
    return {
        "time": record.get("created", ""),
        "view": record.get("view", "compare"),
        "level": record["inputs"].get("level") or "every level",
        "question": words,
        "query": query,
        "report": {k: v for k, v in record.items() if k not in BULKY},
    }


def add_to_history(history, entry: dict) -> list[dict]:
    """The newest run first, the same run (the same link) once, at most HISTORY_SIZE."""
    history = [h for h in (history or []) if isinstance(h, dict) and h.get("query") != entry["query"]]
    return [entry, *history][:HISTORY_SIZE]


def history_rows(history) -> list[list[str]]:
    return [[h["time"][:16].replace("T", " "), h["view"], h["level"], h["question"]] for h in history or []]


def handout_html(record: dict, link: str = "") -> str:
    """The level ladder as one printable page: the question, the student's answer, the unsteered reply for
    reference, then one row a level with the reply and the level the judge read, with its probability."""
    if record.get("view") != "ladder":
        raise UserError("a handout is made from a level ladder's report")
    esc = html.escape
    rows = record["rows"]
    plain = next((r for r in rows if r["method"] == "none"), None)
    steered = [r for r in rows if r["method"] == "sae"]
    body = []
    for r in steered:
        judged = r.get("judged") or "-"
        prob = r.get("level_prob")
        verdict = f"read as <b>{esc(judged)}</b>" + ("" if prob in ("", None) else f"; P({esc(r['level'])}) {prob:.2f}")
        hit = " hit" if judged == r["level"] else ""
        body.append(
            f'<tr class="level{hit}"><th><span>{esc(r["level"].capitalize())}</span>'
            f"<small>{esc(DESCRIPTIONS.get(r['level'], ''))}</small></th>"
            f'<td class="reply">{esc(r["text"])}</td><td class="judge">{verdict}</td></tr>'
        )
    s = record.get("settings", {})
    hits = sum(r.get("judged") == r["level"] for r in steered)
    ref = (
        ""
        if plain is None
        else f'<tr class="ref"><th><span>Unsteered</span><small>for reference</small></th>'
        f'<td class="reply">{esc(plain["text"])}</td><td class="judge">read as <b>{esc(plain.get("judged") or "-")}'
        "</b></td></tr>"
    )
    link_line = f' To run it again: <a href="{esc(link)}">{esc(link)}</a>.' if link else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Feedback at every Bloom level</title>
<style>
@page {{ size: A4; margin: 14mm; }}
body {{ font: 10.5pt/1.4 Georgia, 'Times New Roman', serif; color: #111; max-width: 190mm; margin: 0 auto; }}
h1 {{ font-size: 16pt; margin: 0 0 4mm; }}
.task {{ border: 1px solid #999; padding: 3mm 4mm; margin-bottom: 4mm; }}
.task p {{ margin: 1mm 0; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-top: 1px solid #bbb; padding: 2.2mm 2mm; vertical-align: top; text-align: left; }}
th {{ width: 30mm; }} th span {{ display: block; font-size: 11pt; }}
th small {{ display: block; font-weight: normal; color: #555; font-size: 8pt; }}
td.judge {{ width: 34mm; font-size: 9pt; color: #333; }}
tr {{ page-break-inside: avoid; }} tr.ref td, tr.ref th {{ background: #f2f2f2; }}
tr.hit td.judge b {{ color: #1a6b1a; }}
footer {{ margin-top: 4mm; font-size: 8pt; color: #555; }}
@media print {{ a {{ color: #111; text-decoration: none; }} }}
</style></head><body>
<h1>The same feedback at every Bloom level</h1>
<div class="task"><p><b>Question.</b> {esc(record["inputs"]["question"])}</p>
<p><b>Student's answer.</b> {esc(record["inputs"]["student_answer"])}</p></div>
<table>{ref}{"".join(body)}</table>
<footer>Written by {esc(str(record.get("model", "")))}, steered in its sparse query features toward each level
(strength {esc(str(s.get("strength", "")))}, layers {esc(str(s.get("layers", "")))}); the judge, a classifier,
reads {hits} of {len(steered)} replies at the level asked for. {esc(record.get("created", ""))}.{link_line}</footer>
</body></html>
"""
