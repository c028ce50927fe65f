"""report.html: the evaluation's charts in one offline page."""

from __future__ import annotations

from pathlib import Path


def write_report(path: Path, summary: list[dict], rows: list[dict]) -> None:
    from ..charts import accuracy_by_method_level, judged_vs_target, layer_sweep, report_html
    from ..io_utils import atomic_write_text

    n_sc = len({r["scenario_id"] for r in rows})
    intro = (
        f"<p>{len(rows)} generations over {n_sc} scenarios. Accuracy = the judge's predicted level equals the "
        "target level (chance 1/6). Figures from <code>summary.csv</code> next to this file.</p>"
    )
    html = report_html(
        [accuracy_by_method_level(summary), judged_vs_target(summary), layer_sweep(summary)],
        "Bloom steering evaluation",
        intro,
    )
    atomic_write_text(path, html)
