"""Attention for one decoding position per row over each row's own positions (decode_attention.c), compiled for this
machine on first use, for the interactive views' decoding (generation.VIEWS' own_positions).

SDPA reads every position of a padded batch, a Compare's short rows the few-shot row's length, and its cost there is
mostly MKL's small products. This kernel reads only the positions a row's mask admits, in an order that does not
depend on the batch or the threads, so a row's reply in a view is the reply it gets alone. It is not SDPA's order:
the result agrees with SDPA to float32 rounding, not bit for bit, which is why the evaluation and the golden rows
keep SDPA. Checked against SDPA when it loads; without a compiler, or with STEER_KERNEL=off, `attention_kernel()`
is None and the views keep SDPA.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
from torch.nn import functional as F

from .. import native

SOURCE = Path(__file__).with_name("decode_attention.c")


class AttentionKernel:
    """out = softmax(q k^T scale + mask) v for one query position a row, float32 on the CPU."""

    def __init__(self, path: Path):
        self.path = path
        ptr, i32 = ctypes.c_void_p, ctypes.c_int
        args = [ptr] * 5 + [i32] * 3 + [ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_float, i32]
        self._fn = native.c_function(path, "decode_attention", args, ctypes.c_int)
        self.address = ctypes.cast(self._fn, ctypes.c_void_p).value  # what lean_layers.cpp calls

    def __call__(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, scale: float):
        """q (rows, kv_heads, groups, dim); keys, values (rows, kv_heads, len, dim); mask (rows, 1, 1, len) float.
        Returns q's shape."""
        q, keys, values = q.contiguous(), keys.contiguous(), values.contiguous()
        rows, kv_heads, groups, dim = q.shape
        flat = mask.reshape(rows, keys.shape[2]).contiguous()
        out = torch.empty_like(q)
        ptrs = (t.data_ptr() for t in (q, keys, values, flat, out))
        if self._fn(*ptrs, rows, kv_heads, groups, keys.shape[2], dim, scale, torch.get_num_threads()):
            raise MemoryError("the attention kernel could not have its scratch memory")
        return out

    def check(self) -> None:
        """SDPA's result to float32 rounding, padding skipped; a row the same bits in any batch."""
        g = torch.Generator().manual_seed(0)
        q = torch.randn(5, 2, 3, 37, generator=g)
        keys, values = torch.randn(5, 2, 70, 37, generator=g), torch.randn(5, 2, 70, 37, generator=g)
        mask = torch.zeros(5, 1, 1, 70)
        mask[1, ..., :20] = mask[..., 60:] = float("-inf")  # a padded row, and unwritten positions
        got = self(q, keys, values, mask, 0.3)
        torch.testing.assert_close(got, F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=0.3))
        if not torch.equal(self(q[1:2], keys[1:2, :, 20:], values[1:2, :, 20:], mask[1:2, ..., 20:], 0.3), got[1:2]):
            raise AssertionError("a row differs alone and in a batch")


@functools.cache
def attention_kernel() -> AttentionKernel | None:
    """The checked kernel, or None (STEER_KERNEL=off, no C compiler, or the build or its check failed)."""
    return native.load_checked(SOURCE, AttentionKernel, "attention kernel", "the views' decoding keeps SDPA")
