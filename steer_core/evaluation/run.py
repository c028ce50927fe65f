"""The `eval` command: a resumable grid written to results.csv, then summary.csv and report.html."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..bloom import Scenario
from .grid import Grid, run_grid
from .judging import add_judgements, unsteered_similarity
from .report import write_report
from .results import RESULT_FIELDS, append_csv, header, read_csv, read_results, row_key, write_csv
from .stats import SUMMARY_FIELDS, summarize


def run_eval(lm, scenarios: Sequence[Scenario], grid: Grid, out_dir: Path, judge=None, progress: bool = True) -> dict:
    """The `eval` command: resumable grid -> results.csv, then summary.csv and report.html."""
    out_dir = Path(out_dir)
    results = out_dir / "results.csv"
    existing = read_results(results)
    stale = results.is_file() and (len(existing) < len(read_csv(results)) or header(results) != RESULT_FIELDS)
    if stale:  # drop torn rows, and give an older file today's columns (once), before appending
        write_csv(results, existing, RESULT_FIELDS) if existing else results.unlink()
    done = {row_key(r) for r in existing}
    from ..judge.classifier import default_judge

    judge = judge or default_judge()

    def on_rows(rows):
        append_csv(results, add_judgements(rows, judge), RESULT_FIELDS)

    new = run_grid(lm, scenarios, grid, done=done, progress=progress, on_rows=on_rows)
    wanted = {s.scenario_id for s in scenarios}
    rows = [r for r in read_results(results) if r["scenario_id"] in wanted]
    summary = summarize(rows, similarity=unsteered_similarity(rows))
    write_csv(out_dir / "summary.csv", summary, SUMMARY_FIELDS)
    write_report(out_dir / "report.html", summary, rows)
    return {
        "results": str(results),
        "summary": str(out_dir / "summary.csv"),
        "report": str(out_dir / "report.html"),
        "generated": len(new),
        "skipped": len(done),
        "rows": len(rows),
    }
