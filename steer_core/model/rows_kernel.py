"""The few-row matrix product of a decoding step (rows_linear.c), compiled for this machine on first use.

MKL leaves most of a 2-core machine's memory bandwidth unused when it multiplies one to eleven rows by a
weight matrix, and a decoding step is little else. The C kernel reads each weight row once for all rows,
on all of torch's threads. It is compiled by the system's C compiler into the cache (one file per source,
compiler and CPU, written atomically), loaded with ctypes into torch's own OpenMP runtime, and checked
against `F.linear` before it is used. Without a compiler, or with STEER_KERNEL=off, `rows_kernel()` is
None and `small_batch` keeps MKL's products.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch.nn import functional as F

from ..paths import cache_root

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("rows_linear.c")
# -ffp-contract=fast: the accumulation is a fused multiply-add, exact on every machine that has one
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC")
MAX_ROWS = 11  # from 12 rows on, MKL's blocked product is faster (docs/performance.md)
OFF_VALUES = ("off", "0", "no", "false")


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cpu_flags() -> str:
    """What -march=native compiles for: the CPU's feature flags (a cached build is reused only on the same kind)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(cc: str) -> Path:
    """The compiled kernel in the cache, built (atomically) if it is not there yet."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), version, " ".join(FLAGS), platform.machine(), _cpu_flags()]).encode()
    ).hexdigest()[:16]
    out = cache_root() / "kernels" / f"rows_linear-{key}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.part")
    os.close(fd)
    try:
        subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], check=True, capture_output=True, text=True, timeout=120)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


class RowsKernel:
    """y = x @ W.T (+ b) for 1 to MAX_ROWS rows of float32 on the CPU, without autograd."""

    def __init__(self, path: Path):
        self.path = path
        self._fn = ctypes.CDLL(str(path)).rows_linear
        self._fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_int]
        self._fn.restype = None

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x: (rows, in) float32; weight (out, in) and bias contiguous (the caller checks)."""
        x = x.contiguous()
        rows, k = x.shape
        out = weight.shape[0]
        y = torch.empty((rows, out), dtype=torch.float32)
        self._fn(
            weight.data_ptr(),
            x.data_ptr(),
            None if bias is None else bias.data_ptr(),
            y.data_ptr(),
            out,
            k,
            rows,
            torch.get_num_threads(),
        )
        return y

    def check(self) -> None:
        """The kernel computes F.linear's product (to float32 rounding), each row the same in any batch."""
        g = torch.Generator().manual_seed(0)
        w, b = torch.randn(70, 37, generator=g), torch.randn(70, generator=g)
        x = torch.randn(MAX_ROWS, 37, generator=g)
        full = self(x, w, b)
        torch.testing.assert_close(full, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
        for rows in (1, 4, 9):
            if not torch.equal(self(x[:rows], w, b), full[:rows]):
                raise AssertionError(f"a row differs in a batch of {rows}")


@functools.cache
def rows_kernel() -> RowsKernel | None:
    """The checked kernel, or None (STEER_KERNEL=off, no C compiler, or the build or its check failed)."""
    if os.environ.get("STEER_KERNEL", "on").strip().lower() in OFF_VALUES:
        return None
    cc = _compiler()
    if cc is None:
        log.warning("no C compiler found: decoding keeps MKL's products (slower on a few rows)")
        return None
    for attempt in range(2):  # a cached file that does not load or compute right is built again, once
        path = None
        try:
            path = _build(cc)
            kernel = RowsKernel(path)
            kernel.check()
            return kernel
        except (OSError, subprocess.SubprocessError, AssertionError, AttributeError) as e:
            detail = str(getattr(e, "stderr", None) or e).strip()[:300]
            if path is not None and attempt == 0:
                path.unlink(missing_ok=True)
                continue
            log.warning("the few-row kernel is not used (%s): decoding keeps MKL's products", detail)
            return None
