"""Widgets. Each Knob kind has one widget factory (WIDGETS), so a request field's widget follows from its Knob
(label, kind, bounds, help) and its default; the small pieces every tab shares (reply columns, captioned
charts, downloads, the link box) are here too."""

from __future__ import annotations

import tempfile

import gradio as gr

from steer_core.bloom import DESCRIPTIONS, LEVELS, load_dataset, scenarios
from steer_core.layer_spec import latents_text, layers_label
from steer_core.paths import DEFAULT_MODEL
from steer_core.steering.model_defaults import default_layers, shown_layers
from steer_core.views.requests import MAX_INPUT_CHARS, knobs_of

LEVEL_CHOICES = [(f"{lv.capitalize()}: {DESCRIPTIONS[lv]}", lv) for lv in LEVELS]
STARTING_TEXT = {  # what the question and answer boxes start with
    "question": "Why do we see phases of the Moon?",
    "student_answer": "Because the Earth's shadow covers part of the Moon.",
}


def _named(cls):
    """A component factory whose validation errors name the setting, so an API caller knows which
    value is wrong ("Max new tokens: Value 0 is less than minimum value 1."). Wraps the instance's
    preprocess: a subclass would make Gradio write a .pyi stub next to this file."""

    def make(*args, **kwargs):
        component = cls(*args, **kwargs)
        inner = component.preprocess

        def preprocess(payload):
            try:
                return inner(payload)
            except gr.Error as exc:
                raise gr.Error(f"{component.label}: {exc.message}", title="Please check the input") from None

        component.preprocess = preprocess
        return component

    return make


Slider, Number, Radio, CheckboxGroup, Dropdown = map(
    _named, (gr.Slider, gr.Number, gr.Radio, gr.CheckboxGroup, gr.Dropdown)
)


def model_layers(model) -> str:
    """The layers steered by default on the loaded model: those its prepared offsets cover (every layer of the
    default model, the validated setting); an unprepared model's middle layer, for targets that need no offsets."""
    return layers_label(shown_layers(model))


def layer_choices(model) -> list[tuple[str, str]]:
    every, band = f"0-{model.n_layers - 1}", model_layers(model)
    why = "the validated default" if model.name == DEFAULT_MODEL else "the prepared default"
    bands = [(f"{band}: {why} (recommended)", band)] if default_layers(model) else []
    if every != band:
        bands.append((f"{every}: every layer", every))
    return bands + [(f"{i}", str(i)) for i in range(model.n_layers)]


def _text(name, k, value, model, kw):
    shown = STARTING_TEXT.get(name, value)
    return gr.Textbox(lines=2 if name in STARTING_TEXT else 1, max_length=MAX_INPUT_CHARS, value=shown, **kw)


def _level(name, k, value, model, kw):
    return Radio(LEVEL_CHOICES, value=kw.pop("value", "analyze"), **kw)


def _layers(name, k, value, model, kw):
    return Dropdown(layer_choices(model), value=value, allow_custom_value=True, **kw)


def _heads(name, k, value, model, kw):
    heads = list(range(model.n_heads))
    return CheckboxGroup([(f"head {h}", h) for h in heads], value=heads, **kw)


def _slider(name, k, value, model, kw):
    return Slider(k.lo, k.shown_hi, value=value, step=k.step, **kw)  # a slider may show less than the hard bound


def _integer(name, k, value, model, kw):
    return Number(value=value, precision=0, minimum=k.lo, **kw)


def _choice(name, k, value, model, kw):
    return Radio(list(k.options), value=value, **kw)  # a registry's choices are read when the widget is built


def _flag(name, k, value, model, kw):
    return gr.Checkbox(value=value, **kw)


def _latents(name, k, value, model, kw):
    return gr.Textbox(value=latents_text(value), placeholder="e.g. 18.6:123:+4, 20.1:55:-2", **kw)


WIDGETS = {  # Knob kind -> its widget: (field name, Knob, default, model, keyword arguments) -> component
    "text": _text,
    "level": _level,
    "layers": _layers,
    "heads": _heads,
    "slider": _slider,
    "integer": _integer,
    "choice": _choice,
    "flag": _flag,
    "latents": _latents,
}


def knob_widget(request, name: str, model=None, **overrides):
    """The widget of one field of a declared request (CompareRequest, LadderRequest, SweepRequest), as its Knob
    declares it, starting at the default its endpoint shows on this model."""
    k = knobs_of(request)[name]
    shown = {"layers": model_layers(model)} if model is not None else None
    value = request.api_signature(shown).parameters[name].default
    view = request.__name__.removesuffix("Request").lower()  # "compare-prompt", "ladder-prompt": one id a tab
    kw = {"label": k.label, "elem_id": f"{view}-{name}", **({"info": k.help} if k.help else {}), **overrides}
    return WIDGETS[k.kind](name, k, value, model, kw)


def request_inputs(request, model, intro: str, button: tuple[str, str], starts: dict | None = None):
    """A view tab's top: its one-paragraph intro, a declared request's widgets by field name (the question and
    the answer in one row, the rest in the next; starts: a field's starting value where the tab wants another
    than the default) and its run button (label, elem_id). Returns (widgets, button)."""
    gr.Markdown(intro)
    names, inputs = list(knobs_of(request)), {}
    for row in (names[:2], names[2:]):
        with gr.Row():
            for name in row:
                start = {"value": starts[name]} if starts and name in starts else {}
                inputs[name] = knob_widget(request, name, model, **start)
    return inputs, gr.Button(button[0], variant="primary", elem_id=button[1])


def chart_and_downloads(c: dict, view: str, title: str, label: str) -> None:
    """A view's chart (elem_id VIEW-plot) and its JSON and CSV downloads, into the components `c`."""
    c[f"{view}-plot"] = gr.Plot(label=label, elem_id=f"{view}-plot")
    c[f"{view}-json"], c[f"{view}-csv"] = downloads(title, view)


def mapped(components: dict, values: dict) -> dict:
    """A handler's outputs by name as Gradio takes them: by component."""
    return {components[name]: value for name, value in values.items()}


def reply_column(title: str, text_id: str, label_id: str) -> tuple[gr.Textbox, gr.Label]:
    """One reply of the ladder or the sweep with the judge's verdict under it."""
    with gr.Column(min_width=160):
        text = gr.Textbox(label=title, lines=7, interactive=False, elem_id=text_id)
        label = gr.Label(label="Judged level", num_top_classes=2, elem_id=label_id)
    return text, label


def captioned_plot(caption: str, label: str, elem_id: str) -> gr.Plot:
    """A chart in its own column under its one-line "how to read this"."""
    with gr.Column():
        gr.Markdown(caption)
        return gr.Plot(label=label, elem_id=elem_id)


def downloads(title: str, kind: str) -> tuple[gr.File, gr.File]:
    with gr.Row():
        return (
            gr.File(label=f"{title} (JSON)", elem_id=f"{kind}-json"),
            gr.File(label=f"{title} (CSV)", elem_id=f"{kind}-csv"),
        )


def link_box(view: str) -> gr.Textbox:
    return gr.Textbox(
        label="Link to this run (opens this tab with these values and runs it)",
        interactive=False,
        buttons=["copy"],
        elem_id=f"{view}-link",
    )


def example_rows(n: int = 8) -> list[list[str]]:
    """Ready examples from the test split (never seen by the SAEs, prototypes or judge)."""
    picks = scenarios(load_dataset(split="test"))[::2][:n]
    return [[s.question, s.student_answer, LEVELS[i % len(LEVELS)]] for i, s in enumerate(picks)]


def verdict(v: dict | None) -> dict | None:
    return None if v is None else dict(v["probs"])


def temp_file(kind: str, suffix: str, text: str) -> str:
    with tempfile.NamedTemporaryFile("w", prefix=f"bloom-steer-{kind}-", suffix=suffix, delete=False) as fh:
        fh.write(text)
    return fh.name
