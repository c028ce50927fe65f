"""Render the frontier (accuracy against perplexity, every method along its strengths) as a PNG for the
docs: `summarize --matched --frontier` writes the offline Plotly HTML, headless Chromium takes the chart.

    python -m experiments.frontier_figure docs/frontier_test.png results/frontier/test_*.csv
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from experiments.levels_figure import CHROMIUM_ARGS


def main(png: str, results: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "frontier.html"
        cmd = [sys.executable, "-m", "steer_core", "summarize", *results, "--matched", "--frontier", str(html)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(html.as_uri())
            page.wait_for_selector(".plotly-graph-div .main-svg")
            page.locator(".plotly-graph-div").first.screenshot(path=png)
            browser.close()
    print(png)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
