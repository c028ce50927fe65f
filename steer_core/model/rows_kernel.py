"""The few-row matrix product of a decoding step (rows_linear.c), compiled for this machine on first use.

MKL leaves most of a 2-core machine's memory bandwidth unused when it multiplies one to eleven rows by a
weight matrix, and a decoding step is little else. The C kernel reads each weight row once for all rows,
on all of torch's threads, from a packed copy of the weight (`pack`, made once per weight and kept by the
caller). It is compiled and loaded by `native` and checked against `F.linear` before it is used. Without a
compiler, or with STEER_KERNEL=off, `rows_kernel()` is None and `small_batch` keeps MKL's products.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
from torch.nn import functional as F

from .. import native

SOURCE = Path(__file__).with_name("rows_linear.c")
MAX_ROWS = 11  # from 12 rows on, MKL's blocked product is faster (docs/performance.md)
BLOCK = 4  # outputs a packed block holds (rows_linear.c's BLOCK; checked when the library loads)
MAX_CHUNK_PIECES = 40  # 16-float pieces of a weight's row a chunk holds at most (rows_linear.c's; checked likewise)


def chunk_starts(pieces: int) -> list[int]:
    """The first piece of each chunk of a weight `pieces` 16-float pieces wide, and `pieces` last: at most
    MAX_CHUNK_PIECES a chunk, as evenly as they go (rows_linear.c's chunk_first)."""
    n = max(1, -(-pieces // MAX_CHUNK_PIECES))
    return [c * (pieces // n) + min(c, pieces % n) for c in range(n + 1)]


def pack(weight: torch.Tensor) -> torch.Tensor:
    """(out, in) -> the kernel's layout: blocks of BLOCK outputs (the last padded with zeros), each holding its
    outputs' 16-float pieces side by side, piece after piece, then their last in % 16 floats. A weight wider than
    MAX_CHUNK_PIECES pieces is laid out chunk after chunk of its pieces (chunk_starts), each chunk's blocks one after
    another, the last K % 16 floats after each block's last chunk: the order the kernel reads it in."""
    out, k = weight.shape
    pieces, padded = k // 16, -(-out // BLOCK) * BLOCK
    w = F.pad(weight.detach(), (0, 0, 0, padded - out))
    body = w[:, : pieces * 16].reshape(padded // BLOCK, BLOCK, pieces, 16).transpose(1, 2)
    tail = w[:, pieces * 16 :].reshape(padded // BLOCK, BLOCK * (k - pieces * 16))
    starts = chunk_starts(pieces)
    parts = [body[:, a:b].reshape(padded // BLOCK, -1) for a, b in zip(starts, starts[1:])]
    parts[-1] = torch.cat([parts[-1], tail], dim=1)
    return torch.cat([part.reshape(-1) for part in parts]).reshape(padded // BLOCK, -1).contiguous()


def rows_linear(path: Path):
    """The library's rows_linear(P, x, b, y, O, K, R, threads) -> 0, or 1 where its scratch could not be had."""
    args = [ctypes.c_void_p] * 4 + [ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_int]
    return native.c_function(path, "rows_linear", args, ctypes.c_int)


class RowsKernel:
    """y = x @ W.T (+ b) for 1 to MAX_ROWS rows of float32 on the CPU, without autograd."""

    def __init__(self, path: Path):
        self.path = path
        self._fn = rows_linear(path)
        block = native.c_function(path, "rows_linear_block", [], ctypes.c_int)()
        chunk = native.c_function(path, "rows_linear_chunk_pieces", [], ctypes.c_int)()
        if (block, chunk) != (BLOCK, MAX_CHUNK_PIECES):
            raise AssertionError(
                f"the library packs {block} outputs a block and {chunk} pieces a chunk, this module "
                f"{BLOCK} and {MAX_CHUNK_PIECES}"
            )

    def __call__(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, packed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (rows, in) float32; weight (out, in) and bias contiguous (the caller checks); packed: `pack(weight)`,
        packed here when not given (a caller that multiplies by the same weight again keeps it)."""
        x = x.contiguous()
        rows, k = x.shape
        out = weight.shape[0]
        packed = pack(weight) if packed is None else packed
        y = torch.empty((rows, out), dtype=torch.float32)
        failed = self._fn(
            packed.data_ptr(),
            x.data_ptr(),
            None if bias is None else bias.data_ptr(),
            y.data_ptr(),
            out,
            k,
            rows,
            torch.get_num_threads(),
        )
        if failed:
            raise MemoryError("the few-row kernel could not allocate its sums' scratch")
        return y

    def check(self) -> None:
        """The kernel computes F.linear's product (to float32 rounding), each row the same in any batch, on a narrow
        weight and on one read in chunks."""
        g = torch.Generator().manual_seed(0)
        for k in (37, 16 * MAX_CHUNK_PIECES * 2 + 21):
            w, b = torch.randn(70, k, generator=g), torch.randn(70, generator=g)
            x = torch.randn(MAX_ROWS, k, generator=g)
            full = self(x, w, b)
            torch.testing.assert_close(full, F.linear(x, w, b), rtol=1e-5, atol=1e-5 * k**0.5)
            for rows in (1, 4, 9):
                if not torch.equal(self(x[:rows], w, b), full[:rows]):
                    raise AssertionError(f"a row differs in a batch of {rows}")


@functools.cache
def rows_kernel() -> RowsKernel | None:
    """The checked kernel, or None (STEER_KERNEL=off, no C compiler, or the build or its check failed)."""
    fallback = "decoding keeps MKL's products (slower on a few rows)"
    return native.load_checked(SOURCE, RowsKernel, "few-row kernel", fallback)
