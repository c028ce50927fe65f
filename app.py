"""Bloom steering demo: the web UI. Widgets, their layout and the mapping of steer_core's result objects
to them; every run (generation, judging, views, charts, reports) is steer_core's.

    python app.py        # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)

Environment: STEER_MODEL (default: the embedded SmolLM2-135M-Instruct with its feedback adapter),
STEER_ADAPTER (a LoRA folder for that model, or none), STEER_DEVICE (auto | cpu | cuda),
STEER_CONCURRENCY (requests served at once, default 4).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

try:  # ZeroGPU on Hugging Face Spaces: `spaces` must be imported before CUDA is touched
    import spaces

    gpu = spaces.GPU(duration=120)
    gpu_long = spaces.GPU(duration=300)  # 5 minutes: the most one call may ask for,
    # per a ZeroGPU maintainer's answer in huggingface.co/spaces/zero-gpu-explorers/README/discussions/7
except ImportError:  # anywhere else generation simply runs on the device steer_core picked

    def gpu(fn):
        return fn

    gpu_long = gpu


import gradio as gr

from steer_core import charts, methods
from steer_core.bloom import DESCRIPTIONS, LEVELS, load_dataset, scenarios
from steer_core.errors import UserError
from steer_core.generation import MAX_INPUT_CHARS, REPLY_TOKENS
from steer_core.inspect.latents import separability_scores
from steer_core.layer_spec import layers_label, read_layers
from steer_core.model.loading import adapter_choice, load_model
from steer_core.paths import DEFAULT_MODEL
from steer_core.sae.module import SAETrainConfig
from steer_core.steering.model_defaults import default_layers, describe, shown_layers
from steer_core.steering.offset_files import load_offsets
from steer_core.views import share
from steer_core.views.compare import API, KNOBS, MAX_STRENGTH, STEER, CompareRequest, compare_stream
from steer_core.views.evidence import SPLITS, evidence
from steer_core.views.ladder import LADDER_BASELINES, ladder_stream
from steer_core.views.presets import BY_NAME, PRESETS
from steer_core.views.question_sets import METHODS as SET_METHODS
from steer_core.views.question_sets import evaluate_set, read_question_set, scenario_limit
from steer_core.views.sweep import DEFAULT_STRENGTHS, MAX_SWEEP, sweep_stream

log = logging.getLogger("bloom-steer")
MODEL = os.environ.get("STEER_MODEL", DEFAULT_MODEL)
ADAPTER = os.environ.get("STEER_ADAPTER")  # unset: the shipped adapter (default model only); none: the bare model
DEVICE = os.environ.get("STEER_DEVICE", "auto")
SAE_DEFAULTS = SAETrainConfig()
METHOD_ORDER = methods.COMPARE + methods.COMPARE_OPTIONAL  # the columns, in the /compare outputs' order
LEVEL_CHOICES = [(f"{lv.capitalize()}: {DESCRIPTIONS[lv]}", lv) for lv in LEVELS]
USER_ERRORS = (UserError,)  # bad input the user can fix; anything else is logged as an internal error
DEFAULT_QUESTION = "Why do we see phases of the Moon?"
DEFAULT_ANSWER = "Because the Earth's shadow covers part of the Moon."


def _named(cls):
    """A component factory whose validation errors name the setting, so an API caller knows which
    value is wrong ("Max new tokens: Value 0 is less than minimum value 1."). Wraps the instance's
    preprocess: a subclass would make Gradio write an app.pyi stub next to this file."""

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


def lm():
    return load_model(MODEL, device=DEVICE, adapter=adapter_choice(ADAPTER))


def _user_error(exc: Exception) -> gr.Error:
    return gr.Error(str(exc), title="Please check the input")


def guarded(name: str):
    """Run a streaming handler so that bad input is reported as such and anything else as an internal
    error (logged), and the app keeps serving either way."""

    def wrap(fn):
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except USER_ERRORS as exc:
                raise _user_error(exc) from None
            except gr.Error:
                raise
            except Exception as exc:
                log.exception("%s failed", name)
                raise gr.Error(
                    f"Internal error ({type(exc).__name__}); the app is still running, please try again."
                ) from None

        return handler

    return wrap


def endpoint(name: str, signature=None, long: bool = False):
    """A handler as an endpoint: bad input reported, ZeroGPU-wrapped, and (signature) the API's parameters."""

    def wrap(fn):
        if signature is not None:
            fn.__signature__ = signature
        fn.__name__ = name
        return (gpu_long if long else gpu)(guarded(name)(fn))

    return wrap


# -- widgets --------------------------------------------------------------------------------------------


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


def knob_widget(name: str, model, **overrides):
    """The widget of one CompareRequest field, as its Knob declares it (label, kind, bounds, default)."""
    k = KNOBS[name]
    shown = {"layers": model_layers(model)} if model is not None else None
    value = CompareRequest.api_signature(shown).parameters[name].default
    kw = {"label": k.label, **({"info": k.help} if k.help else {}), **overrides}
    if k.kind == "text":
        default = DEFAULT_QUESTION if name == "question" else DEFAULT_ANSWER
        return gr.Textbox(lines=2, max_length=MAX_INPUT_CHARS, value=default, **kw)
    if k.kind == "level":
        return Radio(LEVEL_CHOICES, value=kw.pop("value", "analyze"), **kw)
    if k.kind == "layers":
        return Dropdown(layer_choices(model), value=value, allow_custom_value=True, **kw)
    if k.kind == "heads":
        heads = list(range(model.n_heads))
        return CheckboxGroup([(f"head {h}", h) for h in heads], value=heads, **kw)
    if k.kind == "slider":
        return Slider(k.lo, k.hi, value=value, step=k.step, **kw)
    if k.kind == "integer":
        return Number(value=value, precision=0, minimum=k.lo, **kw)
    if k.kind == "choice":
        return Radio(list(k.choices), value=value, **kw)
    return gr.Checkbox(value=value, **kw)


def question_inputs() -> tuple[gr.Textbox, gr.Textbox]:
    """The question and student's-answer boxes every tab starts with."""
    return knob_widget("question", None), knob_widget("student_answer", None)


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


def example_rows(n: int = 8) -> list[list[str]]:
    """Ready examples from the test split (never seen by the SAEs, prototypes or judge)."""
    picks = scenarios(load_dataset(split="test"))[::2][:n]
    return [[s.question, s.student_answer, LEVELS[i % len(LEVELS)]] for i, s in enumerate(picks)]


def _verdict(v: dict | None) -> dict | None:
    return None if v is None else dict(v["probs"])


def _temp_file(kind: str, suffix: str, text: str) -> str:
    with tempfile.NamedTemporaryFile("w", prefix=f"bloom-steer-{kind}-", suffix=suffix, delete=False) as fh:
        fh.write(text)
    return fh.name


# -- Compare ----------------------------------------------------------------------------------------------

PLOTS = {  # name -> (caption, label, elem_id); the first five are /compare's charts, in its outputs' order
    "bars": (
        "**Top latents.** The sparse features most active before and after steering, next to the target level's "
        "prototype (the typical code of feedback at that level).",
        "Top latents",
        "plot-bars",
    ),
    "heat": (
        "**Tokens x latents.** Which features are active at each word of the reply.",
        "Tokens x latents",
        "plot-heat",
    ),
    "trace": (
        "**Steering trace.** Each line is how likely that level looks under the prototypes, before steering and "
        "after (after every descent step for the descent targets): it rises for your level when steering works, "
        "stays flat when not.",
        "Steering trace",
        "plot-trace",
    ),
    "probs": (
        "**Judge probabilities.** How likely the judge thinks each reply asks for each level; the shaded column is "
        "the level you chose.",
        "Judge probabilities",
        "plot-probs",
    ),
    "sep": (
        "**Where to steer.** Brighter cells: layers and heads where the six levels look most different to the SAE; "
        "outlined: the ones you steered.",
        "Where to steer",
        "plot-sep",
    ),
    "attention": (
        "**What steering changed.** Steering only changes which words of the prompt the model reads while it "
        "writes: bars are the share of its attention on each part, without and with steering (same reply).",
        "Attention by part of the prompt",
        "plot-attn",
    ),
}


def _compare_inputs(model) -> dict:
    """Every CompareRequest field's widget, laid out: question and level, the main knobs, the advanced ones."""
    w = {}
    with gr.Row():
        with gr.Column(scale=3):
            w["question"], w["student_answer"] = question_inputs()
        with gr.Column(scale=2):
            w["level"] = knob_widget("level", model)
    gr.Examples(
        example_rows(),
        inputs=[w["question"], w["student_answer"], w["level"]],
        label="Examples from the test split (click one)",
    )
    rest = [n for n in API if n not in w]
    with gr.Row():
        for name in (n for n in rest if not KNOBS[n].advanced):
            w[name] = knob_widget(name, model)
    with gr.Accordion("Advanced (the paper's knobs)", open=False):
        for kinds in (("slider", "integer"), ("choice",), ("flag",)):
            with gr.Row():
                for name in (n for n in rest if KNOBS[n].advanced and KNOBS[n].kind in kinds):
                    w[name] = knob_widget(name, model)
    return w


@dataclass
class RunTab:
    """What the page's sharing (links, reports, history) needs of a tab that runs one question: its widgets by
    link parameter, its run button, how a result fills its outputs, and its report and link boxes."""

    view: str
    inputs: dict
    go: gr.Button
    ran: object  # the run button's event, for what follows a run
    show: Callable  # (result, report path or None) -> {component: value}
    shown: list  # every component show() may fill
    record_file: gr.File
    link: gr.Textbox
    extra: list = field(default_factory=list)  # more components after_run fills (the ladder's handout)


def link_box(view: str) -> gr.Textbox:
    return gr.Textbox(
        label="Link to this run (opens this tab with these values and runs it)",
        interactive=False,
        buttons=["copy"],
        elem_id=f"{view}-link",
    )


def _compare_tab(demo: gr.Blocks, model) -> RunTab:
    """The Compare tab: one question, the methods side by side, the judge, the charts."""
    with gr.Tab("Compare", id="compare"):
        inputs = _compare_inputs(model)
        with gr.Row():
            preset = Dropdown(
                [p.name for p in PRESETS], value=None, label="Presets", scale=1, elem_id="preset",
                info="named settings of the knobs above and under Advanced",
            )  # fmt: skip
            preset_note = gr.Markdown(elem_id="preset-note")
        go = gr.Button("Compare", variant="primary", elem_id="run-compare")
        status = gr.Markdown("")
        texts, labels, columns = {}, {}, {}
        with gr.Row(equal_height=True):
            for m in METHOD_ORDER:
                with gr.Column(min_width=200, visible=m in methods.COMPARE) as columns[m]:
                    texts[m] = gr.Textbox(
                        label=methods.headline(m), lines=6, interactive=False, elem_id=f"out-{m}", buttons=["copy"]
                    )
                    labels[m] = gr.Label(label="Judged level", num_top_classes=3, elem_id=f"judge-{m}")
        plots = {}
        with gr.Row():
            for name in ("probs", "attention"):
                plots[name] = captioned_plot(*PLOTS[name])
        gr.Markdown("The prompt, shaded by how much more (orange) or less (blue) the steered model reads each word:")
        attn_text = gr.HTML(elem_id="attn-text")
        with gr.Row():
            report = gr.File(label="Report of this run (JSON)", elem_id="report")
            link = link_box("compare")
        with gr.Accordion("For researchers: inside the sparse autoencoder", open=False):
            for pair in (("trace", "bars"), ("heat", "sep")):
                with gr.Row():
                    for name in pair:
                        plots[name] = captioned_plot(*PLOTS[name])

        def show(result, report_path=None) -> dict:
            out = {texts[m]: result.outputs[m].text if m in result.outputs else "" for m in METHOD_ORDER}
            out[status] = result.status()
            if result.done and (result.inspection is not None or result.saved is not None):
                figures = result.figures()
                out |= {labels[m]: _verdict(result.judgements.get(m)) for m in METHOD_ORDER}
                out |= {plots[n]: figures.get(n) for n in PLOTS}
                out |= {report: report_path or result.write_report(lm().label), attn_text: result.attention_html()}
            return out

        @endpoint("compare", CompareRequest.api_signature({"layers": model_layers(model)}))
        def compare(*args):
            """Unsteered, SAE-steered, query-steered and few-shot feedback (and on request more columns) for one
            question and answer, streamed; then verdicts, charts and a JSON report."""
            req = CompareRequest.from_ui(**dict(zip(API, args)))
            for result in compare_stream(lm(), req):
                yield show(result)

        outputs = [*texts.values(), *labels.values(), *(plots[n] for n in ("bars", "heat", "trace", "probs", "sep"))]
        outputs += [report, status, plots["attention"], attn_text]
        ran = go.click(compare, [inputs[n] for n in API], outputs, api_name="compare")
        for m, flag in methods.COLUMN_FLAGS.items():  # a column shows when its box is ticked
            inputs[flag].change(lambda on: gr.update(visible=on), inputs[flag], columns[m], api_visibility="private")
        knobs = [n for n in API if n not in share.ALWAYS and n != "student_answer"]

        def choose_preset(name):
            if not name:
                return {preset_note: ""}
            chosen = BY_NAME[name]
            opened = share.read_values("compare", share.defaults("compare", lm()) | chosen.values, lm())
            note = "".join(f"\n- {n}" for n in opened.notes)
            return {inputs[n]: opened.values[n] for n in knobs if n in opened.values} | {
                preset_note: f"**{chosen.name}.** {chosen.why}" + (f" Not on this model:{note}" if note else "")
            }

        preset.change(choose_preset, preset, [preset_note, *(inputs[n] for n in knobs)], api_visibility="private")
        demo.load(initial_map, None, plots["sep"], api_visibility="private")
    return RunTab("compare", {n: inputs[n] for n in API}, go, ran, show, outputs, report, link)


@gpu
def initial_map():
    try:
        model = lm()
        layers, scores = separability_scores(model)
        return charts.separability_map(scores, layers, highlight=(model.middle_layer, list(range(model.n_heads))))
    except Exception:  # the map is a hint; the page must load without it
        log.exception("separability map failed")
        return None


# -- Level ladder and strength sweep -------------------------------------------------------------------------


def _view_request(question, student_answer, level, strength, max_new_tokens):
    """A ladder's or sweep's request: the loaded model's default layers and the given knobs."""
    return CompareRequest.from_ui(
        question=question,
        student_answer=student_answer,
        level=level,
        strength=strength,
        max_new_tokens=max_new_tokens,
        layers=model_layers(lm()),
    )


def _ladder_tab(demo: gr.Blocks, model) -> RunTab:
    """The Level ladder tab: one question answered at every level in one batch."""
    names = ["unsteered", *LEVELS]
    with gr.Tab("Level ladder", id="ladder"):
        gr.Markdown(
            "The same question answered at **every** Bloom level: the unsteered reply, then the reply steered "
            "toward each level, side by side in one run. The chart puts the level the judge reads against "
            "the level asked for: if steering worked, the dots would sit on the diagonal."
        )
        with gr.Row():
            question, answer = question_inputs()
        with gr.Row():
            baseline = Radio(
                [("none", "none")] + [(methods.LABELS[b], b) for b in LADDER_BASELINES],
                value="none",
                label="Also show a baseline method at every level",
            )
            strength = knob_widget("strength", model)
            max_new = knob_widget("max_new_tokens", model)
        go = gr.Button("Run the ladder", variant="primary", elem_id="run-ladder")
        status = gr.Markdown("")
        texts, labels, base = [], [], []
        with gr.Row(equal_height=True):
            for i, name in enumerate(names):
                text, label = reply_column(
                    name if i == 0 else f"toward {name}", f"ladder-{name}", f"ladder-judge-{name}"
                )
                texts.append(text)
                labels.append(label)
        with gr.Row(equal_height=True, visible=False) as base_row:  # shown when a baseline is chosen
            gr.Column(min_width=160)
            for lv in LEVELS:
                with gr.Column(min_width=160):
                    base.append(
                        gr.Textbox(label=f"baseline: {lv}", lines=5, interactive=False, elem_id=f"ladder-base-{lv}")
                    )
        gr.Markdown(
            "**How to read it.** Dots on the dashed diagonal = the reply asks for the level it was steered "
            "toward; bars = how sure the judge is of that level (1/6 is chance)."
        )
        plot = gr.Plot(label="Judged level against target level", elem_id="ladder-plot")
        json_file, csv_file = downloads("Ladder", "ladder")
        with gr.Row():
            handout = gr.File(label="Handout: the ladder on one printable page (HTML)", elem_id="ladder-handout")
            link = link_box("ladder")

        def show(result, report_path=None) -> dict:
            replies = [o.text for o in result.outputs]
            out = dict(zip(texts, replies[: len(names)])) | {status: result.status()}
            out |= dict(zip(base, replies[len(names) :] + [""] * (len(LEVELS) - len(replies[len(names) :]))))
            if result.done:
                out |= {lab: _verdict(v) for lab, v in zip(labels, result.verdicts)} | {plot: result.chart()}
                files = (report_path, _temp_file("ladder", ".csv", result.csv_text())) if report_path else None
                out |= dict(zip((json_file, csv_file), files or result.write_files(lm().label)))
            return out

        @endpoint("ladder")
        def ladder(question, student_answer, baseline="none", strength=STEER.strength, max_new_tokens=REPLY_TOKENS):
            """The same question answered at every Bloom level: unsteered, then SAE-steered toward remember ..
            create (and the same for a baseline on request), one batch; then verdicts, the chart and downloads."""
            req = _view_request(question, student_answer, None, strength, max_new_tokens)
            for result in ladder_stream(lm(), req, baseline):
                yield show(result)

        baseline.change(lambda b: gr.update(visible=b != "none"), baseline, base_row, api_visibility="private")
        outputs = [*texts, *labels, *base, plot, json_file, csv_file, status]
        ran = go.click(ladder, [question, answer, baseline, strength, max_new], outputs, api_name="ladder")
    widgets = dict(zip(share.VIEWS["ladder"], (question, answer, baseline, strength, max_new)))
    return RunTab("ladder", widgets, go, ran, show, outputs, json_file, link, extra=[handout])


def _sweep_tab(demo: gr.Blocks, model) -> RunTab:
    """The Strength sweep tab: one level at several strengths in one batch."""
    with gr.Tab("Strength sweep", id="sweep"):
        gr.Markdown(
            "One level at several steering strengths, side by side in one run: how far can you push before "
            "the feedback stops making sense?"
        )
        with gr.Row():
            question, answer = question_inputs()
        with gr.Row():
            level = knob_widget("level", model, value="create")
            strengths = gr.Textbox(
                value=", ".join(f"{s:g}" for s in DEFAULT_STRENGTHS),
                label=f"Strengths (up to {MAX_SWEEP}, from 0 to {MAX_STRENGTH:g}; 1 = the default)",
            )
            max_new = knob_widget("max_new_tokens", model)
        go = gr.Button("Run the sweep", variant="primary", elem_id="run-sweep")
        status = gr.Markdown("")
        texts, labels = [], []
        with gr.Row(equal_height=True):
            for i in range(MAX_SWEEP):
                text, label = reply_column(f"strength {i}", f"sweep-{i}", f"sweep-judge-{i}")
                texts.append(text)
                labels.append(label)
        gr.Markdown(
            "**How to read it.** The coloured line is how sure the judge is that the reply asks for your "
            "level; the dotted line is perplexity (how surprised the unsteered model is by the text: higher "
            "= less fluent). Good steering raises the first without the second crossing the red dashes."
        )
        plot = gr.Plot(label="Probability and perplexity against strength", elem_id="sweep-plot")
        json_file, csv_file = downloads("Sweep", "sweep")
        link = link_box("sweep")

        def show(result, report_path=None) -> dict:
            k = len(result.rows)
            out = {status: result.status()}
            for i, (text, label) in enumerate(zip(texts, labels)):  # a box per strength
                shown = i < k
                reply = result.outputs[i].text if shown else ""
                name = result.rows[i].name if shown else None
                verdict = _verdict(result.verdicts[i]) if shown and result.done else None
                if result.done and report_path is None:  # a finished live run: plain values (the API's)
                    out[text], out[label] = reply, verdict
                else:  # streaming, or restored: each box takes its strength as its label; the rest hide
                    out[text] = gr.update(value=reply, label=name, visible=shown)
                    out[label] = gr.update(value=verdict, visible=shown)
            if result.done:
                files = (report_path, _temp_file("sweep", ".csv", result.csv_text())) if report_path else None
                out |= dict(zip((json_file, csv_file), files or result.write_files(lm().label)))
                out[plot] = result.chart()
            return out

        @endpoint("sweep")
        def sweep(
            question,
            student_answer,
            level,
            strengths=", ".join(f"{s:g}" for s in DEFAULT_STRENGTHS),
            max_new_tokens=REPLY_TOKENS,
        ):
            """One level at several steering strengths in one batch: how far can it be pushed before the
            text stops making sense? Then verdicts, the probability/perplexity chart and a download."""
            req = _view_request(question, student_answer, level, STEER.strength, max_new_tokens)
            for result in sweep_stream(lm(), req, strengths):
                yield show(result)

        outputs = [*texts, *labels, plot, json_file, csv_file, status]
        ran = go.click(sweep, [question, answer, level, strengths, max_new], outputs, api_name="sweep")
    widgets = dict(zip(share.VIEWS["sweep"], (question, answer, level, strengths, max_new)))
    return RunTab("sweep", widgets, go, ran, show, outputs, json_file, link)


# -- Your questions -----------------------------------------------------------------------------------------

REPLY_HEADERS = ["id", "method", "level", "judged level", "P(level)", "reply"]


def _bad_rows_text(questions, limit: int) -> str:
    text = questions.describe(limit) + "."
    if questions.bad:
        shown = "".join(f"\n- {b}" for b in questions.bad[:50])
        more = f"\n- ... and {len(questions.bad) - 50} more" if len(questions.bad) > 50 else ""
        text += f" Left out (the rest run):{shown}{more}"
    return text


def preview_set(file) -> str:
    """What an upload holds, before anything runs: usable rows, the limit, the rows left out."""
    if file is None:
        return ""
    try:
        limit = scenario_limit(lm().device)
        return _bad_rows_text(read_question_set(file, limit), limit)
    except USER_ERRORS as exc:
        return f"**Cannot run this file:** {exc}"


def _questions_tab(demo: gr.Blocks, model) -> None:
    """The Your questions tab: evaluate the methods on a set of questions the user uploads."""
    limit = scenario_limit(model.device)
    with gr.Tab("Your questions"):
        gr.Markdown(
            "Does steering work on **your** questions? Upload a `.csv` or `.jsonl` file with the columns "
            "`question` and `student_answer` (and optionally `id`), one student answer a row. Every method "
            "writes feedback toward every level you tick, the judge reads each reply, and you get the accuracy "
            "and *r* of each method with 95% intervals over your scenarios, as in the README's tables. "
            f"**Up to {limit} scenarios a run on this server** ({model.device.type.upper()}; about 20 s a "
            "scenario on a 2-core CPU with the default methods and levels). The unsteered reply always runs: "
            "every figure is read against it."
        )
        with gr.Row():
            file = gr.File(label="Questions (.csv or .jsonl)", file_types=[".csv", ".jsonl"], elem_id="eval-file")
            with gr.Column():
                levels = CheckboxGroup(list(LEVELS), value=list(LEVELS), label="Target levels")
                chosen = CheckboxGroup(
                    [(methods.LABELS[m], m) for m in SET_METHODS if m != "none"],
                    value=[m for m in methods.COMPARE if m != "none"],
                    label="Methods (besides unsteered)",
                )
        rows_text = gr.Markdown(elem_id="eval-rows")
        go = gr.Button("Evaluate", variant="primary")
        status = gr.Markdown(elem_id="eval-status")
        table = gr.Dataframe(label="Per method", interactive=False, wrap=True, elem_id="eval-table")
        with gr.Row():
            chart = captioned_plot(
                "**Judged against asked.** The level the judge reads, averaged over your scenarios, against the "
                "level asked for: steering that works climbs the dotted diagonal.",
                "Judged level against target level",
                "eval-plot",
            )
            shares = captioned_plot(
                "**Judged levels.** The share of each method's replies the judge reads at each level.",
                "Judged levels",
                "eval-shares",
            )
        replies = gr.Dataframe(label="The replies", interactive=False, wrap=True, elem_id="eval-replies")
        with gr.Row():
            results_file = gr.File(label="Results (CSV, one reply a row)", elem_id="eval-results")
            summary_file = gr.File(label="Summary (CSV)", elem_id="eval-summary")

        @endpoint("evaluate", long=True)
        def evaluate(file, levels=LEVELS, methods=methods.COMPARE, progress=gr.Progress()):  # noqa: B008
            """Your questions: every method toward every chosen level on each uploaded scenario, judged, with
            accuracy and r per method (95% intervals over the scenarios), growing as scenarios finish."""
            model = lm()
            limit = scenario_limit(model.device)
            questions = read_question_set(file, limit)
            out = {rows_text: _bad_rows_text(questions, limit)}
            for run in evaluate_set(model, questions, levels, methods):
                progress((run.done, run.total), desc="scenarios", unit="scenario")
                summary = run.summary()
                headers, rows = run.table(summary)
                per_level = [s for s in summary if s["level"] != "ALL"]
                out |= {
                    status: run.status(),
                    table: {"headers": headers, "data": rows},
                    chart: charts.judged_vs_target(
                        per_level, title="Judged level against the level asked for (mean over your scenarios)"
                    ),
                    shares: charts.judged_shares(summary),
                    replies: {"headers": REPLY_HEADERS, "data": run.reply_rows()},
                }
                if run.finished:
                    out[results_file] = _temp_file("evaluate-results", ".csv", run.results_csv())
                    out[summary_file] = _temp_file("evaluate-summary", ".csv", run.summary_csv())
                yield out

        file.change(preview_set, file, rows_text, api_visibility="private")
        outputs = [status, table, chart, shares, replies, results_file, summary_file, rows_text]
        go.click(evaluate, [file, levels, chosen], outputs, api_name="evaluate", concurrency_limit=1)


# -- Train your own, Does it steer?, the levels ----------------------------------------------------------------


@gpu_long
def train_layer(layer, architecture, k, l1, expansion, epochs, progress=gr.Progress(track_tqdm=True)):
    """Train SAEs + prototypes for all heads of one layer of the loaded model into the user cache;
    they replace the shipped ones for that layer at once."""
    from steer_core.fit.sae_training import train_layers
    from steer_core.sae.store import STORE, user_root

    try:
        model = lm()
        layer = model.check_layer(int(layer))
        cfg = SAETrainConfig(
            architecture=architecture, expansion=int(expansion), k=int(k), l1_coeff=float(l1), epochs=int(epochs)
        )
        root = user_root(model)
        progress(0, desc="capturing queries of the train split")
        results = train_layers(model, [layer], root, cfg)
        STORE.forget(model, layer)
    except (TypeError, OverflowError) as exc:
        raise gr.Error(f"Please give whole numbers for layer, k, expansion and epochs ({exc}).") from None
    except USER_ERRORS as exc:
        raise _user_error(exc) from None
    m = results[layer]
    return (
        f"Trained layer {layer} in {m['seconds']:.0f} s: explained variance {m['explained_variance']:.3f}, "
        f"L0 {m['l0']:.1f}, dead latents {m['dead_fraction']:.1%}. Saved under `{root}`; "
        "the descent targets (softmax, delta or the paper's prototype) use it now. The default (learned "
        f"offsets, fitted for {_offset_layers(model)}) keeps the SAEs its offsets were fitted for; "
        "Prepare below refits them for the new SAEs."
    )


@gpu_long
def prepare_layers(layers, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
    """Build what the default steering needs for these layers of the loaded model (SAEs, prototypes,
    learned offsets) into the user cache, skipping what is already built and verifies."""
    from steer_core.fit.prepare import PrepareConfig, plan, prepare

    try:
        model = lm()
        chosen = read_layers(layers)
        cfg = PrepareConfig(layers=tuple(model.check_layer(layer) for layer in chosen))
        todo = plan(model, cfg)
        if todo.nothing_to_do:
            return f"Nothing to build: layers {layers_label(cfg.layers)} have their SAEs, prototypes and offsets."
        progress(0, desc=f"building {todo.describe()}")
        manifest = prepare(model, cfg)
    except USER_ERRORS as exc:
        raise _user_error(exc) from None
    return (
        f"Built {manifest['built']} in {manifest['timings']['total_seconds']:.0f} s; the other tabs steer with it "
        f"now. Manifest: `{manifest['manifest']}`."
    )


def _offset_layers(model) -> str:
    try:
        return "layers " + layers_label(load_offsets(model).layers)
    except USER_ERRORS:
        return "no layers of this model"


def _train_tab(demo: gr.Blocks, model) -> None:
    """The Train tab: SAEs and prototypes for one layer of the loaded model; Prepare for a band."""
    with gr.Tab("Train your own"):
        gr.Markdown(
            "Train sparse autoencoders (all heads of one layer at once) and the six level prototypes on the "
            "train split, for the loaded model. The result is cached and replaces that layer's shipped SAEs "
            "immediately. About a minute per layer on a laptop CPU (deeper layers take longer to capture). "
            "To train for another model, start the app with `STEER_MODEL=<HF id or local path> python app.py`."
        )
        with gr.Row():
            layer = Number(value=model.middle_layer, precision=0, minimum=0, maximum=model.n_layers - 1, label="Layer")
            arch = Radio(
                [("TopK", "topk"), ("ReLU + L1", "standard")], value=SAE_DEFAULTS.architecture, label="SAE type"
            )
            k = Slider(1, 128, value=SAE_DEFAULTS.k, step=1, label="k (TopK)")
            l1 = Slider(0.0, 5.0, value=SAE_DEFAULTS.l1_coeff, step=0.05, label="L1 weight (ReLU + L1)")
            expansion = Dropdown(
                [2, 4, 8, 16], value=SAE_DEFAULTS.expansion, label=f"Expansion (latents = expansion x {model.head_dim})"
            )
            epochs = Slider(1, 20, value=SAE_DEFAULTS.epochs, step=1, label="Epochs")
        go = gr.Button("Train", variant="primary")
        out = gr.Markdown()
        inputs = [layer, arch, k, l1, expansion, epochs]
        go.click(train_layer, inputs, out, api_name="train", concurrency_limit=1, concurrency_id="training")
        gr.Markdown(
            "### Prepare the default steering\n"
            "Everything the default steering needs for a band of layers of the loaded model, in one step: SAEs "
            "and prototypes for the layers that lack them, then the learned offsets, fitted together for the "
            "band (what `python -m steer_core prepare` does). Built pieces that verify are kept. For the "
            "embedded model everything ships, so there is nothing to do; for another model expect about a "
            "minute a layer for the SAEs and 10-25 minutes for the offsets on a 2-core CPU."
        )
        with gr.Row():
            p_layers = gr.Textbox(
                value=f"0-{model.n_layers - 1}", label="Layers", info="a band, one layer, or e.g. 3,9,15"
            )
            p_go = gr.Button("Prepare", variant="secondary")
        p_out = gr.Markdown()
        p_go.click(prepare_layers, p_layers, p_out, api_name="prepare", concurrency_limit=1, concurrency_id="training")


def does_it_steer(split="test"):
    """The frontier of the shipped result rows of a split: the chart, and every method at matched perplexity."""
    from steer_core.evaluation.frontier import MATCHED_RATIOS
    from steer_core.evaluation.tables import matched_table

    try:
        ev = evidence(split)
    except USER_ERRORS as exc:
        raise _user_error(exc) from None
    caption = (
        f"**{SPLITS[split].capitalize()}.** Rows: {', '.join(f'`{f}`' for f in ev.files)}; 95% intervals from "
        f"{ev.frontier.draws} resamplings of whole scenarios.\n\n" + matched_table(ev.frontier, MATCHED_RATIOS)
    )
    return charts.frontier_chart(ev.frontier), caption


def _evidence_tab(demo: gr.Blocks, model) -> None:
    """Does it steer? Every method along its strength curve, from the shipped result files."""
    with gr.Tab("Does it steer?"):
        gr.Markdown(
            "Steering strength trades the level for fluency, so methods are compared **at the same perplexity**: "
            "each line is one method along its strengths (from the unsteered reply at 1x), each diamond a prompt "
            "baseline, which has no strength. Read methods against each other along a vertical line. Accuracy = "
            "the judge reads the level asked for (1/6 is chance); perplexity of the reply under the unsteered model, "
            "as a ratio to the unsteered reply's. The table reads each line at 1.2x, 1.3x and 1.4x. These are the "
            "measured rows that ship with the demo, not a live run."
        )
        split = Radio([("test split", "test"), ("validation", "validation")], value="test", label="Rows")
        plot = gr.Plot(label="Accuracy against fluency", elem_id="frontier-plot")
        table = gr.Markdown(elem_id="frontier-table")
        split.change(does_it_steer, split, [plot, table], api_name="frontier")
        demo.load(does_it_steer, split, [plot, table], api_visibility="private")


def _levels_tab(demo: gr.Blocks, model) -> None:
    """The six levels, as the prompts and the judge describe them."""
    with gr.Tab("About the levels"):
        gr.Markdown("\n".join(f"- **{lv.capitalize()}**: {DESCRIPTIONS[lv]}" for lv in LEVELS))
        gr.Markdown(f"**The loaded model.** {describe(model)}.", elem_id="about-model")


# -- Keep and share a run: links, reports, this browser's history ----------------------------------------------

# The history is the user's own runs, kept in their own browser; a fixed key keeps it readable across restarts
# of the server (a random one, Gradio's default, would lose it at every restart).
HISTORY_SECRET = os.environ.get("STEER_HISTORY_SECRET", "bloom-steer-history-v1")
ABSOLUTE_LINK = "(q) => (q && q.startsWith('?')) ? window.location.origin + window.location.pathname + q : q"


def click_run(only_ready: bool) -> str:
    """JS that presses the run button of the view a link or report opened (only_ready: only when all its values
    read); a tab's widgets appear only once the tab is shown, so it waits for the button."""
    ready = "o.runs" if only_ready else "true"
    return (
        f"(o) => {{ if (!(o && o.view && {ready})) return []; let n = 0; const press = () => {{"
        " const b = document.querySelector('#run-' + o.view);"
        " if (b) b.click(); else if (n++ < 100) setTimeout(press, 100); }; setTimeout(press, 200); return []; }"
    )


@dataclass
class SharingPanel:
    history: gr.BrowserState
    past: gr.Dataframe
    upload: gr.File
    note: gr.Markdown
    again: gr.Button
    pending: gr.JSON  # what a link or a report asks to run: {"view": ..., "runs": ...}
    tabs: gr.Tabs | None = None


def _sharing_panel() -> SharingPanel:
    """Above the tabs: open a saved report, or one of this browser's last runs; what a link or report opened."""
    history = gr.BrowserState([], storage_key="bloom-steer-history", secret=HISTORY_SECRET)
    with gr.Accordion(
        f"Your runs: open a saved report, or one of this browser's last {share.HISTORY_SIZE}", open=False
    ) as runs:
        with gr.Row():
            upload = gr.File(label="Open a run's report (JSON)", file_types=[".json"], elem_id="open-report")
            past = gr.Dataframe(
                headers=["time", "tab", "level", "question"], label="This browser's runs (click one to restore it)",
                interactive=False, wrap=True, elem_id="history",
            )  # fmt: skip
    note = gr.Markdown(elem_id="open-note")
    again = gr.Button("Run again", visible=False, elem_id="run-again")
    runs.expand(share.history_rows, history, past, api_visibility="private")  # as the browser has it now
    return SharingPanel(history, past, upload, note, again, gr.JSON(visible=False))


def _share_runs(demo: gr.Blocks, run_tabs: list[RunTab], panel: SharingPanel) -> None:
    """Links that run a tab, reports and history entries that restore one, and after every run its link and
    history entry."""
    by_view = {t.view: t for t in run_tabs}
    filled = [w for t in run_tabs for w in t.inputs.values()]
    shown = list(dict.fromkeys(c for t in run_tabs for c in [*t.shown, t.record_file]))
    everything = [panel.tabs, panel.note, panel.again, panel.pending, *filled, *shown]

    def fill(opened) -> dict:
        t = by_view[opened.view]
        return {t.inputs[n]: v for n, v in opened.values.items()} | {panel.tabs: gr.Tabs(selected=opened.view)}

    def open_link(request: gr.Request):
        opened = share.read_link(dict(request.query_params), lm())
        out = {panel.note: opened.message(), panel.pending: {"view": opened.view, "runs": opened.runs}}
        return out | (fill(opened) if opened.view else {})

    def open_saved(source) -> dict:
        try:
            saved = share.read_report(source, lm())
        except USER_ERRORS as exc:
            return {panel.note: f"**Cannot open this report:** {exc}", panel.again: gr.update(visible=False)}
        out = {
            panel.note: saved.message(),
            panel.again: gr.update(visible=not saved.restorable),
            panel.pending: {"view": saved.view, "runs": False},
        } | fill(saved.opened)
        if saved.restorable:
            path = _temp_file(f"{saved.view}-run", ".json", json.dumps(saved.record, indent=1))
            out |= by_view[saved.view].show(share.restore(saved), path)
        return out

    def pick(history, evt: gr.SelectData):
        rows = history or []
        i = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return open_saved(rows[i]["report"]) if 0 <= i < len(rows) else {}

    private = {"api_visibility": "private"}
    demo.load(open_link, None, everything, **private).then(None, panel.pending, None, js=click_run(only_ready=True))
    demo.load(share.history_rows, panel.history, panel.past, **private)
    panel.upload.upload(open_saved, panel.upload, everything, **private)
    panel.past.select(pick, panel.history, everything, **private)
    panel.again.click(None, panel.pending, None, js=click_run(only_ready=False))
    for t in run_tabs:

        def after_run(path, history, t=t) -> dict:
            """The run's link and its history entry (and the ladder's handout), from the report it wrote."""
            if not path:
                return {}
            record = json.loads(Path(path).read_text(encoding="utf-8"))
            query = share.link_query(record, lm())
            history = share.add_to_history(history, share.history_entry(record, query))
            out = {t.link: query, panel.history: history, panel.past: share.history_rows(history)}
            if t.extra:
                out[t.extra[0]] = _temp_file("ladder-handout", ".html", share.handout_html(record))
            return out

        t.ran.success(
            after_run, [t.record_file, panel.history], [t.link, panel.history, panel.past, *t.extra], **private
        ).then(None, t.link, t.link, js=ABSOLUTE_LINK)


def build() -> gr.Blocks:
    model = lm()
    with gr.Blocks(title="Bloom steering demo") as demo:
        gr.Markdown(
            "# Steer the thinking level of feedback\n"
            "Type a question and a student's answer, pick the level of Bloom's taxonomy the feedback should ask "
            f"for, and compare ways of getting it from a language model. **SAE-steered** "
            "follows *Steered Generation via Gradient Descent on Sparse Features*: it edits the model's attention "
            "queries in the sparse code of an autoencoder, toward the chosen level, without changing the prompt. By "
            "default it adds a per-level code offset fitted on the model's own feedback; the paper's descent to a "
            "level prototype is the *prototype* target under *Advanced*. A classifier (the *judge*) says which "
            "level each reply actually asks for. How far each method moves the level at the same fluency: the "
            f"*Does it steer?* tab.\n\n**Model:** {describe(model)}."
        )
        sharing = _sharing_panel()
        with gr.Tabs() as sharing.tabs:
            run_tabs = [_compare_tab(demo, model), _ladder_tab(demo, model), _sweep_tab(demo, model)]
            for tab in (_questions_tab, _train_tab, _evidence_tab, _levels_tab):
                tab(demo, model)
        _share_runs(demo, run_tabs, sharing)
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    demo = build()
    demo.queue(default_concurrency_limit=int(os.environ.get("STEER_CONCURRENCY", "4")))
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        theme=gr.themes.Soft(),
    )


if __name__ == "__main__":
    main()
