"""The Does it steer? tab: every method along its strength curve, from the shipped result files. `does_it_steer`
is its handler."""

from __future__ import annotations

import gradio as gr

from steer_core import charts
from steer_core.views.evidence import SPLITS, evidence

from .errors import guarded
from .widgets import Radio


@guarded("frontier")
def does_it_steer(split="test"):
    """The frontier of the shipped result rows of a split: the chart, and every method at matched perplexity."""
    from steer_core.evaluation.frontier import MATCHED_RATIOS
    from steer_core.evaluation.tables import matched_table

    ev = evidence(split)
    caption = (
        f"**{SPLITS[split].capitalize()}.** Rows: {', '.join(f'`{f}`' for f in ev.files)}; 95% intervals from "
        f"{ev.frontier.draws} resamplings of whole scenarios.\n\n" + matched_table(ev.frontier, MATCHED_RATIOS)
    )
    return charts.frontier_chart(ev.frontier), caption


def evidence_tab(demo: gr.Blocks, model) -> None:
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
