"""Where a decoding step's milliseconds go, without a profiler's own cost: bench's unsteered reply, Compare batch and
ladder, each timed as it runs and again with every few-row product replaced by an empty output of its shape (the
rest of the model runs on zeros: norms, rotary, the cache, attention, hooks, Python). The difference is the products.
The products are replaced in both of the step's paths: the Linear modules' kernel (the output layer, and layers
run in Python) and the address the C++ layers call (experiments/zero_products.c, built here).

    python -m experiments.decode_split

Prints one JSON object per batch: {"batch", "step_ms", "rest_ms", "products_ms"}, each the median of 5 runs of
(33 tokens - 1 token) / 32. Needs the few-row kernel (a C compiler, STEER_KERNEL not off).
"""

from __future__ import annotations

import ctypes
import json
import statistics
import time
from pathlib import Path

import torch

from steer_core import bench, native
from steer_core.generation import VIEWS, generate_batch
from steer_core.model import lean_step
from steer_core.model.loading import load_model
from steer_core.steering.config import SteerConfig
from steer_core.views.compare import CompareRequest


class NoProducts:
    """Stands in for the few-row kernel: an output of the right shape, no arithmetic."""

    def __call__(self, x, weight, bias, packed=None):
        return torch.zeros(x.shape[0], weight.shape[0])


def step_ms(lm, reqs) -> float:
    def run(n: int) -> float:
        t0 = time.perf_counter()
        generate_batch(lm, reqs, max_new_tokens=n, ignore_stop=True, **VIEWS)
        return time.perf_counter() - t0

    run(33)  # warm
    return statistics.median((run(33) - run(1)) / 32 * 1e3 for _ in range(5))


def main() -> None:
    lm = load_model()
    compare = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=33)
    batches = bench.bench_batches(compare, SteerConfig(), SteerConfig(layers=(lm.middle_layer,)))
    linears = [m for m in lm.model.modules() if getattr(m, "_rows_kernel", None) is not None]
    if not linears:
        raise SystemExit("the few-row kernel is off here: nothing to replace")
    kernel = linears[0]._rows_kernel
    zero = native.build(native.compiler(), Path(__file__).with_name("zero_products.c"))
    zero_address = ctypes.cast(ctypes.CDLL(str(zero)).rows_zero, ctypes.c_void_p).value
    made, qualifies = lean_step.Plan.__init__, lean_step.Plan.__dict__["qualifies"]
    for name in ("none", "compare4", "ladder"):
        for m in linears:
            m._rows_kernel = kernel
        step = step_ms(lm, batches[name])

        def without_products(plan, *args, **kw):
            made(plan, *args, **kw)
            plan.product = zero_address

        lean_step.Plan.__init__ = without_products
        for m in linears:
            m._rows_kernel = NoProducts()
        lean_step.Plan.qualifies = staticmethod(lambda model, rows: rows in lean_step.KERNEL_ROWS)
        try:
            rest = step_ms(lm, batches[name])
        finally:
            lean_step.Plan.__init__, lean_step.Plan.qualifies = made, qualifies
        out = {"batch": name, "step_ms": step, "rest_ms": rest, "products_ms": step - rest}
        print(json.dumps({k: v if isinstance(v, str) else round(v, 2) for k, v in out.items()}), flush=True)
    for m in linears:
        m._rows_kernel = kernel


if __name__ == "__main__":
    main()
