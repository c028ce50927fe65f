"""Where a decoding step's time goes inside the C++ layers, phase by phase, for bench's batches and batches built to
differ from them by one thing: a copy of lean_layers.cpp with a clock read between its phases is built into a
temporary folder and decodes in place of the checkout's (the same arithmetic, so the same tokens; the clock reads
cost about a microsecond a layer).

    python -m experiments.step_phases [OUT.jsonl]

The batches (bench's question; 64 tokens, stop tokens ignored; the views' settings), taking turns round by round:
  none           one unsteered reply (bench's baseline)
  none x4        four unsteered rows of its prompt
  compare - few  the Compare's three plain rows (unsteered, SAE, query) without its few-shot row
  compare4       the Compare's batch (bench's)
  none x7        seven unsteered rows
  ladder         the ladder's batch (bench's)

The phases, ms a step (the 30 layers' sum; the main thread's clock, so a phase run on both threads counts its
slower one):
  norms       the two RMS norms and the attention's residual addition
  products    the seven products (the few-row kernel) and a steered query's callback into Python
  rope        rotary embedding and the copy of this position's keys and values into the cache
  attention   the attention kernel (or SDPA)
  silu        SiLU and the MLP's product of gate and up
  output      the MLP's residual addition and a steered layer output's callback
The rest of a step (the output layer's product, picking the token, Python) is the wall time's remainder. Prints, and
appends to OUT.jsonl if given, one JSON object per batch: {"batch", "rows", phase_ms..., "step_ms"} (medians over
rounds; step_ms is the batch's time over its 64 tokens, the first token's prefill included).
"""

from __future__ import annotations

import ctypes
import statistics
import sys
import tempfile
import time
from pathlib import Path

from experiments.batch_costs import batches
from experiments.jsonl import emit
from steer_core.generation import VIEWS, stream_batch
from steer_core.model import lean_step
from steer_core.model.loading import load_model

ROUNDS, TOKENS = 7, 64
BATCHES = ("none", "none x4", "compare - few", "compare4", "none x7", "ladder")  # batch_costs.batches' names
PHASES = ("norms", "products", "rope", "attention", "silu", "output")
CLOCK = """#include <chrono>
static double phase_s[6];
extern "C" void phase_times(double *out) { for (int i = 0; i < 6; i++) out[i] = phase_s[i], phase_s[i] = 0; }
static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
#define PHASE(i) { const double t = now_s(); phase_s[i] += t - mark; mark = t; }
"""
# (a line of lean_layers.cpp's layer(), what goes before it, what goes after it)
MARKS = [
    ("    std::vector<float> h_in;\n", "    double mark = now_s();\n", ""),
    ("    linear(s, f, Q, w.x.data(), H, w.q.data(), QW);\n", "    PHASE(0)\n", ""),
    ("    rope(s, w.q.data(), s.heads, cos, sin);\n", "    PHASE(1)\n", ""),
    ("    at::Tensor flat = attention(s, w, keys, values, mask);\n", "    PHASE(2)\n", "    PHASE(3)\n"),
    ("    linear(s, f, O, flat.data_ptr<float>(), QW, w.a.data(), H);\n", "", "    PHASE(1)\n"),
    ("    linear(s, f, GATE, w.x.data(), H, w.gate.data(), s.inter);\n", "    PHASE(0)\n", ""),
    ("    at::Tensor act = at::silu(", "    PHASE(1)\n", ""),
    ("    linear(s, f, DOWN, w.gate.data(), s.inter, w.a.data(), H);\n", "    PHASE(4)\n", "    PHASE(1)\n"),
]
RETURN = "    return !(flags & OUTPUT) || call_back(s, idx, OUTPUT, w.h.data(), H, H_OUT, h_in.data(), H, H_IN);\n"
TIMED_RETURN = (
    "    const bool ok = !(flags & OUTPUT) || call_back(s, idx, OUTPUT, w.h.data(), H, H_OUT, h_in.data(), H, H_IN);\n"
    "    PHASE(5)\n    return ok;\n"
)


def clocked_source(folder: Path) -> Path:
    """lean_layers.cpp with a clock read between its phases (raises where the source no longer has a line marked)."""
    text = lean_step.SOURCE.read_text()
    for line, before, after in MARKS + [(RETURN, "", "")]:
        if text.count(line) != 1:
            raise SystemExit(f"lean_layers.cpp changed: {line.strip()!r} is not there once")
        text = text.replace(line, before + line + after) if line != RETURN else text.replace(RETURN, TIMED_RETURN)
    text = text.replace("#include <vector>\n", "#include <vector>\n" + CLOCK, 1)
    out = folder / "lean_layers.cpp"
    out.write_text(text)
    return out


def main() -> None:
    if len(sys.argv) > 2:
        raise SystemExit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        lean_step.SOURCE = clocked_source(Path(tmp))
        layers = lean_step.lean_layers()
        if layers is None:
            raise SystemExit("the C++ layers are off here (no compiler, or STEER_KERNEL=off)")
        read = ctypes.CDLL(str(layers.path)).phase_times
    lm = load_model()
    runs = {name: reqs for name, reqs in batches(lm).items() if name in BATCHES}
    out = (ctypes.c_double * len(PHASES))()
    rows: dict[str, list[list[float]]] = {name: [] for name in runs}
    for r in range(ROUNDS + 1):  # round 0 warms up: the prefixes read, the kernels built
        for name, reqs in runs.items():
            read(out)
            t = time.perf_counter()
            for _ in stream_batch(lm, reqs, max_new_tokens=TOKENS, ignore_stop=True, **VIEWS):
                pass
            wall = time.perf_counter() - t
            read(out)
            if r:
                rows[name].append([x * 1e3 / (TOKENS - 1) for x in out] + [wall * 1e3 / TOKENS])
    for name, got in rows.items():
        mid = [round(statistics.median(g[i] for g in got), 3) for i in range(len(PHASES) + 1)]
        line = {"batch": name, "rows": len(runs[name])} | {f"{p}_ms": m for p, m in zip(PHASES, mid)}
        line["step_ms"] = mid[-1]
        emit(line, sys.argv[1] if len(sys.argv) == 2 else None)


if __name__ == "__main__":
    main()
