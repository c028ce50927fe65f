"""The few-row kernel's prefetches varied on this machine: throwaway builds of rows_linear.c (the checkout's, with a
line or two replaced) on every weight of the default model, the output layer's too, the builds *and* the row counts
taking turns round by round. kernel_ab times row counts one after another, which is fine for its before/after at
each count but not for comparing counts: on a host whose bandwidth moves within minutes, a first run that way read
one row at 20.55 ms and six at 16.24, and taking turns 20.06 and 20.89 (docs/performance.md, section n). Each build
is checked against the shipped one, bit for bit, before it is timed.

    python -m experiments.kernel_variants [OUT.jsonl]

Prints, and appends to OUT.jsonl if given, one JSON object per row count: {"rows", "cpu", build_ms...} (medians over
ROUNDS rounds of all the weights' products), then one with the bandwidth of torch's sum of 512 MB read in the same
rounds ({"sum_gb_s"}). results/kernel_variants_2026-12-07.jsonl was made before rows_linear.c had HARDWARE_ROWS: its
"shipped" prefetched at every row count (prefetch_always here), and its hardware_to_3_rows shipped next.
results/kernel_variants_2026-12-07c.jsonl was made after a wide weight came to be read in chunks, when HARDWARE_ROWS
became 4. A build replaces text of the checkout's rows_linear.c, so each file's builds are those of its own commit.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from experiments.jsonl import emit
from experiments.kernel_ab import packed_weights
from steer_core import native
from steer_core.bench import cpu_model, read_bandwidth_gb_s, read_buffer
from steer_core.model.loading import load_model
from steer_core.model.rows_kernel import SOURCE, RowsKernel

ROUNDS = 21
ROWS = (1, 2, 3, 4, 6, 7)
NEAR = "__builtin_prefetch(pc + PREFETCH + j * LINE, 0, 3)"
FAR_CALL = "__builtin_prefetch(pc + PREFETCH_FAR + j * LINE, 0, 2)"  # one pass's (two passes prefetch by halves)
HALF = "__builtin_prefetch(half + j * LINE, 0, 2)"  # two passes' far prefetch, by halves
FAR = "#define PREFETCH_FAR 3072\n"
NONE = "#define __builtin_prefetch(...) ((void)0)\n"  # every prefetch of the kernel left out
BUILDS = {  # name -> (text of rows_linear.c, its replacement) pairs
    "shipped": [],
    "prefetch_always": [("#define HARDWARE_ROWS 4\n", "#define HARDWARE_ROWS 0\n")],  # as before HARDWARE_ROWS
    "no_prefetch": [(FAR, FAR + NONE)],
    "far_24kb_near_hint_0": [
        (FAR, FAR.replace("3072", "6144")),
        (NEAR, NEAR.replace("0, 3)", "0, 0)")),
    ],
    # the weights' prefetches non-temporal (hint 0) where they run, so that the weights' stream might leave the keys
    # and values in the L3 cache between steps: the far ones, or every one
    "far_nta": [(FAR_CALL, FAR_CALL.replace("0, 2)", "0, 0)")), (HALF, HALF.replace("0, 2)", "0, 0)"))],
    "all_nta": [
        (FAR_CALL, FAR_CALL.replace("0, 2)", "0, 0)")),
        (HALF, HALF.replace("0, 2)", "0, 0)")),
        (NEAR, NEAR.replace("0, 3)", "0, 0)")),
    ],
    # one to three rows without software prefetches, as shipped before a wide weight was read in chunks (since
    # then the Compare's four rows go without them too)
    "hardware_to_3_rows": [("#define HARDWARE_ROWS 4\n", "#define HARDWARE_ROWS 3\n")],
    "hardware_to_5_rows": [("#define HARDWARE_ROWS 4\n", "#define HARDWARE_ROWS 5\n")],
}


def build(name: str, folder: Path) -> RowsKernel:
    """The checkout's rows_linear.c with BUILDS[name]'s replacements, built and loaded."""
    text = SOURCE.read_text()
    for old, new in BUILDS[name]:
        if text.count(old) != 1:
            raise SystemExit(f"rows_linear.c changed: {old.strip()!r} is not there once")
        text = text.replace(old, new)
    source = folder / f"{name}.c"
    source.write_text(text)
    return RowsKernel(native.build(native.compiler(), source))


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as tmp:
        kernels = {name: build(name, Path(tmp)) for name in BUILDS}
    weights = packed_weights(load_model())
    g = torch.Generator().manual_seed(0)
    xs = {k: torch.randn(max(ROWS), k, generator=g) for k in {w.shape[1] for w, _, _ in weights}}
    for w, b, p in weights:
        for rows in ROWS:
            x = xs[w.shape[1]][:rows]
            shipped = kernels["shipped"](x, w, b, p)
            for name, kernel in kernels.items():
                if not torch.equal(kernel(x, w, b, p), shipped):
                    raise AssertionError(f"{name} differs on a {tuple(w.shape)} weight, {rows} rows")
    print(f"same bits: {len(weights)} weights, rows {ROWS}", flush=True)
    buffer = read_buffer()
    times = {(name, rows): [] for name in kernels for rows in ROWS}
    sums = []
    for round_ in range(ROUNDS + 1):  # the first round warms up
        sums.append(read_bandwidth_gb_s(buffer, repeats=0))  # one read a round
        for rows in ROWS:
            for name, kernel in kernels.items():
                t0 = time.perf_counter()
                for w, b, p in weights:
                    kernel(xs[w.shape[1]][:rows], w, b, p)
                if round_:
                    times[(name, rows)].append(time.perf_counter() - t0)
    for rows in ROWS:
        line = {"rows": rows, "cpu": cpu_model()}
        emit(line | {f"{n}_ms": round(statistics.median(times[(n, rows)]) * 1e3, 2) for n in kernels}, out)
    emit({"sum_gb_s": round(statistics.median(sums[1:]), 1)}, out)


if __name__ == "__main__":
    main()
