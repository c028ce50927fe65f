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
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from .. import native

SOURCE = Path(__file__).with_name("decode_attention.c")
PROMPT_COPIES = "_prompt_copies"  # a cache's attribute: its PromptCopies, where its rows were given shared prompts


@dataclass(frozen=True)
class PromptCopies:
    """Rows of a batch given the same prompt hold copies of its keys and values (generation's prefill reads each
    distinct prompt once and copies it): holder[r] is the row whose cache the kernel reads below position `width`
    for row r (r itself where no other row holds it). Reading one copy for all gives the same values, so the same
    bits, and a ladder's seven rows read their prompt from memory once."""

    holder: torch.Tensor  # (rows,) int32
    width: int

    @staticmethod
    def of(sources: list[int], width: int) -> PromptCopies | None:
        """From each row's source row (the row whose prompt read it copies); None where no two rows share one."""
        if all(s == i for i, s in enumerate(sources)):
            return None
        return PromptCopies(torch.tensor(sources, dtype=torch.int32), width)


class AttentionKernel:
    """out = softmax(q k^T scale + mask) v for one query position a row, float32 on the CPU."""

    def __init__(self, path: Path):
        self.path = path
        ptr, i32 = ctypes.c_void_p, ctypes.c_int
        args = [ptr] * 5 + [i32] * 3 + [ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_float, i32, ptr, ctypes.c_ssize_t]
        self._fn = native.c_function(path, "decode_attention", args, ctypes.c_int)
        self.address = ctypes.cast(self._fn, ctypes.c_void_p).value  # what lean_layers.cpp calls

    def __call__(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, scale: float,
        prompts: PromptCopies | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """q (rows, kv_heads, groups, dim); keys, values (rows, kv_heads, len, dim); mask (rows, 1, 1, len) float;
        prompts: which rows' caches hold copies of one prompt (read from one place). Returns q's shape."""
        q, keys, values = q.contiguous(), keys.contiguous(), values.contiguous()
        rows, kv_heads, groups, dim = q.shape
        flat = mask.reshape(rows, keys.shape[2]).contiguous()
        out = torch.empty_like(q)
        ptrs = (t.data_ptr() for t in (q, keys, values, flat, out))
        shared = (0, 0) if prompts is None else (prompts.holder.data_ptr(), prompts.width)
        if self._fn(*ptrs, rows, kv_heads, groups, keys.shape[2], dim, scale, torch.get_num_threads(), *shared):
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
        copied = [0, 1, 2, 2, 0]  # rows 3 and 4 hold copies of rows 2's and 0's first 30 positions
        for r, source in enumerate(copied):
            keys[r, :, :30], values[r, :, :30] = keys[source, :, :30], values[source, :, :30]
        keys_apart, values_apart = keys.clone(), values.clone()
        for t in (keys_apart, values_apart):
            t[3:, :, :30] = float("nan")  # never read: rows 2 and 0 hold them
        shared = self(q, keys_apart, values_apart, mask, 0.3, PromptCopies.of(copied, 30))
        if not torch.equal(shared, self(q, keys, values, mask, 0.3)):
            raise AssertionError("rows reading their prompt from the row that holds it differ")


@functools.cache
def attention_kernel() -> AttentionKernel | None:
    """The checked kernel, or None (STEER_KERNEL=off, no C compiler, or the build or its check failed)."""
    return native.load_checked(SOURCE, AttentionKernel, "attention kernel", "the views' decoding keeps SDPA")
