"""Faster decoding of small batches on the CPU.

A decoding step multiplies a few rows (one per reply in the batch) by each weight matrix, and is bound
by reading the weights. From 1 to 11 rows, without autograd, the C kernel of rows_kernel.py does it: each
weight row read once for all rows, on all threads, each row's product the same in any batch. It reads a packed
copy of each weight, made at its first few-row product (or by `pack_weights`) and kept with the module: the
weights' memory twice over, for about a fifth less time in the products of four rows. Where that
kernel is not available (no C compiler, STEER_KERNEL=off): for 2 to 11 rows, MKL's sgemm takes `x @ W.T`
at about the cost of four separate rows, because it packs the large weight; taken the other way round,
`(W @ x.T).T`, it packs the few rows and streams the weight once. One row, and 12 or more (where MKL picks
the same kernel either way: the outputs are bit for bit those of `F.linear`), keep the plain call. The
products differ from `F.linear`'s in the last bits (about 1e-6 relative), as any change of batch size
already makes them differ.
"""

from __future__ import annotations

import contextlib
import threading
import types

import torch
from torch.nn import functional as F

from .rows_kernel import MAX_ROWS, pack, rows_kernel

# Where (W @ x.T).T was faster here: all 30 layers' matrices timed both ways (docs/performance.md).
SMALL_ROWS = range(2, 12)
KERNEL_ROWS = range(1, MAX_ROWS + 1)


def _kernel_takes(w: torch.Tensor, b: torch.Tensor | None, x: torch.Tensor) -> bool:
    """The kernel reads raw memory: float32 on the CPU, contiguous weights (checked each call, so a module
    moved or reassigned after loading falls back), and no autograd to record."""
    return (
        x.dtype == w.dtype == torch.float32
        and x.device.type == w.device.type == "cpu"
        and w.is_contiguous()
        and (b is None or (b.is_contiguous() and b.dtype == torch.float32))
        and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
    )


def _packed(self: torch.nn.Linear, w: torch.Tensor) -> torch.Tensor:
    """The kernel's packed copy of the weight `w` (self.weight), made on first use and again whenever the weight
    was replaced or written to (its storage or version changed)."""
    key = (w.data_ptr(), w._version)
    kept = self._rows_packed
    if kept is None or kept[0] != key:
        kept = self._rows_packed = (key, pack(w))
    return kept[1]


def pack_weights(model: torch.nn.Module) -> int:
    """Make every routed Linear's packed copy now (a server warming up), not at its first few-row product; returns
    the bytes they take."""
    total = 0
    with torch.no_grad():  # as in decoding: whether the weight needs gradients does not matter
        for module in model.modules():
            w = getattr(module, "weight", None)
            if getattr(module, "_rows_kernel", None) is not None and _kernel_takes(w, module.bias, w.detach()):
                total += _packed(module, w).nbytes
    return total


_fitting = threading.local()  # this thread's bfloat16 weights while it fits (bf16_products)


def _linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    halves = getattr(_fitting, "weights", None)
    if halves is not None and x.dtype == torch.float32:
        return _bf16_linear(self, x, halves)
    k = x.shape[-1]
    rows = x.numel() // k if k else 0
    w, b = self.weight, self.bias  # read once: parameters are slow attributes, and this runs 211 times a step
    kernel = self._rows_kernel
    if kernel is not None and rows in KERNEL_ROWS and _kernel_takes(w, b, x):
        y = kernel(x.reshape(rows, k), w, b, _packed(self, w))
    elif rows in SMALL_ROWS and x.dtype == w.dtype:
        y = torch.mm(w, x.reshape(rows, k).t()).t()
        if b is not None:
            y = y + b
    else:
        return F.linear(x, w, b)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _bf16_linear(self: torch.nn.Linear, x: torch.Tensor, halves: dict) -> torch.Tensor:
    w = halves.get(self)
    if w is None or w[1] != self.weight._version:  # cast once per fit, again if the weight was written to
        w = halves[self] = (self.weight.detach().to(torch.bfloat16), self.weight._version)
    y = F.linear(x.to(torch.bfloat16), w[0]).float()
    return y if self.bias is None else y + self.bias


@contextlib.contextmanager
def bf16_products(model: torch.nn.Module):
    """Within: this thread's Linear products through `model` in bfloat16 (float32 in, float32 out, the rest of
    the model in float32), about twice as fast as float32 on CPUs with bfloat16 dot products. For fitting
    (gradients flow through the inputs; the weights are read as constants, cast once and dropped on exit);
    other threads, such as a Space's visitors decoding meanwhile, keep float32. On a GPU (where Linear
    modules are not routed here): torch.autocast in bfloat16."""
    if not any(hasattr(m, "_rows_kernel") for m in model.modules()):  # not routed through _linear
        device = next(model.parameters()).device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device != "cpu"):
            yield
        return
    outer = getattr(_fitting, "weights", None)
    _fitting.weights = {} if outer is None else outer
    try:
        yield
    finally:
        _fitting.weights = outer


def speed_up_small_batches(model: torch.nn.Module) -> int:
    """Route every Linear of a CPU model through `_linear`; returns how many. Autograd is unchanged."""
    kernel = rows_kernel()
    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.device.type == "cpu":
            module._rows_kernel = kernel
            module._rows_packed = None  # (weight's storage and version, its packed copy): _packed
            module.forward = types.MethodType(_linear, module)
            n += 1
    return n
