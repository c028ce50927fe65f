"""The charts of the interactive views drawn by this checkout's charts.py against those of an earlier commit: the
same figures (plotly's JSON, equal as parsed), and the time of drawing them, the two modules taking turns round by
round, under the app's default template (`white_by_default`). The Compare click's six on bench's Compare (64 tokens,
the default model), the ladder's and the sweep's on fixed made-up values.

    python -m experiments.charts_ab a537cda

Prints one JSON object: {"same_json": [the charts whose JSON is equal], "charts", and for "compare", "ladder" and
"sweep", "<view>_before_ms" and "<view>_after_ms"} (the median over rounds: for the Compare, all six charts of the
click, `CompareResult.figures`).
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
from steer_core.bloom import LEVELS
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


JUDGED = [LEVELS[(i * 5 + 1) % 6] for i in range(12)]
VIEW_CHARTS = {  # the ladder's and the sweep's charts on fixed values: two methods at every level; five strengths
    "ladder": lambda m: m.ladder_chart(
        list(LEVELS) * 2, JUDGED, [i * 7 % 10 / 10 for i in range(12)], ["sae"] * 6 + ["fewshot"] * 6
    ),
    "sweep": lambda m: m.sweep_chart([0, 1, 2, 4, 8], [0.2, 0.3, 0.5, 0.6, 0.4], [6, 6.5, 7, 9, 14], "apply", 6.0),
}


def view_charts(module) -> dict:
    return {name: draw(module) for name, draw in VIEW_CHARTS.items()}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        before = charts_at(sys.argv[1], Path(tmp))
    charts.white_by_default()
    lm = load_model()
    req = CompareRequest(question=bench.Q, student_answer=bench.A, level="analyze", max_new_tokens=64)
    *_, result = compare_stream(lm, req, ignore_stop=True)
    old, new = drawn(result, before)[0] | view_charts(before), drawn(result, charts)[0] | view_charts(charts)
    same = [name for name in new if json.loads(old[name].to_json()) == json.loads(new[name].to_json())]
    views = {
        "compare": lambda module: drawn(result, module)[1],
        **{name: (lambda module, draw=draw: timed(lambda: draw(module))) for name, draw in VIEW_CHARTS.items()},
    }
    times: dict[str, list[float]] = {f"{v}_{w}": [] for v in views for w in ("before", "after")}
    for _ in range(ROUNDS):
        for view, draw in views.items():
            for name, module in (("before", before), ("after", charts)):
                times[f"{view}_{name}"].append(draw(module))
    out = {"same_json": same, "charts": list(new)}
    out |= {f"{k}_ms": round(statistics.median(v) * 1e3, 1) for k, v in times.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
