"""The few-row kernel of this checkout against that of an earlier commit, in whole generations, in one process: bench's
batches (experiments.batch_costs; 64 tokens, stop tokens ignored, the views' settings), each generated with either
kernel in turn, the order swapped every round (experiments.sites_ab.ab_rounds).

The two kernels may lay their packed weights out differently (rows_linear.c's chunks of a wide weight), with the
same number of floats. So a swap sets the loaded kernel's address (the decoding step and the output layer call the
kernel by it) and copies that kernel's layout into every packed weight in place, where the step's plan holds their
addresses. Before timing, both kernels' products of every weight of the model at 1 to 11 rows are checked to be the
same bits.

    python -m experiments.chunks_ab REV [OUT.jsonl] [ROUNDS]    # REV: the commit whose kernel and pack to set against

Prints, and appends to OUT.jsonl if given, one JSON object per batch: {"batch", "rows", "cpu", "before", "before_ms",
"after_ms", "same_replies"} and, but for one reply, each way's ratio to one reply in the same round (medians over
rounds).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from experiments.kernel_ab import file_at, source_at
from experiments.sites_ab import ab_rounds
from steer_core import native
from steer_core.bench import cpu_model
from steer_core.model import rows_kernel as rk
from steer_core.model.loading import load_model
from steer_core.model.small_batch import pack_weights

BATCHES = ("none", "compare again", "compare - few", "compare4", "ladder")


def earlier_kernel(rev: str, folder: Path) -> tuple[rk.RowsKernel, object]:
    """REV's kernel, built and loaded, and its pack function (run from REV's rows_kernel.py, whose RowsKernel checks
    the library against REV's own layout)."""
    space = {"__name__": "earlier_rows_kernel", "__package__": "steer_core.model", "__file__": str(rk.SOURCE)}
    exec(compile(file_at(rev, Path(rk.__file__)), f"{rev}:rows_kernel.py", "exec"), space)
    return space["RowsKernel"](native.build(native.compiler(), source_at(rev, folder))), space["pack"]


def same_bits(linears, now: rk.RowsKernel, then: rk.RowsKernel, then_pack) -> None:
    """Each weight's products by both kernels, 1 to MAX_ROWS rows, with its bias: the same bits."""
    g = torch.Generator().manual_seed(0)
    for m in linears:
        w = m.weight.detach()
        x = torch.randn(rk.MAX_ROWS, w.shape[1], generator=g)
        packed_now, packed_then = rk.pack(w), then_pack(w)
        for rows in range(1, rk.MAX_ROWS + 1):
            a = now(x[:rows], w, m.bias, packed_now)
            b = then(x[:rows], w, m.bias, packed_then)
            if not torch.equal(a, b):
                raise AssertionError(f"the kernels differ on a {tuple(w.shape)} weight, {rows} rows")


class Swap:
    """ab_rounds' owner: setting `way` sets the kernel's address and copies that way's layouts into the packed
    weights (only those whose layouts differ). Made with the way the kernel and weights are in now."""

    def __init__(self, kernel: rk.RowsKernel, way):
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "way", way)  # (the kernel's address, [(packed, that way's layout)]) as it is now

    def __setattr__(self, name, way):
        fn, copies = way
        self.kernel._fn = fn
        for packed, layout in copies:
            packed.copy_(layout)
        object.__setattr__(self, name, way)


def main() -> None:
    if not 2 <= len(sys.argv) <= 4:
        raise SystemExit(__doc__)
    rev, out = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    kernel = rk.rows_kernel()
    if kernel is None:
        raise SystemExit("the few-row kernel is off here (no C compiler, or STEER_KERNEL=off)")
    lm = load_model()
    pack_weights(lm.model)
    linears = [m for m in lm.model.modules() if getattr(m, "_rows_packed", None)]
    with tempfile.TemporaryDirectory() as tmp:
        then, then_pack = earlier_kernel(rev, Path(tmp))
    same_bits(linears, kernel, then, then_pack)
    print(f"same bits: {len(linears)} weights, 1 to {rk.MAX_ROWS} rows", flush=True)
    now_copies, then_copies = [], []
    for m in linears:
        packed, earlier = m._rows_packed[1], then_pack(m.weight.detach())
        if not torch.equal(packed.flatten(), earlier.flatten()):
            now_copies.append((packed, packed.clone()))
            then_copies.append((packed, earlier.reshape(packed.shape)))
    print(f"{len(then_copies)} of {len(linears)} weights laid out differently", flush=True)
    ways = {"before": (then._fn, then_copies), "after": (kernel._fn, now_copies)}
    owner = Swap(kernel, ways["after"])

    def about(name, requests):
        return {"rows": len(requests), "cpu": cpu_model(), "before": rev}

    ab_rounds(lm, owner, "way", ways, rounds, out, names=BATCHES, time_calls=False, about=about)


if __name__ == "__main__":
    main()
