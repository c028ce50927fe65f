"""The views' attention kernel of this checkout against the one of an earlier commit: the same bits, and the time of a
decoding step's attention (30 layers) for the cache shapes of bench's batches, the two kernels taking turns round by
round (so that the machine's pace hits both alike).

    python -m experiments.attention_ab REV [OUT.jsonl]

The shapes: the default model's 3 key heads of 64 and 9 query heads; bench's question is about 95 tokens under the
plain prompt (its 22-token prefix included) and 495 under the few-shot prompt; the middle of a 64-token reply (32
positions written). The Compare's three plain rows and the ladder's seven read their prompt from one row
(PromptCopies), as in the views. Random values.

Each batch is timed hot (the same step again: the caches in the CPU's caches) and cold (a 400 MB buffer written
before each step, as the weights a decoding step reads push the caches out). A step here is 30 calls through ctypes,
about 10 us each, the same for both kernels.

Prints, and appends to OUT.jsonl if given, one JSON object per batch and state: {"batch", "cold", "before_ms",
"after_ms"} (medians over rounds), after a line saying the outputs were the same bit for bit (or raising).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from experiments.jsonl import emit
from steer_core import native
from steer_core.model.attention_kernel import SOURCE, AttentionKernel, PromptCopies, attention_kernel
from steer_core.paths import ROOT

LAYERS, KV_HEADS, GROUPS, DIM, ROUNDS = 30, 3, 3, 64, 25
# (each row's prompt length, the row each row's prompt is read from)
BATCHES = {
    "none": ([95], None),
    "compare4": ([95, 95, 95, 495], [0, 0, 0, 3]),
    "ladder": ([95] * 7, [0] * 7),
}


def kernel_at(rev: str, folder: Path) -> AttentionKernel:
    """decode_attention.c as it was at `rev`, built and loaded (the build is cached like the checkout's own)."""
    source = folder / "decode_attention.c"
    show = ["git", "show", f"{rev}:{SOURCE.relative_to(ROOT)}"]
    source.write_text(subprocess.run(show, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    kernel = AttentionKernel(native.build(native.compiler(), source))
    kernel.check()
    return kernel


def caches(lengths: list[int], sources: list[int] | None, g: torch.Generator):
    """Each layer's (q, keys, values), the mask and the prompt copies of a batch in the middle of its reply."""
    rows, width = len(lengths), max(lengths)
    length, at = width + 64, width + 32
    layers = [
        (
            torch.randn(rows, KV_HEADS, GROUPS, DIM, generator=g),
            torch.randn(rows, KV_HEADS, length, DIM, generator=g),
            torch.randn(rows, KV_HEADS, length, DIM, generator=g),
        )
        for _ in range(LAYERS)
    ]
    mask = torch.full((rows, 1, 1, length), float("-inf"))
    for r, n in enumerate(lengths):
        mask[r, ..., width - n : at] = 0.0
    return layers, mask, None if sources is None else PromptCopies.of(sources, width)


def step(kernel: AttentionKernel, batch, flush: torch.Tensor | None) -> float:
    layers, mask, copies = batch
    if flush is not None:
        flush.add_(1.0)
    t = time.perf_counter()
    for q, keys, values in layers:
        kernel(q, keys, values, mask, DIM**-0.5, copies)
    return time.perf_counter() - t


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    after = attention_kernel()
    if after is None:
        raise SystemExit("the attention kernel is off here (no C compiler, or STEER_KERNEL=off)")
    with tempfile.TemporaryDirectory() as tmp:
        before = kernel_at(sys.argv[1], Path(tmp))
    g = torch.Generator().manual_seed(0)
    batches = {name: caches(lengths, sources, g) for name, (lengths, sources) in BATCHES.items()}
    for name, (layers, mask, copies) in batches.items():
        for q, keys, values in layers:
            if not torch.equal(
                before(q, keys, values, mask, 0.125, copies), after(q, keys, values, mask, 0.125, copies)
            ):
                raise AssertionError(f"{name}: the two kernels' outputs differ")
    print("same bits: every layer of", ", ".join(batches), flush=True)
    flush = torch.zeros(400 * 2**20 // 4)
    for name, batch in batches.items():
        for cold in (False, True):
            times = {"before": [], "after": []}
            for r in range(ROUNDS):
                turns = (("before", before), ("after", after)) if r % 2 else (("after", after), ("before", before))
                for key, kernel in turns:
                    times[key].append(step(kernel, batch, flush if cold else None))
            row = {"batch": name, "cold": cold} | {
                f"{k}_ms": round(statistics.median(v) * 1e3, 3) for k, v in times.items()
            }
            emit(row | {"rev": sys.argv[1]}, sys.argv[2] if len(sys.argv) == 3 else None)


if __name__ == "__main__":
    main()
