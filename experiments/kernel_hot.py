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

from steer_core import native
from steer_core.model.rows_kernel import SOURCE
from steer_core.paths import ROOT


def main() -> None:
    cc = native.compiler()
    if cc is None:
        raise SystemExit("no C compiler here")
    flags = [f for f in native.FLAGS if f not in ("-shared", "-fPIC")]
    rev = sys.argv[1] if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as tmp:
        source, exe = SOURCE, Path(tmp) / "kernel_hot"
        if rev is not None:
            source = Path(tmp) / "rows_linear.c"
            show = ["git", "show", f"{rev}:{SOURCE.relative_to(ROOT)}"]
            source.write_text(subprocess.run(show, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
        harness = str(Path(__file__).with_name("kernel_hot.c"))
        subprocess.run([cc, *flags, harness, str(source), "-o", str(exe)], check=True)
        out = json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)
        print(json.dumps({"source": rev or "checkout"} | out))


if __name__ == "__main__":
    main()
