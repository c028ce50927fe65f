"""Faster decoding of small batches on the CPU.

A decoding step multiplies a few rows (one per reply in the batch) by each weight matrix, and is bound
by reading the weights. From 1 to 11 rows, without autograd, the C kernel of rows_kernel.py does it: each
weight row read once for all rows, on all threads, each row's product the same in any batch. Where that
kernel is not available (no C compiler, STEER_KERNEL=off): for 2 to 11 rows, MKL's sgemm takes `x @ W.T`
at about the cost of four separate rows, because it packs the large weight; taken the other way round,
`(W @ x.T).T`, it packs the few rows and streams the weight once. One row, and 12 or more (where MKL picks
the same kernel either way: the outputs are bit for bit those of `F.linear`), keep the plain call. The
products differ from `F.linear`'s in the last bits (about 1e-6 relative), as any change of batch size
already makes them differ.
"""

from __future__ import annotations

import types

import torch
from torch.nn import functional as F

from .rows_kernel import MAX_ROWS, rows_kernel

# Where (W @ x.T).T was faster here: all 30 layers' matrices timed both ways (docs/performance.md).
SMALL_ROWS = range(2, 12)
KERNEL_ROWS = range(1, MAX_ROWS + 1)


def _kernel_takes(self: torch.nn.Linear, x: torch.Tensor) -> bool:
    """The kernel reads raw memory: float32 on the CPU, contiguous weights (checked each call, so a module
    moved or reassigned after loading falls back), and no autograd to record."""
    w, b = self.weight, self.bias
    return (
        x.dtype == w.dtype == torch.float32
        and x.device.type == w.device.type == "cpu"
        and w.is_contiguous()
        and (b is None or (b.is_contiguous() and b.dtype == torch.float32))
        and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
    )


def _linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if rows in KERNEL_ROWS and self._rows_kernel is not None and _kernel_takes(self, x):
        y = self._rows_kernel(x.reshape(rows, x.shape[-1]), self.weight, self.bias)
    elif rows in SMALL_ROWS and x.dtype == self.weight.dtype:
        y = torch.mm(self.weight, x.reshape(rows, x.shape[-1]).t()).t()
        if self.bias is not None:
            y = y + self.bias
    else:
        return F.linear(x, self.weight, self.bias)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def speed_up_small_batches(model: torch.nn.Module) -> int:
    """Route every Linear of a CPU model through `_linear`; returns how many. Autograd is unchanged."""
    kernel = rows_kernel()
    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.device.type == "cpu":
            module._rows_kernel = kernel
            module.forward = types.MethodType(_linear, module)
            n += 1
    return n
