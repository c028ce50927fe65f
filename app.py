"""Bloom steering demo (web UI). Thin Gradio layer over steer_core.

Until the steering UI lands this page offers only what already works for real: the Bloom-level
judge on any feedback text. It does not steer anything yet.
"""

import os

import gradio as gr

from steer_core.bloom import DESCRIPTIONS, LEVELS
from steer_core.judge import default_judge

MAX_CHARS = 4000


def judge_feedback(text: str) -> dict:
    if not isinstance(text, str) or not text.strip():
        raise gr.Error("Please type some feedback to classify.")
    if len(text) > MAX_CHARS:
        raise gr.Error(f"Feedback is too long ({len(text)} characters); the limit is {MAX_CHARS}.")
    return default_judge().judge([text])[0]["probs"]


def build() -> gr.Blocks:
    with gr.Blocks(title="Bloom steering demo") as demo:
        gr.Markdown(
            "# Bloom-level feedback judge\n"
            "Paste teacher feedback to see which level of Bloom's taxonomy it asks of the student. "
            "(Steering of the language model is not in this build yet.)\n\n"
            + "\n".join(f"- **{lv}**: {DESCRIPTIONS[lv]}" for lv in LEVELS)
        )
        text = gr.Textbox(label="Feedback", lines=4)
        out = gr.Label(label="Judged Bloom level", num_top_classes=6)
        gr.Button("Judge", variant="primary").click(judge_feedback, text, out, api_name="judge")
    return demo


if __name__ == "__main__":
    build().queue().launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )
