"""The Strength sweep tab: one level at several strengths in one batch. `run` is its handler (the widget
values in, outputs by name out, streamed); the widgets and /sweep's parameters are SweepRequest's fields."""

from __future__ import annotations

import gradio as gr

from steer_core.views.requests import knobs_of
from steer_core.views.sweep import MAX_SWEEP, SweepRequest, sweep_stream

from .errors import guarded
from .runtime import lm
from .sharing import RunTab, view_tab
from .widgets import chart_and_downloads, link_box, model_layers, reply_column, request_inputs, temp_file, verdict

PARAMS = tuple(knobs_of(SweepRequest))  # /sweep's parameters, in order


def output_names() -> list[str]:
    """/sweep's outputs by name, in order: a reply and a verdict a strength, the chart, the downloads, the status."""
    names = [f"sweep-{i}" for i in range(MAX_SWEEP)] + [f"sweep-judge-{i}" for i in range(MAX_SWEEP)]
    return names + ["sweep-plot", "sweep-json", "sweep-csv", "status"]


def show(result, label: str | None = None, report_path: str | None = None) -> dict:
    """A run's outputs by name (a live run's files are written for model `label`; a restored one has its report)."""
    k = len(result.rows)
    out = {"status": result.status()}
    for i in range(MAX_SWEEP):  # a box per strength
        shown = i < k
        reply = result.outputs[i].text if shown else ""
        name = result.rows[i].name if shown else None
        judged = verdict(result.verdicts[i]) if shown and result.done else None
        if result.done and report_path is None:  # a finished live run: plain values (the API's)
            out[f"sweep-{i}"], out[f"sweep-judge-{i}"] = reply, judged
        else:  # streaming, or restored: each box takes its strength as its label; the rest hide
            out[f"sweep-{i}"] = gr.update(value=reply, label=name, visible=shown)
            out[f"sweep-judge-{i}"] = gr.update(value=judged, visible=shown)
    if result.done:
        files = (report_path, temp_file("sweep", ".csv", result.csv_text())) if report_path else None
        out |= dict(zip(("sweep-json", "sweep-csv"), files or result.write_files(label)))
        out["sweep-plot"] = result.chart()
    return out


@guarded("sweep")
def run(values: dict, model=None, judge=None):
    """One level at several steering strengths in one batch: how far can it be pushed before the text stops
    making sense? Then verdicts, the probability/perplexity chart and a download."""
    model = model or lm()
    req = SweepRequest.from_ui(**values)
    for result in sweep_stream(model, req.compare_request(model_layers(model)), req.strengths, judge):
        yield show(result, model.label)


def _outputs(c: dict) -> dict:
    c["status"] = gr.Markdown("")
    with gr.Row(equal_height=True):
        for i in range(MAX_SWEEP):
            c[f"sweep-{i}"], c[f"sweep-judge-{i}"] = reply_column(f"strength {i}", f"sweep-{i}", f"sweep-judge-{i}")
    gr.Markdown(
        "**How to read it.** The coloured line is how sure the judge is that the reply asks for your "
        "level; the dotted line is perplexity (how surprised the unsteered model is by the text: higher "
        "= less fluent). Good steering raises the first without the second crossing the red dashes."
    )
    chart_and_downloads(c, "sweep", "Sweep", "Probability and perplexity against strength")
    c["link"] = link_box("sweep")
    return c


def sweep_tab(demo: gr.Blocks, model) -> RunTab:
    """The Strength sweep tab: one level at several strengths in one batch."""
    with gr.Tab("Strength sweep", id="sweep"):
        inputs, go = request_inputs(
            SweepRequest, model,
            "One level at several steering strengths, side by side in one run: how far can you push before "
            "the feedback stops making sense?",
            ("Run the sweep", "run-sweep"), starts={"level": "create"},
        )  # fmt: skip
        c = _outputs({})
        return view_tab(
            "sweep", SweepRequest, (run, show, output_names), c, inputs, go,
            "One level at several steering strengths in one batch: how far can it be pushed before the text stops "
            "making sense? Then verdicts, the probability/perplexity chart and a download.", slow=True,
        )  # fmt: skip
