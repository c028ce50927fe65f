"""How close the few-row kernel's arithmetic is to the core's own peak: experiments/kernel_hot.c built with the
checkout's rows_linear.c (the kernel's flags), one thread, the weight in the cache, so memory plays no part.

    python -m experiments.kernel_hot

Prints one JSON object: {"peak_gflops", "rows_1_gflops", ..., "rows_8_gflops"}.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from steer_core import native
from steer_core.model.rows_kernel import SOURCE


def main() -> None:
    cc = native.compiler()
    if cc is None:
        raise SystemExit("no C compiler here")
    flags = [f for f in native.FLAGS if f not in ("-shared", "-fPIC")]
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "kernel_hot"
        subprocess.run(
            [cc, *flags, str(Path(__file__).with_name("kernel_hot.c")), str(SOURCE), "-o", str(exe)], check=True
        )
        print(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
