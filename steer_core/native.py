"""Small C kernels compiled for this machine on first use (the few-row products of decoding, the SAE's top-k).

Each source is compiled by the system's C compiler into the cache, one file per source, compiler, flags and CPU
(so a build is reused only where it was made), written atomically, and loaded with ctypes into torch's own OpenMP
runtime. Callers check a kernel against torch before using it and fall back to torch without a compiler or with
STEER_KERNEL=off.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .paths import cache_root

log = logging.getLogger(__name__)

# -ffp-contract=fast: an accumulation is a fused multiply-add, exact on every machine that has one
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC")
OFF_VALUES = ("off", "0", "no", "false")


def switched_off() -> bool:
    return os.environ.get("STEER_KERNEL", "on").strip().lower() in OFF_VALUES


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def cpuinfo_line(*keys: str) -> str | None:
    """The first line of /proc/cpuinfo that starts with one of `keys`, or None (no such file or line)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(keys):
                return line
    except OSError:
        pass
    return None


def _cpu_flags() -> str:
    """What -march=native compiles for: the CPU's feature flags (a cached build is reused only on the same kind)."""
    return cpuinfo_line("flags", "Features") or platform.processor()


def build(cc: str, source: Path, flags: tuple[str, ...] = FLAGS, after: tuple[str, ...] = ()) -> Path:
    """The compiled library of `source` in the cache, built (atomically) if it is not there yet. flags come before
    the source, `after` (libraries to link) after it."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(
        "\0".join([source.read_text(), version, " ".join(flags + after), platform.machine(), _cpu_flags()]).encode()
    ).hexdigest()[:16]
    out = cache_root() / "kernels" / f"{source.stem}-{key}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.part")
    os.close(fd)
    try:
        subprocess.run(
            [cc, *flags, str(source), "-o", tmp, *after], check=True, capture_output=True, text=True, timeout=300
        )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def cxx_compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def torch_flags() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(flags, libraries) that build a C++ source calling ATen against the installed torch: its headers, its ABI,
    its libraries (found again at load through the rpath); the torch version is in the flags, so a cached build is
    rebuilt when torch changes."""
    import torch

    root = Path(torch.__file__).parent
    flags = (
        "-O3", "-march=native", "-std=c++20", "-shared", "-fPIC", "-w", "-ffp-contract=off",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}", f"-DSTEER_TORCH={torch.__version__}",
        f"-I{root / 'include'}", f"-I{root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
    )  # fmt: skip
    return flags, (f"-L{root / 'lib'}", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{root / 'lib'}")


def load_checked(source: Path, make: Callable[[Path], object], what: str, fallback: str):
    """make(path) -> a kernel object with .check() (raises AssertionError when it computes wrong); the checked
    kernel, or None (switched off, no compiler, or the build or its check failed: then `fallback` is used, said in
    the log). A cached file that does not load or compute right is built again, once. A .cpp source is C++ calling
    ATen (torch_flags)."""
    if switched_off():
        return None
    cpp = source.suffix == ".cpp"
    cc = cxx_compiler() if cpp else compiler()
    if cc is None:
        log.warning("no %s compiler found: %s", "C++" if cpp else "C", fallback)
        return None
    flags, after = torch_flags() if cpp else (FLAGS, ())
    for attempt in range(2):
        path = None
        try:
            path = build(cc, source, flags, after)
            kernel = make(path)
            kernel.check()
            return kernel
        except (OSError, subprocess.SubprocessError, AssertionError, AttributeError) as e:
            detail = str(getattr(e, "stderr", None) or e).strip()[:300]
            if path is not None and attempt == 0:
                path.unlink(missing_ok=True)
                continue
            log.warning("the %s is not used (%s): %s", what, detail, fallback)
            return None


def c_function(path: Path, name: str, argtypes: list, restype=None) -> Callable:
    fn = getattr(ctypes.CDLL(str(path)), name)
    fn.argtypes = argtypes
    fn.restype = restype
    return fn
