"""What three per-click overheads cost, measured against the ways they replaced, in one process:

- a decoding step's hooks: the loop registered and removed a dispatcher on every steered site at every step
  (query_edits); it now holds them for the loop (hooks.dispatchers_held) and a step only switches its edits;
- a model's key: each SAE, prototype and offsets lookup resolved the adapter's path (loading.adapter_tag);
- the separability map: every Compare click computed it from the same prototypes (inspect.latents._separability).

Part by part (each timed alone, many calls, the two ways taking turns), then the Compare batch and the whole Compare
click (bench's question and click, 64 tokens, stop tokens ignored), the two ways taking turns round by round, with
the Compare's replies checked to be the same both ways, and the separability map the same when kept.

    python -m experiments.overheads_ab OUT.jsonl [ROUNDS]

Writes one JSON object per figure: {"figure", "before_ms", "after_ms", "rounds"} (medians), and last
{"same_replies": bool, "same_separability": bool}.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from steer_core import bench, generation
from steer_core.generation import VIEWS, stream_batch
from steer_core.inspect import latents
from steer_core.model import hooks, loading
from steer_core.model.loading import load_model
from steer_core.sae.prototypes import separability
from steer_core.steering.assets import steering_groups
from steer_core.views.compare import CompareRequest

NEW = {"held": generation.dispatchers_held, "tag": loading.adapter_tag, "separability": latents._separability}


def _resolving_tag(adapter):
    """adapter_tag as it was: the path resolved at every call."""
    if not adapter:
        return None
    if Path(adapter).resolve() == loading.ADAPTER_DIR:
        return loading.SHIPPED_ADAPTER_TAG
    return NEW["tag"](adapter)


OLD = {
    "held": lambda lm, sites: contextlib.nullcontext(),
    "tag": _resolving_tag,
    "separability": lambda codes: separability(codes).cpu().numpy(),
}


def use(way: dict) -> None:
    generation.dispatchers_held, loading.adapter_tag, latents._separability = (
        way["held"], way["tag"], way["separability"],
    )  # fmt: skip


def per_call_ms(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e3


def parts(lm, compare: CompareRequest) -> dict:
    """Each overhead alone: {figure: (old way, new way)} as zero-argument calls."""
    reqs = compare.requests(generation_layers(lm))
    edits = generation.layer_edits(lm, steering_groups(lm, reqs), "generated")

    def hooks_step(held: bool):
        def run():
            with hooks.query_edits(lm, edits):
                pass

        def loop():  # 63 steps, as a 64-token reply's decoding
            with (NEW["held"] if held else OLD["held"])(lm, list(edits)):
                for _ in range(63):
                    run()

        return loop

    return {
        "hooks of a 64-token Compare's decoding steps": (hooks_step(False), hooks_step(True)),
        "a model's key, read 222 times (one Compare click's lookups)": (
            lambda: [_resolving_tag(lm.adapter) for _ in range(222)],
            lambda: [NEW["tag"](lm.adapter) for _ in range(222)],
        ),
        "the separability map": (
            lambda: (use({**NEW, "separability": OLD["separability"]}), latents.separability_scores(lm)),
            lambda: (use(NEW), latents.separability_scores(lm)),
        ),
    }


def generation_layers(lm):
    from steer_core.views.compare import residual_layers

    return residual_layers(lm)


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    out, rounds = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) == 3 else 9
    lm = load_model()
    compare = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=64)
    rows = []
    for figure, (old, new) in parts(lm, compare).items():
        times = {"before": [], "after": []}
        for round_ in range(rounds + 1):
            for name, fn in (("before", old), ("after", new)):
                ms = per_call_ms(fn, 5)
                if round_:
                    times[name].append(ms)
        rows.append({"figure": figure} | {f"{k}_ms": round(statistics.median(v), 3) for k, v in times.items()})
    use(NEW)
    reqs = compare.requests(generation_layers(lm))
    replies = {}

    def batch(name):
        outs = list(stream_batch(lm, reqs, max_new_tokens=64, ignore_stop=True, **VIEWS))[-1]
        replies.setdefault(name, [o.token_ids for o in outs])

    def click(name):
        bench.compare_click(lm, compare)

    wall = {}
    for round_ in range(rounds + 1):  # the first round warms up
        for name, way in (("before", OLD), ("after", NEW)):
            use(way)
            for figure, fn in (("the Compare batch", batch), ("the whole Compare click", click)):
                t0 = time.perf_counter()
                fn(name)
                if round_:
                    wall.setdefault(figure, {}).setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
    use(NEW)
    for figure, times in wall.items():
        rows.append({"figure": figure} | {f"{k}_ms": round(statistics.median(v), 1) for k, v in times.items()})
    for row in rows:
        row["rounds"] = rounds
    same = replies["before"] == replies["after"]
    with torch.no_grad():  # the map computed the old way, then kept the new way (read twice: the second is kept)
        use(OLD)
        a = latents.separability_scores(lm)[1]
        use(NEW)
        b = [latents.separability_scores(lm)[1] for _ in range(2)][-1]
    rows.append({"same_replies": same, "same_separability": bool(((a == b) | (a != a)).all())})
    with out.open("w") as f:
        for row in rows:
            print(json.dumps(row), flush=True)
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
