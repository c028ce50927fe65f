"""The evidence the demo shows for itself: every method along its strength curve on the shipped result
files, read at matched perplexity ("Does it steer?"), so teachers and researchers see where each method
stands where they use it. Built from `results/frontier/` (what `sweep` wrote), once per process.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..caches import ProcessCache
from ..errors import UserError
from ..paths import ROOT

FRONTIER_DIR = ROOT / "results" / "frontier"
SPLITS = {  # which shipped rows each view reads
    "test": "the test split (18 scenarios x 6 levels; never used for fitting or choosing)",
    "validation": "validation (writers D-F of the train split, 36 scenarios x 6 levels; where strengths are chosen)",
}
DRAWS = 1000  # bootstrap draws for the app's view (the docs' tables use 2000)


@dataclass
class Evidence:
    split: str
    frontier: object  # evaluation.frontier.Frontier
    files: list[str]


_CACHE = ProcessCache("evidence")


def frontier_files(split: str) -> list[str]:
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    files = sorted(str(p.relative_to(ROOT)) for p in FRONTIER_DIR.glob(f"{split}*.csv"))
    if not files:
        raise UserError(f"no shipped frontier rows for {split} (results/frontier/{split}*.csv)")
    return files


def evidence(split: str = "test") -> Evidence:
    """The frontier of a split's shipped rows (computed once per process)."""
    from ..evaluation.frontier import build_frontier
    from ..evaluation.results import read_results

    def build() -> Evidence:
        files = frontier_files(split)
        rows = [r for f in files for r in read_results(ROOT / f)]
        return Evidence(split, build_frontier(rows, draws=DRAWS), files)

    return _CACHE.get(split, build)
