"""A layer's products of one input run as one kernel call (the query's, key's and value's; the gate's and up's:
small_batch.pack_together, lean_layers.cpp's TOGETHER) against one call each, the same build both ways:

    python -m experiments.together_ab [OUT.jsonl] [ROUNDS]

1. One decoding step alone (`steps`): bench's prompt read into a static cache for 1, 2, 3, 4 and 7 rows, then the
   same step (the cache's length set back each time) run 10 times a way, the plan's TOGETHER field cleared for
   "apart", the ways taking turns over 3 x ROUNDS rounds; it first checks that both give the same logits. Lines:
   {"rows", "cpu", "apart_step_ms", "together_step_ms"} (medians).
2. Whole generations (`generations`): bench's batches (experiments.batch_costs: one reply, a Compare clicked again,
   three rows, the Compare, the ladder; 64 tokens, stop tokens ignored, the views' settings), each both ways in turn,
   the order swapped every round (experiments.sites_ab.ab_rounds; "apart" plans every TOGETHER field as 0). Lines:
   {"batch", "rows", "cpu", "apart_ms", "together_ms", "same_replies"} and, but for one reply, each way's ratio to
   one reply in the same round.
Prints, and appends to OUT.jsonl if given.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from experiments.jsonl import emit
from experiments.sites_ab import ab_rounds
from steer_core.bench import cpu_model
from steer_core.model import lean_step
from steer_core.model.loading import load_model

BATCHES = ("none", "compare again", "compare - few", "compare4", "ladder")
STEP_ROWS, PROMPT = (1, 2, 3, 4, 7), 90


def steps(lm, rows: int, rounds: int) -> dict[str, float]:
    """One decoding step of `rows` rows, ms, each way (medians of 10-step blocks)."""
    from transformers import StaticCache

    ids = torch.randint(100, 1000, (rows, PROMPT), generator=torch.Generator().manual_seed(rows))
    cache = StaticCache(config=lm.model.config, max_cache_len=PROMPT + 8)
    with torch.no_grad():
        lm.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    lengths = [layer.cumulative_length for layer in cache.layers]
    start = [n.clone() for n in lengths]
    mask, pos = torch.ones(rows, PROMPT + 1, dtype=torch.long), torch.full((rows, 1), PROMPT)
    layers, token = lean_step.lean_layers(), torch.full((rows, 1), 500)

    def step():
        for n, s in zip(lengths, start):
            n.copy_(s)
        return lean_step.decode_logits(lm.model, token, mask, pos, cache, native_layers=layers)

    together = step()
    plan = cache._lean_plan
    fields = {"together": plan.fields[:, -1].clone(), "apart": torch.zeros_like(plan.fields[:, -1])}
    plan.fields[:, -1] = 0
    if not torch.equal(step(), together):
        raise AssertionError(f"{rows} rows: the logits differ between the two ways")
    times = {way: [] for way in fields}
    for r in range(rounds):
        for way in fields if r % 2 else reversed(fields):
            plan.fields[:, -1] = fields[way]
            t = time.perf_counter()
            for _ in range(10):
                step()
            times[way].append((time.perf_counter() - t) * 100)  # ms a step
    return {f"{way}_step_ms": round(statistics.median(t), 3) for way, t in times.items()}


def main() -> None:
    if len(sys.argv) > 3:
        raise SystemExit(__doc__)
    out = sys.argv[1] if len(sys.argv) > 1 else None
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    if lean_step.lean_layers() is None:
        raise SystemExit("the C++ decoder layers are off here (no compiler, or STEER_KERNEL=off)")
    lm = load_model()
    for rows in STEP_ROWS:
        emit({"rows": rows, "cpu": cpu_model()} | steps(lm, rows, 3 * rounds), out)
    ways = {"apart": lambda packed, biases: 0, "together": lean_step._together}

    def about(name, requests):
        return {"rows": len(requests), "cpu": cpu_model()}

    ab_rounds(lm, lean_step, "_together", ways, rounds, out, names=BATCHES, time_calls=False, about=about)


if __name__ == "__main__":
    main()
