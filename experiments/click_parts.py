"""Where a whole Compare click goes besides its generation, and what two of its parts cost the old way, in one
process, the ways taking turns round by round: bench's Compare request (64 tokens), its generation recording the
SAE row (as `compare_stream` runs it), then

- the judge;
- the inspection's two replays made from the recording (`inspect.replay.recorded_pair`, now) and replayed whole
  (`replay_pair`, before), with the largest difference between their queries and keys (float32 rounding);
- the charts drawn under plotly's default template (before: each chart's template validated as a deep copy)
  and under `charts.white_by_default` (now, as the app and bench run);
- the report file.

    python -m experiments.click_parts

Prints one JSON object: the median ms of each part over 9 rounds, and the differences.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import plotly.io as pio
import torch

from steer_core import bench, charts
from steer_core.generation import VIEWS, Request, stream_batch
from steer_core.inspect.replay import recorded_pair, replay_pair
from steer_core.judge.classifier import default_judge
from steer_core.model.loading import load_model
from steer_core.model.recording import RowRecording
from steer_core.views.compare import CompareRequest, compare_stream

ROUNDS = 9


def largest_difference(got, want, layer: int) -> float:
    """The largest absolute difference between two replay pairs' queries and their layer's keys."""
    out = 0.0
    for g, w in zip(got, want, strict=True):
        for a, b in ((g.q_in, w.q_in), (g.q_out, w.q_out), (g.cache.layers[layer].keys, w.cache.layers[layer].keys)):
            out = max(out, float((a - b).abs().max()))
    return out


def main() -> None:
    lm = load_model()
    req = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=64)
    cfg = req.steer("sae")
    reqs = req.requests()
    rec = RowRecording([r.method for r in reqs].index("sae"), cfg.middle_layer)
    *_, outs = stream_batch(lm, reqs, max_new_tokens=64, ignore_stop=True, record=rec, **VIEWS)
    reply = outs[rec.row].token_ids
    sae = Request(req.question, req.student_answer, "sae", req.level, steer=cfg, k_shots=req.k_shots)
    *_, result = compare_stream(lm, req, ignore_stop=True)  # the same reply, judged and inspected
    judge, texts = default_judge(), [o.text for o in result.outputs.values()]
    default = pio.templates.default

    def draw(template: str):
        pio.templates.default = template
        try:
            return result._draw()
        finally:
            pio.templates.default = default

    parts = {
        "judge": lambda: judge.judge(texts),
        "inspection_replayed": lambda: replay_pair(lm, sae, reply, cfg.middle_layer),
        "inspection_recorded": lambda: recorded_pair(lm, sae, reply, rec),
        "charts_plotly_default": lambda: draw("plotly"),
        "charts_white_by_default": lambda: draw(charts.TEMPLATE),
        "report": lambda: os.unlink(result.write_report(lm.label)),
    }
    times: dict[str, list[float]] = {}
    for round_ in range(ROUNDS + 1):  # the first round warms up
        for name, fn in parts.items() if round_ % 2 else reversed(parts.items()):
            t0 = time.perf_counter()
            fn()
            if round_:
                times.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
    with torch.no_grad():
        got, want = recorded_pair(lm, sae, reply, rec), replay_pair(lm, sae, reply, cfg.middle_layer)
    diff = largest_difference(got, want, cfg.middle_layer)
    out = {f"{name}_ms": round(statistics.median(t), 1) for name, t in times.items()}
    print(json.dumps(out | {"reply_tokens": len(reply), "largest_query_or_key_difference": diff}), flush=True)


if __name__ == "__main__":
    main()
