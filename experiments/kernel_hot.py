"""How close the few-row kernel's arithmetic is to the core's own peak: experiments/kernel_hot.c built with the
checkout's rows_linear.c (the kernel's flags), one thread, the weight in the cache, so memory plays no part.

    python -m experiments.kernel_hot [REV]      # REV: rows_linear.c as it was at that commit instead

Prints one JSON object: {"source", "peak_gflops", "rows_1_gflops", ..., "rows_8_gflops"}.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from experiments.kernel_ab import source_at
from steer_core import native
from steer_core.model.rows_kernel import SOURCE


def main() -> None:
    cc = native.compiler()
    if cc is None:
        raise SystemExit("no C compiler here")
    flags = [f for f in native.FLAGS if f not in ("-shared", "-fPIC")]
    rev = sys.argv[1] if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as tmp:
        source = SOURCE if rev is None else source_at(rev, Path(tmp))
        exe = Path(tmp) / "kernel_hot"
        harness = str(Path(__file__).with_name("kernel_hot.c"))
        subprocess.run([cc, *flags, harness, str(source), "-o", str(exe)], check=True)
        out = json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)
        print(json.dumps({"source": rev or "checkout"} | out))


if __name__ == "__main__":
    main()
