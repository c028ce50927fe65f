"""The few-row kernel of this checkout against a throwaway build of experiments.kernel_variants, in whole generations:
bench's batches (experiments.batch_costs: one reply, a Compare clicked again, three rows, the Compare, the ladder;
64 tokens, stop tokens ignored, the views' settings), each generated with either kernel in turn, the order swapped
every round (experiments.sites_ab.ab_rounds). The decoding step and the output layer call the kernel by the address
the loaded kernel holds, so swapping that address swaps every product.

    python -m experiments.kernel_batches_ab BUILD [OUT.jsonl] [ROUNDS]    # BUILD: kernel_variants.BUILDS' name

Prints, and appends to OUT.jsonl if given, one JSON object per batch: {"batch", "rows", "cpu", "build",
"shipped_ms", "build_ms", "same_replies"} and, but for one reply, each way's ratio to one reply in the same round
(medians over rounds).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from experiments.kernel_variants import BUILDS, build
from experiments.sites_ab import ab_rounds
from steer_core.bench import cpu_model
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

    def about(name, requests):
        return {"rows": len(requests), "cpu": cpu_model(), "build": sys.argv[1]}

    ab_rounds(load_model(), kernel, "_fn", ways, rounds, out, names=BATCHES, time_calls=False, about=about)


if __name__ == "__main__":
    main()
