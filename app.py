"""Bloom steering demo: the web UI. The page is wired here from the tabs of the `ui` package (widgets, their
layout and the mapping of steer_core's results to them); every run (generation, judging, views, charts,
reports) is steer_core's.

    python app.py        # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)

Environment: STEER_MODEL (default: the embedded SmolLM2-135M-Instruct with its feedback adapter),
STEER_ADAPTER (a LoRA folder for that model, or none), STEER_DEVICE (auto | cpu | cuda),
STEER_CONCURRENCY (requests served at once, default 4); on a shared server STEER_TRAINING (on | private | off;
off on a Hugging Face Space by default), STEER_QUEUE_SIZE and STEER_PER_CLIENT; read by ui/runtime.py.
"""

from __future__ import annotations

import logging
import os

import gradio as gr

from steer_core.charts import white_by_default
from ui import (
    limits,  # imports nothing of the model's
    runtime,  # before the tabs: ZeroGPU's `spaces` is imported there, before CUDA is touched
)
from ui.compare import compare_tab
from ui.evidence import evidence_tab
from ui.ladder import ladder_tab
from ui.latents import clicked_box, latents_tab
from ui.levels import describe, levels_tab
from ui.questions import questions_tab
from ui.sharing import share_runs, sharing_panel
from ui.sweep import sweep_tab
from ui.train import train_tab

HEADER = (
    "# Steer the thinking level of feedback\n"
    "Type a question and a student's answer, pick the level of Bloom's taxonomy the feedback should ask "
    "for, and compare ways of getting it from a language model. **SAE-steered** "
    "follows *Steered Generation via Gradient Descent on Sparse Features*: it edits the model's attention "
    "queries in the sparse code of an autoencoder, toward the chosen level, without changing the prompt. By "
    "default it adds a per-level code offset fitted on the model's own feedback; the paper's descent to a "
    "level prototype is the *prototype* target under *Advanced*. A classifier (the *judge*) says which "
    "level each reply actually asks for. How far each method moves the level at the same fluency: the "
    "*Does it steer?* tab.\n\n**Model:** {model}."
)


def build() -> gr.Blocks:
    """The page: the header, the sharing panel, the tabs, and the links, reports and history over the tabs
    that run one question."""
    model = runtime.lm()
    with gr.Blocks(title="Bloom steering demo") as demo:
        gr.Markdown(HEADER.format(model=describe(model)))
        sharing = sharing_panel()
        with gr.Tabs() as sharing.tabs:
            run_tabs = [compare_tab(demo, model), ladder_tab(demo, model), sweep_tab(demo, model)]
            for tab in (questions_tab, train_tab, evidence_tab):
                tab(demo, model)
            open_card_on_click = latents_tab(demo, model, run_tabs[0].inputs["latents"], sharing.tabs)
            levels_tab(demo, model)
        open_card_on_click(clicked_box())
        share_runs(demo, run_tabs, sharing)
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    runtime.limit_malloc_arenas()
    white_by_default()
    demo = build()
    demo.queue(default_concurrency_limit=runtime.CONCURRENCY, max_size=runtime.QUEUE_SIZE or None)
    limits.bound(demo, runtime.QUEUE_SIZE, runtime.PER_CLIENT)
    runtime.trim_after_each_request(demo)
    runtime.warm_prefixes_in_background(runtime.lm())
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        theme=gr.themes.Soft(),
    )


if __name__ == "__main__":
    main()
