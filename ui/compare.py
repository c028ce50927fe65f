"""The Compare tab: one question, the methods side by side, the judge, the charts. `run` is its handler: the
widget values in, a dict of outputs by name out (streamed); the layout maps the names to its components."""

from __future__ import annotations

import logging

import gradio as gr

from steer_core import charts, methods
from steer_core.views.compare import API, KNOBS, CompareRequest, column_label, compare_stream
from steer_core.views.links import ALWAYS, defaults, read_values
from steer_core.views.presets import BY_NAME, PRESETS

from .errors import endpoint, guarded
from .runtime import gpu, lm
from .sharing import RunTab
from .widgets import Dropdown, captioned_plot, example_rows, knob_widget, link_box, mapped, model_layers, verdict

log = logging.getLogger("bloom-steer")
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
CHARTS = ("bars", "heat", "trace", "probs", "sep")  # /compare's charts, in its outputs' order


def columns() -> tuple[str, ...]:
    """The columns in the /compare outputs' order (the method registry's): Compare's own, then those on request."""
    return methods.compare_columns() + tuple(methods.column_flags())


def output_names() -> list[str]:
    """/compare's outputs by name, in order: each column's text and verdict, the charts, the report, the status,
    the attention chart and text, then the replies by method name (the one a client reads by name)."""
    cols = columns()
    names = [f"out-{m}" for m in cols] + [f"judge-{m}" for m in cols] + [PLOTS[n][2] for n in CHARTS]
    return names + ["report", "status", PLOTS["attention"][2], "attn-text", "compare-replies"]


def replies(result) -> dict:
    """Every column run, by method name: its headline, its text and the judge's verdict (None until judged)."""
    out = {}
    for m, o in result.outputs.items():
        v = result.judgements.get(m)
        judge = None if v is None else {"pred": v["pred"], "probs": dict(v["probs"])}
        out[m] = {"label": result.request.column_label(m), "text": o.text, "judge": judge}
    return out


def show(result, label: str | None = None, report_path: str | None = None) -> dict:
    """A run's outputs by name (a live run's report is written for model `label`; a restored one has its path)."""
    out = {f"out-{m}": result.outputs[m].text if m in result.outputs else "" for m in columns()}
    out |= {"status": result.status(), "compare-replies": replies(result)}
    if result.done:
        out |= {f"judge-{m}": verdict(result.judgements.get(m)) for m in columns()}
    if result.done and (result.inspection is not None or result.saved is not None):
        figures = result.figures()
        out |= {PLOTS[n][2]: figures.get(n) for n in PLOTS}
        out |= {"report": report_path or result.write_report(label), "attn-text": result.attention_html()}
    elif result.charting:  # judged: its verdicts and the judge's chart now; the rest (the last run's cleared) next
        out |= {PLOTS[n][2]: None for n in PLOTS} | {PLOTS["probs"][2]: result.judge_chart()}
        out |= {"report": None, "attn-text": ""}
    return out


@guarded("compare")
def run(values: dict, model=None, judge=None):
    """Unsteered, SAE-steered, query-steered and few-shot feedback (and on request more columns) for one question
    and answer, streamed; then verdicts, charts and a JSON report. values: the /compare parameters by name."""
    model = model or lm()
    req = CompareRequest.from_ui(**values)
    for result in compare_stream(model, req, judge=judge):
        yield show(result, model.label)


def prompt_shown(prompt: str, ticked: dict) -> list:
    """Under a prompt: every column's headline (steered ones name the prompt) and which optional columns show
    (those ticked, and the prompt's own: the steered columns' strength 0)."""
    heads = [gr.update(label=column_label(m, prompt)) for m in columns()]
    return heads + [gr.update(visible=bool(on) or prompt == m) for m, on in ticked.items()]


@guarded("preset")
def choose_preset(name, model=None) -> dict:
    """A preset's knob values by parameter name, and its note (by name "preset-note")."""
    if not name:
        return {"preset-note": ""}
    model = model or lm()
    chosen = BY_NAME[name]
    opened = read_values("compare", defaults("compare", model) | chosen.values, model)
    note = "".join(f"\n- {n}" for n in opened.notes)
    knobs = {n: opened.values[n] for n in preset_knobs() if n in opened.values}
    return knobs | {"preset-note": f"**{chosen.name}.** {chosen.why}" + (f" Not on this model:{note}" if note else "")}


def preset_knobs() -> list[str]:
    return [n for n in API if n not in ALWAYS and n != "student_answer"]


@gpu
def initial_map():
    """The separability map drawn when the page loads (a hint: the page loads without it)."""
    from steer_core.inspect.latents import separability_scores

    try:
        model = lm()
        layers, scores = separability_scores(model)
        return charts.separability_map(scores, layers, highlight=(model.middle_layer, list(range(model.n_heads))))
    except Exception:
        log.exception("separability map failed")
        return None


def _inputs(model) -> dict:
    """Every CompareRequest field's widget, laid out: question and level, the main knobs, the advanced ones."""
    w = {}
    with gr.Row():
        with gr.Column(scale=3):
            w["question"] = knob_widget(CompareRequest, "question")
            w["student_answer"] = knob_widget(CompareRequest, "student_answer")
        with gr.Column(scale=2):
            w["level"] = knob_widget(CompareRequest, "level", model)
    gr.Examples(
        example_rows(), inputs=[w["question"], w["student_answer"], w["level"]],
        label="Examples from the test split (click one)",
    )  # fmt: skip
    rest = [n for n in API if n not in w]
    with gr.Row():
        for name in (n for n in rest if not KNOBS[n].advanced):
            w[name] = knob_widget(CompareRequest, name, model)
    with gr.Accordion("Advanced (the paper's knobs)", open=False):
        for kinds in (("slider", "integer"), ("choice",), ("flag",), ("latents",)):
            with gr.Row():
                for name in (n for n in rest if KNOBS[n].advanced and KNOBS[n].kind in kinds):
                    w[name] = knob_widget(CompareRequest, name, model)
    return w


def _outputs(c: dict) -> dict:
    """The replies side by side, the charts, the report and its link; components by output name into c."""
    c["status"] = gr.Markdown("")
    with gr.Row(equal_height=True):
        for m in columns():
            with gr.Column(min_width=200, visible=m in methods.compare_columns()) as col:
                c[f"out-{m}"] = gr.Textbox(
                    label=methods.headline(m), lines=6, interactive=False, elem_id=f"out-{m}", buttons=["copy"]
                )
                c[f"judge-{m}"] = gr.Label(label="Judged level", num_top_classes=3, elem_id=f"judge-{m}")
            c[f"column-{m}"] = col
    with gr.Row():
        for name in ("probs", "attention"):
            c[PLOTS[name][2]] = captioned_plot(*PLOTS[name])
    gr.Markdown("The prompt, shaded by how much more (orange) or less (blue) the steered model reads each word:")
    c["attn-text"] = gr.HTML(elem_id="attn-text")
    with gr.Row():
        c["report"] = gr.File(label="Report of this run (JSON)", elem_id="report")
        c["link"] = link_box("compare")
    with gr.Accordion("For researchers: inside the sparse autoencoder", open=False):
        for pair in (("trace", "bars"), ("heat", "sep")):
            with gr.Row():
                for name in pair:
                    c[PLOTS[name][2]] = captioned_plot(*PLOTS[name])
    c["compare-replies"] = gr.JSON(visible=False, elem_id="compare-replies")
    return c


def compare_tab(demo: gr.Blocks, model) -> RunTab:
    """The Compare tab: one question, the methods side by side, the judge, the charts."""
    with gr.Tab("Compare", id="compare"):
        inputs = _inputs(model)
        with gr.Row():
            preset = Dropdown(
                [p.name for p in PRESETS], value=None, label="Presets", scale=1, elem_id="preset",
                info="named settings of the knobs above and under Advanced",
            )  # fmt: skip
            note = gr.Markdown(elem_id="preset-note")
        go = gr.Button("Compare", variant="primary", elem_id="run-compare")
        c = _outputs({})

        @endpoint("compare", CompareRequest.api_signature({"layers": model_layers(model)}))
        def compare(*args):
            """Unsteered, SAE-steered, query-steered and few-shot feedback (and on request more columns) for one
            question and answer, streamed; then verdicts, charts and a JSON report."""
            for out in run(dict(zip(API, args))):
                yield mapped(c, out)

        outputs = [c[n] for n in output_names()]
        ran = go.click(compare, [inputs[n] for n in API], outputs, api_name="compare")
        flags = methods.column_flags()
        shown = [inputs[f] for f in flags.values()] + [inputs["prompt"]]
        for m, flag in flags.items():  # a column shows when its box is ticked, or it is the prompt steered on top of
            inputs[flag].change(
                lambda on, prompt, m=m: gr.update(visible=bool(on) or prompt == m), [inputs[flag], inputs["prompt"]],
                c[f"column-{m}"], api_visibility="private",
            )  # fmt: skip
        headed = [c[f"out-{m}"] for m in columns()] + [c[f"column-{m}"] for m in flags]
        inputs["prompt"].change(
            lambda *v: prompt_shown(v[-1], dict(zip(flags, v[:-1]))), shown, headed, api_visibility="private"
        )
        knobs = preset_knobs()
        named = inputs | {"preset-note": note}
        preset.change(
            lambda name: mapped(named, choose_preset(name)), preset, [note, *(inputs[n] for n in knobs)],
            api_visibility="private",
        )  # fmt: skip
        demo.load(initial_map, None, c["plot-sep"], api_visibility="private")
    return RunTab("compare", inputs, go, ran, lambda r, path=None: mapped(c, show(r, report_path=path)), outputs,
                  c["report"], c["link"])  # fmt: skip
