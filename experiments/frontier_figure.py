"""Render the frontier (accuracy against perplexity, every method along its strengths) as a PNG for the
docs: `summarize --matched --frontier` writes the offline Plotly HTML, headless Chromium takes the chart.

    python -m experiments.frontier_figure docs/frontier_validation.png results/frontier/validation*.csv
"""

from __future__ import annotations

import sys

from experiments.levels_figure import chart_png


def main(png: str, results: list[str]) -> None:
    chart_png([*results, "--matched", "--frontier"], png, height=800)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
