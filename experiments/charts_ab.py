"""The Compare click's charts drawn by this checkout's charts.py against those of an earlier commit, on bench's
Compare (64 tokens, the default model): the same figures (plotly's JSON, equal as parsed), and the time of drawing
all of them, the two modules taking turns round by round, under the app's default template (`white_by_default`).

    python -m experiments.charts_ab a537cda

Prints one JSON object: {"same_json": [the charts whose JSON is equal], "before_ms", "after_ms"} (the median over
rounds of drawing every chart of the click: `CompareResult.figures`).
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import steer_core
from steer_core import bench, charts
from steer_core.model.loading import load_model
from steer_core.paths import ROOT
from steer_core.views.compare import CompareRequest, compare_stream

ROUNDS = 15


def charts_at(rev: str, folder: Path):
    """charts.py as it was at `rev`, imported as a module of steer_core (so its relative imports resolve)."""
    source = folder / "charts_at.py"
    show = ["git", "show", f"{rev}:steer_core/charts.py"]
    source.write_text(subprocess.run(show, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    spec = importlib.util.spec_from_file_location("steer_core._charts_at", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def drawn(result, module) -> tuple[dict, float]:
    """The click's figures drawn with `module` as steer_core.charts, and the seconds it took."""
    steer_core.charts, result._drawn = module, None
    try:
        t0 = time.perf_counter()
        figures = result.figures()
        return figures, time.perf_counter() - t0
    finally:
        steer_core.charts = charts


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        before = charts_at(sys.argv[1], Path(tmp))
    charts.white_by_default()
    lm = load_model()
    req = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=64)
    *_, result = compare_stream(lm, req, ignore_stop=True)
    old, _ = drawn(result, before)
    new, _ = drawn(result, charts)
    same = [name for name in new if json.loads(old[name].to_json()) == json.loads(new[name].to_json())]
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(ROUNDS):
        for name, module in (("before", before), ("after", charts)):
            times[name].append(drawn(result, module)[1])
    out = {"same_json": same, "charts": list(new)}
    out |= {f"{k}_ms": round(statistics.median(v) * 1e3, 1) for k, v in times.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
