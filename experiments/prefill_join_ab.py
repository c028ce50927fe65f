"""What the prefill's join costs: the parts' caches (one per distinct prompt) joined into the generation's static cache
the way 85b5539 did (each part padded, the parts concatenated and reordered, then copied in by the cache's update)
and the way `generation._joined_cache` does now (each part copied straight to its rows), on the real parts of bench's
Compare, ladder and unsteered reply, in one process, the ways taking turns. Checks that both give the same tensors.

    python -m experiments.prefill_join_ab

Prints one JSON object per batch: {"batch", "same", "before_ms", "now_ms"}, medians of 21 rounds.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from steer_core import bench, generation
from steer_core.model.loading import load_model
from steer_core.views.compare import CompareRequest
from steer_core.views.ladder import ladder_rows
from steer_core.views.rows import row_request

ROUNDS = 21


def joined_before(lm, parts, source, width, max_len):
    """85b5539's join: pad each part to `width`, concatenate, gather the rows, copy in with the cache's update."""
    from transformers import StaticCache

    at = {i: n for n, i in enumerate(i for rows, _ in parts for i in rows)}
    gather = torch.tensor([at[s] for s in source], device=lm.device)
    cache = StaticCache(config=lm.model.config, max_cache_len=max_len)
    positions = torch.arange(width, device=lm.device)
    for layer in range(len(parts[0][1].layers)):
        ks, vs = [], []
        for _, c in parts:
            k, v = c.layers[layer].keys, c.layers[layer].values
            pad = width - k.shape[2]
            ks.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
            vs.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
        cache.update(torch.cat(ks)[gather], torch.cat(vs)[gather], layer, {"cache_position": positions})
    return cache


def main() -> None:
    lm = load_model()
    req = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=64)
    batches = {
        "compare4": req.requests(),
        "ladder": [row_request(req, row) for row in ladder_rows()],
        "none": [generation.Request(bench.Q, bench.A, "none")],
    }
    now, seen = generation._joined_cache, {}

    def keep_arguments(lm_, *args):
        seen["args"] = args
        return now(lm_, *args)

    generation._joined_cache = keep_arguments
    try:
        for name, reqs in batches.items():
            generation.generate_batch(lm, reqs, max_new_tokens=1, **generation.VIEWS)
            args = seen["args"]
            a, b = joined_before(lm, *args), now(lm, *args)
            same = all(
                torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values) for x, y in zip(a.layers, b.layers)
            )
            times: dict[str, list[float]] = {"before": [], "now": []}
            for round_ in range(ROUNDS + 1):  # the first round warms up
                for way in ("before", "now") if round_ % 2 else ("now", "before"):
                    t0 = time.perf_counter()
                    (joined_before if way == "before" else now)(lm, *args)
                    if round_:
                        times[way].append((time.perf_counter() - t0) * 1e3)
            out = {"batch": name, "same": same} | {f"{w}_ms": round(statistics.median(t), 2) for w, t in times.items()}
            print(json.dumps(out), flush=True)
    finally:
        generation._joined_cache = now


if __name__ == "__main__":
    main()
