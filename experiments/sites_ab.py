"""What working out a decoding step's sites costs (lean_step.Plan.sites: each layer's flags and fixed shifts), the way
it was (every site planned again at every step, the flags written through new tensors) against the way it is (a
site whose hooks and edit are the last step's objects keeps its answer, the flags written in place), in one process:
bench's batches (64 tokens, stop tokens ignored, the views' settings), the two ways taking turns round by round, each
step's sites timed, and the replies checked to be the same both ways.

    python -m experiments.sites_ab [OUT.jsonl] [ROUNDS]

Prints, and appends to OUT.jsonl if given, one JSON object per batch: {"batch", "before_us", "after_us",
"before_ms", "after_ms", "same_replies"}, and for the Compare and the ladder "before_ratio" and "after_ratio" (_us: the
median over rounds of each round's median step's sites; _ms: the median batch, whole; _ratio: the median over rounds
of the batch over one reply in the same round and way, as bench computes it).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from experiments.batch_costs import batches
from experiments.jsonl import emit
from steer_core.generation import VIEWS, generate_batch
from steer_core.model import lean_step
from steer_core.model.hooks import planned_edit
from steer_core.model.loading import load_model

BATCHES = ("none", "compare4", "ladder")


def sites_as_it_was(plan) -> list[int]:
    """Plan.sites before the kept answers: every site planned again, the flags copied from new tensors."""
    flags = [lean_step._site_flags(hooks) for hooks in plan.hooks]
    plan.shifts, addresses = {}, [0] * len(flags)
    f32, cpu = torch.float32, lean_step._CPU
    for idx, flag in enumerate(flags):
        if (
            flag != lean_step.PYTHON
            and flag & lean_step.OUTPUT
            and planned_edit(plan.modules[idx][0], plan.rows, f32, cpu) is lean_step.LEAVE
        ):
            flag = flags[idx] = flag & ~lean_step.OUTPUT
        if flag != lean_step.PYTHON and flag & lean_step.QUERY:
            planned = planned_edit(plan.modules[idx][1], plan.rows, f32, cpu)
            if planned is lean_step.LEAVE:
                flags[idx] = flag & ~lean_step.QUERY
            elif planned is not None and lean_step._fits(planned, plan.shift_shape):
                flags[idx] = (flag & ~lean_step.QUERY) | lean_step.SHIFT
                plan.shifts[idx] = planned
                addresses[idx] = planned.data_ptr()
    plan.flags.copy_(torch.tensor(flags, dtype=torch.int32))
    plan.shift_addresses.copy_(torch.tensor(addresses, dtype=torch.int64))
    return flags


def timed(way, spent: list[int]):
    """`way`, each call's nanoseconds appended to `spent` (experiments.mask_ab times its way with it too)."""

    def call(*args):
        t = time.perf_counter_ns()
        try:
            return way(*args)
        finally:
            spent.append(time.perf_counter_ns() - t)

    return call


def ab_rounds(
    lm, owner, name: str, ways: dict, rounds: int, out: str | None, names=BATCHES, time_calls: bool = True, about=None
) -> None:
    """batch_costs' batches `names` (bench's BATCHES) generated with `owner.name` set to each of the two `ways`
    ({way: value}, "before" and "after" unless named otherwise) in turn, the order swapped every round, round 0 a
    warm-up; `owner.name` then as it was. time_calls: each way is a function, its calls timed (a value that must stay
    itself, a C function's address, is set as it is). Emits a line per batch: about(name, requests)'s fields, each
    way's median call (us, where timed), whole batch (ms) and, but for one reply's, ratio to one reply in the same
    round, and whether both ways gave the same replies (experiments.mask_ab, screened_head and kernel_batches_ab run
    theirs through it)."""
    made, original = batches(lm), getattr(owner, name)
    calls = {(b, w): [] for b in names for w in ways}
    wholes = {(b, w): [] for b in names for w in ways}
    replies = {}
    try:
        for r in range(rounds + 1):
            for batch in names:
                for way in ways if r % 2 else reversed(ways):
                    spent: list[int] = []
                    setattr(owner, name, timed(ways[way], spent) if time_calls else ways[way])
                    t = time.perf_counter()
                    outs = generate_batch(lm, made[batch], max_new_tokens=64, ignore_stop=True, **VIEWS)
                    whole = time.perf_counter() - t
                    replies[(batch, way)] = [o.token_ids for o in outs]
                    if r:
                        if time_calls:
                            calls[(batch, way)].append(statistics.median(spent) / 1e3)
                        wholes[(batch, way)].append(whole * 1e3)
    finally:
        setattr(owner, name, original)
    first, second = ways
    for batch in names:
        line = {"batch": batch} | (about(batch, made[batch]) if about else {})
        if time_calls:
            line |= {f"{w}_us": round(statistics.median(calls[(batch, w)]), 1) for w in ways}
        line |= {f"{w}_ms": round(statistics.median(wholes[(batch, w)]), 1) for w in ways}
        if batch != "none":
            ratios = {w: [a / b for a, b in zip(wholes[(batch, w)], wholes[("none", w)])] for w in ways}
            line |= {f"{w}_ratio": round(statistics.median(v), 3) for w, v in ratios.items()}
        emit(line | {"same_replies": replies[(batch, first)] == replies[(batch, second)]}, out)


def main() -> None:
    if len(sys.argv) > 3 or (len(sys.argv) == 3 and not sys.argv[2].isdigit()):
        raise SystemExit(__doc__)
    out, rounds = (sys.argv[1] if len(sys.argv) > 1 else None), (int(sys.argv[2]) if len(sys.argv) == 3 else 7)
    lm = load_model()
    if not lean_step.takes(lm.model) or lean_step.lean_layers() is None:
        raise SystemExit("the C++ layers are off here (no compiler, or STEER_KERNEL=off)")
    ab_rounds(lm, lean_step.Plan, "sites", {"before": sites_as_it_was, "after": lean_step.Plan.sites}, rounds, out)


if __name__ == "__main__":
    main()
