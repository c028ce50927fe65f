"""Faster decoding of small batches on the CPU.

A decoding step multiplies a few rows (one per reply in the batch) by each weight matrix. For 2 to 11
rows, MKL's sgemm takes `x @ W.T` at about the cost of four separate rows, because it packs the large
weight; taken the other way round, `(W @ x.T).T`, it packs the few rows and streams the weight once.
On 2 cores that halves the matmuls of a Compare (4 rows) or ladder (7 rows) step. One row, and 12 or
more (where MKL picks the same kernel either way: the outputs are bit for bit those of `F.linear`),
keep the plain call. The products differ from `F.linear`'s in the last bits (about 1e-6 relative),
as any change of batch size already makes them differ.
"""

from __future__ import annotations

import types

import torch
from torch.nn import functional as F

# Where (W @ x.T).T was faster here: all 30 layers' matrices timed both ways (docs/performance.md).
SMALL_ROWS = range(2, 12)


def _linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if rows not in SMALL_ROWS or x.dtype != self.weight.dtype:
        return F.linear(x, self.weight, self.bias)
    y = torch.mm(self.weight, x.reshape(rows, x.shape[-1]).t()).t()
    if self.bias is not None:
        y = y + self.bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


def speed_up_small_batches(model: torch.nn.Module) -> int:
    """Route every Linear of a CPU model through `_linear`; returns how many. Autograd is unchanged."""
    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.device.type == "cpu":
            module.forward = types.MethodType(_linear, module)
            n += 1
    return n
