"""The About the levels tab: the six levels, as the prompts and the judge describe them, and the loaded model."""

from __future__ import annotations

import gradio as gr

from steer_core.bloom import DESCRIPTIONS, LEVELS
from steer_core.steering.model_defaults import describe


def levels_tab(demo: gr.Blocks, model) -> None:
    """The six levels, as the prompts and the judge describe them."""
    with gr.Tab("About the levels"):
        gr.Markdown("\n".join(f"- **{lv.capitalize()}**: {DESCRIPTIONS[lv]}" for lv in LEVELS))
        gr.Markdown(f"**The loaded model.** {describe(model)}.", elem_id="about-model")
