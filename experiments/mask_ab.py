"""What making a decoding step's attention mask costs (lean_step._step_mask), the way it was (create_causal_mask
and SDPA's conversion to a float mask at every step) against the way it is (the last step's float mask kept on the
cache, the new position's column written), in one process: bench's batches (64 tokens, stop tokens ignored, the
views' settings), the two ways taking turns round by round, each step's mask timed, each batch timed whole, and the
replies checked to be the same both ways.

    python -m experiments.mask_ab [OUT.jsonl] [ROUNDS]

Prints, and appends to OUT.jsonl if given, one JSON object per batch: {"batch", "before_us", "after_us",
"before_ms", "after_ms", "same_replies"} (_us: the median over rounds of each round's median mask; _ms: the median
batch, whole).
"""

from __future__ import annotations

import statistics
import sys
import time

from experiments.batch_costs import batches
from experiments.jsonl import emit
from experiments.sites_ab import timed
from steer_core.generation import VIEWS, generate_batch
from steer_core.model import lean_step
from steer_core.model.loading import load_model

BATCHES = ("none", "compare4", "ladder")
KEPT = lean_step._step_mask


def mask_as_it_was(inner, h, attention_mask, cache, position_ids, lean):
    """_step_mask before the kept mask: made again at every step."""
    cache.__dict__.pop("_lean_mask", None)
    return KEPT(inner, h, attention_mask, cache, position_ids, lean)


def main() -> None:
    if len(sys.argv) > 3 or (len(sys.argv) == 3 and not sys.argv[2].isdigit()):
        raise SystemExit(__doc__)
    out, rounds = (sys.argv[1] if len(sys.argv) > 1 else None), (int(sys.argv[2]) if len(sys.argv) == 3 else 7)
    lm = load_model()
    if not lean_step.takes(lm.model):
        raise SystemExit("the default model's decoding steps are expected to take the lean path")
    made = batches(lm)
    ways = {"before": mask_as_it_was, "after": KEPT}
    masks = {(b, w): [] for b in BATCHES for w in ways}
    wholes = {(b, w): [] for b in BATCHES for w in ways}
    replies = {}
    try:
        for r in range(rounds + 1):  # round 0 warms up
            for name in BATCHES:
                for way in ways if r % 2 else reversed(ways):
                    spent: list[int] = []
                    lean_step._step_mask = timed(ways[way], spent)
                    t = time.perf_counter()
                    outs = generate_batch(lm, made[name], max_new_tokens=64, ignore_stop=True, **VIEWS)
                    whole = time.perf_counter() - t
                    replies[(name, way)] = [o.token_ids for o in outs]
                    if r:
                        masks[(name, way)].append(statistics.median(spent) / 1e3)
                        wholes[(name, way)].append(whole * 1e3)
    finally:
        lean_step._step_mask = KEPT
    for name in BATCHES:
        line = {"batch": name} | {f"{w}_us": round(statistics.median(masks[(name, w)]), 1) for w in ways}
        line |= {f"{w}_ms": round(statistics.median(wholes[(name, w)]), 1) for w in ways}
        emit(line | {"same_replies": replies[(name, "before")] == replies[(name, "after")]}, out)


if __name__ == "__main__":
    main()
