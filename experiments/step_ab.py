"""The few-row kernel of a checkout against another build of rows_linear.c, in one process, interleaved round by round
(so that the machine's mood hits both alike): a whole 64-token generation of bench's unsteered reply, Compare batch
and ladder, each kernel's median over rounds, and the ratios to the unsteered reply.

    git show REV:steer_core/model/rows_linear.c > /tmp/old.c
    cc -O3 -march=native -ffp-contract=fast -fopenmp -shared -fPIC /tmp/old.c -o /tmp/old.so
    python -m experiments.step_ab /tmp/old.so

The old library must take the weight in its own layout (rows_linear.c before the packed copy, commit 6ef111c).
Both kernels run through the lean step's layers in Python: its C++ layers call the checkout's own kernel by its
address, whatever kernel the modules hold.
"""

from __future__ import annotations

import ctypes
import statistics
import sys
import time

import torch

from steer_core import bench
from steer_core.generation import generate_batch
from steer_core.model import lean_step
from steer_core.model.loading import load_model
from steer_core.model.rows_kernel import rows_kernel
from steer_core.steering.config import SteerConfig
from steer_core.views.compare import CompareRequest

ROUNDS = 6


class Unpacked:
    """A rows_linear library that reads the weight in its own layout (the `packed` argument is ignored)."""

    def __init__(self, path: str):
        self._fn = ctypes.CDLL(path).rows_linear
        self._fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_int]

    def __call__(self, x, weight, bias, packed=None):
        x = x.contiguous()
        y = torch.empty((x.shape[0], weight.shape[0]))
        b = None if bias is None else bias.data_ptr()
        self._fn(weight.data_ptr(), x.data_ptr(), b, y.data_ptr(), *weight.shape, x.shape[0], torch.get_num_threads())
        return y


def main() -> None:
    lean_step.lean_layers = lambda: None  # the same path for both kernels: the layers in Python
    lm = load_model()
    compare = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=64)
    batches = bench.bench_batches(compare, SteerConfig(), SteerConfig(layers=(lm.middle_layer,)))
    names = ("none", "compare4", "ladder")
    kernels = {"old": Unpacked(sys.argv[1]), "new": rows_kernel()}
    linears = [m for m in lm.model.modules() if hasattr(m, "_rows_kernel")]
    times = {(k, n): [] for k in kernels for n in names}
    for round_ in range(ROUNDS + 1):  # the first round warms up
        for k, kernel in kernels.items():
            for m in linears:
                m._rows_kernel = kernel
            for n in names:
                t0 = time.perf_counter()
                generate_batch(lm, batches[n], max_new_tokens=64, ignore_stop=True, prefix_cache=True)
                if round_:
                    times[k, n].append(time.perf_counter() - t0)
    for k in kernels:
        med = {n: statistics.median(times[k, n]) for n in names}
        print(k, {n: round(s, 3) for n, s in med.items()}, {n: round(med[n] / med["none"], 2) for n in names[1:]})


if __name__ == "__main__":
    main()
