"""The top-k of a TopK SAE's training step (topk_rows.c), compiled by `native`, with torch's top-k where it is
not available (no C compiler, STEER_KERNEL=off) and for what the kernel does not take (NaN rows: torch ranks
NaN first; the kernel reads float32 on the CPU only)."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from .. import native

SOURCE = Path(__file__).with_name("topk_rows.c")
MAX_K = 64


class TopKKernel:
    def __init__(self, path: Path):
        self.path = path
        args = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p]
        self._fn = native.c_function(path, "topk_rows", [*args, ctypes.c_void_p, ctypes.c_int], ctypes.c_long)

    def __call__(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(values, indices), or None when x holds a NaN."""
        x = x.contiguous()
        d = x.shape[-1]
        vals = torch.empty((*x.shape[:-1], k), dtype=torch.float32)
        idx = torch.empty((*x.shape[:-1], k), dtype=torch.int64)
        nans = self._fn(x.data_ptr(), x.numel() // d, d, k, vals.data_ptr(), idx.data_ptr(), torch.get_num_threads())
        return None if nans else (vals, idx)

    def check(self) -> None:
        """The same values as torch's top-k, in descending order, at their indices (rows with and without a bar)."""
        g = torch.Generator().manual_seed(0)
        for shape, k in (((33, 64), 16), ((5, 3, 70), 7), ((4, 16), 16)):
            x = torch.randn(shape, generator=g)
            vals, idx = self(x, k)
            want = x.topk(k, dim=-1, sorted=True).values
            if not (torch.equal(vals, want) and torch.equal(x.gather(-1, idx), vals)):
                raise AssertionError(f"top-{k} of {shape} differs from torch's")
            x[-1, ..., 1] = float("nan")
            if self(x, k) is not None:
                raise AssertionError("a NaN went unnoticed")


@functools.cache
def topk_kernel() -> TopKKernel | None:
    return native.load_checked(SOURCE, TopKKernel, "top-k kernel", "SAE training keeps torch's top-k")


def topk_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest values along the last dimension (no gradient: gather the values from x)."""
    kernel = topk_kernel()
    if kernel is not None and x.dtype == torch.float32 and x.device.type == "cpu" and k <= min(MAX_K, x.shape[-1]):
        # rows in memory order (an einsum's output is often a permutation of a contiguous tensor): no copy
        order = sorted(range(x.dim() - 1), key=lambda i: -x.stride(i)) + [x.dim() - 1]
        got = kernel(x.detach().permute(order), k)
        if got is not None:
            return got[1].permute([order.index(i) for i in range(x.dim())])
    return x.detach().topk(k, dim=-1, sorted=False).indices
