"""The few-row kernel of this checkout against a throwaway build of experiments.kernel_variants, in whole generations:
bench's batches (experiments.batch_costs: one reply, a Compare clicked again, three rows, the Compare, the ladder;
64 tokens, stop tokens ignored, the views' settings), each generated with either kernel in turn, the order swapped
every round. The decoding step and the output layer call the kernel by the address the loaded kernel holds, so
swapping that address swaps every product.

    python -m experiments.kernel_batches_ab BUILD [OUT.jsonl] [ROUNDS]    # BUILD: kernel_variants.BUILDS' name

Prints, and appends to OUT.jsonl if given, one JSON object per batch: {"batch", "rows", "cpu", "build",
"shipped_ms", "build_ms", "same_replies"} and, but for one reply, each way's ratio to one reply in the same round
(medians over rounds).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from experiments.batch_costs import batches
from experiments.jsonl import emit
from experiments.kernel_variants import BUILDS, build
from steer_core.bench import cpu_model
from steer_core.generation import VIEWS, generate_batch
from steer_core.model.loading import load_model
from steer_core.model.rows_kernel import rows_kernel

BATCHES = ("none", "compare again", "compare - few", "compare4", "ladder")


def main() -> None:
    if not 2 <= len(sys.argv) <= 4 or sys.argv[1] not in BUILDS:
        raise SystemExit(__doc__)
    out = sys.argv[2] if len(sys.argv) > 2 else None
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    kernel = rows_kernel()
    if kernel is None:
        raise SystemExit("the few-row kernel is off here (no C compiler, or STEER_KERNEL=off)")
    with tempfile.TemporaryDirectory() as tmp:
        ways = {"shipped": kernel._fn, "build": build(sys.argv[1], Path(tmp))._fn}
    lm = load_model()
    made = {name: reqs for name, reqs in batches(lm).items() if name in BATCHES}
    times = {(b, w): [] for b in made for w in ways}
    replies = {}
    try:
        for r in range(rounds + 1):  # round 0 warms up
            for name, reqs in made.items():
                for way in ways if r % 2 else reversed(ways):
                    kernel._fn = ways[way]
                    t0 = time.perf_counter()
                    outs = generate_batch(lm, reqs, max_new_tokens=64, ignore_stop=True, **VIEWS)
                    if r:
                        times[(name, way)].append(time.perf_counter() - t0)
                    replies[(name, way)] = [o.token_ids for o in outs]
    finally:
        kernel._fn = ways["shipped"]
    for name, reqs in made.items():
        line = {"batch": name, "rows": len(reqs), "cpu": cpu_model(), "build": sys.argv[1]}
        line |= {f"{w}_ms": round(statistics.median(times[(name, w)]) * 1e3, 1) for w in ways}
        if name != "none":
            for w in ways:
                ratios = [a / b for a, b in zip(times[(name, w)], times[("none", w)])]
                line[f"{w}_ratio"] = round(statistics.median(ratios), 3)
        emit(line | {"same_replies": replies[(name, "shipped")] == replies[(name, "build")]}, out)


if __name__ == "__main__":
    main()
