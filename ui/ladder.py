"""The Level ladder tab: one question answered at every level in one batch. `run` is its handler (the widget
values in, outputs by name out, streamed); the widgets and /ladder's parameters are LadderRequest's fields."""

from __future__ import annotations

import gradio as gr

from steer_core.bloom import LEVELS
from steer_core.methods import PLAIN
from steer_core.views.ladder import LadderRequest, ladder_stream
from steer_core.views.requests import knobs_of

from .errors import guarded
from .runtime import lm
from .sharing import RunTab, view_tab
from .widgets import chart_and_downloads, link_box, model_layers, reply_column, request_inputs, temp_file, verdict

NAMES = ("unsteered", *LEVELS)  # the ladder's rows: the unsteered reply, then one a level
PARAMS = tuple(knobs_of(LadderRequest))  # /ladder's parameters, in order


def output_names() -> list[str]:
    """/ladder's outputs by name, in order."""
    names = [f"ladder-{n}" for n in NAMES] + [f"ladder-judge-{n}" for n in NAMES]
    return names + [f"ladder-base-{lv}" for lv in LEVELS] + ["ladder-plot", "ladder-json", "ladder-csv", "status"]


def show(result, label: str | None = None, report_path: str | None = None) -> dict:
    """A run's outputs by name (a live run's files are written for model `label`; a restored one has its report)."""
    texts = [o.text for o in result.outputs]
    base = texts[len(NAMES) :]
    out = {f"ladder-{n}": t for n, t in zip(NAMES, texts)} | {"status": result.status()}
    out |= {f"ladder-base-{lv}": t for lv, t in zip(LEVELS, base + [""] * (len(LEVELS) - len(base)))}
    if result.done:
        out |= {f"ladder-judge-{n}": verdict(v) for n, v in zip(NAMES, result.verdicts)}
        out["ladder-plot"] = result.chart()
        if not result.complete:  # judged, its perplexities still being read: no downloads yet (nor the last run's)
            files = (None, None)
        elif report_path:  # a restored run: its report, and its table again
            files = (report_path, temp_file("ladder", ".csv", result.csv_text()))
        else:
            files = result.write_files(label)
        out |= dict(zip(("ladder-json", "ladder-csv"), files))
    return out


@guarded("ladder")
def run(values: dict, model=None, judge=None):
    """The same question answered at every Bloom level: unsteered, then SAE-steered toward remember .. create
    (and the same for a baseline on request), one batch; then verdicts, the chart and downloads."""
    model = model or lm()
    req = LadderRequest.from_ui(**values)
    for result in ladder_stream(model, req.compare_request(model_layers(model)), req.baseline, judge):
        yield show(result, model.label)


def _outputs(c: dict) -> dict:
    c["status"] = gr.Markdown("")
    with gr.Row(equal_height=True):
        for i, name in enumerate(NAMES):
            title = name if i == 0 else f"toward {name}"
            c[f"ladder-{name}"], c[f"ladder-judge-{name}"] = reply_column(
                title, f"ladder-{name}", f"ladder-judge-{name}"
            )
    with gr.Row(equal_height=True, visible=False) as c["base-row"]:  # shown when a baseline is chosen
        gr.Column(min_width=160)
        for lv in LEVELS:
            with gr.Column(min_width=160):
                c[f"ladder-base-{lv}"] = gr.Textbox(
                    label=f"baseline: {lv}", lines=5, interactive=False, elem_id=f"ladder-base-{lv}"
                )
    gr.Markdown(
        "**How to read it.** Dots on the dashed diagonal = the reply asks for the level it was steered "
        "toward; bars = how sure the judge is of that level (1/6 is chance)."
    )
    chart_and_downloads(c, "ladder", "Ladder", "Judged level against target level")
    with gr.Row():
        c["handout"] = gr.File(label="Handout: the ladder on one printable page (HTML)", elem_id="ladder-handout")
        c["link"] = link_box("ladder")
    return c


def ladder_tab(demo: gr.Blocks, model) -> RunTab:
    """The Level ladder tab: one question answered at every level in one batch."""
    with gr.Tab("Level ladder", id="ladder"):
        inputs, go = request_inputs(
            LadderRequest, model,
            "The same question answered at **every** Bloom level: the unsteered reply, then the reply steered "
            "toward each level, side by side in one run. The chart puts the level the judge reads against "
            "the level asked for: if steering worked, the dots would sit on the diagonal.",
            ("Run the ladder", "run-ladder"),
        )  # fmt: skip
        c = _outputs({})
        pick = [inputs["baseline"], inputs["prompt"]]  # the second row: a baseline, or the prompt steered on top of
        for w in pick:
            w.change(
                lambda b, p: gr.update(visible=b != "none" or p != PLAIN), pick, c["base-row"],
                api_visibility="private",
            )  # fmt: skip
        return view_tab(
            "ladder", LadderRequest, (run, show, output_names), c, inputs, go,
            "The same question answered at every Bloom level: unsteered, then SAE-steered toward remember .. "
            "create (and the same for a baseline on request), one batch; then verdicts, the chart and downloads.",
            handout=c["handout"],
        )  # fmt: skip
