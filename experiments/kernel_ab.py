"""The few-row kernel of this checkout against the one of an earlier commit, on every weight of the default model: the
same bits for 1 to 11 rows, and the time of all the weights' products, the two kernels taking turns round by round
(so that the machine's pace hits both alike). Both read the packed layout, so REV must be at or after the packed
copy (rows_kernel.pack, commit 2fe1326 or later).

    python -m experiments.kernel_ab 3f07d1e            # 1, 4, 7 and 10 rows
    python -m experiments.kernel_ab 3f07d1e 7 8 7 8    # these row counts, in this order

Prints one JSON object per row count timed: {"rows", "before_ms", "after_ms", "before_gb_s", "after_gb_s"} (the
median over rounds), after a line saying the outputs were the same bit for bit (or raising where they were not).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from steer_core import native
from steer_core.model.loading import load_model
from steer_core.model.rows_kernel import MAX_ROWS, SOURCE, RowsKernel, pack, rows_kernel
from steer_core.paths import ROOT

ROUNDS = 15
TIMED = (1, 4, 7, 10)


def file_at(rev: str, path: Path) -> str:
    """The text of the repository's file `path` as it was at `rev`."""
    show = ["git", "show", f"{rev}:{path.relative_to(ROOT)}"]
    return subprocess.run(show, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def source_at(rev: str, folder: Path) -> Path:
    """rows_linear.c as it was at `rev`, written into `folder`."""
    source = folder / "rows_linear.c"
    source.write_text(file_at(rev, SOURCE))
    return source


def kernel_at(rev: str, folder: Path) -> RowsKernel:
    """rows_linear.c as it was at `rev`, built and loaded (the build is cached like the checkout's own)."""
    return RowsKernel(native.build(native.compiler(), source_at(rev, folder)))


def packed_weights(lm) -> list[tuple]:
    """(weight, bias, packed copy) of every distinct Linear weight of the model, the output layer's included."""
    weights = {}
    for m in lm.model.modules():
        if isinstance(m, torch.nn.Linear):
            weights.setdefault(m.weight.data_ptr(), (m.weight.detach(), None if m.bias is None else m.bias.detach()))
    return [(w, b, pack(w)) for w, b in weights.values()]


def main() -> None:
    if len(sys.argv) < 2 or not all(a.isdigit() and 1 <= int(a) <= MAX_ROWS for a in sys.argv[2:]):
        raise SystemExit(__doc__)
    timed = [int(a) for a in sys.argv[2:]] or TIMED
    after = rows_kernel()
    if after is None:
        raise SystemExit("the few-row kernel is off here (no C compiler, or STEER_KERNEL=off)")
    with tempfile.TemporaryDirectory() as tmp:
        before = kernel_at(sys.argv[1], Path(tmp))
    weights = packed_weights(load_model())
    g = torch.Generator().manual_seed(0)
    xs = {k: torch.randn(MAX_ROWS, k, generator=g) for k in {w.shape[1] for w, _, _ in weights}}
    for w, b, p in weights:
        for rows in range(1, MAX_ROWS + 1):
            x = xs[w.shape[1]][:rows]
            if not torch.equal(before(x, w, b, p), after(x, w, b, p)):
                raise AssertionError(f"the kernels differ on a {tuple(w.shape)} weight, {rows} rows")
    print(f"same bits: {len(weights)} weights, 1 to {MAX_ROWS} rows", flush=True)
    nbytes = sum(w.numel() * w.element_size() for w, _, _ in weights)
    for rows in timed:
        times = {"before": [], "after": []}
        for round_ in range(ROUNDS + 1):  # the first round warms up
            for name, kernel in (("before", before), ("after", after)):
                t0 = time.perf_counter()
                for w, b, p in weights:
                    kernel(xs[w.shape[1]][:rows], w, b, p)
                if round_:
                    times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        out = {"rows": rows}
        out |= {f"{k}_ms": round(v * 1e3, 2) for k, v in med.items()}
        out |= {f"{k}_gb_s": round(nbytes / v / 1e9, 1) for k, v in med.items()}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
