"""What the Compare batch costs beyond one reply, part by part: three batches taking turns round by round, each
timed whole and in its parts (a clock around the prompts' forwards, the join of their caches and the decoding
steps; the same code, so the same tokens).

    python -m experiments.compare_parts [OUT.jsonl]

Parts, ms (medians over rounds; 64 tokens, stop tokens ignored, the views' settings):
  whole       the batch, from the call to its last token
  prompts     each distinct prompt's forward (one reply: its prompt; the Compare: the plain prompt its unsteered,
              SAE and query rows share, then the few-shot prompt), over its cached prefix
  products    of each prompt's forward, the time in its Linear layers' products (MKL's: the bits the views and
              the evaluation share), which no float32 read through the same products can spare
  join        the prompts' caches copied into the one static cache of the batch (generation._joined_cache)
  steps       the 63 decoding steps after the first token
  rest        the whole less the parts (picking tokens, each reply's text, Python)
Batches: one reply, the Compare's three plain rows alone ("compare - few") and the Compare, taking turns. The last
line gives ratios to one reply taken round by round (`ratios`), among them the three plain rows with the few-shot
prompt's products added: what the Compare would cost if its few-shot row cost nothing but those products.
Prints, and appends to OUT.jsonl if given, one JSON object per batch and a last one with the Compare's extra time
over one reply split the same way.
"""

from __future__ import annotations

import statistics
import sys
import time
from contextlib import contextmanager

import torch

from experiments.batch_costs import batches
from experiments.jsonl import emit
from steer_core import generation
from steer_core.bench import ratio_spread
from steer_core.generation import VIEWS, stream_batch
from steer_core.model import lean_step
from steer_core.model.loading import load_model

ROUNDS, TOKENS = 9, 64


@contextmanager
def clocked(model, parts: dict[str, list[float]]):
    """The model's forwards (the prompts' reads: the lean decoding steps do not call it) and the products of their
    Linear layers, the join and the decoding steps timed into `parts` while the block runs."""
    saved, products = [], []

    def wrap(owner, name, key, after=None):
        fn = getattr(owner, name)
        saved.append((owner, name, fn, name in owner.__dict__))

        def timed(*args, **kw):
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                parts.setdefault(key, []).append(time.perf_counter() - t)
                if after is not None:
                    after()

        setattr(owner, name, timed)

    def read_done():  # the products of the prompt read that just ended
        parts.setdefault("products", []).append(sum(products))
        products.clear()

    wrap(type(model), "__call__", "prompts", read_done)
    # a prompt's Linear layers call F.linear (model/small_batch.py routes few rows elsewhere: decoding's)
    wrap(torch.nn.functional, "linear", "linear", lambda: products.append(parts["linear"][-1]))
    wrap(generation, "_joined_cache", "join")
    wrap(generation, "_decode_step", "steps")
    try:
        yield
    finally:
        for owner, name, fn, own in reversed(saved):
            if own:
                setattr(owner, name, fn)
            else:
                delattr(owner, name)


def timed_batch(lm, reqs) -> dict[str, float]:
    parts: dict[str, list[float]] = {}
    with clocked(lm.model, parts):
        t = time.perf_counter()
        for _ in stream_batch(lm, reqs, max_new_tokens=TOKENS, ignore_stop=True, **VIEWS):
            pass
        whole = time.perf_counter() - t
    out = {"whole": whole * 1e3} | {f"prompt{i}": s * 1e3 for i, s in enumerate(parts.get("prompts", []))}
    products = {f"products{i}": s * 1e3 for i, s in enumerate(parts.get("products", []))}
    out |= {"join": sum(parts.get("join", [])) * 1e3, "steps": sum(parts.get("steps", [])) * 1e3}
    out["rest"] = out["whole"] - sum(v for k, v in out.items() if k != "whole")
    return out | products  # within the prompts' reads: not parts of their own


def ratios(rounds: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Per round, over one reply of the same round (medians over rounds, as bench takes its ratios): the Compare;
    its three plain rows alone (compare - few); and those three rows with the few-shot prompt's products added: what
    the Compare would cost if its few-shot row cost nothing but those products."""
    times = {name: [g["whole"] for g in got] for name, got in rounds.items()}
    times["few + products"] = [f["whole"] + c["products1"] for f, c in zip(rounds["compare - few"], rounds["compare4"])]
    named = {
        "ratio": "compare4",
        "three plain rows, ratio": "compare - few",
        "three plain rows and the few-shot products, ratio": "few + products",
    }
    return {key: round(ratio_spread(times, name)[0], 3) for key, name in named.items()}


def main() -> None:
    if len(sys.argv) > 2:
        raise SystemExit(__doc__)
    lm = load_model()
    if not lean_step.takes(lm.model):  # its decoding steps would call the model too
        raise SystemExit("the default model's decoding steps are expected to take the lean path")
    made = batches(lm)
    runs = {name: made[name] for name in ("none", "compare - few", "compare4")}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for r in range(ROUNDS + 1):  # round 0 warms up
        for name, reqs in runs.items() if r % 2 else reversed(runs.items()):
            got = timed_batch(lm, reqs)
            if r:
                rounds[name].append(got)
    lines = []
    for name, got in rounds.items():
        keys = got[0].keys()
        lines.append({"batch": name} | {k: round(statistics.median(g[k] for g in got), 1) for k in keys})
    none, _, c4 = lines
    extra = {"batch": "compare4 - none", "whole": round(c4["whole"] - none["whole"], 1)}
    extra["few-shot prompt"] = c4["prompt1"]
    extra["its products"] = c4["products1"]
    extra["plain prompt"] = round(c4["prompt0"] - none["prompt0"], 1)
    for k in ("join", "steps", "rest"):
        extra[k] = round(c4[k] - none[k], 1)
    extra["per step"] = round(extra["steps"] / (TOKENS - 1), 3)
    extra |= ratios(rounds)
    for line in lines + [extra]:
        emit(line, sys.argv[1] if len(sys.argv) == 2 else None)


if __name__ == "__main__":
    main()
