"""Which heads to steer: the ranking behind `python -m steer_core heads`.

A query edit only changes which earlier tokens a head reads. A head whose level-L feedback already reads
rubric line L more than other levels' feedback reads it (its lift, `attention.rubric_line_lift`) has
something to find when steered toward a level, so the heads of highest lift are the candidates for
`--heads`. The lift is measured once per feedback for every layer and head together; the ranking is one
top-k over the whole (layers, heads) table, its flat indices split back into layer and head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import UserError
from ..prompts import FEEDBACK_TOKENS
from .attention import rubric_line_lift


def rank_lift(lift: torch.Tensor, layers: Sequence[int], top: int) -> list[dict]:
    """The `top` (layer, head) pairs of a (layers, heads) lift table, highest lift first, as
    {"layer", "head", "lift"} rows (all of them when the table has fewer)."""
    if top < 1:
        raise UserError(f"top must be at least 1, got {top}")
    if lift.ndim != 2 or lift.shape[0] != len(layers):
        raise ValueError(f"lift must be (layers, heads) for {len(layers)} layers, got {tuple(lift.shape)}")
    values, flat = torch.topk(lift.flatten().float(), min(top, lift.numel()))  # sorted, highest first
    layer_at, head = flat // lift.shape[1], flat % lift.shape[1]
    layer = torch.as_tensor(list(layers))[layer_at]
    return [
        {"layer": int(la), "head": int(h), "lift": round(float(v), 3)}
        for la, h, v in zip(layer.tolist(), head.tolist(), values.tolist(), strict=True)
    ]


def heads_text(ranked: Sequence[dict]) -> str:
    """The `--heads` value (layer.head pairs) that steers exactly the ranked heads."""
    return ",".join(f"{r['layer']}.{r['head']}" for r in ranked)


def rank_heads(
    lm,
    rows,
    layers: Sequence[int],
    top: int = 12,
    max_feedback_tokens: int = FEEDBACK_TOKENS,
    progress: bool = True,
) -> dict:
    """Teacher-force `rows` (train feedbacks of all six levels) under the rubric prompt and rank the heads of
    `layers` by lift. Returns {"heads": the `--heads` value of the `top` heads, "ranked": their rows, best first,
    "mean_lift": over every head measured, "n_heads", "n_feedbacks"}."""
    if top < 1:  # before the measurement, which reads every feedback
        raise UserError(f"top must be at least 1, got {top}")
    layers = [lm.check_layer(layer) for layer in layers]
    lift, _ = rubric_line_lift(lm, rows, layers, max_feedback_tokens, progress=progress)
    ranked = rank_lift(lift, layers, top)
    return {
        "heads": heads_text(ranked),
        "ranked": ranked,
        "mean_lift": round(float(lift.mean()), 3),
        "n_heads": lift.numel(),
        "n_feedbacks": len(rows),
    }
