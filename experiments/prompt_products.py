"""What the Compare's two prompt reads could save in their products (docs/performance.md, section n, item 6): the
default model's layer weights (the seven products of each of its 30 layers) multiplied by two prompts' rows one after
the other, as the Compare reads its plain and its few-shot prompt, against both prompts' rows in one product; and
MKL's float32 product (torch's) against oneDNN's for one prompt. Before timing, it checks whether the joined product
gives each prompt's rows bit for bit as its own product does (oneDNN's bits are not MKL's, so it is timed only).

    python -m experiments.prompt_products [OUT.jsonl] [ROWS]     # ROWS: a prompt's rows, default 73 (bench's)

Prints, and appends to OUT.jsonl if given, one JSON object: {"cpu", "rows", "joined_bit_equal", "two_ms",
"joined_ms", "mkl_ms", "onednn_ms"} (medians over ROUNDS rounds, the ways taking turns; random rows of the right
widths, the model's own weights).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from torch.nn import functional as F

from experiments.jsonl import emit
from steer_core.bench import cpu_model
from steer_core.model.loading import load_model

ROUNDS = 15


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@torch.no_grad()
def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else None
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 73
    lm = load_model()
    head = lm.model.get_output_embeddings()
    weights = [m.weight for m in lm.model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    g = torch.Generator().manual_seed(0)
    a = {k: torch.randn(rows, k, generator=g) for k in {w.shape[1] for w in weights}}
    b = {k: torch.randn(rows, k, generator=g) for k in a}
    joined = {k: torch.cat([a[k], b[k]]) for k in a}
    equal = all(
        torch.equal(y[:rows], F.linear(a[w.shape[1]], w)) and torch.equal(y[rows:], F.linear(b[w.shape[1]], w))
        for w in weights
        for y in [F.linear(joined[w.shape[1]], w)]
    )
    dense = [w.to_mkldnn() for w in weights]
    ways = {
        "two": lambda: [F.linear(x[w.shape[1]], w) for x in (a, b) for w in weights],
        "joined": lambda: [F.linear(joined[w.shape[1]], w) for w in weights],
        "mkl": lambda: [F.linear(a[w.shape[1]], w) for w in weights],
        "onednn": lambda: [
            torch._C._nn.mkldnn_linear(a[w.shape[1]].to_mkldnn(), d, None) for w, d in zip(weights, dense)
        ],
    }
    times = {name: [] for name in ways}
    for round_ in range(ROUNDS + 1):  # the first round warms up
        for name, fn in ways.items():
            t = timed(fn)
            if round_:
                times[name].append(t)
    line = {"cpu": cpu_model(), "rows": rows, "joined_bit_equal": equal}
    emit(line | {f"{n}_ms": round(statistics.median(t) * 1e3, 1) for n, t in times.items()}, out)


if __name__ == "__main__":
    main()
